"""``fleetopt plan``: the analytical two-pool planner."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import InfeasibleError
from . import (
    CatalogOpt,
    CompMsOpt,
    CompOpt,
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
    _peak_factor,
    _scenario,
    app,
    console,
)


@app.command()
def plan(
    workload: str = WorkloadOpt,
    rate: float = RateOpt,
    slo_ms: float = SloOpt,
    percentile: float = PercentileOpt,
    gpu: str = GpuOpt,
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
    peak_factor: float = typer.Option(
        1.0, "--peak-factor", help="Plan for this multiple of --rate (bursty traffic)"),
    peak_window_s: float | None = typer.Option(
        None, "--peak-window-s", help="Set the peak factor from the workload's trace: its "
        "busiest window of this many seconds over its mean rate"),
    verify: bool = typer.Option(
        False, "--verify", help="Simulate the cheapest candidates and return the cheapest "
        "one the simulator certifies"),
    verify_candidates: int = typer.Option(
        5, "--verify-candidates", help="With --verify: how many candidates to try at most"),
    verify_requests: int = typer.Option(
        200_000, "--verify-requests", help="With --verify: requests per replication"),
    verify_fidelity: str | None = typer.Option(
        None, "--verify-fidelity", help="With --verify: slot or engine simulation (default: "
        "the one matching --service-model)"),
    seed: int = typer.Option(0, "--seed", help="With --verify: random seed"),
    json_path: Path | None = JsonOpt,
):
    """Plan the cheapest two-pool fleet (analytical FleetOpt planner with C&R)."""
    from dataclasses import replace

    from ..plan import write_plan
    from ..planner import candidate_plans
    from ..report import plan_renderable

    sc, warnings, _ = _scenario(workload, rate, slo_ms, percentile, gpu, model, tp,
                                long_context, gamma_max, compressible, rho_max,
                                compression_ms, paper_compat, catalog, service_model,
                                tpot_ms, tpot_percentile)
    factor = _peak_factor(sc.workload, rate, peak_factor, peak_window_s)
    if verify_fidelity is None:
        verify_fidelity = "engine" if sc.service_model == "engine" else "slot"
    sc = replace(sc, rate_rps=rate * factor)
    extra = {"mean_rate_rps": rate, "peak_factor": factor} if factor != 1.0 else {}
    if not verify:
        result = candidate_plans(sc, 1)[0]
    else:
        from ..simulator import verify_candidates as run_verify

        cands = candidate_plans(sc, verify_candidates)
        ver = run_verify(cands, sc.workload, max_candidates=verify_candidates,
                         n_requests=verify_requests, fidelity=verify_fidelity, seed=seed)
        rejected = "; ".join(f"${u:,.2f}/h fails in {', '.join(f)}" for u, f in ver.rejections)
        if ver.plan is None:
            raise InfeasibleError(
                f"none of the {ver.checked} cheapest candidates meets the SLO in "
                f"{verify_fidelity} simulation ({rejected}); raise --verify-candidates or "
                "relax the SLO", binding="simulation")
        summary = (f"{verify_fidelity} simulation certifies this plan; {ver.rejected} cheaper "
                   "candidate(s) rejected" + (f" ({rejected})" if rejected else ""))
        result = replace(ver.plan, verification={**ver.to_dict(), "summary": summary})
    result = replace(result, warnings=result.warnings + warnings, extra=extra)
    console.print(plan_renderable(result))
    if json_path is not None:
        write_plan(result, json_path)
        console.print(f"Plan file written to {json_path}")
