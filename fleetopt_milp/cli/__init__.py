"""The ``fleetopt`` command line: a thin layer over the public API.

User mistakes (:class:`~fleetopt_milp.errors.FleetOptError`, bad option values, unwritable
paths) print one line on stderr and exit with status 2; no stack traces. Machine-readable
output goes to ``--json PATH``.

Start-up is kept short: only typer is imported to build the commands; each command
imports the modules it needs when it runs, and rich is loaded on first print
(:data:`console`). ``python -X importtime -m fleetopt_milp.cli --help`` shows what loads.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from ..errors import FleetOptError, InfeasibleError


class _Group(typer.core.TyperGroup):
    """The command group, with its help flag defaulting to ``False`` rather than ``None``:
    typer coerces a non-bool flag value through pydantic, whose import would add ~0.1 s to
    ``fleetopt plan --help``."""

    def get_help_option(self, ctx):
        opt = super().get_help_option(ctx)
        if opt is not None and opt.default is None:
            opt.default = False
        return opt


# Plain (click) help: typer's rich help panels would import rich and markdown-it, about
# twice the start-up time of `fleetopt --help`.
app = typer.Typer(cls=_Group, add_completion=False, no_args_is_help=True,
                  rich_markup_mode=None, pretty_exceptions_enable=False,
                  help="Cost-optimal LLM inference fleets under a TTFT SLO (FleetOpt).")


class _LazyConsole:
    """A rich console created on first use (rich is slow to import); ``stderr`` for the
    error console."""

    def __init__(self, stderr: bool = False):
        self._stderr = stderr
        self._console = None

    def __getattr__(self, name: str):
        if name in ("_stderr", "_console"):  # not yet set (e.g. while unpickling)
            raise AttributeError(name)
        return getattr(self.get(), name)

    def get(self):
        """The rich ``Console`` itself (for rich objects that take one, e.g. a progress
        bar)."""
        if self._console is None:
            from rich.console import Console

            if self._stderr:
                self._console = Console(stderr=True, soft_wrap=True)
            else:
                console = Console()
                if not console.is_terminal:  # piped or captured: do not squeeze tables
                    console = Console(width=150)
                self._console = console
        return self._console


console = _LazyConsole()
err_console = _LazyConsole(stderr=True)


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
              tpot_ms: float | None = None, tpot_percentile: float = 99.0,
              validate: bool = True):
    """The :class:`~fleetopt_milp.scenario.Scenario` of the shared options (validated unless
    ``validate`` is false: the MILP validates it against the GPU type that can hold the
    long window), the profile's warnings and the catalogue."""
    from ..hardware import load_catalog, profile_warnings, resolve_profile
    from ..scenario import Scenario
    from ..workload import load_workload

    check_count("--tp", tp, 1)
    check_count("--long-context", long_context, 1)
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
    return (sc.validated() if validate else sc), warnings, cat


def check_count(option: str, value: int | None, least: int) -> None:
    """An integer option is at least ``least`` (typer has already parsed it as an int)."""
    if value is not None and value < least:
        raise FleetOptError(f"{option} {value}: must be a whole number >= {least}")


def output_plan(result, json_path: Path | None) -> None:
    """Check a plan (no pool at utilization >= 1, every figure finite), write its plan file
    atomically (first, so that a broken terminal cannot lose it), then print it."""
    from ..plan import write_plan
    from ..report import plan_renderable

    result = result.checked()
    if json_path is not None:
        write_plan(result, json_path)
    console.print(plan_renderable(result))
    if json_path is not None:
        console.print(f"Plan file written to {json_path}", markup=False)


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


def _fail(message: str) -> None:
    """One line on stderr, exit status 2."""
    sys.stderr.write(" ".join(message.split()) + "\n")
    sys.stderr.flush()
    sys.exit(2)


def _one_line_warnings() -> None:
    """Python warnings (e.g. a trace's zero-length outputs) as ``warning: ...`` lines, and
    no numpy floating-point chatter: results are checked for finiteness instead."""
    import warnings

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(f"warning: {' '.join(str(message).split())}\n")

    warnings.showwarning = show
    warnings.filterwarnings("ignore", category=RuntimeWarning)


def main() -> None:
    """Entry point: run the app, turning user mistakes into one-line errors (exit 2)."""
    from typer import exceptions as typer_exc
    from typer._click import exceptions as click_exc

    _one_line_warnings()
    try:
        code = app(standalone_mode=False)
    except InfeasibleError as exc:
        _fail(f"infeasible ({exc.binding}): {exc}")
    except FleetOptError as exc:
        _fail(f"error: {exc}")
    except click_exc.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help())
        code = 0
    except click_exc.ClickException as exc:
        ctx = getattr(exc, "ctx", None)
        where = f"; see `{ctx.command_path} --help`" if ctx is not None else ""
        _fail(f"error: {exc.format_message().rstrip('.')}{where}")
    except OverflowError as exc:  # a value no field check bounded: still one line
        _fail(f"error: a number is too large to compute with ({exc}); use smaller values")
    except MemoryError:
        _fail("error: out of memory; ask for a smaller run (fewer --requests, a shorter "
              "trace) or use a machine with more memory")
    except (typer_exc.Abort, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    if isinstance(code, int) and code:  # typer.Exit(code) from a command
        sys.exit(code)


# Each command lives in its own module; importing it registers it on ``app``. The modules
# import only typer at import time, so ``fleetopt --help`` stays fast.
from . import calibrate as _calibrate  # noqa: E402,F401
from . import deploy as _deploy  # noqa: E402,F401
from . import evaluate as _evaluate  # noqa: E402,F401
from . import gateway as _gateway  # noqa: E402,F401
from . import plan as _plan  # noqa: E402,F401
from . import report as _report  # noqa: E402,F401
from . import simulate as _simulate  # noqa: E402,F401
from . import solve as _solve  # noqa: E402,F401
from . import sweep as _sweep  # noqa: E402,F401
