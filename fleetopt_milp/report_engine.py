"""Terminal reports of the engine features: calibration fits and fleet evaluations."""

from __future__ import annotations

import json

from rich.console import Group
from rich.table import Table
from rich.text import Text

__all__ = ["calibration_renderable", "operating_point_table", "evaluation_renderable",
           "write_json"]


def calibration_renderable(fit) -> Group:
    """A :class:`~fleetopt_milp.calibration.CalibrationFit` as a headline and a table."""
    p = fit.profile
    head = Text.assemble(("Calibrated profile ", "bold"), f"{p.name}: {p.model} on {p.tp} x "
                         f"{p.gpu}, {p.fit_observations} observations")
    t = Table(show_header=True, header_style="bold")
    for col in ("parameter", "value", "efficiency vs peak"):
        t.add_column(col)
    kv_note = "" if fit.kv_fitted else " (= W's, not identified)"
    t.add_row("W, weight read per step", f"{p.w_ms:.3f} ms", f"{fit.eta_w:.3f}")
    t.add_row("s, per decoding sequence", f"{p.seq_ms:.4f} ms", f"{fit.eta_seq:.3f}")
    t.add_row(f"H, KV read of {p.calib_tokens:,} tokens", f"{p.h_ms:.4f} ms",
              f"{fit.eta_kv:.3f}{kv_note}")
    t.add_row("prefill", f"{p.prefill_ms_per_token:.4f} ms/token (chunk {p.chunk_tokens})",
              f"{fit.eta_prefill:.3f}")
    t.add_row("TTFT overhead", f"{p.ttft_overhead_ms:.1f} ms", "-")
    t.add_row("residuals |model/obs - 1|", f"median {fit.median_abs_error:.1%}, "
              f"P90 {fit.p90_abs_error:.1%}", "-")
    return Group(head, t)


def operating_point_table(plan) -> Table:
    """Each pool's operating point under the engine model: batch and TPOT (docs/engine.md §2)."""
    t = Table(title="Operating point per instance (engine model)", title_justify="left")
    pct = f"P{plan.tpot_percentile:g}"
    for col in ("pool", "mean batch", "mean TPOT (ms)", f"{pct} TPOT (ms)"):
        t.add_column(col, justify="left" if col == "pool" else "right")
    for p in plan.pools:
        if p.mean_tpot_ms is None:
            t.add_row(p.role, "-", "-", "-")
            continue
        t.add_row(p.role, f"{p.mean_batch:,.1f}", f"{p.mean_tpot_ms:,.1f}", f"{p.tpot_ms:,.1f}")
    return t


def _ms(x) -> str:
    return "-" if x is None or x != x or x == float("inf") else f"{x:,.1f}"


def evaluation_renderable(ev) -> Group:
    """A :class:`~fleetopt_milp.evaluate.FleetEvaluation` as a headline and tables."""
    s = ev.slo
    slo = f"P{s.percentile:g} TTFT <= {s.ttft_ms:g} ms" + (
        f", P{s.tpot_percentile:g} TPOT <= {s.tpot_ms:g} ms" if s.tpot_ms is not None else "")
    head = Text.assemble(("Fleet evaluation", "bold"), f"  workload {ev.workload} · "
                         f"{ev.rate_rps:g} req/s · {slo} · service model {ev.service_model}")
    groups = [("model", [*ev.pools, ev.fleet])]
    if ev.simulation is not None:
        groups.append((f"{ev.simulation['fidelity']} simulation",
                       ev.simulation["pools"] + [ev.simulation["fleet"]]))
    tables = []
    for title, rows in groups:
        t = Table(title=title, title_justify="left")
        for col in ("group", "instances", "rate (req/s)", "utilization", "mean batch",
                    "TTFT P50/P90/P99 (ms)", "TPOT mean/P99 (ms)", "share > SLO"):
            t.add_column(col, justify="left" if col == "group" else "right")
        for r in rows:
            r = r if isinstance(r, dict) else r.to_dict()
            tt, tp = r["ttft_ms"], r["tpot_ms"]
            t.add_row(r["name"], str(r["instances"]), _ms(r["rate_rps"]),
                      "-" if r["utilization"] is None else f"{100 * r['utilization']:.1f}%",
                      _ms(r["mean_batch"]), " / ".join(_ms(tt[k]) for k in ("p50", "p90", "p99")),
                      f"{_ms(tp['mean'])} / {_ms(tp['p99'])}",
                      "-" if r["slo_miss_share"] is None else f"{100 * r['slo_miss_share']:.2f}%")
        tables.append(t)
    rates = Text(f"Highest rate within the SLOs: {_ms(ev.max_rate_rps)} req/s; saturation "
                 f"(unbounded queue): {_ms(ev.saturation_rps)} req/s.")
    return Group(head, *tables, rates)


def write_json(obj: dict, path) -> None:
    """Write ``obj`` as strict JSON to ``path`` atomically (temporary file, then rename)."""
    from .files import write_text_atomic

    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=False) + "\n", "results file")
