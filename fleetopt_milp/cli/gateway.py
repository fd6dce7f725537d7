"""``fleetopt gateway``, ``compress``, ``route`` and ``measure-compression``: C&R at run time.

Thin wrappers over :mod:`fleetopt_milp.gateway` (docs/gateway.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from . import app, err_console

PANEL = "Compress-and-Route gateway"
TokenizerOpt = typer.Option(
    "gpt2", "--tokenizer", help="Tokenizer: shipped name (gpt2), a .tiktoken file or a "
    "tokenizer.json")
DefaultMaxOpt = typer.Option(
    256, "--default-max-tokens", help="max_tokens assumed (and forwarded) for a request "
    "that gives none, so that L = input + max_tokens is defined")


def _router(plan_file: Path, tokenizer: str, default_max_tokens: int):
    from ..gateway.router import Router
    from ..gateway.tokenizer import load_tokenizer
    from ..plan import read_plan

    return Router.from_plan(read_plan(plan_file), load_tokenizer(tokenizer), default_max_tokens)


@app.command(rich_help_panel=PANEL)
def gateway(
    plan_file: Path = typer.Argument(..., help="Plan file written by `fleetopt plan --json`"),
    upstream: list[str] = typer.Option(
        ..., "--upstream", help="ROLE=URL of a pool's OpenAI-compatible server, e.g. "
        "short=http://10.0.0.5:8000 (repeatable, one per pool)"),
    port: int = typer.Option(8080, "--port", help="Port to listen on"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 for all)"),
    tokenizer: str = TokenizerOpt,
    default_max_tokens: int = DefaultMaxOpt,
    timeout_s: float = typer.Option(600.0, "--timeout-s",
                                    help="Upstream connect/read timeout, seconds"),
):
    """Serve the OpenAI API in front of the plan's pools, with Compress-and-Route."""
    import uvicorn

    from ..gateway.server import SERVER_KEEPALIVE_S, GatewayConfig, create_app, parse_upstreams

    router = _router(plan_file, tokenizer, default_max_tokens)
    config = GatewayConfig(router, parse_upstreams(upstream), timeout_s)
    missing = [r for r in router.roles if r not in config.upstreams]
    if missing:
        err_console.print(f"warning: no --upstream for pool(s) {', '.join(missing)}: "
                          "their requests get HTTP 503", markup=False)
    err_console.print(f"fleetopt gateway on http://{host}:{port} -> "
                      + ", ".join(f"{r}={u}" for r, u in config.upstreams.items()), markup=False)
    uvicorn.run(create_app(config), host=host, port=port, log_level="warning",
                timeout_keep_alive=SERVER_KEEPALIVE_S)


@app.command(rich_help_panel=PANEL)
def compress(
    budget_tokens: int = typer.Option(..., "--budget-tokens", help="Most tokens to keep"),
    file: Path | None = typer.Option(None, "--file", help="Read this file (default: stdin)"),
    tokenizer: str = TokenizerOpt,
):
    """Compress a text to a token budget; token counts before and after go to stderr."""
    from ..errors import FleetOptError
    from ..gateway.compress import compress as run_compress
    from ..gateway.tokenizer import load_tokenizer

    if file is None:
        text = sys.stdin.read()
    else:
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise FleetOptError(f"--file {file}: cannot read it ({exc.strerror})") from None
    res = run_compress(text, budget_tokens, load_tokenizer(tokenizer))
    sys.stdout.write(res.text)
    sys.stdout.flush()
    err_console.print(f"tokens: {res.tokens_before} -> {res.tokens_after} (budget "
                      f"{res.budget_tokens}; kept {len(res.kept)} of {res.n_units} units)",
                      markup=False)


@app.command(rich_help_panel=PANEL)
def route(
    plan_file: Path = typer.Argument(..., help="Plan file written by `fleetopt plan --json`"),
    requests: Path | None = typer.Option(
        None, "--requests", help="JSONL of OpenAI request bodies (default: stdin)"),
    tokenizer: str = TokenizerOpt,
    default_max_tokens: int = DefaultMaxOpt,
):
    """Route OpenAI request bodies (JSONL) by a plan; one JSON decision per line."""
    import json

    from ..gateway.measure import read_request_lines

    router = _router(plan_file, tokenizer, default_max_tokens)
    if requests is None:
        bodies = read_request_lines(sys.stdin, "stdin")
    else:
        bodies = read_request_lines(requests.read_text(encoding="utf-8").splitlines(),
                                    str(requests))
    for body in bodies:
        sys.stdout.write(json.dumps(router.route(body).decision.to_dict()) + "\n")


@app.command("measure-compression", rich_help_panel=PANEL)
def measure_compression(
    prompts: list[Path] = typer.Argument(..., help="Prompt files, directories or JSONL of "
                                         "request bodies"),
    plan_file: Path = typer.Option(..., "--plan", help="Plan whose boundaries and gamma "
                                   "define the C&R bands"),
    tokenizer: str = TokenizerOpt,
    default_max_tokens: int = DefaultMaxOpt,
    json_path: Path | None = typer.Option(None, "--json", help="Write the figures (JSON) here"),
):
    """Measure p_c (the band's safely compressible share) and the compression latency."""
    from ..gateway.measure import measure_compression as run_measure
    from ..gateway.measure import read_prompts, render_measurement, write_json_atomic

    router = _router(plan_file, tokenizer, default_max_tokens)
    m = run_measure(router, read_prompts(prompts))
    typer.echo(render_measurement(m))
    if json_path is not None:
        write_json_atomic(json_path, m.to_dict())
