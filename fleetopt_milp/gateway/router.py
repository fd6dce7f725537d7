"""The C&R router: a plan's pools -> for each request, its pool, compression and budget.

The rule is the plan's (docs/model.md §4.2), applied through
:func:`fleetopt_milp.routing.route` so the gateway routes exactly as the planner and the
simulator count: a request's length is ``L = input tokens + max_tokens``; pool ``k``
serves ``W_{k-1} < L <= W_k``; a request in the band ``W_k < L <= floor(gamma_k W_k)``
whose ``max_tokens < W_k`` is a C&R candidate for pool ``k``, with an input budget of
``W_k - max_tokens`` tokens. Where the simulator draws "compressible" with probability
``p_c``, the gateway asks the safety gate (:mod:`.safety`) and runs the compressor
(:mod:`.compress`); a candidate that is unsafe, or whose closing turn or question would
not survive, stays in the pool above. Every decision says why.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..errors import FleetOptError
from ..plan import Plan
from ..routing import band_ends_tokens, route
from .compress import chat_tokens, compress, compress_messages
from .safety import assess_request
from .tokenizer import Tokenizer

__all__ = ["RouterPool", "Decision", "Routed", "Router", "RequestError", "CHAT_ROLES"]

#: Message roles of the OpenAI chat API; any other is the client's mistake (HTTP 400).
CHAT_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class RequestError(FleetOptError):
    """A request the gateway cannot serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RouterPool:
    """A pool as the router sees it: requests with ``lo_tokens < L <= context_tokens``."""

    role: str
    lo_tokens: int
    context_tokens: int


@dataclass(frozen=True)
class Decision:
    """Where one request goes and why.

    ``pool`` is the pool's role (``None`` when ``L`` exceeds every window).
    ``budget_tokens`` is the input budget when compressed (else ``None``).
    ``input_tokens`` / ``input_tokens_after`` are counted by the router's tokenizer.
    ``max_tokens_assumed`` is True when the request gave no ``max_tokens`` and the
    router's default was used (and is set on the forwarded request).
    ``candidate``: the request is in a C&R band with ``max_tokens`` below the lower
    window, so the gate and the compressor were asked.
    ``compress_ms``: wall time of the safety gate and the compressor (0 for a request
    that is no C&R candidate), the latency C&R adds (``fleetopt plan --compression-ms``).
    """

    pool: str | None
    pool_index: int
    compressed: bool
    budget_tokens: int | None
    input_tokens: int
    input_tokens_after: int
    max_tokens: int
    max_tokens_assumed: bool
    content: str
    reason: str
    candidate: bool = False
    compress_ms: float = 0.0

    @property
    def total_tokens(self) -> int:
        """``L`` as the plan counts it: input + max_tokens."""
        return self.input_tokens + self.max_tokens

    def to_dict(self) -> dict:
        return {"pool": self.pool, "compressed": self.compressed,
                "budget_tokens": self.budget_tokens, "input_tokens": self.input_tokens,
                "input_tokens_after": self.input_tokens_after, "max_tokens": self.max_tokens,
                "max_tokens_assumed": self.max_tokens_assumed, "total_tokens": self.total_tokens,
                "content": self.content, "candidate": self.candidate, "compress_ms": round(self.compress_ms, 4),
                "reason": self.reason}


@dataclass(frozen=True)
class Routed:
    """A decision and the request body to forward (compressed when the decision says so)."""

    decision: Decision
    body: dict


def validate_body(body: object, chat: bool) -> dict:
    """Check an OpenAI request body; raise :class:`RequestError` (HTTP 400) naming the field."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    if chat:
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise RequestError("'messages' must be a non-empty list of {role, content} objects")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                raise RequestError(f"messages[{i}] must be an object with 'role' and 'content'")
            if m.get("role") not in CHAT_ROLES:
                raise RequestError(f"messages[{i}].role={m.get('role')!r}: unknown role; use one "
                                   f"of {', '.join(sorted(CHAT_ROLES))}")
            c = m.get("content")
            if c is not None and not isinstance(c, str | list):
                raise RequestError(f"messages[{i}].content must be a string or a list of parts")
    else:
        p = body.get("prompt")
        if not isinstance(p, str | list):
            raise RequestError("'prompt' must be a string (or a list of strings or token ids)")
    for key in ("max_tokens", "max_completion_tokens"):
        v = body.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise RequestError(f"'{key}'={v!r}: must be a positive integer (tokens)")
    return body


class Router:
    """Routes requests by a plan's pools (module docstring).

    ``default_max_tokens``: ``max_tokens`` assumed (and forwarded) when a request gives
    none, so that ``L`` is defined as the plan counts it.
    """

    def __init__(self, pools: tuple[RouterPool, ...], gammas: tuple[float, ...],
                 tokenizer: Tokenizer, default_max_tokens: int):
        if default_max_tokens < 1:
            raise FleetOptError(f"default_max_tokens={default_max_tokens}: must be >= 1 token")
        self.pools = tuple(pools)
        self.windows = np.array([p.context_tokens for p in self.pools], dtype=np.int64)
        self.gammas = np.array(gammas, dtype=float)
        # Validates windows and gammas the way the simulator does (one-request dry run).
        route(np.zeros(1, np.int64), np.ones(1, np.int64), self.windows, self.gammas, 1.0,
              np.random.default_rng(0))
        self.band_ends = band_ends_tokens(self.windows, self.gammas)
        self.tokenizer = tokenizer
        self.default_max_tokens = int(default_max_tokens)
        self._rng = np.random.default_rng(0)  # route() draws; with p_c = 1 it never matters

    @classmethod
    def from_plan(cls, plan: Plan, tokenizer: Tokenizer, default_max_tokens: int) -> Router:
        """A router for a plan's pools (roles, windows) and band ratios."""
        pools = tuple(RouterPool(p.role, int(p.lo_tokens), int(p.context_tokens))
                      for p in plan.pools)
        return cls(pools, tuple(float(p.gamma) for p in plan.pools[:-1]), tokenizer,
                   default_max_tokens)

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(p.role for p in self.pools)

    def candidates(self, input_tokens, max_tokens) -> tuple[np.ndarray, np.ndarray]:
        """Vectorised: each request's pool index without C&R and with C&R (every candidate
        compressed, ``p_c = 1``); ``-1`` = no pool. Arrays of shape ``(n,)``.

        One :func:`~fleetopt_milp.routing.route` call: a compressed request moved from
        pool ``k + 1`` down to ``k``, so its pool without C&R is one up.
        """
        r = route(np.asarray(input_tokens, dtype=np.int64), np.asarray(max_tokens, dtype=np.int64),
                  self.windows, self.gammas, 1.0, self._rng)
        return np.where(r.compressed, r.pool + 1, r.pool), r.pool

    def _max_tokens(self, body: dict) -> tuple[int, bool]:
        for key in ("max_tokens", "max_completion_tokens"):
            if body.get(key) is not None:
                return int(body[key]), False
        return self.default_max_tokens, True

    def input_tokens(self, body: dict) -> tuple[int, list[int] | None]:
        """Input tokens of a chat or completion body, counted by the router's tokenizer,
        and the prompt's token ids when it is one string (reused by the compressor).

        A list of prompts is a batch: its longest prompt sets ``L``.
        """
        if "messages" in body:
            return chat_tokens(body["messages"], self.tokenizer), None
        p = body["prompt"]
        if isinstance(p, str):
            ids = self.tokenizer.encode(p)
            return len(ids), ids
        if p and all(isinstance(t, int) for t in p):
            return len(p), None  # one prompt given as token ids
        return max((self.tokenizer.count(s) if isinstance(s, str) else len(s) for s in p),
                   default=0), None

    def route(self, body: dict) -> Routed:
        """Decide for one validated request body and build the body to forward."""
        lin, ids = self.input_tokens(body)
        lout, assumed = self._max_tokens(body)
        out = body
        if assumed:
            out = dict(body, max_tokens=lout)
        plain, cr = (int(a[0]) for a in self.candidates([lin], [lout]))
        total = lin + lout
        base = dict(pool_index=plain, compressed=False, budget_tokens=None, input_tokens=lin,
                    input_tokens_after=lin, max_tokens=lout, max_tokens_assumed=assumed)
        if plain < 0:
            return Routed(Decision(pool=None, content="-", reason=(
                f"L={total} tokens exceeds the longest pool window "
                f"{int(self.windows[-1])}"), **base), out)
        up = self.pools[plain]
        where = f"pool '{up.role}' ({up.lo_tokens}, {up.context_tokens}]"
        if cr == plain:
            if plain > 0 and total <= self.band_ends[plain - 1]:
                why = (f"L={total} in the C&R band of pool '{self.pools[plain - 1].role}' but "
                       f"max_tokens={lout} >= its window {int(self.windows[plain - 1])}; {where}")
            else:
                why = f"L={total} fits {where}"
            return Routed(Decision(pool=up.role, content="-", reason=why, **base), out)
        low = self.pools[cr]
        budget = int(self.windows[cr]) - lout
        band = f"L={total} in the C&R band ({low.context_tokens}, {int(self.band_ends[cr])}]"
        base["candidate"] = True
        t0 = time.perf_counter()
        verdict = assess_request(body)
        if not verdict.safe:
            base["compress_ms"] = (time.perf_counter() - t0) * 1e3
            return Routed(Decision(pool=up.role, content=verdict.kind, reason=(
                f"{band}: not compressed ({verdict.reason}); {where}"), **base), out)
        ok, new_body, after, why = self._compress(out, budget, ids)
        base["compress_ms"] = (time.perf_counter() - t0) * 1e3
        if not ok:
            return Routed(Decision(pool=up.role, content=verdict.kind, reason=(
                f"{band}: not compressed ({why}); {where}"), **base), out)
        base.update(pool_index=cr, compressed=True, budget_tokens=budget, input_tokens_after=after)
        return Routed(Decision(pool=low.role, content=verdict.kind, reason=(
            f"{band}: {verdict.kind}, compressed {lin} -> {after} input tokens (budget "
            f"{budget}); pool '{low.role}' ({low.lo_tokens}, {low.context_tokens}]"), **base),
            new_body)

    def _compress(self, body: dict, budget: int, ids) -> tuple[bool, dict, int, str]:
        """Compress ``body`` to ``budget`` input tokens: (ok, new body, tokens after, why not)."""
        if "messages" in body:
            res = compress_messages(body["messages"], budget, self.tokenizer)
            if not res.fits:
                return False, body, res.tokens_before, (
                    "the protected turns alone exceed the budget")
            new = dict(body, messages=list(res.messages))
            return True, new, res.tokens_after, ""
        res = compress(body["prompt"], budget, self.tokenizer, ids)
        if not res.kept_closing:
            return False, body, res.tokens_before, "its closing sentence alone exceeds the budget"
        return True, dict(body, prompt=res.text), res.tokens_after, ""
