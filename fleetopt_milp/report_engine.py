"""Terminal reports of the engine features: calibration fits and fleet evaluations."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

__all__ = ["calibration_renderable", "operating_point_table"]


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
    t.add_row("prefill", f"{fit.prefill_ms_per_token:.4f} ms/token (chunk {p.chunk_tokens})",
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
