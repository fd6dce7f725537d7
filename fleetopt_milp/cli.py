"""The ``fleetopt`` command line: a thin layer over the public API.

User mistakes (:class:`~fleetopt_milp.errors.FleetOptError`) print one line on stderr and
exit with status 2; no stack traces. Machine-readable output goes to ``--json PATH``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from .errors import FleetOptError, InfeasibleError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Cost-optimal LLM inference fleets under a TTFT SLO (FleetOpt).")
console = Console()
if not console.is_terminal:  # piped or captured: do not squeeze the tables to 80 columns
    console = Console(width=150)
err_console = Console(stderr=True, soft_wrap=True)

@app.callback()
def _root() -> None:
    """Cost-optimal LLM inference fleets under a TTFT SLO (FleetOpt)."""


DEFAULT_WORKLOAD = "azure-2023"
DEFAULT_GPU = "paper-H100"


def _scenario(workload: str, rate: float, slo_ms: float, percentile: float, gpu: str,
              model: str | None, tp: int | None, long_context: int, gamma_max: float,
              compressible: float, rho_max: float, compression_ms: float, paper_compat: bool,
              catalog: list[Path]):
    from .hardware import load_catalog, profile_warnings, resolve_profile
    from .planner import Scenario
    from .workload import load_workload

    cat = load_catalog(catalog)
    profile = resolve_profile(cat, gpu, model, tp)
    wl = load_workload(workload)
    warnings = tuple(profile_warnings(profile, cat))
    sc = Scenario(workload=wl, profile=profile, rate_rps=rate, slo_ms=slo_ms,
                  percentile=percentile, long_context_tokens=long_context, gamma_max=gamma_max,
                  compressible_share=compressible, rho_max=rho_max,
                  compression_latency_ms=compression_ms, paper_compat=paper_compat)
    return sc, warnings, cat


def _peak_factor(workload, rate_rps: float, peak_factor: float,
                 peak_window_s: float | None) -> float:
    """The multiple of the mean rate to plan for: given, or from the trace's busiest window
    once the trace is time-scaled to ``rate_rps`` (the window is in the scaled timeline)."""
    if peak_factor < 1.0:
        raise FleetOptError(f"--peak-factor {peak_factor}: must be >= 1 (1 = plan for the mean)")
    if peak_window_s is None:
        return peak_factor
    if peak_factor != 1.0:
        raise FleetOptError("--peak-factor and --peak-window-s: give one of them, not both")
    if workload.trace is None:
        raise FleetOptError(f"--peak-window-s: workload '{workload.name}' has no timestamps; "
                            "use a trace workload (e.g. azure-code) or --peak-factor")
    if peak_window_s <= 0:
        raise FleetOptError(f"--peak-window-s {peak_window_s}: must be a positive duration")
    if rate_rps <= 0:
        raise FleetOptError(f"rate_rps={rate_rps}: the arrival rate must be positive (--rate)")
    scaled = workload.trace.scaled_to_rate(rate_rps)
    return max(1.0, scaled.busiest_window_rate_rps(peak_window_s) / rate_rps)


WorkloadOpt = typer.Option(DEFAULT_WORKLOAD, "--workload", "-w",
                           help="Built-in workload name or a CDF JSON / Azure CSV / Mooncake JSONL")
RateOpt = typer.Option(1000.0, "--rate", help="Arrival rate, requests/s")
SloOpt = typer.Option(500.0, "--slo-ms", help="TTFT SLO, milliseconds")
PercentileOpt = typer.Option(99.0, "--percentile", help="SLO percentile (99 = P99)")
GpuOpt = typer.Option(DEFAULT_GPU, "--gpu",
                      help="Calibrated profile (paper-H100) or a GPU name for a roofline profile")
ModelOpt = typer.Option(None, "--model", help="Served LLM (needed with a GPU name)")
TpOpt = typer.Option(None, "--tp", help="GPUs per instance (tensor parallelism)")
LongOpt = typer.Option(65536, "--long-context", help="Long pool window, tokens")
GammaOpt = typer.Option(2.0, "--gamma-max", help="Largest C&R band ratio searched")
CompOpt = typer.Option(0.75, "--compressible", help="Share p_c of band requests that compress")
RhoOpt = typer.Option(0.85, "--rho-max", help="Utilization cap of every pool")
CompMsOpt = typer.Option(0.0, "--compression-ms",
                         help="Compression latency added to a compressed request's TTFT, ms")
PaperOpt = typer.Option(False, "--paper-compat",
                        help="The paper's rule: P99 wait + mean prefill, 80/20 length split")
CatalogOpt = typer.Option([], "--catalog", help="Extra catalogue TOML file or folder (repeatable)")
JsonOpt = typer.Option(None, "--json", help="Write the plan file (JSON) here")


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
    verify_fidelity: str = typer.Option(
        "slot", "--verify-fidelity", help="With --verify: slot or engine simulation"),
    seed: int = typer.Option(0, "--seed", help="With --verify: random seed"),
    json_path: Path | None = JsonOpt,
):
    """Plan the cheapest two-pool fleet (analytical FleetOpt planner with C&R)."""
    from dataclasses import replace

    from .plan import write_plan
    from .planner import candidate_plans
    from .report import plan_renderable

    sc, warnings, _ = _scenario(workload, rate, slo_ms, percentile, gpu, model, tp,
                                long_context, gamma_max, compressible, rho_max,
                                compression_ms, paper_compat, catalog)
    factor = _peak_factor(sc.workload, rate, peak_factor, peak_window_s)
    sc = replace(sc, rate_rps=rate * factor)
    extra = {"mean_rate_rps": rate, "peak_factor": factor} if factor != 1.0 else {}
    if not verify:
        result = candidate_plans(sc, 1)[0]
    else:
        from .simulator import verify_candidates as run_verify

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


# -- simulate (fleetopt_milp.simulator) --------------------------------------------------


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

    from .hardware import load_catalog
    from .plan import read_plan
    from .simulator import certification_from
    from .simulator import simulate as run_simulation

    plan_obj = read_plan(plan_file)
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



# -- solve (fleetopt_milp.milp) ------------------------------------------------------------


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
        "auto (full with --max-gpus/--max-total-gpus, else filler)"),
    json_path: Path | None = JsonOpt,
):
    """Solve the fleet MILP (Pyomo + HiGHS): K pools, several GPU types, caps and budgets."""
    from dataclasses import replace

    from .hardware import profile_warnings, resolve_profile
    from .milp import FleetProblem, solve_max_rate
    from .milp import solve as run_solve
    from .plan import write_plan
    from .report import plan_renderable

    if objective not in ("cost", "rate"):
        raise FleetOptError(f"--objective {objective!r}: use cost or rate")
    names = [g.strip() for g in (gpus if gpus is not None else gpu).split(",") if g.strip()]
    if not names:
        raise FleetOptError("--gpus: give at least one GPU type, e.g. --gpus H100,A100")
    sc, warnings, cat = _scenario(workload, rate, slo_ms, percentile, names[0], model, tp,
                             long_context, gamma_max, compressible, rho_max, compression_ms,
                             paper_compat, catalog)
    profiles = [sc.profile] + [resolve_profile(cat, n, model, tp) for n in names[1:]]
    for p in profiles[1:]:
        warnings += tuple(profile_warnings(p, cat))
    problem = FleetProblem(
        scenario=sc, profiles=tuple(profiles), max_pools=pools,
        max_gpus=_gpu_caps(max_gpus, cat, profiles), max_total_gpus=max_total_gpus,
        budget_usd_per_hour=budget if objective == "cost" else None,
        min_instances_per_pool=min_instances, mixing=mix)
    if objective == "rate":
        result = solve_max_rate(problem, budget, time_limit_s=time_limit_s)
    else:
        result = run_solve(problem, time_limit_s=time_limit_s)
    result = replace(result, warnings=result.warnings + warnings)
    console.print(plan_renderable(result))
    if objective == "rate":
        s = result.solver
        console.print(f"Highest rate within ${s['budget_usd_per_hour']:,.2f}/h: "
                      f"{s['rate_rps']:,.1f} req/s ({s['rate_upper_rps']:,.1f} req/s is "
                      f"infeasible; {len(s['steps'])} MILPs).", markup=False)
    if json_path is not None:
        write_plan(result, json_path)
        console.print(f"Plan file written to {json_path}")

def main() -> None:
    """Entry point: run the app, turning user mistakes into one-line errors (exit 2)."""
    try:
        app(standalone_mode=False)
    except InfeasibleError as exc:
        err_console.print(f"infeasible ({exc.binding}): {exc}", markup=False)
        sys.exit(2)
    except FleetOptError as exc:
        err_console.print(f"error: {exc}", markup=False)
        sys.exit(2)
    except Exception as exc:  # click's usage errors and exits carry their own exit codes
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        if hasattr(exc, "exit_code"):
            sys.exit(exc.exit_code)
        if type(exc).__name__ == "Abort":
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
