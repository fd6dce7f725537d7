"""Tests of the fleet MILP (fleetopt_milp.milp): agreement with the analytical planner and
with brute-force enumeration, constraints, infeasibility messages, invariants, value."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace
from functools import cache

import numpy as np
import pyomo.environ as pyo
import pytest

from fleetopt_milp.demand import MomentTable, pool_load
from fleetopt_milp.errors import FleetOptError, InfeasibleError
from fleetopt_milp.hardware import load_catalog, resolve_profile
from fleetopt_milp.milp import (
    FleetProblem,
    build_model,
    capacity_share,
    solve,
    solve_max_rate,
    solve_model,
)
from fleetopt_milp.planner import plan as analytical_plan
from fleetopt_milp.queueing import PoolLoad, min_instances
from fleetopt_milp.scenario import Scenario, gamma_grid
from fleetopt_milp.workload import load_workload


@cache
def _catalog():
    return load_catalog()


@cache
def _wl(name):
    return load_workload(name)


def _prof(name, model=None):
    return resolve_profile(_catalog(), name, model)


def _roofline(*gpus):
    return tuple(_prof(g, "Llama-3-70B") for g in gpus)


def _exact_ok(plan, problem):
    """Every allocation of ``plan`` meets the SLO at its share (independent re-check with
    the demand tables and min_instances), shares sum to 1, and the price adds up."""
    s = problem.scenario
    profs = {p.name: p for p in problem.types}
    windows = [p.context_tokens for p in plan.pools]
    gammas = [p.gamma for p in plan.pools[:-1]]
    total = 0.0
    for k, pool in enumerate(plan.pools):
        assert sum(a.load_share for a in pool.allocations) == pytest.approx(1.0, abs=1e-9)
        for a in pool.allocations:
            prof = profs[a.profile]
            tab = MomentTable(s.workload, prof, windows[:-1], sorted(set(gammas) | {1.0}),
                              windows[-1], s.compression_latency_ms * 1e-3)
            m = tab.pools(np.array([windows]), np.array([gammas]).reshape(1, -1),
                          s.compressible_share)[k]
            load = pool_load(m, tab, windows[k], s.rate_rps * a.load_share)
            need = int(min_instances(load, s.slo_ms * 1e-3, s.percentile, s.rho_max,
                                     paper_rule=s.paper_compat)[0])
            assert 0 <= need <= a.instances, (pool.role, a.profile, need, a.instances)
            total += a.instances * prof.usd_per_instance_hour
    assert plan.usd_per_hour == pytest.approx(total)
    return True


# -- agreement with the analytical planner ------------------------------------------------

PLANNER_CASES = [
    ("azure-2023", "paper-H100", 65536),
    ("lmsys", "paper-H100", 65536),
    ("agent-heavy", "paper-H100", 65536),
    ("azure-code", "paper-A100", 65536),
    ("sharegpt", "paper-A100", 65536),
    ("arxiv-summarization", "paper-H100", 65536),
    ("azure-2023-cdf", "paper-A100", 65536),
    ("mooncake-conversation", "paper-H100", 131072),
]


@pytest.mark.parametrize("workload,profile,long", PLANNER_CASES)
def test_one_type_two_pools_matches_the_analytical_planner(workload, profile, long):
    sc = Scenario(_wl(workload), _prof(profile), 1000.0, 500.0, long_context_tokens=long)
    ref = analytical_plan(sc)
    got = solve(FleetProblem(sc))
    assert got.method == "milp"
    assert got.solver["status"] == "optimal"
    assert got.usd_per_hour == pytest.approx(ref.usd_per_hour, abs=1e-6)
    assert got.solver["objective"] == pytest.approx(ref.usd_per_hour, abs=1e-6)
    assert got.solver["gap"] == 0.0
    assert got.baselines["fleetopt"].usd_per_hour == pytest.approx(
        ref.baselines["fleetopt"].usd_per_hour)
    assert got.baselines["homogeneous"].usd_per_hour == pytest.approx(
        ref.baselines["homogeneous"].usd_per_hour)
    assert got.solver["repaired"] == []


# -- brute force --------------------------------------------------------------------------

BF_BOUNDS = (1024, 2048, 4096, 8192)
BF_LONG = 16384


def _bf_problem(**kw):
    wl = _wl("azure-code").truncated(BF_LONG)
    sc = Scenario(wl, _prof("paper-H100"), 600.0, 500.0, long_context_tokens=BF_LONG,
                  gamma_max=1.5, gamma_steps=2, boundaries_tokens=BF_BOUNDS)
    return FleetProblem(sc, profiles=(_prof("paper-H100"), _prof("paper-A100")), max_pools=3,
                        **kw)


def _bf_pools(problem):
    """Every path of up to K pools over (B, gamma) nodes, each pool sized for each type with
    MomentTable.pools (the K-pool routing of demand.py, independent of the MILP's arcs)."""
    s = problem.scenario
    gammas = gamma_grid(s.gamma_max, s.gamma_steps)
    nodes = [(b, g) for b in BF_BOUNDS for g in gammas if math.floor(b * g + 1e-9) <= BF_LONG]
    paths = [()]
    for k in range(1, problem.max_pools):
        for combo in itertools.combinations(nodes, k):
            bs = [b for b, _ in combo]
            if bs != sorted(set(bs)):
                continue
            ends = [math.floor(b * g + 1e-9) for b, g in combo]
            nxt = bs[1:] + [BF_LONG]
            if all(e <= w for e, w in zip(ends, nxt, strict=True)):
                paths.append(combo)
    out = []
    for path in paths:
        windows = np.array([[b for b, _ in path] + [BF_LONG]])
        gm = np.array([[g for _, g in path]]).reshape(1, -1)
        per_type = []
        for prof in problem.types:
            tab = MomentTable(s.workload, prof, BF_BOUNDS, gammas, BF_LONG)
            loads = [pool_load(m, tab, windows[0, k], s.rate_rps)
                     for k, m in enumerate(tab.pools(windows, gm, s.compressible_share))]
            per_type.append(loads)
        out.append((path, per_type))
    return out


def _count(problem, load):
    s = problem.scenario
    return int(min_instances(load, s.slo_ms * 1e-3, s.percentile, s.rho_max)[0])


def test_matches_brute_force_enumeration_one_type_per_pool():
    pb = _bf_problem(mixing="none")
    price = [p.usd_per_instance_hour for p in pb.types]
    best = math.inf
    for path, per_type in _bf_pools(pb):
        cost = 0.0
        for k in range(len(path) + 1):
            options = [_count(pb, per_type[t][k]) * price[t] for t in range(len(price))
                       if _count(pb, per_type[t][k]) >= 0]
            cost += min(options) if options else math.inf
        best = min(best, cost)
    got = solve(pb, prune=False)
    assert got.usd_per_hour == pytest.approx(best)
    assert solve(pb).usd_per_hour == pytest.approx(best)  # pruning keeps the optimum
    assert _exact_ok(got, pb)


def test_matches_brute_force_with_an_availability_cap():
    pb = _bf_problem(mixing="none")
    free = solve(pb)
    used = {}
    for a in (a for p in free.pools for a in p.allocations):
        used[a.gpu] = used.get(a.gpu, 0) + a.gpus
    gpu = max(used, key=used.get)
    assert used[gpu] >= 16
    cap = used[gpu] - 8
    pb = replace(pb, max_gpus={gpu: cap})
    types = pb.types
    best = math.inf
    for path, per_type in _bf_pools(pb):
        n = len(path) + 1
        for assign in itertools.product(range(len(types)), repeat=n):
            counts = [_count(pb, per_type[t][k]) for k, t in enumerate(assign)]
            if min(counts) < 0:
                continue
            n_gpu = sum(c * types[t].tp for c, t in zip(counts, assign, strict=True)
                        if types[t].gpu == gpu)
            if n_gpu <= cap:
                best = min(best, sum(c * types[t].usd_per_instance_hour
                                     for c, t in zip(counts, assign, strict=True)))
    got = solve(pb, prune=False)
    assert got.usd_per_hour == pytest.approx(best)
    assert got.usd_per_hour > free.usd_per_hour
    assert sum(a.gpus for p in got.pools for a in p.allocations if a.gpu == gpu) <= cap


def _true_capacity(problem, load, k):
    """Largest share k instances carry, by bisection on min_instances alone."""
    lo, hi = 0.0, 1.0
    while _count(problem, _scaled(load, hi)) <= k and hi < 64:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _count(problem, _scaled(load, mid)) <= k else (lo, mid)
    return lo


def _scaled(load, x):
    return PoolLoad(load.rate_rps * x, load.mean_service_s, load.cs2,
                    load.slots_per_instance, load.floor_s, load.floor_prob)


def test_mixed_pools_never_undercount_and_bracket_the_true_mixed_optimum():
    """True optimum with continuous shares (two types per pool, capacities by bisection on
    min_instances) <= MILP with full mixing <= MILP with filler mixing <= one type per
    pool; the MILP's fleets meet the SLO exactly."""
    pb = _bf_problem()
    price = [p.usd_per_instance_hour for p in pb.types]
    true_best = math.inf
    for path, per_type in _bf_pools(pb):
        cost = 0.0
        for k in range(len(path) + 1):
            loads = [per_type[t][k] for t in range(2)]
            n1 = [_count(pb, ld) for ld in loads]
            opts = [n1[t] * price[t] for t in range(2) if n1[t] >= 0]
            if min(n1) >= 1:
                caps = [[_true_capacity(pb, loads[t], n) for n in range(n1[t] + 1)]
                        for t in range(2)]
                for a, b in itertools.product(range(n1[0] + 1), range(n1[1] + 1)):
                    if caps[0][a] + caps[1][b] >= 1.0:
                        opts.append(a * price[0] + b * price[1])
            cost += min(opts) if opts else math.inf
        true_best = min(true_best, cost)
    full = solve(replace(pb, mixing="full"), prune=False)
    filler = solve(replace(pb, mixing="filler"))
    none = solve(replace(pb, mixing="none"))
    assert true_best <= full.usd_per_hour + 1e-6
    assert full.usd_per_hour <= filler.usd_per_hour + 1e-6
    assert filler.usd_per_hour <= none.usd_per_hour + 1e-6
    assert full.usd_per_hour < none.usd_per_hour  # mixing pays on this instance
    assert full.usd_per_hour <= true_best * 1.02
    for plan in (full, filler):
        assert plan.solver["repaired"] == []
        assert _exact_ok(plan, pb)


def test_capacity_share_is_the_inverse_of_min_instances():
    pb = _bf_problem()
    _, per_type = _bf_pools(replace(pb, max_pools=1))[0]
    load = per_type[0][0]
    ks = np.arange(1, 9)
    x = capacity_share(pb, PoolLoad(*(np.repeat(np.atleast_1d(getattr(load, f)), ks.size,
                                                 axis=0) for f in
                                      ("rate_rps", "mean_service_s", "cs2",
                                       "slots_per_instance")), load.floor_s,
                                    np.repeat(load.floor_prob, ks.size, axis=0)),
                       np.arange(ks.size), ks)
    assert np.all(np.diff(x / ks) >= -1e-12)  # capacity per instance never falls
    for k, xk in zip(ks, x, strict=True):
        assert _count(pb, _scaled(load, xk)) <= k
        assert _count(pb, _scaled(load, xk * (1 + 1e-6))) > k


# -- constraints and infeasibility ---------------------------------------------------------


def _azure(rate=1000.0, slo=500.0, grid=None, **kw):
    """azure-2023 on roofline H100/A100/L40S; ``grid="small"``: six boundaries and three
    gammas (every property tested on it holds for any fixed candidate set)."""
    profs = _roofline("H100", "A100", "L40S")
    extra = {} if grid is None else {"gamma_steps": 3,
                                     "boundaries_tokens": (512, 1024, 2048, 4096, 8192, 16384)}
    sc = Scenario(_wl("azure-2023"), profs[0], rate, slo, **extra)
    return FleetProblem(sc, profiles=profs, **kw)


def test_budget_below_the_cheapest_fleet_names_both_amounts():
    cheapest = solve(_azure()).usd_per_hour
    with pytest.raises(InfeasibleError) as err:
        solve(_azure(budget_usd_per_hour=cheapest - 10.0))
    assert err.value.binding == "budget"
    msg = str(err.value)
    assert f"${cheapest - 10.0:,.2f}/h" in msg
    assert f"${cheapest:,.2f}/h" in msg
    assert "\n" not in msg
    ok = solve(_azure(budget_usd_per_hour=cheapest))
    assert ok.usd_per_hour == pytest.approx(cheapest)


def test_availability_cap_is_respected_and_costs_more():
    free = solve(_azure())
    a100 = sum(a.gpus for p in free.pools for a in p.allocations if a.gpu == "A100-80GB")
    assert a100 >= 40
    capped = solve(_azure(max_gpus={"A100-80GB": 40}))
    used = sum(a.gpus for p in capped.pools for a in p.allocations if a.gpu == "A100-80GB")
    assert used <= 40
    assert capped.usd_per_hour > free.usd_per_hour
    assert capped.solver["status"] == "optimal"
    assert capped.solver["pruning"]["mixing"] == "full"
    assert _exact_ok(capped, _azure(max_gpus={"A100-80GB": 40}))


def test_availability_cap_too_tight_names_the_cap():
    pb = _azure(max_gpus={"H100-80GB": 0, "L40S-48GB": 0}, grid="small")
    with pytest.raises(InfeasibleError) as err:
        solve(pb)
    assert err.value.binding == "availability"
    assert "H100-80GB GPUs (cap 0)" in str(err.value) and "--max-gpus" in str(err.value)


def test_slo_that_no_gpu_meets_is_infeasible_with_a_reason():
    sc = Scenario(_wl("agent-heavy"), _roofline("A100")[0], 100.0, 500.0)
    with pytest.raises(InfeasibleError) as err:
        solve(FleetProblem(sc, profiles=_roofline("A100", "L40S")))
    assert err.value.binding == "prefill"  # as the planner names it
    assert "prefill" in str(err.value) and "--slo-ms" in str(err.value)


def _small_k3(**kw):
    return _azure(max_pools=3, grid="small", **kw)


def test_user_constraint_added_between_build_and_solve():
    pb = _small_k3()
    free = solve(pb)
    a100 = sum(a.gpus for p in free.pools for a in p.allocations if a.gpu == "A100-80GB")
    assert a100 > 64
    plans = []
    for prune in (True, False):
        model = build_model(pb, prune=prune)
        model.rack = pyo.Constraint(expr=model.gpus["A100-80GB"] <= 64)
        model.two_pools = pyo.Constraint(expr=model.n_pools <= 2)
        plans.append(solve_model(model))
    plan, full = plans
    assert plan.solver["user_constraints"] == ["rack", "two_pools"]
    assert len(plan.pools) <= 2
    assert sum(a.gpus for p in plan.pools for a in p.allocations if a.gpu == "A100-80GB") <= 64
    assert plan.usd_per_hour > free.usd_per_hour
    # Pruned for the unconstrained optimum, the model was grown until the answer was
    # certified; it is the optimum of the unpruned model with the same constraints.
    assert len(plan.solver["rounds"]) >= 2
    assert plan.solver["pruning"]["certified"]
    assert plan.usd_per_hour == pytest.approx(full.usd_per_hour)
    assert _exact_ok(plan, pb)


def test_user_constraint_on_the_full_grid():
    """A mild rack limit on the default grid (82,000 candidate pools) grows the pruned
    model a little and certifies the answer."""
    pb = _azure(max_pools=3)
    free = solve(pb)
    a100 = sum(a.gpus for p in free.pools for a in p.allocations if a.gpu == "A100-80GB")
    model = build_model(pb)
    model.rack = pyo.Constraint(expr=model.gpus["A100-80GB"] <= a100 - 8)
    plan = solve_model(model)
    assert sum(a.gpus for p in plan.pools for a in p.allocations
               if a.gpu == "A100-80GB") <= a100 - 8
    assert plan.usd_per_hour > free.usd_per_hour
    assert plan.solver["pruning"]["certified"]
    assert _exact_ok(plan, pb)


def test_user_constraint_that_nothing_meets_is_named():
    model = build_model(_azure(grid="small"))
    model.impossible = pyo.Constraint(expr=model.usd_per_hour <= 1.0)
    with pytest.raises(InfeasibleError) as err:
        solve_model(model)
    assert err.value.binding == "user"
    assert "impossible" in str(err.value)


def test_min_instances_per_pool():
    plan = solve(_small_k3(min_instances_per_pool=3))
    busy = [p for p in plan.pools if p.rate_rps > 0]
    assert busy and all(p.instances >= 3 for p in busy)
    assert plan.usd_per_hour >= solve(_small_k3()).usd_per_hour


BAD_FIELDS = [
    ({"max_pools": 5}, "max_pools=5.*--pools"),
    ({"max_pools": 0}, "max_pools=0.*--pools"),
    ({"max_pools": 2.5}, "max_pools=2.5.*--pools"),
    ({"max_pools": True}, "max_pools=True.*--pools"),
    ({"max_gpus": {"B200-192GB": 8}}, r"max_gpus\['B200-192GB'\].*--max-gpus"),
    ({"max_gpus": {"A100-80GB": -1}}, r"max_gpus\['A100-80GB'\]=-1.*--max-gpus"),
    ({"max_gpus": {"A100-80GB": 9.5}}, r"max_gpus\['A100-80GB'\]=9.5.*--max-gpus"),
    ({"max_gpus": {"A100-80GB": float("nan")}}, r"max_gpus\['A100-80GB'\]=nan"),
    ({"max_total_gpus": -8}, "max_total_gpus=-8.*--max-total-gpus"),
    ({"max_total_gpus": float("inf")}, "max_total_gpus=inf.*--max-total-gpus"),
    ({"budget_usd_per_hour": float("nan")}, "budget_usd_per_hour=nan.*--budget-usd-per-hour"),
    ({"budget_usd_per_hour": float("inf")}, "budget_usd_per_hour=inf"),
    ({"budget_usd_per_hour": 0.0}, "budget_usd_per_hour=0.0"),
    ({"min_instances_per_pool": -1}, "min_instances_per_pool=-1.*--min-instances"),
    ({"min_instances_per_pool": 1.5}, "min_instances_per_pool=1.5.*--min-instances"),
    ({"mixing": "some"}, "mixing='some'.*--mix"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_FIELDS,
                         ids=[next(iter(f)) + "=" + repr(next(iter(f.values())))
                              for f, _ in BAD_FIELDS])
def test_bad_fields_get_one_line_errors_naming_field_and_option(fields, message):
    with pytest.raises(FleetOptError, match=message) as err:
        _azure(**fields).validated()
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("limit", [float("nan"), -1.0, 0.0, float("inf"), "10"])
def test_time_limit_must_be_a_positive_finite_number(limit):
    with pytest.raises(FleetOptError, match=r"time_limit_s=.*--time-limit-s"):
        solve(_azure(grid="small"), time_limit_s=limit)
    model = build_model(_azure(grid="small", max_pools=1))
    with pytest.raises(FleetOptError, match="time_limit_s"):
        solve_model(model, time_limit_s=limit)
    with pytest.raises(FleetOptError, match="mip_rel_gap"):
        solve_model(model, mip_rel_gap=float("nan"))


def test_rate_objective_needs_a_budget_and_sane_search_settings():
    with pytest.raises(FleetOptError, match="budget"):
        solve_max_rate(_azure())
    for budget in (float("nan"), -5.0, float("inf")):
        with pytest.raises(FleetOptError, match="budget_usd_per_hour"):
            solve_max_rate(_azure(), budget)
    with pytest.raises(FleetOptError, match="rel_tol"):
        solve_max_rate(_azure(), 1000.0, rel_tol=float("nan"))
    with pytest.raises(FleetOptError, match="max_steps"):
        solve_max_rate(_azure(), 1000.0, max_steps=0)
    with pytest.raises(FleetOptError, match="time_limit_s"):
        solve_max_rate(_azure(), 1000.0, time_limit_s=float("nan"))


# -- invariants -----------------------------------------------------------------------------


def test_more_rate_is_never_cheaper():
    costs = [solve(_small_k3(rate=r)).usd_per_hour for r in (250, 500, 1000, 2000)]
    assert costs == sorted(costs)
    assert costs[-1] > costs[0]


def test_looser_slo_is_never_costlier():
    costs = [solve(_small_k3(slo=s)).usd_per_hour for s in (400, 500, 1000, 2000)]
    assert costs == sorted(costs, reverse=True)
    assert costs[0] > costs[-1]


def test_more_pools_and_more_types_are_never_costlier():
    one = solve(replace(_azure(), profiles=_roofline("H100"))).usd_per_hour
    mixed2 = solve(_azure()).usd_per_hour
    mixed3 = solve(_azure(max_pools=3)).usd_per_hour
    assert mixed3 <= mixed2 <= one


def test_pruning_keeps_the_optimum_and_certifies_it():
    pb = replace(_azure(max_pools=3), scenario=replace(
        _azure().scenario, boundaries_tokens=(512, 1024, 2048, 4096, 8192, 16384),
        gamma_steps=3))
    pruned = solve(pb)
    full = solve(pb, prune=False)
    assert pruned.usd_per_hour == pytest.approx(full.usd_per_hour)
    assert pruned.solver["pruning"]["certified"]
    assert pruned.solver["pruning"]["arcs_kept"] < full.solver["pruning"]["arcs_kept"]


# -- value ------------------------------------------------------------------------------------


@pytest.mark.parametrize("workload", ["azure-2023", "sharegpt"])
def test_mixed_types_and_three_pools_beat_the_best_single_type_two_pool_plan(workload):
    profs = _roofline("H100", "A100", "L40S", "H200")
    sc = Scenario(_wl(workload), profs[0], 1000.0, 500.0)
    pb = FleetProblem(sc, profiles=profs, max_pools=3)
    plan = solve(pb)
    singles = []
    for p in profs:
        try:
            singles.append(analytical_plan(replace(sc, profile=p)).usd_per_hour)
        except FleetOptError:  # prefill too slow for the long pool, or no 64K window
            pass
    best_single = min(singles)
    assert plan.baselines["fleetopt"].usd_per_hour == pytest.approx(best_single)
    assert plan.usd_per_hour < 0.7 * best_single
    assert len({a.gpu for p in plan.pools for a in p.allocations if a.instances}) >= 2
    assert plan.solver["gap"] == 0.0
    assert _exact_ok(plan, pb)


# -- rate objective ----------------------------------------------------------------------------


def test_highest_rate_within_a_budget():
    pb = _azure(rate=500.0)
    plan = solve_max_rate(pb, 1000.0, rel_tol=0.02)
    s = plan.solver
    assert plan.usd_per_hour <= 1000.0
    assert s["rate_rps"] == plan.rate_rps
    assert s["rate_upper_rps"] <= s["rate_rps"] * 1.02 + 1e-9
    assert solve(pb.with_rate(s["rate_upper_rps"])).usd_per_hour > 1000.0
    assert _exact_ok(plan, pb.with_rate(plan.rate_rps))


# -- plan file and CLI --------------------------------------------------------------------------


def test_plan_json_and_cli(tmp_path):
    from typer.testing import CliRunner

    from fleetopt_milp.cli import app
    from fleetopt_milp.plan import read_plan

    out = tmp_path / "milp.json"
    res = CliRunner().invoke(app, [
        "solve", "--gpus", "H100,A100,L40S", "--model", "Llama-3-70B", "--pools", "3",
        "--max-gpus", "A100=96", "--min-instances", "2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    d = json.loads(out.read_text())
    assert d["method"] == "milp" and d["schema"] == "fleetopt-plan/1"
    assert d["solver"]["status"] == "optimal" and d["solver"]["gap"] == 0.0
    assert d["solver"]["seconds"] > 0
    gpus = {a["gpu"] for p in d["pools"] for a in p["allocations"]}
    assert "A100-80GB" in gpus
    assert sum(a["gpus"] for p in d["pools"] for a in p["allocations"]
               if a["gpu"] == "A100-80GB") <= 96
    plan = read_plan(out)
    assert plan.usd_per_hour == pytest.approx(d["usd_per_hour"])
    bad = CliRunner().invoke(app, ["solve", "--max-gpus", "H100", "--json", str(out)])
    assert bad.exit_code != 0


# -- the model's structure -------------------------------------------------------------------


def _full_model():
    pb = _azure(grid="small", max_pools=3, max_gpus={"A100-80GB": 96}, mixing="full")
    return pb, build_model(pb)


def test_model_components_are_the_documented_symbols():
    from fleetopt_milp.milp import model as model_module

    pb, m = _full_model()
    doc = model_module.__doc__
    names = [c.local_name for c in m.component_objects(descend_into=False)
             if not c.local_name.endswith("_index")]
    assert {"x", "y", "w", "s", "n", "levels", "flow", "pick", "low", "high", "capacity",
            "caps", "cost", "gpus"} <= set(names)
    for name in names:
        assert f"``model.{name}" in doc or f"/ ``{name}``" in doc, name
    assert list(m.T) == [0, 1, 2]
    assert list(m.P) == [p.name for p in pb.types]
    assert set(m.G) == {p.gpu for p in pb.types}
    assert list(m.A) == list(m.fleet_pools)
    assert {k for k in m.Y} == {k + (t,) for k, i in m.fleet_pools.items() for t in i.solo}
    assert set(m.M) == {k for k, i in m.fleet_pools.items() if i.mix}
    assert len(m.M) >= 1
    for key in m.M:
        blk = m.levels[key]
        assert [c.local_name for c in blk.component_objects(descend_into=False)
                if not c.local_name.endswith("_index")] == ["L", "z", "m"]
        types = {t for t, _ in blk.L}
        assert len(types) >= 2 and types == set(m.fleet_pools[key].mix)
        assert {(t, i) for (*k, t, i) in m.ML if tuple(k) == key} == set(blk.L)
        assert all(key + (t, i) in m.low and key + (t, i) in m.high for t, i in blk.L)
        assert all(key + (t,) in m.capacity and key + (t,) in m.n for t in types)
        assert key in m.split


def test_capacity_levels_never_under_count():
    """Each level ``(k_i, r_i, hi_i)`` of each mixed pool: counts and per-instance
    capacities increase, and ``n r_i <= X(n)`` for every count ``n`` of its segment
    (docs/milp.md §4) - the staircase never promises more than the exact queue carries."""
    pb, m = _full_model()
    t = m.fleet_tables
    checked = 0
    for key in m.M:
        row = m.fleet_pools[key].row
        for ty in m.fleet_pools[key].mix:
            used = t.level_k[row, ty] > 0
            ks, rs, his = t.level_k[row, ty][used], t.level_r[row, ty][used], \
                t.level_hi[row, ty][used]
            assert np.all(np.diff(ks) > 0) and np.all(np.diff(rs) > 0)
            assert np.all(his[:-1] == ks[1:] - 1) and his[-1] >= ks[-1]
            assert ks[-1] <= t.solo[row, ty]
            n = np.concatenate([np.arange(k, min(h, k + 6) + 1) for k, h in zip(ks, his)])
            r = np.concatenate([np.full(min(h, k + 6) - k + 1, r) for k, h, r in
                                zip(ks, his, rs)])
            load = t.load(row, ty)
            x = capacity_share(pb, load, np.zeros(n.size, np.int64), n)
            assert np.all(n * r <= x + 1e-12), (key, ty)
            checked += n.size
    assert checked > 20


def test_solo_instances_apply_the_redundancy_floor_once():
    pb = _azure(grid="small", max_pools=3, min_instances_per_pool=5)
    t = build_model(pb).fleet_tables
    n = t.solo_instances(5)
    busy = t.mass > 1e-15
    assert np.all(n[t.solo < 0] == -1)
    ok = (t.solo >= 0) & busy[:, None]
    assert np.array_equal(n[ok], np.maximum(t.solo[ok], 5))
