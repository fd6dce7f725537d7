"""``fleetopt sweep``: what-if sweeps over rates, SLOs, GPU profiles, windows, workloads, p_c."""

from __future__ import annotations

from pathlib import Path

import typer

from . import (
    DEFAULT_GPU,
    DEFAULT_WORKLOAD,
    CatalogOpt,
    CompMsOpt,
    GammaOpt,
    ModelOpt,
    PaperOpt,
    PercentileOpt,
    RhoOpt,
    ServiceModelOpt,
    TpOpt,
    TpotOpt,
    TpotPctOpt,
    _service_model,
    app,
    console,
)

_LIST = "comma list; numbers may be ranges START:STOP:STEP"


@app.command()
def sweep(
    out: Path = typer.Option(..., "--out", help="CSV or Parquet file, one row per scenario; "
                             "an interrupted sweep resumes from it"),
    workload: str = typer.Option(DEFAULT_WORKLOAD, "--workload", "-w",
                                 help="Workloads: built-in names or paths (comma list)"),
    gpu: str = typer.Option(DEFAULT_GPU, "--gpu", help="Profiles or GPU names (comma list)"),
    long_context: str = typer.Option("65536", "--long-context",
                                     help=f"Long pool windows, tokens ({_LIST})"),
    rate: str = typer.Option("1000", "--rate", help=f"Arrival rates, req/s ({_LIST})"),
    slo_ms: str = typer.Option("500", "--slo-ms", help=f"TTFT SLOs, ms ({_LIST})"),
    compressible: str = typer.Option("0.75", "--compressible", help=f"p_c values ({_LIST})"),
    model: str | None = ModelOpt,
    tp: int | None = TpOpt,
    percentile: float = PercentileOpt,
    gamma_max: float = GammaOpt,
    rho_max: float = RhoOpt,
    compression_ms: float = CompMsOpt,
    paper_compat: bool = PaperOpt,
    service_model: str | None = ServiceModelOpt,
    tpot_ms: float | None = TpotOpt,
    tpot_percentile: float = TpotPctOpt,
    catalog: list[Path] = CatalogOpt,
    workers: int | None = typer.Option(None, "--workers",
                                       help="Local worker processes (default: all cores)"),
    scheduler: str | None = typer.Option(None, "--scheduler",
                                         help="Dask scheduler address (tcp://host:port)"),
    chunk_size: int | None = typer.Option(None, "--chunk-size",
                                          help="Scenarios per task (default: automatic)"),
    plots_dir: Path | None = typer.Option(None, "--plots", help="Write the sweep's PNG plots "
                                          "(cost against rate, cost-TTFT front) here"),
):
    """Plan every combination of the listed values; one CSV row per scenario."""
    import os

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from .. import plots
    from ..provenance import absolute_if_file
    from ..sweep import SweepSpec, cost_by_rate, cost_ttft_front, parse_values, read_rows
    from ..sweep import run_sweep as run

    spec = SweepSpec(
        workloads=tuple(absolute_if_file(w) for w in parse_values(workload, str, "--workload")),
        gpus=tuple(absolute_if_file(g) for g in parse_values(gpu, str, "--gpu")),
        long_contexts_tokens=parse_values(long_context, int, "--long-context"),
        rates_rps=parse_values(rate, float, "--rate"),
        slos_ms=parse_values(slo_ms, float, "--slo-ms"),
        compressible_shares=parse_values(compressible, float, "--compressible"),
        model=model, tp=tp, percentile=percentile, gamma_max=gamma_max, rho_max=rho_max,
        compression_latency_ms=compression_ms, paper_compat=paper_compat,
        catalog=tuple(str(Path(c).expanduser().resolve()) for c in catalog),
        service_model=_service_model(service_model, paper_compat), tpot_ms=tpot_ms,
        tpot_percentile=tpot_percentile)
    n_workers = (os.cpu_count() or 1) if workers is None else workers
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=console.get(),
                  transient=not console.is_terminal) as bar:
        task = bar.add_task("sweep", total=spec.n_scenarios)
        try:
            summary = run(spec, out, workers=n_workers, scheduler=scheduler,
                          chunk_size=chunk_size,
                          on_progress=lambda done, total: bar.update(task, completed=done))
        except KeyboardInterrupt:
            console.print(f"interrupted: the finished scenarios are in {out}; run the same "
                          "command to resume", markup=False)
            raise typer.Exit(130) from None
    console.print(f"{summary.total:,} scenarios: {summary.skipped:,} already in {out}, "
                  f"{summary.planned:,} planned now ({summary.infeasible:,} infeasible).",
                  markup=False)
    if plots_dir is not None:
        plots_dir.mkdir(parents=True, exist_ok=True)
        rows = read_rows(out)
        for name, fig in (("cost_vs_rate", plots.cost_vs_rate_figure(cost_by_rate(rows, spec))),
                          ("cost_ttft_front",
                           plots.cost_ttft_front_figure(cost_ttft_front(spec)))):
            plots.save_png(fig, plots_dir / f"{name}.png")
        console.print(f"Plots written to {plots_dir}", markup=False)
