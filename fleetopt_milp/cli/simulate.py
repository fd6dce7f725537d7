"""``fleetopt simulate``: simulate a plan file."""

from __future__ import annotations

from pathlib import Path

import typer

from . import CatalogOpt, app, check_count, console


@app.command()
def simulate(
    plan_file: Path = typer.Argument(..., help="Plan file written by `fleetopt plan --json`"),
    workload: str | None = typer.Option(
        None, "--workload", "-w", help="Workload for request lengths (default: the plan's)"),
    requests: int | None = typer.Option(
        None, "--requests", help="Requests per replication, warm-up included "
        "(default 200,000; a trace's length)"),
    seed: int = typer.Option(0, "--seed", help="Random seed (>= 0)"),
    fidelity: str | None = typer.Option(
        None, "--fidelity", help="slot (each KV slot a server, the slot model's queue) or "
        "engine (continuous batching); default: the plan's service model"),
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
        None, "--max-batch", help="Engine batch cap per instance (default the profile's max_slots)"),
    certify: bool = typer.Option(
        False, "--certify", help="Exit with status 1 unless every pool meets the SLO in a "
        "run that reached steady state"),
    catalog: list[Path] = CatalogOpt,
    json_path: Path | None = typer.Option(None, "--json", help="Write the results (JSON) here"),
):
    """Simulate a plan: utilization, TTFT, waits and SLO misses beside the model's values."""
    import json

    from ..certification import certification_from
    from ..files import write_text_atomic
    from ..hardware import load_catalog
    from ..plan import read_plan
    from ..report import simulation_renderable
    from ..simulator import simulate as run_simulation

    check_count("--seed", seed, 0)
    plan_obj = read_plan(plan_file)
    if workload is None and plan_obj.inputs is not None:
        note = plan_obj.inputs.workload.change_note()
        if note:
            console.print(f"warning: {note}", markup=False)
    res = run_simulation(plan_obj, workload, rate_rps=rate, rate_scale=rate_scale,
                         trace=trace, n_requests=requests, replications=replications,
                         seed=seed, fidelity=fidelity or plan_obj.service_model,
                         workers=workers, scheduler=scheduler,
                         max_batch=max_batch, catalog=load_catalog(catalog))
    cert = certification_from(res)
    if json_path is not None:  # saved first: a broken terminal cannot lose the result
        d = res.to_dict() | {"certification": cert.to_dict()}
        write_text_atomic(json_path, json.dumps(d, indent=2, allow_nan=False) + "\n",
                          "simulation results")
    console.print(simulation_renderable(res, cert))
    if json_path is not None:
        console.print(f"Results written to {json_path}", markup=False)
    if certify and not cert.certified:
        raise typer.Exit(1)
