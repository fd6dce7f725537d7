"""How much of a prompt survives compression: ROUGE-L recall, term coverage, a baseline.

Used by the benchmarks and tests (docs/gateway.md, "Evaluation"):

- :func:`lcs_length`: the longest common subsequence of two sequences, by the
  bit-parallel algorithm of Crochemore, Iliopoulos, Pinzon and Reid (2001): one big-integer
  addition, subtraction and two masks per item of the first sequence, so two 10,000-word
  texts take milliseconds in Python.
- :func:`rouge_l_recall`: ROUGE-L recall (Lin 2004) of a candidate against a reference,
  over lower-cased words: ``LCS / len(reference)``. For any extractive method the output
  is a subsequence of the input, so against the original this equals the share of words
  kept; it measures how fully the budget is used, not which sentences were chosen.
- :func:`term_coverage`: the share of the reference's distinct words of 4+ letters that
  the candidate still contains, which does depend on the choice.
- :func:`head_tail`: the baseline, the first and last halves of the budget, cut at token
  boundaries.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Sequence

from .tokenizer import Tokenizer

__all__ = ["lcs_length", "rouge_l_recall", "term_coverage", "head_tail", "words"]

_WORD = re.compile(r"\w+")
_TERM = re.compile(r"[^\W\d_]{4,}")


def words(text: str) -> list[str]:
    """Lower-cased word tokens (``\\w+``)."""
    return _WORD.findall(text.lower())


def lcs_length(a: Sequence[Hashable], b: Sequence[Hashable]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b`` (bit-parallel)."""
    if not a or not b:
        return 0
    match: dict[Hashable, int] = {}
    for i, y in enumerate(b):
        match[y] = match.get(y, 0) | (1 << i)
    mask = (1 << len(b)) - 1
    v = mask
    for x in a:
        u = v & match.get(x, 0)
        v = ((v + u) | (v - u)) & mask
    return len(b) - v.bit_count()


def rouge_l_recall(reference: str, candidate: str) -> float:
    """ROUGE-L recall of ``candidate`` against ``reference`` over words (module docstring)."""
    ref = words(reference)
    return lcs_length(ref, words(candidate)) / len(ref) if ref else 1.0


def term_coverage(reference: str, candidate: str) -> float:
    """Share of the reference's distinct words of 4+ letters found in the candidate."""
    ref = set(_TERM.findall(reference.lower()))
    return len(ref & set(_TERM.findall(candidate.lower()))) / len(ref) if ref else 1.0


def head_tail(text: str, budget_tokens: int, tokenizer: Tokenizer) -> str:
    """The first ``budget // 2`` and the last ``budget - budget // 2`` tokens of ``text``,
    decoded and joined; shortened a token at a time until it counts within the budget."""
    ids = tokenizer.encode(text)
    if len(ids) <= budget_tokens:
        return text
    head = budget_tokens // 2
    tail = budget_tokens - head
    while True:
        out = tokenizer.decode(ids[:head]) + (tokenizer.decode(ids[-tail:]) if tail else "")
        if tokenizer.count(out) <= budget_tokens or head + tail == 0:
            return out
        head, tail = (head - 1, tail) if head >= tail else (head, tail - 1)
