"""Human-readable reports of plans and simulations: rich tables for the terminal.

The plan file (JSON) is :meth:`fleetopt_milp.plan.Plan.to_dict` and the simulation file
:meth:`fleetopt_milp.simulator.SimulationResult.to_dict`; this module only renders.
"""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .plan import HOURS_PER_YEAR, Plan

__all__ = ["plan_renderable", "simulation_renderable", "fmt_usd"]


def fmt_usd(x: float) -> str:
    """``$1,234`` style; ``-`` for infinite or missing amounts."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"${x:,.0f}" if abs(x) >= 100 else f"${x:,.2f}"


def _pct(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    if x == 0 or abs(x) >= 5e-4:
        return f"{100 * x:.1f}%"
    return "<0.1%" if x > 0 else ">-0.1%"  # never a positive share shown as zero


def _rate(x: float) -> str:
    """A rate in req/s: one decimal, or two significant digits when that would read 0.0."""
    return f"{x:,.1f}" if x == 0 or abs(x) >= 0.05 else f"{x:.2g}"


def _share(x: float) -> str:
    """A share as a percentage that never rounds a positive share to zero."""
    if x is None or not math.isfinite(x):
        return "-"
    if x == 0 or x >= 1e-4:
        return f"{100 * x:.2f}%"
    return "<0.01%"


def plan_renderable(plan: Plan) -> Group:
    """The plan as rich renderables: a headline, the pools, and the baselines with savings."""
    q = f"P{plan.percentile:g}"
    head = Text.assemble(
        ("Fleet plan", "bold"),
        f"  workload {plan.workload} · {plan.rate_rps:g} req/s · {q} TTFT <= {plan.slo_ms:g} ms"
        f" · model {plan.model} · long window {plan.long_context_tokens:,} tokens"
        f" · method {plan.method}" + (" · paper-compat" if plan.paper_compat else "")
        + (f" · service model {plan.service_model}" if plan.service_model != "slot" else "")
        + (f" · P{plan.tpot_percentile:g} TPOT <= {plan.tpot_slo_ms:g} ms"
           if plan.tpot_slo_ms is not None else ""),
    )
    if plan.extra.get("peak_factor", 1.0) != 1.0:
        head.append(f"\nPlanned for {_rate(plan.rate_rps)} req/s: a peak factor of "
                    f"{plan.extra['peak_factor']:.2f} over the mean {plan.extra['mean_rate_rps']:g}"
                    " req/s")
    if plan.boundary_tokens is not None and plan.gamma > 1:
        split = Text(f"Boundary B = {plan.boundary_tokens:,} tokens, gamma = {plan.gamma:g} "
                     f"(C&R compresses {plan.compressible_share:.0%} of requests in "
                     f"(B, {plan.gamma:g}B] to B tokens)")
    elif plan.boundary_tokens is not None:
        split = Text(f"Boundary B = {plan.boundary_tokens:,} tokens, no compression "
                     "(gamma = 1): pool routing is cheapest")
    else:
        split = Text("One homogeneous pool is cheapest for this scenario")
    pools = Table(title="Pools (an instance is one model replica of tp GPUs)", title_justify="left")
    for col in ("pool", "lengths (tokens)", "profile", "tp", "instances", "GPUs", "rate (req/s)",
                "utilization", f"{q} TTFT (ms)", "share > SLO", "$/hour", "$/year"):
        pools.add_column(col, justify="right" if col not in ("pool", "profile") else "left")
    for p in plan.pools:
        for j, a in enumerate(p.allocations):
            first = j == 0
            pools.add_row(
                p.role if first else "", f"({p.lo_tokens:,}, {p.context_tokens:,}]" if first else "",
                a.profile, str(a.tp), str(a.instances), str(a.gpus),
                _rate(a.rate_rps), _pct(a.utilization), f"{a.p99_ttft_ms:,.0f}",
                _share(a.slo_miss_share), fmt_usd(a.usd_per_hour),
                fmt_usd(a.usd_per_hour * HOURS_PER_YEAR))
    pools.add_row("fleet", "", "", "", str(plan.instances), str(plan.gpus), _rate(plan.rate_rps),
                  "", "", "", fmt_usd(plan.usd_per_hour), fmt_usd(plan.usd_per_year),
                  style="bold")
    base = Table(title="Against the baselines", title_justify="left")
    for col in ("fleet", "B (tokens)", "gamma", "instances", "GPUs", "$/hour", "this plan saves"):
        base.add_column(col, justify="left" if col == "fleet" else "right")
    for name, b in plan.baselines.items():
        saving = plan.saving_vs(name)
        base.add_row(name.replace("_", " "), "-" if b.boundary_tokens is None else
                     f"{b.boundary_tokens:,}", f"{b.gamma:g}",
                     str(b.instances) if b.feasible else "infeasible",
                     str(b.gpus) if b.feasible else "-", fmt_usd(b.usd_per_hour),
                     _pct(saving) if b.feasible else b.reason)
    parts = [head, split, pools, base]
    if any(p.mean_tpot_ms is not None for p in plan.pools):
        from .report_engine import operating_point_table

        parts.insert(3, operating_point_table(plan))
    for p in plan.pools:
        if p.rate_rps == 0 and p.instances == 0:
            parts.insert(2, Text(
                f"Pool '{p.role}' receives no requests of this workload, so it has no instances:"
                f" a request of ({p.lo_tokens:,}, {p.context_tokens:,}] tokens would find no "
                "capacity. Keep one instance there if such requests can occur "
                "(`fleetopt solve --min-instances 1`).", style="yellow"))
    if plan.solver:
        s = plan.solver
        def num(x, fmt):
            return format(x, fmt) if isinstance(x, int | float) else str(x)

        parts.append(Text(f"Solver: {s.get('status')} · objective "
                          f"${num(s.get('objective'), ',.2f')}/h · bound "
                          f"${num(s.get('bound'), ',.2f')}/h · gap {num(s.get('gap'), '.2%')} · "
                          f"{num(s.get('seconds', 0), '.3f')} s"))
        if s.get("objective_kind") == "rate":
            parts.append(Text(f"Highest rate within ${num(s.get('budget_usd_per_hour'), ',.2f')}"
                              f"/h: {num(s.get('rate_rps'), ',.1f')} req/s "
                              f"({num(s.get('rate_upper_rps'), ',.1f')} req/s is infeasible; "
                              f"{len(s['steps']) if isinstance(s.get('steps'), list) else '?'}"
                              " MILPs)."))
    if plan.verification:
        v = plan.verification
        parts.append(Text(f"Verification: {v.get('summary', v)}"))
    parts.append(Text(f"Planned in {plan.planner_ms:.2f} ms.", style="dim"))
    for w in plan.warnings:
        parts.append(Text(f"warning: {w}", style="yellow"))
    return Group(*parts)


def _num(x, fmt: str) -> str:
    """A figure, or ``-`` when it is missing or not finite (a pool without requests)."""
    if x is None or not isinstance(x, int | float) or not math.isfinite(x):
        return "-"
    return format(x, fmt)


def _with_ci(mean, ci, fmt: str) -> str:
    """``mean ± half-width`` of a simulated figure and its interval."""
    if _num(mean, fmt) == "-":
        return "-"
    lo, hi = ci
    if _num(lo, fmt) == "-" or _num(hi, fmt) == "-":
        return format(mean, fmt)
    return f"{format(mean, fmt)} ± {format((hi - lo) / 2, fmt)}"


def simulation_renderable(result, certification) -> Group:
    """A simulation (:class:`~fleetopt_milp.simulator.SimulationResult`) beside the model's
    values, one row per pool and the fleet, then the certification verdict and notes."""
    r, cert = result, certification
    table = Table(title=(f"Simulation ({r.fidelity}, {r.arrivals} at {_rate(r.rate_rps)} "
                         f"req/s, {r.replications} x {r.n_requests:,} requests, "
                         f"± {r.confidence:.0%} interval by {r.ci_method})"))
    for col in ("pool", "requests", "utilization", "model", "P99 TTFT ms", "model",
                f"share > {r.slo_ms:g} ms", "model", "mean wait ms", "TPOT ms", "SLO"):
        table.add_column(col, justify="left" if col in ("pool", "SLO") else "right")
    verdict = {v.pool: v for v in cert.pools}
    for g in (*r.pools, r.fleet):
        d = g.to_dict()
        v = verdict.get(g.name)
        mark = "-" if v is None else ("pass" if v.passed else "FAIL") + (
            "?" if g.name in cert.inconclusive or not v.steady else "")
        table.add_row(
            g.name, f"{g.requests:,}",
            _with_ci(d["utilization"], d["utilization_ci"], ".3f"),
            _num(d.get("analytical_utilization"), ".3f"),
            _with_ci(d["p99_ttft_ms"], d["p99_ttft_ms_ci"], ".1f"),
            _num(d.get("analytical_p99_ttft_ms"), ".1f"),
            _with_ci(d["slo_miss_share"], d["slo_miss_share_ci"], ".4f"),
            _num(d.get("analytical_slo_miss_share"), ".4f"),
            _with_ci(d["mean_wait_ms"], d["mean_wait_ms_ci"], ".2f"),
            _num(d["mean_tpot_ms"], ".2f"), mark)
    parts = [table, Text(f"{cert.status}. {r.requests_per_s:,.0f} simulated requests/s per "
                         f"core, {r.wall_s:.1f} s wall.")]
    parts += [Text(f"note: {note}") for note in r.notes]
    return Group(*parts)
