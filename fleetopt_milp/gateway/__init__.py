"""Compress-and-Route as a running gateway (docs/gateway.md).

- :mod:`.tokenizer`: the :class:`Tokenizer` interface and the shipped offline GPT-2 BPE.
- :mod:`.compress`: the extractive compressor, for plain text and chat messages.
- :mod:`.safety`: the safety gate (may this request be compressed, and why).
- :mod:`.router`: plan -> per-request decision (pool, compress or not, budget, reason).
- :mod:`.server`: the OpenAI-compatible ASGI gateway; :mod:`.metrics`: its Prometheus text.
- :mod:`.measure`: ``p_c`` and the compression latency over a sample of prompts.
- :mod:`.corpus`, :mod:`.fidelity`, :mod:`.fake_upstream`: evaluation (real text from the
  machine, ROUGE-L and a head + tail baseline, a fake OpenAI server for tests).

Importing this package loads no web framework; :mod:`.server` does.
"""

from .compress import Compressed, CompressedChat, compress, compress_messages, segment
from .router import Decision, Router, RouterPool
from .safety import Verdict, assess_request, assess_text
from .tokenizer import BpeTokenizer, HfTokenizer, Tokenizer, load_tokenizer

__all__ = ["BpeTokenizer", "Compressed", "CompressedChat", "Decision", "HfTokenizer",
           "Router", "RouterPool", "Tokenizer", "Verdict", "assess_request", "assess_text",
           "compress", "compress_messages", "load_tokenizer", "segment"]
