"""M/G/c queueing for one pool: Erlang C, the wait tail, the TTFT tail, minimum instances.

A pool is an M/G/c queue whose servers are KV slots (MODEL.md section 3):
``c = instances * slots_per_instance``, each slot serving at rate ``1 / E[S]``.
All functions are vectorised over numpy arrays and stable for ``c`` up to 10^6.

Units: rates in requests per second, times in seconds, loads in Erlangs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import special

from .errors import FleetOptError

__all__ = [
    "erlang_b",
    "erlang_c",
    "wait_tail",
    "wait_quantile_s",
    "ttft_miss_probability",
    "ttft_quantile_s",
    "PoolLoad",
    "min_instances",
]


def _log_erlang_b(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """log Erlang B via the Poisson pmf/cdf ratio: B(c, a) = pmf(c; a) / cdf(c; a).

    SOLVER_NOTES.md "Erlang C": agrees with exact rational arithmetic to ~5e-13.
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
    """Erlang C: probability that an arrival waits in an M/M/c queue (MODEL.md section 3).

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
        cs, as_ = c[stable], a[stable]
        b = np.exp(_log_erlang_b(cs, as_))
        rho = as_ / cs
        out[stable] = b / (1.0 - rho * (1.0 - b))
    return out if out.ndim else float(out)


def _erlang_c_stable(c: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Erlang C for float arrays already known to satisfy ``c > a > 0`` (no checks)."""
    b = np.exp(_log_erlang_b(c, a))
    return b / (1.0 - (a / c) * (1.0 - b))


def _decay_per_s(c, a, mean_service_s, cs2):
    """Decay rate of the M/G/c wait tail, ``2 (c mu - lambda) / (1 + cs2)`` per second.

    ``c mu - lambda = (c - a) / E[S]`` (Kimura / Allen-Cunneen, MODEL.md section 3).
    """
    return 2.0 * (np.asarray(c, float) - a) / (np.asarray(mean_service_s, float) * (1.0 + cs2))


def wait_tail(t_s, c, a, mean_service_s, cs2):
    """P(Wq > t) ~= C(c, a) exp(-2 (c mu - lambda) t / (1 + cs2)) for t >= 0 (MODEL.md section 3).

    ``a`` = offered load in Erlangs, ``mean_service_s`` = E[S], ``cs2`` = Var[S]/E[S]^2.
    Unstable queues (``a >= c``) wait with probability 1 at every ``t``.
    """
    t_s = np.asarray(t_s, dtype=float)
    ec = erlang_c(c, a)
    with np.errstate(invalid="ignore", over="ignore"):
        theta = _decay_per_s(c, a, mean_service_s, cs2)
        tail = np.where(np.asarray(c, float) > a, ec * np.exp(-theta * np.maximum(t_s, 0.0)), 1.0)
    return tail if np.ndim(tail) else float(tail)


def wait_quantile_s(q, c, a, mean_service_s, cs2):
    """The ``q`` quantile of the queue wait (e.g. q = 0.99 for P99), seconds; inf if unstable.

    Inverts :func:`wait_tail`: ``max(0, ln(C / (1 - q)) / theta)``. This is the paper's
    P99 wait (its simulator's ``p99_wait``).
    """
    ec = np.asarray(erlang_c(c, a), dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = _decay_per_s(c, a, mean_service_s, cs2)
        w = np.maximum(np.log(ec / (1.0 - q)) / theta, 0.0)
    w = np.where(np.asarray(c, float) > a, w, np.inf)
    return w if np.ndim(w) else float(w)


def ttft_miss_probability(slo_s, c, a, mean_service_s, cs2, floor_s, floor_prob):
    """P(TTFT > SLO) for one pool: the tail of wait + prefill over length classes.

    MODEL.md section 3: ``sum_i p_i P(Wq > SLO - T_i)``, where ``T_i`` (``floor_s``) is the
    TTFT floor of class ``i`` (its prefill, plus compression latency for compressed
    requests) and ``p_i`` (``floor_prob``) its share of the pool's requests. A class whose
    floor alone reaches the SLO counts in full.

    Shapes: ``c``, ``a``, ``mean_service_s``, ``cs2`` broadcast to ``(n,)``; ``floor_s`` is
    ``(m,)`` or ``(n, m)``; ``floor_prob`` is ``(n, m)`` or ``(m,)``. Returns ``(n,)``.
    """
    c = np.atleast_1d(np.asarray(c, dtype=float))
    a = np.atleast_1d(np.asarray(a, dtype=float))
    floor_s = np.asarray(floor_s, dtype=float)
    floor_prob = np.asarray(floor_prob, dtype=float)
    slack = slo_s - floor_s
    over = slack <= 0
    fixed = np.sum(np.where(over, floor_prob, 0.0), axis=-1)
    ec = erlang_c(c, a)
    with np.errstate(invalid="ignore", over="ignore"):
        theta = _decay_per_s(c, a, mean_service_s, cs2)
        theta_col = np.reshape(theta, (-1, 1))
        wait = np.sum(
            np.where(over, 0.0, floor_prob * np.exp(-theta_col * np.maximum(slack, 0.0))), axis=-1
        )
        miss = fixed + np.where(c > a, ec * wait, np.sum(np.where(over, 0.0, floor_prob), axis=-1))
    return miss


def ttft_quantile_s(q, c, a, mean_service_s, cs2, floor_s, floor_prob):
    """The ``q`` quantile of TTFT (wait + floor) for one pool, seconds (scalar inputs).

    The smallest ``t`` with ``P(TTFT > t) <= 1 - q`` under :func:`ttft_miss_probability`,
    in closed form: between consecutive floors ``T_j < t <= T_{j+1}`` the tail is
    ``A_j + C exp(-theta t) E_j`` with ``A_j`` the share of floors above ``T_j`` and
    ``E_j = sum_{i <= j} p_i exp(theta T_i)`` (kept in log space), so each segment's
    crossing is one logarithm. ``inf`` for an unstable queue.
    """
    if c <= a:
        return float("inf")
    fs = np.asarray(floor_s, dtype=float)
    fp = np.asarray(floor_prob, dtype=float)
    keep = fp > 0
    fs, inv = np.unique(fs[keep], return_inverse=True)
    p = np.bincount(inv, weights=fp[keep], minlength=fs.size)
    p = p / p.sum()
    target = 1.0 - q
    ec = float(erlang_c(c, a))
    theta = float(_decay_per_s(c, a, mean_service_s, cs2))
    above = np.concatenate([np.cumsum(p[::-1])[::-1][1:], [0.0]])  # A_j: floors > T_j
    with np.errstate(divide="ignore"):
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


@dataclass(frozen=True)
class PoolLoad:
    """What one pool must serve (MODEL.md section 3), for ``n`` candidate pools at once.

    Attributes (arrays of shape ``(n,)`` unless said):
        rate_rps: arrival rate into the pool, requests/s.
        mean_service_s: E[S] of a request holding one KV slot, seconds.
        cs2: squared coefficient of variation of S.
        slots_per_instance: KV slots of one instance at the pool's window (integer).
        floor_s: TTFT floors (prefill + compression latency), shape ``(m,)`` or ``(n, m)``, s.
        floor_prob: share of the pool's requests at each floor, shape ``(n, m)``.
    """

    rate_rps: np.ndarray
    mean_service_s: np.ndarray
    cs2: np.ndarray
    slots_per_instance: np.ndarray
    floor_s: np.ndarray
    floor_prob: np.ndarray

    @property
    def offered_load(self) -> np.ndarray:
        """Offered load ``a = lambda E[S]`` in Erlangs (slot-seconds per second)."""
        return np.asarray(self.rate_rps, float) * np.asarray(self.mean_service_s, float)

    @property
    def mean_floor_s(self) -> np.ndarray:
        """Mean TTFT floor (mean prefill, plus compression latency where it applies), s."""
        fp = np.atleast_2d(self.floor_prob)
        return np.sum(fp * self.floor_s, axis=-1) / np.maximum(np.sum(fp, axis=-1), 1e-300)


def _slo_miss(load: PoolLoad, idx: np.ndarray, n_inst: np.ndarray, slo_s: float,
              q: float, paper_rule: bool) -> np.ndarray:
    """Excess of the SLO test for candidates ``idx`` at ``n_inst`` instances (> 0 means it fails).

    Project rule: P(TTFT > SLO) - (1 - q). Paper rule (``paper_rule``): P``q`` wait +
    mean floor - SLO, in seconds. The project rule skips the class sum where the fixed
    share plus Erlang C already passes (the sum is at most C).
    """
    c = n_inst * load.slots_per_instance[idx]
    a = load.offered_load[idx]
    es = load.mean_service_s[idx]
    cs2 = load.cs2[idx]
    if paper_rule:
        return wait_quantile_s(q, c, a, es, cs2) + load.mean_floor_s[idx] - slo_s
    fs = load.floor_s if np.ndim(load.floor_s) == 1 else load.floor_s[idx]
    fp = load.floor_prob[idx]
    over = fs >= slo_s
    fixed = np.sum(np.where(over, fp, 0.0), axis=-1)
    ec = _erlang_c_stable(c, a)
    out = fixed + ec - (1.0 - q)
    need = np.flatnonzero(out > 0)
    if need.size:
        cols = np.flatnonzero(np.any(fp[need] > 0, axis=0))
        fs_n = fs[cols] if np.ndim(fs) == 1 else fs[need][:, cols]
        out[need] = ttft_miss_probability(slo_s, c[need], a[need], es[need], cs2[need], fs_n,
                                          fp[need][:, cols]) - (1.0 - q)
    return out


def min_instances(load: PoolLoad, slo_s: float, percentile: float = 99.0,
                  rho_max: float = 0.85, paper_rule: bool = False) -> np.ndarray:
    """Minimum instances per candidate pool meeting the TTFT SLO and the utilization cap.

    MODEL.md section 3: the smallest ``n`` with ``rho = a / (n slots) <= rho_max`` and
    ``P(TTFT > slo_s) <= 1 - q`` (project rule) or, with ``paper_rule``, P``q`` wait plus
    mean prefill ``<= slo_s`` (the FleetOpt paper's rule). Pools with no traffic need 0.
    Returns an int64 array; ``-1`` marks pools that no instance count can serve because
    their TTFT floors alone miss the SLO.

    The search starts at the utilization bound, where most pools already pass, and
    brackets the rest by doubling before an integer bisection; every evaluation uses the
    exact Erlang C.
    """
    if not 0 < percentile < 100:
        raise FleetOptError(f"percentile={percentile}: must be strictly between 0 and 100")
    if not 0 < rho_max <= 1:
        raise FleetOptError(f"rho_max={rho_max}: the utilization cap must be in (0, 1]")
    q = percentile / 100.0
    rate = np.atleast_1d(np.asarray(load.rate_rps, float))
    n = rate.shape[0]
    a = load.offered_load
    slots = np.asarray(load.slots_per_instance, float)
    result = np.zeros(n, dtype=np.int64)
    busy = np.flatnonzero(rate > 0)
    if busy.size == 0:
        return result
    # Floors that cannot be met at any size: the share over the SLO is fixed.
    fp = np.atleast_2d(load.floor_prob)
    fs = load.floor_s if np.ndim(load.floor_s) == 2 else np.broadcast_to(load.floor_s, fp.shape)
    if paper_rule:
        impossible = load.mean_floor_s >= slo_s
    else:
        impossible = np.sum(np.where(fs >= slo_s, fp, 0.0), axis=-1) >= (1.0 - q)
    result[impossible & (rate > 0)] = -1
    busy = busy[~impossible[busy]]
    if busy.size == 0:
        return result
    # Utilization bound; strictly more slots than load for a stable queue.
    lo = np.ceil(a[busy] / (slots[busy] * rho_max) - 1e-12).astype(np.int64)
    lo = np.maximum(lo, 1)
    unstable = lo * slots[busy] <= a[busy]
    lo[unstable] += 1
    ok = _slo_miss(load, busy, lo, slo_s, q, paper_rule) <= 0
    result[busy[ok]] = lo[ok]
    todo = busy[~ok]
    lo = lo[~ok]  # infeasible counts
    if todo.size == 0:
        return result
    hi = lo * 2
    for _ in range(64):
        bad = _slo_miss(load, todo, hi, slo_s, q, paper_rule) > 0
        if not np.any(bad):
            break
        lo = np.where(bad, hi, lo)
        hi = np.where(bad, hi * 2, hi)
    while True:
        open_ = hi - lo > 1
        if not np.any(open_):
            break
        mid = (lo + hi) // 2
        sel = np.flatnonzero(open_)
        bad = _slo_miss(load, todo[sel], mid[sel], slo_s, q, paper_rule) > 0
        lo[sel] = np.where(bad, mid[sel], lo[sel])
        hi[sel] = np.where(bad, hi[sel], mid[sel])
    result[todo] = hi
    return result
