"""Candidate pools as arcs between candidate boundaries, sized exactly (docs/milp.md §2-3).

Nodes are candidate boundaries with their C&R band ratio ``(B, gamma)``, plus a source
(0 tokens) and a sink (the long window). An arc ``u -> v`` is the pool of window
``B_v`` serving ``(B_u, B_v]`` less the band ``(B_u, gamma_u B_u]`` compressed down out
of it, plus the band ``(B_v, gamma_v B_v]`` compressed into it (docs/model.md §4). This
module builds the graph (:func:`candidate_graph`), the exact load of an arc on a GPU type
(:func:`arc_loads`), the fluid lower bound on its instances (:func:`fluid_counts`) and the
exact minimum instances of a batch of arcs (:func:`size_arcs`). :mod:`.tables` prunes and
assembles them into the MILP's tables.

Units: tokens, requests/s, seconds; shares are fractions of all requests.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..demand import Moments, MomentTable
from ..errors import FleetOptError
from ..poolload import PoolLoad
from ..scenario import band_end_tokens, default_boundaries, gamma_grid
from ..service import scenario_pool_load
from ..sizing import min_instances
from ..workload import Workload
from .capacity import TypeLoads, capacity_share
from .problem import FleetProblem

__all__ = ["CandidateGraph", "Sizes", "candidate_graph", "arc_loads", "fluid_counts",
           "size_arcs"]

NOT_SIZED = -2
"""Count of an arc not sized (pruned before its exact sizing)."""

CANNOT_SERVE = -1
"""Count of an arc a type cannot serve (window, memory, or no count meets the SLO)."""


@dataclass(frozen=True)
class CandidateGraph:
    """Nodes and candidate arcs of a fleet question, with one demand table per type.

    workload: the workload sized for; boundaries / gammas: the candidate grid.
    tables: one :class:`MomentTable` per type (None: the type holds no boundary).
    node_ok: per type, ``(boundaries,)`` the boundaries its table holds.
    node_tokens / node_gamma: ``(nodes,)``; node 0 is the source (0 tokens, gamma 1), the
        last the sink (long window, gamma 1); inner nodes strictly inside, each
        ``band_end_tokens(B, gamma) <= long window``.
    node_bidx: ``(nodes,)`` index of each node's boundary in ``boundaries``.
    u / v: ``(a,)`` candidate arcs with ``node_tokens[u] < node_tokens[v]`` and
        ``band_end_tokens(B_u, gamma_u) <= B_v``; ``serve`` ``(a, t)``: type ``t`` can hold
        the arc (window fits, its table has both nodes).
    """

    workload: Workload
    boundaries: np.ndarray
    gammas: np.ndarray
    tables: tuple[MomentTable | None, ...]
    node_ok: tuple[np.ndarray, ...]
    node_tokens: np.ndarray
    node_gamma: np.ndarray
    node_bidx: np.ndarray
    u: np.ndarray
    v: np.ndarray
    serve: np.ndarray

    @property
    def n_nodes(self) -> int:
        return int(self.node_tokens.size)

    @property
    def sink(self) -> int:
        return self.n_nodes - 1

    @property
    def outer(self) -> np.ndarray:
        """``(a,)`` arcs from the source or into the sink (the one- and two-pool fleets)."""
        return (self.u == 0) | (self.v == self.sink)

    def table_holding(self, node: int) -> MomentTable:
        """A demand table that holds node ``node``'s boundary."""
        return next(tb for tb, ok in zip(self.tables, self.node_ok, strict=True)
                    if tb is not None and ok[self.node_bidx[node]])


def _boundaries(problem: FleetProblem, workload: Workload) -> np.ndarray:
    s = problem.scenario
    bnd = (np.asarray(s.boundaries_tokens, dtype=np.int64) if s.boundaries_tokens is not None
           else default_boundaries(workload, s.long_context_tokens))
    bnd = np.unique(bnd)
    if bnd.size and (bnd.min() < 1 or bnd.max() >= s.long_context_tokens):
        raise FleetOptError(f"boundaries_tokens: every boundary must be in [1, "
                            f"{s.long_context_tokens}) (the long-context window)")
    if bnd.size == 0:
        bnd = np.array([min(64, s.long_context_tokens - 1)], dtype=np.int64)
    return bnd


def _build_tables(problem: FleetProblem, workload: Workload, boundaries: np.ndarray,
                  gammas: np.ndarray):
    """One :class:`MomentTable` per type over the same boundaries and gammas, and the
    boundaries each holds: all of them, unless the GPU's largest window is below some band
    ends ``floor(gamma B)``; then a table over the boundaries whose band ends fit and a
    shorter long window (it cannot serve the others), or None."""
    s = problem.scenario
    latency_s = s.compression_latency_ms * 1e-3
    tables, ok = [], []
    for p in problem.types:
        try:
            tables.append(MomentTable(workload, p, boundaries, gammas, s.long_context_tokens,
                                      latency_s))
            ok.append(np.ones(boundaries.size, bool))
            continue
        except FleetOptError:
            pass
        cap = p.max_context_tokens
        fits = band_end_tokens(boundaries, gammas.max()) <= cap
        long = min(s.long_context_tokens, cap)
        sub = boundaries[fits & (boundaries < long)]
        try:
            tab = MomentTable(workload, p, sub, gammas, long, latency_s)
        except FleetOptError:
            tab = None
        tables.append(tab)
        ok.append(np.isin(boundaries, sub) if tab is not None
                  else np.zeros(boundaries.size, bool))
    return tuple(tables), tuple(ok)


def _nodes(problem: FleetProblem, tables, node_ok, boundaries: np.ndarray,
           gammas: np.ndarray):
    """Node arrays ``(tokens, gamma)``: the source, every ``(B, gamma)`` whose band ends
    inside the long window and whose compressible band holds more than that of the next
    smaller gamma (else it makes the same pools), the sink."""
    s = problem.scenario
    long = s.long_context_tokens
    toks, gms = [np.array([0])], [np.array([1.0])]
    if problem.max_pools >= 2:
        bb, gg = np.meshgrid(boundaries, gammas, indexing="ij")
        ok = band_end_tokens(bb, gg) <= long
        mass = np.full(bb.shape, -np.inf)
        for tab, held in zip(tables, node_ok, strict=True):
            rows = np.flatnonzero(held & np.isinf(mass[:, 0]))
            if tab is None or not rows.size:
                continue
            sub_b, sub_g = bb[rows], gg[rows]
            m = tab.band_compressed(sub_b.ravel(), sub_g.ravel()).mass
            mass[rows] = np.asarray(m, float).reshape(sub_b.shape)
        held_any = np.isfinite(mass[:, 0])
        if s.compressible_share <= 0:
            mass[:, 1:] = mass[:, :1]
        # A larger gamma is a new node only if its band holds more compressible requests.
        prev = np.maximum.accumulate(np.where(ok, mass, -np.inf), axis=1)
        new = np.ones(bb.shape, bool)
        new[:, 1:] = mass[:, 1:] > prev[:, :-1] + 1e-15
        sel = ok & new & held_any[:, None]
        toks.append(bb[sel])
        gms.append(gg[sel])
    toks.append(np.array([long]))
    gms.append(np.array([1.0]))
    return np.concatenate(toks).astype(np.int64), np.concatenate(gms).astype(float)


def _candidate_arcs(node_tokens: np.ndarray, node_gamma: np.ndarray, max_pools: int):
    """All arcs ``u -> v`` of a source-to-sink path of at most ``max_pools`` arcs."""
    n = node_tokens.size
    sink = n - 1
    inner = np.arange(1, n - 1)
    us, vs = [np.array([0])], [np.array([sink])]
    if max_pools >= 2 and inner.size:
        us += [np.zeros(inner.size, np.int64), inner]
        vs += [inner, np.full(inner.size, sink)]
    if max_pools >= 3 and inner.size:
        uu, vv = np.meshgrid(inner, inner, indexing="ij")
        uu, vv = uu.ravel(), vv.ravel()
        end = band_end_tokens(node_tokens[uu], node_gamma[uu])
        keep = (node_tokens[vv] > node_tokens[uu]) & (end <= node_tokens[vv])
        us.append(uu[keep])
        vs.append(vv[keep])
    return np.concatenate(us).astype(np.int64), np.concatenate(vs).astype(np.int64)


def _serving(problem: FleetProblem, tables, node_ok, node_tokens, node_bidx, u, v
             ) -> np.ndarray:
    """``(a, t)``: type ``t`` can serve arc ``u -> v`` (window fits, table has the nodes)."""
    sink = node_tokens.size - 1
    out = np.zeros((u.size, len(problem.types)), bool)
    window = node_tokens[v]
    for t, p in enumerate(problem.types):
        if tables[t] is None:
            continue
        ok = window <= p.max_context_tokens
        okb = node_ok[t]
        last = okb.size - 1
        uu = np.clip(node_bidx[u], 0, last)
        vv = np.clip(node_bidx[v], 0, last)
        ok &= np.where(u == 0, True, okb[uu])
        ok &= np.where(v == sink, p.max_context_tokens >= problem.scenario.long_context_tokens,
                       okb[vv])
        out[:, t] = ok
    return out


def candidate_graph(problem: FleetProblem) -> CandidateGraph:
    """Stage 1 of :func:`~fleetopt_milp.milp.precompute`: demand tables, nodes and every
    candidate arc of a path of at most ``max_pools`` arcs (docs/milp.md §2)."""
    s = problem.scenario
    workload = problem.workload
    bnd = _boundaries(problem, workload)
    gammas = gamma_grid(s.gamma_max, s.gamma_steps) if s.compressible_share > 0 \
        else np.array([1.0])
    tables, node_ok = _build_tables(problem, workload, bnd, gammas)
    node_tokens, node_gamma = _nodes(problem, tables, node_ok, bnd, gammas)
    node_bidx = np.searchsorted(bnd, node_tokens)
    u, v = _candidate_arcs(node_tokens, node_gamma, int(problem.max_pools))
    serve = _serving(problem, tables, node_ok, node_tokens, node_bidx, u, v)
    return CandidateGraph(workload, bnd, gammas, tables, node_ok, node_tokens, node_gamma,
                          node_bidx, u, v, serve)


def arc_loads(problem: FleetProblem, table: MomentTable, node_tokens, node_gamma, u, v
              ) -> tuple[PoolLoad, Moments]:
    """Exact :class:`PoolLoad` and moments of arcs ``u -> v`` under one type's table
    (docs/model.md §3-4): the plain range, less ``p_c`` of the band compressed down out
    of it, plus ``p_c`` of the band compressed into it; the load is the scenario's
    service model's (:mod:`fleetopt_milp.service`)."""
    s = problem.scenario
    pc = s.compressible_share
    sink = node_tokens.size - 1
    lo = node_tokens[u]
    hi = node_tokens[v]
    m = table.plain(lo, hi, hi)
    bnd = table.boundaries_tokens
    if pc > 0 and bnd.size:
        down = (u != 0) & (node_gamma[u] > 1.0)
        if np.any(down):
            b = np.where(down, lo, bnd[0])
            g = np.where(down, node_gamma[u], 1.0)
            m = m - table.band_plain(b, g, hi).scaled(pc)
        into = (v != sink) & (node_gamma[v] > 1.0)
        if np.any(into):
            b = np.where(into, hi, bnd[0])
            g = np.where(into, node_gamma[v], 1.0)
            m = m + table.band_compressed(b, g).scaled(pc)
    return scenario_pool_load(s, m, table, hi), m


def fluid_counts(problem: FleetProblem, graph: CandidateGraph, idx: np.ndarray) -> np.ndarray:
    """``(a, t)`` continuous fluid instance counts ``lambda s1 / (slots rho_max)`` of arcs
    ``idx`` with a lower bound on ``s1 = sum p S`` (docs/model.md §2-3) from prefix sums
    over the workload's classes: the band compressed down out of a pool is bounded by
    *all* requests of the band. Every exact count is at least ``ceil`` of it (docs/milp.md
    §6); inf where ``t`` cannot serve."""
    s = problem.scenario
    if s.service_model == "engine":
        return _engine_fluid_counts(problem, graph, idx)
    if s.service_model != "slot":
        raise FleetOptError(f"service_model={s.service_model!r}: the MILP has lower bounds "
                            "for the slot and engine service models only (docs/milp.md §6)")
    wl = graph.workload
    node_tokens, node_gamma = graph.node_tokens, graph.node_gamma
    u, v, serve = graph.u[idx], graph.v[idx], graph.serve[idx]
    pc = s.compressible_share
    L = wl.total_tokens.astype(np.int64)
    p = wl.weights
    lo = node_tokens[u]
    hi = node_tokens[v]
    end = np.where(u == 0, lo, band_end_tokens(lo, node_gamma[u]))
    i_lo = np.searchsorted(L, lo, side="right")
    i_hi = np.searchsorted(L, hi, side="right")
    i_end = np.searchsorted(L, np.minimum(end, hi), side="right")
    out = np.full((u.size, len(problem.types)), np.inf)
    for t, prof in enumerate(problem.types):
        ok = serve[:, t]
        if not np.any(ok):
            continue
        a = (-(-wl.input_tokens // prof.chunk_tokens) + wl.output_tokens)
        cum_a = np.concatenate([[0.0], np.cumsum(p * a)])
        cum_al = np.concatenate([[0.0], np.cumsum(p * a * L)])
        w = prof.w_ms * 1e-3
        uw, inv = np.unique(np.where(ok, hi, hi[ok][0]), return_inverse=True)
        slots = np.array([prof.slots(int(x)) for x in uw], dtype=float)[inv]
        h = prof.h_ms * 1e-3 * slots / prof.calib_tokens
        s1 = w * (cum_a[i_hi] - cum_a[i_lo]) + h * (cum_al[i_hi] - cum_al[i_lo])
        s1 -= pc * (w * (cum_a[i_end] - cum_a[i_lo]) + h * (cum_al[i_end] - cum_al[i_lo]))
        into = (v != graph.sink) & (node_gamma[v] > 1.0) & ok
        if pc > 0 and np.any(into):
            nodes, inv = np.unique(v[into], return_inverse=True)
            bc = graph.tables[t].band_compressed(node_tokens[nodes], node_gamma[nodes])
            s1[into] += pc * np.asarray(bc.s1)[inv]
        s1 = np.maximum(s1, 0.0)
        out[:, t] = np.where(ok, s.rate_rps * s1 / (slots * s.rho_max), np.inf)
    return out


def _engine_fluid_counts(problem: FleetProblem, graph: CandidateGraph, idx: np.ndarray
                         ) -> np.ndarray:
    """``(a, t)`` lower bounds on the instances of arcs ``idx`` under the engine service
    model (docs/engine.md §2, docs/milp.md §6); inf where ``t`` cannot serve.

    An instance at rate ``lambda_i = lambda / n`` takes a share ``lambda_i (E[a] W / cap +
    E[g])`` of its saturation throughput, which the sizing holds to ``rho_max``, with ``cap
    <=`` the engine's batch cap (``engine_max_batch``): ``n >= lambda (E[a] W / cap_max +
    E[g]) / rho_max``.
    ``lambda E[a]`` and ``lambda E[g]`` are sums over the pool's requests of non-negative
    per-request terms, bounded below as in :func:`fluid_counts`: the band compressed down
    out of the pool is bounded by all requests of the band. TTFT and TPOT SLOs only add
    instances, so every exact count is at least ``ceil`` of this bound.
    """
    s = problem.scenario
    pc = s.compressible_share
    u, v = graph.u[idx], graph.v[idx]
    tok, gam = graph.node_tokens, graph.node_gamma
    out = np.full((u.size, len(problem.types)), np.inf)
    for t, prof in enumerate(problem.types):
        rows = np.flatnonzero(graph.serve[idx, t])
        if not rows.size:
            continue
        table = graph.tables[t]
        uu, vv = u[rows], v[rows]
        lo, hi = tok[uu], tok[vv]
        m = table.plain(lo, hi, hi)
        if pc > 0:
            end = np.where((uu != 0) & (gam[uu] > 1.0), band_end_tokens(lo, gam[uu]), lo)
            m = m - table.plain(lo, np.minimum(end, hi), hi).scaled(pc)
        iters = np.asarray(m.iters, float)
        cost = np.asarray(m.step_cost_s, float)
        into = np.flatnonzero((vv != graph.sink) & (gam[vv] > 1.0)) if pc > 0 else []
        if len(into):
            bc = table.band_compressed(hi[into], gam[vv[into]])
            iters[into] += pc * np.asarray(bc.iters, float)
            cost[into] += pc * np.asarray(bc.step_cost_s, float)
        slots = float(max(prof.engine_max_batch, 1))
        per = (iters * prof.w_ms * 1e-3 / slots + cost) / s.rho_max
        out[rows, t] = s.rate_rps * np.maximum(per, 0.0)
    return out


@dataclass(frozen=True)
class Sizes:
    """Exact sizes of the candidate arcs sized so far (arrays over all candidate arcs).

    counts: ``(a, t)`` exact minimum instances ``N1`` of the whole pool on type ``t``
        (docs/model.md §3): >= 1 where it can serve (0 for a pool without requests),
        :data:`CANNOT_SERVE` where it cannot, :data:`NOT_SIZED` for arcs not sized yet.
    mass: ``(a,)`` share of all requests the pool receives (0 until sized).
    x_top: ``(a, t)`` ``X(N1)``, the share ``N1`` instances carry (only when pools may mix
        types, else 0): ``N1 / X(N1)`` is the least instances per unit of share.
    loads: per type, the :class:`TypeLoads` of the arcs sized on it (None before any).
    """

    counts: np.ndarray
    mass: np.ndarray
    x_top: np.ndarray
    loads: tuple[TypeLoads | None, ...]

    @classmethod
    def none(cls, n_arcs: int, n_types: int) -> Sizes:
        return cls(np.full((n_arcs, n_types), NOT_SIZED, dtype=np.int64), np.zeros(n_arcs),
                   np.zeros((n_arcs, n_types)), (None,) * n_types)

    @property
    def sized(self) -> np.ndarray:
        """``(a,)`` arcs sized so far."""
        return self.counts[:, 0] != NOT_SIZED


def size_arcs(problem: FleetProblem, graph: CandidateGraph, sizes: Sizes,
              idx: np.ndarray) -> Sizes:
    """``sizes`` with arcs ``idx`` (not sized yet) sized exactly on every type that can
    serve them: loads, ``N1`` and, when pools may mix, ``X(N1)``."""
    s = problem.scenario
    mix = problem.mixing_mode != "none"
    counts, mass, x_top = sizes.counts.copy(), sizes.mass.copy(), sizes.x_top.copy()
    loads = list(sizes.loads)
    for t in range(len(problem.types)):
        counts[idx, t] = CANNOT_SERVE
        sel = idx[graph.serve[idx, t]]
        if not sel.size:
            continue
        load, m = arc_loads(problem, graph.tables[t], graph.node_tokens, graph.node_gamma,
                            graph.u[sel], graph.v[sel])
        n = min_instances(load, s.slo_ms * 1e-3, s.percentile, s.rho_max,
                          paper_rule=s.paper_compat)
        counts[sel, t] = n
        mass[sel] = np.maximum(np.asarray(m.mass, float), 0.0)
        loads[t] = TypeLoads(sel.copy(), load) if loads[t] is None \
            else loads[t].extended(sel, load)
        rows = np.flatnonzero(n >= 1)
        if mix and rows.size:
            x_top[sel[rows], t] = capacity_share(problem, load, rows, n[rows])
    return Sizes(counts, mass, x_top, tuple(loads))
