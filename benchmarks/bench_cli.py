"""Benchmark the start-up time of the ``fleetopt`` command line (issue 7, section 3).

Writes the ``cli-startup`` section of ``benchmarks/RESULTS.md``: the median wall time of
fresh processes running ``fleetopt --help`` and ``fleetopt plan --help`` (and the floor
set by importing typer), each against ``python -c pass`` measured in the same run, and
the modules each command loads (``-X importtime``).

Run: ``.venv/bin/python benchmarks/bench_cli.py`` (about 15 seconds).
"""

from __future__ import annotations

import io
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import md_table, write_section  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
CLI = [sys.executable, "-m", "fleetopt_milp.cli"]
TARGET_S = 0.25  # issue 7: `fleetopt --help` and `fleetopt plan --help` at most this
PAPER_CLI_S = 0.18  # the paper's simulator's CLI on this machine, as quoted in issue 7

BEFORE = "2527987"  # the last commit before the start-up work of issue 7


def before_tree() -> Path | None:
    """The package as of :data:`BEFORE`, extracted to a temporary folder (``git archive``),
    to measure the old start-up in the same run; None outside a git clone."""
    try:
        data = subprocess.run(["git", "-C", str(ROOT), "archive", BEFORE, "fleetopt_milp"],
                              check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    folder = Path(tempfile.mkdtemp(prefix="fleetopt-before-"))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(folder, filter="data")
    return folder


CASES = [
    ("`python -c pass` (baseline)", [sys.executable, "-c", "pass"]),
    ("`python -c 'import typer'` (the floor of a typer CLI)",
     [sys.executable, "-c", "import typer"]),
    ("`fleetopt --help`", [*CLI, "--help"]),
    ("`fleetopt plan --help`", [*CLI, "plan", "--help"]),
    ("`fleetopt simulate --help`", [*CLI, "simulate", "--help"]),
]
HELP_ROWS = (2, 3)  # the rows the target is about


NEUTRAL_CWD = tempfile.gettempdir()  # `python -m` puts the cwd first on sys.path


def run(cmd: list[str], env: dict | None = None) -> None:
    subprocess.run(cmd, env=env or ENV, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, cwd=NEUTRAL_CWD)


def heavy_modules(cmd: list[str], env: dict) -> list[str]:
    """Third-party top-level packages a command imports (from ``-X importtime``)."""
    err = subprocess.run([cmd[0], "-X", "importtime", *cmd[1:]], env=env, check=True,
                         capture_output=True, text=True, cwd=NEUTRAL_CWD).stderr
    names = {line.split("|")[-1].strip().split(".")[0] for line in err.splitlines()
             if line.startswith("import time:") and "|" in line}
    watch = ("typer", "rich", "pydantic", "numpy", "scipy", "pyomo", "numba", "pandas")
    return [n for n in watch if n in names]


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def medians_s(cases: list[tuple[str, list[str], dict]], repeats: int = 21,
              warmup: int = 2) -> list[tuple[float, float]]:
    """Median (wall, CPU) seconds of each case. The cases are interleaved in every round so
    that a change in the machine's load affects them alike; CPU time (user + system of the
    child) is what the wall time would be on an idle machine."""
    times: list[list[tuple[float, float]]] = [[] for _ in cases]
    for k in range(warmup + repeats):
        for i, (_, cmd, env) in enumerate(cases):
            t0, c0 = time.perf_counter(), _cpu_s()
            run(cmd, env)
            if k >= warmup:
                times[i].append((time.perf_counter() - t0, _cpu_s() - c0))
    return [(statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
            for t in times]


def main() -> None:
    cases = [(label, cmd, ENV) for label, cmd in CASES]
    old = before_tree()
    if old is not None:
        old_env = {**ENV, "PYTHONPATH": str(old)}
        cases += [(f"{label} before (commit {BEFORE})", cmd, old_env)
                  for label, cmd in CASES[HELP_ROWS[0]:HELP_ROWS[1] + 1]]
    modules = {label: ", ".join(heavy_modules(cmd, env)) or "-" for label, cmd, env in cases}
    rows = []
    try:
        times = medians_s(cases)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    base_wall, base_cpu = times[0]
    for (label, _, _), (wall, cpu) in zip(cases, times, strict=True):
        rows.append([label, f"{wall * 1e3:.0f} ms", f"{wall / base_wall:.1f}",
                     f"{cpu * 1e3:.0f} ms", f"{cpu / base_cpu:.1f}", modules[label]])
    help_wall = max(times[i][0] for i in HELP_ROWS)
    help_cpu = max(times[i][1] for i in HELP_ROWS)
    verdict = (f"wall {'met' if help_wall <= TARGET_S else '**not met**'} "
               f"({help_wall * 1e3:.0f} ms at this load), CPU "
               f"{'met' if help_cpu <= TARGET_S else '**not met**'} ({help_cpu * 1e3:.0f} ms)")
    body = f"""## Command-line start-up (issue 7)

Script: `benchmarks/bench_cli.py`. Median wall time of 21 fresh processes each (after 2
warm-up rounds; the commands interleaved round by round), output discarded; ratio against
`python -c pass` in the same run. CPU is the child's user + system time, what the wall
time would be on an idle machine; load average during the run: {os.getloadavg()[0]:.1f} on
{os.cpu_count()} cores (other jobs share the machine).

{md_table(["command", "median wall", "ratio", "median CPU", "ratio", "heavy packages loaded"],
          rows)}

Target: `fleetopt --help` and `fleetopt plan --help` within {TARGET_S * 1e3:.0f} ms (the
paper's own simulator CLI takes about {PAPER_CLI_S * 1e3:.0f} ms on this machine; the rows
"before" run the package as of commit {BEFORE}, in the same run): {verdict}. How: `import fleetopt_milp`
loads no module until one of its names is used (PEP 562); each command imports what it
needs when it runs; rich is loaded on first print; help is plain click text (typer's rich
panels would load rich and markdown-it); and the command group's help flag defaults to
`False`, so that a sub-command's `--help` skips typer's pydantic-based coercion.
"""
    write_section("cli-startup", body)
    print(body)


if __name__ == "__main__":
    main()
