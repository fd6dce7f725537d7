"""``fleetopt report``: a plan's figures and self-contained HTML page."""

from __future__ import annotations

from pathlib import Path

import typer

from . import app, console


@app.command()
def report(
    plan_file: Path = typer.Argument(..., help="Plan file written by `fleetopt plan --json`"),
    out: Path = typer.Option(..., "--out", help="Directory for index.html and the PNG figures"),
    simulation: Path | None = typer.Option(
        None, "--simulation", help="A `fleetopt simulate --json` result of this plan, for "
        "the model-against-simulation figure"),
):
    """Write PNG figures and a self-contained HTML page explaining a plan."""
    import json

    from ..errors import FleetOptError
    from ..html_report import write_report
    from ..plan import read_plan
    from ..report_data import check_simulation

    plan_obj = read_plan(plan_file)
    sim = None
    if simulation is not None:
        try:
            sim = check_simulation(plan_obj, json.loads(simulation.read_text()), str(simulation))
        except (OSError, json.JSONDecodeError) as exc:
            raise FleetOptError(f"--simulation {simulation}: cannot read it ({exc})") from None
    files = write_report(plan_obj, out, sim)
    console.print(f"Report written to {files.html} ({len(files.figures)} figures: "
                  f"{', '.join(files.figures)})", markup=False)
