"""A plan's report: PNG figures and one self-contained HTML page (``fleetopt report``).

The page opens with a plain-language summary, then shows the figures of
:mod:`~fleetopt_milp.plots` (embedded as base64 PNG, so the page needs no network and no
other file), the pools, the baselines and every recorded input. docs/reports.md describes
the page and how to read each figure.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass
from pathlib import Path

from . import plots
from . import report_data as rd
from .errors import FleetOptError
from .plan import Plan
from .report import fmt_usd

__all__ = ["ReportFiles", "summary_paragraphs", "write_report"]

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{margin-top:1.6em;border-bottom:1px solid #ddd}
.summary{background:#f4f8fb;border-left:4px solid #1f77b4;padding:.6em 1.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555;max-width:900px}
img{max-width:100%;border:1px solid #eee}.warn{color:#a15c00}code{font-size:.9em}
"""


@dataclass(frozen=True)
class ReportFiles:
    """What :func:`write_report` wrote: the HTML page and each PNG figure by name."""

    html: Path
    figures: dict[str, Path]


def _pct(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:.1f}%" if abs(x) >= 5e-4 else "0.0%"


def _n(instances: int) -> str:
    return f"{instances} instance" + ("" if instances == 1 else "s")


def summary_paragraphs(plan: Plan, scenario=None) -> list[str]:
    """The plan in plain words (plain text, one paragraph per item)."""
    q = f"P{plan.percentile:g}"
    profiles = sorted({a.profile for p in plan.pools for a in p.allocations if a.instances})
    out = [f"Buy {plan.instances} instances ({plan.gpus} GPUs; an instance is one model "
           f"replica of {plan.model}) of {', '.join(profiles) or 'no profile'}, costing "
           f"{fmt_usd(plan.usd_per_hour)} per hour ({fmt_usd(plan.usd_per_year)} per year). "
           f"The fleet serves {plan.rate_rps:,.1f} requests/s of the '{plan.workload}' "
           f"workload with the {q} time to first token (TTFT) at or under {plan.slo_ms:g} ms."]
    if plan.inputs is not None and plan.rate_rps > plan.inputs.traffic.rate_rps * (1 + 1e-9):
        mean = plan.inputs.traffic.rate_rps
        out.append(f"Traffic is bursty: the fleet is sized for a peak of {plan.rate_rps:,.1f} "
                   f"requests/s, {plan.rate_rps / mean:.2f} times the mean {mean:,.1f}.")
    wl = None if scenario is None else scenario.workload
    if plan.boundary_tokens is None:
        out.append("One pool, sized for the longest request, is the cheapest fleet here: "
                   "splitting by length saves nothing.")
    else:
        b = plan.boundary_tokens
        share = "" if wl is None else f" ({_pct(float(wl.cdf(b)))} of requests)"
        if len(plan.pools) == 2:
            lp = plan.pools[1]
            rest = (f"Longer requests, up to {lp.context_tokens:,} tokens, go to a long pool of "
                    f"{_n(lp.instances)}.")
        else:
            rest = f"Longer requests go to {len(plan.pools) - 1} more pools: " + "; ".join(
                f"({p.lo_tokens:,}, {p.context_tokens:,}] tokens to {_n(p.instances)}"
                for p in plan.pools[1:]) + "."
        out.append(
            f"Requests are split by length (input + output tokens). Those up to B = {b:,} "
            f"tokens{share} go to a short pool of {_n(plan.pools[0].instances)} whose KV cache "
            f"is sized for {b:,}-token requests, so each instance holds more of them at once. "
            + rest)
        bands = []
        for p in plan.pools[:-1]:
            if p.gamma > 1:
                lo, hi = p.context_tokens, int(rd.band_end_tokens(p.context_tokens, p.gamma))
                share = "" if wl is None else \
                    f", {_pct(float(wl.cdf(hi) - wl.cdf(lo)))} of requests"
                bands.append(f"({lo:,}, {hi:,}] tokens (γ = {p.gamma:g}{share}) into the "
                             f"{p.role} pool")
        if bands:
            out.append(
                "Compress-and-Route: of the requests just over a boundary, the "
                f"{plan.compressible_share:.0%} that compress safely are trimmed to the "
                "boundary and served by the cheaper pool below it: " + "; ".join(bands) + ".")
    h = plan.baselines.get("homogeneous")
    if h is not None and h.feasible:
        out.append(f"This is {_pct(plan.saving_vs('homogeneous'))} cheaper than one "
                   f"homogeneous pool ({h.instances} instances, {fmt_usd(h.usd_per_hour)}/hour)"
                   " that serves every request at the long window.")
    if plan.verification:
        out.append("Checked by simulation: " + str(plan.verification.get("summary", "")) + ".")
    if plan.solver:
        out.append(f"Found by the MILP solver (status: {plan.solver.get('status')}).")
    return out


def _table(header: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{th}</tr>{body}</table>"


def _pools_table(plan: Plan) -> str:
    rows = [[p.role, f"({p.lo_tokens:,}, {p.context_tokens:,}]", a.profile, a.tp, a.instances,
             a.gpus, f"{a.rate_rps:,.1f}", _pct(a.utilization), f"{a.p99_ttft_ms:,.0f}",
             f"{100 * a.slo_miss_share:.2f}%", fmt_usd(a.usd_per_hour)]
            for p in plan.pools for a in p.allocations]
    rows.append(["fleet", "", "", "", plan.instances, plan.gpus, f"{plan.rate_rps:,.1f}", "",
                 "", "", fmt_usd(plan.usd_per_hour)])
    return _table(["pool", "lengths (tokens)", "profile", "tp", "instances", "GPUs",
                   "rate (req/s)", "utilization", f"P{plan.percentile:g} TTFT (ms)",
                   "share > SLO", "$/hour"], rows)


def _baselines_table(plan: Plan) -> str:
    rows = [[n.replace("_", " "), "-" if b.boundary_tokens is None else f"{b.boundary_tokens:,}",
             f"{b.gamma:g}", b.instances if b.feasible else "infeasible",
             fmt_usd(b.usd_per_hour), _pct(plan.saving_vs(n)) if b.feasible else b.reason]
            for n, b in plan.baselines.items()]
    return _table(["fleet", "B (tokens)", "gamma", "instances", "$/hour", "this plan saves"],
                  rows)


def _inputs_table(plan: Plan) -> str:
    i = plan.inputs
    if i is None:
        return "<p>This plan file records no inputs (it predates input records).</p>"
    t, o = i.traffic, i.options
    rows = [["command", f"fleetopt {i.command} (fleetopt-milp {i.package_version})"],
            ["workload", i.workload.spec],
            *[["  data file", f"{f.path} sha256 {f.sha256}"] for f in i.workload.files],
            ["rate", f"{t.rate_rps:g} req/s, peak factor {t.peak_factor:g}"],
            ["SLO", f"P{t.percentile:g} TTFT <= {t.slo_ms:g} ms"],
            *[["profile", f"{p.name} ({p.source}): " + ", ".join(
                f"{k}={v}" for k, v in p.values.items() if k not in ("citation", "notes"))]
              for p in i.profiles],
            ["long window", f"{o.long_context_tokens:,} tokens"],
            ["gamma grid", f"1 to {o.gamma_max:g} in {o.gamma_steps} steps"],
            ["p_c, rho_max", f"{o.compressible_share:g}, {o.rho_max:g}"],
            ["compression latency", f"{o.compression_latency_ms:g} ms"],
            ["paper-compat", str(o.paper_compat)]]
    if i.verify is not None and i.verify.verify:
        v = i.verify
        rows.append(["verification", f"{v.candidates} candidates, {v.requests:,} requests, "
                                     f"{v.fidelity} fidelity, seed {v.seed}"])
    if i.solver_status is not None:
        rows.append(["solver status", i.solver_status])
    return _table(["input", "value"], rows)


_CAPTIONS = {
    "length_cdf": "Share of requests at or below each length (input + output tokens). The "
                  "short pool takes everything left of B; with C&R, part of the shaded band "
                  "(B, γB] is compressed into it too.",
    "cost_cliff": "Fleet cost if the boundary were elsewhere, without C&R (γ = 1) and with "
                  "the chosen γ. Steep steps are cost cliffs: moving B past a dense part of the "
                  "CDF pushes many requests into the expensive pool. The star marks the "
                  "equal-marginal-cost point, the bottom of the chosen-γ curve, where moving B "
                  "either way saves nothing (docs/reports.md).",
    "pools": "Each pool's utilization against the cap ρ_max, and its TTFT at the percentile "
             "against the SLO (bars must stay under the dashed lines).",
    "savings": "Cost of each baseline fleet against this plan: homogeneous (one pool), pool "
               "routing (two pools, no C&R), retrofit (C&R added at pool routing's B).",
    "model_vs_sim": "The queueing model's predictions against the discrete-event simulation "
                    "(bars: simulated mean with its 95% interval).",
}


def _figures(plan: Plan, scenario, simulation: dict | None) -> dict:
    figs = {}
    if scenario is not None:
        figs["length_cdf"] = plots.length_cdf_figure(rd.length_cdf(plan, scenario))
        figs["cost_cliff"] = plots.cost_cliff_figure(rd.cost_cliff(plan, scenario))
    figs["pools"] = plots.pools_figure(rd.pool_bars(plan, simulation))
    figs["savings"] = plots.savings_figure(rd.savings(plan))
    panels = rd.comparisons(plan, simulation)
    if panels:
        figs["model_vs_sim"] = plots.model_vs_sim_figure(panels)
    return figs


def write_report(plan: Plan, out_dir: str | Path, simulation: dict | None = None
                 ) -> ReportFiles:
    """Write ``index.html`` and one PNG per figure into ``out_dir`` (created if missing).

    ``simulation``: a ``fleetopt simulate --json`` result of this plan, for the model
    against simulation figure (a verified plan has one from its ``verification`` anyway).
    When the workload cannot be loaded, the page says so and omits the two figures that
    need it.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FleetOptError(f"--out {out}: exists and is not a directory; give a directory")
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    try:
        scenario = rd.scenario_for(plan)
    except FleetOptError as exc:
        scenario = None
        notes.append(f"The workload could not be loaded ({exc}); the length and cost-curve "
                     "figures are omitted.")
    figures, parts = {}, []
    for name, fig in _figures(plan, scenario, simulation).items():
        path = out / f"{name}.png"
        data = plots.save_png(fig, path)
        figures[name] = path
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(f'<figure><img alt="{name}" src="data:image/png;base64,{b64}">'
                     f"<figcaption>{html.escape(_CAPTIONS[name])}</figcaption></figure>")
    summary = "".join(f"<p>{html.escape(p)}</p>" for p in summary_paragraphs(plan, scenario))
    warn = "".join(f'<p class="warn">{html.escape(w)}</p>' for w in (*notes, *plan.warnings))
    title = f"Fleet plan: {plan.workload} at {plan.rate_rps:g} req/s"
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1><div class=\"summary\">{summary}</div>{warn}"
            f"<h2>Figures</h2>{''.join(parts)}"
            f"<h2>Pools</h2>{_pools_table(plan)}<h2>Baselines</h2>{_baselines_table(plan)}"
            f"<h2>Inputs</h2>{_inputs_table(plan)}</body></html>\n")
    index = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(index)
    return ReportFiles(index, figures)
