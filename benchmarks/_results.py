"""Write one marked section of benchmarks/RESULTS.md, leaving the other sections alone.

Every benchmark script owns a section ``<!-- NAME:start -->`` ... ``<!-- NAME:end -->``;
re-running a script replaces only its own section (appended at the end the first time).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = ("# Benchmark results\n\nEvery figure here is written by a script in `benchmarks/` "
          "(named in its section). Times are wall-clock medians of repeats on this project's "
          "2-core machines; ratios are against a baseline measured in the same run.\n")


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of RESULTS.md with ``body``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    stamp = (f"_Measured {_dt.date.today().isoformat()} on {platform.machine()}, "
             f"Python {platform.python_version()}._\n\n")
    block = f"{start}\n{stamp}{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    tmp = RESULTS.with_name(f".{RESULTS.name}.tmp")  # temp file + rename: never truncated
    tmp.write_text(text)
    os.replace(tmp, RESULTS)


def median_time_s(fn, repeats: int = 21, warmup: int = 2) -> float:
    """Median wall-clock seconds of ``fn()`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def md_table(header: list[str], rows: list[list]) -> str:
    """A Markdown table."""
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)
