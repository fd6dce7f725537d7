"""Figures of plans and sweeps: one function per figure, each returning a matplotlib Figure.

Every function takes one typed record (built by :mod:`~fleetopt_milp.report_data` or
:mod:`~fleetopt_milp.sweep`) and draws it; nothing here computes a plan. Figures are built
with :class:`matplotlib.figure.Figure` on the Agg canvas, never through ``pyplot``, so they
render headless and leave no global state. docs/reports.md explains how to read each one.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["LengthCdf", "CostCurve", "CostCliff", "PoolBars", "Savings", "Comparison",
           "CostByRate", "CostTtftFront", "length_cdf_figure", "cost_cliff_figure",
           "pools_figure", "savings_figure", "model_vs_sim_figure", "cost_vs_rate_figure",
           "cost_ttft_front_figure", "png_bytes", "save_png"]

SHORT, LONG, MARK, GREY = "#1f77b4", "#d62728", "#2ca02c", "#7f7f7f"


@dataclass(frozen=True)
class LengthCdf:
    """CDF of total tokens (input + output) per request, with the plan's split points:
    ``splits`` holds ``(boundary B, band end gamma*B)`` per pool boundary, in tokens (none
    for one homogeneous pool)."""

    workload: str
    tokens: np.ndarray
    cdf: np.ndarray
    splits: tuple[tuple[int, int], ...]
    long_context_tokens: int


@dataclass(frozen=True)
class CostCurve:
    """Fleet $/hour of the cheapest two-pool fleet at each boundary, for one gamma
    (``inf`` where no fleet at that boundary meets the SLO)."""

    gamma: float
    boundaries_tokens: np.ndarray
    usd_per_hour: np.ndarray


@dataclass(frozen=True)
class CostCliff:
    """Cost against the boundary for gamma = 1 and the chosen gamma (docs/reports.md).

    ``equal_marginal_tokens``: the boundaries where the chosen-gamma curve reaches its
    minimum, where moving B either way saves nothing (the equal-marginal-cost point).
    """

    curves: tuple[CostCurve, ...]
    chosen_boundary_tokens: int | None
    chosen_gamma: float
    chosen_usd_per_hour: float
    equal_marginal_tokens: tuple[int, ...]
    profile: str


@dataclass(frozen=True)
class PoolBars:
    """Per pool: utilization against the cap, TTFT at the percentile against the SLO, and
    mean TPOT (ms) against its SLO where known (``nan`` = not known)."""

    pools: tuple[str, ...]
    utilization: np.ndarray
    rho_max: float
    ttft_ms: np.ndarray
    slo_ms: float
    percentile: float
    tpot_ms: np.ndarray
    tpot_slo_ms: float | None = None


@dataclass(frozen=True)
class Savings:
    """The plan's $/hour against each baseline's (``inf`` = infeasible baseline)."""

    plan_usd_per_hour: float
    names: tuple[str, ...]
    usd_per_hour: np.ndarray


@dataclass(frozen=True)
class Comparison:
    """One figure, analytical against simulated per pool, with the simulated interval and
    the limit it must stay under (``None`` = no limit)."""

    metric: str
    pools: tuple[str, ...]
    analytical: np.ndarray
    simulated: np.ndarray
    ci_lo: np.ndarray
    ci_hi: np.ndarray
    limit: float | None


@dataclass(frozen=True)
class CostByRate:
    """Sweep rows: fleet $/hour against the arrival rate, one series per GPU profile."""

    series: dict[str, tuple[np.ndarray, np.ndarray]]  # profile -> (rate_rps, usd_per_hour)


@dataclass(frozen=True)
class CostTtftFront:
    """Fleets over boundaries: $/hour against the fleet's TTFT at the percentile (ms, the
    largest over its pools), with each fleet's boundary (-1: one homogeneous pool);
    ``front`` marks the points no other point beats on both."""

    ttft_ms: np.ndarray
    usd_per_hour: np.ndarray
    boundary_tokens: np.ndarray
    front: np.ndarray  # bool


def _figure(width: float = 7.5, height: float = 4.2, ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def length_cdf_figure(d: LengthCdf) -> Figure:
    """The workload's length CDF with B and gamma*B marked (the C&R band shaded)."""
    fig, (ax,) = _figure()
    ax.step(d.tokens, d.cdf, where="post", color="black", label=f"{d.workload} CDF")
    for k, (b, end) in enumerate(d.splits):
        n = "" if len(d.splits) == 1 else str(k + 1)
        ax.axvline(b, color=SHORT, ls="--", label=f"B{n} = {b:,} tokens")
        if end > b:
            ax.axvline(end, color=LONG, ls=":", label=f"γB{n} = {end:,} tokens")
            ax.axvspan(b, end, color=MARK, alpha=0.15,
                       label="C&R band (B, γB]" if k == 0 else None)
    ax.axvline(d.long_context_tokens, color=GREY, ls="-.",
               label=f"long window {d.long_context_tokens:,}")
    ax.set_xscale("log")
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("request length, input + output (tokens, log scale)")
    ax.set_ylabel("share of requests at or below")
    ax.set_title("Request lengths and the pool split")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return fig


def cost_cliff_figure(d: CostCliff) -> Figure:
    """Fleet $/hour against the boundary, for gamma = 1 and the chosen gamma; the
    equal-marginal-cost point(s) starred."""
    fig, (ax,) = _figure()
    colours = (GREY, SHORT, LONG, MARK)
    for i, c in enumerate(d.curves):
        y = np.where(np.isfinite(c.usd_per_hour), c.usd_per_hour, np.nan)
        label = f"γ = {c.gamma:g}" + (" (chosen)" if np.isclose(c.gamma, d.chosen_gamma) and
                                      c.gamma != 1.0 else "")
        ax.step(c.boundaries_tokens, y, where="mid", color=colours[i % 4], label=label)
    if d.equal_marginal_tokens:
        chosen = next((c for c in d.curves if np.isclose(c.gamma, d.chosen_gamma)), d.curves[-1])
        xs = np.asarray(d.equal_marginal_tokens)
        ys = np.interp(xs, chosen.boundaries_tokens, chosen.usd_per_hour)
        ax.plot(xs, ys, "*", color=MARK, ms=13, ls="none", label="equal marginal cost")
    if d.chosen_boundary_tokens is not None:
        ax.plot([d.chosen_boundary_tokens], [d.chosen_usd_per_hour], "o", mfc="none",
                mec="black", ms=12, ls="none", label=f"plan: B = {d.chosen_boundary_tokens:,}")
    ax.set_xscale("log")
    ax.set_xlabel("boundary B (tokens, log scale)")
    ax.set_ylabel("fleet cost ($/hour)")
    ax.set_title(f"Cost against the boundary ({d.profile}): the cost cliff")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def pools_figure(d: PoolBars) -> Figure:
    """Per pool: utilization against the cap, P99 TTFT against the SLO, TPOT if known."""
    has_tpot = bool(np.isfinite(d.tpot_ms).any())
    fig, axes = _figure(width=4.0 * (3 if has_tpot else 2), height=3.6, ncols=3 if has_tpot else 2)
    x = np.arange(len(d.pools))
    panels = [(axes[0], d.utilization, d.rho_max, "utilization", "cap ρ_max"),
              (axes[1], d.ttft_ms, d.slo_ms, f"P{d.percentile:g} TTFT (ms)", "SLO")]
    if has_tpot:
        panels.append((axes[2], d.tpot_ms, d.tpot_slo_ms, "mean TPOT (ms)", "TPOT SLO"))
    for ax, vals, limit, what, limit_label in panels:
        ax.bar(x, np.nan_to_num(vals), color=[SHORT, LONG, MARK, GREY][:len(x)] or SHORT,
               label=what)
        if limit is not None:
            ax.axhline(limit, color="black", ls="--", label=f"{limit_label} {limit:g}")
        top = np.nanmax(np.r_[vals, 0.0 if limit is None else limit])
        ax.set_ylim(0, 1.3 * top if top > 0 else 1.0)
        ax.set_xticks(x, d.pools)
        ax.set_title(what)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    return fig


def _saving_label(saving: float) -> str:
    if abs(saving) < 5e-4:
        return "same cost"
    return f"saves {saving:.1%}" if saving > 0 else f"costs {-saving:.1%} more"


def savings_figure(d: Savings) -> Figure:
    """$/hour of each baseline beside the plan's, labelled with the plan's saving."""
    fig, (ax,) = _figure(height=3.4)
    names = (*d.names, "this plan")
    vals = np.r_[d.usd_per_hour, d.plan_usd_per_hour]
    ok = np.isfinite(vals)
    y = np.arange(len(names))
    ax.barh(y[ok], vals[ok], color=[GREY] * int(ok[:-1].sum()) + [MARK], label="$/hour")
    for yi, v in zip(y, vals):
        if not np.isfinite(v):
            ax.text(0, yi, "  infeasible", va="center")
        elif v > 0 and yi < len(d.names):
            ax.text(v, yi, "  " + _saving_label(1 - d.plan_usd_per_hour / v), va="center",
                    fontsize=9)
    ax.set_yticks(y, [n.replace("_", " ") for n in names])
    ax.set_xlabel("fleet cost ($/hour)")
    ax.set_title("This plan against the baselines")
    ax.set_xlim(0, np.nanmax(np.where(ok, vals, np.nan)) * 1.35)
    ax.grid(axis="x", alpha=0.3)
    return fig


def model_vs_sim_figure(panels: tuple[Comparison, ...]) -> Figure:
    """Analytical against simulated values per pool, one panel per figure, simulated with
    its confidence interval and the limit drawn."""
    fig, axes = _figure(width=4.2 * len(panels), height=3.6, ncols=len(panels))
    for ax, c in zip(axes, panels):
        x = np.arange(len(c.pools))
        ax.bar(x - 0.2, c.analytical, 0.4, color=SHORT, label="model")
        err = np.vstack([c.simulated - c.ci_lo, c.ci_hi - c.simulated])
        ax.bar(x + 0.2, c.simulated, 0.4, color=LONG, label="simulation",
               yerr=np.nan_to_num(np.abs(err)), capsize=4)
        if c.limit is not None:
            ax.axhline(c.limit, color="black", ls="--", label=f"limit {c.limit:g}")
        ax.set_ylim(bottom=0)  # every compared figure is >= 0; an interval may dip below
        ax.set_xticks(x, c.pools)
        ax.set_title(c.metric)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def cost_vs_rate_figure(d: CostByRate) -> Figure:
    """Fleet $/hour against the arrival rate, one line per GPU profile."""
    fig, (ax,) = _figure()
    for name, (rate, usd) in sorted(d.series.items()):
        order = np.argsort(rate)
        ax.plot(rate[order], usd[order], "o-", ms=3, label=name)
    ax.set_xlabel("arrival rate (requests/s)")
    ax.set_ylabel("fleet cost ($/hour)")
    ax.set_title("Cost against rate per GPU profile")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def cost_ttft_front_figure(d: CostTtftFront) -> Figure:
    """Every swept fleet as (TTFT, cost) coloured by its boundary; the front joined."""
    fig, (ax,) = _figure()
    b = np.where(d.boundary_tokens > 0, d.boundary_tokens, np.nan)
    sc = ax.scatter(d.ttft_ms, d.usd_per_hour, c=np.log2(b), cmap="viridis", s=14,
                    label="fleets (colour: log2 B)")
    fig.colorbar(sc, ax=ax, label="log2 boundary B (tokens)")
    order = np.argsort(d.ttft_ms[d.front])
    ax.plot(d.ttft_ms[d.front][order], d.usd_per_hour[d.front][order], "-", color=LONG,
            drawstyle="steps-post", label="cost-TTFT front")
    ax.set_xlabel("fleet TTFT at the percentile (ms)")
    ax.set_ylabel("fleet cost ($/hour)")
    ax.set_title("Cost against TTFT over boundaries")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_png(fig: Figure, path: str | Path, dpi: int = 110) -> bytes:
    """Write the figure as a PNG (atomically: temp file, then rename); return its bytes."""
    data = png_bytes(fig, dpi)
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(p)
    return data
