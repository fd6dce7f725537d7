"""The safety gate: may this request be compressed, and why (docs/gateway.md, "Safety gate").

Extractive compression drops sentences. That is harmless for prose, retrieved documents
and conversation, and breaks code, JSON and other structured data, and tables, whose
meaning depends on every line. :func:`assess_text` classifies a text by its lines, in
this order (the first match decides):

1. ``code``: a fenced block (```` ``` ```` or ``~~~``), or at least :data:`CODE_SHARE` of
   the non-blank lines look like code (statement endings ``;``/``{``/``}``/``):``,
   keywords opening a line, operators such as ``==``, ``->``, ``::``, ``&&``).
2. ``json``: the text parses as a JSON object or array, or most lines are JSON objects
   (JSON Lines), or it opens with ``{``/``[`` and is dense in ``"":,{}[]``.
3. ``markup``: XML/HTML, most lines being tags.
4. ``table``: two or more consecutive lines with two or more ``|`` (Markdown, RST and
   box tables), ``+---+`` rules, or delimiter-separated values (at least 3 lines, most
   with the same number, at least 1, of ``,``, ``;`` or tab).
5. ``prose``: anything else; safe.

:func:`assess_request` applies it to the parts of an OpenAI request that compression
would touch (the prompt, or the chat turns other than the system prompt and the last
user turn).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Verdict", "assess_text", "assess_request", "CODE_SHARE"]

#: Share of non-blank lines that must look like code for a text to count as code.
CODE_SHARE = 0.3
#: Share of non-blank lines that must agree for JSON Lines, markup and delimited tables.
STRUCTURE_SHARE = 0.7

_FENCE = re.compile(r"^[ \t]*(```|~~~)", re.M)
_CODE_LINE = re.compile(
    r"""(?x)
    [;{}]\s*$ | [(\[]\s*\\?$ | \\$               # statement, block, open call, continuation
    | \)\s*:\s*$ | ^\s*(?:else|try|finally)\s*:\s*$   # python block openers
    | ^\s*(?:def|class|import|from\s+\S+\s+import|return|elif|while|for\s*\(|if\s*\(
          |function|const|let|var|public|private|static|package|fn|impl|struct|enum
          |typedef|switch|case\s+\S+:|@\w+|int|void|char|unsigned|long|double|float|extern
          |bool|size_t|self\.)\b
    | ^\s*\#\s*(?:include|define|undef|if|ifdef|ifndef|elif|else|endif|pragma)\b
    | ==|!=|<=|>=|=>|->|::|&&|\|\||\+\+|\+=|-=|/\*|\*/|^\s*//|^\s*\#!
    | ^\s*[A-Za-z_][\w.\[\]'"]*\s*=\s*[\w"'\[({-]  # assignment
    | ^\s*[\w.]+\(.*\)\s*$                       # a line that is one call
    | ^\s+\#|^\s*(?:\"\"\"|\'\'\')                   # indented comment, docstring quotes
    | ^\s*(["']).*\1\s*[,:)\]]                       # a quoted literal in a list or dict
    """)
_TAG_LINE = re.compile(r"^\s*</?[A-Za-z][\w:.-]*(\s[^>]*)?/?>")
_PIPE_ROW = re.compile(r"\|.*\|")
_BOX_RULE = re.compile(r"^\s*[+|][-=+:| ]{3,}[+|]\s*$")


@dataclass(frozen=True)
class Verdict:
    """The gate's answer: ``safe`` to compress, the content ``kind`` and a ``reason``."""

    safe: bool
    kind: str
    reason: str


def _delimited(lines: list[str]) -> str | None:
    """The delimiter of a delimiter-separated table, or None.

    Tab: most lines hold a tab between cells (leading indentation does not count).
    Comma or semicolon: most lines hold the same number of them, and cells are short
    (prose has commas too, in clauses of varying number and length).
    """
    if len(lines) < 3:
        return None
    inner_tabs = sum(1 for ln in lines if "\t" in ln.strip())
    if inner_tabs >= STRUCTURE_SHARE * len(lines):
        return "tab"
    for delim, name in ((",", "comma"), (";", "semicolon")):
        counts = [ln.count(delim) for ln in lines]
        mode = max(set(counts), key=lambda c: (counts.count(c), c))
        if mode >= 1 and counts.count(mode) >= STRUCTURE_SHARE * len(lines):
            cells = [c.strip() for ln in lines for c in ln.split(delim)]
            if sum(len(c) for c in cells) / max(len(cells), 1) <= 40:
                return name
    return None


def _is_json(stripped: str, lines: list[str]) -> str | None:
    if stripped[:1] in "{[":
        try:
            json.loads(stripped)
            return "parses as JSON"
        except ValueError:
            pass
        dense = sum(stripped.count(c) for c in '"{}[]:,') / max(len(stripped), 1)
        if dense >= 0.1:
            return f"opens with {stripped[0]!r} and {dense:.0%} of its characters are JSON syntax"
    objs = sum(1 for ln in lines if ln.strip().startswith("{") and ln.strip().endswith("}"))
    if len(lines) >= 2 and objs >= STRUCTURE_SHARE * len(lines):
        return f"{objs} of {len(lines)} lines are JSON objects (JSON Lines)"
    return None


def assess_text(text: str) -> Verdict:
    """Classify ``text`` (module docstring) and say whether it is safe to compress."""
    stripped = text.strip()
    if not stripped:
        return Verdict(True, "empty", "empty text")
    if _FENCE.search(text):
        return Verdict(False, "code", "contains a fenced code block")
    lines = [ln for ln in text.splitlines() if ln.strip()]
    why = _is_json(stripped, lines)
    if why:
        return Verdict(False, "json", f"JSON: {why}")
    n = len(lines)
    code = sum(1 for ln in lines if _CODE_LINE.search(ln))
    if n >= 2 and code >= CODE_SHARE * n:
        return Verdict(False, "code", f"code: {code} of {n} lines look like code")
    tags = sum(1 for ln in lines if _TAG_LINE.match(ln))
    if n >= 2 and tags >= STRUCTURE_SHARE * n:
        return Verdict(False, "markup", f"markup: {tags} of {n} lines are tags")
    for a, b in zip(lines, lines[1:]):
        if (_PIPE_ROW.search(a) and _PIPE_ROW.search(b)) or _BOX_RULE.match(a):
            return Verdict(False, "table", "table: consecutive lines of '|'-separated cells")
    delim = _delimited(lines)
    if delim:
        return Verdict(False, "table", f"table: {delim}-separated values")
    return Verdict(True, "prose", "prose")


def _messages_verdict(messages: Sequence[dict]) -> Verdict:
    from .compress import compressible_turns

    turns = compressible_turns(messages)
    if not turns:
        return Verdict(False, "protected", "only protected turns (system prompt, last user "
                                           "turn, tool calls and results): nothing may be cut")
    for i in turns:
        v = assess_text(messages[i]["content"])
        if not v.safe:
            return Verdict(False, v.kind, f"message {i} ({messages[i].get('role')}): {v.reason}")
    return Verdict(True, "conversation", f"{len(turns)} earlier turns of prose")


def assess_request(body: dict) -> Verdict:
    """The gate for an OpenAI request body (``/v1/chat/completions`` or ``/v1/completions``).

    A chat request is judged on the turns compression may cut; a completion on its prompt
    (a list of prompts or of token ids is not compressed).
    """
    if "messages" in body:
        return _messages_verdict(body["messages"])
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return assess_text(prompt)
    return Verdict(False, "batch", "prompt is a list (several prompts or token ids)")
