"""M/G/c queueing for one pool: Erlang C, the wait and TTFT tails, and the queue records.

A pool (or one allocation of a pool) is an M/G/c queue whose servers are KV slots
(docs/model.md §3): ``c = instances * slots_per_instance``, each slot serving at rate
``1 / E[S]``. Units: rates in requests per second, times in seconds, loads in Erlangs.

- The array forms (:func:`erlang_b`, :func:`erlang_c`, :func:`wait_tail`,
  :func:`wait_quantile_s`, :func:`ttft_miss_probability`) are vectorised over numpy arrays
  of queues and stable for ``c`` up to 10^6 (scipy's incomplete gamma). They serve batches
  of candidates (the sizing's numpy path, the MILP) and are the reference the compiled
  forms of :mod:`fleetopt_milp._sizing` are tested against.
- :class:`Queue` is one queue at a given size; :class:`QueueMix` a traffic-weighted
  mixture of queues (a pool split over allocations of several GPU types, or a fleet of
  pools). Every figure of a queue or a mixture (utilization, TTFT quantile, share over
  the SLO, waits) is computed by their methods, and :func:`pool_figures` gathers them in
  one :class:`PoolFigures` record. A queue computes its Erlang C once, with the compiled
  series (numba, loaded on first use), and its TTFT tail and quantile with the compiled
  closed forms. Quantiles are inverted in one place, :meth:`QueueMix.ttft_quantile_s`
  (and its wait twin): the queue's closed form when one queue has traffic, bisection for
  a mixture.

:class:`~fleetopt_milp.poolload.PoolLoad` (the demand of candidate pools, before a size
is chosen) and :func:`~fleetopt_milp.sizing.min_instances` are re-exported here.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import special

__all__ = [
    "erlang_b",
    "erlang_c",
    "wait_tail",
    "wait_quantile_s",
    "ttft_miss_probability",
    "ttft_quantile_s",
    "Queue",
    "QueueMix",
    "PoolFigures",
    "pool_figures",
    "compiled_kernels",
    "load_compiled_kernels",
]


def compiled_kernels():
    """The compiled forms (:mod:`fleetopt_milp._sizing`, numba) if this process has loaded
    them, else ``None``.

    Both forms give the same figures and the same instance counts (tests/
    test_sizing_kernel.py); the compiled ones are about 10x faster per plan, but loading
    numba and the cached kernels costs about 1 s once per process, which a single plan does
    not repay (benchmarks/RESULTS.md, planner-speed). So they are used once loaded, and
    loaded only on request (:func:`load_compiled_kernels`): by a
    :class:`~fleetopt_milp.planner.PlanningTables` built for reuse, or by
    ``min_instances(..., use_kernel=True)``; never by ``import fleetopt_milp``.
    """
    return sys.modules.get(f"{__package__}._sizing")


def load_compiled_kernels():
    """Load (compile once per machine, then from numba's cache) the compiled forms: the
    slot kernels and the engine model's sizing (:mod:`fleetopt_milp._engine_sizing`)."""
    from . import _engine_sizing, _sizing  # noqa: F401

    return _sizing


def _log_erlang_b(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """log Erlang B via the Poisson pmf/cdf ratio: B(c, a) = pmf(c; a) / cdf(c; a).

    docs/solver.md "Erlang C": agrees with exact rational arithmetic to ~5e-13.
    ``gammaincc(c + 1, a)`` is the Poisson cdf P(X <= c) for X ~ Poisson(a). Where the
    Poisson tail beyond ``c`` is provably below 1e-17 (``P(X > c) <= pmf(c) a / (c + 1 - a)``)
    the cdf is 1 in double precision and the costly incomplete gamma is skipped.
    """
    log_pmf = c * np.log(a) - a - special.gammaln(c + 1.0)
    log_cdf = np.zeros(np.shape(log_pmf))
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = log_pmf + np.log(a) - np.log(c + 1.0 - a)
    need = ~(bound < -39.0)  # also true where c + 1 <= a (bound is nan)
    if np.any(need):
        with np.errstate(divide="ignore"):
            log_cdf[need] = np.log(special.gammaincc(c[need] + 1.0, a[need]))
    return log_pmf - log_cdf


def erlang_b(c, a):
    """Erlang B blocking probability of an M/M/c/c loss system with offered load ``a`` Erlangs.

    ``c`` servers (integer >= 0), ``a`` >= 0. Vectorised; B(0, a) = 1, B(c, 0) = 0.
    """
    c = np.asarray(c, dtype=float)
    a = np.asarray(a, dtype=float)
    c, a = np.broadcast_arrays(c, a)
    out = np.ones(c.shape)
    pos = a > 0
    out = np.where(pos, out, np.where(c > 0, 0.0, 1.0))
    live = pos & (c > 0)
    if np.any(live):
        out[live] = np.exp(_log_erlang_b(c[live], a[live]))
    return out if out.ndim else float(out)


def erlang_c(c, a):
    """Erlang C: probability that an arrival waits in an M/M/c queue (docs/model.md §3).

    ``C = B / (1 - rho (1 - B))`` with ``rho = a / c``; equals 1 when ``a >= c``
    (the queue is unstable) and 0 when ``a = 0``.
    """
    c = np.asarray(c, dtype=float)
    a = np.asarray(a, dtype=float)
    c, a = np.broadcast_arrays(c, a)
    out = np.ones(c.shape)
    out = np.where(a <= 0, 0.0, out)
    stable = (a > 0) & (c > a)
    if np.any(stable):
        out[stable] = _erlang_c_stable(c[stable], a[stable])
    return out if out.ndim else float(out)


def _erlang_c_stable(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Erlang C for float arrays already known to satisfy ``c > a > 0`` (no checks)."""
    b = np.exp(_log_erlang_b(c, a))
    return b / (1.0 - (a / c) * (1.0 - b))


def _decay_per_s(c, a, mean_service_s, cs2):
    """Decay rate of the M/G/c wait tail, ``2 (c mu - lambda) / (1 + cs2)`` per second.

    ``c mu - lambda = (c - a) / E[S]`` (Kimura / Allen-Cunneen, docs/model.md §3).
    """
    return 2.0 * (np.asarray(c, float) - a) / (np.asarray(mean_service_s, float) * (1.0 + cs2))


def wait_tail(t_s, c, a, mean_service_s, cs2):
    """P(Wq > t) ~= C(c, a) exp(-2 (c mu - lambda) t / (1 + cs2)) for t >= 0 (docs/model.md §3).

    ``a`` = offered load in Erlangs, ``mean_service_s`` = E[S], ``cs2`` = Var[S]/E[S]^2.
    Unstable queues (``a >= c``) wait with probability 1 at every ``t``.
    """
    with np.errstate(invalid="ignore", over="ignore"):
        theta = _decay_per_s(c, a, mean_service_s, cs2)
    return _wait_tail(t_s, erlang_c(c, a), theta, np.asarray(c, float) > a)


def _wait_tail(t_s, ec, theta, stable):
    with np.errstate(invalid="ignore", over="ignore"):
        tail = np.where(stable, ec * np.exp(-theta * np.maximum(np.asarray(t_s, float), 0.0)),
                        1.0)
    return tail if np.ndim(tail) else float(tail)


def wait_quantile_s(q, c, a, mean_service_s, cs2):
    """The ``q`` quantile of the queue wait (e.g. q = 0.99 for P99), seconds; inf if unstable.

    Inverts :func:`wait_tail`: ``max(0, ln(C / (1 - q)) / theta)``. This is the paper's
    P99 wait (its simulator's ``p99_wait``).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        theta = _decay_per_s(c, a, mean_service_s, cs2)
    return _wait_quantile(q, erlang_c(c, a), theta, np.asarray(c, float) > a)


def _wait_quantile(q, ec, theta, stable):
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.maximum(np.log(np.asarray(ec, float) / (1.0 - q)) / theta, 0.0)
    w = np.where(stable, w, np.inf)
    return w if np.ndim(w) else float(w)


def ttft_miss_probability(slo_s, c, a, mean_service_s, cs2, floor_s, floor_prob):
    """P(TTFT > SLO) for one pool: the tail of wait + prefill over length classes.

    docs/model.md §3: ``sum_i p_i P(Wq > SLO - T_i)``, where ``T_i`` (``floor_s``) is the
    TTFT floor of class ``i`` (its prefill, plus compression latency for compressed
    requests) and ``p_i`` (``floor_prob``) its share of the pool's requests. A class whose
    floor alone reaches the SLO counts in full.

    Shapes: ``c``, ``a``, ``mean_service_s``, ``cs2`` broadcast to ``(n,)``; ``floor_s`` is
    ``(m,)`` or ``(n, m)``; ``floor_prob`` is ``(n, m)`` or ``(m,)``. Returns ``(n,)``.
    """
    c = np.atleast_1d(np.asarray(c, dtype=float))
    a = np.atleast_1d(np.asarray(a, dtype=float))
    with np.errstate(invalid="ignore", over="ignore"):
        theta = _decay_per_s(c, a, mean_service_s, cs2)
    return _miss(slo_s, erlang_c(c, a), theta, c > a, floor_s, floor_prob)


def _miss(slo_s, ec, theta, stable, floor_s, floor_prob) -> np.ndarray:
    """:func:`ttft_miss_probability` given Erlang C ``ec`` and the decay rate ``theta``."""
    floor_s = np.asarray(floor_s, dtype=float)
    floor_prob = np.asarray(floor_prob, dtype=float)
    slack = slo_s - floor_s
    over = slack <= 0
    fixed = np.sum(np.where(over, floor_prob, 0.0), axis=-1)
    with np.errstate(invalid="ignore", over="ignore"):
        theta_col = np.reshape(theta, (-1, 1))
        wait = np.sum(
            np.where(over, 0.0, floor_prob * np.exp(-theta_col * np.maximum(slack, 0.0))), axis=-1
        )
        miss = fixed + np.where(stable, ec * wait,
                                np.sum(np.where(over, 0.0, floor_prob), axis=-1))
    return miss


def ttft_quantile_s(q, c, a, mean_service_s, cs2, floor_s, floor_prob):
    """The ``q`` quantile of TTFT (wait + floor) for one pool, seconds (scalar inputs).

    The smallest ``t`` with ``P(TTFT > t) <= 1 - q`` under :func:`ttft_miss_probability`
    (:meth:`Queue.ttft_quantile_s`); ``inf`` for an unstable queue.
    """
    return Queue(c, a, mean_service_s, cs2, np.asarray(floor_s, float),
                 np.asarray(floor_prob, float)).ttft_quantile_s(q)


def _ttft_quantile(q, ec, theta, floor_s, floor_prob) -> float:
    """The closed form of :meth:`Queue.ttft_quantile_s` for a stable queue (numpy form).

    Between consecutive floors ``T_j < t <= T_{j+1}`` the tail is ``A_j + C exp(-theta t)
    E_j`` with ``A_j`` the share of floors above ``T_j`` and ``E_j = sum_{i <= j} p_i
    exp(theta T_i)`` (kept in log space), so each segment's crossing is one logarithm.
    """
    fs = np.asarray(floor_s, dtype=float)
    fp = np.asarray(floor_prob, dtype=float)
    keep = fp > 0
    fs, inv = np.unique(fs[keep], return_inverse=True)
    p = np.bincount(inv, weights=fp[keep], minlength=fs.size)
    p = p / p.sum()
    target = 1.0 - q
    above = np.concatenate([np.cumsum(p[::-1])[::-1][1:], [0.0]])  # A_j: floors > T_j
    with np.errstate(divide="ignore", invalid="ignore"):
        log_e = np.logaddexp.accumulate(np.log(p) + theta * fs)  # log E_j
        t_star = (np.log(ec) + log_e - np.log(np.maximum(target - above, 0.0))) / theta
    t_star = np.where(target > above, t_star, np.inf)
    nxt = np.concatenate([fs[1:], [np.inf]])
    for j in range(fs.size):  # first segment (T_j, T_{j+1}] where the tail reaches target
        if t_star[j] <= fs[j]:
            return float(fs[j])
        if t_star[j] <= nxt[j]:
            return float(t_star[j])
    return float("inf")  # unreachable for target in (0, 1): the last segment always crosses


# ---------------------------------------------------------------------------------------
# One queue, a mixture of queues, and their figures
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    """One M/G/c queue at a chosen size (docs/model.md §3).

    servers: ``c``, KV slots in all (instances x slots per instance).
    offered_load: ``a = lambda E[S]`` in Erlangs.
    mean_service_s: ``E[S]`` of a request holding one slot, seconds.
    cs2: squared coefficient of variation of ``S``.
    floor_s, floor_prob: ``(m,)`` TTFT floors (prefill, plus compression latency for
    compressed requests; seconds) and the share of the queue's requests at each (sum 1).
    """

    servers: int
    offered_load: float
    mean_service_s: float
    cs2: float
    floor_s: np.ndarray = field(repr=False)
    floor_prob: np.ndarray = field(repr=False)

    def __post_init__(self):
        for name in ("floor_s", "floor_prob"):
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name),
                                                                dtype=np.float64).ravel())

    @property
    def rate_rps(self) -> float:
        """Arrival rate, requests/s (``a / E[S]``)."""
        return self.offered_load / self.mean_service_s if self.offered_load > 0 else 0.0

    @property
    def utilization(self) -> float:
        """``a / c``: the share of slot time busy (inf for traffic on no servers)."""
        if self.servers <= 0:
            return math.inf if self.offered_load > 0 else 0.0
        return self.offered_load / self.servers

    @property
    def stable(self) -> bool:
        return self.servers > self.offered_load

    @cached_property
    def erlang_c(self) -> float:
        """Probability that an arrival waits (1 if unstable, 0 without traffic)."""
        if self.offered_load <= 0:
            return 0.0
        if not self.stable:
            return 1.0
        k = compiled_kernels()
        if k is None:
            return float(erlang_c(self.servers, self.offered_load))
        return float(k.erlang_c_kernel(float(self.servers), float(self.offered_load)))

    @cached_property
    def decay_per_s(self) -> float:
        """Decay rate of the wait tail, ``2 (c - a) / (E[S] (1 + cs2))`` per second."""
        return 2.0 * (self.servers - self.offered_load) / (self.mean_service_s
                                                            * (1.0 + self.cs2))

    def wait_tail(self, t_s: float) -> float:
        """P(Wq > t) (:func:`wait_tail`)."""
        return _wait_tail(t_s, self.erlang_c, self.decay_per_s, self.stable)

    def miss(self, slo_s: float) -> float:
        """P(TTFT > slo_s): the wait + floor tail summed over floor classes."""
        k = compiled_kernels()
        if k is None or not self.stable or self.offered_load <= 0:
            return float(_miss(slo_s, self.erlang_c, self.decay_per_s, self.stable,
                               self.floor_s, self.floor_prob)[0])
        return k.miss_kernel(float(slo_s), self.erlang_c, self.decay_per_s, self.floor_s,
                             self.floor_prob)

    def wait_quantile_s(self, q: float) -> float:
        """The ``q`` quantile of the wait, seconds (closed form; inf if unstable)."""
        return _wait_quantile(q, self.erlang_c, self.decay_per_s, self.stable)

    def ttft_quantile_s(self, q: float) -> float:
        """The ``q`` quantile of TTFT = wait + floor, seconds (closed form; inf if unstable):
        the smallest ``t`` with ``P(TTFT > t) <= 1 - q`` (see :func:`_ttft_quantile`)."""
        if not self.stable:
            return math.inf
        k = compiled_kernels()
        if k is None:
            return _ttft_quantile(q, self.erlang_c, self.decay_per_s, self.floor_s,
                                  self.floor_prob)
        return k.ttft_quantile_kernel(float(q), self.erlang_c, self.decay_per_s, self.floor_s,
                                      self.floor_prob)

    @property
    def mean_wait_s(self) -> float:
        """Allen-Cunneen mean wait ``C E[S] / (c - a) (1 + cs2) / 2`` (exact for M/M/c)."""
        if not self.stable:
            return math.inf
        return self.erlang_c * self.mean_service_s / (self.servers - self.offered_load) * \
            (1.0 + self.cs2) / 2.0

    @property
    def mean_floor_s(self) -> float:
        """Mean TTFT floor (mean prefill, plus compression latency where it applies), s."""
        return float(np.dot(self.floor_s, self.floor_prob) / max(self.floor_prob.sum(), 1e-300))

    def alone(self) -> QueueMix:
        """This queue as a mixture of one."""
        return QueueMix((self,), (1.0,))


def _bisect_quantile_s(tail, q: float, hi_s: float) -> float:
    """Smallest ``t >= 0`` with ``tail(t) <= 1 - q`` for a non-increasing ``tail``, to the
    last bit (the one numeric inversion of the package; single queues use closed forms)."""
    target = 1.0 - q
    if tail(0.0) <= target:
        return 0.0
    lo, hi = 0.0, max(hi_s, 1e-6)
    for _ in range(64):
        if tail(hi) <= target:
            break
        lo, hi = hi, hi * 2.0
    else:
        return math.inf
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if not lo < mid < hi:
            break
        if tail(mid) > target:
            lo = mid
        else:
            hi = mid
    return hi


@dataclass(frozen=True)
class QueueMix:
    """Requests split over independent queues with traffic ``shares`` (docs/model.md §3).

    A pool whose requests split over allocations of several GPU types, or a fleet of
    pools. Every tail is the share-weighted sum of the queues' tails. ``shares`` sum to 1
    over the queues with traffic; a mixture with no traffic has all shares 0.
    """

    queues: tuple[Queue, ...]
    shares: tuple[float, ...]

    @classmethod
    def by_rate(cls, queues) -> QueueMix:
        """Queues weighted by their arrival rates (the fleet or a pool as routed)."""
        queues = tuple(queues)
        rates = [x.rate_rps for x in queues]
        total = sum(rates)
        return cls(queues, tuple(r / total if total > 0 else 0.0 for r in rates))

    @property
    def _live(self) -> list[tuple[float, Queue]]:
        return [(w, x) for w, x in zip(self.shares, self.queues, strict=True)
                if w > 0 and x.offered_load > 0]

    @property
    def servers(self) -> int:
        return int(sum(x.servers for x in self.queues))

    @property
    def utilization(self) -> float:
        """Busy slots over slots, ``sum a / sum c`` (inf for traffic on no servers)."""
        a = sum(x.offered_load for x in self.queues)
        c = self.servers
        return a / c if c > 0 else (math.inf if a > 0 else 0.0)

    def miss(self, slo_s: float) -> float:
        """P(TTFT > slo_s) over the mixture."""
        return sum(w * x.miss(slo_s) for w, x in self._live)

    def wait_tail(self, t_s: float) -> float:
        return sum(w * x.wait_tail(t_s) for w, x in self._live)

    def _quantile_s(self, q: float, ttft: bool) -> float:
        """The ``q`` quantile of TTFT (``ttft``) or of the wait, seconds: the queue's closed
        form when one queue has traffic, else bisection on the mixture's tail."""
        live = self._live
        if not live:
            return 0.0
        if len(live) == 1:
            x = live[0][1]
            return x.ttft_quantile_s(q) if ttft else x.wait_quantile_s(q)
        if ttft:
            hi = max(float(np.max(x.floor_s)) for _, x in live) + 1e-3
            return _bisect_quantile_s(self.miss, q, hi)
        return _bisect_quantile_s(self.wait_tail, q, 1e-3)

    def ttft_quantile_s(self, q: float) -> float:
        """The ``q`` quantile of TTFT = wait + floor, seconds."""
        return self._quantile_s(q, ttft=True)

    def wait_quantile_s(self, q: float) -> float:
        """The ``q`` quantile of the wait, seconds."""
        return self._quantile_s(q, ttft=False)

    @property
    def mean_wait_s(self) -> float:
        return sum(w * x.mean_wait_s for w, x in self._live)

    @property
    def mean_floor_s(self) -> float:
        return sum(w * x.mean_floor_s for w, x in self._live)

    def paper_ttft_s(self, q: float) -> float:
        """The paper's rule: the ``q`` quantile of the wait plus the mean floor, seconds."""
        return self.wait_quantile_s(q) + self.mean_floor_s if self._live else 0.0


@dataclass(frozen=True)
class PoolFigures:
    """The model's figures of one allocation, pool or fleet (docs/model.md §3).

    utilization: ``sum a / sum c``. ttft_ms: TTFT at the SLO's percentile by the rule in
    force (the tail rule, or with ``paper_rule`` the paper's P``q`` wait + mean floor).
    ttft_at_percentile_ms / p99_ttft_ms: the tail rule's TTFT at the SLO's percentile and
    at P99. slo_miss_share: P(TTFT > SLO) (tail rule). mean_wait_ms: Allen-Cunneen.
    p99_wait_ms: P99 of the wait. paper_p99_ttft_ms: P99 wait + mean floor.
    """

    utilization: float
    ttft_ms: float
    ttft_at_percentile_ms: float
    p99_ttft_ms: float
    slo_miss_share: float
    mean_wait_ms: float
    p99_wait_ms: float
    paper_p99_ttft_ms: float


def pool_figures(queues: Queue | QueueMix, slo_s: float, percentile: float,
                 paper_rule: bool = False) -> PoolFigures:
    """Every figure of a queue or a mixture at the TTFT SLO ``slo_s`` (P``percentile``).

    The one function the planner, the MILP's plan and the simulator's analytical side use.
    Figures of a group with no traffic are 0 (its utilization still counts its servers).
    """
    mix = queues.alone() if isinstance(queues, Queue) else queues
    util = mix.utilization
    if not mix._live:
        return PoolFigures(util, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    q = percentile / 100.0
    at_q = mix.ttft_quantile_s(q)
    p99 = at_q if q == 0.99 else mix.ttft_quantile_s(0.99)
    wait_p99 = mix.wait_quantile_s(0.99)
    mean_floor = mix.mean_floor_s
    paper_q = (wait_p99 if q == 0.99 else mix.wait_quantile_s(q)) + mean_floor
    return PoolFigures(
        utilization=util, ttft_ms=(paper_q if paper_rule else at_q) * 1e3,
        ttft_at_percentile_ms=at_q * 1e3, p99_ttft_ms=p99 * 1e3,
        slo_miss_share=mix.miss(slo_s), mean_wait_ms=mix.mean_wait_s * 1e3,
        p99_wait_ms=wait_p99 * 1e3, paper_p99_ttft_ms=(wait_p99 + mean_floor) * 1e3)


def __getattr__(name: str):
    """``PoolLoad``, ``QueueBatch`` and ``min_instances`` live in modules built on this
    one; they are re-exported here on first use (PEP 562), without an import cycle."""
    if name in ("PoolLoad", "QueueBatch"):
        from . import poolload

        return getattr(poolload, name)
    if name == "min_instances":
        from .sizing import min_instances

        return min_instances
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
