"""The fleet MILP: Pyomo + HiGHS over pools, GPU types, budgets and availability.

MODEL.md sections 3, 4 and 6. The analytical planner (:mod:`fleetopt_milp.planner`) answers
the paper's question: two pools, one GPU type. This module answers the general one: up to
``K`` ordered pools, several GPU types (mixed within a pool, each allocation its own M/G/c
queue), availability caps per GPU type, a cap on total GPUs, a budget in $/hour, a minimum
of instances per pool, and Compress-and-Route with ``gamma`` chosen per boundary.

Formulation (a shortest path with side constraints)
---------------------------------------------------
- **Nodes** are candidate boundaries with their band ratio, ``(B, gamma)``, plus a source
  (0 tokens) and a sink (the long-context window). **Arcs** ``u -> v`` with ``B_u < B_v``
  and ``floor(gamma_u B_u) <= B_v`` are candidate pools: the pool of window ``B_v`` serving
  ``(B_u, B_v]`` less the compressible band ``(B_u, gamma_u B_u]`` compressed *down* out of
  it, plus the band ``(B_v, gamma_v B_v]`` compressed *into* it (MODEL.md section 4, the
  rule of :meth:`~fleetopt_milp.demand.MomentTable.pools`). A fleet is a source-to-sink
  path of at most ``K`` arcs: binaries ``use[a]`` with flow conservation.
- **Exact sizing.** For every kept arc and GPU type the pool's exact moments give its
  :class:`~fleetopt_milp.queueing.PoolLoad` and ``N1`` = minimum instances for the whole
  pool (:func:`~fleetopt_milp.queueing.min_instances`, MODEL.md section 3).
- **One type per pool** (disaggregated, SOLVER_NOTES.md): binaries ``solo[a, t]`` with
  ``use[a] = sum_t solo[a, t] + mixed[a]``; a solo pool costs ``N1 x $/instance-hour``.
- **Mixed pools** (``FleetProblem.mixing``). ``"full"``: a mixed pool splits its
  requests between types with continuous shares ``x_t`` (``sum_t x_t = mixed[a]``); type
  ``t`` needs ``n_t >= N_t(x_t)`` instances, ``N_t`` the minimum-instances staircase of
  the share it receives. The MILP uses its inverse, the exact capacity ``X_t(k)`` = largest
  share ``k`` instances carry (:func:`capacity_share`), at a few levels ``k_1 < ... < k_L``
  (1, 2, 4, ..., ``N1 - 1``, ``N1``; levels whose capacity per instance grows by less than
  :data:`LEVEL_MERGE_TOLERANCE` are merged), one binary per level: ``x_t <= sum_i r_i
  m_i`` with ``r_i = (X_t(k_i) - CAPACITY_MARGIN) / k_i``, ``k_i z_i <= m_i <= (k_{i+1} -
  1) z_i``, ``sum_i z_i <= mixed[a]``, ``n_t = sum_i m_i`` integer. It never under-counts:
  capacity per instance ``X(n)/n`` is non-decreasing in ``n`` (at a fixed utilization
  Erlang C falls and the wait-tail decay ``2 (c - a) / (E[S] (1 + cs2))`` grows with ``c``;
  the utilization cap is linear), so ``X(n) >= n r_i`` for ``n >= k_i``; it is exact at
  every level. ``"filler"``: a mixed pool is a main type plus 1 to
  :data:`FILLER_MAX_INSTANCES` instances of one other type taking the share ``X(k)`` they
  carry, the main count exact for the rest; the best such pool of each arc is one column
  (one binary). This is what a mixed pool buys without caps (the rounding of the main
  type's count), and keeps the MILP a few hundred variables. ``"auto"`` (default) is
  ``"full"`` when availability or total-GPU caps couple the pools, else ``"filler"``.
- Constraints: availability ``gpus[gpu] <= cap``, ``sum gpus <= max_total_gpus``,
  ``usd_per_hour <= budget``, ``instances of a pool >= min_instances_per_pool`` (pools
  that receive requests), the utilization cap ``rho_max`` (inside ``N`` and ``X``).
  Objective: minimum $/hour. The highest rate under a budget is found by bisection over
  the rate with one min-cost MILP per step (:func:`solve_max_rate`): cost is monotone in
  the rate.
- **Warm start and pruning with a certificate.** ``K >= 3`` has ``O(nodes^2)`` arcs.
  :func:`precompute` first finds a feasible fleet: the analytical planner's two-pool
  search over every pair of types, then shortest paths over exact pool costs (GPUs of
  capped types priced up until the path meets the caps). Its cost ``UB`` is the warm start
  and the pruning bound: an arc is kept only if a lower bound on the cost of every path
  through it is at most ``UB`` - a fluid bound (``ceil(lambda E[S] / (slots rho_max))``
  instances, from prefix sums) on all arcs, then exact counts on the survivors (mixed
  pools bounded by ``min_t price_t N1_t / X_t(N1_t)``). Any optimum of the pruned model
  that costs at most ``UB`` is optimal for the full model. Only constraints added by the
  user can push the optimum above ``UB`` (or make the pruned model infeasible);
  :func:`solve_model` then re-prunes with the larger bound, adds the missing pools to the
  model and solves again, and reports the certificate in ``plan.solver["pruning"]``.
- After solving, every pool is re-checked with the exact queueing model at its actual
  shares (shares re-split within the exact capacities), and any allocation short of
  instances is repaired (``solver["repaired"]``; none in the tests and benchmarks).

Usage: ``model = build_model(problem)``, add your own constraints on the named
expressions (``model.gpus[gpu]``, ``model.instances[profile]``, ``model.usd_per_hour``,
``model.n_pools``), then ``plan = solve_model(model)``. :func:`solve` does both.

Units: tokens, requests/s, seconds (``*_s``) or milliseconds (``*_ms``), USD per hour.
Pyomo is imported here only; the package ``__init__`` and the planner never import it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np
import pyomo.environ as pyo
from pyomo.contrib.appsi.base import TerminationCondition
from pyomo.contrib.appsi.solvers import Highs

from .demand import Moments, MomentTable, pool_load
from .errors import FleetOptError, InfeasibleError
from .hardware import Profile
from .plan import Allocation, FleetSummary, Plan, PoolPlan
from .queueing import (
    PoolLoad,
    min_instances,
    ttft_miss_probability,
    ttft_quantile_s,
    wait_quantile_s,
)
from .scenario import Scenario, default_boundaries, gamma_grid

__all__ = [
    "FleetProblem",
    "ArcTables",
    "precompute",
    "build_model",
    "solve_model",
    "solve",
    "solve_max_rate",
    "capacity_share",
    "LEVEL_MERGE_TOLERANCE",
    "CAPACITY_MARGIN",
    "FILLER_MAX_INSTANCES",
    "GROW_FACTOR_LIMIT",
    "GROW_ALL_MAX_ARCS",
    "HIGHS_OPTIONS",
]

LEVEL_MERGE_TOLERANCE = 0.002
"""Capacity levels whose per-instance capacity exceeds the level below by less than this
relative amount are merged into it (conservative: the lower ratio is used)."""

FILLER_MAX_INSTANCES = 4
"""``mixing="filler"``: a mixed pool is a main type plus 1 to this many instances of one
other type (the filler takes the share those instances carry, exactly ``X(n)``)."""

GROW_FACTOR_LIMIT = 16.0
GROW_ALL_MAX_ARCS = 20_000
"""When user constraints make a pruned model infeasible, :func:`solve_model` doubles the
pruning bound up to this factor times the warm start's cost, then keeps every candidate
pool if there are at most ``GROW_ALL_MAX_ARCS`` of them (else it reports the bound)."""

CAPACITY_MARGIN = 2e-6
"""Share subtracted from every capacity level ``X(k)`` so that HiGHS's feasibility
tolerance (1e-7) can never turn a level into an over-count."""

HIGHS_OPTIONS = MappingProxyType({"presolve_rule_off": 4096 | 32768})
"""HiGHS options used by :func:`solve_model`: presolve without its *aggregator* (bit 12)
and *probing* (bit 15). On this model's linking rows ``use[a] = sum_t solo[a, t]`` under one
path constraint the aggregator is quadratic (measured with HiGHS 1.16 on 2 cores: 4.9 s ->
0.03 s at 5,000 binaries) and probing spends ~1 s on 1,000 binaries (1.6 s -> 0.2 s on the
three-pool, four-type azure-2023 model)."""

_ROLES = {1: ("homogeneous",), 2: ("short", "long"), 3: ("short", "medium", "long"),
          4: ("short", "medium-1", "medium-2", "long")}
_EPS_USD = 1e-6


# ---------------------------------------------------------------------------------------
# The question
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FleetProblem:
    """A fleet question for the MILP (MODEL.md sections 3-4 and 6).

    scenario: workload, rate, SLO, long window, gamma grid, ``p_c``, ``rho_max``,
        compression latency, paper rule and candidate boundaries (its ``profile`` is used
        only when ``profiles`` is empty).
    profiles: the GPU types (serving profiles of one model) the fleet may use.
    max_pools: ``K``, the largest number of pools (1 to 4); fewer are chosen when cheaper.
    max_gpus: availability caps, GPU name (``Profile.gpu``) -> most GPUs of that type.
    max_total_gpus: cap on all GPUs of the fleet, or None.
    budget_usd_per_hour: the fleet must cost at most this (USD/h), or None.
    min_instances_per_pool: redundancy; every pool that receives requests gets at least
        this many instances.
    mixing: how a pool may split its load between GPU types: ``"full"`` (any split,
        continuous shares, capacity levels), ``"filler"`` (a main type plus up to
        :data:`FILLER_MAX_INSTANCES` instances of one other type, one binary per pool),
        ``"none"`` (one type per pool) or ``"auto"`` (``"full"`` when availability or
        total-GPU caps couple the pools, else ``"filler"``).
    """

    scenario: Scenario
    profiles: tuple[Profile, ...] = ()
    max_pools: int = 2
    max_gpus: Mapping[str, int] = field(default_factory=dict)
    max_total_gpus: int | None = None
    budget_usd_per_hour: float | None = None
    min_instances_per_pool: int = 0
    mixing: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_gpus", MappingProxyType(dict(self.max_gpus)))
        object.__setattr__(self, "profiles", tuple(self.profiles))

    @property
    def types(self) -> tuple[Profile, ...]:
        """The profiles the fleet may use (``profiles``, or the scenario's one)."""
        return tuple(self.profiles) if self.profiles else (self.scenario.profile,)

    def with_rate(self, rate_rps: float) -> FleetProblem:
        """The same question at another arrival rate (requests/s)."""
        return replace(self, scenario=replace(self.scenario, rate_rps=float(rate_rps)))

    def validated(self) -> FleetProblem:
        """Check every field; raise :class:`FleetOptError` naming the field and the fix."""
        types = self.types
        if not 1 <= int(self.max_pools) <= 4:
            raise FleetOptError(f"max_pools={self.max_pools}: choose 1 to 4 pools (--pools)")
        names = [p.name for p in types]
        if len(set(names)) != len(names):
            raise FleetOptError(f"profiles: {', '.join(names)} lists a profile twice; give "
                                "each GPU type once (--gpus)")
        models = {p.model for p in types}
        if len(models) > 1:
            raise FleetOptError(f"profiles serve different models ({', '.join(sorted(models))}"
                                "); a fleet serves one model: pass --model once")
        long = self.scenario.long_context_tokens
        able = [p for p in types if p.max_context_tokens >= long]
        if not able:
            best = max(types, key=lambda p: p.max_context_tokens)
            raise FleetOptError(
                f"long_context_tokens={long}: no GPU type can hold a {long}-token window "
                f"(largest: {best.max_context_tokens} on {best.name}); lower --long-context "
                "or add a GPU with more memory to --gpus")
        replace(self.scenario, profile=able[0]).validated()
        gpus = {p.gpu.casefold(): p.gpu for p in types}
        for gpu, cap in self.max_gpus.items():
            if gpu.casefold() not in gpus:
                raise FleetOptError(f"max_gpus[{gpu!r}]: {gpu} is not a GPU of the fleet's "
                                    f"types ({', '.join(sorted(set(gpus.values())))}); fix "
                                    "--max-gpus")
            if isinstance(cap, bool) or not isinstance(cap, (int, np.integer)) or cap < 0:
                raise FleetOptError(f"max_gpus[{gpu!r}]={cap!r}: a cap is a whole number of "
                                    "GPUs >= 0 (--max-gpus TYPE=N)")
        if self.max_total_gpus is not None and (
                isinstance(self.max_total_gpus, bool) or self.max_total_gpus < 0):
            raise FleetOptError(f"max_total_gpus={self.max_total_gpus}: must be a whole "
                                "number >= 0")
        b = self.budget_usd_per_hour
        if b is not None and not (math.isfinite(b) and b > 0):
            raise FleetOptError(f"budget_usd_per_hour={b}: must be a positive amount in USD "
                                "per hour (--budget-usd-per-hour)")
        if self.mixing not in ("auto", "full", "filler", "none"):
            raise FleetOptError(f"mixing={self.mixing!r}: use auto, full, filler or none "
                                "(--mix)")
        if isinstance(self.min_instances_per_pool, bool) or self.min_instances_per_pool < 0:
            raise FleetOptError(f"min_instances_per_pool={self.min_instances_per_pool}: must "
                                "be a whole number >= 0 (--min-instances)")
        return self

    @property
    def mixing_mode(self) -> str:
        """The resolved :attr:`mixing` (``"none"`` with one type; ``"auto"`` resolved)."""
        if len(self.types) < 2 or self.mixing == "none":
            return "none"
        if self.mixing == "auto":
            coupled = bool(self.max_gpus) or self.max_total_gpus is not None
            return "full" if coupled else "filler"
        return self.mixing

    def cap_of(self, gpu: str) -> int | None:
        """The availability cap (GPUs) of GPU ``gpu``, or None."""
        for k, v in self.max_gpus.items():
            if k.casefold() == gpu.casefold():
                return int(v)
        return None


# ---------------------------------------------------------------------------------------
# Precomputed tables
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArcTables:
    """Everything the MILP needs, precomputed exactly (arrays over kept arcs ``a`` and
    types ``t``; MODEL.md sections 3-4).

    node_tokens / node_gamma: node boundary (tokens) and its band ratio; node 0 is the
        source (0 tokens), the last node the sink (long window).
    arc_u / arc_v: kept arcs (node indices); the pool's window is ``node_tokens[arc_v]``.
    mass: share of all requests the pool receives; compressed_in: share compressed into it.
    solo: ``(a, t)`` exact minimum instances for the whole pool (-1: type cannot serve it).
    level_k / level_r / level_hi: ``(a, t, L)`` capacity levels for mixed pools: counts
        ``k_i`` (0 = unused), capacity per instance ``r_i = X(k_i) / k_i`` (share per
        instance), and the largest count of the level's segment.
    mix_arc: ``(a,)`` whether the arc gets mixed-pool variables.
    mixing: the resolved mixing mode (``"full"``, ``"filler"`` or ``"none"``).
    fill_main / fill_main_n / fill_type / fill_n / fill_share: ``(a,)`` the best
        main-plus-filler pool of each arc (``mixing="filler"``; -1 where none): main type
        and instances, filler type, instances and the share of requests it takes.
    lower_bound_usd: ``(a,)`` lower bound on the arc's pool cost (solo or mixed), USD/h.
    upper_bound_usd_per_hour: the bound arcs were pruned against (inf: no pruning).
    arcs_total: candidate arcs before pruning. seconds: precompute timings.
    warm_arcs / warm_types: the warm start (the cheapest feasible fleet found before the
        MILP: the analytical planner's two-pool search over all types, improved by a
        shortest path over exact pool costs), as kept-arc indices and type indices (-1: the
        arc's main-plus-filler pool).
    baselines / baseline_profiles: the analytical baselines, each the best over the types.
    """

    problem: FleetProblem
    profiles: tuple[Profile, ...]
    tables: tuple[MomentTable | None, ...]
    node_tokens: np.ndarray
    node_gamma: np.ndarray
    arc_u: np.ndarray
    arc_v: np.ndarray
    mass: np.ndarray
    compressed_in: np.ndarray
    solo: np.ndarray
    level_k: np.ndarray
    level_r: np.ndarray
    level_hi: np.ndarray
    mix_arc: np.ndarray
    mixing: str
    fill_main: np.ndarray
    fill_main_n: np.ndarray
    fill_type: np.ndarray
    fill_n: np.ndarray
    fill_share: np.ndarray
    lower_bound_usd: np.ndarray
    upper_bound_usd_per_hour: float
    arcs_total: int
    warm_arcs: tuple[int, ...]
    warm_types: tuple[int, ...]
    warm_usd_per_hour: float
    baselines: Mapping[str, FleetSummary]
    baseline_profiles: Mapping[str, str]
    seconds: Mapping[str, float]

    @property
    def n_arcs(self) -> int:
        return int(self.arc_u.size)

    @property
    def price(self) -> np.ndarray:
        """USD per instance-hour of each type."""
        return np.array([p.usd_per_instance_hour for p in self.profiles])

    def solo_instances(self, min_per_pool: int) -> np.ndarray:
        """``(a, t)`` instances of a solo pool with the redundancy floor applied (-1 kept)."""
        n = self.solo.copy()
        busy = (self.mass > 1e-15)[:, None] & (n >= 0)
        n[busy] = np.maximum(n[busy], min_per_pool)
        return n


def _workload(s: Scenario):
    if s.paper_compat and s.workload.kind == "trace":
        return s.workload.with_paper_split()
    return s.workload


def _build_tables(problem: FleetProblem, workload, boundaries: np.ndarray, gammas: np.ndarray):
    """One :class:`MomentTable` per type, same boundaries and gammas; ``node_ok[t]`` marks
    the boundaries a type's table holds (all of them unless its memory forbids the band
    ends; see the note in the code)."""
    s = problem.scenario
    tables, ok = [], []
    for p in problem.types:
        try:
            tab = MomentTable(workload, p, boundaries, gammas, s.long_context_tokens,
                              s.compression_latency_ms * 1e-3)
            tables.append(tab)
            ok.append(np.ones(boundaries.size, bool))
            continue
        except FleetOptError:
            pass
        # The table needs slots at every cut (boundaries and band ends floor(gamma B)); a
        # GPU whose largest window is below some of them gets a table over the boundaries
        # whose band ends fit, and a shorter long window. It cannot serve the others.
        cap = p.max_context_tokens
        fits = np.floor(boundaries * gammas.max() + 1e-9) <= cap
        long = min(s.long_context_tokens, cap)
        sub = boundaries[fits & (boundaries < long)]
        try:
            tab = MomentTable(workload, p, sub, gammas, long, s.compression_latency_ms * 1e-3)
        except FleetOptError:
            tab = None
        tables.append(tab)
        ok.append(np.isin(boundaries, sub) if tab is not None else np.zeros(boundaries.size,
                                                                             bool))
    return tuple(tables), ok


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
        ok = np.floor(bb * gg + 1e-9) <= long
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
    """All arcs ``u -> v`` of a path of at most ``max_pools`` pools."""
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
        end = np.floor(node_tokens[uu] * node_gamma[uu] + 1e-9)
        keep = (node_tokens[vv] > node_tokens[uu]) & (end <= node_tokens[vv])
        us.append(uu[keep])
        vs.append(vv[keep])
    return np.concatenate(us).astype(np.int64), np.concatenate(vs).astype(np.int64)


def _serving_ok(problem: FleetProblem, node_ok, node_tokens, node_bidx, u, v) -> np.ndarray:
    """``(a, t)``: type ``t`` can serve arc ``u -> v`` (window fits, table has the nodes)."""
    sink = node_tokens.size - 1
    out = np.zeros((u.size, len(problem.types)), bool)
    window = node_tokens[v]
    for t, p in enumerate(problem.types):
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


def _fluid_counts(problem: FleetProblem, workload, tables, node_tokens, node_gamma, u, v,
                  serve) -> np.ndarray:
    """``(a, t)`` continuous fluid instance counts ``lambda s1 / (slots rho_max)`` with a
    lower bound on ``s1 = sum p S`` (MODEL.md §2-3) from prefix sums over the workload's
    classes: the band compressed down out of a pool is bounded by *all* requests of the
    band. Every exact count is at least ``ceil`` of it; inf where ``t`` cannot serve."""
    s = problem.scenario
    pc = s.compressible_share
    L = workload.total_tokens.astype(np.int64)
    p = workload.weights
    sink = node_tokens.size - 1
    lo = node_tokens[u]
    hi = node_tokens[v]
    end = np.where(u == 0, lo, np.floor(lo * node_gamma[u] + 1e-9).astype(np.int64))
    i_lo = np.searchsorted(L, lo, side="right")
    i_hi = np.searchsorted(L, hi, side="right")
    i_end = np.searchsorted(L, np.minimum(end, hi), side="right")
    out = np.full((u.size, len(problem.types)), np.inf)
    for t, prof in enumerate(problem.types):
        ok = serve[:, t]
        if not np.any(ok):
            continue
        a = (-(-workload.input_tokens // prof.chunk_tokens) + workload.output_tokens)
        cum_a = np.concatenate([[0.0], np.cumsum(p * a)])
        cum_al = np.concatenate([[0.0], np.cumsum(p * a * L)])
        w = prof.w_ms * 1e-3
        uw, inv = np.unique(np.where(ok, hi, hi[ok][0]), return_inverse=True)
        slots = np.array([prof.slots(int(x)) for x in uw], dtype=float)[inv]
        h = prof.h_ms * 1e-3 * slots / prof.calib_tokens
        s1 = w * (cum_a[i_hi] - cum_a[i_lo]) + h * (cum_al[i_hi] - cum_al[i_lo])
        s1 -= pc * (w * (cum_a[i_end] - cum_a[i_lo]) + h * (cum_al[i_end] - cum_al[i_lo]))
        into = (v != sink) & (node_gamma[v] > 1.0) & ok
        if pc > 0 and np.any(into):
            nodes, inv = np.unique(v[into], return_inverse=True)
            bc = tables[t].band_compressed(node_tokens[nodes], node_gamma[nodes])
            s1[into] += pc * np.asarray(bc.s1)[inv]
        s1 = np.maximum(s1, 0.0)
        out[:, t] = np.where(ok, s.rate_rps * s1 / (slots * s.rho_max), np.inf)
    return out


def _arc_loads(problem: FleetProblem, table: MomentTable, node_tokens, node_gamma, u, v
               ) -> tuple[PoolLoad, Moments]:
    """Exact :class:`PoolLoad` of arcs ``u -> v`` under one type's table (MODEL.md §3-4)."""
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
    return pool_load(m, table, hi, s.rate_rps), m


def _slo_ok(problem: FleetProblem, load: PoolLoad, idx, servers, share) -> np.ndarray:
    """The SLO test of MODEL.md §3 for candidates ``idx`` at ``servers`` slots and a share."""
    s = problem.scenario
    q = s.percentile / 100.0
    slo = s.slo_ms * 1e-3
    a = load.offered_load[idx] * share
    es = load.mean_service_s[idx]
    cs2 = load.cs2[idx]
    if s.paper_compat:
        w = wait_quantile_s(q, servers, a, es, cs2)
        return np.asarray(w + load.mean_floor_s[idx] <= slo)
    fs = load.floor_s if np.ndim(load.floor_s) == 1 else load.floor_s[idx]
    miss = ttft_miss_probability(slo, servers, a, es, cs2, fs, load.floor_prob[idx])
    return np.asarray(miss <= 1.0 - q)


def _subload(load: PoolLoad, idx, share) -> PoolLoad:
    fs = load.floor_s if np.ndim(load.floor_s) == 1 else load.floor_s[idx]
    return PoolLoad(load.rate_rps[idx] * share, load.mean_service_s[idx], load.cs2[idx],
                    load.slots_per_instance[idx], fs, load.floor_prob[idx])


def capacity_share(problem: FleetProblem, load: PoolLoad, idx, instances) -> np.ndarray:
    """Largest share of each pool's requests that ``instances`` instances carry within the
    SLO and ``rho_max`` (MODEL.md §3): ``X(k)``, the inverse of the minimum-instances
    staircase. Vectorised over ``idx`` (pool indices into ``load``) and ``instances``.

    The utilization bound ``k slots rho_max / a`` is exact where the SLO holds there;
    elsewhere a bisection on the share (relative precision 1e-12). Every result is
    confirmed with :func:`~fleetopt_milp.queueing.min_instances` (``N(X) <= k``) and nudged
    down until it is; 0 where the type cannot serve the pool. May exceed 1.
    """
    s = problem.scenario
    idx = np.asarray(idx, dtype=np.int64)
    k = np.asarray(instances, dtype=float)
    slots = load.slots_per_instance[idx].astype(float)
    a1 = load.offered_load[idx]
    servers = k * slots
    x = np.zeros(idx.size)
    live = (a1 > 0) & (k >= 1)
    if not np.any(live):
        return x
    li = np.flatnonzero(live)
    x_rho = servers[li] * s.rho_max / a1[li]
    ok = _slo_ok(problem, load, idx[li], servers[li], x_rho)
    x[li[ok]] = x_rho[ok]
    todo = li[~ok]
    if todo.size:
        lo = np.zeros(todo.size)
        hi = servers[todo] * s.rho_max / a1[todo]
        for _ in range(45):
            mid = 0.5 * (lo + hi)
            good = _slo_ok(problem, load, idx[todo], servers[todo], mid)
            lo = np.where(good, mid, lo)
            hi = np.where(good, hi, mid)
        x[todo] = lo
    for _ in range(4):
        check = np.flatnonzero(x > 0)
        if not check.size:
            break
        n = min_instances(_subload(load, idx[check], x[check]), s.slo_ms * 1e-3,
                          s.percentile, s.rho_max, paper_rule=s.paper_compat)
        bad = (n > k[check]) | (n < 0)
        if not np.any(bad):
            break
        x[check[bad]] *= 1.0 - 1e-7
    else:
        check = np.flatnonzero(x > 0)
        if check.size:
            n = min_instances(_subload(load, idx[check], x[check]), s.slo_ms * 1e-3,
                              s.percentile, s.rho_max, paper_rule=s.paper_compat)
            x[check[(n > k[check]) | (n < 0)]] = 0.0
    return x


def _levels(problem: FleetProblem, load: PoolLoad, n1: np.ndarray, n_max: np.ndarray):
    """Capacity levels ``(k, r, hi)`` per pool, arrays ``(n, L)`` (MODEL.md §3; see the
    module docstring). Candidate counts 1, 2, 4, ... below ``N1 - 1``, then ``N1 - 1`` and
    ``N1``; a level is kept if its capacity per instance beats the kept level below by
    more than :data:`LEVEL_MERGE_TOLERANCE` (the top one if it beats it at all)."""
    n = n1.size
    top = int(n1.max()) if n else 1
    cols = []
    j = 1
    while j < max(top - 1, 1):
        cols.append(np.where(j < n1 - 1, j, 0))
        j *= 2
    cols.append(np.where(n1 - 1 >= 1, n1 - 1, 0))
    cols.append(n1.copy())
    kc = np.stack(cols, axis=1).astype(np.int64)
    kc[n1 <= 0] = 0
    rows, colidx = np.nonzero(kc > 0)
    x = np.zeros(kc.shape)
    if rows.size:
        x[rows, colidx] = capacity_share(problem, load, rows, kc[rows, colidx])
    # A margin of 2e-6 (share) absorbs the solver's feasibility tolerance (1e-7).
    r = np.where(kc > 0, np.maximum(x - CAPACITY_MARGIN, 0.0) / np.maximum(kc, 1), 0.0)
    keep = np.zeros(kc.shape, bool)
    last_r = np.zeros(n)
    for c in range(kc.shape[1]):
        valid = (kc[:, c] > 0) & (r[:, c] > 0)
        is_top = kc[:, c] == n1
        gain = np.where(is_top, r[:, c] > last_r, r[:, c] > last_r * (1 + LEVEL_MERGE_TOLERANCE))
        take = valid & gain & ~np.any(keep & (kc == kc[:, [c]]), axis=1)
        keep[:, c] = take
        last_r = np.where(take, r[:, c], last_r)
    width = max(int(keep.sum(axis=1).max()) if n else 1, 1)
    K = np.zeros((n, width), np.int64)
    R = np.zeros((n, width))
    H = np.zeros((n, width), np.int64)
    for i in range(n):
        sel = np.flatnonzero(keep[i])
        ks = kc[i, sel]
        order = np.argsort(ks)
        ks, rs = ks[order], r[i, sel][order]
        his = np.append(ks[1:] - 1, max(int(n_max[i]), int(ks[-1]) if ks.size else 0))
        K[i, :ks.size] = ks
        R[i, :ks.size] = rs
        H[i, :ks.size] = his
    return K, R, H


def _dp_through(n_nodes: int, u, v, cost, max_pools: int) -> np.ndarray:
    """Lower bound on the cost of the cheapest source-to-sink path of at most ``max_pools``
    arcs through each arc, with arc costs ``cost`` (shortest paths by layers)."""
    sink = n_nodes - 1
    inf = np.inf
    d_s = np.full((max_pools + 1, n_nodes), inf)
    d_t = np.full((max_pools + 1, n_nodes), inf)
    d_s[0, 0] = 0.0
    d_t[0, sink] = 0.0
    for k in range(1, max_pools + 1):
        np.minimum.at(d_s[k], v, d_s[k - 1][u] + cost)
        np.minimum.at(d_t[k], u, d_t[k - 1][v] + cost)
    best = np.full(u.size, inf)
    for k1 in range(max_pools):
        tail = np.min(d_t[: max_pools - k1], axis=0)
        best = np.minimum(best, d_s[k1][u] + cost + tail[v])
    return best


def _dp_best_path(n_nodes: int, u, v, cost, max_pools: int):
    """The cheapest source-to-sink path of at most ``max_pools`` arcs: ``(cost, arcs)``."""
    sink = n_nodes - 1
    d = np.full((max_pools + 1, n_nodes), np.inf)
    d[0, 0] = 0.0
    via = np.full((max_pools + 1, n_nodes), -1, dtype=np.int64)
    for k in range(1, max_pools + 1):
        cand = d[k - 1][u] + cost
        order = np.lexsort((cand, v))
        first = np.ones(order.size, bool)
        first[1:] = v[order][1:] != v[order][:-1]
        best = order[first]
        d[k][v[best]] = cand[best]
        via[k][v[best]] = best
    k = int(np.argmin(d[:, sink]))
    if not np.isfinite(d[k, sink]):
        return math.inf, ()
    path, node = [], sink
    for kk in range(k, 0, -1):
        a = int(via[kk][node])
        path.append(a)
        node = int(u[a])
    return float(d[k, sink]), tuple(reversed(path))


def _feasible_path(problem: FleetProblem, n_nodes: int, u, v, n_solo, price, fill):
    """A cheap feasible fleet for the warm start and the pruning bound: shortest paths over
    the arcs' solo pools (and main-plus-filler pools ``fill``), with GPUs of capped types
    priced up by a multiplier (0, then growing) until the path meets the caps. Returns
    ``(usd, arc rows, types)`` (type -1: the filler pool) or ``(inf, (), ())``."""
    types = problem.types
    G = len(types)
    tp = np.array([p.tp for p in types], dtype=float)
    capped = np.array([problem.cap_of(p.gpu) is not None for p in types])
    weight = tp * (capped | (problem.max_total_gpus is not None))
    solo_cost = np.where(n_solo >= 0, n_solo * price, np.inf)
    fill_inst = np.zeros((n_solo.shape[0], G))
    fill_cost = np.full(n_solo.shape[0], np.inf)
    if fill is not None:
        has = fill["main"] >= 0
        r = np.flatnonzero(has)
        fill_inst[r, fill["main"][r]] += fill["main_n"][r]
        fill_inst[r, fill["type"][r]] += fill["n"][r]
        fill_cost = fill["cost"]
    scale = float(np.max(price / tp))
    best = (math.inf, (), ())
    for mult in ((0.0,) + tuple(2.0 ** np.arange(-3, 7)) if weight.any() else (0.0,)):
        mu = mult * scale
        eff_solo = solo_cost + mu * np.where(n_solo >= 0, n_solo, 0) * weight
        eff_fill = fill_cost + mu * (fill_inst @ weight)
        pick = np.argmin(eff_solo, axis=1)
        eff = np.minimum(eff_solo[np.arange(pick.size), pick], eff_fill)
        _, path = _dp_best_path(n_nodes, u, v, eff, problem.max_pools)
        if not path:
            continue
        usage = np.zeros(G)
        cost, ty = 0.0, []
        for a in path:
            if eff_fill[a] < eff_solo[a, pick[a]]:
                usage += fill_inst[a]
                cost += fill_cost[a]
                ty.append(-1)
            else:
                usage[pick[a]] += n_solo[a, pick[a]]
                cost += solo_cost[a, pick[a]]
                ty.append(int(pick[a]))
        if _feasible_usage(problem, usage) and cost < best[0] - _EPS_USD:
            best = (float(cost), tuple(int(a) for a in path), tuple(ty))
        if mult == 0.0 and best[1]:
            break  # the unpenalised optimum meets the caps
    return best


def _baselines(problem: FleetProblem, node_tokens, node_gamma, u, v, counts):
    """The analytical planner's baselines (MODEL.md §4), each the best over the types:
    one type for the whole fleet, exact counts. Returns ``(baselines, profiles)``."""
    types = problem.types
    price = np.array([p.usd_per_instance_hour for p in types])
    tp = np.array([p.tp for p in types])
    sink = node_tokens.size - 1
    homo = np.flatnonzero((u == 0) & (v == sink))
    short = {int(vv): i for i, (uu, vv) in enumerate(zip(u, v, strict=True))
             if uu == 0 and vv != sink}
    long = {int(uu): i for i, (uu, vv) in enumerate(zip(u, v, strict=True))
            if vv == sink and uu != 0}
    pairs = [(x, short[x], long[x]) for x in sorted(short) if x in long]
    out: dict[str, FleetSummary] = {}
    who: dict[str, str] = {}

    def keep(name, summary, prof):
        if name not in out or (summary.feasible and summary.usd_per_hour < out[name].usd_per_hour
                               - _EPS_USD):
            out[name] = summary
            who[name] = prof
    for t, prof in enumerate(types):
        if homo.size and counts[homo[0], t] >= 0:
            n = int(counts[homo[0], t])
            keep("homogeneous", FleetSummary("homogeneous", None, 1.0, n, n * int(tp[t]),
                                             n * price[t], (n,)), prof.name)
        rows = []
        for x, a1, a2 in pairs:
            n1, n2 = counts[a1, t], counts[a2, t]
            if n1 >= 0 and n2 >= 0:
                rows.append((float((n1 + n2) * price[t]), int(n1 + n2), float(node_gamma[x]),
                             int(node_tokens[x]), int(n1), int(n2)))
        if not rows:
            continue
        rows.sort()
        pr = [r for r in rows if r[2] == 1.0]

        def summ(name, r, prof=prof, t=t):
            return FleetSummary(name, r[3], r[2], r[1], r[1] * int(tp[t]), r[0], (r[4], r[5]))
        keep("fleetopt", summ("fleetopt", rows[0]), prof.name)
        if pr:
            keep("pool_routing", summ("pool_routing", pr[0]), prof.name)
            rf = [r for r in rows if r[3] == pr[0][3]]
            keep("retrofit", summ("retrofit", rf[0]), prof.name)
    for name in ("homogeneous", "pool_routing", "retrofit", "fleetopt"):
        if name not in out:
            out[name] = FleetSummary(name, None, 1.0, 0, 0, math.inf, (), False,
                                     "no single-type fleet meets the SLO")
            who[name] = ""
    order = ("homogeneous", "pool_routing", "retrofit", "fleetopt")
    return {k: out[k] for k in order}, {k: who[k] for k in order}


def _feasible_usage(problem: FleetProblem, inst_by_type: np.ndarray) -> np.ndarray:
    """Whether instance vectors ``(..., t)`` meet the caps and the total-GPU cap."""
    types = problem.types
    tp = np.array([p.tp for p in types])
    gpus = inst_by_type * tp
    ok = np.ones(inst_by_type.shape[:-1], bool)
    for gpu in {p.gpu for p in types}:
        cap = problem.cap_of(gpu)
        if cap is None:
            continue
        sel = np.array([p.gpu == gpu for p in types])
        ok &= gpus[..., sel].sum(axis=-1) <= cap
    if problem.max_total_gpus is not None:
        ok &= gpus.sum(axis=-1) <= problem.max_total_gpus
    return ok


def _warm_start(problem: FleetProblem, node_tokens, u, v, n_solo):
    """The cheapest feasible fleet of at most two pools, one type per pool (exact counts):
    the analytical planner's search over every pair of types, checked against the caps.
    Returns ``(usd, arcs, types)`` (arc indices into ``u``/``v``) or ``(inf, (), ())``."""
    types = problem.types
    G = len(types)
    price = np.array([p.usd_per_instance_hour for p in types])
    sink = node_tokens.size - 1
    best = (math.inf, (), ())
    eye = np.eye(G, dtype=np.int64)
    homo = np.flatnonzero((u == 0) & (v == sink))
    for a in homo:
        for t in range(G):
            n = n_solo[a, t]
            if n >= 0 and _feasible_usage(problem, eye[t] * n) and n * price[t] < best[0]:
                best = (float(n * price[t]), (int(a),), (t,))
    if problem.max_pools < 2:
        return best
    s_idx = np.flatnonzero((u == 0) & (v != sink))
    l_all = np.flatnonzero((v == sink) & (u != 0))
    l_of = {int(u[i]): int(i) for i in l_all}
    s_idx = np.array([a for a in s_idx if int(v[a]) in l_of], dtype=np.int64)
    if not s_idx.size:
        return best
    l_idx = np.array([l_of[int(v[a])] for a in s_idx], dtype=np.int64)
    for t1 in range(G):
        for t2 in range(G):
            n1 = n_solo[s_idx, t1]
            n2 = n_solo[l_idx, t2]
            usage = eye[t1][None, :] * n1[:, None] + eye[t2][None, :] * n2[:, None]
            ok = (n1 >= 0) & (n2 >= 0) & _feasible_usage(problem, usage)
            cost = np.where(ok, n1 * price[t1] + n2 * price[t2], np.inf)
            i = int(np.argmin(cost))
            if cost[i] < best[0] - _EPS_USD:
                best = (float(cost[i]), (int(s_idx[i]), int(l_idx[i])), (t1, t2))
    return best


def _with_floor(counts: np.ndarray, mass: np.ndarray, mmin: int) -> np.ndarray:
    """Counts with the redundancy floor: ``max(N, mmin)`` for pools that get requests."""
    out = counts.copy()
    busy = (mass > 1e-15)[:, None] & (out >= 0)
    out[busy] = np.maximum(out[busy], mmin)
    return out


def _merge_loads(prev, idx: np.ndarray, load: PoolLoad):
    """Accumulate one type's loads over batches of arcs: ``(arc indices, PoolLoad)``."""
    if prev is None:
        return idx.copy(), load
    pos, old = prev
    cat = PoolLoad(*(np.concatenate([getattr(old, f), getattr(load, f)]) for f in
                     ("rate_rps", "mean_service_s", "cs2", "slots_per_instance")),
                   old.floor_s, np.concatenate([old.floor_prob, load.floor_prob]))
    return np.concatenate([pos, idx]), cat


def precompute(problem: FleetProblem, prune: bool = True,
               bound: float | None = None, keep_outer: bool = False) -> ArcTables:
    """Exact tables for the MILP of ``problem`` (MODEL.md sections 3-4): nodes, kept arcs,
    minimum instances of every (pool, type), mixed-pool data, the warm start and the
    baselines. The pruning and its certificate are in the module docstring; ``prune=False``
    keeps every arc (and mixing on every arc); ``bound`` (USD/h) prunes against that bound
    instead of the best fleet found here, and ``keep_outer`` keeps every one- and two-pool
    candidate whatever the bound (:func:`solve_model` uses both to grow a model)."""
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    problem = problem.validated()
    s = problem.scenario
    types = problem.types
    G = len(types)
    K = int(problem.max_pools)
    mode = problem.mixing_mode
    mix = mode != "none"
    price = np.array([p.usd_per_instance_hour for p in types])
    mmin = int(problem.min_instances_per_pool)
    workload = _workload(s)
    bnd = (np.asarray(s.boundaries_tokens, dtype=np.int64) if s.boundaries_tokens is not None
           else default_boundaries(workload, s.long_context_tokens))
    bnd = np.unique(bnd)
    if bnd.size and (bnd.min() < 1 or bnd.max() >= s.long_context_tokens):
        raise FleetOptError(f"boundaries_tokens: every boundary must be in [1, "
                            f"{s.long_context_tokens}) (the long-context window)")
    if bnd.size == 0:
        bnd = np.array([min(64, s.long_context_tokens - 1)], dtype=np.int64)
    gammas = gamma_grid(s.gamma_max, s.gamma_steps) if s.compressible_share > 0 \
        else np.array([1.0])
    tables, node_ok = _build_tables(problem, workload, bnd, gammas)
    node_tokens, node_gamma = _nodes(problem, tables, node_ok, bnd, gammas)
    node_bidx = np.searchsorted(bnd, node_tokens)
    u, v = _candidate_arcs(node_tokens, node_gamma, K)
    arcs_total = int(u.size)
    serve = _serving_ok(problem, node_ok, node_tokens, node_bidx, u, v)
    for t, tab in enumerate(tables):
        if tab is None:
            serve[:, t] = False
    sink = node_tokens.size - 1
    timings["tables_s"] = time.perf_counter() - t0

    exact = np.full((u.size, G), -2, dtype=np.int64)  # -2: not sized (pruned early)
    x_top = np.zeros((u.size, G))                      # X(N1): capacity of the solo count
    mass = np.zeros(u.size)
    loads: dict[int, tuple[np.ndarray, PoolLoad]] = {}

    def size(idx: np.ndarray) -> None:
        for t in range(G):
            exact[idx, t] = -1
            sel = idx[serve[idx, t]]
            if not sel.size:
                continue
            load, m = _arc_loads(problem, tables[t], node_tokens, node_gamma, u[sel], v[sel])
            n = min_instances(load, s.slo_ms * 1e-3, s.percentile, s.rho_max,
                              paper_rule=s.paper_compat)
            exact[sel, t] = n
            mass[sel] = np.maximum(np.asarray(m.mass, float), 0.0)
            loads[t] = _merge_loads(loads.get(t), sel, load)
            rows = np.flatnonzero(n >= 1)
            if mix and rows.size:
                x_top[sel[rows], t] = capacity_share(problem, load, rows, n[rows])

    floor_mix = max(_two_cheapest(price), mmin * float(price.min()))

    def exact_bounds(idx: np.ndarray):
        """(solo cost, mixed-pool bound) per arc: ``min_t price N1 / X(N1)`` bounds any
        split (capacity per instance is at most ``X(N1)/N1`` up to ``N1`` instances)."""
        n = _with_floor(exact[idx], mass[idx], mmin)
        solo = np.where(n >= 0, n * price, np.inf).min(axis=1)
        if not mix:
            return solo, np.full(idx.size, np.inf)
        with np.errstate(divide="ignore", invalid="ignore"):
            per = np.where((x_top[idx] > 0) & (exact[idx] >= 1),
                           price * exact[idx] / x_top[idx], np.inf)
        mixed = np.maximum(per.min(axis=1), np.where(mass[idx] > 1e-15, floor_mix, 0.0))
        return solo, mixed

    # Stage 0: exact sizes of the one- and two-pool arcs; warm start and upper bound.
    t1 = time.perf_counter()
    outer = np.flatnonzero((u == 0) | (v == sink))
    size(outer)
    if not np.any(exact[v == sink] >= 0):
        raise _slo_infeasible(problem, workload)
    warm = _warm_start(problem, node_tokens, u, v, _with_floor(exact, mass, mmin))

    def bound_from(cost: float) -> float:
        if not prune:
            return math.inf
        return float(bound) if bound is not None else cost
    ub = bound_from(warm[0])
    timings["outer_s"] = time.perf_counter() - t1

    # Stage 1: fluid bound on the inner arcs (three or more pools); prune against UB.
    t2 = time.perf_counter()
    keep = np.ones(u.size, bool)
    inner = np.flatnonzero(exact[:, 0] == -2)
    if inner.size and math.isfinite(ub):
        fl = _fluid_counts(problem, workload, tables, node_tokens, node_gamma, u[inner],
                           v[inner], serve[inner])
        cnt = np.where(fl > 0, np.maximum(np.ceil(fl - 1e-9), max(mmin, 1)), 0.0)
        lb_in = np.min(cnt * price, axis=1)
        if mix:
            cont = np.min(fl * price, axis=1)
            lb_in = np.minimum(lb_in, np.where(np.isfinite(cont), np.maximum(
                cont, np.where(cont > 0, floor_mix, 0.0)), np.inf))
        lb = np.empty(u.size)
        so, mi = exact_bounds(outer)
        lb[outer] = np.minimum(so, mi)
        lb[inner] = lb_in
        keep = _dp_through(node_tokens.size, u, v, lb, K) <= ub * (1 + 1e-9) + _EPS_USD
        keep[list(warm[1])] = True
    timings["fluid_prune_s"] = time.perf_counter() - t2
    timings["fluid_survivors"] = float(keep.sum())

    # Stage 2: exact sizes of the surviving inner arcs; prune again with exact bounds.
    t3 = time.perf_counter()
    todo = np.flatnonzero(keep & (exact[:, 0] == -2))
    if todo.size:
        size(todo)
    kept = np.flatnonzero(keep)
    # A better warm start and bound: the cheapest path of solo pools (exact counts).
    n_kept = _with_floor(exact[kept], mass[kept], mmin)
    solo_cost = np.where(n_kept >= 0, n_kept * price, np.inf)
    if not _dp_best_path(node_tokens.size, u[kept], v[kept], solo_cost.min(axis=1), K)[1]:
        raise _slo_infeasible(problem, workload)
    found = _feasible_path(problem, node_tokens.size, u[kept], v[kept], n_kept, price, None)
    if found[0] < warm[0] - _EPS_USD:
        warm = (found[0], tuple(int(kept[a]) for a in found[1]), found[2])
        ub = bound_from(warm[0])
    solo_lb, mix_lb = exact_bounds(kept)
    lb = np.minimum(solo_lb, mix_lb)

    def limit() -> float:
        return ub * (1 + 1e-9) + _EPS_USD

    def warm_rows() -> np.ndarray:
        return np.searchsorted(kept, list(warm[1])).astype(np.int64)

    if math.isfinite(ub):
        through = _dp_through(node_tokens.size, u[kept], v[kept], lb, K)
        keep2 = through <= limit()
        keep2[warm_rows()] = True
        with np.errstate(invalid="ignore"):
            mixed_path = np.where(np.isfinite(mix_lb), through - lb + mix_lb, np.inf)
        mix_arc = keep2 & (mixed_path <= limit())
    else:
        keep2 = np.isfinite(lb)
        mix_arc = keep2 & np.isfinite(mix_lb)
    timings["exact_s"] = time.perf_counter() - t3

    # Stage 3 ("filler"): the best main-plus-filler pool of each candidate arc, then an
    # exact shortest path over solo and filler pools (the optimum when nothing couples the
    # pools) as warm start and bound, and a last pruning with exact arc costs.
    t4 = time.perf_counter()
    nk = kept.size
    fill = {"cost": np.full(nk, np.inf), "main": np.full(nk, -1, np.int64),
            "main_n": np.zeros(nk, np.int64), "type": np.full(nk, -1, np.int64),
            "n": np.zeros(nk, np.int64), "share": np.zeros(nk)}
    if mode == "filler" and np.any(mix_arc):
        rows = np.flatnonzero(mix_arc)
        cols = _filler_columns(problem, loads, exact, kept[rows], price, mmin)
        for key, val in cols.items():
            fill[key][rows] = val
        arc_cost = np.minimum(solo_cost.min(axis=1), fill["cost"])
        found = _feasible_path(problem, node_tokens.size, u[kept], v[kept], n_kept, price,
                               fill)
        if found[0] < warm[0] - _EPS_USD:
            warm = (found[0], tuple(int(kept[a]) for a in found[1]), found[2])
            ub = bound_from(warm[0])
        if math.isfinite(ub):
            keep2 &= _dp_through(node_tokens.size, u[kept], v[kept], arc_cost, K) <= limit()
            keep2[warm_rows()] = True
        mix_arc = keep2 & np.isfinite(fill["cost"])
    elif mode == "filler":
        mix_arc = np.zeros(nk, bool)
    if keep_outer:
        is_outer = (u[kept] == 0) | (v[kept] == sink)
        mix_arc |= is_outer & ~keep2 & (np.isfinite(fill["cost"]) if mode == "filler"
                                         else np.isfinite(mix_lb))
        keep2 |= is_outer & np.isfinite(lb)
    sel = kept[keep2]
    mix_sel = mix_arc[keep2]
    fill = {k: v_[keep2] for k, v_ in fill.items()}
    timings["filler_s"] = time.perf_counter() - t4

    # Stage 3 ("full"): capacity levels of the (arc, type) pairs of mixed arcs.
    t5 = time.perf_counter()
    n_sel = sel.size
    level_k = np.zeros((n_sel, G, 1), np.int64)
    level_r = np.zeros((n_sel, G, 1))
    level_hi = np.zeros((n_sel, G, 1), np.int64)
    parts = []
    for t in range(G if mode == "full" else 0):
        rows = np.flatnonzero(mix_sel & (exact[sel, t] >= 1))
        if not rows.size:
            continue
        pos, load = loads[t]
        n1 = exact[sel[rows], t]
        parts.append((t, rows, *_levels(problem, _subload(load, _positions(pos, sel[rows]),
                                                          1.0), n1, np.maximum(n1, mmin))))
    width = max([p[2].shape[1] for p in parts] + [1])
    if parts:
        level_k = np.zeros((n_sel, G, width), np.int64)
        level_r = np.zeros((n_sel, G, width))
        level_hi = np.zeros((n_sel, G, width), np.int64)
        for t, rows, Kt, Rt, Ht in parts:
            level_k[rows, t, :Kt.shape[1]] = Kt
            level_r[rows, t, :Kt.shape[1]] = Rt
            level_hi[rows, t, :Kt.shape[1]] = Ht
    if mode == "full":
        mix_sel &= (level_k[:, :, 0] > 0).sum(axis=1) >= 2
    timings["levels_s"] = time.perf_counter() - t5

    comp_in = np.zeros(n_sel)
    into = (v[sel] != sink) & (node_gamma[v[sel]] > 1.0)
    if s.compressible_share > 0 and np.any(into):
        for i in np.flatnonzero(into):
            holder = next(tb for tb, ok in zip(tables, node_ok, strict=True)
                          if tb is not None and ok[node_bidx[v[sel][i]]])
            bc = holder.band_compressed(node_tokens[v[sel][i]], node_gamma[v[sel][i]])
            comp_in[i] = s.compressible_share * float(bc.mass[0])
    baselines, who = _baselines(problem, node_tokens, node_gamma, u[outer], v[outer],
                                exact[outer])
    timings["total_s"] = time.perf_counter() - t0
    return ArcTables(
        problem=problem, profiles=types, tables=tables, node_tokens=node_tokens,
        node_gamma=node_gamma, arc_u=u[sel], arc_v=v[sel], mass=mass[sel],
        compressed_in=comp_in, solo=exact[sel], level_k=level_k, level_r=level_r,
        level_hi=level_hi, mix_arc=mix_sel, mixing=mode, fill_main=fill["main"],
        fill_main_n=fill["main_n"], fill_type=fill["type"], fill_n=fill["n"],
        fill_share=fill["share"], lower_bound_usd=lb[keep2],
        upper_bound_usd_per_hour=float(ub), arcs_total=arcs_total,
        warm_arcs=tuple(int(np.searchsorted(sel, a)) for a in warm[1]),
        warm_types=tuple(warm[2]), warm_usd_per_hour=float(warm[0]),
        baselines=MappingProxyType(baselines), baseline_profiles=MappingProxyType(who),
        seconds=MappingProxyType(timings))


def _slo_infeasible(problem: FleetProblem, workload) -> InfeasibleError:
    """No pool holding the longest requests meets the SLO on any type: prefill alone."""
    s = problem.scenario
    slo = s.slo_ms * 1e-3
    best, where = -1, ""
    for p in problem.types:
        tau = float(p.prefill_s(1))
        k_min = int(np.ceil(slo / tau - 1e-12))
        lin = (k_min - 1) * p.chunk_tokens + 1
        if lin > best:
            best, where = lin, p.name
    share = float(np.sum(workload.weights[workload.input_tokens >= best]))
    return InfeasibleError(
        f"no fleet meets P{s.percentile:g} TTFT <= {s.slo_ms:g} ms: prefill alone takes "
        f">= {s.slo_ms:g} ms for inputs of {best} tokens or more even on {where} "
        f"({share:.2%} of all requests), so every pool holding the longest requests misses "
        "the SLO; relax --slo-ms or --percentile, or add a GPU with faster prefill",
        binding="slo")


def _positions(pos: np.ndarray, arcs: np.ndarray) -> np.ndarray:
    """Rows of ``arcs`` in a per-type load accumulated over arc indices ``pos``."""
    order = np.argsort(pos, kind="stable")
    return order[np.searchsorted(pos[order], arcs)]


def _filler_columns(problem: FleetProblem, loads, exact, idx, price, mmin) -> dict:
    """The cheapest main-plus-filler pool of each arc ``idx`` (``mixing="filler"``).

    A filler of ``k <= FILLER_MAX_INSTANCES`` instances of type ``t2`` takes the share
    ``X_t2(k)`` it carries (:func:`capacity_share`, less :data:`CAPACITY_MARGIN`); the main
    type ``t1`` takes the rest with the exact minimum count for it
    (:func:`~fleetopt_milp.queueing.min_instances`), kept only when below its solo count.
    Returns arrays ``cost, main, main_n, type, n, share`` over ``idx`` (inf / -1: none).
    """
    s = problem.scenario
    G = len(problem.types)
    F = FILLER_MAX_INSTANCES
    n = idx.size
    out = {"cost": np.full(n, np.inf), "main": np.full(n, -1, np.int64),
           "main_n": np.zeros(n, np.int64), "type": np.full(n, -1, np.int64),
           "n": np.zeros(n, np.int64), "share": np.zeros(n)}
    xf = np.zeros((n, G, F + 1))
    for t in range(G):
        rows = np.flatnonzero(exact[idx, t] >= 1)
        if not rows.size:
            continue
        pos, load = loads[t]
        li = _positions(pos, idx[rows])
        for k in range(1, F + 1):
            x = capacity_share(problem, load, li, np.full(rows.size, k))
            xf[rows, t, k] = np.maximum(x - CAPACITY_MARGIN, 0.0)
    for t1 in range(G):
        r1 = np.flatnonzero(exact[idx, t1] >= 2)
        if not r1.size:
            continue
        pos, load = loads[t1]
        li1 = _positions(pos, idx[r1])
        for t2 in range(G):
            if t2 == t1:
                continue
            for k in range(1, F + 1):
                x2 = xf[r1, t2, k]
                ok = (x2 > 0) & (x2 < 1)
                if not np.any(ok):
                    continue
                rr = r1[ok]
                n1 = min_instances(_subload(load, li1[ok], 1.0 - x2[ok]), s.slo_ms * 1e-3,
                                   s.percentile, s.rho_max, paper_rule=s.paper_compat)
                n1 = np.where(n1 >= 1, np.maximum(n1, mmin - k), n1)
                good = (n1 >= 1) & (n1 < exact[idx[rr], t1])
                cost = np.where(good, price[t1] * n1 + price[t2] * k, np.inf)
                better = cost < out["cost"][rr] - _EPS_USD
                w = rr[better]
                out["cost"][w] = cost[better]
                out["main"][w] = t1
                out["main_n"][w] = n1[better]
                out["type"][w] = t2
                out["n"][w] = k
                out["share"][w] = x2[ok][better]
    return out


def _two_cheapest(price: np.ndarray) -> float:
    """A mixed pool that is not a solo pool holds instances of at least two types."""
    p = np.sort(price)
    return float(p[0] + p[1]) if p.size >= 2 else math.inf


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------


def build_model(problem: FleetProblem | ArcTables, prune: bool = True) -> pyo.ConcreteModel:
    """The fleet MILP as a Pyomo ``ConcreteModel`` (formulation: module docstring).

    ``problem`` may be a :class:`FleetProblem` (tables are precomputed here) or the
    :class:`ArcTables` of :func:`precompute`. Add your own constraints before
    :func:`solve_model` on these named expressions:

    - ``model.gpus[gpu]``: GPUs of GPU type ``gpu`` (e.g. ``"H100-80GB"``) in the fleet;
    - ``model.instances[profile]``: instances of a profile (e.g. ``"paper-H100"``);
    - ``model.usd_per_hour``: the fleet's price, USD/h; ``model.n_pools``: pools used.

    Example: ``model.rack = pyo.Constraint(expr=model.gpus["H100-80GB"] <= 32)``.

    Per-pool variables are keyed by the pool's nodes ``(u, v)`` (indices into
    ``model.fleet_tables.node_tokens`` / ``node_gamma``; the pool serves
    ``(node_tokens[u], node_tokens[v]]``): ``model.use[u, v]``, ``model.solo[u, v, t]``
    (type index ``t``), ``model.mixed[u, v]``, ``model.mix_share[u, v, t]``,
    ``model.mix_instances[u, v, t]``. :func:`solve_model` may add pools that pruning left
    out (when your constraints push the optimum above the pruning bound); the named
    expressions, and so your constraints, then cover them too.
    """
    t0 = time.perf_counter()
    tables = problem if isinstance(problem, ArcTables) else precompute(problem, prune)
    t_pre = time.perf_counter() - t0 if not isinstance(problem, ArcTables) else \
        float(tables.seconds.get("total_s", 0.0))
    t1 = time.perf_counter()
    pb = tables.problem
    types = tables.profiles
    names = [p.name for p in types]

    m = pyo.ConcreteModel(name="fleetopt")
    m.use = pyo.Var(pyo.Any, dense=False, within=pyo.Binary)
    m.solo = pyo.Var(pyo.Any, dense=False, within=pyo.Binary)
    m.mixed = pyo.Var(pyo.Any, dense=False, within=pyo.Binary)
    if tables.mixing == "filler":
        m.mix_instances = pyo.Expression(pyo.Any)
        m.mix_share = pyo.Expression(pyo.Any)
    else:
        m.level = pyo.Var(pyo.Any, dense=False, within=pyo.Binary)
        m.level_instances = pyo.Var(pyo.Any, dense=False, within=pyo.NonNegativeReals)
        m.mix_instances = pyo.Var(pyo.Any, dense=False, within=pyo.NonNegativeIntegers)
        m.mix_share = pyo.Var(pyo.Any, dense=False, bounds=(0.0, 1.0))
    for c in ("flow", "pick", "mix_split", "mix_one_level", "level_low", "level_high",
              "mix_count", "mix_capacity", "mix_min_instances"):
        m.add_component(c, pyo.Constraint(pyo.Any))
    m.instances = pyo.Expression(names, rule=lambda m, n: 0)
    gpu_names = sorted({p.gpu for p in types})
    m.gpus = pyo.Expression(gpu_names, rule=lambda m, g: sum(
        p.tp * m.instances[p.name] for p in types if p.gpu == g))
    m.usd_per_hour = pyo.Expression(expr=0)
    m.n_pools = pyo.Expression(expr=0)
    m.max_pools = pyo.Constraint(expr=m.n_pools <= int(pb.max_pools))
    capped = [g for g in gpu_names if pb.cap_of(g) is not None]
    if capped:
        m.caps = pyo.Constraint(capped, rule=lambda m, g: m.gpus[g] <= pb.cap_of(g))
    if pb.max_total_gpus is not None:
        m.total_gpus = pyo.Constraint(expr=sum(m.gpus[g] for g in gpu_names)
                                      <= int(pb.max_total_gpus))
    if pb.budget_usd_per_hour is not None:
        m.budget = pyo.Constraint(expr=m.usd_per_hour <= float(pb.budget_usd_per_hour))
    m.cost = pyo.Objective(expr=m.usd_per_hour, sense=pyo.minimize)
    m.fleet_builtin = frozenset(c.name for c in m.component_objects(pyo.Constraint))
    m.fleet_pools = {}  # (u, v) -> {"solo": {t: n}, "mix": {t: (n expr-able)}}
    _sync(m, tables)
    m.fleet_seconds = {"precompute_s": t_pre, "build_s": time.perf_counter() - t1}
    return m


def _sync(m: pyo.ConcreteModel, tables: ArcTables) -> None:
    """Add the pools of ``tables`` missing from ``m`` (and mixed variables newly allowed on
    known pools), then rebuild the flow, linking and aggregate expressions over all pools.
    Pools already in ``m`` keep their variables, so user constraints stay valid."""
    pb = tables.problem
    G = len(tables.profiles)
    mmin = int(pb.min_instances_per_pool)
    n_solo = tables.solo_instances(mmin)
    filler = tables.mixing == "filler"
    pools = m.fleet_pools
    for row in range(tables.n_arcs):
        key = (int(tables.arc_u[row]), int(tables.arc_v[row]))
        info = pools.get(key)
        if info is None:
            info = pools[key] = {"solo": {}, "mix": {}, "busy": bool(tables.mass[row] > 1e-15)}
            m.use[key].value = None
            for t in range(G):
                if n_solo[row, t] >= 0:
                    info["solo"][t] = int(n_solo[row, t])
                    m.solo[key + (t,)].value = None
        if info["mix"] or not tables.mix_arc[row]:
            continue
        m.mixed[key].value = None
        if filler:
            x = float(tables.fill_share[row])
            main, fill = int(tables.fill_main[row]), int(tables.fill_type[row])
            info["mix"] = {main: int(tables.fill_main_n[row]), fill: int(tables.fill_n[row])}
            m.mix_instances[key + (main,)] = int(tables.fill_main_n[row]) * m.mixed[key]
            m.mix_instances[key + (fill,)] = int(tables.fill_n[row]) * m.mixed[key]
            m.mix_share[key + (main,)] = (1.0 - x) * m.mixed[key]
            m.mix_share[key + (fill,)] = x * m.mixed[key]
            continue
        lk, lh, lr = tables.level_k[row], tables.level_hi[row], tables.level_r[row]
        for t in range(G):
            lev = [i for i in range(lk.shape[1]) if lk[t, i] > 0]
            if not lev:
                continue
            kt = key + (t,)
            info["mix"][t] = None
            for i in lev:
                m.level_low[kt + (i,)] = m.level_instances[kt + (i,)] >= int(lk[t, i]) * \
                    m.level[kt + (i,)]
                m.level_high[kt + (i,)] = m.level_instances[kt + (i,)] <= int(lh[t, i]) * \
                    m.level[kt + (i,)]
            m.mix_one_level[kt] = sum(m.level[kt + (i,)] for i in lev) <= m.mixed[key]
            m.mix_count[kt] = m.mix_instances[kt] == sum(m.level_instances[kt + (i,)]
                                                          for i in lev)
            m.mix_capacity[kt] = m.mix_share[kt] <= sum(
                float(lr[t, i]) * m.level_instances[kt + (i,)] for i in lev)
        m.mix_split[key] = sum(m.mix_share[key + (t,)] for t in info["mix"]) == m.mixed[key]
        if mmin > 0 and info["busy"]:
            m.mix_min_instances[key] = sum(m.mix_instances[key + (t,)] for t in info["mix"]) \
                >= mmin * m.mixed[key]

    def put(comp, idx, expr):
        if idx in comp:
            comp[idx].set_value(expr)
        else:
            comp[idx] = expr
    sink = tables.node_tokens.size - 1
    out_of: dict[int, list] = {}
    into: dict[int, list] = {}
    for key, info in pools.items():
        out_of.setdefault(key[0], []).append(key)
        into.setdefault(key[1], []).append(key)
        e = sum(m.solo[key + (t,)] for t in info["solo"])
        if info["mix"]:
            e = e + m.mixed[key]
        put(m.pick, key, m.use[key] == e)
    for n in sorted(set(out_of) | set(into) | {0, sink}):
        rhs = (1 if n == 0 else 0) - (1 if n == sink else 0)
        e = sum(m.use[k] for k in out_of.get(n, ())) - sum(m.use[k] for k in into.get(n, ()))
        put(m.flow, n, pyo.Constraint.Infeasible if isinstance(e, int) and e != rhs
            else (e == rhs))
    for t, p in enumerate(tables.profiles):
        e = sum(n * m.solo[key + (t,)] for key, info in pools.items()
                for tt, n in info["solo"].items() if tt == t and n > 0)
        e = e + sum(m.mix_instances[key + (t,)] for key, info in pools.items()
                    if t in info["mix"])
        m.instances[p.name].set_value(e)
    m.usd_per_hour.set_value(sum(float(p.usd_per_instance_hour) * m.instances[p.name]
                                 for p in tables.profiles))
    m.n_pools.set_value(sum(m.use[k] for k in pools))
    m.fleet_tables = tables
    m.fleet_rows = {(int(u), int(v)): r for r, (u, v) in
                    enumerate(zip(tables.arc_u, tables.arc_v, strict=True))}


# ---------------------------------------------------------------------------------------
# Solving
# ---------------------------------------------------------------------------------------


def _highs(time_limit_s, mip_rel_gap, warm, options) -> Highs:
    opt = Highs()
    opt.config.load_solution = False
    opt.config.warmstart = bool(warm)
    if time_limit_s is not None:
        opt.config.time_limit = float(time_limit_s)
    opt.config.mip_gap = float(mip_rel_gap)
    opt.highs_options = {**HIGHS_OPTIONS, "mip_abs_gap": 1e-6, **dict(options or {})}
    return opt


def _set_warm_start(model: pyo.ConcreteModel) -> bool:
    t = model.fleet_tables
    if not t.warm_arcs:
        return False
    for var in model.component_data_objects(pyo.Var, descend_into=True):
        var.set_value(0, skip_validation=True)
    for row, ty in zip(t.warm_arcs, t.warm_types, strict=True):
        key = (int(t.arc_u[row]), int(t.arc_v[row]))
        model.use[key].set_value(1, skip_validation=True)
        if ty >= 0:
            model.solo[key + (ty,)].set_value(1, skip_validation=True)
        else:
            model.mixed[key].set_value(1, skip_validation=True)
    return True


def _certified(tables: ArcTables, objective: float | None) -> bool:
    ub = tables.upper_bound_usd_per_hour
    return not math.isfinite(ub) or (objective is not None
                                     and objective <= ub * (1 + 1e-9) + _EPS_USD)


def solve_model(model: pyo.ConcreteModel, *, time_limit_s: float | None = None,
                mip_rel_gap: float = 0.0, warm_start: bool = True,
                highs_options: Mapping | None = None, diagnose: bool = True) -> Plan:
    """Solve a model of :func:`build_model` (with any constraints added since) with HiGHS
    and return the fleet as a :class:`~fleetopt_milp.plan.Plan` (``method="milp"``).

    ``time_limit_s`` caps each HiGHS run (the best fleet found is returned, with its gap);
    ``mip_rel_gap`` 0 asks for a proven optimum (``mip_abs_gap`` is 1e-6 USD/h). The warm
    start is the best fleet :func:`precompute` found. If the optimum is above the bound the
    pools were pruned against (or the model is infeasible) - which only your constraints
    can cause - the pruning is redone with the larger bound (or none), the missing pools
    are added to ``model`` and it is solved again, so the answer is the optimum over all
    candidates. Every pool is re-checked with the exact queueing model and repaired if
    short (``plan.solver["repaired"]``). An infeasible model raises
    :class:`InfeasibleError` naming the binding constraint (found by re-solving without
    each constraint group; ``diagnose=False`` skips that).
    """
    t0 = time.perf_counter()
    rounds = []
    while True:
        tables: ArcTables = model.fleet_tables
        warm = warm_start and _set_warm_start(model)
        opt = _highs(time_limit_s, mip_rel_gap, warm, highs_options)
        t_run = time.perf_counter()
        res = opt.solve(model)
        rounds.append({"pools": len(model.fleet_pools), "seconds": time.perf_counter() - t_run,
                       "bound_usd_per_hour": tables.upper_bound_usd_per_hour})
        tc = res.termination_condition
        obj = res.best_feasible_objective if tc in (
            TerminationCondition.optimal, TerminationCondition.maxTimeLimit) else None
        has_user = any(c.name not in model.fleet_builtin for c in
                       model.component_objects(pyo.Constraint, active=True))
        ub = tables.upper_bound_usd_per_hour
        if has_user and math.isfinite(ub) and (
                tc == TerminationCondition.infeasible or
                (obj is not None and not _certified(tables, obj))):
            # Only user constraints can cut off every fleet within the pruning bound.
            outer = not tables.problem.max_pools <= 2 and not getattr(model, "fleet_outer", False)
            if obj is not None:
                bound = float(obj)
            elif outer:
                bound = ub  # first add every one- and two-pool candidate
            elif ub < GROW_FACTOR_LIMIT * max(tables.warm_usd_per_hour, _EPS_USD):
                bound = 2.0 * ub
            elif tables.arcs_total <= GROW_ALL_MAX_ARCS:
                bound = math.inf
            else:
                break
            t_grow = time.perf_counter()
            model.fleet_outer = getattr(model, "fleet_outer", False) or outer or \
                tables.problem.max_pools <= 2
            _sync(model, precompute(tables.problem, prune=math.isfinite(bound), bound=bound,
                                    keep_outer=model.fleet_outer))
            rounds[-1]["grow_seconds"] = time.perf_counter() - t_grow
            continue
        break
    seconds = time.perf_counter() - t0
    if tc == TerminationCondition.infeasible or (
            tc == TerminationCondition.maxTimeLimit and obj is None):
        if tc == TerminationCondition.infeasible and diagnose:
            _diagnose(model, time_limit_s, highs_options)
        raise InfeasibleError(
            "no fleet found" + (f" within the time limit ({time_limit_s:g} s); raise "
                                "--time-limit-s" if tc != TerminationCondition.infeasible
                                else ": the constraints admit no fleet"),
            binding="time_limit" if tc != TerminationCondition.infeasible else "unknown")
    if tc not in (TerminationCondition.optimal, TerminationCondition.maxTimeLimit):
        raise FleetOptError(f"HiGHS stopped with status {tc.name}; retry with a larger "
                            "--time-limit-s or fewer candidate boundaries")
    res.solution_loader.load_vars()
    obj = float(obj)
    bound = res.best_objective_bound
    bound = float(bound) if bound is not None and math.isfinite(bound) else float("nan")
    optimal = tc == TerminationCondition.optimal
    gap = 0.0 if optimal and not math.isnan(bound) and obj - bound <= 1e-6 + 1e-9 * abs(obj) \
        else ((obj - bound) / abs(obj) if obj and not math.isnan(bound) else float("nan"))
    arcs, allocs = _extract(model)
    pools_allocs, repaired = _recheck(tables, arcs, allocs)
    ub = tables.upper_bound_usd_per_hour
    user = sorted(c.name for c in model.component_objects(pyo.Constraint, active=True)
                  if c.name not in model.fleet_builtin)
    solver = {
        "name": "highs", "interface": "pyomo.contrib.appsi", "status":
        "optimal" if optimal else "time_limit",
        "objective": obj, "bound": bound, "gap": gap, "seconds": seconds,
        "precompute_seconds": float(model.fleet_seconds["precompute_s"]),
        "build_seconds": float(model.fleet_seconds["build_s"]),
        "total_seconds": float(model.fleet_seconds["precompute_s"]
                               + model.fleet_seconds["build_s"] + seconds),
        "warm_start_usd_per_hour": tables.warm_usd_per_hour if warm_start else None,
        "repaired": repaired,
        "user_constraints": user,
        "rounds": rounds,
        "pruning": {
            "upper_bound_usd_per_hour": ub, "arcs_total": tables.arcs_total,
            "arcs_kept": len(model.fleet_pools),
            "mixed_arcs": sum(1 for i in model.fleet_pools.values() if i["mix"]),
            "mixing": tables.mixing, "certified": _certified(tables, obj)},
        "variables": int(sum(1 for _ in model.component_data_objects(pyo.Var))),
        "constraints": int(sum(1 for _ in model.component_data_objects(
            pyo.Constraint, active=True))),
    }
    return _plan(tables, pools_allocs, solver, solver["total_seconds"]
                 + time.perf_counter() - t0 - seconds)


def _extract(model) -> tuple[list[int], dict[int, list[tuple[int, int, float]]]]:
    """The chosen pools (rows of ``model.fleet_tables``, in token order) and their
    allocations ``(type, instances, share)``."""
    t: ArcTables = model.fleet_tables
    rows = model.fleet_rows
    chosen = [key for key in model.fleet_pools if (model.use[key].value or 0) > 0.5]
    chosen.sort(key=lambda k: t.node_tokens[k[1]])
    arcs, out = [], {}
    for key in chosen:
        info = model.fleet_pools[key]
        allocs = [(ty, n, 1.0) for ty, n in info["solo"].items()
                  if (model.solo[key + (ty,)].value or 0) > 0.5]
        if not allocs and info["mix"] and (model.mixed[key].value or 0) > 0.5:
            for ty in info["mix"]:
                n = int(round(pyo.value(model.mix_instances[key + (ty,)]) or 0))
                x = float(pyo.value(model.mix_share[key + (ty,)]) or 0.0)
                if n > 0 or x > 1e-9:
                    allocs.append((ty, n, max(x, 0.0)))
        arcs.append(rows[key])
        out[rows[key]] = allocs
    return arcs, out



def _one_arc_load(tables: ArcTables, a: int, ty: int) -> PoolLoad:
    tab = tables.tables[ty]
    u = tables.arc_u[a:a + 1]
    v = tables.arc_v[a:a + 1]
    load, _ = _arc_loads(tables.problem, tab, tables.node_tokens, tables.node_gamma, u, v)
    return load


def _recheck(tables: ArcTables, arcs, allocs):
    """Exact re-check of every pool at its allocations (MODEL.md §3). Solo pools: their
    count must meet the SLO at share 1. Mixed pools: the exact capacities ``X_t(n_t)`` of
    the chosen counts must cover the pool; shares are re-split within them (the solver's
    tolerances can leave a share a hair above a capacity), and a pool they cannot cover
    gets instances added to its largest allocation until they do. Returns ``({arc:
    [(type, n, share, load)]}, repairs)``."""
    pb = tables.problem
    s = pb.scenario
    mmin = int(pb.min_instances_per_pool)
    out, repairs = {}, []
    for a in arcs:
        rows = [r for r in allocs[a] if r[1] > 0 or r[2] > 0] or allocs[a][:1]
        loads = [_one_arc_load(tables, a, ty) for ty, _, _ in rows]
        zero = np.array([0])
        if len(rows) == 1 or tables.mass[a] <= 1e-15:
            ty, n, _ = rows[0]
            need = int(min_instances(loads[0], s.slo_ms * 1e-3, s.percentile, s.rho_max,
                                     paper_rule=s.paper_compat)[0])
            if need > n:
                repairs.append({"pool_window_tokens": int(tables.node_tokens[tables.arc_v[a]]),
                                "profile": tables.profiles[ty].name, "instances": n,
                                "needed": need})
                n = need
            n = max(n, mmin) if tables.mass[a] > 1e-15 else n
            out[a] = [(ty, n, 1.0, loads[0])]
            continue
        counts = [n for _, n, _ in rows]
        shares = np.array([x for _, _, x in rows], dtype=float)
        shares = shares / shares.sum()
        while True:
            cap = np.array([capacity_share(pb, ld, zero, np.array([n]))[0] if n > 0 else 0.0
                            for ld, n in zip(loads, counts, strict=True)])
            if cap.sum() >= 1.0 - 1e-12:
                break
            j = int(np.argmax(shares))
            repairs.append({"pool_window_tokens": int(tables.node_tokens[tables.arc_v[a]]),
                            "profile": tables.profiles[rows[j][0]].name,
                            "instances": counts[j], "needed": counts[j] + 1})
            counts[j] += 1
        new = np.minimum(shares, cap)
        spare = cap - new
        deficit = 1.0 - new.sum()
        if deficit > 0:
            new += spare * (deficit / spare.sum())
        new = np.minimum(new / new.sum(), cap)
        out[a] = [(ty, n, float(x), ld) for (ty, _, _), n, x, ld in
                  zip(rows, counts, new, loads, strict=True)]
    return out, repairs


def _alloc_figures(problem: FleetProblem, load: PoolLoad, n: int, share: float):
    """(utilization, TTFT at the percentile in ms, share over the SLO) of one allocation."""
    s = problem.scenario
    q = s.percentile / 100.0
    a = float(load.offered_load[0]) * share
    if n <= 0 or a <= 0:
        return 0.0, 0.0, 0.0
    c = n * int(load.slots_per_instance[0])
    es, cs2 = float(load.mean_service_s[0]), float(load.cs2[0])
    fs = load.floor_s if np.ndim(load.floor_s) == 1 else load.floor_s[0]
    fp = load.floor_prob[0]
    miss = float(ttft_miss_probability(s.slo_ms * 1e-3, c, a, es, cs2, fs, fp)[0])
    if s.paper_compat:
        ttft = float(wait_quantile_s(q, c, a, es, cs2)) + float(load.mean_floor_s[0])
    else:
        keep = fp > 0
        ttft = ttft_quantile_s(q, c, a, es, cs2, fs[keep], fp[keep])
    return a / c, ttft * 1e3, miss


def _mixture_quantile_ms(problem: FleetProblem, parts) -> float:
    """TTFT at the percentile of a pool whose requests split over allocations ``parts``
    (``(share, load, n)``): solves ``sum_j x_j P_j(TTFT > t) = 1 - q`` by bisection."""
    s = problem.scenario
    q = s.percentile / 100.0

    def tail(t):
        tot = 0.0
        for x, load, n in parts:
            a = float(load.offered_load[0]) * x
            c = n * int(load.slots_per_instance[0])
            fs = load.floor_s if np.ndim(load.floor_s) == 1 else load.floor_s[0]
            tot += x * float(ttft_miss_probability(t, c, a, float(load.mean_service_s[0]),
                                                   float(load.cs2[0]), fs,
                                                   load.floor_prob[0])[0])
        return tot
    lo, hi = 0.0, 1.0
    while tail(hi) > 1.0 - q and hi < 1e6:
        hi *= 2.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if tail(mid) > 1.0 - q else (lo, mid)
    return hi * 1e3


def _plan(tables: ArcTables, pools_allocs, solver: dict, seconds: float) -> Plan:
    pb = tables.problem
    s = pb.scenario
    arcs = list(pools_allocs)
    roles = _ROLES[len(arcs)]
    pools = []
    for k, a in enumerate(arcs):
        rate = s.rate_rps * float(tables.mass[a])
        allocs, parts, busy, cap, miss = [], [], 0.0, 0.0, 0.0
        for ty, n, share, load in pools_allocs[a]:
            prof = tables.profiles[ty]
            util, ttft_ms, m_share = _alloc_figures(pb, load, n, share)
            allocs.append(Allocation(
                profile=prof.name, gpu=prof.gpu, model=prof.model, tp=prof.tp, instances=n,
                load_share=share, rate_rps=rate * share,
                slots_per_instance=int(load.slots_per_instance[0]),
                usd_per_gpu_hour=prof.usd_per_gpu_hour, usd_per_hour=n * prof.usd_per_instance_hour,
                mean_service_s=float(load.mean_service_s[0]), cs2=float(load.cs2[0]),
                utilization=util, p99_ttft_ms=ttft_ms, slo_miss_share=m_share))
            busy += float(load.offered_load[0]) * share
            cap += n * int(load.slots_per_instance[0])
            miss += share * m_share
            if n > 0 and share > 0:
                parts.append((share, load, n))
        if len(parts) > 1 and not s.paper_compat:
            ttft = _mixture_quantile_ms(pb, parts)
        else:
            ttft = max((al.p99_ttft_ms for al in allocs), default=0.0)
        u, v = int(tables.arc_u[a]), int(tables.arc_v[a])
        last = k == len(arcs) - 1
        pools.append(PoolPlan(
            role=roles[k], lo_tokens=int(tables.node_tokens[u]),
            context_tokens=int(tables.node_tokens[v]),
            gamma=1.0 if last else float(tables.node_gamma[v]), allocations=tuple(allocs),
            rate_rps=rate, compressed_in_rps=s.rate_rps * float(tables.compressed_in[a]),
            utilization=busy / cap if cap else 0.0, p99_ttft_ms=ttft, slo_miss_share=miss))
    usd = sum(p.usd_per_hour for p in pools)
    solver = {**solver, "usd_per_hour": usd}
    warnings = []
    if solver["repaired"]:
        warnings.append(f"{len(solver['repaired'])} allocation(s) were short of instances at "
                        "their exact shares and were repaired")
    if not solver["pruning"]["certified"]:
        warnings.append(
            f"the optimum (${solver['objective']:,.2f}/h) is above the pruning bound "
            f"(${solver['pruning']['upper_bound_usd_per_hour']:,.2f}/h): it is optimal among "
            "the kept candidates only; rebuild with prune=False to prove it globally")
    bounds = [p.context_tokens for p in pools[:-1]]
    return Plan(
        workload=s.workload.name, rate_rps=s.rate_rps, slo_ms=s.slo_ms,
        percentile=s.percentile, model=tables.profiles[0].model,
        long_context_tokens=s.long_context_tokens, compressible_share=s.compressible_share,
        rho_max=s.rho_max, paper_compat=s.paper_compat,
        boundary_tokens=bounds[0] if bounds else None,
        gamma=pools[0].gamma if bounds else 1.0, pools=tuple(pools),
        baselines=dict(tables.baselines), planner_ms=seconds * 1e3, method="milp",
        compression_latency_ms=s.compression_latency_ms, warnings=tuple(warnings),
        solver=solver,
        extra={"boundaries_tokens": bounds, "gammas": [p.gamma for p in pools[:-1]],
               "baseline_profiles": dict(tables.baseline_profiles)})


# ---------------------------------------------------------------------------------------
# Infeasibility
# ---------------------------------------------------------------------------------------


def _resolve(model, time_limit_s, highs_options):
    opt = _highs(time_limit_s, 0.0, False, highs_options)
    res = opt.solve(model)
    if res.termination_condition in (TerminationCondition.optimal,
                                     TerminationCondition.maxTimeLimit) and \
            res.best_feasible_objective is not None:
        res.solution_loader.load_vars()
        return float(res.best_feasible_objective)
    return None


def _diagnose(model, time_limit_s, highs_options) -> None:
    """Find the constraint that makes the model infeasible and raise :class:`InfeasibleError`
    naming it: re-solve without each group (budget, availability caps, total GPUs, user
    constraints) alone, then without all of them."""
    t: ArcTables = model.fleet_tables
    pb = t.problem
    user = [c for c in model.component_objects(pyo.Constraint, active=True)
            if c.name not in model.fleet_builtin]
    groups = []
    if hasattr(model, "budget"):
        groups.append(("budget", [model.budget]))
    if hasattr(model, "caps"):
        groups.append(("availability", [model.caps]))
    if hasattr(model, "total_gpus"):
        groups.append(("total_gpus", [model.total_gpus]))
    if user:
        groups.append(("user", user))
    pruned = math.isfinite(t.upper_bound_usd_per_hour) and bool(user)
    note = (f" (searched fleets up to ${t.upper_bound_usd_per_hour:,.2f}/h; build with "
            "prune=False to search them all)") if pruned else ""

    def without(comps, objective=None):
        """Optimum with ``comps`` switched off (of ``objective`` if given, else cost)."""
        for c in comps:
            c.deactivate()
        if objective is not None:
            model.cost.deactivate()
            model.fleet_probe = pyo.Objective(expr=objective, sense=pyo.minimize)
        try:
            return _resolve(model, time_limit_s, highs_options)
        finally:
            for c in comps:
                c.activate()
            if objective is not None:
                model.del_component("fleet_probe")
                model.cost.activate()

    for name, comps in groups:
        y = without(comps)
        if y is None:
            continue
        if name == "budget":
            raise InfeasibleError(
                f"budget ${pb.budget_usd_per_hour:,.2f}/h is below the cheapest feasible fleet "
                f"${y:,.2f}/h; raise --budget-usd-per-hour to at least {math.ceil(y * 100) / 100:.2f}"
                + note, binding="budget")
        if name == "availability":
            over = []
            for g in model.caps:
                need = without(comps, objective=model.gpus[g])
                if need is not None and need > pb.cap_of(g) + 1e-6:
                    over.append(f"at least {int(round(need))} {g} GPUs (cap {pb.cap_of(g)})")
            raise InfeasibleError(
                "availability caps leave no fleet that meets the SLO: it needs "
                f"{' and '.join(over) or 'more GPUs than the caps allow together'} (the "
                f"cheapest without caps costs ${y:,.2f}/h); raise --max-gpus or add GPU types"
                + note, binding="availability")
        if name == "total_gpus":
            need = without(comps, objective=sum(model.gpus[g] for g in model.gpus))
            raise InfeasibleError(
                f"max_total_gpus={pb.max_total_gpus}: the fewest GPUs of a fleet that meets the "
                f"SLO with the other constraints is {int(round(need))}; raise --max-total-gpus"
                + note, binding="total_gpus")
        raise InfeasibleError(
            f"your constraint(s) {', '.join(c.name for c in comps)} leave no fleet (without "
            f"them the cheapest is ${y:,.2f}/h)" + note, binding="user")
    all_groups = [c for _, comps in groups for c in comps]
    if all_groups:
        y = without(all_groups)
        if y is not None:
            raise InfeasibleError(
                f"{' and '.join(n for n, _ in groups)} together leave no fleet (without them "
                f"the cheapest is ${y:,.2f}/h); relax one of them" + note,
                binding="+".join(n for n, _ in groups))
    raise _slo_infeasible(pb, _workload(pb.scenario))


# ---------------------------------------------------------------------------------------
# Convenience
# ---------------------------------------------------------------------------------------


def solve(problem: FleetProblem, *, time_limit_s: float | None = None, prune: bool = True,
          mip_rel_gap: float = 0.0, warm_start: bool = True) -> Plan:
    """Cheapest fleet for ``problem``: :func:`build_model` then :func:`solve_model`."""
    return solve_model(build_model(problem, prune), time_limit_s=time_limit_s,
                       mip_rel_gap=mip_rel_gap, warm_start=warm_start)


def solve_max_rate(problem: FleetProblem, budget_usd_per_hour: float | None = None, *,
                   rel_tol: float = 0.01, time_limit_s: float | None = None,
                   prune: bool = True, max_steps: int = 60) -> Plan:
    """The highest arrival rate a fleet within the budget can carry within the SLO, and
    that fleet (MODEL.md §3-4).

    Bisection over the rate (geometric, to ``rel_tol``) with one min-cost MILP per step
    (:func:`solve`, the budget left out and compared after): the cheapest fleet's cost is
    non-decreasing in the rate, so the rate is feasible iff that cost is within the budget.
    Starts from ``problem``'s rate and doubles or halves to bracket. The plan is the fleet
    at the highest feasible rate found; ``plan.solver`` adds ``objective="rate"``,
    ``rate_rps``, ``rate_upper_rps`` (the lowest rate shown infeasible) and ``steps``.
    """
    t0 = time.perf_counter()
    budget = budget_usd_per_hour if budget_usd_per_hour is not None else \
        problem.budget_usd_per_hour
    if budget is None or not (math.isfinite(budget) and budget > 0):
        raise FleetOptError("budget_usd_per_hour: the rate objective needs a positive budget "
                            "(--budget-usd-per-hour)")
    base = replace(problem, budget_usd_per_hour=None)
    steps = []

    def cheapest(rate: float) -> Plan | None:
        try:
            plan = solve(base.with_rate(rate), time_limit_s=time_limit_s, prune=prune)
        except InfeasibleError:
            plan = None
        steps.append({"rate_rps": rate, "usd_per_hour": plan.usd_per_hour if plan else None})
        return plan if plan is not None and plan.usd_per_hour <= budget + 1e-9 else None

    rate = float(problem.scenario.rate_rps)
    best = cheapest(rate)
    if best is not None:
        lo, hi = rate, None
        while hi is None and len(steps) < max_steps:
            nxt = lo * 2.0
            p = cheapest(nxt)
            if p is None:
                hi = nxt
            else:
                lo, best = nxt, p
    else:
        hi, lo = rate, None
        while lo is None and len(steps) < max_steps:
            nxt = hi / 2.0
            p = cheapest(nxt)
            if p is None:
                hi = nxt
            else:
                lo, best = nxt, p
        if lo is None:
            raise InfeasibleError(
                f"budget ${budget:,.2f}/h buys no fleet that meets the SLO even at "
                f"{hi:.3g} req/s; raise --budget-usd-per-hour", binding="budget")
    if hi is None:
        raise FleetOptError(f"the rate objective found no limit up to {lo:g} req/s within "
                            f"{max_steps} steps; check --budget-usd-per-hour")
    while hi / lo > 1.0 + rel_tol and len(steps) < max_steps:
        mid = math.sqrt(lo * hi)
        p = cheapest(mid)
        if p is None:
            hi = mid
        else:
            lo, best = mid, p
    seconds = time.perf_counter() - t0
    solver = {**best.solver, "objective_kind": "rate", "rate_rps": lo, "rate_upper_rps": hi,
              "budget_usd_per_hour": budget, "steps": steps, "seconds": seconds}
    return replace(best, solver=solver, planner_ms=seconds * 1e3)
