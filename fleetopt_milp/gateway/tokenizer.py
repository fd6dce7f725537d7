"""Tokenizers for the gateway: a small interface and the shipped, offline implementation.

Budgets are counted in tokens of a real tokenizer, never estimated from characters
(docs/gateway.md, "Tokenizer"). The gateway needs three operations, the
:class:`Tokenizer` protocol: ``encode``, ``count`` and ``decode``. Two implementations:

- :class:`BpeTokenizer`, the default: OpenAI's GPT-2 byte-level BPE (50,257 tokens), run
  by ``tiktoken`` from the vocabulary file shipped in ``data/tokenizers/gpt2.tiktoken``
  (MIT, from the ``openai-whisper`` package; see data/README.md). Nothing is downloaded.
- :class:`HfTokenizer`: any Hugging Face ``tokenizer.json`` (your served model's own),
  through the optional ``tokenizers`` library.

:func:`load_tokenizer` picks one from a name or a path.

The GPT-2 pre-tokenizer never joins a non-space character to the whitespace after it, so
the token count of a text cut only at "non-space then whitespace" positions is the sum of
the counts of its pieces (:attr:`BpeTokenizer.additive`). The compressor uses this to
count every sentence from one pass over the prompt and to count its output exactly.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ..errors import FleetOptError

__all__ = ["Tokenizer", "BpeTokenizer", "HfTokenizer", "load_tokenizer", "DEFAULT_TOKENIZER",
           "GPT2_PATTERN"]

DEFAULT_TOKENIZER = "gpt2"

#: GPT-2's pre-tokenizer (split into words, numbers, punctuation runs and whitespace
#: before BPE), as published with GPT-2 and used by tiktoken's ``gpt2``/``r50k_base``.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
_GPT2_END_OF_TEXT = "<|endoftext|>"


@runtime_checkable
class Tokenizer(Protocol):
    """What the gateway needs from a tokenizer; plug in your model's own.

    ``encode(text)`` -> token ids; ``count(text)`` -> ``len(encode(text))`` (may be faster);
    ``decode(ids)`` -> text. An implementation may also set ``additive = True`` when
    ``count(a + b) == count(a) + count(b)`` whenever ``a`` ends with a non-space character
    and ``b`` starts with whitespace; the compressor then skips its final re-count.
    """

    name: str

    def encode(self, text: str) -> list[int]: ...

    def count(self, text: str) -> int: ...

    def decode(self, ids: Sequence[int]) -> str: ...


@dataclass(frozen=True)
class BpeTokenizer:
    """A byte-level BPE run by ``tiktoken`` from a local ``.tiktoken`` vocabulary file.

    The file holds one ``base64(token bytes) rank`` pair per line (the format of the files
    OpenAI publishes). ``pattern`` is the pre-tokenizer regex; the default is GPT-2's, the
    pattern the shipped vocabulary was trained with. ``token_bytes`` gives the byte length
    of each token id (used to map one tokenization back onto character spans).
    """

    name: str
    path: Path
    pattern: str = GPT2_PATTERN
    additive: bool = True
    _enc: object = field(default=None, repr=False, compare=False)
    token_bytes: np.ndarray = field(default=None, repr=False, compare=False)

    @classmethod
    def from_file(cls, path: str | Path, name: str | None = None,
                  pattern: str = GPT2_PATTERN) -> BpeTokenizer:
        """Load a ``.tiktoken`` vocabulary (``<|endoftext|>`` follows the last rank)."""
        import tiktoken

        p = Path(path)
        try:
            lines = p.read_bytes().splitlines()
        except OSError as exc:
            raise FleetOptError(f"tokenizer file {p}: cannot read it ({exc.strerror}); give a "
                                ".tiktoken vocabulary file or a tokenizer.json") from None
        try:
            ranks = {base64.b64decode(tok): int(rank)
                     for tok, rank in (ln.split() for ln in lines if ln.strip())}
        except ValueError:
            raise FleetOptError(f"tokenizer file {p}: not a .tiktoken vocabulary (each line "
                                "must be 'base64-token rank')") from None
        n = len(ranks)
        if sorted(ranks.values()) != list(range(n)):
            raise FleetOptError(f"tokenizer file {p}: ranks must be 0..{n - 1} with no gaps")
        enc = tiktoken.Encoding(name=name or p.stem, pat_str=pattern, mergeable_ranks=ranks,
                                special_tokens={_GPT2_END_OF_TEXT: n}, explicit_n_vocab=n + 1)
        lengths = np.zeros(n + 1, dtype=np.int64)
        for tok, rank in ranks.items():
            lengths[rank] = len(tok)
        lengths[n] = len(_GPT2_END_OF_TEXT.encode())
        return cls(name=name or p.stem, path=p, pattern=pattern,
                   additive=pattern == GPT2_PATTERN, _enc=enc, token_bytes=lengths)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``; special-token strings count as plain text."""
        return self._enc.encode_ordinary(text)

    def count(self, text: str) -> int:
        """Number of tokens of ``text``."""
        return len(self._enc.encode_ordinary(text))

    def decode(self, ids: Sequence[int]) -> str:
        """Text of the token ids (invalid UTF-8 is replaced)."""
        return self._enc.decode(list(ids))


@dataclass(frozen=True)
class HfTokenizer:
    """A Hugging Face ``tokenizer.json`` (needs the optional ``tokenizers`` package).

    Counts exclude special tokens the tokenizer would add (BOS/EOS): the gateway counts
    prompt text; the serving engine's chat template adds its own tokens.
    """

    name: str
    path: Path
    _tok: object = field(default=None, repr=False, compare=False)
    additive: bool = False

    @classmethod
    def from_file(cls, path: str | Path) -> HfTokenizer:
        try:
            from tokenizers import Tokenizer as _HfTok
        except ImportError:
            raise FleetOptError(f"tokenizer {path}: a tokenizer.json needs the 'tokenizers' "
                                "package (pip install tokenizers)") from None
        p = Path(path)
        try:
            tok = _HfTok.from_file(str(p))
        except Exception as exc:  # the library raises its own exception types
            raise FleetOptError(f"tokenizer {p}: not a readable tokenizer.json ({exc})") from None
        return cls(name=p.stem, path=p, _tok=tok)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def count(self, text: str) -> int:
        return len(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)


def _tokenizer_dir() -> Path:
    from ..workload import data_dir

    return data_dir() / "tokenizers"


def load_tokenizer(spec: str = DEFAULT_TOKENIZER) -> Tokenizer:
    """A tokenizer from a shipped name (``gpt2``), a ``.tiktoken`` file or a ``tokenizer.json``.

    Loaded once per spec (cached): building the GPT-2 tables takes about 0.1 s.
    """
    return _load(spec)


@lru_cache(maxsize=8)
def _load(spec: str) -> Tokenizer:
    p = Path(spec).expanduser()
    if p.suffix == ".json":
        return HfTokenizer.from_file(p)
    if p.suffix == ".tiktoken":
        return BpeTokenizer.from_file(p)
    shipped = _tokenizer_dir() / f"{spec}.tiktoken"
    if shipped.is_file():
        return BpeTokenizer.from_file(shipped, name=spec)
    names = sorted(f.stem for f in _tokenizer_dir().glob("*.tiktoken"))
    raise FleetOptError(f"tokenizer {spec!r}: not a shipped tokenizer ({', '.join(names)}), "
                        "a .tiktoken file or a tokenizer.json path")
