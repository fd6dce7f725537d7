"""``fleetopt evaluate``: the figures of a given fleet at a workload and a rate."""

from __future__ import annotations

from pathlib import Path

import typer

from . import (
    CatalogOpt,
    ModelOpt,
    RateOpt,
    TpOpt,
    TpotPctOpt,
    WorkloadOpt,
    app,
    console,
)


@app.command()
def evaluate(
    workload: str = WorkloadOpt,
    rate: float = RateOpt,
    fleet: Path | None = typer.Option(None, "--fleet", help="A plan file (fleetopt plan --json)"),
    gpu: str | None = typer.Option(None, "--gpu", help="One pool: its profile (or GPU name "
                                   "with --model)"),
    model: str | None = ModelOpt,
    tp: int | None = TpOpt,
    instances: int | None = typer.Option(None, "--instances", help="One pool: its instances"),
    context_tokens: int | None = typer.Option(None, "--context-tokens",
                                              help="One pool: its window, tokens"),
    slo_ms: float | None = typer.Option(None, "--slo-ms", help="TTFT SLO, ms (default: the "
                                        "plan's, else 500)"),
    percentile: float | None = typer.Option(None, "--percentile", help="TTFT SLO percentile"),
    tpot_ms: float | None = typer.Option(None, "--tpot-ms", help="TPOT SLO, ms per token"),
    tpot_percentile: float = TpotPctOpt,
    service_model: str = typer.Option("engine", "--service-model", help="slot or engine"),
    simulate: str | None = typer.Option(None, "--simulate", help="Also simulate: slot or "
                                        "engine"),
    requests: int = typer.Option(100_000, "--requests", help="With --simulate: requests per "
                                 "replication"),
    catalog: list[Path] = CatalogOpt,
    json_path: Path | None = typer.Option(None, "--json", help="Write the evaluation (JSON)"),
):
    """Utilization, batch, TTFT and TPOT percentiles and SLO misses of a given fleet, the
    highest rate it can take within its SLOs, and its saturation throughput."""
    from ..errors import FleetOptError
    from ..evaluate import Slo, single_pool_fleet
    from ..evaluate import evaluate_fleet as run
    from ..hardware import load_catalog, resolve_profile
    from ..plan import read_plan
    from ..report_engine import evaluation_renderable, write_json
    from ..workload import load_workload

    if service_model not in ("slot", "engine"):
        raise FleetOptError(f"--service-model {service_model}: use slot or engine")
    if simulate not in (None, "slot", "engine"):
        raise FleetOptError(f"--simulate {simulate}: use slot or engine")
    one = (gpu, instances, context_tokens)
    cat = load_catalog(catalog)
    if fleet is not None:
        if any(x is not None for x in one):
            raise FleetOptError("--fleet: give a plan file or --gpu/--instances/"
                                "--context-tokens, not both")
        from ..simulator import fleet_from_plan

        plan = read_plan(fleet)
        slo = Slo(plan.slo_ms if slo_ms is None else slo_ms,
                  plan.percentile if percentile is None else percentile,
                  tpot_ms if tpot_ms is not None else plan.tpot_slo_ms, tpot_percentile)
        spec = fleet_from_plan(plan, cat)
    else:
        if any(x is None for x in one):
            raise FleetOptError("one pool needs --gpu, --instances and --context-tokens "
                                "(or give --fleet PLAN.json)")
        slo = Slo(500.0 if slo_ms is None else slo_ms, 99.0 if percentile is None else
                  percentile, tpot_ms, tpot_percentile)
        spec = single_pool_fleet(resolve_profile(cat, gpu, model, tp), instances,
                                 context_tokens, slo.validated())
    result = run(spec, load_workload(workload), rate, slo, service_model, simulate,
                 n_requests=requests)
    console.print(evaluation_renderable(result))
    if json_path is not None:
        write_json(result.to_dict(), json_path)
        console.print(f"Evaluation written to {json_path}")
