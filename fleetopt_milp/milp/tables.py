"""The MILP's precomputed tables: sizing, pruning with a certificate, mixed-pool data.

:func:`precompute` runs named stages that pass typed records (docs/milp.md §6):

1. :func:`~.arcs.candidate_graph` - demand tables, nodes, candidate arcs;
2. :func:`_outer_stage` - exact sizes of the one- and two-pool arcs; the analytical
   planner's two-pool fleet over every pair of types is the first warm start, its cost
   ``UB`` the pruning bound;
3. :func:`_fluid_stage` - a fluid lower bound on every other arc; arcs whose cheapest
   path through them is above ``UB`` are dropped;
4. :func:`_exact_stage` - exact sizes of the survivors, a better warm start (shortest
   path over exact solo pools meeting the caps) and a second pruning with exact bounds;
5. :func:`_filler_stage` (``mixing="filler"``) - the best main-plus-filler pool of each
   arc, a shortest path over solo and filler pools and a last pruning with exact costs;
6. :func:`_levels_stage` (``mixing="full"``) - capacity levels of the mixed arcs.

Certificate: every dropped arc has a lower bound on the cost of every fleet through it
above ``UB``, the cost of a feasible fleet; so any optimum of the kept arcs that costs at
most ``UB`` is optimal over all candidates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np

from ..demand import MomentTable
from ..hardware import Profile
from ..plan import FleetSummary
from ..poolload import PoolLoad
from .arcs import (
    NOT_SIZED,
    CandidateGraph,
    Sizes,
    arc_loads,
    candidate_graph,
    fluid_counts,
    size_arcs,
)
from .capacity import CapacityLevels, FillerColumns, filler_columns, levels, two_cheapest
from .diagnose import slo_infeasible
from .paths import Fleet, baselines, best_path, cheapest_through, feasible_path, two_pool_fleet
from .problem import BUSY_MASS, EPS_USD, FleetProblem, redundancy_floor

__all__ = ["ArcTables", "precompute"]

BOUND_RTOL = 1e-9
"""Relative slack on the pruning bound (an arc is kept if its bound is within it)."""

ROUND_ARCS = 2048
"""Arcs sized per round by :func:`_size_in_rounds` (service models without a compiled
sizing kernel, such as the engine model)."""


@dataclass(frozen=True)
class ArcTables:
    """Everything the MILP needs, precomputed exactly (arrays over kept arcs ``a`` and
    types ``t``; docs/model.md §3-4, docs/milp.md §2-6).

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
        MILP), as kept-arc indices and type indices (-1: the arc's main-plus-filler pool).
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
        return redundancy_floor(self.solo, self.mass, min_per_pool)

    def busy(self, a: int) -> bool:
        """Whether kept arc ``a`` receives requests."""
        return bool(self.mass[a] > BUSY_MASS)

    def window_tokens(self, a: int) -> int:
        return int(self.node_tokens[self.arc_v[a]])

    def load(self, a: int, t: int) -> PoolLoad:
        """Exact load of kept arc ``a`` on type ``t`` (one pool)."""
        load, _ = arc_loads(self.problem, self.tables[t], self.node_tokens, self.node_gamma,
                            self.arc_u[a:a + 1], self.arc_v[a:a + 1])
        return load


@dataclass(frozen=True)
class PruneRule:
    """How arcs are pruned: not at all (``prune=False``), against a fixed ``bound`` (USD/h),
    or against the cheapest fleet found so far (``bound=None``)."""

    prune: bool
    bound: float | None

    def upper(self, fleet: Fleet) -> float:
        if not self.prune:
            return math.inf
        return float(self.bound) if self.bound is not None else fleet.usd_per_hour


def _limit(ub: float) -> float:
    """Largest path bound (USD/h) an arc may have and be kept under pruning bound ``ub``."""
    return ub * (1 + BOUND_RTOL) + EPS_USD


@dataclass(frozen=True)
class ArcBounds:
    """Lower bounds (USD/h) on the cost of each arc's pool: as a solo pool (the cheapest
    type at its exact count) and as a mixed pool (inf when pools do not mix)."""

    solo: np.ndarray
    mixed: np.ndarray

    @property
    def pool(self) -> np.ndarray:
        return np.minimum(self.solo, self.mixed)


def _exact_bounds(problem: FleetProblem, sizes: Sizes, idx: np.ndarray) -> ArcBounds:
    """Bounds of sized arcs ``idx``. A mixed pool costs at least ``min_t price_t N1_t /
    X_t(N1_t)`` (capacity per instance is at most ``X(N1)/N1`` up to ``N1`` instances),
    and at least two types (or the redundancy floor at the cheapest price)."""
    price = problem.price_usd_per_instance_hour
    mmin = int(problem.min_instances_per_pool)
    counts = sizes.counts[idx]
    n = redundancy_floor(counts, sizes.mass[idx], mmin)
    solo = np.where(n >= 0, n * price, np.inf).min(axis=1)
    if problem.mixing_mode == "none":
        return ArcBounds(solo, np.full(idx.size, np.inf))
    x_top = sizes.x_top[idx]
    with np.errstate(divide="ignore", invalid="ignore"):
        per = np.where((x_top > 0) & (counts >= 1), price * counts / x_top, np.inf)
    mixed = np.maximum(per.min(axis=1),
                       np.where(sizes.mass[idx] > BUSY_MASS, _mixed_floor(problem), 0.0))
    return ArcBounds(solo, mixed)


def _mixed_floor(problem: FleetProblem) -> float:
    price = problem.price_usd_per_instance_hour
    return max(two_cheapest(price), problem.min_instances_per_pool * float(price.min()))


@dataclass(frozen=True)
class Selection:
    """The arcs that survived exact pruning, over ``kept`` (indices of sized candidate
    arcs, ascending). keep: ``(k,)`` still kept after the latest pruning; mix: ``(k,)``
    gets mixed-pool variables (``mix <= keep``); bounds: :class:`ArcBounds` of ``kept``;
    fill: the filler columns of ``kept`` (none unless ``mixing="filler"``); warm: the best
    fleet found (indices into candidate arcs, within ``kept`` and ``keep``); ub: the
    pruning bound (USD/h)."""

    kept: np.ndarray
    keep: np.ndarray
    mix: np.ndarray
    bounds: ArcBounds
    fill: FillerColumns
    warm: Fleet
    ub: float

    def warm_rows(self) -> np.ndarray:
        return np.searchsorted(self.kept, list(self.warm.arcs)).astype(np.int64)


def _infeasible(problem: FleetProblem, graph: CandidateGraph, sizes: Sizes):
    """The error for a question no fleet answers (:func:`~.diagnose.slo_infeasible`), given
    the sized one-pool fleet's load on each type under a load-dependent service model."""
    whole = np.flatnonzero((graph.u == 0) & (graph.v == graph.sink))
    return slo_infeasible(problem, [
        (p, ld.of(whole)) for p, ld, ok in zip(problem.types, sizes.loads,
                                              graph.serve[whole[0]], strict=True)
        if ok and ld is not None and ld.load.load_dependent])


def _outer_stage(problem: FleetProblem, graph: CandidateGraph) -> tuple[Sizes, Fleet]:
    """Exact sizes of the one- and two-pool arcs; the cheapest two-pool fleet on them."""
    outer = np.flatnonzero(graph.outer)
    sizes = size_arcs(problem, graph, Sizes.none(graph.u.size, len(problem.types)), outer)
    if not np.any(sizes.counts[graph.v == graph.sink] >= 0):
        raise _infeasible(problem, graph, sizes)
    n = redundancy_floor(sizes.counts, sizes.mass, int(problem.min_instances_per_pool))
    return sizes, two_pool_fleet(problem, graph.n_nodes, graph.u, graph.v, n)


def _fluid_stage(problem: FleetProblem, graph: CandidateGraph, sizes: Sizes, warm: Fleet,
                 ub: float) -> tuple[np.ndarray, np.ndarray | None]:
    """``(a,)`` arcs kept by the fluid bound, and ``(a,)`` the lower bounds (USD/h) on the
    arcs' pools it used (None without pruning): a lower bound on each unsized arc's cost
    from :func:`~.arcs.fluid_counts` (at least the redundancy floor; a mixed pool at least
    the continuous fluid cost and two types), exact bounds on the sized ones, and the
    cheapest path through each arc within ``ub``. The warm start's arcs are always
    kept."""
    keep = np.ones(graph.u.size, bool)
    inner = np.flatnonzero(~sizes.sized)
    if not inner.size or not math.isfinite(ub):
        return keep, None
    price = problem.price_usd_per_instance_hour
    mmin = int(problem.min_instances_per_pool)
    fl = fluid_counts(problem, graph, inner)
    cnt = np.where(fl > 0, np.maximum(np.ceil(fl - 1e-9), max(mmin, 1)), 0.0)
    lb_in = np.min(cnt * price, axis=1)
    if problem.mixing_mode != "none":
        cont = np.min(fl * price, axis=1)
        lb_in = np.minimum(lb_in, np.where(np.isfinite(cont), np.maximum(
            cont, np.where(cont > 0, _mixed_floor(problem), 0.0)), np.inf))
    lb = np.empty(graph.u.size)
    outer = np.flatnonzero(graph.outer)
    lb[outer] = _exact_bounds(problem, sizes, outer).pool
    lb[inner] = lb_in
    keep = cheapest_through(graph.n_nodes, graph.u, graph.v, lb, problem.max_pools) \
        <= _limit(ub)
    keep[list(warm.arcs)] = True
    return keep, lb


def _solo_fleet(problem: FleetProblem, graph: CandidateGraph, sizes: Sizes,
                arcs: np.ndarray) -> Fleet:
    """The cheapest fleet meeting the caps over the solo pools of sized ``arcs``
    (:func:`~.paths.feasible_path`), as candidate-arc indices."""
    n = redundancy_floor(sizes.counts[arcs], sizes.mass[arcs],
                         int(problem.min_instances_per_pool))
    return feasible_path(problem, graph.n_nodes, graph.u[arcs], graph.v[arcs], n,
                         None).on(arcs)


def _size_in_rounds(problem: FleetProblem, graph: CandidateGraph, sizes: Sizes,
                    keep: np.ndarray, lb: np.ndarray, warm: Fleet, rule: PruneRule
                    ) -> tuple[Sizes, np.ndarray, Fleet]:
    """Exact sizes of the kept arcs in rounds, for service models whose exact sizing is
    costly (docs/milp.md §6): each round sizes the :data:`ROUND_ARCS` unsized arcs whose
    cheapest path bound is lowest, puts their exact bounds in ``lb``, takes the cheapest
    fleet over the sized arcs as warm start if it is better, and drops every arc whose
    path bound is then above the pruning bound. Bounds only rise and the pruning bound
    only falls, so every dropped arc is dropped by the certificate of the module doc."""
    lb = lb.copy()
    while True:
        ub = rule.upper(warm)
        through = cheapest_through(graph.n_nodes, graph.u, graph.v,
                                   np.where(keep, lb, np.inf), problem.max_pools)
        keep = keep & (through <= _limit(ub))
        keep[list(warm.arcs)] = True
        todo = np.flatnonzero(keep & ~sizes.sized)
        if not todo.size:
            return sizes, keep, warm
        batch = np.sort(todo[np.argsort(through[todo], kind="stable")[:ROUND_ARCS]])
        sizes = size_arcs(problem, graph, sizes, batch)
        lb[batch] = _exact_bounds(problem, sizes, batch).pool
        found = _solo_fleet(problem, graph, sizes, np.flatnonzero(keep & sizes.sized))
        if found.better_than(warm):
            warm = found


def _exact_stage(problem: FleetProblem, graph: CandidateGraph, sizes: Sizes,
                 keep: np.ndarray, warm: Fleet, rule: PruneRule,
                 lb: np.ndarray | None = None) -> tuple[Sizes, Selection]:
    """Exact sizes of the kept arcs, a better warm start (shortest path over exact solo
    pools meeting the caps) and pruning with exact bounds; a mixed pool is allowed on an
    arc when a path through it with its mixed bound is within the bound. Under a
    load-dependent service model with the fluid bounds ``lb``, the arcs are sized in
    rounds (:func:`_size_in_rounds`)."""
    todo = np.flatnonzero(keep & ~sizes.sized)
    if todo.size and lb is not None and problem.scenario.service_model != "slot":
        sizes, keep, warm = _size_in_rounds(problem, graph, sizes, keep, lb, warm, rule)
    elif todo.size:
        sizes = size_arcs(problem, graph, sizes, todo)
    kept = np.flatnonzero(keep)
    u, v, K = graph.u[kept], graph.v[kept], problem.max_pools
    n_kept = redundancy_floor(sizes.counts[kept], sizes.mass[kept],
                              int(problem.min_instances_per_pool))
    solo_cost = np.where(n_kept >= 0, n_kept * problem.price_usd_per_instance_hour, np.inf)
    if not best_path(graph.n_nodes, u, v, solo_cost.min(axis=1), K)[1]:
        raise _infeasible(problem, graph, sizes)
    found = feasible_path(problem, graph.n_nodes, u, v, n_kept, None).on(kept)
    if found.better_than(warm):
        warm = found
    ub = rule.upper(warm)
    bounds = _exact_bounds(problem, sizes, kept)
    sel = Selection(kept, np.isfinite(bounds.pool), np.zeros(kept.size, bool), bounds,
                    FillerColumns.none(kept.size), warm, ub)
    if math.isfinite(ub):
        through = cheapest_through(graph.n_nodes, u, v, bounds.pool, K)
        keep2 = through <= _limit(ub)
        keep2[sel.warm_rows()] = True
        with np.errstate(invalid="ignore"):
            mixed_path = np.where(np.isfinite(bounds.mixed),
                                  through - bounds.pool + bounds.mixed, np.inf)
        return sizes, replace(sel, keep=keep2, mix=keep2 & (mixed_path <= _limit(ub)))
    return sizes, replace(sel, mix=sel.keep & np.isfinite(bounds.mixed))


def _filler_stage(problem: FleetProblem, graph: CandidateGraph, sizes: Sizes,
                  sel: Selection, rule: PruneRule) -> Selection:
    """``mixing="filler"``: the best main-plus-filler pool of each arc allowed to mix, an
    exact shortest path over solo and filler pools (the optimum when nothing couples the
    pools) as warm start and bound, and a last pruning with exact arc costs."""
    if problem.mixing_mode != "filler":
        return sel
    if not np.any(sel.mix):
        return replace(sel, mix=np.zeros(sel.kept.size, bool))
    kept = sel.kept
    u, v = graph.u[kept], graph.v[kept]
    price = problem.price_usd_per_instance_hour
    rows = np.flatnonzero(sel.mix)
    fill = filler_columns(problem, sizes.loads, kept[rows], sizes.counts[kept[rows]],
                          price).placed(kept.size, rows)
    n_kept = redundancy_floor(sizes.counts[kept], sizes.mass[kept],
                              int(problem.min_instances_per_pool))
    solo_cost = np.where(n_kept >= 0, n_kept * price, np.inf)
    arc_cost = np.minimum(solo_cost.min(axis=1), fill.cost)
    warm, ub = sel.warm, sel.ub
    found = feasible_path(problem, graph.n_nodes, u, v, n_kept, fill).on(kept)
    if found.better_than(warm):
        warm, ub = found, rule.upper(found)
    sel = replace(sel, fill=fill, warm=warm, ub=ub)
    keep = sel.keep.copy()
    if math.isfinite(ub):
        keep &= cheapest_through(graph.n_nodes, u, v, arc_cost, problem.max_pools) \
            <= _limit(ub)
        keep[sel.warm_rows()] = True
    return replace(sel, keep=keep, mix=keep & np.isfinite(fill.cost))


def _with_outer(problem: FleetProblem, graph: CandidateGraph, sel: Selection) -> Selection:
    """Every one- and two-pool candidate kept whatever the bound (with its mixed pool where
    it has one): used when :func:`~.solve.solve_model` grows a model."""
    is_outer = graph.outer[sel.kept]
    can_mix = np.isfinite(sel.fill.cost) if problem.mixing_mode == "filler" \
        else np.isfinite(sel.bounds.mixed)
    mix = sel.mix | (is_outer & ~sel.keep & can_mix)
    return replace(sel, keep=sel.keep | (is_outer & np.isfinite(sel.bounds.pool)), mix=mix)


def _levels_stage(problem: FleetProblem, sizes: Sizes, arcs: np.ndarray, mix: np.ndarray
                  ) -> tuple[CapacityLevels, np.ndarray]:
    """``mixing="full"``: capacity levels of every (mixed arc, type) with ``N1 >= 1`` (top
    segment up to ``max(N1, redundancy floor)``); an arc stays mixed only if at least two
    types have levels. Returns the levels over ``arcs`` and the updated ``mix``."""
    G = len(problem.types)
    if problem.mixing_mode != "full":
        return CapacityLevels.empty(arcs.size, G), mix
    mmin = int(problem.min_instances_per_pool)
    parts = []
    for t in range(G):
        rows = np.flatnonzero(mix & (sizes.counts[arcs, t] >= 1))
        if not rows.size:
            continue
        n1 = sizes.counts[arcs[rows], t]
        parts.append((t, rows, levels(problem, sizes.loads[t].of(arcs[rows]), n1,
                                      np.maximum(n1, mmin))))
    out = CapacityLevels.empty(arcs.size, G, max([p[2].k.shape[2] for p in parts] + [1]))
    for t, rows, lv in parts:
        w = lv.k.shape[2]
        out.k[rows, t, :w] = lv.k[:, 0]
        out.r[rows, t, :w] = lv.r[:, 0]
        out.hi[rows, t, :w] = lv.hi[:, 0]
    return out, mix & ((out.k[:, :, 0] > 0).sum(axis=1) >= 2)


def _compressed_in(problem: FleetProblem, graph: CandidateGraph, arcs: np.ndarray
                   ) -> np.ndarray:
    """``(a,)`` share of all requests compressed into each arc's pool from the band above."""
    s = problem.scenario
    out = np.zeros(arcs.size)
    v = graph.v[arcs]
    into = (v != graph.sink) & (graph.node_gamma[v] > 1.0)
    if s.compressible_share <= 0:
        return out
    for i in np.flatnonzero(into):
        bc = graph.table_holding(v[i]).band_compressed(graph.node_tokens[v[i]],
                                                       graph.node_gamma[v[i]])
        out[i] = s.compressible_share * float(bc.mass[0])
    return out


class _Laps:
    """Wall time of each stage of :func:`precompute`, seconds."""

    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = now - self.last
        self.last = now


def precompute(problem: FleetProblem, prune: bool = True,
               bound: float | None = None, keep_outer: bool = False) -> ArcTables:
    """Exact tables for the MILP of ``problem`` (docs/milp.md §2-6): nodes, kept arcs,
    minimum instances of every (pool, type), mixed-pool data, the warm start and the
    baselines, by the stages of this module's docstring. ``prune=False`` keeps every arc
    (and mixing on every arc); ``bound`` (USD/h) prunes against that bound instead of the
    best fleet found here, and ``keep_outer`` keeps every one- and two-pool candidate
    whatever the bound (:func:`~fleetopt_milp.milp.solve_model` uses both to grow a
    model). ``seconds`` holds each stage's wall time."""
    laps = _Laps()
    problem = problem.validated()
    if problem.scenario.service_model != "slot":
        # A load-dependent model sizes hundreds of pools per solve, each at several sizes:
        # its compiled search repays loading the kernels (numba's cache, about 1 s once per
        # process) several times over (docs/solver.md).
        from ..queueing import load_compiled_kernels

        load_compiled_kernels()
    rule = PruneRule(prune, bound)
    graph = candidate_graph(problem)
    laps.lap("tables_s")
    sizes, warm = _outer_stage(problem, graph)
    laps.lap("outer_s")
    keep, lb = _fluid_stage(problem, graph, sizes, warm, rule.upper(warm))
    laps.lap("fluid_prune_s")
    sizes, sel = _exact_stage(problem, graph, sizes, keep, warm, rule, lb)
    laps.lap("exact_s")
    sel = _filler_stage(problem, graph, sizes, sel, rule)
    if keep_outer:
        sel = _with_outer(problem, graph, sel)
    arcs = sel.kept[sel.keep]
    fill = sel.fill.subset(sel.keep)
    laps.lap("filler_s")
    lv, mix = _levels_stage(problem, sizes, arcs, sel.mix[sel.keep])
    laps.lap("levels_s")
    outer = np.flatnonzero(graph.outer)
    base, who = baselines(problem, graph.node_tokens, graph.node_gamma, graph.u[outer],
                          graph.v[outer], sizes.counts[outer])
    timings = {**laps.seconds, "fluid_survivors": float(keep.sum()),
               "total_s": time.perf_counter() - laps.start}
    assert not np.any(sizes.counts[arcs] == NOT_SIZED)
    return ArcTables(
        problem=problem, profiles=problem.types, tables=graph.tables,
        node_tokens=graph.node_tokens, node_gamma=graph.node_gamma, arc_u=graph.u[arcs],
        arc_v=graph.v[arcs], mass=sizes.mass[arcs],
        compressed_in=_compressed_in(problem, graph, arcs), solo=sizes.counts[arcs],
        level_k=lv.k, level_r=lv.r, level_hi=lv.hi, mix_arc=mix,
        mixing=problem.mixing_mode, fill_main=fill.main, fill_main_n=fill.main_n,
        fill_type=fill.type, fill_n=fill.n, fill_share=fill.share,
        lower_bound_usd=sel.bounds.pool[sel.keep], upper_bound_usd_per_hour=float(sel.ub),
        arcs_total=int(graph.u.size),
        warm_arcs=tuple(int(np.searchsorted(arcs, a)) for a in sel.warm.arcs),
        warm_types=sel.warm.types, warm_usd_per_hour=float(sel.warm.usd_per_hour),
        baselines=MappingProxyType(base), baseline_profiles=MappingProxyType(who),
        seconds=MappingProxyType(timings))
