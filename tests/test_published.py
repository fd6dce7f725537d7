"""Published serving figures (benchmarks/published_serving.toml) and the sharegpt-vllm
workload: the file parses with citations and existing profiles, a handful of predictions
hold within 25% (analytical only), and the workload round-trips (docs/engine.md §5)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from fleetopt_milp.hardware import load_catalog
from fleetopt_milp.workload import workload_from_requests
from fleetopt_milp.workload_files import data_dir, load_workload

ROOT = Path(__file__).resolve().parent.parent


def _bench():
    spec = importlib.util.spec_from_file_location("bench_published",
                                                  ROOT / "benchmarks" / "bench_published.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_published", mod)
    spec.loader.exec_module(mod)
    return mod


bench = _bench()


@pytest.fixture(scope="module")
def catalog():
    return dict(load_catalog([]).profiles)


@pytest.fixture(scope="module")
def runs(catalog):
    return {r.run_id: r for r in bench.load_runs(bench.FIGURES, catalog)}


def test_every_figure_has_a_citation_and_a_calibrated_profile(runs, catalog):
    assert len(runs) >= 7
    for r in runs.values():
        assert r.source.startswith("https://")
        assert r.engine and r.gpu and r.setup
        assert catalog[r.profile].source == "calibrated"
        assert r.figures and set(r.figures) <= set(bench.METRICS)
        assert all(v > 0 for v in r.figures.values())
        if not r.hardware_match:  # the 40 GB and PCIe A100 runs say so
            assert "40GB" in r.gpu or "PCIe" in r.gpu


def test_a_malformed_entry_is_refused(tmp_path, catalog):
    text = bench.FIGURES.read_text().replace('profile = "H100-Llama-3-8B-tp1-vllm"',
                                             'profile = "H100-Llama-9-8B"', 1)
    bad = tmp_path / "figures.toml"
    bad.write_text(text)
    with pytest.raises(ValueError, match="Llama-9-8B"):
        bench.load_runs(bad, catalog)


@pytest.mark.parametrize("run_id,metric", [
    ("vllm-ci-h100-70b-tp4-latency", "mean_latency_ms"),
    ("vllm-ci-h100-8b-tp1-latency", "mean_latency_ms"),
    ("surajssd-a100-40gb-tp8-qps1", "mean_tpot_ms"),
    ("surajssd-a100-40gb-tp8-qps1", "median_tpot_ms"),
])
def test_predictions_within_25_percent(runs, catalog, run_id, metric):
    run = runs[run_id]
    got = bench.predict(run, catalog[run.profile])[metric]
    assert got == pytest.approx(run.figures[metric], rel=0.25)


def test_poisson_prediction_is_evaluate_at_the_run_rate(runs, catalog):
    run = runs["surajssd-a100-40gb-tp8-qps4"]
    pred = bench.predict(run, catalog[run.profile])
    # TPOT grows with load; the output throughput of a stable run is rate x mean output.
    low = bench.predict(runs["surajssd-a100-40gb-tp8-qps1"], catalog[run.profile])
    assert pred["mean_tpot_ms"] > low["mean_tpot_ms"]
    assert pred["output_throughput_tps"] == pytest.approx(4.0 * 212.2, rel=0.01)
    assert 4.0 < pred["saturation_rps"] < 20.0


def test_sharegpt_vllm_round_trips_from_its_source():
    inp, out = bench.sharegpt_vllm_lengths(data_dir() / bench.SHAREGPT_SOURCE)
    shipped = load_workload("sharegpt-vllm")
    rebuilt = workload_from_requests(inp, out, name="x", source="x")
    assert np.array_equal(shipped.input_tokens, rebuilt.input_tokens)
    assert np.array_equal(shipped.output_tokens, rebuilt.output_tokens)
    assert np.allclose(shipped.weights, rebuilt.weights)
    assert shipped.max_total_tokens <= bench.MAX_TOTAL_TOKENS


def test_sharegpt_vllm_has_the_published_length_mix():
    levels, qi, qo = bench.length_quantiles()
    wl = load_workload("sharegpt-vllm")
    a, b = wl.sample(50_000, np.random.default_rng(1))
    for level in (0.25, 0.5, 0.75, 0.9):
        assert np.quantile(a, level) == pytest.approx(np.interp(level, levels, qi), rel=0.05)
        assert np.quantile(b, level) == pytest.approx(np.interp(level, levels, qo), rel=0.05)
    # the published run's means: 213.3 prompt and 212.2 output tokens
    assert wl.mean_input_tokens == pytest.approx(213.3, rel=0.03)
    assert wl.mean_output_tokens == pytest.approx(212.2, rel=0.03)


def test_rescaled_workload_hits_the_run_means():
    wl = bench.rescaled(load_workload("sharegpt-vllm"), 213.3, 212.2)
    assert wl.mean_input_tokens == pytest.approx(213.3, rel=0.01)
    assert wl.mean_output_tokens == pytest.approx(212.2, rel=0.01)
    same = bench.rescaled(load_workload("sharegpt-vllm"), None, None)
    assert np.array_equal(np.sort(same.input_tokens),
                          np.sort(load_workload("sharegpt-vllm").input_tokens))


def test_engine_model_tpot_is_the_pro_rata_closed_form(runs, catalog):
    # evaluate's mean TPOT on one instance is tau + d with prefill charged pro rata;
    # whole chunks (the model before 2026-12-02) give a far slower step at 8 req/s.
    run = runs["sglang-vllm060-h100-70b-tp4-rps8"]
    prof = catalog[run.profile]
    wl = bench.run_workload(run)
    model = bench.predict(run, prof)["mean_tpot_ms"]
    assert bench.pro_rata_tpot_ms(prof, wl, run.rate_rps) == pytest.approx(model, rel=1e-3)
    assert bench.pro_rata_tpot_ms(prof, wl, run.rate_rps, pro_rata=False) > 1.5 * model


def test_large_burst_is_capped_at_the_engine_batch(runs, catalog):
    # 5,000 prompts at once: the replay runs at most max_slots (256) sequences per step.
    run = runs["sglang-vllm060-h100-70b-tp4-offline"]
    prof = catalog[run.profile]
    got = bench.predict(run, prof)["request_throughput_rps"]
    assert got == pytest.approx(run.figures["request_throughput_rps"], rel=0.25)


def test_evaluate_reports_output_token_throughput():
    from fleetopt_milp.evaluate import Slo, evaluate_fleet, single_pool_fleet

    prof = dict(load_catalog([]).profiles)["H100-Llama-3-70B-tp4-vllm"]
    wl = load_workload("sharegpt-vllm")
    slo = Slo(60_000.0)
    fleet = single_pool_fleet(prof, 1, 2048, slo)
    ev = evaluate_fleet(fleet, wl, 4.0, slo)
    f = ev.to_dict()["fleet"]
    assert f["output_tokens_per_s"] == pytest.approx(4.0 * wl.mean_output_tokens)
    assert f["saturation_output_tokens_per_s"] == pytest.approx(
        ev.saturation_rps * wl.mean_output_tokens)
    # beyond saturation the fleet serves at capacity
    over = evaluate_fleet(fleet, wl, 2.0 * ev.saturation_rps, slo).to_dict()["fleet"]
    assert over["output_tokens_per_s"] == pytest.approx(f["saturation_output_tokens_per_s"],
                                                        rel=1e-3)
