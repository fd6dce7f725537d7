"""``fleetopt solve``: the fleet MILP."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from ..errors import FleetOptError
from . import (
    CatalogOpt,
    CompMsOpt,
    CompOpt,
    FromOpt,
    GammaOpt,
    GpuOpt,
    JsonOpt,
    LongOpt,
    ModelOpt,
    PaperOpt,
    PercentileOpt,
    RateOpt,
    RhoOpt,
    ServiceModelOpt,
    SloOpt,
    TpOpt,
    TpotOpt,
    TpotPctOpt,
    WorkloadOpt,
    _scenario,
    app,
    err_console,
    output_plan,
)


def _gpu_caps(specs: list[str], catalog, profiles) -> dict[str, int]:
    """``TYPE=N`` availability caps keyed by GPU name (``Profile.gpu``)."""
    caps: dict[str, int] = {}
    for spec in specs:
        name, sep, num = spec.partition("=")
        try:
            n = int(num)
        except ValueError:
            n = -1
        if not sep or not name.strip() or n < 0:
            raise FleetOptError(f"--max-gpus {spec!r}: use TYPE=N with N GPUs >= 0, e.g. "
                                "--max-gpus H100=64")
        key = name.strip()
        found = catalog.find_gpu(key)
        gpu = found.name if found is not None else next(
            (p.gpu for p in profiles if key.casefold() in (p.name.casefold(), p.gpu.casefold())),
            key)
        caps[gpu] = n
    return caps


@app.command()
def solve(
    workload: str = WorkloadOpt,
    rate: float = RateOpt,
    slo_ms: float = SloOpt,
    percentile: float = PercentileOpt,
    gpu: str = GpuOpt,
    gpus: str | None = typer.Option(
        None, "--gpus", help="GPU types the fleet may use, comma-separated (GPU names with "
        "--model, or profiles); default: --gpu"),
    model: str | None = ModelOpt,
    tp: int | None = TpOpt,
    long_context: int = LongOpt,
    gamma_max: float = GammaOpt,
    compressible: float = CompOpt,
    rho_max: float = RhoOpt,
    compression_ms: float = CompMsOpt,
    paper_compat: bool = PaperOpt,
    catalog: list[Path] = CatalogOpt,
    service_model: str | None = ServiceModelOpt,
    tpot_ms: float | None = TpotOpt,
    tpot_percentile: float = TpotPctOpt,
    pools: int = typer.Option(2, "--pools", help="Largest number of pools K (1-4)"),
    max_gpus: list[str] = typer.Option(
        [], "--max-gpus", help="Availability cap TYPE=N GPUs (repeatable)"),
    max_total_gpus: int | None = typer.Option(None, "--max-total-gpus",
                                              help="Cap on all GPUs of the fleet"),
    budget: float | None = typer.Option(None, "--budget-usd-per-hour",
                                        help="Most the fleet may cost, USD/hour"),
    objective: str = typer.Option(
        "cost", "--objective", help="cost: cheapest fleet; rate: highest rate within the "
        "budget (bisection over the rate)"),
    time_limit_s: float | None = typer.Option(None, "--time-limit-s",
                                              help="HiGHS time limit per solve, seconds"),
    min_instances: int = typer.Option(0, "--min-instances",
                                      help="Fewest instances of every pool (redundancy)"),
    mix: str = typer.Option(
        "auto", "--mix", help="How a pool may split its load between GPU types: full "
        "(any split), filler (a main type plus up to 4 instances of another), none, or "
        "auto (full with --max-gpus/--max-total-gpus, else filler; none with the engine "
        "model, which models one type per pool)"),
    from_plan: Path | None = FromOpt,
    json_path: Path | None = JsonOpt,
):
    """Solve the fleet MILP (Pyomo + HiGHS): K pools, several GPU types, caps and budgets."""
    args = dict(locals())
    from dataclasses import replace

    from ..provenance import record_inputs, rerun_kwargs

    if from_plan is not None:
        recorded = rerun_kwargs(from_plan, "solve", args, solve,
                                lambda note: err_console.print(f"warning: {note}", markup=False))
        return solve(**recorded, from_plan=None, json_path=json_path)

    from ..hardware import profile_warnings, resolve_profile
    from ..milp import FleetProblem, solve_max_rate
    from ..milp import solve as run_solve
    from ..scenario import MAX_FLEET_INSTANCES

    if objective not in ("cost", "rate"):
        raise FleetOptError(f"--objective {objective!r}: use cost or rate")
    if time_limit_s is not None and not (math.isfinite(time_limit_s) and time_limit_s > 0):
        raise FleetOptError(f"--time-limit-s {time_limit_s}: must be a positive, finite number "
                            "of seconds (leave it out for no limit)")
    names = [g.strip() for g in (gpus if gpus is not None else gpu).split(",") if g.strip()]
    if not names:
        raise FleetOptError("--gpus: give at least one GPU type, e.g. --gpus H100,A100")
    sc, warnings, cat = _scenario(workload, rate, slo_ms, percentile, names[0], model, tp,
                             long_context, gamma_max, compressible, rho_max, compression_ms,
                             paper_compat, catalog, service_model, tpot_ms, tpot_percentile,
                             validate=False)
    profiles = [sc.profile] + [resolve_profile(cat, n, model, tp) for n in names[1:]]
    for p in profiles[1:]:
        warnings += tuple(profile_warnings(p, cat))
    for option, value in (("--min-instances", min_instances),
                          ("--max-total-gpus", max_total_gpus)):
        if value is not None and value > MAX_FLEET_INSTANCES:
            raise FleetOptError(f"{option} {value}: beyond the {MAX_FLEET_INSTANCES:.0e} "
                                "instances this planner sizes; use a smaller number (or "
                                "leave --max-total-gpus out for no cap)")
    if objective == "rate" and budget is not None and math.isfinite(budget):
        cheapest = min(profiles, key=lambda p: p.usd_per_instance_hour)
        most = budget / cheapest.usd_per_instance_hour
        if most > MAX_FLEET_INSTANCES:
            raise FleetOptError(
                f"--budget-usd-per-hour {budget:g} buys up to {most:.3g} instances of "
                f"{cheapest.name}, more than the {MAX_FLEET_INSTANCES:.0e} this planner sizes; "
                "lower the budget")
    problem = FleetProblem(
        scenario=sc, profiles=tuple(profiles), max_pools=pools,
        max_gpus=_gpu_caps(max_gpus, cat, profiles), max_total_gpus=max_total_gpus,
        budget_usd_per_hour=budget if objective == "cost" else None,
        min_instances_per_pool=min_instances, mixing=mix)
    if objective == "rate":
        result = solve_max_rate(problem, budget, time_limit_s=time_limit_s)
    else:
        result = run_solve(problem, time_limit_s=time_limit_s)
    result = replace(result, warnings=result.warnings + warnings,
                     inputs=record_inputs("solve", args, profiles, result))
    output_plan(result, json_path)
