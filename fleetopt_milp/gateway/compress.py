"""Extractive compression: cut a prompt to a token budget by dropping whole sentences.

The compressor of Compress-and-Route (docs/model.md §4.2; the method is in docs/gateway.md,
"Compressor"). :func:`compress` keeps a subsequence of the text's *units*, in their
original order, whose token count never exceeds the budget:

1. **Units.** The text is cut into sentences, paragraphs, list items and headings
   (:func:`segment`). Cuts fall only where a non-space character meets whitespace, so each
   unit after the first starts with its own leading whitespace and joining any subsequence
   gives well-formed text. Hard-wrapped lines inside a paragraph are not cuts.
2. **Always kept.** The opening unit (where the instruction usually is) and the closing
   paragraph, up to a third of the budget, taken from the end (where the question is).
3. **Scored.** Every other unit by informativeness (its TF-IDF weight per token) and
   centrality (the cosine between its TF-IDF vector and the document's centroid), half
   each, plus a small bonus for early position. Terms are the tokenizer's token ids, IDF
   is over units. Exact repeats of a kept unit are skipped.
4. **Packed.** Units in score order (ties: earlier first) are added while they fit.

Deterministic: no randomness; ties break by position. With an additive tokenizer
(:attr:`~fleetopt_milp.gateway.tokenizer.BpeTokenizer.additive`) one tokenization of the
prompt counts every unit, and the output's count is exactly the sum of its units; with
any other tokenizer, units are counted one by one and the output is re-counted, dropping
the lowest-scored unit until it fits.

:func:`compress_messages` does the same for a chat request, never touching the system
prompt or the last user turn, and cutting older and longer turns first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import FleetOptError
from .tokenizer import Tokenizer

__all__ = ["Compressed", "CompressedChat", "compress", "compress_messages", "segment",
           "PROTECTED_ROLES", "MESSAGE_OVERHEAD_TOKENS"]

#: Share of the budget the closing paragraph may take before only its last units are kept.
CLOSING_SHARE = 1.0 / 3.0
#: Weight of informativeness (vs centrality, both in [0, 1]) in a unit's score.
INFORMATIVE_WEIGHT = 0.5
#: Weight of the position bonus (1 for the first unit, 0 for the last).
POSITION_WEIGHT = 0.1
#: Roles whose messages are never compressed.
PROTECTED_ROLES = frozenset({"system", "developer", "tool", "function"})
#: Tokens a chat template adds per message (role markers), the OpenAI cookbook's figure for
#: its chat models; used only to count a chat request's input tokens.
MESSAGE_OVERHEAD_TOKENS = 4

# A sentence end: terminal punctuation, optional closing quotes/brackets, then whitespace
# before a capital, digit or opening quote/bracket. The cut is at the whitespace.
_SENTENCE_END = re.compile(r"""[.!?]["'\u201d\u2019)\]]*(?=(\s+)["'\u201c\u2018(\[]?[A-Z0-9])""")
# A paragraph break (blank line), or a line break before a list item or heading; the cut
# is at the start of the whitespace run that holds the line break.
_BLOCK_BREAK = re.compile(r"\n(?=[ \t]*\n|[ \t]*(?:[-*+\u2022]|\d{1,3}[.)]|#{1,6})\s)")
# Words that end in a period without ending a sentence ("e.g. The", "Dr. Smith").
_ABBREVIATIONS = frozenset("e.g i.e etc vs cf al fig no mr mrs ms dr st jr sr inc ltd co "
                           "sec art p pp vol ed eds approx".split())


@dataclass(frozen=True)
class Compressed:
    """A compressed text: ``kept`` are the indices of the units kept, in order.

    ``tokens_before``/``tokens_after`` are counted by the tokenizer (``tokens_after <=
    budget_tokens`` always). ``kept_closing`` is False when the closing unit (the question)
    alone does not fit the budget: callers should not serve such a result.
    """

    text: str
    tokens_before: int
    tokens_after: int
    budget_tokens: int
    n_units: int
    kept: tuple[int, ...]
    kept_opening: bool
    kept_closing: bool

    @property
    def changed(self) -> bool:
        return len(self.kept) != self.n_units


@dataclass(frozen=True)
class CompressedChat:
    """A compressed chat request: ``messages`` are the new messages (same roles, order).

    Token counts include :data:`MESSAGE_OVERHEAD_TOKENS` per message. ``fits`` is False
    when the protected messages (system prompt, last user turn, tool results) alone exceed
    the budget; ``messages`` are then unchanged.
    """

    messages: tuple[dict, ...]
    tokens_before: int
    tokens_after: int
    budget_tokens: int
    compressed_turns: tuple[int, ...]
    fits: bool


def segment(text: str) -> np.ndarray:
    """Start offsets (characters) of the units of ``text``: sentences, paragraphs, items.

    Always starts with 0. Every other start is a whitespace character preceded by a
    non-space character, so ``text[s_i:s_{i+1}]`` ends with a non-space character for all
    units but the last.
    """
    cuts = {0}
    for m in _SENTENCE_END.finditer(text):
        start = m.start()
        before = text[max(0, start - 8):start].split()
        word = before[-1] if before else ""
        if word.lstrip("(\"'").lower() in _ABBREVIATIONS:
            continue
        if len(word) == 1 and word.isupper():  # an initial: "J. Smith"
            continue
        cuts.add(m.end())
    for m in _BLOCK_BREAK.finditer(text):
        j = m.start()
        while j > 0 and text[j - 1] in " \t":
            j -= 1
        if j > 0 and not text[j - 1].isspace():
            cuts.add(j)
    starts = np.fromiter(sorted(cuts), dtype=np.int64)
    return starts[starts < max(len(text), 1)]


def _units(text: str, starts: np.ndarray) -> list[str]:
    ends = list(starts[1:]) + [len(text)]
    return [text[s:e] for s, e in zip(starts.tolist(), ends)]


def _unit_tokens(tokenizer: Tokenizer, text: str, units: list[str], token_ids=None):
    """Per unit: token count, the text's token ids (term features) and each id's unit.

    With an additive tokenizer that gives token byte lengths, one tokenization of the
    whole text (``token_ids`` if the caller already has it) is cut at the unit ends.
    """
    token_bytes = getattr(tokenizer, "token_bytes", None)
    if getattr(tokenizer, "additive", False) and token_bytes is not None:
        if token_ids is None:
            token_ids = tokenizer.encode(text)
        ids = np.asarray(token_ids, dtype=np.int64)
        tok_end = np.cumsum(token_bytes[ids])
        if text.isascii():
            unit_len = np.fromiter((len(u) for u in units), dtype=np.int64, count=len(units))
        else:
            unit_len = np.fromiter((len(u.encode("utf-8")) for u in units), dtype=np.int64,
                                   count=len(units))
        unit_end = np.cumsum(unit_len)
        # A token belongs to the unit its last byte falls in (tokens never cross a cut).
        owner = np.searchsorted(unit_end, tok_end, side="left")
        counts = np.bincount(owner, minlength=len(units)).astype(np.int64)
        return counts, ids, owner
    per = [tokenizer.encode(u) for u in units]
    counts = np.fromiter((len(p) for p in per), dtype=np.int64, count=len(units))
    ids = np.fromiter((t for p in per for t in p), dtype=np.int64, count=int(counts.sum()))
    owner = np.repeat(np.arange(len(units)), counts)
    return counts, ids, owner


def _scores(ids: np.ndarray, owner: np.ndarray, n_units: int) -> np.ndarray:
    """Informativeness + centrality + position of every unit (docs/gateway.md, "Compressor").

    Terms are token ids; ``tf`` counts a term in a unit and ``idf = log(n_units / df)``.
    Informativeness: the unit's summed IDF of its distinct terms per token, scaled to a
    maximum of 1 (rare words per token). Centrality: the cosine between the unit's vector
    ``(1 + log tf) idf`` and the document centroid (the sum of the unit vectors). They
    weigh :data:`INFORMATIVE_WEIGHT` and ``1 -`` it; the position bonus favours early units.
    """
    position = POSITION_WEIGHT * (1.0 - np.arange(n_units) / max(n_units - 1, 1))
    if ids.size == 0:
        return position
    vocab = int(ids.max()) + 1
    upair, tf = np.unique(owner * vocab + ids, return_counts=True)
    u, t = upair // vocab, upair % vocab
    df = np.bincount(t, minlength=vocab)
    idf = np.log(n_units / df[t])
    w = (1.0 + np.log(tf)) * idf
    centroid = np.bincount(t, weights=w, minlength=vocab)
    dot = np.bincount(u, weights=w * centroid[t], minlength=n_units)
    norm = np.sqrt(np.bincount(u, weights=w * w, minlength=n_units))
    cnorm = math.sqrt(float(np.square(centroid).sum()))  # not BLAS: slow for one vector
    denom = norm * cnorm
    cos = np.divide(dot, denom, out=np.zeros(n_units), where=denom > 0)
    n_tok = np.bincount(owner, minlength=n_units)
    info = np.divide(np.bincount(u, weights=idf, minlength=n_units), n_tok,
                     out=np.zeros(n_units), where=n_tok > 0)
    top = float(info.max())
    if top > 0:
        info /= top
    return INFORMATIVE_WEIGHT * info + (1.0 - INFORMATIVE_WEIGHT) * cos + position


def _protected(units: list[str], counts: np.ndarray, budget: int) -> tuple[list[int], int]:
    """Units always kept, and the index of the closing unit.

    The closing paragraph is taken from its last unit backwards, up to CLOSING_SHARE of the
    budget (its last unit alone may use the whole budget); then the opening unit if it
    still fits. Trailing whitespace-only units do not count as the closing.
    """
    last = len(units) - 1
    while last > 0 and not units[last].strip():
        last -= 1
    keep: list[int] = []
    used = 0
    cap = max(int(budget * CLOSING_SHARE), 1)
    i = last
    while i > 0:
        c = int(counts[i])
        if used + c > (budget if i == last else cap):
            break
        keep.append(i)
        used += c
        if _starts_block(units[i]):
            break  # the closing paragraph starts here
        i -= 1
    if used + int(counts[0]) <= budget:
        keep.append(0)
    return sorted(keep), last


def _starts_block(unit: str) -> bool:
    """True when the unit opens a paragraph (its leading whitespace holds a blank line)."""
    lead = unit[: len(unit) - len(unit.lstrip())]
    return lead.count("\n") >= 2


def compress(text: str, budget_tokens: int, tokenizer: Tokenizer,
             token_ids=None) -> Compressed:
    """Keep whole units of ``text``, in order, within ``budget_tokens`` (module docstring).

    ``token_ids``: ``tokenizer.encode(text)`` if the caller already has it (the router
    does), so an additive tokenizer does not tokenize twice. Returns the text unchanged
    when it already fits. Raises :class:`FleetOptError` for a negative budget.
    """
    budget = int(budget_tokens)
    if budget < 0:
        raise FleetOptError(f"budget_tokens={budget_tokens}: the budget must be >= 0 tokens")
    starts = segment(text)
    units = _units(text, starts) if text else [""]
    counts, ids, owner = _unit_tokens(tokenizer, text, units, token_ids)
    total = int(counts.sum())
    n = len(units)
    if total <= budget:
        return Compressed(text, total, total, budget, n, tuple(range(n)), True, True)
    keep, last = _protected(units, counts, budget)
    chosen = np.zeros(n, dtype=bool)
    chosen[keep] = True
    used = int(counts[chosen].sum())
    score = _scores(ids, owner, n)
    seen = {units[i].strip() for i in keep}
    for i in np.argsort(-score, kind="stable").tolist():
        c = int(counts[i])
        if chosen[i] or used + c > budget:
            continue
        key = units[i].strip()
        if key in seen:
            continue
        seen.add(key)
        chosen[i] = True
        used += c
    kept = np.flatnonzero(chosen)
    out = "".join(units[i] for i in kept.tolist())
    if not getattr(tokenizer, "additive", False):
        used = tokenizer.count(out)
        while used > budget:  # a non-additive tokenizer: drop the weakest unit and recount
            droppable = [i for i in kept.tolist() if i not in keep] or kept.tolist()
            chosen[min(droppable, key=lambda i: score[i])] = False
            kept = np.flatnonzero(chosen)
            out = "".join(units[i] for i in kept.tolist())
            used = tokenizer.count(out)
    return Compressed(out, total, used, budget, n, tuple(kept.tolist()), bool(chosen[0]),
                      bool(chosen[last]))


def _content(message: dict) -> str | None:
    c = message.get("content")
    return c if isinstance(c, str) else None


def _last_user(messages: Sequence[dict]) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return -1


def chat_tokens(messages: Sequence[dict], tokenizer: Tokenizer) -> int:
    """Input tokens of a chat request: content tokens + MESSAGE_OVERHEAD_TOKENS per message.

    Non-text content parts count their ``text`` fields; other parts count nothing.
    """
    total = MESSAGE_OVERHEAD_TOKENS * len(messages)
    for m in messages:
        c = m.get("content")
        if isinstance(c, str):
            total += tokenizer.count(c)
        elif isinstance(c, list):
            total += sum(tokenizer.count(p.get("text", "")) for p in c if isinstance(p, dict))
    return total


def compressible_turns(messages: Sequence[dict]) -> list[int]:
    """Indices of the messages compression may touch: text turns other than the last user
    turn and the protected roles (system, developer, tool results)."""
    last = _last_user(messages)
    return [i for i, m in enumerate(messages)
            if i != last and m.get("role") not in PROTECTED_ROLES and _content(m) is not None
            and not m.get("tool_calls")]


def _water_level(tokens: np.ndarray, weights: np.ndarray, avail: float) -> np.ndarray:
    """Allowances ``min(t_i, T w_i)`` with the largest ``T`` whose sum fits ``avail``."""
    if tokens.sum() <= avail:
        return tokens.astype(float)
    lo, hi = 0.0, float((tokens / weights).max())
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if np.minimum(tokens, mid * weights).sum() <= avail:
            lo = mid
        else:
            hi = mid
    return np.minimum(tokens, lo * weights)


def compress_messages(messages: Sequence[dict], budget_tokens: int,
                      tokenizer: Tokenizer) -> CompressedChat:
    """Compress a chat request to ``budget_tokens`` input tokens (counted by :func:`chat_tokens`).

    Turns that may be cut (:func:`compressible_turns`) get allowances by water-filling:
    turn ``i`` of ``m`` (oldest first) may keep ``min(t_i, T (1 + i/m))`` tokens, with the
    largest level ``T`` that fits, so long turns are cut before short ones and older turns
    before newer ones. Each turn is then compressed with :func:`compress`.
    """
    msgs = [dict(m) for m in messages]
    before = chat_tokens(msgs, tokenizer)
    if before <= budget_tokens:
        return CompressedChat(tuple(msgs), before, before, int(budget_tokens), (), True)
    turns = compressible_turns(msgs)
    tokens = np.array([tokenizer.count(msgs[i]["content"]) for i in turns], dtype=float)
    avail = budget_tokens - (before - tokens.sum())
    if avail < 0 or not turns:
        return CompressedChat(tuple(msgs), before, before, int(budget_tokens), (), False)
    weights = 1.0 + np.arange(len(turns)) / len(turns)
    allow = _water_level(tokens, weights, avail)
    changed = []
    for i, t, a in zip(turns, tokens, allow):
        if a < t:
            msgs[i]["content"] = compress(msgs[i]["content"], math.floor(a), tokenizer).text
            changed.append(i)
    after = chat_tokens(msgs, tokenizer)
    return CompressedChat(tuple(msgs), before, after, int(budget_tokens), tuple(changed),
                          after <= budget_tokens)
