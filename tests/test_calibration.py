"""Calibration (docs/engine.md §3): round trips from synthetic runs, one-line input errors."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from fleetopt_milp.calibration import (
    BenchmarkServer,
    burst_prediction,
    calibrate,
    read_benchmark,
    read_steps,
    replay_schedule,
    token_compute_floor_ms,
    write_profile_toml,
)
from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.hardware import load_catalog, roofline_floor_ms, roofline_profile


@pytest.fixture(scope="module")
def setting():
    cat = load_catalog()
    gpu, llm = cat.gpu("H100"), cat.llm("Llama-3-70B")
    base = roofline_profile(gpu, llm, 8, name="truth")
    w_floor, h_floor = roofline_floor_ms(base, gpu, llm)
    eta_w, eta_c = 0.45, 0.3
    truth = replace(base, w_ms=w_floor / eta_w, h_ms=h_floor / eta_w,
                    seq_ms=token_compute_floor_ms(llm, gpu, 8) / eta_c, chunk_tokens=2048,
                    prefill_ms_per_token=token_compute_floor_ms(llm, gpu, 8) / 0.4,
                    ttft_overhead_ms=60.0)
    return cat, gpu, llm, truth


def _write_run(path, profile, lin, lout, server=BenchmarkServer()):
    """A burst benchmark file whose timings are exactly ``profile``'s replay on ``server``
    (its ingest time, prefill budget, first-token lag, and decode steps per scheduler call,
    which the streamed gaps carry: one gap per group of ``scheduler_steps`` tokens)."""
    sch = replay_schedule(lin, lout, server.prefill_budget_tokens,
                          scheduler_steps=server.scheduler_steps,
                          output_lag_steps=server.output_lag_steps)
    pf = profile.prefill_ms_per_token
    t = sch.cum_features @ np.array([profile.w_ms, profile.seq_ms,
                                     profile.h_ms / profile.calib_tokens, pf]) * 1e-3
    # The profile's overhead counts the output lag at an idle engine (W per lag step); the
    # replay times the lag's steps itself.
    start = (profile.ttft_overhead_ms - server.output_lag_steps * profile.w_ms
             + server.ingest_ms_per_request * (len(lin) - 1)) * 1e-3
    ttft, itls = [], []
    for i in range(len(lin)):
        if lout[i] == 0:
            ttft.append(0.0)
            itls.append([])
            continue
        t0 = t[sch.first_step[i] + 1]
        ttft.append(t0 + start)
        k = int(lout[i]) - 1
        gaps = max(1, round(k / server.scheduler_steps)) if k else 0
        itls.append([(t[sch.last_step[i] + 1] - t0) / gaps] * gaps)
    d = {"request_rate": "inf", "duration": float(t[-1]) + 0.1, "input_lens": list(map(int, lin)),
         "output_lens": list(map(int, lout)), "ttfts": ttft, "itls": itls,
         "total_input_tokens": int(sum(lin)), "total_output_tokens": int(sum(lout))}
    path.write_text(json.dumps(d))
    return path


def _runs(tmp_path, profile, sizes=(10, 40, 160), server=BenchmarkServer()):
    rng = np.random.default_rng(3)
    out = []
    for n in sizes:
        lin = rng.integers(4, 800, n)
        lout = rng.integers(0, 600, n)
        out.append(read_benchmark(_write_run(tmp_path / f"run{n}.json", profile, lin, lout,
                                             server)))
    return out


def test_round_trip_recovers_the_profile(setting, tmp_path):
    cat, gpu, llm, truth = setting
    fit = calibrate(_runs(tmp_path, truth), [], gpu, llm, 8, "fitted",
                    chunk_tokens=truth.chunk_tokens)
    p = fit.profile
    assert p.source == "calibrated"
    for key in ("w_ms", "h_ms", "seq_ms", "prefill_ms_per_token", "ttft_overhead_ms"):
        assert getattr(p, key) == pytest.approx(getattr(truth, key), rel=1e-6), key
    assert p.chunk_tokens == truth.chunk_tokens
    assert fit.eta_prefill == pytest.approx(0.4, rel=1e-6)
    # (a true ingest of 0 sits on its bound, which the solver approaches to ~1e-6 ms)
    assert fit.median_abs_error < 1e-7 and fit.p90_abs_error < 1e-7
    assert fit.eta_w == pytest.approx(0.45, rel=1e-6)
    assert fit.eta_seq == pytest.approx(0.3, rel=1e-6)
    assert len(p.inputs_sha256) == 3 and all(len(h) == 64 for h in p.inputs_sha256)


def test_round_trip_recovers_the_benchmark_server(setting, tmp_path):
    """Synthetic bursts from a server with a known ingest time, 10 decode steps per
    scheduler call and a one-step first-token lag give back the profile and the server."""
    cat, gpu, llm, truth = setting
    server = BenchmarkServer(ingest_ms_per_request=4.5, scheduler_steps=10,
                             prefill_budget_tokens=2048, output_lag_steps=1)
    runs = _runs(tmp_path, truth, server=server)
    assert [r.scheduler_steps for r in runs] == [10, 10, 10]
    fit = calibrate(runs, [], gpu, llm, 8, "fitted", chunk_tokens=truth.chunk_tokens,
                    prefill_budget_tokens=2048, output_lag_steps=1)
    for key in ("w_ms", "seq_ms", "prefill_ms_per_token", "ttft_overhead_ms"):
        assert getattr(fit.profile, key) == pytest.approx(getattr(truth, key), rel=1e-6), key
    assert fit.server.ingest_ms_per_request == pytest.approx(4.5, rel=1e-6)
    assert fit.server.scheduler_steps == 10 and fit.median_abs_error < 1e-9
    assert "ingest 4.50 ms per request" in fit.profile.notes
    # The held-out burst is predicted exactly with the fitted server, and the ingest of the
    # other requests is what separates a burst's TTFT from the lone-request overhead.
    run = _runs(tmp_path, truth, sizes=(80,), server=server)[0]
    pred = burst_prediction(fit.profile, run, fit.server)
    assert pred.median_ttft_ms == pytest.approx(run.median_ttft_ms, rel=1e-6)
    assert pred.median_tpot_ms == pytest.approx(run.median_tpot_ms, rel=1e-6)
    no_ingest = burst_prediction(fit.profile, run, replace(fit.server, ingest_ms_per_request=0))
    assert pred.median_ttft_ms - no_ingest.median_ttft_ms == pytest.approx(4.5 * 79, rel=1e-6)


def test_multi_step_groups_hold_finished_sequences_to_the_group_end():
    sch = replay_schedule([5, 5], [3, 25], scheduler_steps=10)
    # one prefill step, then groups of 10 decode steps: the short request's last token is
    # streamed with the first group's end, the long one's with the third group's.
    assert list(sch.first_step) == [0, 0]
    assert list(sch.last_step) == [10, 30]
    assert sch.cum_features[11, 1] - sch.cum_features[1, 1] == 20  # both in the first group
    with pytest.raises(FleetOptError, match="scheduler_steps"):
        replay_schedule([5], [3], scheduler_steps=0)


def test_written_profile_loads_in_the_catalogue(setting, tmp_path):
    cat, gpu, llm, truth = setting
    fit = calibrate(_runs(tmp_path, truth), [], gpu, llm, 8, "fitted",
                    chunk_tokens=truth.chunk_tokens)
    out = tmp_path / "fitted.toml"
    write_profile_toml(fit.profile, out)
    loaded = load_catalog([out]).profile("fitted")
    assert loaded.w_ms == pytest.approx(fit.profile.w_ms, rel=1e-5)
    assert loaded.seq_ms == pytest.approx(fit.profile.seq_ms, rel=1e-5)
    assert loaded.inputs_sha256 == fit.profile.inputs_sha256
    assert loaded.fit_observations == fit.profile.fit_observations
    assert loaded.source == "calibrated"


def test_prediction_of_a_held_out_burst_is_exact_for_the_true_profile(setting, tmp_path):
    cat, gpu, llm, truth = setting
    run = _runs(tmp_path, truth, sizes=(80,))[0]
    pred = burst_prediction(truth, run)
    assert pred.median_tpot_ms == pytest.approx(run.median_tpot_ms, rel=1e-9)
    assert pred.median_ttft_ms == pytest.approx(run.median_ttft_ms, rel=1e-9)


def test_step_csv_round_trip_fits_kv_efficiency(setting, tmp_path):
    cat, gpu, llm, truth = setting
    true = replace(truth, h_ms=truth.h_ms * 1.5)  # KV read slower than the weight read
    rng = np.random.default_rng(1)
    b = rng.integers(1, 200, 300).astype(float)
    ctx = b * rng.integers(100, 30000, 300)
    pf = np.where(rng.random(300) < 0.3, rng.integers(1, 4000, 300), 0).astype(float)
    b[(b == 0) & (pf == 0)] = 1
    pf_ms = true.prefill_ms_per_token
    ms = true.w_ms + true.seq_ms * b + true.h_ms * ctx / true.calib_tokens + pf_ms * pf
    path = tmp_path / "steps.csv"
    path.write_text("batch,context_tokens,prefill_tokens,step_ms\n" + "\n".join(
        f"{int(x)},{int(c)},{int(p)},{float(m)!r}" for x, c, p, m in zip(b, ctx, pf, ms, strict=True)))
    fit = calibrate([], [read_steps(path)], gpu, llm, 8, "steps")
    assert fit.kv_fitted
    assert fit.profile.h_ms == pytest.approx(true.h_ms, rel=1e-6)
    assert fit.profile.w_ms == pytest.approx(true.w_ms, rel=1e-6)
    assert fit.profile.ttft_overhead_ms == 0.0


@pytest.mark.parametrize("mutate, field", [
    (lambda d: d.pop("ttfts"), "ttfts"),
    (lambda d: d["output_lens"].pop(), "output_lens"),
    (lambda d: d.__setitem__("total_input_tokens", 1), "total_input_tokens"),
    (lambda d: d.__setitem__("request_rate", 4.0), "request_rate"),
    (lambda d: d["input_lens"].__setitem__(0, -3), "input_lens"),
    (lambda d: d["itls"].__setitem__(1, [0.01] * 10_000), "itls"),
])
def test_malformed_benchmark_names_file_and_field(setting, tmp_path, mutate, field):
    cat, gpu, llm, truth = setting
    path = _write_run(tmp_path / "r.json", truth, np.array([10, 20, 30]), np.array([5, 6, 7]))
    d = json.loads(path.read_text())
    mutate(d)
    path.write_text(json.dumps(d))
    with pytest.raises(FleetOptError) as exc:
        read_benchmark(path)
    msg = str(exc.value)
    assert str(path) in msg and field in msg and "\n" not in msg


def test_malformed_step_csv_names_row_and_field(tmp_path):
    path = tmp_path / "s.csv"
    path.write_text("batch,context_tokens,prefill_tokens,step_ms\n4,100,0,10\n4,abc,0,11\n")
    with pytest.raises(FleetOptError, match=r"s\.csv: row 3: field 'context_tokens'"):
        read_steps(path)
    path.write_text("batch,ctx,step_ms\n")
    with pytest.raises(FleetOptError, match="header"):
        read_steps(path)


def test_one_batch_size_cannot_separate_w_from_per_sequence_cost(setting, tmp_path):
    cat, gpu, llm, truth = setting
    path = tmp_path / "s.csv"
    path.write_text("batch,context_tokens,prefill_tokens,step_ms\n8,100,0,10\n8,200,0,10.1\n")
    with pytest.raises(FleetOptError, match="batch sizes"):
        calibrate([], [read_steps(path)], gpu, llm, 8, "x")


def test_shipped_profiles_load_without_physics_warnings():
    from fleetopt_milp.hardware import profile_warnings

    cat = load_catalog()
    names = [n for n in cat.profiles if n.endswith("-vllm")]
    assert len(names) == 6
    for n in names:
        p = cat.profile(n)
        assert p.source == "calibrated" and p.inputs_sha256 and p.seq_ms > 0
        assert profile_warnings(p, cat) == []


def test_cli_calibrates_and_the_profile_plans(setting, tmp_path):
    import subprocess
    import sys

    cat, gpu, llm, truth = setting
    runs = _runs(tmp_path, truth)
    out = tmp_path / "mine.toml"
    cmd = [sys.executable, "-m", "fleetopt_milp.cli"]
    r = subprocess.run([*cmd, "calibrate", *(x.path for x in runs), "--gpu", "H100", "--model",
                        "Llama-3-70B", "--tp", "8", "--name", "mine", "--chunk-tokens", "2048",
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert load_catalog([out]).profile("mine").w_ms == pytest.approx(truth.w_ms, rel=1e-5)
    r = subprocess.run([*cmd, "plan", "--catalog", str(out), "--gpu", "mine", "--rate", "50",
                        "--workload", "lmsys", "--slo-ms", "1000"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    bad = tmp_path / "bad.json"
    bad.write_text('{"request_rate": "inf", "input_lens": [1, 2]}')
    r = subprocess.run([*cmd, "calibrate", str(bad), "--gpu", "H100", "--model", "Llama-3-70B",
                        "--tp", "8", "--name", "x", "--out", str(tmp_path / "x.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "output_lens" in r.stderr and r.stderr.count("\n") == 1
    r = subprocess.run([*cmd, "calibrate", *(x.path for x in runs), "--gpu", "H100", "--model",
                        "Llama-3-70B", "--tp", "8", "--name", "x", "--output-lag-steps", "-1",
                        "--out", str(tmp_path / "x.toml")], capture_output=True, text=True)
    assert r.returncode == 2 and "--output-lag-steps" in r.stderr and r.stderr.count("\n") == 1
