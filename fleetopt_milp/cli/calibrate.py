"""``fleetopt calibrate``: fit a serving profile from benchmark runs or engine-step CSVs."""

from __future__ import annotations

from pathlib import Path

import typer

from . import CatalogOpt, app, console


@app.command()
def calibrate(
    files: list[Path] = typer.Argument(
        ..., help="benchmark_serving.py --save-result JSON files (burst runs) and/or step CSVs "
        "(batch,context_tokens,prefill_tokens,step_ms)"),
    gpu: str = typer.Option(..., "--gpu", help="GPU name in the catalogue (e.g. H100)"),
    model: str = typer.Option(..., "--model", help="Served LLM in the catalogue"),
    tp: int = typer.Option(..., "--tp", help="GPUs per instance (tensor parallelism)"),
    name: str = typer.Option(..., "--name", help="Name of the new profile"),
    out: Path = typer.Option(..., "--out", help="Write the profile TOML here"),
    prefill_budget_tokens: int = typer.Option(
        2048, "--prefill-budget-tokens", help="Prompt tokens one prefill step takes at most "
        "when the runs are replayed (the engine's max batched tokens; vLLM without chunked "
        "prefill: max(--max-model-len, 2048))"),
    output_lag_steps: int = typer.Option(
        0, "--output-lag-steps", help="Steps between a prefill step and the client's first "
        "token when the runs are replayed (1 for vLLM with asynchronous output processing)"),
    chunk_tokens: int = typer.Option(
        2048, "--chunk-tokens", help="Chunked-prefill step of the engine to plan for "
        "(max batched tokens), tokens"),
    memory_utilization: float = typer.Option(
        0.9, "--memory-utilization", help="Share of HBM the engine may use (KV capacity)"),
    citation: str = typer.Option("", "--citation", help="Where the measurements come from"),
    catalog: list[Path] = CatalogOpt,
):
    """Fit W, the per-sequence cost, H, the prefill rate and the TTFT overhead (and, from
    bursts of several sizes, the benchmark server's ingest time) by robust least squares, and
    write a `source = "calibrated"` catalogue profile."""
    from ..calibration import calibrate as fit_profile
    from ..calibration import read_benchmark, read_steps, write_profile_toml
    from ..errors import FleetOptError
    from ..hardware import load_catalog
    from ..report_engine import calibration_renderable

    for flag, v in (("--prefill-budget-tokens", prefill_budget_tokens),
                    ("--chunk-tokens", chunk_tokens)):
        if v < 1:
            raise FleetOptError(f"{flag} {v}: must be a positive number of tokens")
    if output_lag_steps < 0:
        raise FleetOptError(f"--output-lag-steps {output_lag_steps}: must be >= 0")
    if out.suffix != ".toml":
        raise FleetOptError(f"--out {out}: the profile file must end in .toml")
    cat = load_catalog(catalog)
    runs, steps = [], []
    for f in files:
        (steps.append(read_steps(f)) if f.suffix.lower() == ".csv"
         else runs.append(read_benchmark(f)))
    fit = fit_profile(runs, steps, cat.gpu(gpu), cat.llm(model), tp, name,
                      prefill_budget_tokens=prefill_budget_tokens,
                      output_lag_steps=output_lag_steps, chunk_tokens=chunk_tokens,
                      memory_utilization=memory_utilization, citation=citation)
    write_profile_toml(fit.profile, out)
    console.print(calibration_renderable(fit))
    console.print(f"Profile written to {out}; use it with --catalog {out} --gpu {name}")
