"""The fleet MILP under the engine service model (docs/milp.md §3 and §6, docs/engine.md):
agreement with the analytical planner, brute force on a tiny grid, the TPOT SLO,
refused mixing and the ``solve`` command line."""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import replace

import numpy as np
import pytest
from clirun import fleetopt
from test_milp import _prof, _wl

from fleetopt_milp.demand import MomentTable
from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.milp import FleetProblem, solve
from fleetopt_milp.planner import plan as analytical_plan
from fleetopt_milp.scenario import Scenario, band_end_tokens, gamma_grid
from fleetopt_milp.service import scenario_pool_load
from fleetopt_milp.sizing import min_instances

CALIBRATED = "H100-Llama-3-70B-tp8-vllm"


def _engine(workload="azure-2023", profile=CALIBRATED, rate=1000.0, slo=500.0, **kw):
    return Scenario(_wl(workload), _prof(profile), rate, slo, service_model="engine", **kw)


ENGINE_FIELDS = ("mean_tpot_ms", "tpot_ms", "mean_batch")


@pytest.mark.parametrize("workload,profile,tpot_ms", [
    ("azure-2023", CALIBRATED, None),
    ("lmsys", CALIBRATED, None),
    ("agent-heavy", "paper-H100", None),
    ("azure-2023", CALIBRATED, 40.0),
])
def test_one_type_two_pools_matches_the_analytical_planner(workload, profile, tpot_ms):
    sc = _engine(workload, profile, tpot_ms=tpot_ms)
    ref = analytical_plan(sc)
    got = solve(FleetProblem(sc))
    assert got.solver["status"] == "optimal" and got.solver["repaired"] == []
    assert got.solver["pruning"]["certified"]
    assert got.usd_per_hour == pytest.approx(ref.usd_per_hour, abs=1e-6)
    for name in ("fleetopt", "homogeneous"):
        assert got.baselines[name].usd_per_hour == pytest.approx(
            ref.baselines[name].usd_per_hour)
    assert got.service_model == "engine" and got.tpot_slo_ms == tpot_ms
    # The same pools carry the same engine figures, computed in one place. azure-2023 on
    # the calibrated profile has two optima of one cost and the same counts (B = 4,032,
    # gamma 2 and B = 4,096, gamma 1.9: 117 + 35 instances), which the two break apart.
    same = [p.context_tokens for p in got.pools] == [p.context_tokens for p in ref.pools]
    assert same or (workload, profile) == ("azure-2023", CALIBRATED)
    for mine, theirs in zip(got.pools, ref.pools, strict=True):
        assert mine.instances == theirs.instances
        for f in ENGINE_FIELDS if same else ():
            assert getattr(mine, f) == pytest.approx(getattr(theirs, f), rel=1e-12), f
        if tpot_ms is not None and mine.instances:
            assert mine.tpot_ms <= tpot_ms


# -- brute force on a tiny grid ------------------------------------------------------------

BF_BOUNDS = (1024, 2048, 4096, 8192)
BF_LONG = 16384


def _bf_problem(tpot_ms=None):
    wl = _wl("azure-code").truncated(BF_LONG)
    profs = (_prof("H100", "Llama-3-70B"), _prof("A100", "Llama-3-70B"))
    sc = Scenario(wl, profs[0], 300.0, 1500.0, long_context_tokens=BF_LONG, gamma_max=1.5,
                  gamma_steps=2, boundaries_tokens=BF_BOUNDS, service_model="engine",
                  tpot_ms=tpot_ms)
    return FleetProblem(sc, profiles=profs, max_pools=3, mixing="none")


def _brute_force(problem) -> float:
    """Cheapest fleet over every path of up to K pools, each pool on its cheapest type,
    sized with MomentTable.pools (the K-pool routing of demand.py, not the MILP's arcs)."""
    s = problem.scenario
    gammas = gamma_grid(s.gamma_max, s.gamma_steps)
    nodes = [(b, g) for b in BF_BOUNDS for g in gammas if band_end_tokens(b, g) <= BF_LONG]
    best = math.inf
    for k in range(problem.max_pools):
        for combo in itertools.combinations(nodes, k):
            bs = [b for b, _ in combo]
            nxt = (bs[1:] + [BF_LONG]) if bs else []
            if bs != sorted(set(bs)) or any(band_end_tokens(b, g) > w for (b, g), w in
                                            zip(combo, nxt, strict=True)):
                continue
            windows = np.array([bs + [BF_LONG]])
            gm = np.array([[g for _, g in combo]]).reshape(1, -1)
            cost = np.full(k + 1, math.inf)  # each pool on its cheapest type
            for prof in problem.types:
                tab = MomentTable(s.workload, prof, BF_BOUNDS, gammas, BF_LONG)
                for j, m in enumerate(tab.pools(windows, gm, s.compressible_share)):
                    n = int(min_instances(scenario_pool_load(s, m, tab, windows[0, j]),
                                          s.slo_ms * 1e-3, s.percentile, s.rho_max)[0])
                    if n >= 0:
                        cost[j] = min(cost[j], n * prof.usd_per_instance_hour)
            best = min(best, float(cost.sum()))
    return best


@pytest.mark.parametrize("tpot_ms", [None, 45.0])
def test_matches_brute_force_and_pruning_keeps_the_optimum(tpot_ms):
    pb = _bf_problem(tpot_ms)
    best = _brute_force(pb)
    assert math.isfinite(best)
    assert solve(pb, prune=False).usd_per_hour == pytest.approx(best)
    pruned = solve(pb)
    assert pruned.usd_per_hour == pytest.approx(best)
    assert pruned.solver["pruning"]["certified"]


@pytest.mark.parametrize("tpot_ms", [None, 45.0])
def test_the_engine_fluid_bound_never_exceeds_the_exact_count(tpot_ms):
    """The bound that prunes arcs before they are sized (docs/milp.md §6) is a lower bound
    on every arc's exact count on every type: it can never prune the optimum."""
    from fleetopt_milp.milp.arcs import Sizes, candidate_graph, fluid_counts, size_arcs

    pb = _bf_problem(tpot_ms)
    pb = replace(pb, scenario=replace(pb.scenario, rate_rps=2000.0)).validated()
    graph = candidate_graph(pb)
    arcs = np.arange(graph.u.size)
    bound = np.ceil(fluid_counts(pb, graph, arcs) - 1e-9)
    exact = size_arcs(pb, graph, Sizes.none(arcs.size, len(pb.types)), arcs).counts
    served = exact >= 1
    assert served.sum() > 20
    assert np.all(bound[served] <= exact[served])
    assert np.median(bound[served] / exact[served]) > 0.05  # a bound that prunes


# -- the TPOT SLO and mixing ---------------------------------------------------------------

def test_a_tpot_slo_never_makes_a_fleet_cheaper():
    base = FleetProblem(_engine(rate=500.0), max_pools=3)
    costs = [solve(replace(base, scenario=replace(base.scenario, tpot_ms=t))).usd_per_hour
             for t in (None, 60.0, 35.0, 25.0)]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(costs)), costs
    assert costs[-1] > costs[0]  # the tightest one binds


def test_mixing_types_in_a_pool_is_refused_with_the_fix_named():
    profs = (_prof("H100", "Llama-3-70B"), _prof("A100", "Llama-3-70B"))
    sc = replace(_bf_problem().scenario, profile=profs[0])
    for mix in ("full", "filler"):
        with pytest.raises(FleetOptError, match=r"mixing=.*--mix none") as err:
            FleetProblem(sc, profiles=profs, mixing=mix).validated()
        assert "\n" not in str(err.value)
    auto = FleetProblem(sc, profiles=profs, max_gpus={"A100-80GB": 8})
    assert auto.mixing_mode == "none"
    plan = solve(auto)
    assert all(len(p.allocations) == 1 for p in plan.pools)
    assert plan.solver["pruning"]["mixing"] == "none"


# -- the command line ----------------------------------------------------------------------

def test_solve_cli_engine_by_default_records_and_replays_the_tpot_slo(tmp_path):
    out, again = tmp_path / "s.json", tmp_path / "again.json"
    run = fleetopt("solve", "--rate", 500, "--tpot-ms", 40, "--tpot-percentile", 90,
                   "--json", out)
    assert run.code == 0, run.err
    d = json.loads(out.read_text())
    assert d["service_model"] == "engine" and d["tpot_slo_ms"] == 40.0
    assert d["tpot_percentile"] == 90.0
    assert all(p["tpot_ms"] <= 40.0 for p in d["pools"] if p["instances"])
    assert d["inputs"]["traffic"]["tpot_ms"] == 40.0
    assert d["inputs"]["options"]["service_model"] == "engine"
    ref = analytical_plan(_engine(rate=500.0, tpot_ms=40.0, tpot_percentile=90.0))
    assert d["usd_per_hour"] == pytest.approx(ref.usd_per_hour)
    assert fleetopt("solve", "--from", out, "--json", again).code == 0
    assert json.loads(again.read_text())["usd_per_hour"] == d["usd_per_hour"]
    slot = fleetopt("solve", "--rate", 500, "--service-model", "slot", "--json", again)
    assert slot.code == 0 and json.loads(again.read_text())["service_model"] == "slot"
    # A solve file from before service models were recorded replays with the slot model.
    old = json.loads(again.read_text())
    del old["inputs"]["options"]["service_model"]
    for key in ("tpot_ms", "tpot_percentile"):
        del old["inputs"]["traffic"][key]
    out.write_text(json.dumps(old))
    assert fleetopt("solve", "--from", out, "--json", again).code == 0
    replay = json.loads(again.read_text())
    assert replay["service_model"] == "slot" and replay["usd_per_hour"] == old["usd_per_hour"]


@pytest.mark.parametrize("args,needle", [
    (("--service-model", "slot", "--tpot-ms", "40"), "--service-model engine"),
    (("--gpus", "H100,A100", "--model", "Llama-3-70B", "--mix", "full"), "--mix none"),
    (("--service-model", "fast"), "--service-model fast"),
    (("--tpot-ms", "5"), "--tpot-ms 5"),
])
def test_solve_cli_errors_are_one_line(args, needle):
    fleetopt("solve", *args).one_line_error(needle)
