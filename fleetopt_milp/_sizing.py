"""The compiled forms (numba): sizing slot-model pools, and one queue's figures.

Loaded on request only (:func:`fleetopt_milp.queueing.compiled_kernels` says when and
why); each function here has a numpy or scipy twin it is tested against:

- :func:`min_instances`: the search and the SLO test of :mod:`fleetopt_milp.sizing`'s
  numpy path (docs/model.md §3), one candidate at a time;
- :func:`erlang_c_kernel`, :func:`miss_kernel`, :func:`ttft_quantile_kernel`: what a
  :class:`~fleetopt_milp.queueing.Queue` computes (twins: ``erlang_c``,
  ``ttft_miss_probability`` and the numpy closed form of the TTFT quantile);
- :func:`slot_load_kernel`: the slot model's per-pool arithmetic
  (:class:`~fleetopt_milp.service.SlotServiceModel`), to the bit.

How the sizing kernel computes:

- **Poisson pmf.** ``log pmf(c; a)`` by Loader's saddle-point form
  ``-stirlerr(c) - bd0(c, a) - log(2 pi c) / 2`` (C. Loader, "Fast and accurate computation
  of binomial probabilities", 2000), accurate to a few ulps where ``c log a - a -
  lgamma(c + 1)`` loses ``c log a`` times the machine epsilon.
- **Erlang B without an incomplete gamma.** ``1 / B(c, a) = cdf(c) / pmf(c) = 1 / pmf(c)
  - R`` with ``R = P(X > c) / pmf(c) = sum_{j >= 1} prod_{i <= j} a / (c + i)``, a series of
  positive terms whose ratios fall below ``a / (c + 1) < 1`` for a stable queue. After
  ``J`` terms the rest is at most ``t_J r / (1 - r)`` with ``r = a / (c + J + 1)``, so the
  series gives a bracket of ``R`` at any point, and the value to the last bit when summed
  to convergence (about ``9 sqrt(c)`` terms in heavy traffic).
- **Decisions from brackets.** Both SLO rules reduce to ``C(c, a) <= C*``: the tail rule
  ``fixed + C W <= 1 - q`` (``W = sum_i p_i exp(-theta (SLO - T_i))`` over the floors below
  the SLO) and the paper rule ``ln(C / (1 - q)) / theta + mean floor <= SLO``. Erlang C
  is increasing in B, so the kernel first brackets B with no series term at all
  (``pmf <= B <= pmf / (1 - pmf a / (c + 1 - a))``) and sums the series only when the
  bracket straddles the threshold. Where the Poisson tail beyond ``c`` is below 1e-17 the
  bracket is exact in double precision, as in the numpy path.

Counts equal the numpy path's (tests/test_sizing_kernel.py, tests/test_golden.py); sizing
the default scenario's 1,398 candidate pools is about 6x faster (benchmarks/RESULTS.md,
planner-speed).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@njit(cache=True)
def _stirlerr(n: float) -> float:
    """``lgamma(n + 1) - (n + 1/2) log n + n - log(2 pi) / 2`` (Stirling's error), n >= 1."""
    if n <= 15.0:
        return math.lgamma(n + 1.0) - (n + 0.5) * math.log(n) + n - _HALF_LOG_2PI
    nn = 1.0 / (n * n)
    s0, s1, s2, s3, s4 = 1.0 / 12, 1.0 / 360, 1.0 / 1260, 1.0 / 1680, 1.0 / 1188
    return (s0 - (s1 - (s2 - (s3 - s4 * nn) * nn) * nn) * nn) / n


@njit(cache=True)
def _bd0(x: float, m: float) -> float:
    """The deviance term ``x log(x / m) + m - x``, without cancellation near ``x = m``."""
    if abs(x - m) < 0.1 * (x + m):
        v = (x - m) / (x + m)
        s = (x - m) * v
        ej = 2.0 * x * v
        v = v * v
        j = 1
        while j < 1000:
            ej *= v
            s1 = s + ej / (2 * j + 1)
            if s1 == s:
                return s1
            s = s1
            j += 1
        return s
    return x * math.log(x / m) + m - x


@njit(cache=True)
def log_poisson_pmf(c: float, a: float) -> float:
    """``log P(X = c)`` for ``X ~ Poisson(a)``, integer ``c >= 1``, ``a > 0``."""
    return -_stirlerr(c) - _bd0(c, a) - 0.5 * math.log(2.0 * math.pi * c)


@njit(cache=True)
def _tail_ratio(c: float, a: float) -> float:
    """``R = P(X > c) / P(X = c)`` summed to convergence (``c + 1 > a``)."""
    term = 1.0
    total = 0.0
    j = 1.0
    while j < 1e8:  # about 9 sqrt(c) terms; the cap only guards against bad input
        term *= a / (c + j)
        total += term
        r = a / (c + j + 1.0)
        if term * r <= 1e-17 * (1.0 - r) * total:
            break
        j += 1.0
    return total


@njit(cache=True)
def erlang_c_kernel(c: float, a: float) -> float:
    """Erlang C of a stable queue (``c > a > 0``), to the last few bits."""
    pmf = math.exp(log_poisson_pmf(c, a))
    b = pmf / (1.0 - pmf * _tail_ratio(c, a))
    return b / (1.0 - (a / c) * (1.0 - b))


@njit(cache=True)
def _c_of_b(b: float, rho: float) -> float:
    return b / (1.0 - rho * (1.0 - b))


@njit(cache=True)
def _erlang_c_at_most(c: float, a: float, c_star: float) -> bool:
    """``C(c, a) <= c_star``, deciding from the cheapest bracket of B that settles it."""
    if c_star >= 1.0:
        return True
    if c_star < 0.0:
        return False
    rho = a / c
    log_pmf = log_poisson_pmf(c, a)
    pmf = math.exp(log_pmf)
    if _c_of_b(pmf, rho) > c_star:  # B >= pmf: already too many waits
        return False
    r0 = a / (c + 1.0 - a)  # R <= a / (c + 1 - a): the geometric bound of the series
    tail_hi = pmf * r0
    if log_pmf + math.log(r0) < -39.0:  # cdf = 1 in double precision: B = pmf exactly
        return True
    if tail_hi < 1.0 and _c_of_b(pmf / (1.0 - tail_hi), rho) <= c_star:
        return True
    b = pmf / (1.0 - pmf * _tail_ratio(c, a))
    return _c_of_b(b, rho) <= c_star


@njit(cache=True)
def class_sum(theta: float, slo_s: float, floor_s, p) -> float:
    """``W = sum_i p_i exp(-theta (SLO - T_i))`` over the floors below the SLO: the TTFT
    tail is ``fixed + C W`` (docs/model.md §3)."""
    w = 0.0
    for k in range(floor_s.size):
        if p[k] > 0.0 and floor_s[k] < slo_s:
            w += p[k] * math.exp(-theta * (slo_s - floor_s[k]))
    return w


@njit(cache=True)
def miss_kernel(slo_s: float, ec: float, theta: float, floor_s, p) -> float:
    """P(TTFT > slo_s) of a stable queue with Erlang C ``ec`` and decay rate ``theta``."""
    fixed = 0.0
    for k in range(floor_s.size):
        if floor_s[k] >= slo_s:
            fixed += p[k]
    return fixed + ec * class_sum(theta, slo_s, floor_s, p)


@njit(cache=True)
def ttft_quantile_kernel(q: float, ec: float, theta: float, floor_s, p) -> float:
    """The ``q`` quantile of TTFT of a stable queue, seconds, in closed form.

    Between consecutive distinct floors ``T_j < t <= T_{j+1}`` the tail is ``A_j + C
    exp(-theta t) E_j`` with ``A_j`` the share of floors above ``T_j`` and ``E_j = sum_{i
    <= j} p_i exp(theta T_i)`` (in log space), so each segment's crossing is one logarithm;
    the answer is the first segment's crossing, or ``T_j`` itself if the tail is already
    below target just after it.
    """
    order = np.argsort(floor_s, kind="mergesort")
    fs = np.empty(floor_s.size)
    ps = np.empty(floor_s.size)
    k = 0
    for j in order:
        if p[j] <= 0.0:
            continue
        if k > 0 and floor_s[j] == fs[k - 1]:
            ps[k - 1] += p[j]
        else:
            fs[k] = floor_s[j]
            ps[k] = p[j]
            k += 1
    total = 0.0
    for j in range(k):
        total += ps[j]
    above = np.zeros(k)  # A_j, suffix sums
    for j in range(k - 2, -1, -1):
        above[j] = above[j + 1] + ps[j + 1] / total
    target = 1.0 - q
    log_ec = math.log(ec) if ec > 0.0 else -math.inf
    log_e = -math.inf
    for j in range(k):
        x = math.log(ps[j] / total) + theta * fs[j]
        hi = max(log_e, x)
        log_e = hi + math.log1p(math.exp(-abs(log_e - x))) if log_e > -math.inf else x
        t = math.inf
        if target > above[j]:
            t = (log_ec + log_e - math.log(target - above[j])) / theta
        if t <= fs[j]:
            return fs[j]
        if t <= (fs[j + 1] if j + 1 < k else math.inf):
            return t
    return math.inf


@njit(cache=True)
def floor_stats(floor_s, p, slo_s: float):
    """``(fixed, mean floor)``: the share of floors at or above the SLO and the mean floor."""
    fixed = 0.0
    mass = 0.0
    dot = 0.0
    for k in range(floor_s.size):
        mass += p[k]
        dot += p[k] * floor_s[k]
        if floor_s[k] >= slo_s:
            fixed += p[k]
    return fixed, dot / max(mass, 1e-300)


@njit(cache=True)
def meets_slo(c: float, a: float, theta: float, floor_s, p, slo_s: float, q: float,
              fixed: float, mean_floor: float, paper_rule: bool) -> bool:
    """The SLO test of a stable queue (``c > a``) with decay rate ``theta``, both rules as
    ``C <= C*`` (:func:`fleetopt_milp.sizing.slo_excess` ``<= 0``)."""
    if paper_rule:  # ln(C / (1 - q)) / theta + mean floor <= SLO; the wait is >= 0
        if mean_floor > slo_s:
            return False
        return _erlang_c_at_most(c, a, (1.0 - q) * math.exp(theta * (slo_s - mean_floor)))
    room = (1.0 - q) - fixed
    if room < 0.0:  # the floors alone miss the SLO
        return False
    if _erlang_c_at_most(c, a, room):  # W <= 1: the class sum cannot fail it
        return True
    w = class_sum(theta, slo_s, floor_s, p)
    if w <= 0.0:
        return True
    return _erlang_c_at_most(c, a, room / w)


@njit(cache=True)
def _passes(n: int, slots: float, a: float, es: float, cs2: float, floor_s, p, slo_s: float,
            q: float, fixed: float, mean_floor: float, paper_rule: bool) -> bool:
    """The SLO test of candidate at ``n`` instances."""
    c = n * slots
    theta = 2.0 * (c - a) / (es * (1.0 + cs2))
    return meets_slo(c, a, theta, floor_s, p, slo_s, q, fixed, mean_floor, paper_rule)


@njit(cache=True)
def _size_all(rate, es, cs2, slots, floor_s, floor_prob, slo_s, q, rho_max, paper_rule):
    n_pools = rate.size
    out = np.zeros(n_pools, dtype=np.int64)
    for i in range(n_pools):
        if not rate[i] > 0.0:
            continue
        p = floor_prob[i]
        fixed, mean_floor = floor_stats(floor_s, p, slo_s)
        if (mean_floor >= slo_s) if paper_rule else (fixed >= 1.0 - q):
            out[i] = -1
            continue
        a = rate[i] * es[i]
        s = float(slots[i])
        lo = max(int(math.ceil(a / (s * rho_max) - 1e-12)), 1)
        if lo * s <= a:
            lo += 1
        e, v = es[i], cs2[i]
        if _passes(lo, s, a, e, v, floor_s, p, slo_s, q, fixed, mean_floor, paper_rule):
            out[i] = lo
            continue
        hi = 2 * lo
        for _ in range(64):
            if _passes(hi, s, a, e, v, floor_s, p, slo_s, q, fixed, mean_floor, paper_rule):
                break
            lo = hi
            hi *= 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if _passes(mid, s, a, e, v, floor_s, p, slo_s, q, fixed, mean_floor, paper_rule):
                hi = mid
            else:
                lo = mid
        out[i] = hi
    return out


@njit(cache=True)
def slot_load_kernel(mass, s1, s2, floor_mass, rate_rps: float, empty_mass: float):
    """The slot model's per-pool arithmetic (:class:`fleetopt_milp.service.SlotServiceModel`):
    ``(rate_rps, E[S], cs2, floor shares)`` from unnormalised moments, the same operations
    as its numpy form, one pool at a time."""
    n = mass.size
    rate = np.zeros(n)
    es = np.ones(n)
    cs2 = np.zeros(n)
    fp = np.zeros(floor_mass.shape)
    for i in range(n):
        if not mass[i] > empty_mass:
            continue
        es[i] = s1[i] / mass[i]
        cs2[i] = max(s2[i] * mass[i] / max(s1[i] * s1[i], 1e-300) - 1.0, 0.0)
        for k in range(floor_mass.shape[1]):
            fp[i, k] = floor_mass[i, k] / mass[i]
        rate[i] = rate_rps * mass[i]
    return rate, es, cs2, fp


def min_instances(load, slo_s: float, q: float, rho_max: float, paper_rule: bool) -> np.ndarray:
    """:func:`fleetopt_milp.sizing.min_instances` for a slot-model load (validated args)."""
    return _size_all(
        np.ascontiguousarray(load.rate_rps, dtype=np.float64),
        np.ascontiguousarray(load.mean_service_s, dtype=np.float64),
        np.ascontiguousarray(load.cs2, dtype=np.float64),
        np.ascontiguousarray(load.slots_per_instance, dtype=np.int64),
        np.ascontiguousarray(load.floor_s, dtype=np.float64),
        np.ascontiguousarray(load.floor_prob, dtype=np.float64),
        float(slo_s), float(q), float(rho_max), bool(paper_rule))
