"""Solving the fleet MILP with HiGHS, the exact re-check and the plan (docs/milp.md §6-8).

:func:`solve_model` solves a model of :func:`~.model.build_model` through Pyomo's appsi
HiGHS interface (options: docs/solver.md), grows it when user constraints push the
optimum above the pruning bound, re-checks every pool with the exact queueing model
(repairing any allocation short of instances) and returns a :class:`~fleetopt_milp.plan.Plan`.
:func:`solve` builds and solves; :func:`solve_max_rate` bisects the rate under a budget.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

import numpy as np
import pyomo.environ as pyo
from pyomo.contrib.appsi.base import TerminationCondition
from pyomo.contrib.appsi.solvers import Highs

from ..errors import FleetOptError, InfeasibleError
from ..plan import Allocation, Plan, PoolPlan
from ..poolload import PoolLoad
from ..queueing import PoolFigures, Queue, QueueMix, pool_figures
from ..sizing import min_instances
from .capacity import capacity_share
from .diagnose import diagnose
from .model import add_pools, build_model, user_constraints
from .problem import EPS_USD, FleetProblem, check_solver_limits
from .tables import ArcTables, precompute

__all__ = ["solve_model", "solve", "solve_max_rate", "HIGHS_OPTIONS", "GROW_FACTOR_LIMIT",
           "GROW_ALL_MAX_ARCS", "Allocated"]

HIGHS_OPTIONS = MappingProxyType({"presolve_rule_off": 4096 | 32768})
"""HiGHS options used by :func:`solve_model`: presolve without its *aggregator* (bit 12)
and *probing* (bit 15); measured reasons in docs/solver.md."""

MIP_ABS_GAP_USD = 1e-6
"""Absolute MIP gap (USD/h): an optimum is proven to within a millionth of a dollar."""

GROW_FACTOR_LIMIT = 16.0
GROW_ALL_MAX_ARCS = 20_000
"""When user constraints make a pruned model infeasible, :func:`solve_model` doubles the
pruning bound up to this factor times the warm start's cost, then keeps every candidate
pool if there are at most ``GROW_ALL_MAX_ARCS`` of them (else it reports the bound)."""

_SOLVED = (TerminationCondition.optimal, TerminationCondition.maxTimeLimit)


@dataclass(frozen=True)
class Allocated:
    """One allocation of a chosen pool after the exact re-check: type index, instances,
    share of the pool's requests, and the allocation's exact load at share 1."""

    type: int
    instances: int
    share: float
    load: PoolLoad


def _highs(time_limit_s, mip_rel_gap, warm, options) -> Highs:
    opt = Highs()
    opt.config.load_solution = False
    opt.config.warmstart = bool(warm)
    if time_limit_s is not None:
        opt.config.time_limit = float(time_limit_s)
    opt.config.mip_gap = float(mip_rel_gap)
    opt.highs_options = {**HIGHS_OPTIONS, "mip_abs_gap": MIP_ABS_GAP_USD,
                         **dict(options or {})}
    return opt


def _set_warm_start(model: pyo.ConcreteModel) -> bool:
    """Set every variable to the warm start of ``model.fleet_tables`` (docs/milp.md §6)."""
    t: ArcTables = model.fleet_tables
    if not t.warm_arcs:
        return False
    for var in model.component_data_objects(pyo.Var, descend_into=True):
        var.set_value(0, skip_validation=True)
    for row, ty in zip(t.warm_arcs, t.warm_types, strict=True):
        key = (int(t.arc_u[row]), int(t.arc_v[row]))
        model.x[key].set_value(1, skip_validation=True)
        if ty >= 0:
            model.y[key + (ty,)].set_value(1, skip_validation=True)
        else:
            model.w[key].set_value(1, skip_validation=True)
    return True


def _certified(tables: ArcTables, objective: float | None) -> bool:
    ub = tables.upper_bound_usd_per_hour
    return not math.isfinite(ub) or (objective is not None
                                     and objective <= ub * (1 + 1e-9) + EPS_USD)


def _grow_bound(model: pyo.ConcreteModel, objective: float | None) -> float | None:
    """The next pruning bound when user constraints cut off every fleet within the current
    one (docs/milp.md §6): the optimum found, else every one- and two-pool candidate,
    else double the bound, else no bound (small models) or None (give up)."""
    tables: ArcTables = model.fleet_tables
    ub = tables.upper_bound_usd_per_hour
    outer = not tables.problem.max_pools <= 2 and not getattr(model, "fleet_outer", False)
    if objective is not None:
        return float(objective)
    if outer:
        return ub
    if ub < GROW_FACTOR_LIMIT * max(tables.warm_usd_per_hour, EPS_USD):
        return 2.0 * ub
    if tables.arcs_total <= GROW_ALL_MAX_ARCS:
        return math.inf
    return None


def solve_model(model: pyo.ConcreteModel, *, time_limit_s: float | None = None,
                mip_rel_gap: float = 0.0, warm_start: bool = True,
                highs_options: Mapping | None = None, diagnose: bool = True) -> Plan:
    """Solve a model of :func:`build_model` (with any constraints added since) with HiGHS
    and return the fleet as a :class:`~fleetopt_milp.plan.Plan` (``method="milp"``).

    ``time_limit_s`` caps each HiGHS run, seconds (the best fleet found is returned, with
    its gap); ``mip_rel_gap`` 0 asks for a proven optimum (absolute gap
    :data:`MIP_ABS_GAP_USD`). The warm start is the best fleet :func:`precompute` found. If
    the optimum is above the bound the pools were pruned against (or the model is
    infeasible) - which only your constraints can cause - the pruning is redone with the
    larger bound (or none), the missing pools are added to ``model`` and it is solved
    again, so the answer is the optimum over all candidates (docs/milp.md §6). Every pool
    is re-checked with the exact queueing model and repaired if short
    (``plan.solver["repaired"]``, docs/milp.md §7). An infeasible model raises
    :class:`InfeasibleError` naming the binding constraint (docs/milp.md §8;
    ``diagnose=False`` skips the search for it).
    """
    check_solver_limits(time_limit_s, mip_rel_gap)
    t0 = time.perf_counter()
    rounds = []
    while True:
        tables: ArcTables = model.fleet_tables
        warm = warm_start and _set_warm_start(model)
        t_run = time.perf_counter()
        res = _highs(time_limit_s, mip_rel_gap, warm, highs_options).solve(model)
        rounds.append({"pools": len(model.fleet_pools), "seconds": time.perf_counter() - t_run,
                       "bound_usd_per_hour": tables.upper_bound_usd_per_hour})
        tc = res.termination_condition
        obj = res.best_feasible_objective if tc in _SOLVED else None
        if not (user_constraints(model) and math.isfinite(tables.upper_bound_usd_per_hour)
                and (tc == TerminationCondition.infeasible
                     or (obj is not None and not _certified(tables, obj)))):
            break
        # Only user constraints can cut off every fleet within the pruning bound.
        bound = _grow_bound(model, obj)
        if bound is None:
            break
        t_grow = time.perf_counter()
        model.fleet_outer = True  # from now on every one- and two-pool candidate is kept
        add_pools(model, precompute(tables.problem, prune=math.isfinite(bound), bound=bound,
                                    keep_outer=model.fleet_outer))
        rounds[-1]["grow_seconds"] = time.perf_counter() - t_grow
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
    if tc not in _SOLVED:
        raise FleetOptError(f"HiGHS stopped with status {tc.name}; retry with a larger "
                            "--time-limit-s or fewer candidate boundaries")
    res.solution_loader.load_vars()
    obj = float(obj)
    bound = res.best_objective_bound
    bound = float(bound) if bound is not None and math.isfinite(bound) else float("nan")
    optimal = tc == TerminationCondition.optimal
    gap = 0.0 if optimal and not math.isnan(bound) and obj - bound <= 1e-6 + 1e-9 * abs(obj) \
        else ((obj - bound) / abs(obj) if obj and not math.isnan(bound) else float("nan"))
    pools_allocs, repaired = _recheck(tables, _extract(model))
    fs = model.fleet_seconds
    solver = {
        "name": "highs", "interface": "pyomo.contrib.appsi", "status":
        "optimal" if optimal else "time_limit",
        "objective": obj, "bound": bound, "gap": gap, "seconds": seconds,
        "precompute_seconds": float(fs["precompute_s"]), "build_seconds": float(fs["build_s"]),
        "total_seconds": float(fs["precompute_s"] + fs["build_s"] + seconds),
        "warm_start_usd_per_hour": tables.warm_usd_per_hour if warm_start else None,
        "repaired": repaired,
        "user_constraints": sorted(c.name for c in user_constraints(model)),
        "rounds": rounds,
        "pruning": {
            "upper_bound_usd_per_hour": tables.upper_bound_usd_per_hour,
            "arcs_total": tables.arcs_total, "arcs_kept": len(model.fleet_pools),
            "mixed_arcs": sum(1 for i in model.fleet_pools.values() if i.mix),
            "mixing": tables.mixing, "certified": _certified(tables, obj)},
        "variables": int(sum(1 for _ in model.component_data_objects(pyo.Var))),
        "constraints": int(sum(1 for _ in model.component_data_objects(
            pyo.Constraint, active=True))),
    }
    return _plan(tables, pools_allocs, solver, solver["total_seconds"]
                      + time.perf_counter() - t0 - seconds)


def _extract(model) -> dict[int, list[tuple[int, int, float]]]:
    """The chosen pools (rows of ``model.fleet_tables``, in token order) -> their
    allocations ``(type, instances, share)``."""
    t: ArcTables = model.fleet_tables
    chosen = [key for key in model.fleet_pools if (model.x[key].value or 0) > 0.5]
    chosen.sort(key=lambda k: t.node_tokens[k[1]])
    out = {}
    for key in chosen:
        info = model.fleet_pools[key]
        if info.row < 0:
            raise FleetOptError(f"internal: pool {key} has no row in the latest tables")
        allocs = [(ty, n, 1.0) for ty, n in info.solo.items()
                  if (model.y[key + (ty,)].value or 0) > 0.5]
        if not allocs and info.mix and (model.w[key].value or 0) > 0.5:
            for ty in info.mix:
                n = int(round(pyo.value(model.n[key + (ty,)]) or 0))
                x = float(pyo.value(model.s[key + (ty,)]) or 0.0)
                if n > 0 or x > 1e-9:
                    allocs.append((ty, n, max(x, 0.0)))
        out[info.row] = allocs
    return out


def _recheck(tables: ArcTables, allocs: dict[int, list[tuple[int, int, float]]]):
    """Exact re-check of every pool at its allocations (docs/milp.md §7). Solo pools: their
    count must meet the SLO at share 1. Mixed pools: the exact capacities ``X_t(n_t)`` of
    the chosen counts must cover the pool; shares are re-split within them (the solver's
    tolerances can leave a share a hair above a capacity), and a pool they cannot cover
    gets instances added to its largest allocation until they do. Returns ``({arc:
    [Allocated]}, repairs)``."""
    pb = tables.problem
    s = pb.scenario
    mmin = int(pb.min_instances_per_pool)
    out, repairs = {}, []

    def repair(a, ty, n, need):
        repairs.append({"pool_window_tokens": tables.window_tokens(a),
                        "profile": tables.profiles[ty].name, "instances": n,
                        "needed": need})
    for a, chosen in allocs.items():
        rows = [r for r in chosen if r[1] > 0 or r[2] > 0] or chosen[:1]
        loads = [tables.load(a, ty) for ty, _, _ in rows]
        if len(rows) == 1 or not tables.busy(a):
            ty, n, _ = rows[0]
            need = int(min_instances(loads[0], s.slo_ms * 1e-3, s.percentile, s.rho_max,
                                     paper_rule=s.paper_compat)[0])
            if need > n:
                repair(a, ty, n, need)
                n = need
            n = max(n, mmin) if tables.busy(a) else n
            out[a] = [Allocated(ty, n, 1.0, loads[0])]
            continue
        counts = [n for _, n, _ in rows]
        shares = np.array([x for _, _, x in rows], dtype=float)
        shares = shares / shares.sum()
        zero = np.array([0])
        while True:
            cap = np.array([capacity_share(pb, ld, zero, np.array([n]))[0] if n > 0 else 0.0
                            for ld, n in zip(loads, counts, strict=True)])
            if cap.sum() >= 1.0 - 1e-12:
                break
            j = int(np.argmax(shares))
            repair(a, rows[j][0], counts[j], counts[j] + 1)
            counts[j] += 1
        new = np.minimum(shares, cap)
        spare = cap - new
        deficit = 1.0 - new.sum()
        if deficit > 0:
            new += spare * (deficit / spare.sum())
        new = np.minimum(new / new.sum(), cap)
        out[a] = [Allocated(ty, n, float(x), ld) for (ty, _, _), n, x, ld in
                  zip(rows, counts, new, loads, strict=True)]
    return out, repairs


_ROLES = {1: ("homogeneous",), 2: ("short", "long"), 3: ("short", "medium", "long"),
          4: ("short", "medium-1", "medium-2", "long")}


def _figures(problem: FleetProblem, queues: Queue | QueueMix) -> PoolFigures:
    """The figures of an allocation or a pool by the rule in force (docs/model.md §3)."""
    s = problem.scenario
    return pool_figures(queues, s.slo_ms * 1e-3, s.percentile, s.paper_compat)


def _pool_plan(tables: ArcTables, a: int, role: str, last: bool,
               allocated: list[Allocated]) -> PoolPlan:
    """The plan of chosen pool ``a``: each allocation's figures, and the pool's as the
    mixture of its allocations' queues (its TTFT under the paper's rule is the largest
    allocation's, the rule each allocation was sized by)."""
    pb = tables.problem
    s = pb.scenario
    rate = s.rate_rps * float(tables.mass[a])
    allocs, queues = [], []
    for al in allocated:
        prof = tables.profiles[al.type]
        load, n = al.load, al.instances
        queue = load.queue(0, n, al.share)
        queues.append(queue)
        fig = _figures(pb, queue) if n > 0 and queue.offered_load > 0 else None
        allocs.append(Allocation(
            profile=prof.name, gpu=prof.gpu, model=prof.model, tp=prof.tp, instances=n,
            load_share=al.share, rate_rps=rate * al.share,
            slots_per_instance=int(load.slots_per_instance[0]),
            usd_per_gpu_hour=prof.usd_per_gpu_hour, usd_per_hour=n * prof.usd_per_instance_hour,
            mean_service_s=float(load.mean_service_s[0]), cs2=float(load.cs2[0]),
            utilization=fig.utilization if fig else 0.0,
            p99_ttft_ms=fig.ttft_ms if fig else 0.0,
            slo_miss_share=fig.slo_miss_share if fig else 0.0))
    live = [al.instances > 0 and al.share > 0 for al in allocated]
    pool = _figures(pb, QueueMix(tuple(queues), tuple(
        al.share if ok else 0.0 for al, ok in zip(allocated, live, strict=True))))
    ttft = pool.ttft_ms if sum(live) > 1 and not s.paper_compat else \
        max((al.p99_ttft_ms for al in allocs), default=0.0)
    tpot = {}
    if any(al.load.load_dependent for al in allocated):  # docs/engine.md §2
        from ..engine_model import pool_tpot_fields

        tpot = pool_tpot_fields(queues, [al.share if ok else 0.0 for al, ok in
                                         zip(allocated, live, strict=True)],
                                s.tpot_percentile, s.tpot_ms)
    u, v = int(tables.arc_u[a]), int(tables.arc_v[a])
    return PoolPlan(
        role=role, lo_tokens=int(tables.node_tokens[u]),
        context_tokens=int(tables.node_tokens[v]),
        gamma=1.0 if last else float(tables.node_gamma[v]), allocations=tuple(allocs),
        rate_rps=rate, compressed_in_rps=s.rate_rps * float(tables.compressed_in[a]),
        utilization=pool.utilization, p99_ttft_ms=ttft, slo_miss_share=pool.slo_miss_share,
        **tpot)


def _plan(tables: ArcTables, pools_allocs: dict[int, list[Allocated]], solver: dict,
          seconds: float) -> Plan:
    """The :class:`Plan` of the chosen pools (in token order), with warnings for repairs
    and an uncertified optimum."""
    s = tables.problem.scenario
    arcs = list(pools_allocs)
    roles = _ROLES[len(arcs)]
    pools = [_pool_plan(tables, a, roles[k], k == len(arcs) - 1, pools_allocs[a])
             for k, a in enumerate(arcs)]
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
        solver=solver, service_model=s.service_model, tpot_slo_ms=s.tpot_ms,
        tpot_percentile=s.tpot_percentile,
        extra={"boundaries_tokens": bounds, "gammas": [p.gamma for p in pools[:-1]],
               "baseline_profiles": dict(tables.baseline_profiles)})


def _diagnose(model, time_limit_s, highs_options) -> None:
    def resolve(m):
        res = _highs(time_limit_s, 0.0, False, highs_options).solve(m)
        if res.termination_condition in _SOLVED and res.best_feasible_objective is not None:
            res.solution_loader.load_vars()
            return float(res.best_feasible_objective)
        return None
    diagnose(model, resolve, user_constraints(model))


def solve(problem: FleetProblem, *, time_limit_s: float | None = None, prune: bool = True,
          mip_rel_gap: float = 0.0, warm_start: bool = True) -> Plan:
    """Cheapest fleet for ``problem``: :func:`build_model` then :func:`solve_model`."""
    check_solver_limits(time_limit_s, mip_rel_gap)
    return solve_model(build_model(problem, prune), time_limit_s=time_limit_s,
                       mip_rel_gap=mip_rel_gap, warm_start=warm_start)


def solve_max_rate(problem: FleetProblem, budget_usd_per_hour: float | None = None, *,
                   rel_tol: float = 0.01, time_limit_s: float | None = None,
                   prune: bool = True, max_steps: int = 60) -> Plan:
    """The highest arrival rate a fleet within the budget can carry within the SLO, and
    that fleet (docs/milp.md §5).

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
    if not (math.isfinite(rel_tol) and 0 < rel_tol < 1):
        raise FleetOptError(f"rel_tol={rel_tol!r}: the rate tolerance must be in (0, 1)")
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 2:
        raise FleetOptError(f"max_steps={max_steps!r}: the rate search needs at least 2 "
                            "MILPs")
    check_solver_limits(time_limit_s, 0.0)
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
