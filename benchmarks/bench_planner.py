"""Planner speed, the paper's reference fleets, and savings on the three archetypes.

Writes three sections of benchmarks/RESULTS.md: ``planner-speed``, ``paper-reproduction``
and ``savings``. Run: ``.venv/bin/python benchmarks/bench_planner.py`` (a few minutes;
``--speed-only`` rewrites only ``planner-speed``).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import md_table, median_time_s, write_section  # noqa: E402

from fleetopt_milp import (  # noqa: E402
    PlanningTables,
    PoolLoad,
    Scenario,
    load_catalog,
    load_workload,
    min_instances,
    plan,
    pool_load,
    queueing,
    resolve_profile,
    service,
    sizing,
)
from fleetopt_milp.planner import plan_candidates  # noqa: E402
from fleetopt_milp.scenario import band_end_tokens  # noqa: E402

CAT = load_catalog()
H100 = resolve_profile(CAT, "paper-H100")
LONG = 65536
PAPER = {  # docs/model.md §5 (paper): homogeneous, pool routing, FleetOpt; B; gamma*
    "azure-2023-cdf": (141, 68, 40, 4096, 2.0),
    "lmsys": (69, 38, 29, 1536, 2.0),
}


def sampled_homogeneous(wl, seed: int, draws: int = 3000) -> int:
    """Homogeneous count with E[S], cs2 and mean prefill from ``draws`` random requests,
    as the paper's simulator estimates them (its cs2 floor of 0.01 kept)."""
    rng = np.random.default_rng(seed)
    lin, lout = wl.sample(draws, rng)
    s = H100.service_s(lin, lout, LONG)
    es = float(np.mean(s))
    cs2 = max(0.01, float(np.mean(s * s)) / es**2 - 1.0)
    load = PoolLoad(np.array([1000.0]), np.array([es]), np.array([cs2]),
                    np.array([H100.slots(LONG)]), np.array([float(np.mean(H100.prefill_s(lin)))]),
                    np.array([[1.0]]))
    return int(min_instances(load, 0.5, 99.0, 0.85, paper_rule=True)[0])


def paper_accounting(sc: Scenario, b: int, gamma: float) -> tuple[int, int]:
    """(n_s, n_l) as the paper's analytical sweep accounts for C&R: the short pool takes the
    rate alpha' lambda at the service moments of requests <= B only (compressed requests not
    recomputed), the long pool takes the rest at the moments of requests > gamma B only."""
    tb = PlanningTables(replace(sc, boundaries_tokens=(b,))).table
    end = int(band_end_tokens(b, gamma))
    pc = sc.compressible_share
    f_b, f_gb = float(sc.workload.cdf(b)), float(sc.workload.cdf(end))
    alpha = f_b + pc * (f_gb - f_b)
    out = []
    for lo, hi, win, share in ((0, b, b, alpha), (end, LONG, LONG, 1.0 - alpha)):
        m = tb.plain([lo], [hi], [win])
        load = pool_load(m, tb, [win], 1.0)  # moments of the range, normalised
        if m.mass[0] <= 0:
            out.append(-1 if share > 1e-9 else 0)
            continue
        load = PoolLoad(np.array([1000.0 * share]), load.mean_service_s, load.cs2,
                        load.slots_per_instance, load.floor_s, load.floor_prob)
        out.append(int(min_instances(load, 0.5, 99.0, 0.85, paper_rule=True)[0]))
    return out[0], out[1]


@contextmanager
def numpy_forms():
    """Plans made by the numpy forms throughout (figures, loads, sizing), as in a process
    that has not loaded the compiled kernels (a one-shot ``fleetopt plan``)."""
    mods = (queueing, service, sizing)
    saved = [m.compiled_kernels for m in mods]
    for m in mods:
        m.compiled_kernels = lambda: None
    try:
        yield
    finally:
        for m, f in zip(mods, saved, strict=True):
            m.compiled_kernels = f


def fresh_process() -> tuple[float, float, float]:
    """In a new interpreter, seconds: ``import fleetopt_milp``; a one-shot ``plan(s)`` (numpy
    forms, numba not loaded); ``plan(s, PlanningTables(s))``, which loads numba and the
    cached kernels. Medians of 3 runs."""
    code = (
        "import time; t0 = time.perf_counter(); import fleetopt_milp as f; "
        "t1 = time.perf_counter(); p = f.resolve_profile(f.load_catalog(), 'paper-H100'); "
        "s = f.Scenario(f.load_workload('azure-2023'), p, 1000.0, 500.0); "
        "t2 = time.perf_counter(); f.plan(s); t3 = time.perf_counter(); "
        "f.plan(s, f.PlanningTables(s)); t4 = time.perf_counter(); "
        "print(t1 - t0, t3 - t2, t4 - t3)")
    runs = [[float(x) for x in subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.split()] for _ in range(3)]
    return tuple(statistics.median(r[i] for r in runs) for i in range(3))


def speed() -> str:
    wl = load_workload("azure-2023")
    sc = Scenario(wl, H100, 1000.0, 500.0)
    tables = PlanningTables(sc)
    windows, gammas, counts, usd, loads = plan_candidates(sc, tables)
    n_cand = windows.shape[0]
    rows_load = PoolLoad.concat(loads)
    plan(sc, tables)  # compile or load the kernels before timing
    t_warm = median_time_s(lambda: plan(sc, tables), repeats=301)
    t_cold = median_time_s(lambda: plan(sc), repeats=11)
    t_size = median_time_s(lambda: min_instances(rows_load, 0.5), repeats=301)
    t_size_np = median_time_s(lambda: min_instances(rows_load, 0.5, use_kernel=False),
                              repeats=101)
    with numpy_forms():
        t_warm_np = median_time_s(lambda: plan(sc, tables), repeats=101)
        t_cold_np = median_time_s(lambda: plan(sc), repeats=11)
    t_tables = median_time_s(lambda: PlanningTables(sc), repeats=11)
    paper_sc = replace(sc, boundaries_tokens=(4096,))
    paper_tables = PlanningTables(paper_sc)
    t_paper_sweep = median_time_s(lambda: plan(paper_sc, paper_tables), repeats=101)
    rng_seed = iter(range(10**6))
    t_sample = median_time_s(lambda: sampled_homogeneous(load_workload("azure-2023-cdf"),
                                                         next(rng_seed)))
    t_import, t_one_shot, t_first_compiled = fresh_process()

    def ms(t):
        return f"{t * 1e3:.3f} ms"

    rows = [
        ["one full plan, moment tables reused (search + baselines + report figures)",
         ms(t_warm), ms(t_warm_np), f"{t_warm_np / t_warm:.1f}"],
        ["one full plan from scratch (tables + search)", ms(t_cold), ms(t_cold_np),
         f"{t_cold_np / t_cold:.2f}"],
        [f"size every pool ({len(rows_load)}: both pools of each candidate)", ms(t_size),
         ms(t_size_np), f"{t_size_np / t_size:.1f}"],
        ["build the exact moment tables", ms(t_tables), "", ""],
        ["the paper's sweep: one boundary (4,096) x 11 gamma values, tables reused",
         ms(t_paper_sweep), "", ""],
        ["size ONE pool from 3,000 sampled requests (the paper's calibration)",
         ms(t_sample), "", ""],
    ]
    return (
        "Script: `benchmarks/bench_planner.py`. Default scenario: paper-H100 (Llama-3-70B, "
        "TP-8), azure-2023 trace (joint lengths), 1000 req/s, P99 TTFT <= 500 ms, 64K long "
        f"pool. Joint search over {tables.boundaries.size} boundaries x "
        f"{tables.gammas.size} gamma values = {n_cand} two-pool candidates, every pool sized "
        "with the exact Erlang C (no cut-offs). The compiled column uses the numba kernels "
        "(`fleetopt_milp/_sizing.py`); the numpy column makes the same plans with the numpy "
        "forms throughout (figures, loads, sizing), as a process that has not loaded the "
        "kernels does, measured in the same run; the ratio is numpy / compiled. Both give the "
        "same instance counts (tests/test_sizing_kernel.py).\n\n"
        + md_table(["what", "median, compiled", "median, numpy", "ratio"], rows)
        + f"\n\nTarget (issue 7): under 1 ms for one full plan with the tables reused. "
        f"Measured: {t_warm * 1e3:.3f} ms, so the target is "
        f"**{'met' if t_warm < 1e-3 else 'not met'}**; from scratch a plan takes "
        f"{t_cold * 1e3:.1f} ms, where building the moment tables dominates. Besides the "
        "kernels, a plan sizes every pool of every candidate and the homogeneous pool in one "
        "call, and the tables keep the candidates' p_c-independent moments.\n\n"
        "One-time costs in a fresh interpreter (medians of 3): `import fleetopt_milp` "
        f"{t_import * 1e3:.0f} ms (numba is not imported); a one-shot `plan(s)` "
        f"{t_one_shot * 1e3:.0f} ms (tables and plan, numpy forms: it does not load numba); "
        f"then `plan(s, PlanningTables(s))` {t_first_compiled:.2f} s, which loads numba and "
        "the cached kernels (compiled once per machine into numba's cache). Loading them "
        f"costs what about {t_first_compiled / max(t_warm_np - t_warm, 1e-9):.0f} plans with "
        "reused tables save, so `plan` without tables (and the `fleetopt plan` command) does "
        "not load them; tables built for reuse do.\n"
    )


def reproduction() -> str:
    rows, notes = [], []
    for name, (p_h, p_pr, p_fo, p_b, p_g) in PAPER.items():
        wl = load_workload(name)
        sc = Scenario(wl, H100, 1000.0, 500.0, paper_compat=True)
        full = plan(sc)
        at_b = plan(replace(sc, boundaries_tokens=(p_b,)))
        samples = [sampled_homogeneous(wl, s) for s in range(200)]
        ns, nl = paper_accounting(sc, p_b, p_g)
        pr, fo = at_b.baselines["pool_routing"], at_b.baselines["fleetopt"]
        best = full.baselines["fleetopt"]
        rows.append([
            name, p_h, full.baselines["homogeneous"].instances,
            f"{min(samples)} / {int(statistics.median(samples))} / {max(samples)}",
            p_pr, f"{pr.instances} ({'+'.join(map(str, pr.pool_instances))})",
            p_fo, f"{fo.instances} ({'+'.join(map(str, fo.pool_instances))}, gamma {fo.gamma:g})",
            f"{ns}+{nl}" if min(ns, nl) >= 0 else f"{ns}+unservable",
            f"{best.instances} (B={best.boundary_tokens:,}, gamma {best.gamma:g})",
        ])
        long_pool = at_b.baselines["pool_routing"]
        tb = PlanningTables(replace(sc, boundaries_tokens=(p_b,))).table
        m = tb.plain([p_b], [LONG], [LONG])
        ld = pool_load(m, tb, [LONG], 1000.0)
        floor = ld.offered_load[0] / (ld.slots_per_instance[0] * 0.85)
        notes.append(
            f"- {name} at B = {p_b:,}, gamma = 1: the long pool receives "
            f"{ld.rate_rps[0]:.1f} req/s with E[S] = {ld.mean_service_s[0]:.2f} s, which is "
            f"{ld.offered_load[0]:,.0f} Erlangs on {ld.slots_per_instance[0]} slots per "
            f"instance. The utilization cap alone needs >= {floor:.1f} instances; this project "
            f"sizes it at {long_pool.pool_instances[1]}. With at least one short-pool "
            f"instance, any pool-routing fleet at this B needs >= {int(np.ceil(floor)) + 1}; "
            f"the paper's is {p_pr}" + (
                ", below that floor whatever the queueing rule." if p_pr < np.ceil(floor) + 1
                else f", which would leave at most {p_pr - int(np.ceil(floor))} instances for "
                f"a short pool that this project sizes at {long_pool.pool_instances[0]} "
                f"({tb.workload.cdf(p_b):.1%} of the traffic)."))
    table = md_table(
        ["workload", "homog. paper", "homog. exact", "homog. sampled min/median/max (200 seeds)",
         "pool routing paper", "pool routing ours at paper B", "FleetOpt paper",
         "FleetOpt ours at paper B", "paper's C&R accounting at paper B, gamma 2",
         "FleetOpt ours, best B and gamma"], rows)
    return (
        "Script: `benchmarks/bench_planner.py`. Instances of Llama-3-70B on paper-H100 "
        "(TP-8), 1000 req/s, P99 TTFT <= 500 ms, 64K long pool, `--paper-compat` (80/20 "
        "split, P99 wait + mean prefill), p_c = 0.75, rho_max = 0.85.\n\n" + table + "\n\n"
        "How to read the differences:\n"
        "- **Homogeneous.** The exact counts (145 and 63) use the service moments computed "
        "exactly from the piecewise-uniform CDF. The paper's 141 and 69 come from 3,000 draws "
        "with one fixed seed. Over 200 seeds the same estimator spreads across the range "
        "shown, which contains both of the paper's figures. The paper's numbers are one draw "
        "of a noisy estimator, not a different model.\n"
        "- **Pool routing at the paper's B.** At gamma = 1 the paper's accounting and this "
        "project's give the same pools, so the only source of difference in the model is "
        "sampling noise in the paper's moments. That noise does not explain the whole gap. "
        "The utilization cap alone puts a floor under the long pool:\n"
        + "\n".join(notes) + "\n"
        "  The paper does not state the modelling choices behind its companion table (for "
        "example the slots or service times it uses per pool), so the gap cannot be traced "
        "further than these bounds.\n"
        "- **FleetOpt (C&R).** The paper's sweep charges compressed requests at the "
        "short-pool service moments of requests <= B, but they arrive at the full B tokens, "
        "the most expensive length in the short pool. It also sizes the long pool from "
        "requests > gamma B only, although (1 - p_c) of the band stays there. The column "
        "'paper's C&R accounting' applies those rules to this project's exact moments. "
        "Neither accounting reaches the paper's 40 or 29, for the same reason as for "
        "pool routing. This project recomputes both pools' moments for every (B, gamma) "
        "(docs/model.md §4).\n"
        "- **Best B.** This project searches B and gamma jointly, over "
        "67 or more boundaries. The paper fixes B at 4K or 1.5K. Where our best B differs, "
        "the fleet at the paper's B is also listed.\n"
    )


def savings() -> str:
    rows = []
    for name in ("azure-2023-cdf", "azure-2023", "lmsys", "agent-heavy"):
        wl = load_workload(name)
        for compat in (True, False):
            p = plan(Scenario(wl, H100, 1000.0, 500.0, paper_compat=compat))
            b = p.baselines
            h = b["homogeneous"].usd_per_hour
            pr = 1 - b["pool_routing"].usd_per_hour / h
            fo = 1 - p.usd_per_hour / h
            rows.append([name, "paper-compat" if compat else "project",
                         b["homogeneous"].instances, b["pool_routing"].instances,
                         b["retrofit"].instances, p.instances,
                         f"{p.boundary_tokens:,}" if p.boundary_tokens else "-", f"{p.gamma:g}",
                         f"{100 * fo:.1f}%", f"{100 * (fo - pr):.1f}"])
    return (
        "Script: `benchmarks/bench_planner.py`. paper-H100, 1000 req/s, P99 TTFT <= 500 ms, "
        "64K long pool, p_c = 0.75. The table gives instance counts; savings are in $/hour "
        "against homogeneous, and the C&R column is in percentage points over pool routing.\n\n"
        + md_table(["workload", "model", "homogeneous", "pool routing", "retrofit", "FleetOpt",
                    "B*", "gamma*", "saving vs homogeneous", "C&R points"], rows)
        + "\n\nThe paper reports savings of 6-82% against homogeneous, with C&R adding "
        "1-44 points. The savings here sit inside that range. The C&R points are smaller "
        "because compressed requests are charged at their real length, B tokens (see "
        "paper-reproduction).\n"
    )


if __name__ == "__main__":
    load_before = os.getloadavg()[0]
    body = speed()
    body += (f"\nLoad average (1 min) of the machine when the timings started and ended: "
             f"{load_before:.1f} and {os.getloadavg()[0]:.1f}, on {os.cpu_count()} cores; "
             "other jobs share it, so repeated runs vary by up to about 2x.\n")
    write_section("planner-speed", "## Planner speed (issues 2 and 7)\n\n" + body)
    if "--speed-only" not in sys.argv:
        write_section("paper-reproduction", "## The paper's reference fleets (issue 2)\n\n"
                      + reproduction())
        write_section("savings", "## Savings on the three archetypes (issue 2)\n\n"
                      + savings())
    print(Path(__file__).resolve().parent.joinpath("RESULTS.md").read_text())
