"""Workload files: the readers of trace and CDF formats, and the built-in workloads.

Readers (all numpy + the standard library):

====================  =====================================================================
format                file
====================  =====================================================================
``cdf``               JSON ``[[tokens, cumulative_fraction], ...]`` or ``{"cdf": [...]}``
``azure-csv``         CSV ``TIMESTAMP,ContextTokens,GeneratedTokens`` (Azure LLM traces)
``mooncake-jsonl``    JSON lines ``{"timestamp": ms, "input_length", "output_length"}``
``lengths-csv``       CSV ``num_prefill_tokens,num_decode_tokens,...`` (no timestamps)
====================  =====================================================================

Any file may be gzip-compressed (``.gz`` suffix). Built-in workloads are listed in
``data/workloads.toml`` (:func:`builtin_workloads`); :func:`load_workload` takes a built-in
name or a path. Every problem with a file raises :class:`~fleetopt_milp.errors.WorkloadError`
with one line naming the file, the line or entry (1-based) and the fix.

Every problem with a file raises :class:`~fleetopt_milp.errors.WorkloadError` with one
line naming the file, the line or entry (1-based) and the fix. The distributions they
build are :class:`~fleetopt_milp.workload.Workload` and
:class:`~fleetopt_milp.workload.Trace`.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import os
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .errors import WorkloadError
from .workload import Workload, workload_from_cdf, workload_from_requests

__all__ = ["DATA_DIR_ENV", "WORKLOAD_FORMATS", "builtin_workloads", "data_dir",
           "load_workload"]

DATA_DIR_ENV = "FLEETOPT_DATA_DIR"
"""Environment variable that overrides the location of the ``data/`` directory."""

WORKLOAD_FORMATS = ("cdf", "azure-csv", "mooncake-jsonl", "lengths-csv")
"""File formats understood by :func:`load_workload` (the ``format`` of a registry entry)."""

_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_LENGTHS_COLUMNS = ("num_prefill_tokens", "num_decode_tokens")
_MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")
_AZURE_HINT = "an Azure trace CSV needs the header TIMESTAMP,ContextTokens,GeneratedTokens"
_LENGTHS_HINT = "a lengths CSV needs the columns num_prefill_tokens,num_decode_tokens"
_SUPPORTED = (
    "give a .json CDF, a .csv trace (Azure or lengths columns), a .jsonl Mooncake trace "
    "(any of them optionally .gz)"
)


# --------------------------------------------------------------------------------------------
# file readers
# --------------------------------------------------------------------------------------------


def _read_text(path: Path, label: str) -> str:
    """The file's text (gunzipped if it ends in .gz), UTF-8 with an optional BOM."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise WorkloadError(f"{label}: file not found") from None
    except IsADirectoryError:
        raise WorkloadError(f"{label}: is a directory, not a workload file") from None
    except OSError as err:
        raise WorkloadError(f"{label}: cannot read the file ({err.strerror})") from None
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:
            raise WorkloadError(
                f"{label}: not a valid gzip file ({err}); decompress it or fix the .gz suffix"
            ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise WorkloadError(
            f"{label}: line {line}: not UTF-8 text (byte {err.start}); save the file as UTF-8"
        ) from None
    if not text.strip():
        raise WorkloadError(f"{label}: line 1: the file is empty; {_SUPPORTED}")
    return text


def _base_suffix(path: Path) -> str:
    """The extension that names the format: ``.json``, ``.jsonl``, ``.csv``... (``.gz`` off)."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return Path(name).suffix


def _stem(path: Path) -> str:
    name = path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    return Path(name).stem


def _read_csv(text: str, label: str) -> tuple[list[str], int, list[list[str]], list[int]]:
    """Header (stripped), header line, data rows and their 1-based line numbers."""
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    header_line = 1
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        for row in reader:
            if not row or all(not cell.strip() for cell in row):
                continue
            if header is None:
                header = [cell.strip() for cell in row]
                header_line = reader.line_num
                continue
            if len(row) != len(header):
                raise WorkloadError(
                    f"{label}: line {reader.line_num}: {len(row)} cells but the header has "
                    f"{len(header)} columns; give one value per column"
                )
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as err:
        raise WorkloadError(f"{label}: line {reader.line_num}: not valid CSV ({err})") from None
    if header is None:  # pragma: no cover - _read_text rejects blank files
        raise WorkloadError(f"{label}: line 1: the file is empty")
    if not rows:
        raise WorkloadError(
            f"{label}: line {header_line}: a header but no data rows; add one row per request"
        )
    return header, header_line, rows, lines


def _column_index(
    header: list[str], header_line: int, wanted: Sequence[str], label: str, hint: str
) -> list[int]:
    lower = [h.lower() for h in header]
    missing = [c for c in wanted if c.lower() not in lower]
    if missing:
        raise WorkloadError(
            f"{label}: line {header_line}: missing column(s) {', '.join(missing)} "
            f"(found {', '.join(header)}); {hint}"
        )
    return [lower.index(c.lower()) for c in wanted]


def _int_column(cells: list[str], lines: list[int], column: str, label: str) -> np.ndarray:
    """Whole non-negative numbers (``12`` or ``12.0``) as int64, else an error naming the line."""
    try:
        arr = np.array(cells, dtype=np.int64)
    except (ValueError, OverflowError):
        arr = np.empty(len(cells), dtype=np.int64)
        for k, (cell, line) in enumerate(zip(cells, lines, strict=True)):
            text = cell.strip()
            try:
                value = float(text)
            except ValueError:
                raise WorkloadError(
                    f"{label}: line {line}: {column} = {cell!r} is not a number; token counts "
                    f"must be whole numbers"
                ) from None
            if not math.isfinite(value) or value != int(value):
                raise WorkloadError(
                    f"{label}: line {line}: {column} = {cell!r} is not a whole number of tokens"
                ) from None
            arr[k] = int(value)
    return _check_lengths(arr, lines, column, label)


def _check_lengths(arr: np.ndarray, lines: list[int], column: str, label: str) -> np.ndarray:
    negative = np.flatnonzero(arr < 0)
    if negative.size:
        k = int(negative[0])
        raise WorkloadError(
            f"{label}: line {lines[k]}: {column} = {int(arr[k])} is negative; token counts "
            f"must be >= 0"
        )
    return arr


def _lengths_rule(
    inp: np.ndarray,
    out: np.ndarray,
    lines: list[int],
    in_col: str,
    out_col: str,
    label: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Zero prompt tokens are an error; zero output tokens are read as 1 (with a warning)."""
    zero_in = np.flatnonzero(inp == 0)
    if zero_in.size:
        raise WorkloadError(
            f"{label}: line {lines[int(zero_in[0])]}: {in_col} = 0; every request needs at "
            f"least one prompt token (remove the row)"
        )
    zero_out = np.flatnonzero(out == 0)
    if zero_out.size:
        warnings.warn(
            f"{label}: {zero_out.size} request(s) with {out_col} = 0 (first at line "
            f"{lines[int(zero_out[0])]}) are counted as 1 output token: a request still "
            f"produces its first token (output_tokens = max(out, 1))",
            UserWarning,
            stacklevel=3,
        )
        out = np.maximum(out, 1)
    return inp, out


def _parse_timestamps(cells: list[str], lines: list[int], label: str) -> np.ndarray:
    """Azure wall-clock timestamps (``2023-11-16 18:17:03.9799600``) as int64 nanoseconds."""
    stripped = [c.strip() for c in cells]
    try:
        stamps = np.array(stripped, dtype="datetime64[ns]")
    except (ValueError, TypeError, OverflowError):
        stamps = None
    if stamps is not None and not np.any(np.isnat(stamps)):
        return stamps.astype(np.int64)
    for cell, line in zip(stripped, lines, strict=True):
        try:
            value = np.datetime64(cell, "ns")
        except (ValueError, TypeError, OverflowError):
            value = np.datetime64("NaT")
        if np.isnat(value):
            raise WorkloadError(
                f"{label}: line {line}: TIMESTAMP {cell!r} is not a date-time; write it like "
                f"2023-11-16 18:17:03.9799600"
            )
    raise WorkloadError(f"{label}: unreadable TIMESTAMP column")  # pragma: no cover


def _first_backwards(times: np.ndarray) -> int | None:
    back = np.flatnonzero(np.diff(times) < 0)
    return int(back[0]) + 1 if back.size else None


def _read_azure(text: str, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(time_ns, input, output)`` of one Azure CSV, in file order (must be time order)."""
    header, header_line, rows, lines = _read_csv(text, label)
    it, ii, io_ = _column_index(header, header_line, _AZURE_COLUMNS, label, _AZURE_HINT)
    t_ns = _parse_timestamps([r[it] for r in rows], lines, label)
    inp = _int_column([r[ii] for r in rows], lines, header[ii], label)
    out = _int_column([r[io_] for r in rows], lines, header[io_], label)
    back = _first_backwards(t_ns)
    if back is not None:
        raise WorkloadError(
            f"{label}: line {lines[back]}: TIMESTAMP {rows[back][it].strip()} is earlier than "
            f"the previous row's {rows[back - 1][it].strip()}; sort the file by TIMESTAMP"
        )
    inp, out = _lengths_rule(inp, out, lines, header[ii], header[io_], label)
    return t_ns, inp, out


def _read_lengths_csv(text: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    header, header_line, rows, lines = _read_csv(text, label)
    ii, io_ = _column_index(header, header_line, _LENGTHS_COLUMNS, label, _LENGTHS_HINT)
    inp = _int_column([r[ii] for r in rows], lines, header[ii], label)
    out = _int_column([r[io_] for r in rows], lines, header[io_], label)
    return _lengths_rule(inp, out, lines, header[ii], header[io_], label)


def _parse_json(text: str, label: str, hint: str, line_no: int | None = None) -> Any:
    """``json.loads(text)``; a syntax error names the file, the line and ``hint``."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise WorkloadError(f"{label}: line {line_no or err.lineno}: not valid JSON "
                            f"({err.msg}); {hint}") from None


def _read_mooncake(text: str, label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(arrival_s, input, output)`` of a Mooncake JSONL trace (``timestamp`` in ms)."""
    values: list[tuple[float, float, float]] = []
    lines: list[int] = []
    example = '{"timestamp": 0, "input_length": 6758, "output_length": 500}'
    for line_no, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        record = _parse_json(raw, label, f"each line must be one object like {example}",
                             line_no)
        if not isinstance(record, dict):
            raise WorkloadError(
                f"{label}: line {line_no}: expected a JSON object like {example}, got "
                f"{type(record).__name__}"
            )
        missing = [f for f in _MOONCAKE_FIELDS if f not in record]
        if missing:
            raise WorkloadError(
                f"{label}: line {line_no}: missing field(s) {', '.join(missing)}; each line "
                f"needs timestamp (ms), input_length and output_length"
            )
        row = []
        for field_name in _MOONCAKE_FIELDS:
            v = record[field_name]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise WorkloadError(
                    f"{label}: line {line_no}: {field_name} = {json.dumps(v)} is not a finite "
                    f"number"
                )
            row.append(float(v))
        values.append((row[0], row[1], row[2]))
        lines.append(line_no)
    arr = np.array(values, dtype=np.float64).reshape(-1, 3)
    for col, field_name in ((1, "input_length"), (2, "output_length")):
        bad = np.flatnonzero(arr[:, col] != np.round(arr[:, col]))
        if bad.size:
            k = int(bad[0])
            raise WorkloadError(
                f"{label}: line {lines[k]}: {field_name} = {arr[k, col]!r} is not a whole "
                f"number of tokens"
            )
    ts = arr[:, 0]
    back = _first_backwards(ts)
    if back is not None:
        raise WorkloadError(
            f"{label}: line {lines[back]}: timestamp {ts[back]:g} ms is earlier than the "
            f"previous request's {ts[back - 1]:g} ms; a Mooncake trace must be in arrival order"
        )
    inp = _check_lengths(arr[:, 1].astype(np.int64), lines, "input_length", label)
    out = _check_lengths(arr[:, 2].astype(np.int64), lines, "output_length", label)
    inp, out = _lengths_rule(inp, out, lines, "input_length", "output_length", label)
    return (ts - ts[0]) / 1000.0, inp, out


def _read_cdf_json(text: str, label: str) -> list[Any]:
    raw = _parse_json(text, label, "a CDF file holds [[tokens, cumulative_fraction], ...]")
    if isinstance(raw, dict):
        if "cdf" not in raw:
            raise WorkloadError(
                f'{label}: entry 1: a JSON object must hold the CDF under the key "cdf" '
                f"(found keys: {', '.join(map(str, raw)) or 'none'})"
            )
        raw = raw["cdf"]
    if not isinstance(raw, list):
        raise WorkloadError(
            f"{label}: entry 1: expected a list of [tokens, cumulative_fraction] pairs, got "
            f"{type(raw).__name__}; write e.g. [[512, 0.3], [4096, 0.9], [8192, 1.0]]"
        )
    return raw


def _detect_csv_format(text: str, label: str) -> str:
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    header = {h.strip().lower() for h in next(csv.reader([first]), [])}
    azure = {c.lower() for c in _AZURE_COLUMNS}
    lengths = {c.lower() for c in _LENGTHS_COLUMNS}
    if header & azure:
        return "azure-csv"
    if header & lengths:
        return "lengths-csv"
    raise WorkloadError(
        f"{label}: line 1: unrecognised CSV header ({first.strip()[:80]}); expected "
        f"TIMESTAMP,ContextTokens,GeneratedTokens (Azure trace) or "
        f"num_prefill_tokens,num_decode_tokens (lengths file)"
    )


def _detect_format(path: Path, label: str) -> str:
    suffix = _base_suffix(path)
    if suffix == ".json":
        return "cdf"
    if suffix in (".jsonl", ".ndjson"):
        return "mooncake-jsonl"
    if suffix == ".csv":
        return "csv"  # azure or lengths, decided by the header
    raise WorkloadError(
        f"{label}: unsupported file extension {suffix or '(none)'!r}; {_SUPPORTED}, or use a "
        f"built-in name ({_names_hint()})"
    )


def _load_files(paths: Sequence[Path], fmt: str | None, *, name: str, source: str) -> Workload:
    """Read one or more files of one format into a workload (several only for Azure CSVs)."""
    labels = [str(p) for p in paths]
    texts: list[str] = []
    formats: list[str] = []
    for path, label in zip(paths, labels, strict=True):
        file_fmt = fmt or _detect_format(path, label)
        text = _read_text(path, label)
        if file_fmt == "csv":
            file_fmt = _detect_csv_format(text, label)
        texts.append(text)
        formats.append(file_fmt)
    fmt = formats[0]
    if any(f != fmt for f in formats) or (len(paths) > 1 and fmt != "azure-csv"):
        raise WorkloadError(
            f"{', '.join(labels)}: only Azure CSV traces can be combined into one workload"
        )
    if fmt == "cdf":
        return workload_from_cdf(_read_cdf_json(texts[0], labels[0]), name=name, source=source)
    if fmt == "lengths-csv":
        inp, out = _read_lengths_csv(texts[0], labels[0])
        return workload_from_requests(inp, out, None, name=name, source=source)
    if fmt == "mooncake-jsonl":
        arrival, inp, out = _read_mooncake(texts[0], labels[0])
        return workload_from_requests(inp, out, arrival, name=name, source=source)
    if fmt == "azure-csv":
        parts = [_read_azure(text, label) for text, label in zip(texts, labels, strict=True)]
        t_ns = np.concatenate([p[0] for p in parts])
        inp = np.concatenate([p[1] for p in parts])
        out = np.concatenate([p[2] for p in parts])
        order = np.argsort(t_ns, kind="stable")
        t_ns, inp, out = t_ns[order], inp[order], out[order]
        arrival = (t_ns - t_ns[0]).astype(np.float64) / 1e9
        return workload_from_requests(inp, out, arrival, name=name, source=source)
    raise WorkloadError(f"{labels[0]}: unknown format {fmt!r}; use one of {WORKLOAD_FORMATS}")


# --------------------------------------------------------------------------------------------
# registry and entry point
# --------------------------------------------------------------------------------------------


def data_dir() -> Path:
    """The package's ``data/`` directory (``$FLEETOPT_DATA_DIR`` if set)."""
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / "data"


@lru_cache(maxsize=8)
def _registry(directory: Path) -> dict[str, dict[str, Any]]:
    """Entries of ``directory/workloads.toml``, validated."""
    import tomllib

    path = directory / "workloads.toml"
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkloadError(
            f"{path}: file not found; the built-in workloads live in data/workloads.toml "
            f"(set {DATA_DIR_ENV} to the data directory)"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise WorkloadError(f"{path}: not valid TOML ({err})") from None
    entries = doc.get("workloads")
    if not isinstance(entries, dict) or not entries:
        raise WorkloadError(f"{path}: no [workloads.<name>] tables")
    for name, entry in entries.items():
        where = f"{path}: [workloads.{name}]"
        if not isinstance(entry, dict):
            raise WorkloadError(f"{where}: must be a table")
        if entry.get("format") not in WORKLOAD_FORMATS:
            raise WorkloadError(
                f"{where}: format {entry.get('format')!r} is not one of "
                f"{', '.join(WORKLOAD_FORMATS)}"
            )
        files = entry.get("files")
        if (
            not isinstance(files, list)
            or not files
            or not all(isinstance(f, str) and f for f in files)
        ):
            raise WorkloadError(f"{where}: files must be a non-empty list of paths under data/")
        if len(files) > 1 and entry["format"] != "azure-csv":
            raise WorkloadError(f"{where}: only azure-csv entries may list several files")
        if not isinstance(entry.get("description"), str):
            raise WorkloadError(f"{where}: needs a one-line description")
    return entries


def builtin_workloads() -> dict[str, str]:
    """Built-in workload names (``data/workloads.toml``) -> one-line description."""
    return {name: entry["description"] for name, entry in _registry(data_dir()).items()}


def builtin_files(name: str) -> list[Path]:
    """The data files of the built-in workload ``name`` (``data/workloads.toml``)."""
    directory = data_dir()
    return [directory / f for f in _registry(directory)[name]["files"]]


def _names_hint() -> str:
    try:
        return "built-in names: " + ", ".join(builtin_workloads())
    except WorkloadError:
        return f"built-in names unavailable: data/workloads.toml not found; set {DATA_DIR_ENV}"


@lru_cache(maxsize=32)
def _load_builtin(directory: Path, name: str) -> Workload:
    entry = _registry(directory)[name]
    paths = [directory / f for f in entry["files"]]
    source = " + ".join(f"data/{f}" for f in entry["files"])
    return _load_files(paths, entry["format"], name=name, source=source)


def load_workload(spec: str | os.PathLike[str]) -> Workload:
    """Load a workload from a built-in name or a file path.

    ``spec`` is a name from :func:`builtin_workloads` (e.g. ``"azure-2023"``,
    ``"azure-2023-cdf"``), or a path whose extension picks the reader: ``.json`` (CDF of total
    tokens), ``.csv`` (Azure trace or lengths file, told apart by the header), ``.jsonl``
    (Mooncake trace); any of them may end in ``.gz``. Built-ins are cached (workloads are
    immutable); files are re-read on every call.

    Raises :class:`~fleetopt_milp.errors.WorkloadError` naming the file, line/entry and fix.
    """
    if isinstance(spec, str):
        directory = data_dir()
        try:
            registry = _registry(directory)
        except WorkloadError:
            registry = {}
        if spec in registry:
            return _load_builtin(directory, spec)
    path = Path(spec).expanduser()
    label = str(spec)
    if not path.exists():
        looks_like_name = isinstance(spec, str) and os.sep not in spec and "." not in spec
        if looks_like_name:
            raise WorkloadError(
                f"{label}: unknown built-in workload and no such file; {_names_hint()}"
            )
        raise WorkloadError(
            f"{label}: file not found; give an existing file or a built-in workload "
            f"({_names_hint()})"
        )
    return _load_files([path], None, name=_stem(path), source=label)
