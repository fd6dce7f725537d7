"""The analytical FleetOpt planner: the cheapest two-pool fleet with Compress-and-Route.

docs/model.md §4. For a workload, an arrival rate, a TTFT SLO and one serving profile,
the planner evaluates every candidate boundary ``B`` (CDF breakpoints plus a grid) jointly
with every ``gamma`` of a grid, sizes both pools with the exact queueing model
(:func:`~fleetopt_milp.queueing.min_instances`) and returns the cheapest, together with
the baselines: homogeneous (one pool at the long window), pool routing (best ``B`` at
``gamma = 1``) and retrofit (C&R added at pool routing's ``B``).

The search is vectorised: one :class:`~fleetopt_milp.demand.MomentTable` gives the exact
moments of every candidate pool, and one vectorised ``min_instances`` call sizes them all.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from .demand import MomentTable, PoolParts
from .errors import FleetOptError, InfeasibleError
from .plan import Allocation, FleetSummary, Plan, PoolPlan
from .poolload import PoolLoad
from .queueing import pool_figures
from .scenario import Scenario, band_end_tokens, default_boundaries, gamma_grid
from .service import service_model
from .sizing import min_instances

__all__ = ["plan", "candidate_plans",
           "plan_candidates", "size_pools", "PlanningTables"]


class PlanningTables:
    """The exact moment tables for one scenario, built once and reused by the search.

    They depend on the workload, the profile, the candidate boundaries and gammas, the long
    window, the compression latency and the length split, not on the rate, the SLO or
    ``p_c``: a sweep over those reuses one :class:`PlanningTables` (see :meth:`for_scenario`).
    """

    def __init__(self, scenario: Scenario):
        s = scenario
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
        # p_c (docs/model.md §4): none of it depends on the rate, the SLO or p_c.
        self.windows, self.gammas_cand = _candidates(self.boundaries, self.gammas,
                                                     s.long_context_tokens)
        self.parts = self.table.pool_parts(self.windows, self.gammas_cand)
        self.h_windows = np.array([[s.long_context_tokens]])
        self.h_parts = self.table.pool_parts(self.h_windows, np.zeros((1, 0)))

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


def _loads(tables: PlanningTables, parts: list[PoolParts], windows: np.ndarray
           ) -> list[PoolLoad]:
    """Each pool's load under the scenario's service model (docs/model.md §2-4)."""
    s = tables.scenario
    model = service_model(s.service_model)
    loads = [model.pool_load(p.at(s.compressible_share), tables.table, windows[:, k],
                             s.rate_rps) for k, p in enumerate(parts)]
    if s.tpot_ms is not None:  # the engine model's own SLO (docs/engine.md §2)
        loads = [ld.with_tpot_slo(s.tpot_ms * 1e-3, s.tpot_percentile) for ld in loads]
    return loads


def _counts(tables: PlanningTables, loads: list[PoolLoad]) -> np.ndarray:
    """Minimum instances of every pool of every candidate, one sizing call: ``(n, K)``."""
    s = tables.scenario
    counts = min_instances(PoolLoad.concat(loads), s.slo_ms * 1e-3, s.percentile, s.rho_max,
                           paper_rule=s.paper_compat)
    return counts.reshape(len(loads), -1).T


def size_pools(tables: PlanningTables, windows: np.ndarray, gammas: np.ndarray
               ) -> tuple[list[PoolLoad], np.ndarray]:
    """Loads and minimum instances of every pool of every candidate routing.

    ``windows`` ``(n, K)``, ``gammas`` ``(n, K-1)``. Returns the pool loads and an
    ``(n, K)`` int array of instances (``-1``: the pool cannot meet the SLO at any size).
    """
    loads = _loads(tables, tables.table.pool_parts(windows, gammas), windows)
    return loads, _counts(tables, loads)


def _candidates(boundaries: np.ndarray, gammas: np.ndarray, long_tokens: int):
    """All two-pool routings ``(B, gamma)`` with ``floor(gamma B) <= long window``."""
    bb, gg = np.meshgrid(boundaries, gammas, indexing="ij")
    bb, gg = bb.ravel(), gg.ravel()
    keep = band_end_tokens(bb, gg) <= long_tokens
    bb, gg = bb[keep], gg[keep]
    windows = np.stack([bb, np.full_like(bb, long_tokens)], axis=1)
    return windows, gg[:, None]


def _build_pools(tables: PlanningTables, loads: list[PoolLoad], i: int, counts: np.ndarray,
                 windows: np.ndarray, gammas: np.ndarray, roles: tuple[str, ...]
                 ) -> tuple[PoolPlan, ...]:
    s = tables.scenario
    prof = s.profile
    pools = []
    for k, load in enumerate(loads):
        n = int(counts[i, k])
        queue = load.queue(i, max(n, 0))
        fig = pool_figures(queue, s.slo_ms * 1e-3, s.percentile, s.paper_compat)
        tpot = {}
        if load.load_dependent and n > 0:  # the engine model's TPOT (docs/engine.md §2)
            from .engine_model import tpot_figures

            tf = tpot_figures([queue], [1.0], s.tpot_percentile, s.tpot_ms)
            tpot = dict(mean_tpot_ms=tf.mean_ms, tpot_ms=tf.at_percentile_ms,
                        mean_batch=queue.mean_batch)
        rate = float(load.rate_rps[i])
        alloc = Allocation(
            profile=prof.name, gpu=prof.gpu, model=prof.model, tp=prof.tp, instances=n,
            load_share=1.0, rate_rps=rate, slots_per_instance=int(load.slots_per_instance[i]),
            usd_per_gpu_hour=prof.usd_per_gpu_hour, usd_per_hour=n * prof.usd_per_instance_hour,
            mean_service_s=float(load.mean_service_s[i]), cs2=float(load.cs2[i]),
            utilization=fig.utilization, p99_ttft_ms=fig.ttft_ms,
            slo_miss_share=fig.slo_miss_share)
        comp_in = 0.0
        if k < len(loads) - 1 and s.compressible_share > 0:
            cm = tables.table.band_compressed(windows[i, k], gammas[i, k])
            comp_in = float(cm.mass[0]) * s.compressible_share * s.rate_rps
        pools.append(PoolPlan(
            role=roles[k], lo_tokens=0 if k == 0 else int(windows[i, k - 1]),
            context_tokens=int(windows[i, k]),
            gamma=float(gammas[i, k]) if k < len(loads) - 1 else 1.0,
            allocations=(alloc,), rate_rps=rate, compressed_in_rps=comp_in,
            utilization=fig.utilization, p99_ttft_ms=fig.ttft_ms,
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


def plan_candidates(scenario: Scenario, tables: PlanningTables | None = None):
    """Every two-pool candidate, sized: ``(windows, gammas, counts, usd_per_hour, loads)``.

    ``usd_per_hour`` is ``inf`` where a pool cannot meet the SLO at any size. Sorted by
    nothing: index with ``np.argsort(usd_per_hour)`` for the cheapest first.
    """
    tables = tables or PlanningTables(scenario.validated())
    windows, gammas = tables.windows, tables.gammas_cand
    loads = _loads(tables, tables.parts, windows)
    counts = _counts(tables, loads)
    price = scenario.profile.usd_per_instance_hour
    usd = np.where(np.all(counts >= 0, axis=1), counts.sum(axis=1) * price, np.inf)
    return windows, gammas, counts, usd, loads


def _best(usd: np.ndarray, counts: np.ndarray, gammas: np.ndarray, windows: np.ndarray,
          mask: np.ndarray) -> int | None:
    """Index of the cheapest feasible candidate under ``mask``; ties: fewer instances, smaller
    gamma (less compression), smaller boundary."""
    idx = np.flatnonzero(mask & np.isfinite(usd))
    if idx.size == 0:
        return None
    order = np.lexsort((windows[idx, 0], gammas[idx, 0], counts[idx].sum(axis=1), usd[idx]))
    return int(idx[order[0]])


def _search(s: Scenario, tables: PlanningTables):
    """Size every candidate and the homogeneous baseline; return them with the baselines."""
    windows, gammas, counts, usd, loads = plan_candidates(s, tables)
    h_loads = _loads(tables, tables.h_parts, tables.h_windows)
    h_counts = _counts(tables, h_loads)
    price = s.profile.usd_per_instance_hour
    tp = s.profile.tp
    h_ok = h_counts[0, 0] >= 0
    baselines = {
        "homogeneous": FleetSummary(
            "homogeneous", None, 1.0, int(max(h_counts[0, 0], 0)),
            int(max(h_counts[0, 0], 0)) * tp, float(h_counts[0, 0] * price) if h_ok else np.inf,
            (int(h_counts[0, 0]),), bool(h_ok),
            "" if h_ok else _prefill_fault(tables, h_loads[0], 0, "homogeneous"))}
    g1 = np.isclose(gammas[:, 0], 1.0)
    i_pr = _best(usd, counts, gammas, windows, g1)
    i_all = _best(usd, counts, gammas, windows, np.ones_like(g1))
    i_rf = None
    if i_pr is not None:
        i_rf = _best(usd, counts, gammas, windows, windows[:, 0] == windows[i_pr, 0])
    for name, i in (("pool_routing", i_pr), ("retrofit", i_rf), ("fleetopt", i_all)):
        if i is None:
            baselines[name] = FleetSummary(name, None, 1.0, 0, 0, np.inf, (), False,
                                           "no two-pool candidate meets the SLO")
        else:
            baselines[name] = FleetSummary(
                name, int(windows[i, 0]), float(gammas[i, 0]), int(counts[i].sum()),
                int(counts[i].sum()) * tp, float(usd[i]), tuple(int(x) for x in counts[i]))
    if not np.isfinite(usd).any() and not h_ok and s.tpot_ms is not None:
        hl = h_loads[0]
        alone_ms = float(hl.w_s[0] + hl.step_cost_s[0] / hl.mean_iterations[0]) * 1e3
        if alone_ms > s.tpot_ms:
            raise InfeasibleError(
                f"no fleet meets the TPOT SLO: a decode step of one sequence takes "
                f"{alone_ms:.1f} ms on {s.profile.name}, above --tpot-ms {s.tpot_ms:g}; relax "
                "--tpot-ms or choose a faster profile", binding="tpot")
    if not np.isfinite(usd).any() and not h_ok:
        raise InfeasibleError(
            "no fleet meets the SLO: " + _prefill_fault(tables, h_loads[0], 0, "homogeneous")
            + "; relax --slo-ms or --percentile, or choose a GPU with faster prefill",
            binding="prefill")
    return windows, gammas, counts, usd, loads, h_loads, h_counts, baselines


def _ranked(usd, counts, gammas, windows, h_usd) -> list[int]:
    """Candidate indices cheapest first (ties as :func:`_best`); ``-1`` is homogeneous, which
    goes before two-pool fleets of equal cost (for example one whose short pool is empty)."""
    ok = np.flatnonzero(np.isfinite(usd))
    order = ok[np.lexsort((windows[ok, 0], gammas[ok, 0], counts[ok].sum(axis=1), usd[ok]))]
    ranked = [int(i) for i in order]
    if np.isfinite(h_usd):
        pos = int(np.searchsorted(usd[order], h_usd, side="left"))  # the simpler fleet wins ties
        ranked.insert(pos, -1)
    return ranked


def candidate_plans(scenario: Scenario, count: int, tables: PlanningTables | None = None
                    ) -> list[Plan]:
    """The ``count`` cheapest fleets (homogeneous included), cheapest first.

    The first is :func:`plan`'s answer; the rest are the runners-up that
    ``fleetopt plan --verify`` falls back on when the simulator rejects a cheaper one.
    """
    t0 = time.perf_counter()
    s = scenario.validated()
    tables = PlanningTables(s) if tables is None else tables.for_scenario(s)
    windows, gammas, counts, usd, loads, h_loads, h_counts, baselines = _search(s, tables)
    common = dict(
        workload=s.workload.name, rate_rps=s.rate_rps, slo_ms=s.slo_ms,
        percentile=s.percentile, model=s.profile.model,
        long_context_tokens=s.long_context_tokens, compressible_share=s.compressible_share,
        rho_max=s.rho_max, paper_compat=s.paper_compat,
        compression_latency_ms=s.compression_latency_ms, baselines=baselines,
        service_model=s.service_model, tpot_slo_ms=s.tpot_ms, tpot_percentile=s.tpot_percentile)
    out = []
    for i in _ranked(usd, counts, gammas, windows, baselines["homogeneous"].usd_per_hour):
        if len(out) >= count:
            break
        if i < 0:
            pools = _build_pools(tables, h_loads, 0, h_counts, np.array([[
                s.long_context_tokens]]), np.zeros((1, 0)), ("homogeneous",))
            out.append(Plan(boundary_tokens=None, gamma=1.0, pools=pools, planner_ms=0.0,
                            **common))
        else:
            pools = _build_pools(tables, loads, i, counts, windows, gammas, ("short", "long"))
            out.append(Plan(boundary_tokens=int(windows[i, 0]), gamma=float(gammas[i, 0]),
                            pools=pools, planner_ms=0.0, **common))
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
