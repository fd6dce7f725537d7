"""``fleetopt simulate``: simulate a plan file."""

from __future__ import annotations

from pathlib import Path

import typer

from . import (
    CatalogOpt,
    app,
    console,
)


def _fmt_ci(mean: float | None, ci: list, fmt: str) -> str:
    """``mean ± half-width`` of a simulated figure and its interval."""
    if mean is None:
        return "-"
    lo, hi = ci
    if lo is None or hi is None:
        return format(mean, fmt)
    return f"{format(mean, fmt)} ± {format((hi - lo) / 2, fmt)}"


@app.command()
def simulate(
    plan_file: Path = typer.Argument(..., help="Plan file written by `fleetopt plan --json`"),
    workload: str | None = typer.Option(
        None, "--workload", "-w", help="Workload for request lengths (default: the plan's)"),
    requests: int | None = typer.Option(
        None, "--requests", help="Requests per replication, warm-up included "
        "(default 200,000; a trace's length)"),
    seed: int = typer.Option(0, "--seed", help="Random seed"),
    fidelity: str = typer.Option(
        "slot", "--fidelity", help="slot (each KV slot a server, the model's queue) or "
        "engine (continuous batching)"),
    trace: str | None = typer.Option(
        None, "--trace", help="Replay this trace (path or built-in name) with its timestamps"),
    rate: float | None = typer.Option(
        None, "--rate", help="Mean arrival rate, req/s (default: the plan's; a trace is "
        "time-scaled to it)"),
    rate_scale: float | None = typer.Option(
        None, "--rate-scale", help="Multiply the arrival rate by this factor"),
    replications: int | None = typer.Option(
        None, "--replications", help="Independent replications (default 5; 1 for a trace, "
        "with batch means)"),
    workers: int | None = typer.Option(None, "--workers", help="Local worker processes"),
    scheduler: str | None = typer.Option(
        None, "--scheduler", help="Dask scheduler address (tcp://host:port)"),
    max_batch: int | None = typer.Option(
        None, "--max-batch", help="Engine batch cap per instance (default slots(C))"),
    certify: bool = typer.Option(
        False, "--certify", help="Exit with status 1 unless every pool meets the SLO"),
    catalog: list[Path] = CatalogOpt,
    json_path: Path | None = typer.Option(None, "--json", help="Write the results (JSON) here"),
):
    """Simulate a plan: utilization, TTFT, waits and SLO misses beside the model's values."""
    import json

    from rich.table import Table

    from ..hardware import load_catalog
    from ..plan import read_plan
    from ..simulator import certification_from
    from ..simulator import simulate as run_simulation

    plan_obj = read_plan(plan_file)
    if workload is None and plan_obj.inputs is not None:
        note = plan_obj.inputs.workload.change_note()
        if note:
            console.print(f"warning: {note}", markup=False)
    res = run_simulation(plan_obj, workload, rate_rps=rate, rate_scale=rate_scale,
                         trace=trace, n_requests=requests, replications=replications,
                         seed=seed, fidelity=fidelity, workers=workers, scheduler=scheduler,
                         max_batch=max_batch, catalog=load_catalog(catalog))
    cert = certification_from(res)
    d = res.to_dict()
    table = Table(title=(f"Simulation ({res.fidelity}, {res.arrivals} at {res.rate_rps:.1f} "
                         f"req/s, {res.replications} x {res.n_requests:,} requests, "
                         f"± {res.confidence:.0%} interval by {res.ci_method})"))
    for col in ("pool", "requests", "utilization", "model", "P99 TTFT ms", "model",
                f"share > {res.slo_ms:g} ms", "model", "mean wait ms", "TPOT ms", "SLO"):
        table.add_column(col, justify="left" if col in ("pool", "SLO") else "right")
    verdict = {v.pool: v for v in cert.pools}
    for g in d["pools"] + [d["fleet"]]:
        v = verdict.get(g["name"])
        mark = "-" if v is None else ("pass" if v.passed else "FAIL") + (
            "?" if g["name"] in cert.inconclusive else "")
        table.add_row(
            g["name"], f"{g['requests']:,}",
            _fmt_ci(g["utilization"], g["utilization_ci"], ".3f"),
            format(g["analytical_utilization"], ".3f"),
            _fmt_ci(g["p99_ttft_ms"], g["p99_ttft_ms_ci"], ".1f"),
            format(g["analytical_p99_ttft_ms"], ".1f"),
            _fmt_ci(g["slo_miss_share"], g["slo_miss_share_ci"], ".4f"),
            format(g["analytical_slo_miss_share"], ".4f"),
            _fmt_ci(g["mean_wait_ms"], g["mean_wait_ms_ci"], ".2f"),
            "-" if g["mean_tpot_ms"] is None else format(g["mean_tpot_ms"], ".2f"), mark)
    console.print(table)
    status = "certified" if cert.certified else "NOT certified: " + ", ".join(cert.failing)
    if cert.inconclusive:
        status += f" (inconclusive: {', '.join(cert.inconclusive)}; simulate more requests)"
    console.print(f"{status}. {res.requests_per_s:,.0f} simulated requests/s per core, "
                  f"{res.wall_s:.1f} s wall.", markup=False)
    for note in res.notes:
        console.print(f"note: {note}", markup=False)
    if json_path is not None:
        d["certification"] = cert.to_dict()
        json_path.write_text(json.dumps(d, indent=2) + "\n")
        console.print(f"Results written to {json_path}")
    if certify and not cert.certified:
        raise typer.Exit(1)
