"""Predict published vLLM serving figures from the calibrated profiles (docs/engine.md §5,
"Against published serving figures"); writes section ``published-serving`` of RESULTS.md.

Figures and citations: ``benchmarks/published_serving.toml``. Every prediction goes through
the public API:

- ``poisson`` runs (``--request-rate R``): one pool of one instance at ``R`` req/s under the
  engine model, the code path of ``fleetopt evaluate`` (``evaluate_fleet`` on
  ``single_pool_fleet``): median TTFT = ``fleet.ttft_ms.p50``, mean / median TPOT =
  ``fleet.tpot_ms.mean`` / ``.p50``;
- ``burst`` runs (``--request-rate inf`` or an offline throughput run): the burst replay of
  ``calibration.burst_prediction`` (its schedule and step times, with the engine's batch cap) on ``BURST_SEEDS`` samples of the run's size from its
  workload (mean of the predictions); request throughput = requests / replayed duration;
  ``saturation_rps`` of ``evaluate`` is shown beside it;
- ``fixed-batch`` runs (vLLM ``benchmark_latency``): the same replay of the fixed batch; the
  offline engine has no HTTP server, so the profile's TTFT overhead is left out.

``--write-workload`` regenerates the ``sharegpt-vllm`` lengths file (data/README.md).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._results import md_table, write_section  # noqa: E402
from fleetopt_milp.calibration import (  # noqa: E402
    DEFAULT_PREFILL_BUDGET_TOKENS,
    replay_schedule,
)
from fleetopt_milp.evaluate import Slo, evaluate_fleet, single_pool_fleet  # noqa: E402
from fleetopt_milp.hardware import Profile, load_catalog  # noqa: E402
from fleetopt_milp.workload import Workload  # noqa: E402
from fleetopt_milp.workload_files import data_dir, load_workload  # noqa: E402

HERE = Path(__file__).resolve().parent
FIGURES = HERE / "published_serving.toml"
KINDS = ("poisson", "burst", "fixed-batch")
METRICS = ("median_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "request_throughput_rps",
           "output_throughput_tps", "mean_latency_ms")
TARGET = 0.25
#: The pool window of a single-instance evaluation: benchmark_serving drops requests with
#: prompt + output above 2,048 tokens (docs/engine.md §5).
WINDOW_TOKENS = 2048
BURST_SEEDS = 16
#: A TTFT SLO loose enough that no figure here depends on it (ms).
LOOSE_SLO_MS = 60_000.0

# benchmark_serving's ShareGPT filter; the sharegpt-vllm lengths file and its source.
SHAREGPT_SOURCE = "dataset_lengths_llama2/sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
SHAREGPT_VLLM = "dataset_lengths_llama2/sharegpt_vllm_bench_llama2.csv"
MIN_TOKENS, MAX_PROMPT_TOKENS, MAX_TOTAL_TOKENS = 4, 1024, 2048


@dataclass(frozen=True)
class PublishedRun:
    """One published run (benchmarks/published_serving.toml): its setup and figures."""

    run_id: str
    source: str
    engine: str
    model: str
    gpu: str
    tp: int
    profile: str
    hardware_match: bool
    kind: str
    requests: int
    setup: str
    figures: dict
    rate_rps: float | None = None
    workload: str | None = None
    mean_input_tokens: float | None = None
    mean_output_tokens: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    scheduler_steps: int | None = None


def load_runs(path: Path = FIGURES, profiles: dict | None = None) -> list[PublishedRun]:
    """Read and check the figures file; ``profiles`` (name -> Profile) checks the profiles."""
    doc = tomllib.loads(path.read_text())
    runs = []
    for run_id, e in doc["runs"].items():
        where = f"{path.name}: [runs.{run_id}]"
        for key in ("source", "engine", "model", "gpu", "tp", "profile", "hardware_match",
                    "kind", "requests", "setup", "figures"):
            if key not in e:
                raise ValueError(f"{where}: missing {key}")
        if not str(e["source"]).startswith("https://"):
            raise ValueError(f"{where}: source must be an https URL")
        if e["kind"] not in KINDS:
            raise ValueError(f"{where}: kind {e['kind']!r} is not one of {KINDS}")
        bad = set(e["figures"]) - set(METRICS)
        if bad or not e["figures"]:
            raise ValueError(f"{where}: figures must be some of {METRICS} (got {sorted(bad)})")
        if profiles is not None and e["profile"] not in profiles:
            raise ValueError(f"{where}: profile {e['profile']!r} is not in the catalogue")
        if e["kind"] == "poisson" and not e.get("rate_rps", 0) > 0:
            raise ValueError(f"{where}: a poisson run needs rate_rps > 0")
        if e["kind"] == "fixed-batch" and not (e.get("input_tokens") and e.get("output_tokens")):
            raise ValueError(f"{where}: a fixed-batch run needs input_tokens and output_tokens")
        if e["kind"] != "fixed-batch" and not e.get("workload"):
            raise ValueError(f"{where}: needs a workload")
        fields = {k: v for k, v in e.items() if k not in ("repo", "path", "commit")}
        runs.append(PublishedRun(run_id=run_id, **fields))
    return runs


# ---------------------------------------------------------------------------------------
# The run's workload
# ---------------------------------------------------------------------------------------


def length_quantiles(path: Path = FIGURES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``[workload]`` table of the figures file: quantile levels and the published
    prompt and output lengths (tokens) at them."""
    w = tomllib.loads(path.read_text())["workload"]
    levels = np.asarray(w["levels"], dtype=float)
    qi = np.asarray(w["input_quantiles"], dtype=float)
    qo = np.asarray(w["output_quantiles"], dtype=float)
    if not (levels[0] == 0 and levels[-1] == 1 and np.all(np.diff(levels) > 0)
            and qi.size == qo.size == levels.size and np.all(np.diff(qi) >= 0)
            and np.all(np.diff(qo) >= 0)):
        raise ValueError(f"{path.name}: [workload] needs increasing levels from 0 to 1 and "
                         "non-decreasing quantiles of the same length")
    return levels, qi, qo


def _mapped(values: np.ndarray, levels: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Each value replaced by the target quantile at its mid-rank (ties by order): the
    marginal becomes the target's, the ranks (and so the joint ordering) stay."""
    order = np.argsort(values, kind="stable")
    u = np.empty(values.size)
    u[order] = (np.arange(values.size) + 0.5) / values.size
    return np.maximum(1, np.rint(np.interp(u, levels, quantiles))).astype(np.int64)


def sharegpt_vllm_lengths(source: Path, path: Path = FIGURES) -> tuple[np.ndarray, np.ndarray]:
    """benchmark_serving's ShareGPT filter on a licensed lengths file, then each side mapped
    rank for rank onto the published length quantiles of the figures file's ``[workload]``."""
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    inp = np.array([int(r["num_prefill_tokens"]) for r in rows])
    out = np.array([int(r["num_decode_tokens"]) for r in rows])
    keep = ((inp >= MIN_TOKENS) & (out >= MIN_TOKENS) & (inp <= MAX_PROMPT_TOKENS)
            & (inp + out <= MAX_TOTAL_TOKENS))
    levels, qi, qo = length_quantiles(path)
    return _mapped(inp[keep], levels, qi), _mapped(out[keep], levels, qo)


def write_sharegpt_vllm(directory: Path) -> Path:
    """Write the ``sharegpt-vllm`` lengths file (same columns as its source)."""
    inp, out = sharegpt_vllm_lengths(directory / SHAREGPT_SOURCE)
    path = directory / SHAREGPT_VLLM
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["num_prefill_tokens", "num_decode_tokens", "num_total_tokens", "pd_ratio"])
        for a, b in zip(inp.tolist(), out.tolist(), strict=True):
            w.writerow([a, b, a + b, round(a / b, 6)])
    return path


def rescaled(wl: Workload, mean_input: float | None, mean_output: float | None) -> Workload:
    """``wl`` with its lengths scaled to the given means (tokens; ``None`` keeps a side)."""
    inp = wl.input_tokens.astype(float)
    out = wl.output_tokens.astype(float)
    if mean_input is not None:
        inp = inp * mean_input / wl.mean_input_tokens
    if mean_output is not None:
        out = out * mean_output / wl.mean_output_tokens
    inp = np.maximum(1, np.rint(inp)).astype(np.int64)
    out = np.maximum(1, np.rint(out)).astype(np.int64)
    order = np.argsort(inp + out, kind="stable")
    return Workload(f"{wl.name}-rescaled", wl.source, "trace", inp[order], out[order],
                    wl.weights[order])


def run_workload(run: PublishedRun) -> Workload:
    return rescaled(load_workload(run.workload), run.mean_input_tokens, run.mean_output_tokens)


# ---------------------------------------------------------------------------------------
# Predictions
# ---------------------------------------------------------------------------------------


def _replay(profile: Profile, inp: np.ndarray, out: np.ndarray, offline: bool) -> dict:
    """The burst replay of ``calibration.burst_prediction`` (same schedule, same step
    times), with the engine's batch cap ``max_slots`` (vLLM's ``max_num_seqs``, 256 by
    default in these runs) instead of the replay's default of 1,024: it binds in bursts of
    more than 256 requests. Offline runs have no HTTP server: no TTFT overhead."""
    sch = replay_schedule(inp, out, DEFAULT_PREFILL_BUDGET_TOKENS, max_batch=profile.max_slots)
    pf_ms = profile.prefill_ms_per_token
    coef = np.array([profile.w_ms, profile.seq_ms, profile.h_ms / profile.calib_tokens, pf_ms])
    t_ms = sch.cum_features @ coef
    overhead_ms = 0.0 if offline else profile.ttft_overhead_ms
    ttft = t_ms[sch.first_step + 1] + overhead_ms
    two = out > 1
    tpot = (t_ms[sch.last_step[two] + 1] - t_ms[sch.first_step[two] + 1]) / (out[two] - 1)
    duration_s = (t_ms[-1] + overhead_ms) * 1e-3
    return {"median_ttft_ms": float(np.median(ttft)), "median_tpot_ms": float(np.median(tpot)),
            "request_throughput_rps": inp.size / duration_s,
            "output_throughput_tps": float(out.sum()) / duration_s,
            "mean_latency_ms": duration_s * 1e3}


def predict(run: PublishedRun, profile: Profile) -> dict:
    """The model's figures for ``run`` (the keys of METRICS it can predict), on ``profile``
    with the run's engine setting ``scheduler_steps`` where the source states it."""
    if run.scheduler_steps is not None:
        profile = replace(profile, scheduler_steps=int(run.scheduler_steps))
    if run.kind == "fixed-batch":
        inp = np.full(run.requests, run.input_tokens, dtype=np.int64)
        out = np.full(run.requests, run.output_tokens, dtype=np.int64)
        return _replay(profile, inp, out, offline=True)
    wl = run_workload(run)
    slo = Slo(LOOSE_SLO_MS)
    fleet = single_pool_fleet(profile, 1, WINDOW_TOKENS, slo)
    if run.kind == "burst":
        preds = []
        offline = "benchmark_throughput" in run.setup
        for seed in range(BURST_SEEDS):
            inp, out = wl.sample(run.requests, np.random.default_rng(seed))
            preds.append(_replay(profile, inp, out, offline))
        res = {k: float(np.mean([p[k] for p in preds])) for k in preds[0]}
        res["saturation_rps"] = evaluate_fleet(fleet, wl, 1.0, slo).saturation_rps
        return res
    ev = evaluate_fleet(fleet, wl, run.rate_rps, slo).to_dict()["fleet"]
    return {"median_ttft_ms": ev["ttft_ms"]["p50"], "mean_tpot_ms": ev["tpot_ms"]["mean"],
            "median_tpot_ms": ev["tpot_ms"]["p50"], "saturation_rps": ev["saturation_rps"],
            "mean_batch": ev["mean_batch"],
            "request_throughput_rps": min(run.rate_rps, ev["saturation_rps"]),
            "output_throughput_tps": ev["output_tokens_per_s"]}


def prefill_charge_ms(profile: Profile, wl: Workload) -> tuple[float, float]:
    """Prefill per request (ms): by whole chunks (``P = H + p chunk`` per chunk, as the
    engine model charged it before 2026-12-02) and pro rata (``H`` per chunk + ``p`` per
    token, as it does now, docs/engine.md §2)."""
    k = np.ceil(wl.input_tokens / profile.chunk_tokens)
    p = profile.prefill_ms_per_token
    model = float(wl.weights @ (k * (profile.h_ms + p * profile.chunk_tokens)))
    pro_rata = float(wl.weights @ (k * profile.h_ms + p * wl.input_tokens))
    return model, pro_rata


def pro_rata_tpot_ms(profile: Profile, wl: Workload, rate_rps: float,
                     pro_rata: bool = True) -> float | None:
    """The engine model's mean TPOT ``tau + d``, ``tau = W / (1 - lambda E[g])``
    (docs/engine.md §2, one instance), in closed form from the requests, with each prompt's
    prefill charged pro rata (``H`` per chunk + ``p`` per token, as the model does) or, with
    ``pro_rata=False``, by whole chunks (as it did before). ``None`` where that operating
    point is unstable."""
    li = wl.input_tokens.astype(float)
    lo = wl.output_tokens.astype(float)
    k = np.ceil(li / profile.chunk_tokens)
    a = k + lo
    q = lo * li + lo * (lo + 1) / 2
    prefill = li if pro_rata else k * profile.chunk_tokens
    g = (k * profile.h_ms + profile.prefill_ms_per_token * prefill + profile.seq_ms * a
         + profile.h_ms / profile.calib_tokens * q)
    e_g = float(wl.weights @ g)
    # d: a decoding sequence's own cost per step (its j-th token reads L_in + j tokens).
    d = float(wl.weights @ (profile.seq_ms + profile.h_ms / profile.calib_tokens
                            * (li + (lo + 1) / 2)))
    load = rate_rps * e_g * 1e-3
    return None if load >= 1 else profile.w_ms / (1 - load) + d


def rows_for(runs: list[PublishedRun], catalog: dict) -> list[dict]:
    rows = []
    for run in runs:
        pred = predict(run, catalog[run.profile])
        for metric, value in run.figures.items():
            got = pred.get(metric)
            err = None if got is None or not math.isfinite(got) else got / value - 1.0
            rows.append({"run": run, "metric": metric, "published": value, "predicted": got,
                         "error": err, "pred": pred})
    return rows


def _fmt(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:,.3g}" if abs(x) < 100 else f"{x:,.0f}"


def report(rows: list[dict], runs: list[PublishedRun], catalog: dict) -> str:
    def table(sel):
        return md_table(
            ["run", "profile", "kind", "rate (req/s)", "metric", "published", "predicted",
             "error", "saturation (req/s)"],
            [[r["run"].run_id, r["run"].profile, r["run"].kind, _fmt(r["run"].rate_rps),
              r["metric"], _fmt(r["published"]), _fmt(r["predicted"]),
              "-" if r["error"] is None else f"{r['error']:+.0%}",
              _fmt(r["pred"].get("saturation_rps"))] for r in sel])

    def count(sel):
        ok = sum(1 for r in sel if r["error"] is not None and abs(r["error"]) <= TARGET)
        return f"{ok}/{len(sel)}"

    match = [r for r in rows if r["run"].hardware_match]
    other = [r for r in rows if not r["run"].hardware_match]
    by_metric = {}
    for r in match:
        by_metric.setdefault(r["metric"], []).append(r)
    lines = [
        "Published vLLM figures (`benchmarks/published_serving.toml`: source, engine, GPU, "
        "setup of each) predicted from the calibrated profiles, none of which was fitted on "
        "them. Poisson runs through `evaluate_fleet` (one instance, engine model, window "
        f"{WINDOW_TOKENS}); bursts and fixed batches through the burst replay of `calibration` "
        f"(`replay_schedule` with `burst_prediction`'s step times, at the batch cap "
        f"`max_slots`; bursts: mean over {BURST_SEEDS} samples of the run's size). Workload "
        "`sharegpt-vllm`, rescaled to the run's own mean lengths where the source gives "
        "them. Error = predicted / published - 1.",
        "",
        f"**Same GPU as the profile: within {TARGET:.0%} in {count(match)}** ("
        + ", ".join(f"{m} {count(v)}" for m, v in by_metric.items()) + ").",
        "",
        table(match),
        "",
        f"**Other GPU than the profile** (A100-SXM4-40GB and A100-80GB-PCIe runs predicted "
        f"with the A100-80GB SXM profiles; not counted): within {TARGET:.0%} in {count(other)}.",
        "",
        table(other),
        "",
        "Prefill charged per request on the `sharegpt-vllm` mix (ms): by whole chunks "
        "`ceil(L_in / chunk) (H + p chunk)`, as the engine model and the engine simulation "
        "charged it until 2026-12-02 (this benchmark found it: TPOT +80% and +271% at 8 "
        "req/s, saturation about half the measured throughput), against pro rata "
        "`ceil(L_in / chunk) H + p L_in`, as both charge it now; and the profile's fixed "
        "TTFT overhead:",
        "",
    ]
    wl = load_workload("sharegpt-vllm")
    prof_rows = []
    for name in sorted({r.profile for r in runs}):
        m, pr = prefill_charge_ms(catalog[name], wl)
        prof_rows.append([name, f"{m:.1f}", f"{pr:.1f}", f"{m / pr:.1f}x",
                          f"{catalog[name].ttft_overhead_ms:.0f}"])
    lines.append(md_table(["profile", "whole chunks (ms)", "pro rata (ms)", "ratio",
                           "TTFT overhead (ms)"], prof_rows))
    lines += ["", "Repeat: `PYTHONPATH=. python benchmarks/bench_published.py`."]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--write-workload", action="store_true",
                    help="regenerate data/" + SHAREGPT_VLLM + " and stop")
    args = ap.parse_args(argv)
    if args.write_workload:
        print(write_sharegpt_vllm(data_dir()))
        return
    catalog = dict(load_catalog([]).profiles)
    runs = load_runs(FIGURES, catalog)
    rows = rows_for(runs, catalog)
    body = report(rows, runs, catalog)
    print(body)
    write_section("published-serving", body)


if __name__ == "__main__":
    main()
