"""Measure ``p_c`` and the compression latency on a sample of real prompts.

The planner takes two C&R figures as inputs (docs/model.md §4.2): ``p_c``, the share of
band requests that compress safely (``fleetopt plan --compressible``), and the latency
compression adds to a compressed request's TTFT (``--compression-ms``).
:func:`measure_compression` routes a sample of requests with the real router, gate and
compressor, and reports both (docs/gateway.md, "Measuring p_c").

Prompt files (:func:`read_prompts`): ``.jsonl`` files hold one OpenAI request body per
line (chat or completion); any other file is one prompt; a directory is read file by file
(sorted by name).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import FleetOptError
from .router import Router, validate_body

__all__ = ["CompressionMeasurement", "measure_compression", "read_prompts",
           "read_request_lines", "render_measurement", "write_json_atomic"]


@dataclass(frozen=True)
class CompressionMeasurement:
    """What a sample says about C&R.

    ``band_requests``: requests the plan puts in a C&R band (candidates);
    ``compressed``: those the gate passed and the compressor fitted; ``compressible_share``
    = compressed / band_requests (``p_c``, NaN with no band request).
    ``gate_safe_share``: the gate's safe share over every prompt, band or not.
    ``compress_ms_p50/p90/p99``: latency of gate + compressor over the candidates (ms).
    ``reasons``: why candidates were not compressed, by content kind.
    """

    requests: int
    band_requests: int
    compressed: int
    compressible_share: float
    gate_safe_share: float
    compress_ms_p50: float
    compress_ms_p90: float
    compress_ms_p99: float
    reasons: dict[str, int]

    def to_dict(self) -> dict:
        """JSON-ready figures (NaN, with no band request, becomes ``None``)."""
        return {k: (None if isinstance(v, float) and math.isnan(v) else v)
                for k, v in self.__dict__.items()}


def write_json_atomic(path: str | Path, obj) -> None:
    """Write ``obj`` as strict JSON to ``path`` via a temporary file and a rename."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent if str(p.parent) else ".", prefix=f".{p.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=2, allow_nan=False) + "\n")
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_request_lines(lines: Iterable[str], source: str) -> list[dict]:
    """Request bodies from JSON lines (blank lines skipped); errors name the line."""
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            body = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FleetOptError(f"{source}: line {n}: not valid JSON ({exc.msg})") from None
        chat = isinstance(body, dict) and "messages" in body
        try:
            out.append(validate_body(body, chat))
        except FleetOptError as exc:
            raise FleetOptError(f"{source}: line {n}: {exc}") from None
    return out


def read_prompts(paths: Iterable[str | Path]) -> list[dict]:
    """Request bodies from prompt files (module docstring)."""
    bodies: list[dict] = []
    for path in paths:
        p = Path(path)
        if p.is_dir():
            bodies += read_prompts(sorted(f for f in p.iterdir() if f.is_file()))
            continue
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FleetOptError(f"{p}: prompt file not found") from None
        except UnicodeDecodeError:
            raise FleetOptError(f"{p}: not UTF-8 text; give text files or JSONL "
                                "request bodies") from None
        if p.suffix == ".jsonl":
            bodies += read_request_lines(text.splitlines(), str(p))
        else:
            bodies.append({"prompt": text})
    if not bodies:
        raise FleetOptError("no prompts: give prompt files, directories or .jsonl files")
    return bodies


def measure_compression(router: Router, bodies: list[dict]) -> CompressionMeasurement:
    """Route every body and summarise the C&R candidates (see the class)."""
    from .safety import assess_request

    decisions = [router.route(b).decision for b in bodies]
    safe = sum(assess_request(b).safe for b in bodies)
    band = [d for d in decisions if d.candidate]
    done = sum(d.compressed for d in band)
    ms = np.array([d.compress_ms for d in band]) if band else np.array([np.nan])
    p50, p90, p99 = (float(np.percentile(ms, q)) for q in (50, 90, 99))
    reasons = Counter(d.content for d in band if not d.compressed)
    return CompressionMeasurement(
        requests=len(bodies), band_requests=len(band), compressed=done,
        compressible_share=done / len(band) if band else float("nan"),
        gate_safe_share=safe / len(bodies), compress_ms_p50=p50, compress_ms_p90=p90,
        compress_ms_p99=p99, reasons=dict(sorted(reasons.items())))


def render_measurement(m: CompressionMeasurement) -> str:
    """Plain-text report, ending with the ``fleetopt plan`` options the figures feed."""
    lines = [f"prompts: {m.requests}; in a C&R band: {m.band_requests}; compressed: "
             f"{m.compressed}",
             f"p_c (compressed share of the band): {m.compressible_share:.3f}",
             f"safety gate, safe share of all prompts: {m.gate_safe_share:.3f}",
             f"gate + compression latency, ms: p50 {m.compress_ms_p50:.2f}, p90 "
             f"{m.compress_ms_p90:.2f}, p99 {m.compress_ms_p99:.2f}"]
    if m.reasons:
        lines.append("not compressed: " + ", ".join(f"{k} {v}" for k, v in m.reasons.items()))
    if m.band_requests:
        lines.append(f"plan with: fleetopt plan --compressible {m.compressible_share:.3f} "
                     f"--compression-ms {m.compress_ms_p99:.2f}")
    else:
        lines.append("no prompt falls in a C&R band of this plan: p_c cannot be measured "
                     "from this sample (the gate's safe share is an upper bound)")
    return "\n".join(lines)
