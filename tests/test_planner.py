"""The analytical planner: brute-force agreement, invariants, baselines, errors (docs/model.md §3-5)."""

from dataclasses import replace

import numpy as np
import pytest
from conftest import brute_force_pools
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetopt_milp.errors import FleetOptError, InfeasibleError
from fleetopt_milp.planner import PlanningTables, plan
from fleetopt_milp.queueing import PoolLoad, min_instances
from fleetopt_milp.scenario import Scenario
from fleetopt_milp.workload import load_workload


def brute_min_instances(profile, pool, window, rate, slo_ms, q=99.0, rho=0.85, paper=False):
    if pool["mass"] == 0:
        return 0
    floors = np.array(sorted(pool["floors"]))
    probs = np.array([pool["floors"][f] for f in floors]) / pool["mass"]
    es = pool["s1"] / pool["mass"]
    cs2 = pool["s2"] / pool["mass"] / es**2 - 1
    load = PoolLoad(np.array([rate * pool["mass"]]), np.array([es]), np.array([cs2]),
                    np.array([profile.slots(window)]), floors, probs[None, :])
    return int(min_instances(load, slo_ms / 1e3, q, rho, paper_rule=paper)[0])


def test_plan_equals_exhaustive_search(small_trace, paper_h100):
    bounds = (1024, 2048, 3000, 4096, 8192)
    gammas = (1.0, 1.5, 2.0)
    sc = Scenario(small_trace, paper_h100, rate_rps=40.0, slo_ms=800.0, gamma_max=2.0,
                  gamma_steps=3, boundaries_tokens=bounds)
    best = None
    for b in bounds:
        for g in gammas:
            pools = brute_force_pools(small_trace, paper_h100, (b, 65536), (g,), 0.75)
            n = [brute_min_instances(paper_h100, p, w, 40.0, 800.0)
                 for p, w in zip(pools, (b, 65536))]
            if min(n) < 0:
                continue
            key = (sum(n), g, b)
            best = key if best is None or key < best else best
    homog = brute_force_pools(small_trace, paper_h100, (65536,), (), 0.75)
    n_h = brute_min_instances(paper_h100, homog[0], 65536, 40.0, 800.0)
    got = plan(sc)
    assert got.baselines["homogeneous"].instances == n_h
    assert got.baselines["fleetopt"].instances == best[0]
    assert (got.baselines["fleetopt"].gamma, got.baselines["fleetopt"].boundary_tokens) == \
        (best[1], best[2])
    assert got.instances == min(best[0], n_h)
    assert got.usd_per_hour == pytest.approx(got.instances * 8 * 4.02)


def test_paper_homogeneous_counts_from_exact_moments(paper_h100):
    # docs/model.md §5: exact moments give about 145 (Azure) and 63 (LMSYS) instances.
    for name, expect in (("azure-2023-cdf", 145), ("lmsys", 63)):
        sc = Scenario(load_workload(name), paper_h100, 1000.0, 500.0, paper_compat=True)
        assert plan(sc).baselines["homogeneous"].instances == expect
        pools = brute_force_pools(sc.workload, paper_h100, (65536,), (), 0.75)
        assert brute_min_instances(paper_h100, pools[0], 65536, 1000.0, 500.0,
                                   paper=True) == expect


def test_baselines_are_ordered_and_gamma_one_is_pool_routing(paper_h100):
    wl = load_workload("lmsys")
    p = plan(Scenario(wl, paper_h100, 1000.0, 500.0))
    b = p.baselines
    assert b["fleetopt"].usd_per_hour <= b["retrofit"].usd_per_hour <= \
        b["pool_routing"].usd_per_hour <= b["homogeneous"].usd_per_hour
    assert b["retrofit"].boundary_tokens == b["pool_routing"].boundary_tokens
    assert p.usd_per_hour == min(b["fleetopt"].usd_per_hour, b["homogeneous"].usd_per_hour)
    no_cr = plan(Scenario(wl, paper_h100, 1000.0, 500.0, gamma_max=1.0))
    assert no_cr.baselines["fleetopt"].instances == b["pool_routing"].instances
    assert no_cr.gamma == 1.0
    # Every pool of the plan meets the SLO and the utilization cap.
    for pool in p.pools:
        assert pool.slo_miss_share <= 0.01 + 1e-12
        assert pool.utilization <= 0.85 + 1e-12
        assert pool.p99_ttft_ms <= 500.0 + 1e-6


@settings(max_examples=8, deadline=None)
@given(rate=st.floats(5.0, 400.0), factor=st.floats(1.05, 3.0), slo=st.floats(300.0, 2000.0))
def test_more_traffic_never_cheaper_and_looser_slo_never_costlier(paper_h100, rate, factor, slo):
    wl = load_workload("azure-2023")
    base = Scenario(wl, paper_h100, rate, slo)
    tables = PlanningTables(base)
    p0 = plan(base, tables)
    assert plan(replace(base, rate_rps=rate * factor), tables).usd_per_hour >= p0.usd_per_hour
    assert plan(replace(base, slo_ms=slo * factor), tables).usd_per_hour <= p0.usd_per_hour


def test_prefill_bound_slo_is_infeasible_and_names_pool_and_lengths(paper_h100):
    wl = load_workload("agent-heavy")
    with pytest.raises(InfeasibleError) as err:
        plan(Scenario(wl, paper_h100, 100.0, 40.0))
    msg = str(err.value)
    assert "homogeneous" in msg and "tokens or more" in msg and err.value.binding == "prefill"
    # 40 ms / 4.32 ms per 1024-token chunk = 9.3: inputs of 10 chunks (9217+ tokens) miss it.
    assert "9217 tokens" in msg


@pytest.mark.parametrize("field,value,needle", [
    ("rate_rps", -5.0, "rate_rps=-5.0"),
    ("slo_ms", 2.0, "below the prefill time"),
    ("percentile", 100.0, "percentile=100.0"),
    ("compressible_share", 1.5, "compressible_share=1.5"),
    ("gamma_max", 0.5, "gamma_max=0.5"),
    ("long_context_tokens", 4096, "raise --long-context"),
])
def test_bad_scenarios_name_the_field(paper_h100, field, value, needle):
    sc = replace(Scenario(load_workload("azure-2023"), paper_h100, 100.0, 500.0),
                 **{field: value})
    with pytest.raises(FleetOptError, match=needle):
        plan(sc)


def test_plan_file_round_trip(tmp_path, paper_h100):
    from fleetopt_milp.plan import read_plan, write_plan

    p = plan(Scenario(load_workload("azure-2023"), paper_h100, 200.0, 500.0))
    write_plan(p, tmp_path / "plan.json")
    back = read_plan(tmp_path / "plan.json")
    assert back.usd_per_hour == pytest.approx(p.usd_per_hour)
    assert [x.instances for x in back.pools] == [x.instances for x in p.pools]
    assert back.baselines["homogeneous"].instances == p.baselines["homogeneous"].instances
    d = p.to_dict()
    for key in ("boundary_tokens", "gamma", "usd_per_hour", "planner_ms", "pools", "baselines"):
        assert key in d
    for key in ("role", "context_tokens", "gpu", "instances", "rate_rps", "utilization",
                "p99_ttft_ms"):
        assert key in d["pools"][0]
    with pytest.raises(FleetOptError, match="not found"):
        read_plan(tmp_path / "missing.json")


def test_candidate_plans_are_ranked_and_start_with_the_plan(paper_h100):
    from fleetopt_milp.planner import candidate_plans

    sc = Scenario(load_workload("lmsys"), paper_h100, 1000.0, 500.0)
    cands = candidate_plans(sc, 6)
    assert len(cands) == 6
    costs = [c.usd_per_hour for c in cands]
    assert costs == sorted(costs)
    best = plan(sc)
    assert (cands[0].boundary_tokens, cands[0].gamma, cands[0].instances) == \
        (best.boundary_tokens, best.gamma, best.instances)
    assert len({(c.boundary_tokens, c.gamma) for c in cands}) == 6


def test_plan_file_is_strict_json_with_infeasible_baselines(tmp_path, paper_h100):
    import json

    from fleetopt_milp.plan import FleetSummary, read_plan, write_plan

    p = plan(Scenario(load_workload("azure-2023"), paper_h100, 200.0, 500.0))
    bad = FleetSummary("pool_routing", None, 1.0, 0, 0, float("inf"), (), False, "why")
    p = replace(p, baselines={**p.baselines, "pool_routing": bad})
    write_plan(p, tmp_path / "p.json")
    text = (tmp_path / "p.json").read_text()
    assert "Infinity" not in text and "NaN" not in text
    d = json.loads(text)
    assert d["baselines"]["pool_routing"]["usd_per_hour"] is None
    assert d["savings"]["pool_routing"] is None
    back = read_plan(tmp_path / "p.json")
    assert back.baselines["pool_routing"].usd_per_hour == float("inf")
    assert not back.baselines["pool_routing"].feasible
