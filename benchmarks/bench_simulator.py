"""Benchmark the discrete-event simulator and the model's fidelity against it (issue 3).

Writes the ``simulator`` section of ``benchmarks/RESULTS.md`` (``_results.write_section``;
other sections untouched):

1. speed: simulated requests/s per fidelity on one core (median of repeats) and the
   wall time of a 1,000,000-request ``slot`` run;
2. closed forms: M/M/1, M/M/c (mean wait, wait tail) and M/D/1 against the ``slot`` kernel;
3. fidelity: analytical utilization and P99 TTFT against ``slot`` simulation of planner
   plans on azure-2023, lmsys, agent-heavy and mooncake-conversation at several rates;
4. how conservative the model is against the ``engine`` simulator;
5. certification: plans of the paper's rule (P99 wait + mean prefill) and of this
   project's tail rule, simulated; the paper-rule plans that miss their SLO;
6. bursty traffic: the Azure code trace replayed against a plan sized for Poisson
   arrivals at its mean rate, and plans sized from its busiest window.

Run: ``.venv/bin/python benchmarks/bench_simulator.py`` (about 3 minutes on 2 cores);
``--quick`` for a smoke run (fewer requests; the section says so).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import md_table as table  # noqa: E402
from _results import write_section  # noqa: E402

from fleetopt_milp.errors import FleetOptError  # noqa: E402
from fleetopt_milp.hardware import load_catalog, resolve_profile  # noqa: E402
from fleetopt_milp.planner import plan  # noqa: E402
from fleetopt_milp.queueing import erlang_c  # noqa: E402
from fleetopt_milp.scenario import Scenario  # noqa: E402
from fleetopt_milp.simulator import (  # noqa: E402
    certification_from,
    simulate,
    slot_start_times,
    t_interval,
)
from fleetopt_milp.workload import load_workload  # noqa: E402

SLO_MS = 500.0
WORKLOADS = (("azure-2023", 65536), ("lmsys", 65536), ("agent-heavy", 65536),
             ("mooncake-conversation", 131072))


def fmt(x: float, nd: int = 3) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:.{nd}f}"


def ci(e, nd: int = 3) -> str:
    if not math.isfinite(e.lo):
        return fmt(e.mean, nd)
    return f"{e.mean:.{nd}f} ± {e.half_width:.{nd}f}"


def residual_s(p) -> float:
    """Longest mean residual service time E[S](1 + cs2)/2 of a plan's allocations (s)."""
    return max(a.mean_service_s * (1 + a.cs2) / 2 for pool in p.pools for a in pool.allocations
               if a.rate_rps > 0)


def requests_for(p, rate: float, lo: int, hi: int) -> int:
    """Enough requests for the warm-up (3 residuals) and ~40 residuals of measurement."""
    return int(min(max(rate * 43 * residual_s(p), lo), hi))


# ---------------------------------------------------------------------------------------


def bench_speed(profile, quick: bool) -> str:
    wl = load_workload("azure-2023")
    p = plan(Scenario(wl, profile, 1000.0, SLO_MS))
    simulate(p, wl, n_requests=2000, replications=2, workers=1)  # compile / load the cache
    simulate(p, wl, n_requests=2000, replications=2, workers=1, fidelity="engine")
    reps = 3 if quick else 5
    slot_rate, slot_wall = [], []
    n_slot = 200_000 if quick else 1_000_000
    for r in range(reps):
        res = simulate(p, wl, n_requests=n_slot, replications=1, workers=1, seed=r)
        slot_rate.append(res.requests_per_s)
        slot_wall.append(res.wall_s)
    eng_rate = []
    n_eng = 50_000 if quick else 200_000
    for r in range(3):
        res = simulate(p, wl, n_requests=n_eng, replications=1, workers=1, seed=r,
                       fidelity="engine")
        eng_rate.append(res.requests_per_s)
    rows = [
        ["slot", f"{n_slot:,}", str(reps), f"{statistics.median(slot_rate):,.0f}",
         "1,000,000", f"{statistics.median(slot_wall):.2f} s" if n_slot == 1_000_000 else "-"],
        ["engine", f"{n_eng:,}", "3", f"{statistics.median(eng_rate):,.0f}", "50,000", "-"],
    ]
    return ("### Speed (one core)\n\nazure-2023, paper-H100, the plan for 1,000 req/s "
            f"({p.instances} instances in {len(p.pools)} pools). Requests/s = simulated "
            "requests per second of one replication on one core: sampling, routing, the "
            "kernel and the statistics (median of repeats). Wall = the whole `simulate` "
            "call (analytical values included).\n\n" + table(
                ["fidelity", "requests/run", "repeats", "median requests/s", "target",
                 "1M-request run, wall"], rows))


def bench_closed_forms(quick: bool) -> str:
    n = 100_000 if quick else 400_000
    reps = 6

    def waits(rate, draw, c, seed):
        out = []
        for r in range(reps):
            g = np.random.default_rng([seed, r])
            arr = np.cumsum(g.exponential(1 / rate, n))
            w = slot_start_times(arr, draw(g, n), c) - arr
            out.append(w[n // 10:])
        return out

    rows = []

    def add(name, exact, samples):
        e = t_interval(samples)
        inside = e.lo <= exact <= e.hi
        rows.append([name, f"{exact:.4f}", ci(e, 4), f"{e.mean / exact:.4f}",
                     "yes" if inside else "**no**"])

    w = waits(0.7, lambda g, k: g.exponential(1.0, k), 1, 1)
    add("M/M/1 rho=0.7: mean wait rho/(mu-lambda)", 0.7 / 0.3, [x.mean() for x in w])
    w = waits(8.0, lambda g, k: g.exponential(1.0, k), 10, 2)
    ec = float(erlang_c(10, 8.0))
    add("M/M/10 a=8: mean wait C/(c mu-lambda)", ec / 2.0, [x.mean() for x in w])
    add("M/M/10 a=8: P(W>0) = C", ec, [np.mean(x > 0) for x in w])
    add("M/M/10 a=8: P(W>1) = C e^-(c mu-lambda)", ec * math.exp(-2.0),
        [np.mean(x > 1.0) for x in w])
    q95 = math.log(ec / 0.05) / 2.0
    add("M/M/10 a=8: P95 wait ln(C/0.05)/(c mu-lambda)", q95,
        [np.quantile(x, 0.95) for x in w])
    w = waits(0.7, lambda g, k: np.ones(k), 1, 3)
    add("M/D/1 rho=0.7: mean wait rho/(2 mu (1-rho))", 0.7 / 0.6, [x.mean() for x in w])
    w = waits(45.0, lambda g, k: g.exponential(1.0, k), 50, 4)
    add("M/M/50 a=45: mean wait", float(erlang_c(50, 45.0)) / 5.0, [x.mean() for x in w])
    return (f"### Closed forms (slot kernel)\n\n{reps} replications x {n:,} arrivals, first "
            "10% dropped, 95% t-intervals; service rate mu = 1.\n\n" + table(
                ["queue: figure", "exact", "simulated ± 95% CI", "ratio", "exact in CI"],
                rows))


def bench_fidelity(profile, quick: bool):
    rates = (50.0, 1000.0) if quick else (50.0, 200.0, 1000.0)
    rows, util_err, util_hw, p99_ratio, cliff = [], [], [], [], []
    plans = {}
    for name, long_ctx in WORKLOADS:
        wl = load_workload(name)
        for rate in rates:
            p = plan(Scenario(wl, profile, rate, SLO_MS, long_context_tokens=long_ctx))
            plans[(name, rate)] = (wl, p)
            n = requests_for(p, rate, 100_000 if quick else 300_000,
                             400_000 if quick else 3_000_000)
            res = simulate(p, wl, n_requests=n, replications=3 if quick else 5)
            cert = certification_from(res)
            for g, pp in zip(res.pools, p.pools, strict=True):
                a = g.analytical
                err = abs(g.utilization.mean - a.utilization)
                ratio = a.p99_ttft_ms / g.p99_ttft_ms.mean
                util_err.append(err)
                util_hw.append(g.utilization.half_width)
                p99_ratio.append(ratio)
                # Near 1% misses the P99 sits on the congestion cliff and is ill-conditioned.
                m = g.slo_miss_share
                cliff.append(m.hi >= 0.005 and m.lo <= 0.02)
                verdict = next(v for v in cert.pools if v.pool == g.name)
                rows.append([name, f"{rate:g}", g.name, f"{pp.context_tokens:,}",
                             str(pp.instances), fmt(a.cs2, 2), fmt(a.utilization),
                             ci(g.utilization),
                             f"{100 * err:.2f}", fmt(a.p99_ttft_ms, 1), ci(g.p99_ttft_ms, 1),
                             f"{ratio:.2f}", f"{a.slo_miss_share:.4f}",
                             ci(g.slo_miss_share, 4),
                             ("pass" if verdict.passed else "**FAIL**") +
                             ("?" if g.name in cert.inconclusive else ""),
                             f"{n:,}"])
    out1 = [i for i, e in enumerate(util_err) if e > 0.01]
    calm = [r for r, c in zip(p99_ratio, cliff, strict=True) if not c]
    steep = [r for r, c in zip(p99_ratio, cliff, strict=True) if c]
    summary = (
        f"Pools: {len(util_err)}. Utilization, |analytical - simulated|: median "
        f"{100 * statistics.median(util_err):.2f} points, max {100 * max(util_err):.2f} points; "
        f"{len(util_err) - len(out1)}/{len(util_err)} within 1 point"
        + (", the others within " + ", ".join(
            f"{100 * util_err[i]:.2f} (simulated ± {100 * util_hw[i]:.2f})" for i in out1)
           + " points: heavy-tailed long pools whose simulated utilization converges slowly"
           if out1 else "")
        + f". P99 TTFT, analytical / simulated, {len(calm)} pools whose simulated miss share "
        f"is clear of the 0.5-2% band: median {statistics.median(calm):.2f}, range "
        f"{min(calm):.2f}-{max(calm):.2f}, {sum(abs(r - 1) <= 0.1 for r in calm)} within 10%; "
        "the model is conservative where cs2 is large (lmsys short pool, cs2 12). "
        + (f"{len(steep)} pools miss about 1% of requests: there the P99 sits on the "
           "congestion cliff and moves by up to seconds between replications (ratios "
           f"{', '.join(f'{r:.2f}' for r in steep)}); the miss share, which certification "
           "uses, is the stable figure (docs/model.md §3)." if steep else ""))
    text = (
        "### Fidelity of the model (slot simulation of planner plans)\n\n"
        f"paper-H100, P99 TTFT <= {SLO_MS:g} ms, project tail rule, each workload's own "
        "lengths (trace workloads: joint input/output; lmsys and agent-heavy: the paper's "
        "CDFs with the 80/20 split); long context 64K (mooncake: 128K). Poisson arrivals, 5 "
        "replications (quick: 3) of the requests shown, warm-up 3 mean residual service "
        "times. `pass?` = passed with an interval straddling the 1% target.\n\n"
        + summary + "\n\n" + table(
            ["workload", "req/s", "pool", "window", "inst.", "cs2", "util model", "util sim",
             "abs. diff, pts", "P99 model ms", "P99 sim ms", "model/sim", "miss model",
             "miss sim", "cert.", "requests"], rows))
    return text, plans


def bench_engine(plans, quick: bool) -> str:
    rate = 200.0 if (("azure-2023", 200.0) in plans) else 50.0
    rows, util_ratio, speed, worse = [], [], [], []
    for name, _ in WORKLOADS:
        wl, p = plans[(name, rate)]
        n = requests_for(p, rate, 50_000 if quick else 150_000, 150_000 if quick else 600_000)
        res = simulate(p, wl, fidelity="engine", n_requests=n, replications=3)
        speed.append(f"{name} {res.requests_per_s:,.0f}")
        for g in res.pools:
            a = g.analytical
            util_ratio.append(g.utilization.mean / a.utilization)
            if g.slo_miss_share.lo > max(a.slo_miss_share, 0.0) + 1e-4:
                worse.append(f"{name} {g.name} ({100 * g.slo_miss_share.mean:.1f}% vs "
                             f"{100 * a.slo_miss_share:.2f}% predicted)")
            rows.append([name, g.name, fmt(a.utilization), ci(g.utilization),
                         f"{g.utilization.mean / a.utilization:.2f}", fmt(a.p99_ttft_ms, 1),
                         ci(g.p99_ttft_ms, 1), f"{a.slo_miss_share:.4f}",
                         ci(g.slo_miss_share, 4), ci(g.mean_tpot_ms, 2),
                         fmt(g.preemptions_per_request.mean, 3)])
    return (f"### How conservative the model is (engine simulation, {rate:g} req/s)\n\n"
            "The same plans under continuous batching (join-the-shortest-queue dispatch, "
            "chunked prefill, batch cap slots(C), KV budget), 3 replications. The model "
            "charges every iteration at a full batch of full-length contexts, so engine "
            "slot occupancy is lower (median engine/model utilization "
            f"{statistics.median(util_ratio):.2f}); the engine's TTFT adds the wait for the "
            "running iteration and prefill inside a busy batch, which the model's "
            "prefill floor leaves out: a chunk of a long prompt shares its iteration with "
            "the decoding batch's KV reads. So the model is conservative in capacity but "
            "optimistic in TTFT where prompts are long; pools whose engine miss share is "
            "significantly above the prediction: " + ("; ".join(worse) or "none") +
            ". Engine speed (requests/s per core): " + "; ".join(speed) + ".\n\n"
            + table(["workload", "pool", "util model", "util engine", "engine/model",
                     "P99 model ms", "P99 engine ms", "miss model", "miss engine",
                     "TPOT ms", "preempt/req"], rows))


def bench_certification(profile, quick: bool) -> str:
    cases = [("azure-2023-cdf", 65536), ("lmsys", 65536), ("agent-heavy", 65536),
             ("azure-2023", 65536), ("mooncake-conversation", 131072)]
    rates = (200.0,) if quick else (20.0, 200.0, 1000.0)
    slos = (150.0, 500.0)
    rows = []
    counts = {(slo, rule): [0, 0] for slo in slos for rule in ("paper", "project")}
    worst = None
    for slo in slos:
        for name, long_ctx in cases:
            wl = load_workload(name)
            for rate in rates:
                for rule in ("paper", "project"):
                    try:
                        p = plan(Scenario(wl, profile, rate, slo, long_context_tokens=long_ctx,
                                          paper_compat=rule == "paper"))
                    except FleetOptError:  # prefill alone misses this SLO
                        continue
                    n = requests_for(p, rate, 100_000 if quick else 200_000,
                                     300_000 if quick else 1_000_000)
                    res = simulate(p, wl, n_requests=n, replications=3 if quick else 5)
                    cert = certification_from(res)
                    counts[(slo, rule)][0] += 1
                    counts[(slo, rule)][1] += not cert.certified
                    for g, pp, v in zip(res.pools, p.pools, cert.pools, strict=True):
                        if not v.passed:
                            rows.append([f"{slo:g}", rule, name, f"{rate:g}", g.name,
                                         str(pp.instances), f"{p.usd_per_hour:,.0f}",
                                         fmt(pp.p99_ttft_ms, 1), ci(g.p99_ttft_ms, 1),
                                         f"{pp.slo_miss_share:.4f}", ci(g.slo_miss_share, 4)])
                            excess = g.slo_miss_share.mean
                            if rule == "paper" and (worst is None or excess > worst[0]):
                                worst = (excess, slo, name, rate, g.name, pp.p99_ttft_ms,
                                         g.p99_ttft_ms, g.slo_miss_share)
    lines = [f"- SLO {slo:g} ms, {rule} rule: {counts[(slo, rule)][1]} of "
             f"{counts[(slo, rule)][0]} plans fail" for slo in slos
             for rule in ("paper", "project")]
    head = (
        "### Certification: plans that miss their SLO in slot simulation\n\n"
        f"{len(cases)} workloads x rates {', '.join(f'{r:g}' for r in rates)} req/s x P99 "
        f"TTFT SLOs {' and '.join(f'{s:g}' for s in slos)} ms, planned twice: with the "
        "paper's rule (P99 wait + mean prefill <= SLO; `--paper-compat`, so 80/20 lengths "
        "too) and with this project's rule (the tail of wait + prefill), then simulated "
        "(slot, 5 replications). A pool fails when the lower end of its simulated miss "
        "share's 95% interval is above 1%. Scenarios whose prefill alone misses the SLO are "
        "skipped (the planner reports them infeasible).\n\n" + ";\n".join(lines) + ".\n")
    if worst is not None:
        _, slo, name, rate, pool, pred, sim, miss = worst
        head += (f"\nThe clearest paper-rule failure: {name} at {rate:g} req/s, SLO {slo:g} "
                 f"ms, pool {pool}: predicted P99 {pred:.0f} ms, simulated "
                 f"{sim.mean:.0f} ± {sim.half_width:.0f} ms, {100 * miss.mean:.1f}% of "
                 "requests over the SLO. The mean prefill hides the prefill tail of long "
                 "prompts (the paper's own simulator found 435 ms predicted, 518 ms "
                 "measured). At 500 ms the 0.85 utilization cap binds first and paper-rule "
                 "plans sit just under 1% misses while their P99 predictions are several "
                 "times too low.\n")
    if rows:
        head += "\n" + table(["SLO ms", "rule", "workload", "req/s", "pool", "inst.",
                              "fleet $/h", "P99 model ms", "P99 sim ms", "miss model",
                              "miss sim"], rows)
    else:
        head += "\nNo plan failed.\n"
    return head


def bench_bursty(profile, quick: bool) -> str:
    wl = load_workload("azure-code")
    native = wl.trace
    target = 200.0
    tr = native.scaled_to_rate(target)
    ia = np.diff(native.arrival_s)
    rows = []
    plans = [("Poisson at the mean rate", target)] + [
        (f"busiest {w:g} s window", tr.busiest_window_rate_rps(w)) for w in (30, 10, 5, 1)]
    for label, rate in plans:
        p = plan(Scenario(wl, profile, rate, SLO_MS))
        replay = simulate(p, wl, trace=tr, batches=10)
        poisson = simulate(p, wl, rate_rps=target, n_requests=60_000 if quick else 300_000,
                           replications=5)
        f, pf = replay.fleet, poisson.fleet
        rows.append([label, f"{rate:.1f}", f"{rate / target:.2f}", str(p.instances),
                     f"{p.usd_per_hour:,.0f}", ci(pf.slo_miss_share, 4),
                     ci(pf.p99_ttft_ms, 0), ci(f.slo_miss_share, 4), ci(f.p99_ttft_ms, 0),
                     ci(f.utilization, 3)])
    return (
        "### Bursty arrivals: the Azure code trace\n\n"
        f"azure-code: {native.n_requests:,} requests in {native.duration_s:,.0f} s (mean "
        f"{native.mean_rate_rps:.2f} req/s, inter-arrival CV {ia.std() / ia.mean():.1f}), "
        f"time-scaled to a mean of {target:g} req/s ({tr.duration_s:.0f} s; at its native "
        "rate one paper-H100 instance absorbs even its busiest second). Each plan is sized "
        "for Poisson arrivals at the planning rate, then serves the trace with its own "
        "timestamps (batch means over 10 batches) and, for comparison, Poisson arrivals at "
        "the same mean rate (5 replications). The remedy offered: plan at the rate of the "
        "trace's busiest window (`Trace.busiest_window_rate_rps(window_s)`); the peak "
        "factor is that rate over the mean.\n\n" + table(
            ["planning rate", "req/s", "peak factor", "inst.", "$/h",
             "miss, Poisson at mean", "P99 ms, Poisson", "miss, trace replay",
             "P99 ms, replay", "util, replay"], rows))


# ---------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: fewer requests")
    args = ap.parse_args()
    t0 = time.perf_counter()
    profile = resolve_profile(load_catalog(), "paper-H100")
    parts = []
    for title, fn in (("speed", lambda: bench_speed(profile, args.quick)),
                      ("closed forms", lambda: bench_closed_forms(args.quick))):
        print(f"[bench_simulator] {title}...", flush=True)
        parts.append(fn())
    print("[bench_simulator] fidelity...", flush=True)
    text, plans = bench_fidelity(profile, args.quick)
    parts.append(text)
    print("[bench_simulator] engine...", flush=True)
    parts.append(bench_engine(plans, args.quick))
    print("[bench_simulator] certification...", flush=True)
    parts.append(bench_certification(profile, args.quick))
    print("[bench_simulator] bursty...", flush=True)
    parts.append(bench_bursty(profile, args.quick))
    minutes = (time.perf_counter() - t0) / 60
    head = (f"## Simulator (issue 3)\n\nWritten by `benchmarks/bench_simulator.py"
            f"{' --quick' if args.quick else ''}` in {minutes:.1f} min on {os.cpu_count()} "
            "cores.")
    write_section("simulator", "\n\n".join([head] + parts))
    print(f"[bench_simulator] wrote the simulator section of RESULTS.md ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
