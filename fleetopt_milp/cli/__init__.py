"""The ``fleetopt`` command line: a thin layer over the public API.

User mistakes (:class:`~fleetopt_milp.errors.FleetOptError`) print one line on stderr and
exit with status 2; no stack traces. Machine-readable output goes to ``--json PATH``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from ..errors import FleetOptError, InfeasibleError

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
#: The calibrated Llama-3-70B TP-8 H100 profile (models/calibrated.toml, docs/engine.md §3);
#: the paper's profiles stay for reproduction (--gpu paper-H100 --service-model slot).
DEFAULT_GPU = "H100-Llama-3-70B-tp8-vllm"
#: The service model when --service-model is not given (--paper-compat always uses "slot"):
#: the engine model, validated against the engine simulation (benchmarks/RESULTS.md).
DEFAULT_SERVICE_MODEL = "engine"


def _service_model(service_model: str | None, paper_compat: bool) -> str:
    """The service model to use: given, or the default; the paper's rules need ``slot``."""
    if service_model is None:
        return "slot" if paper_compat else DEFAULT_SERVICE_MODEL
    if paper_compat and service_model != "slot":
        raise FleetOptError(f"--service-model {service_model}: --paper-compat reproduces the "
                            "paper's slot model; drop one of them")
    return service_model


def _scenario(workload: str, rate: float, slo_ms: float, percentile: float, gpu: str,
              model: str | None, tp: int | None, long_context: int, gamma_max: float,
              compressible: float, rho_max: float, compression_ms: float, paper_compat: bool,
              catalog: list[Path], service_model: str | None = None,
              tpot_ms: float | None = None, tpot_percentile: float = 99.0):
    from ..hardware import load_catalog, profile_warnings, resolve_profile
    from ..scenario import Scenario
    from ..workload import load_workload

    cat = load_catalog(catalog)
    profile = resolve_profile(cat, gpu, model, tp)
    wl = load_workload(workload)
    warnings = tuple(profile_warnings(profile, cat))
    sc = Scenario(workload=wl, profile=profile, rate_rps=rate, slo_ms=slo_ms,
                  percentile=percentile, long_context_tokens=long_context, gamma_max=gamma_max,
                  compressible_share=compressible, rho_max=rho_max,
                  compression_latency_ms=compression_ms, paper_compat=paper_compat,
                  service_model=_service_model(service_model, paper_compat), tpot_ms=tpot_ms,
                  tpot_percentile=tpot_percentile)
    if sc.service_model not in ("slot", "engine"):
        raise FleetOptError(f"--service-model {sc.service_model}: use slot or engine")
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
                      help="Calibrated profile (default H100-Llama-3-70B-tp8-vllm; paper-H100 for "
                      "the paper) or a GPU name for a roofline profile")
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
ServiceModelOpt = typer.Option(
    None, "--service-model", help="slot (every iteration at a full batch; the paper's) or "
    "engine (continuous batching at its operating point, docs/engine.md); default engine")
TpotOpt = typer.Option(None, "--tpot-ms", help="TPOT SLO, ms per output token (engine model)")
TpotPctOpt = typer.Option(99.0, "--tpot-percentile", help="TPOT SLO percentile (99 = P99)")
FromOpt = typer.Option(None, "--from", help="Re-run with the inputs recorded in this plan "
                       "file (only --json may go with it)")


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




# Each command lives in its own module; importing it registers it on ``app``. The modules
# import only typer at import time, so ``fleetopt --help`` stays fast.
from . import calibrate as _calibrate  # noqa: E402,F401
from . import deploy as _deploy  # noqa: E402,F401
from . import evaluate as _evaluate  # noqa: E402,F401
from . import plan as _plan  # noqa: E402,F401
from . import report as _report  # noqa: E402,F401
from . import simulate as _simulate  # noqa: E402,F401
from . import solve as _solve  # noqa: E402,F401
from . import sweep as _sweep  # noqa: E402,F401
