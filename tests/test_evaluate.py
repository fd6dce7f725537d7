"""fleetopt evaluate (docs/engine.md §4): figures of a given fleet, max rate, saturation."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.evaluate import Slo, evaluate_fleet, single_pool_fleet
from fleetopt_milp.hardware import load_catalog
from fleetopt_milp.workload import load_workload, workload_from_requests


@pytest.fixture(scope="module")
def prof():
    return load_catalog().profile("H100-Llama-3-70B-tp8-vllm")


@pytest.fixture(scope="module")
def wl():
    rng = np.random.default_rng(5)
    return workload_from_requests(np.clip(rng.lognormal(6, 1, 2000), 1, 5000).astype(int),
                                  np.clip(rng.lognormal(5, 0.8, 2000), 1, 2000).astype(int),
                                  name="chat")


def test_single_pool_figures_are_ordered_and_consistent(prof, wl):
    slo = Slo(500.0, 99.0, 60.0, 99.0)
    ev = evaluate_fleet(single_pool_fleet(prof, 3, 8192, slo), wl, 10.0, slo)
    p, f = ev.pools[0], ev.fleet
    assert p.ttft_ms["p50"] <= p.ttft_ms["p90"] <= p.ttft_ms["p99"]
    assert p.tpot_ms["p50"] <= p.tpot_ms["p90"] <= p.tpot_ms["p99"]
    assert p.tpot_ms["mean"] >= prof.w_ms
    assert f.ttft_ms == p.ttft_ms and f.tpot_ms == p.tpot_ms  # one pool: the fleet is it
    assert p.rate_rps == pytest.approx(10.0)
    # Below the highest rate the SLOs hold; the saturation rate is beyond it.
    assert 10.0 < ev.max_rate_rps < ev.saturation_rps
    at_max = evaluate_fleet(single_pool_fleet(prof, 3, 8192, slo), wl, ev.max_rate_rps * 0.999, slo)
    assert at_max.pools[0].ttft_slo_miss_share <= 0.01 + 1e-9
    assert at_max.pools[0].tpot_slo_miss_share <= 0.01 + 1e-9
    above = evaluate_fleet(single_pool_fleet(prof, 3, 8192, slo), wl, ev.max_rate_rps * 1.01, slo)
    assert (above.pools[0].ttft_slo_miss_share > 0.01
            or above.pools[0].tpot_slo_miss_share > 0.01)


def test_saturation_is_where_the_engine_becomes_unstable(prof, wl):
    slo = Slo(500.0)
    ev = evaluate_fleet(single_pool_fleet(prof, 2, 8192, slo), wl, 5.0, slo)
    over = evaluate_fleet(single_pool_fleet(prof, 2, 8192, slo), wl, ev.saturation_rps * 1.01, slo)
    assert over.fleet.slo_miss_share == 1.0 and over.fleet.ttft_ms["p99"] == float("inf")
    under = evaluate_fleet(single_pool_fleet(prof, 2, 8192, slo), wl, ev.saturation_rps * 0.99, slo)
    assert np.isfinite(under.fleet.ttft_ms["p99"])
    # Twice the instances take twice the traffic (the pool splits evenly).
    ev4 = evaluate_fleet(single_pool_fleet(prof, 4, 8192, slo), wl, 5.0, slo)
    assert ev4.saturation_rps == pytest.approx(2 * ev.saturation_rps, rel=1e-3)


def test_plan_fleet_matches_the_plan(prof, tmp_path):
    from fleetopt_milp.planner import plan
    from fleetopt_milp.scenario import Scenario
    from fleetopt_milp.simulator import fleet_from_plan

    w = load_workload("azure-2023")
    p = plan(Scenario(w, prof, 150, 800, service_model="engine"))
    ev = evaluate_fleet(fleet_from_plan(p), w, 150, Slo(800.0))
    for pp, pe in zip(p.pools, ev.pools, strict=True):
        assert pe.rate_rps == pytest.approx(pp.rate_rps, rel=1e-9)
        assert pe.utilization == pytest.approx(pp.utilization, rel=1e-9)
        assert pe.tpot_ms["mean"] == pytest.approx(pp.mean_tpot_ms, rel=1e-9)
        assert pe.ttft_slo_miss_share == pytest.approx(pp.slo_miss_share, rel=1e-6, abs=1e-12)
    assert ev.max_rate_rps >= 150


def test_bad_inputs_are_one_line_errors(prof, wl):
    slo = Slo(500.0)
    with pytest.raises(FleetOptError, match="instances"):
        single_pool_fleet(prof, 0, 8192, slo)
    with pytest.raises(FleetOptError, match="longer than the largest pool window"):
        evaluate_fleet(single_pool_fleet(prof, 1, 2048, slo), wl, 1.0, slo)
    with pytest.raises(FleetOptError, match="service-model engine"):
        evaluate_fleet(single_pool_fleet(prof, 1, 8192, slo), wl, 1.0, Slo(500.0, 99, 40.0), "slot")


def test_cli_writes_the_documented_keys(tmp_path):
    out = tmp_path / "ev.json"
    r = subprocess.run([sys.executable, "-m", "fleetopt_milp.cli", "evaluate", "--gpu",
                        "H100-Llama-3-70B-tp8-vllm", "--instances", "2", "--context-tokens",
                        "8192", "--workload", "sharegpt", "--rate", "5", "--json", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    f = d["fleet"]
    assert set(f["ttft_ms"]) == {"p50", "p90", "p99"}
    assert set(f["tpot_ms"]) == {"p50", "p90", "p99", "mean"}
    for key in ("slo_miss_share", "max_rate_rps", "saturation_rps"):
        assert isinstance(f[key], float)
    r = subprocess.run([sys.executable, "-m", "fleetopt_milp.cli", "evaluate", "--gpu",
                        "H100-Llama-3-70B-tp8-vllm", "--workload", "sharegpt"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--instances" in r.stderr


def test_a_catalogue_file_sets_the_engines_scheduler_steps(tmp_path):
    """A two-line catalogue file plans the shipped profile for a multi-step engine: the
    same fleet's TTFT grows by the wait for the running group (docs/engine.md §2-3), its
    TPOT does not move."""
    from clirun import fleetopt

    cat = tmp_path / "multistep.toml"
    cat.write_text('[profiles."H100-Llama-3-70B-tp4-vllm"]\nscheduler_steps = 10\n')
    figures = {}
    for name, extra in (("one", []), ("ten", ["--catalog", cat])):
        out = tmp_path / f"{name}.json"
        run = fleetopt("evaluate", "--gpu", "H100-Llama-3-70B-tp4-vllm", "--instances", 1,
                       "--context-tokens", 2048, "--workload", "sharegpt-vllm", "--rate", 4,
                       "--slo-ms", 1000, "--json", out, *extra)
        assert run.code == 0, run.err
        figures[name] = json.loads(out.read_text())["fleet"]
    one, ten = figures["one"], figures["ten"]
    assert ten["tpot_ms"]["mean"] == pytest.approx(one["tpot_ms"]["mean"], rel=1e-12)
    # About 1 + 9 x 0.45 busy steps of ~20 ms at the median instead of one: some 80 ms more.
    assert ten["ttft_ms"]["p50"] > one["ttft_ms"]["p50"] + 60.0
    bad = tmp_path / "bad.toml"
    bad.write_text('[profiles."H100-Llama-3-70B-tp4-vllm"]\nscheduler_steps = 0\n')
    run = fleetopt("evaluate", "--catalog", bad, "--gpu", "H100-Llama-3-70B-tp4-vllm",
                   "--instances", 1, "--context-tokens", 2048, "--workload", "sharegpt-vllm",
                   "--rate", 4, "--slo-ms", 1000)
    assert run.code == 2 and "scheduler_steps" in run.err and "\n" not in run.err.strip()
