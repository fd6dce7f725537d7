"""Real text for evaluating the compressor and the safety gate, built from files on the machine.

Nothing here is written by hand: every sample is a deterministic window of a real file,
labelled by what the file is (docs/gateway.md, "Evaluation"):

- ``prose``: the licence texts Debian ships in ``/usr/share/common-licenses`` (GPL,
  LGPL, GFDL, Apache, MPL, Artistic, BSD, CC0), cut at paragraph breaks;
- ``code``: the Python standard library's ``.py`` files and the C headers in
  ``/usr/include``;
- ``json``: this package's JSON files (``data/``, ``tests/golden/``: reference CDFs and
  plan files) and JSON Lines windows of the shipped Mooncake traces;
- ``table``: windows of the shipped CSV traces, the tz database's tab-separated
  ``/usr/share/zoneinfo/*.tab`` files and the Markdown tables (runs of lines opening
  with ``|``) of this repository's Markdown files.

:func:`prose_documents` gives whole prose documents for the compressor's benchmarks and
property tests; :func:`labelled_samples` the gate's labelled set.
"""

from __future__ import annotations

import gzip
import json
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Sample", "prose_documents", "labelled_samples", "question_sentences", "LICENCE_DIR"]

LICENCE_DIR = Path("/usr/share/common-licenses")
_REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Sample:
    """One labelled text: ``label`` in {prose, code, json, table}; ``source`` its file."""

    label: str
    source: str
    text: str


def prose_documents(min_chars: int = 2000) -> list[tuple[str, str]]:
    """``(name, text)`` of every licence text of at least ``min_chars`` characters, sorted."""
    if not LICENCE_DIR.is_dir():
        return []
    out = []
    for p in sorted(LICENCE_DIR.iterdir()):
        if p.is_file() and not p.is_symlink():
            text = p.read_text(encoding="utf-8", errors="replace")
            if len(text) >= min_chars:
                out.append((p.name, text))
    return out


_QUESTION = re.compile(r"(?<![\w-])(?:How|What|Where|Why|When|Which|Who|Can|Should|Is|Are|Do"
                       r"|Does)\s[^.?!\n\[\]#%/=<>`*]{15,150}\?")


def question_sentences(limit: int = 40) -> list[str]:
    """Real question sentences from Debian's package READMEs (``/usr/share/doc/*/README*``),
    whitespace collapsed, de-duplicated, in file order; the closing questions of the
    fidelity benchmark."""
    found: list[str] = []
    for p in sorted(Path("/usr/share/doc").glob("*/README*")):
        try:
            raw = p.read_bytes()
            text = (gzip.decompress(raw) if p.suffix == ".gz" else raw).decode("utf-8")
        except (OSError, UnicodeDecodeError, gzip.BadGzipFile, EOFError):
            continue
        for m in _QUESTION.finditer(text):
            q = " ".join(m.group(0).split())
            if q not in found:
                found.append(q)
        if len(found) >= limit:
            break
    return found[:limit]


def _line_windows(text: str, lines: int, limit: int, skip_comments: bool = False) -> list[str]:
    """Up to ``limit`` windows of ``lines`` lines, spread evenly over the file's middle
    (a source file's first lines are its licence header and docstring, i.e. prose)."""
    rows = [r for r in text.splitlines() if not (skip_comments and r.startswith("#"))]
    if len(rows) <= lines:
        return ["\n".join(rows)] if rows else []
    starts = [len(rows) * (k + 1) // (limit + 1) for k in range(limit)]
    return ["\n".join(rows[i:i + lines]) for i in sorted(set(starts))]


def _paragraph_windows(text: str, chars: int, limit: int) -> list[str]:
    paras = [p for p in text.split("\n\n") if p.strip()]
    out, cur = [], ""
    for p in paras:
        cur = f"{cur}\n\n{p}" if cur else p
        if len(cur) >= chars:
            out.append(cur)
            cur = ""
    return out[:limit]


def _files(directory: Path, glob: str, part: slice) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob(glob) if p.is_file())[part]


def _read(p: Path) -> str:
    return p.read_text(encoding="utf-8", errors="replace")


def _markdown_tables(text: str) -> list[str]:
    tables, cur = [], []
    for line in text.splitlines() + [""]:
        if line.lstrip().startswith("|"):
            cur.append(line)
        else:
            if len(cur) >= 3:
                tables.append("\n".join(cur))
            cur = []
    return tables


def labelled_samples(split: str = "dev", per_class: int = 40) -> list[Sample]:
    """The gate's labelled set (module docstring), at most ``per_class`` samples per label.

    ``split="dev"`` is the set the gate's rules were written against; ``"held-out"`` uses
    other files and other windows of the same kinds, to measure the gate honestly.
    """
    if split not in ("dev", "held-out"):
        raise ValueError(f"split={split!r}: 'dev' or 'held-out'")
    dev = split == "dev"
    part = slice(0, 30) if dev else slice(30, 90, 2)
    out: list[Sample] = []
    prose = [Sample("prose", name, w) for name, text in prose_documents()
             for w in _paragraph_windows(text, 1500, 8)[:4] if dev] + [
        Sample("prose", name, w) for name, text in prose_documents()
        for w in _paragraph_windows(text, 1500, 8)[4:] if not dev]
    out += prose[:per_class]

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = [Sample("code", p.name, w) for p in _files(stdlib, "*.py", part)
            for w in _line_windows(_read(p), 40, 1)]
    code += [Sample("code", p.name, w) for p in _files(Path("/usr/include"), "*.h", part)
             for w in _line_windows(_read(p), 40, 1)]
    out += code[: per_class // 2] + code[len(code) // 2:][: per_class - per_class // 2]

    json_dirs = ("data/fleetsim_reference_cdfs",) if dev else ("tests/golden",)
    js = [Sample("json", str(p.relative_to(_REPO)), _read(p))
          for d in json_dirs for p in _files(_REPO / d, "*.json", slice(None))]
    trace = "conversation_trace" if dev else "synthetic_trace"
    for p in _files(_REPO / "data" / "mooncake_fast25", f"{trace}.jsonl.gz", slice(None)):
        with gzip.open(p, "rt") as f:
            head = [next(f) for _ in range(400)]
        js += [Sample("json", p.name, w) for w in _line_windows("".join(head), 20, 12)]
    out += [s for s in js if _valid_json_or_lines(s.text)][:per_class]

    csv_dir = "azure_llm_2023" if dev else "dataset_lengths_llama2"
    tables = [Sample("table", p.name, w) for p in _files(_REPO / "data" / csv_dir, "*.csv",
                                                         slice(None))
              for w in _line_windows(_read(p), 30, 6)]
    tab_files = ("zone.tab",) if dev else ("iso3166.tab", "zone1970.tab")
    tables += [Sample("table", name, w) for name in tab_files
               if (Path("/usr/share/zoneinfo") / name).is_file()
               for w in _line_windows(_read(Path("/usr/share/zoneinfo") / name), 30, 4,
                                      skip_comments=True)]
    md = (_REPO / "README.md",) if dev else (_REPO / "data" / "README.md",
                                              _REPO / "benchmarks" / "RESULTS.md")
    tables += [Sample("table", p.name, t) for p in md if p.is_file()
               for t in _markdown_tables(_read(p))[:10]]
    out += tables[:per_class]
    return out


def _valid_json_or_lines(text: str) -> bool:
    try:
        json.loads(text)
        return True
    except ValueError:
        return all(_loads(ln) for ln in text.splitlines() if ln.strip())


def _loads(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except ValueError:
        return False
