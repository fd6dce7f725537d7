"""The discrete-event simulator: closed forms, the engine, routing, certification, parallelism.

The slot fidelity is checked against queueing results that are exact (M/M/1, M/M/c mean
wait and wait tail, M/D/1 mean wait); every check also bounds the interval's width so
that it cannot pass by being vague. Seeds are fixed, so the outcomes are deterministic.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetopt_milp.demand import MomentTable
from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.plan import write_plan
from fleetopt_milp.planner import plan as make_plan
from fleetopt_milp.queueing import erlang_c
from fleetopt_milp.routing import route, split_allocations
from fleetopt_milp.scenario import Scenario
from fleetopt_milp.simulator import (
    AllocationSpec,
    FleetSpec,
    certify,
    engine_times,
    fleet_from_plan,
    simulate,
    slot_start_times,
    t_interval,
    verify_candidates,
)
from fleetopt_milp.workload import Trace, load_workload, workload_from_requests

# ---------------------------------------------------------------------------------------
# slot fidelity against closed forms
# ---------------------------------------------------------------------------------------


def _replicated_waits(rate, service_draw, servers, n=400_000, reps=6, seed=1, warm=0.1):
    """Per-replication waits of a FCFS queue with Poisson arrivals (warm-up dropped)."""
    out = []
    for r in range(reps):
        rng = np.random.default_rng([seed, r])
        arr = np.cumsum(rng.exponential(1.0 / rate, n))
        svc = service_draw(rng, n)
        w = slot_start_times(arr, svc, servers) - arr
        out.append(w[int(warm * n):])
    return out


def _check(samples, exact, rel_width):
    est = t_interval(samples)
    assert est.lo <= exact <= est.hi, (est, exact)
    assert est.half_width < rel_width * exact, (est, exact)  # the interval says something
    return est


def test_mm1_mean_wait():
    lam, mu = 0.7, 1.0
    waits = _replicated_waits(lam, lambda g, n: g.exponential(1 / mu, n), 1)
    _check([w.mean() for w in waits], (lam / mu) / (mu - lam), 0.05)


def test_mmc_mean_wait_and_wait_tail():
    lam, mu, c = 8.0, 1.0, 10
    a = lam / mu
    ec = float(erlang_c(c, a))
    waits = _replicated_waits(lam, lambda g, n: g.exponential(1 / mu, n), c)
    _check([w.mean() for w in waits], ec / (c * mu - lam), 0.05)
    # P(W > t) = C exp(-(c mu - lam) t), exact for M/M/c; and P(W > 0) = C.
    for t in (0.0, 0.5, 1.5):
        _check([np.mean(w > t) for w in waits], ec * math.exp(-(c * mu - lam) * t), 0.1)
    # The 95% wait quantile: ln(C / 0.05) / (c mu - lam).
    q95 = math.log(ec / 0.05) / (c * mu - lam)
    _check([np.quantile(w, 0.95) for w in waits], q95, 0.05)


def test_md1_mean_wait():
    lam, mu = 0.7, 1.0
    waits = _replicated_waits(lam, lambda g, n: np.full(n, 1 / mu), 1)
    _check([w.mean() for w in waits], lam / mu / (2 * mu * (1 - lam / mu)), 0.05)


# ---------------------------------------------------------------------------------------
# slot kernel properties
# ---------------------------------------------------------------------------------------

_paths = st.lists(st.tuples(st.floats(0, 5), st.floats(0, 10)), min_size=1, max_size=60)


@settings(max_examples=150, deadline=None)
@given(_paths, st.integers(1, 6))
def test_fcfs_waits_nonnegative_and_monotone_in_servers(path, c):
    gaps, svc = (np.array(x) for x in zip(*path, strict=True))
    arr = np.cumsum(gaps)
    w1 = slot_start_times(arr, svc, c) - arr
    w2 = slot_start_times(arr, svc, c + 1) - arr
    assert np.all(w1 >= 0)
    assert np.all(w2 <= w1 + 1e-9)  # a server more never delays anyone on the same path
    assert np.all(np.diff(slot_start_times(arr, svc, c)) >= 0)  # FCFS: starts in order


@settings(max_examples=100, deadline=None)
@given(_paths)
def test_single_server_is_the_lindley_recursion(path):
    gaps, svc = (np.array(x) for x in zip(*path, strict=True))
    arr = np.cumsum(gaps)
    w = slot_start_times(arr, svc, 1) - arr
    ref = np.zeros(arr.size)
    for i in range(1, arr.size):
        ref[i] = max(0.0, ref[i - 1] + svc[i - 1] - gaps[i])
    np.testing.assert_allclose(w, ref, atol=1e-9)
    # Enough servers for everyone: nobody waits.
    assert np.all(slot_start_times(arr, svc, arr.size) == arr)


# ---------------------------------------------------------------------------------------
# routing
# ---------------------------------------------------------------------------------------


def test_route_by_length_and_compress_and_route():
    lin = np.array([100, 4000, 4900, 8000, 8000, 7000, 60000, 70000])
    lout = np.array([50, 96, 100, 192, 193, 4096, 1000, 10])
    # totals:      150  4096  5000  8192  8193  11096 61000 70010
    r = route(lin, lout, (4096, 65536), (2.0,), 1.0, np.random.default_rng(0))
    assert r.pool.tolist() == [0, 0, 0, 0, 1, 1, 1, -1]
    assert r.compressed.tolist() == [False, False, True, True, False, False, False, False]
    assert r.input_tokens.tolist() == [100, 4000, 3996, 3904, 8000, 7000, 60000, 70000]
    assert r.total_tokens[2] == 4096
    # A request whose output alone reaches B is never compressed (L_out < B needed).
    r2 = route([1000], [4096], (4096, 65536), (2.0,), 1.0, np.random.default_rng(0))
    assert r2.pool.tolist() == [1] and not r2.compressed[0]
    # p_c = 0 or gamma = 1: routing by length only.
    for g, pc in ((2.0, 0.0), (1.0, 1.0)):
        r3 = route(lin, lout, (4096, 65536), (g,), pc, np.random.default_rng(0))
        assert not r3.compressed.any()
        assert r3.pool.tolist() == [0, 0, 1, 1, 1, 1, 1, -1]


def test_route_compresses_the_share_pc():
    n = 200_000
    r = route(np.full(n, 5000), np.full(n, 100), (4096, 65536), (1.5,), 0.3,
              np.random.default_rng(3))
    share = r.compressed.mean()
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n)
    assert np.all(r.pool[r.compressed] == 0) and np.all(r.pool[~r.compressed] == 1)


def test_route_matches_moment_table_exactly(paper_h100):
    """Route every class with p_c = 1 (deterministic) and rebuild the pools' moments."""
    rng = np.random.default_rng(11)
    lin = rng.integers(1, 20000, 3000)
    lout = rng.integers(1, 3000, 3000)
    wl = workload_from_requests(lin, lout, name="t")
    windows, gammas = (2048, 8192, 65536), (1.5, 2.0)
    table = MomentTable(wl, paper_h100, windows[:-1], gammas, windows[-1])
    moments = table.pools(np.array([windows]), np.array([gammas]), 1.0)
    r = route(wl.input_tokens, wl.output_tokens, windows, gammas, 1.0,
              np.random.default_rng(0))
    for k, m in enumerate(moments):
        sel = r.pool == k
        s = paper_h100.service_s(r.input_tokens[sel], r.output_tokens[sel], windows[k])
        w = wl.weights[sel]
        assert w.sum() == pytest.approx(m.mass[0], abs=1e-12)
        assert np.dot(w, s) == pytest.approx(m.s1[0], rel=1e-9)
        assert np.dot(w, s * s) == pytest.approx(m.s2[0], rel=1e-9)


def test_route_and_split_reject_bad_input():
    with pytest.raises(FleetOptError, match="strictly ascending"):
        route([1], [1], (8192, 4096), (1.0,), 0.5, np.random.default_rng(0))
    with pytest.raises(FleetOptError, match="passes the next window"):
        route([1], [1], (4096, 6000), (2.0,), 0.5, np.random.default_rng(0))
    with pytest.raises(FleetOptError, match="sum to 1"):
        split_allocations(np.array([0]), [[0.5, 0.4]], np.random.default_rng(0))
    shares = split_allocations(np.zeros(100_000, dtype=np.int32), [[0.25, 0.75]],
                               np.random.default_rng(1))
    assert abs(np.mean(shares == 0) - 0.25) < 0.01


# ---------------------------------------------------------------------------------------
# engine fidelity
# ---------------------------------------------------------------------------------------


def test_engine_idle_instance_gives_exact_prefill_and_decode_times(paper_h100):
    p = paper_h100
    lin = np.array([1, 1024, 1025, 3000, 7000])
    lout = np.array([1, 5, 40, 7, 100])
    arr = np.arange(lin.size) * 1000.0  # far apart: each request finds the instance idle
    et = engine_times(arr, lin, lout, p, 8192)
    ttft = et.first_token_s - arr
    np.testing.assert_allclose(ttft, p.prefill_s(lin), rtol=0, atol=1e-12)
    assert np.all(et.first_admit_s == arr)
    # Alone, decode step i costs W + H (L_in + i) / C_cal.
    for i in range(lin.size):
        steps = np.arange(1, lout[i] + 1)
        expect = np.sum(p.iter_time_s(1, lin[i] + steps))
        assert et.finish_s[i] - et.first_token_s[i] == pytest.approx(expect, rel=1e-9)
    assert et.preemptions.sum() == 0


def test_engine_joins_the_shortest_queue(paper_h100):
    # Two requests at once on two instances: each goes to its own, alone.
    et = engine_times([0.0, 0.0], [2048, 2048], [3, 3], paper_h100, 8192, instances=2)
    np.testing.assert_allclose(et.first_token_s, paper_h100.prefill_s(2048), atol=1e-12)
    # On one instance they share the first batch: each prefill iteration costs W + 2H.
    et1 = engine_times([0.0, 0.0], [2048, 2048], [3, 3], paper_h100, 8192, instances=1)
    two = 2 * (paper_h100.w_ms + 2 * paper_h100.h_ms) * 1e-3
    np.testing.assert_allclose(et1.first_token_s, two, rtol=1e-12)


def test_engine_conserves_throughput_and_preempts_only_over_kv(paper_h100):
    rng = np.random.default_rng(5)
    n = 20_000
    lin = rng.integers(100, 3500, n)
    lout = rng.integers(1, 500, n)
    arr = np.cumsum(rng.exponential(1 / 40.0, n))
    et = engine_times(arr, lin, lout, paper_h100, 4096, instances=2)
    assert np.all(np.isfinite(et.finish_s)) and et.preemptions.sum() == 0
    assert np.all(et.first_token_s >= arr + paper_h100.prefill_s(lin) - 1e-12)
    assert np.all(et.finish_s > et.first_token_s)
    # Completions keep pace with arrivals: the last finishes soon after the last arrival.
    assert et.finish_s.max() - arr[-1] < 60.0
    # A small KV cache with an uncapped batch: preemption by recompute, and still all finish.
    small = paper_h100.with_overrides(kv_blocks=600)
    et2 = engine_times(arr[:4000], lin[:4000], lout[:4000], small, 4096, max_batch=256)
    assert et2.preemptions.sum() > 0
    assert np.all(np.isfinite(et2.finish_s)) and np.all(et2.finish_s > et2.first_token_s)


def test_engine_macro_steps_follow_the_single_step_sample_path(paper_h100):
    rng = np.random.default_rng(8)
    n = 3000
    lin = rng.integers(1, 2800, n)
    lout = rng.integers(1, 1200, n)
    arr = np.cumsum(rng.exponential(1 / 6.0, n))
    for prof, cap in ((paper_h100, None), (paper_h100.with_overrides(kv_blocks=500), 64)):
        fast = engine_times(arr, lin, lout, prof, 4096, instances=2, max_batch=cap)
        slow = engine_times(arr, lin, lout, prof, 4096, instances=2, max_batch=cap,
                            macro_steps=False)
        for f in ("first_admit_s", "first_token_s", "finish_s", "held_s"):
            np.testing.assert_allclose(getattr(fast, f), getattr(slow, f), rtol=1e-9)
        assert np.array_equal(fast.preemptions, slow.preemptions)
    assert slow.preemptions.sum() > 0  # the small KV cache exercised preemption
    # Multi-step scheduling (10 iterations per scheduler call): the same sample path too.
    grouped = paper_h100.with_overrides(scheduler_steps=10, kv_blocks=500)
    fast = engine_times(arr, lin, lout, grouped, 4096, instances=2, max_batch=64)
    slow = engine_times(arr, lin, lout, grouped, 4096, instances=2, max_batch=64,
                        macro_steps=False)
    for f in ("first_admit_s", "first_token_s", "finish_s", "held_s"):
        np.testing.assert_allclose(getattr(fast, f), getattr(slow, f), rtol=1e-9)
    assert np.array_equal(fast.preemptions, slow.preemptions)


def test_multi_step_engine_admits_at_the_end_of_a_group(paper_h100):
    """With 10 iterations per scheduler call a request reaching a busy instance is admitted
    when the running group ends: the first request starts a group at t = 0 (an empty batch
    admits at once), a second arriving during its 3rd iteration waits for the 10th to end."""
    prof = paper_h100.with_overrides(scheduler_steps=10)
    lin, lout = np.array([16, 16]), np.array([50, 5])
    one = engine_times(np.array([0.0]), lin[:1], lout[:1], prof, 4096)
    step = one.first_token_s[0]  # a 16-token prompt: one iteration alone
    both = engine_times(np.array([0.0, 2.5 * step]), lin, lout, prof, 4096)
    assert both.first_admit_s[0] == 0.0
    # Iterations of one decoding sequence grow slightly with its context: the 10th ends
    # where a lone request of 9 output tokens finishes (k + L_out = 1 + 9 iterations).
    solo = engine_times(np.array([0.0]), lin[:1], np.array([9]), prof, 4096)
    assert both.first_admit_s[1] == pytest.approx(solo.finish_s[0], rel=1e-12)
    # At one iteration per call it is admitted at the end of the 3rd.
    per_step = engine_times(np.array([0.0, 2.5 * step]), lin, lout, paper_h100, 4096)
    assert per_step.first_admit_s[1] < 3.01 * step < both.first_admit_s[1]


# ---------------------------------------------------------------------------------------
# whole fleets: plans, certification, parallel replications
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azure_plan(paper_h100):
    wl = load_workload("azure-2023")
    return wl, make_plan(Scenario(wl, paper_h100, rate_rps=100.0, slo_ms=500.0))


def test_planner_plan_is_certified_and_matches_the_model(azure_plan):
    wl, plan = azure_plan
    cert = certify(plan, wl, n_requests=60_000, replications=4, seed=2, workers=1)
    assert cert.certified and cert.failing == ()
    res = cert.simulation
    assert res.fidelity == "slot" and res.ci_method == "replications"
    for p in res.pools:
        a = p.analytical
        assert abs(p.utilization.mean - a.utilization) < 0.01
        assert p.utilization.half_width < 0.02
        # Every simulated request is served; throughput equals the offered rate.
        assert p.throughput_rps.lo <= a.rate_rps * 1.02 and p.throughput_rps.hi >= a.rate_rps * 0.98
    assert res.fleet.throughput_rps.mean == pytest.approx(100.0, rel=0.02)
    assert res.unserved_share == 0.0
    d = res.to_dict()
    pool = d["pools"][0]
    assert {"utilization", "utilization_ci", "analytical_utilization", "p99_ttft_ms",
            "p99_ttft_ms_ci", "analytical_p99_ttft_ms"} <= set(pool)


def test_an_undersized_plan_fails_and_verification_skips_it(azure_plan):
    wl, plan = azure_plan
    k = max(range(len(plan.pools)), key=lambda i: plan.pools[i].allocations[0].utilization)
    pool = plan.pools[k]
    alloc = pool.allocations[0]
    # The same fleet under more load: the busiest pool runs at 97% utilization.
    small = replace(plan, rate_rps=plan.rate_rps * 0.97 / alloc.utilization)
    cert = certify(small, wl, n_requests=100_000, replications=5, seed=2, workers=1)
    assert not cert.certified and pool.role in cert.failing
    bad = next(v for v in cert.pools if v.pool == pool.role)
    assert bad.slo_miss_share.lo > 0.01 and bad.analytical_miss_share > 0.01
    # verify_candidates: the failing (cheaper-listed) one is rejected, the plan confirmed.
    cheap = replace(small, pools=tuple(
        replace(p, allocations=tuple(replace(a, usd_per_hour=0.5 * a.usd_per_hour)
                                     for a in p.allocations)) for p in small.pools))
    ver = verify_candidates([cheap, plan], wl, n_requests=100_000, replications=5, seed=2,
                            workers=1)
    assert ver.plan is plan and ver.rejected == 1 and ver.checked == 2
    assert ver.rejections[0][1] == cert.failing


def test_engine_fleet_simulation_is_conservative_in_utilization(azure_plan):
    wl, plan = azure_plan
    res = simulate(plan, wl, fidelity="engine", n_requests=30_000, replications=2, workers=1)
    for p in res.pools:
        # The model charges every iteration at a full batch: the engine is less busy.
        assert p.utilization.mean < p.analytical.utilization
        assert p.mean_tpot_ms.mean > 0 and p.preemptions_per_request.mean == 0
    assert res.fleet.throughput_rps.mean == pytest.approx(100.0, rel=0.03)


def test_replications_are_identical_on_processes_and_dask(azure_plan):
    from dask.distributed import LocalCluster

    wl, plan = azure_plan
    kw = dict(n_requests=5_000, replications=2, seed=9, analytical=False)
    ref = simulate(plan, wl, workers=1, **kw).to_dict()
    procs = simulate(plan, wl, workers=2, **kw).to_dict()
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        dask = simulate(plan, wl, scheduler=cluster.scheduler_address, **kw).to_dict()
    for d in (procs, dask):
        assert d["pools"] == ref["pools"] and d["fleet"] == ref["fleet"]


def test_trace_replay_uses_batch_means_and_scales_time(paper_h100):
    rng = np.random.default_rng(4)
    n = 20_000
    arr = np.cumsum(rng.exponential(1 / 50.0, n))
    lin, lout = rng.integers(50, 3000, n), rng.integers(1, 400, n)
    wl = workload_from_requests(lin, lout, arr, name="synthetic-trace")
    fleet = FleetSpec(("all",), (4096,), (), 0.0, 0.0,
                      (AllocationSpec("all", 0, paper_h100, 2, 1.0),), slo_s=0.5)
    res = simulate(fleet, wl, trace=True, rate_rps=100.0, workers=1)
    assert res.arrivals == "trace" and res.ci_method == "batch-means"
    assert res.rate_rps == pytest.approx(100.0)
    assert res.fleet.throughput_rps.mean == pytest.approx(100.0, rel=0.05)
    assert res.fleet.utilization.n == 10
    # Replaying the same trace twice as fast doubles the load on the slots.
    slow = simulate(fleet, wl, trace=Trace(arr, lin, lout), workers=1)
    assert slow.rate_rps == pytest.approx(wl.trace.mean_rate_rps)
    assert res.fleet.utilization.mean == pytest.approx(
        slow.fleet.utilization.mean * 100.0 / slow.rate_rps, rel=0.05)


def test_user_mistakes_name_the_field(azure_plan, paper_h100):
    wl, plan = azure_plan
    with pytest.raises(FleetOptError, match="fidelity='fast'"):
        simulate(plan, wl, fidelity="fast")
    with pytest.raises(FleetOptError, match="n_requests=10"):
        simulate(plan, wl, n_requests=10)
    with pytest.raises(FleetOptError, match="has no timestamps"):
        simulate(plan, load_workload("lmsys"), trace=True)
    with pytest.raises(FleetOptError, match="load shares"):
        FleetSpec(("a",), (4096,), (), 0.0, 0.0,
                  (AllocationSpec("a", 0, paper_h100, 1, 0.5),), 0.5).validated()
    moved = replace(plan, pools=(replace(plan.pools[0], allocations=(replace(
        plan.pools[0].allocations[0], slots_per_instance=3),)),) + plan.pools[1:])
    with pytest.raises(FleetOptError, match="re-plan"):
        fleet_from_plan(moved)


def test_cli_simulate_writes_json(tmp_path, azure_plan):
    _, plan = azure_plan
    path = tmp_path / "plan.json"
    out = tmp_path / "sim.json"
    write_plan(plan, path)
    r = subprocess.run([sys.executable, "-m", "fleetopt_milp.cli", "simulate", str(path),
                        "--requests", "20000", "--replications", "2", "--seed", "3",
                        "--json", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["schema"] == "fleetopt-simulation/1" and d["replications"] == 2
    assert [p["name"] for p in d["pools"]] == [p.role for p in plan.pools]
    for p, pp in zip(d["pools"], plan.pools, strict=True):
        assert p["analytical_utilization"] == pytest.approx(pp.utilization, rel=1e-6)
        assert p["utilization_ci"][0] <= p["utilization"] <= p["utilization_ci"][1]
    assert "utilization" in r.stdout and plan.pools[0].role in r.stdout
    bad = subprocess.run([sys.executable, "-m", "fleetopt_milp.cli", "simulate", str(path),
                          "--fidelity", "fast"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "fidelity" in bad.stderr and "Traceback" not in bad.stderr
