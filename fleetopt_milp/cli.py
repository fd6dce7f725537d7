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
    return sc, warnings


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
    json_path: Path | None = JsonOpt,
):
    """Plan the cheapest two-pool fleet (analytical FleetOpt planner with C&R)."""
    from dataclasses import replace

    from .plan import write_plan
    from .planner import plan as run_plan
    from .report import plan_renderable

    sc, warnings = _scenario(workload, rate, slo_ms, percentile, gpu, model, tp, long_context,
                             gamma_max, compressible, rho_max, compression_ms, paper_compat,
                             catalog)
    result = run_plan(sc)
    result = replace(result, warnings=result.warnings + warnings)
    console.print(plan_renderable(result))
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
