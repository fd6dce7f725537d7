"""Human-readable reports of plans: rich tables for the terminal.

The plan file (JSON) is :meth:`fleetopt_milp.plan.Plan.to_dict`; this module only renders.
"""

from __future__ import annotations

import math

from rich.console import Group
from rich.table import Table
from rich.text import Text

from .plan import HOURS_PER_YEAR, Plan

__all__ = ["plan_renderable", "fmt_usd"]


def fmt_usd(x: float) -> str:
    """``$1,234`` style; ``-`` for infinite or missing amounts."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"${x:,.0f}" if abs(x) >= 100 else f"${x:,.2f}"


def _pct(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:.1f}%" if abs(x) >= 5e-4 else "0.0%"


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
        head.append(f"\nPlanned for {plan.rate_rps:,.1f} req/s: a peak factor of "
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
                f"{a.rate_rps:,.1f}", _pct(a.utilization), f"{a.p99_ttft_ms:,.0f}",
                f"{100 * a.slo_miss_share:.2f}%", fmt_usd(a.usd_per_hour),
                fmt_usd(a.usd_per_hour * HOURS_PER_YEAR))
    pools.add_row("fleet", "", "", "", str(plan.instances), str(plan.gpus), f"{plan.rate_rps:,.1f}",
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
    if plan.verification:
        v = plan.verification
        parts.append(Text(f"Verification: {v.get('summary', v)}"))
    parts.append(Text(f"Planned in {plan.planner_ms:.2f} ms.", style="dim"))
    for w in plan.warnings:
        parts.append(Text(f"warning: {w}", style="yellow"))
    return Group(*parts)
