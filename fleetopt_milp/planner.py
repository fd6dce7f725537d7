"""The analytical FleetOpt planner: the cheapest two-pool fleet with Compress-and-Route.

docs/model.md §4. For a workload, an arrival rate, a TTFT SLO and one serving profile,
the planner evaluates every candidate boundary ``B`` (CDF breakpoints plus a grid) jointly
with every ``gamma`` of a grid, sizes both pools with the exact queueing model
(:func:`~fleetopt_milp.queueing.min_instances`) and returns the cheapest, together with
the baselines: homogeneous (one pool at the long window), pool routing (best ``B`` at
``gamma = 1``) and retrofit (C&R added at pool routing's ``B``).

The search is vectorised: one :class:`~fleetopt_milp.demand.MomentTable` gives the exact
moments of every candidate pool, and one ``min_instances`` call sizes them. A plan needs
only the cheapest candidates and the baselines' (:class:`~fleetopt_milp.sizing.Pairs`):
where the load has a compiled search that can prune (the engine model, docs/engine.md §5)
it sizes only those, by branch and bound, and the other candidates are left out with
counts ``-2``; :func:`plan_candidates` sizes every one. :class:`PlanningTables` keeps what
depends on neither the rate nor the SLOs, the rows' load at 1 request/s included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields, replace

import numpy as np

from .demand import Moments, MomentTable, PoolParts
from .errors import FleetOptError, InfeasibleError
from .plan import Allocation, FleetSummary, Plan, PoolPlan
from .poolload import PoolLoad
from .queueing import load_compiled_kernels, pool_figures
from .scenario import Scenario, band_end_tokens, default_boundaries, gamma_grid
from .service import load_at_rate, unit_pool_load
from .sizing import Pairs, min_instances

__all__ = ["plan", "candidate_plans",
           "plan_candidates", "size_pools", "PlanningTables"]


class PlanningTables:
    """The exact moment tables for one scenario, built once and reused by the search.

    They depend on the workload, the profile, the candidate boundaries and gammas, the long
    window, the compression latency and the length split, not on the rate, the SLO or
    ``p_c``: a sweep over those reuses one :class:`PlanningTables` (see :meth:`for_scenario`).

    ``compiled`` loads the compiled kernels (numba, about 1 s once per process; a plan then
    takes well under 1 ms instead of about 2 ms). :func:`plan` without tables builds them
    with ``compiled=False``: one plan does not repay the load (the numbers are the same).
    """

    def __init__(self, scenario: Scenario, compiled: bool = True):
        s = scenario
        if compiled:  # tables kept for reuse repay loading the compiled kernels
            load_compiled_kernels()
        self.scenario = s
        self._key = self._key_of(s)
        self.workload = s.workload.with_paper_split() if s.paper_compat and \
            s.workload.kind == "trace" else s.workload
        b = (np.asarray(s.boundaries_tokens, dtype=np.int64) if s.boundaries_tokens is not None
             else default_boundaries(self.workload, s.long_context_tokens))
        if b.size and (b.min() < 1 or b.max() >= s.long_context_tokens):
            raise FleetOptError(f"boundaries_tokens: every boundary must be in [1, "
                                f"{s.long_context_tokens}) (the long-context window)")
        self.boundaries = np.unique(b)
        self.gammas = gamma_grid(s.gamma_max, s.gamma_steps)
        self.table = MomentTable(self.workload, s.profile, self.boundaries, self.gammas,
                                 s.long_context_tokens, s.compression_latency_ms * 1e-3)
        # The two-pool candidates and the homogeneous pool, with their moments split by
        # p_c (docs/model.md §4): none of it depends on the rate, the SLO or p_c. Rows:
        # every candidate's short pool, every candidate's long pool, the homogeneous pool.
        self.windows, self.gammas_cand = _candidates(self.boundaries, self.gammas,
                                                     s.long_context_tokens)
        parts = self.table.pool_parts(self.windows, self.gammas_cand)
        parts += self.table.pool_parts(np.array([[s.long_context_tokens]]), np.zeros((1, 0)))
        self.rows = _RowParts.stack(parts, np.concatenate(
            [self.windows[:, 0], self.windows[:, 1], [s.long_context_tokens]]))
        self.no_compression = np.isclose(self.gammas_cand[:, 0], 1.0)
        #: The last scenario checked with these tables, and what ``validated()`` returned.
        self.checked: tuple[Scenario, Scenario] | None = None
        #: The rows' loads at 1 request/s (:func:`~fleetopt_milp.service.unit_pool_load`)
        #: by service model and ``p_c``: independent of the rate and the SLOs.
        self.unit_loads: dict[tuple[str, float], PoolLoad] = {}

    @staticmethod
    def _key_of(s: Scenario) -> tuple:
        return (id(s.workload), s.profile, s.boundaries_tokens, s.gamma_max, s.gamma_steps,
                s.long_context_tokens, s.compression_latency_ms, s.paper_compat)

    def for_scenario(self, scenario: Scenario) -> PlanningTables:
        """These tables re-targeted at ``scenario`` (another rate, SLO, percentile, ``p_c`` or
        ``rho_max``); raises ``ValueError`` if the scenario needs other tables."""
        if self._key_of(scenario) != self._key:
            raise ValueError("scenario differs in a field the moment tables depend on")
        new = object.__new__(PlanningTables)
        new.__dict__.update(self.__dict__)
        new.scenario = scenario
        return new


@dataclass(frozen=True)
class _RowParts:
    """:class:`PoolParts` of many pools stacked as rows: ``sums`` ``(3, F, N)`` holds the
    base, lost and gained values of the ``F`` per-pool fields of :class:`Moments` (mass,
    s1, s2, ...) and ``floors`` ``(3, N, m)`` their floor masses (zeros where a pool has no
    band); ``window_tokens`` ``(N,)`` is each row's window."""

    sums: np.ndarray
    floors: np.ndarray
    window_tokens: np.ndarray

    @staticmethod
    def _names() -> list[str]:
        return [f.name for f in fields(Moments) if f.name != "floor_mass"]

    @staticmethod
    def stack(parts: list[PoolParts], window_tokens: np.ndarray) -> _RowParts:
        def part(p: PoolParts, f: str) -> Moments:
            m = getattr(p, f)
            return p.base.scaled(0.0) if m is None else m

        names = _RowParts._names()
        sums = np.stack([np.concatenate([np.stack([getattr(m, n) for n in names]) for m in
                                         (part(p, f) for p in parts)], axis=1)
                         for f in ("base", "lost", "gained")])
        floors = np.stack([np.concatenate([part(p, f).floor_mass for p in parts])
                           for f in ("base", "lost", "gained")])
        return _RowParts(sums, floors, window_tokens)

    @property
    def gained_mass(self) -> np.ndarray:
        """Share of all requests compressed into each row's pool at ``p_c = 1``."""
        return self.sums[2, self._names().index("mass")]

    def moments(self, compressible_share: float) -> Moments:
        """Every row's moments at ``p_c`` (the operations of :meth:`PoolParts.at`)."""
        pc = float(compressible_share)
        s, f = self.sums, self.floors
        if pc > 0:
            s = s[0] - s[1] * pc + s[2] * pc
            f = f[0] - f[1] * pc + f[2] * pc
        else:
            s, f = s[0], f[0]
        return Moments(**dict(zip(self._names(), s, strict=True)), floor_mass=f)


def _size_rows(tables: PlanningTables, rows: _RowParts, pairs: Pairs | None = None
               ) -> tuple[PoolLoad, np.ndarray]:
    """The load of every row under the scenario's service model (docs/model.md §2-4) and
    its minimum instances, in one sizing call (``-1``: no size meets the SLO; with
    ``pairs``, ``-2``: not sized, see :func:`~fleetopt_milp.sizing.min_instances`)."""
    s = tables.scenario
    if rows is tables.rows:  # the tables' own rows: their unit-rate load is kept
        key = (s.service_model, s.compressible_share)
        unit = tables.unit_loads.get(key)
        if unit is None:
            unit = tables.unit_loads[key] = unit_pool_load(
                s, rows.moments(s.compressible_share), tables.table, rows.window_tokens)
    else:
        unit = unit_pool_load(s, rows.moments(s.compressible_share), tables.table,
                              rows.window_tokens)
    load = load_at_rate(unit, s)
    counts = min_instances(load, s.slo_ms * 1e-3, s.percentile, s.rho_max,
                           paper_rule=s.paper_compat, pairs=pairs)
    return load, counts


def size_pools(tables: PlanningTables, windows: np.ndarray, gammas: np.ndarray
               ) -> tuple[list[PoolLoad], np.ndarray]:
    """Loads and minimum instances of every pool of every candidate routing.

    ``windows`` ``(n, K)``, ``gammas`` ``(n, K-1)``. Returns the pool loads and an
    ``(n, K)`` int array of instances (``-1``: the pool cannot meet the SLO at any size).
    """
    n, k_pools = windows.shape
    rows = _RowParts.stack(tables.table.pool_parts(windows, gammas), windows.T.ravel())
    load, counts = _size_rows(tables, rows)
    return ([load.take(slice(k * n, (k + 1) * n)) for k in range(k_pools)],
            counts.reshape(k_pools, n).T)


def _candidates(boundaries: np.ndarray, gammas: np.ndarray, long_tokens: int):
    """All two-pool routings ``(B, gamma)`` with ``floor(gamma B) <= long window``."""
    bb, gg = np.meshgrid(boundaries, gammas, indexing="ij")
    bb, gg = bb.ravel(), gg.ravel()
    keep = band_end_tokens(bb, gg) <= long_tokens
    bb, gg = bb[keep], gg[keep]
    windows = np.stack([bb, np.full_like(bb, long_tokens)], axis=1)
    return windows, gg[:, None]


def _build_pools(tables: PlanningTables, load: PoolLoad, rows: tuple[int, ...],
                 counts: tuple[int, ...], gamma: float) -> tuple[PoolPlan, ...]:
    """The plan's pools from rows of the stacked load (short then long, or homogeneous)."""
    s = tables.scenario
    prof = s.profile
    pools = []
    for k, (r, n) in enumerate(zip(rows, counts, strict=True)):
        queue = load.queue(r, max(n, 0))
        fig = pool_figures(queue, s.slo_ms * 1e-3, s.percentile, s.paper_compat)
        tpot = {}
        if load.load_dependent and n > 0:  # the engine model's TPOT (docs/engine.md §2)
            from .engine_model import pool_tpot_fields

            tpot = pool_tpot_fields([queue], [1.0], s.tpot_percentile, s.tpot_ms)
        rate = float(load.rate_rps[r])
        alloc = Allocation(
            profile=prof.name, gpu=prof.gpu, model=prof.model, tp=prof.tp, instances=n,
            load_share=1.0, rate_rps=rate, slots_per_instance=int(load.slots_per_instance[r]),
            usd_per_gpu_hour=prof.usd_per_gpu_hour, usd_per_hour=n * prof.usd_per_instance_hour,
            mean_service_s=float(load.mean_service_s[r]), cs2=float(load.cs2[r]),
            utilization=fig.utilization, p99_ttft_ms=fig.ttft_ms,
            slo_miss_share=fig.slo_miss_share)
        last = k == len(rows) - 1
        comp_in = 0.0
        if not last and s.compressible_share > 0:  # the band above, cut to this window
            comp_in = float(tables.rows.gained_mass[r]) * s.compressible_share * s.rate_rps
        pools.append(PoolPlan(
            role="homogeneous" if len(rows) == 1 else ("short", "long")[k],
            lo_tokens=0 if k == 0 else int(tables.rows.window_tokens[rows[k - 1]]),
            context_tokens=int(tables.rows.window_tokens[r]),
            gamma=1.0 if last else gamma, allocations=(alloc,), rate_rps=rate,
            compressed_in_rps=comp_in, utilization=fig.utilization, p99_ttft_ms=fig.ttft_ms,
            slo_miss_share=fig.slo_miss_share, **tpot))
    return tuple(pools)


def _prefill_fault(tables: PlanningTables, load: PoolLoad, i: int, role: str) -> str:
    """Name the pool and the input lengths whose prefill alone misses the SLO."""
    s = tables.scenario
    over = load.floor_s >= s.slo_ms * 1e-3
    share = float(np.sum(load.floor_prob[i][over]))
    tau = float(s.profile.prefill_s(1))
    k_min = int(np.ceil(s.slo_ms * 1e-3 / tau - 1e-12))
    lin = (k_min - 1) * s.profile.chunk_tokens + 1
    return (f"pool '{role}': prefill alone takes >= {s.slo_ms:g} ms for inputs of {lin} tokens "
            f"or more on {s.profile.name} ({share:.2%} of the pool's requests, above the "
            f"{100 - s.percentile:.2g}% the P{s.percentile:g} SLO allows)")


@dataclass(frozen=True)
class _Search:
    """Every candidate and the homogeneous pool sized, with the candidates ranked.

    load: the stacked rows of :attr:`PlanningTables.rows`. counts: ``(n, 2)`` instances of
    the candidates' pools; usd: their $/hour (inf where a pool cannot meet the SLO);
    h_count: the homogeneous pool's instances; order: the feasible candidates cheapest
    first (ties: fewer instances, smaller gamma, i.e. less compression, smaller B).
    """

    tables: PlanningTables
    load: PoolLoad
    counts: np.ndarray
    usd: np.ndarray
    h_count: int
    order: np.ndarray

    @staticmethod
    def run(tables: PlanningTables, count: int | None = None) -> _Search:
        """Size the candidates: all of them, or (``count``) enough to know the ``count``
        cheapest and the baselines exactly; candidates left unsized (counts ``-2``) need
        more instances than those and are left out of :attr:`order`."""
        s = tables.scenario
        n = tables.windows.shape[0]
        pairs = None if count is None or count >= n else Pairs(
            np.arange(n), np.arange(n, 2 * n), tables.gammas_cand[:, 0], tables.windows[:, 0],
            tables.no_compression, count)
        load, all_counts = _size_rows(tables, tables.rows, pairs)
        counts = all_counts[: 2 * n].reshape(2, n).T
        total = counts[:, 0] + counts[:, 1]
        usd = np.where((counts[:, 0] >= 0) & (counts[:, 1] >= 0),
                       total * s.profile.usd_per_instance_hour, np.inf)
        ok = np.flatnonzero(np.isfinite(usd))
        g, w = tables.gammas_cand[ok, 0], tables.windows[ok, 0]
        order = ok[np.lexsort((w, g, total[ok], usd[ok]))]
        return _Search(tables, load, counts, usd, int(all_counts[2 * n]), order)

    @property
    def windows(self) -> np.ndarray:
        return self.tables.windows

    @property
    def gammas(self) -> np.ndarray:
        return self.tables.gammas_cand

    @property
    def h_row(self) -> int:
        return 2 * self.windows.shape[0]

    def best(self, mask: np.ndarray) -> int | None:
        """The cheapest feasible candidate under ``mask`` (ties as :attr:`order`)."""
        hit = self.order[mask[self.order]]
        return int(hit[0]) if hit.size else None


def plan_candidates(scenario: Scenario, tables: PlanningTables | None = None):
    """Every two-pool candidate, sized: ``(windows, gammas, counts, usd_per_hour, loads)``.

    ``usd_per_hour`` is ``inf`` where a pool cannot meet the SLO at any size. Sorted by
    nothing: index with ``np.argsort(usd_per_hour)`` for the cheapest first.
    """
    tables = tables or PlanningTables(scenario.validated(), compiled=False)
    found = _Search.run(tables)
    n = found.windows.shape[0]
    loads = [found.load.take(slice(0, n)), found.load.take(slice(n, 2 * n))]
    return found.windows, found.gammas, found.counts, found.usd, loads


def _baselines(found: _Search) -> dict[str, FleetSummary]:
    """Homogeneous, pool routing (best B at gamma 1), retrofit (C&R at pool routing's B) and
    FleetOpt (best B and gamma); raises :class:`InfeasibleError` if no fleet meets the SLO."""
    tables = found.tables
    s = tables.scenario
    price = s.profile.usd_per_instance_hour
    tp = s.profile.tp
    h = found.h_count
    h_ok = h >= 0
    fault = "" if h_ok else _prefill_fault(tables, found.load, found.h_row, "homogeneous")
    if not h_ok and found.order.size == 0 and s.tpot_ms is not None:
        ld, r = found.load, found.h_row
        alone_ms = float(ld.alone_tpot_s(r)) * 1e3
        if alone_ms > s.tpot_ms:
            raise InfeasibleError(
                f"no fleet meets the TPOT SLO: a decode step of one sequence takes "
                f"{alone_ms:.1f} ms on {s.profile.name}, above --tpot-ms {s.tpot_ms:g}; relax "
                "--tpot-ms or choose a faster profile", binding="tpot")
    if not h_ok and found.order.size == 0:
        raise InfeasibleError(
            f"no fleet meets the SLO: {fault}; relax --slo-ms or --percentile, or choose a "
            "GPU with faster prefill", binding="prefill")
    out = {"homogeneous": FleetSummary(
        "homogeneous", None, 1.0, max(h, 0), max(h, 0) * tp,
        float(h * price) if h_ok else np.inf, (h,), bool(h_ok), fault)}
    i_pr = found.best(tables.no_compression)
    i_rf = None if i_pr is None else found.best(found.windows[:, 0] == found.windows[i_pr, 0])
    i_all = int(found.order[0]) if found.order.size else None
    for name, i in (("pool_routing", i_pr), ("retrofit", i_rf), ("fleetopt", i_all)):
        if i is None:
            out[name] = FleetSummary(name, None, 1.0, 0, 0, np.inf, (), False,
                                     "no two-pool candidate meets the SLO")
        else:
            n_s, n_l = int(found.counts[i, 0]), int(found.counts[i, 1])
            out[name] = FleetSummary(
                name, int(found.windows[i, 0]), float(found.gammas[i, 0]), n_s + n_l,
                (n_s + n_l) * tp, float(found.usd[i]), (n_s, n_l))
    return out


def _ranked(found: _Search, h_usd: float, count: int) -> list[int]:
    """The ``count`` cheapest fleets as candidate indices; ``-1`` is homogeneous, which goes
    before two-pool fleets of equal cost (for example one whose short pool is empty)."""
    ranked = [int(i) for i in found.order[:count]]
    if np.isfinite(h_usd):
        pos = int(np.searchsorted(found.usd[found.order[:count]], h_usd, side="left"))
        ranked.insert(pos, -1)
    return ranked[:count]


def candidate_plans(scenario: Scenario, count: int, tables: PlanningTables | None = None
                    ) -> list[Plan]:
    """The ``count`` cheapest fleets (homogeneous included), cheapest first.

    The first is :func:`plan`'s answer; the rest are the runners-up that
    ``fleetopt plan --verify`` falls back on when the simulator rejects a cheaper one.
    """
    t0 = time.perf_counter()
    if tables is None:
        s = scenario.validated()
        tables = PlanningTables(s, compiled=False)
    else:
        if tables.checked is None or tables.checked[0] is not scenario:
            tables.checked = (scenario, scenario.validated())  # frozen: checked once
        s = tables.checked[1]
        tables = tables.for_scenario(s)
    found = _Search.run(tables, count)
    baselines = _baselines(found)
    common = dict(
        workload=s.workload.name, rate_rps=s.rate_rps, slo_ms=s.slo_ms,
        percentile=s.percentile, model=s.profile.model,
        long_context_tokens=s.long_context_tokens, compressible_share=s.compressible_share,
        rho_max=s.rho_max, paper_compat=s.paper_compat,
        compression_latency_ms=s.compression_latency_ms, baselines=baselines,
        service_model=s.service_model, tpot_slo_ms=s.tpot_ms, tpot_percentile=s.tpot_percentile)
    n = found.windows.shape[0]
    out = []
    for i in _ranked(found, baselines["homogeneous"].usd_per_hour, count):
        if i < 0:
            pools = _build_pools(tables, found.load, (found.h_row,), (found.h_count,), 1.0)
            out.append(Plan(boundary_tokens=None, gamma=1.0, pools=pools, planner_ms=0.0,
                            **common))
        else:
            gamma = float(found.gammas[i, 0])
            pools = _build_pools(tables, found.load, (i, n + i),
                                 (int(found.counts[i, 0]), int(found.counts[i, 1])), gamma)
            out.append(Plan(boundary_tokens=int(found.windows[i, 0]), gamma=gamma, pools=pools,
                            planner_ms=0.0, **common))
    elapsed_ms = (time.perf_counter() - t0) * 1e3
    return [replace(p, planner_ms=elapsed_ms) for p in out]


def plan(scenario: Scenario, tables: PlanningTables | None = None) -> Plan:
    """Plan the cheapest fleet for ``scenario`` (docs/model.md §4) with its baselines.

    The answer is the cheapest of the two-pool co-design (best ``B`` and ``gamma``) and the
    homogeneous fleet; ``planner_ms`` is the wall time of the whole call. Raises
    :class:`InfeasibleError` naming the pool and the lengths at fault when no candidate,
    homogeneous included, can meet the SLO (prefill alone exceeds it for more than the
    allowed share of a pool's requests). ``tables`` (from an earlier plan of the same
    workload and profile) skips rebuilding the moment tables.
    """
    return candidate_plans(scenario, 1, tables)[0]
