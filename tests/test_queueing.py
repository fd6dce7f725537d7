"""Erlang C, the M/G/c wait tail and minimum instances (docs/model.md §3)."""

from fractions import Fraction
from math import exp, factorial, log

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetopt_milp.queueing import (
    PoolLoad,
    erlang_b,
    erlang_c,
    min_instances,
    ttft_miss_probability,
    ttft_quantile_s,
    wait_quantile_s,
    wait_tail,
)


def exact_erlang_c(c: int, a: Fraction) -> Fraction:
    """Erlang C in rational arithmetic: the textbook sum, no rounding."""
    top = a**c / factorial(c) * Fraction(c) / (c - a)
    return top / (sum(a**k / factorial(k) for k in range(c)) + top)


@pytest.mark.parametrize("c,a", [(1, Fraction(1, 2)), (2, Fraction(1)), (10, Fraction(8)),
                                 (50, Fraction(45)), (120, Fraction(100)), (300, Fraction(299))])
def test_erlang_c_matches_exact_rational_arithmetic(c, a):
    assert erlang_c(c, float(a)) == pytest.approx(float(exact_erlang_c(c, a)), rel=1e-11)


def test_erlang_c_known_values():
    # M/M/1: C = rho. M/M/2 at a = 1: C = 1/3. Textbook table: c = 5, a = 4 -> 0.5541.
    assert erlang_c(1, 0.7) == pytest.approx(0.7, rel=1e-13)
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3, rel=1e-13)
    assert erlang_c(5, 4.0) == pytest.approx(0.55411, abs=5e-6)
    # Unstable and idle queues.
    assert erlang_c(10, 10.0) == 1.0 and erlang_c(10, 12.0) == 1.0
    assert erlang_c(10, 0.0) == 0.0


def test_erlang_b_recursion_at_a_million_servers():
    # Erlang B recursion B(k) = a B(k-1) / (k + a B(k-1)) is stable; compare at c = 10^6.
    c, a = 1_000_000, 999_000.0
    b = 1.0
    for k in range(1, c + 1):
        b = a * b / (k + a * b)
    assert erlang_b(c, a) == pytest.approx(b, rel=1e-9)
    rho = a / c
    assert erlang_c(c, a) == pytest.approx(b / (1 - rho * (1 - b)), rel=1e-9)


def test_naive_formula_overflow_region_is_finite():
    # a^c / c! overflows at a = 200, c = 230 (docs/solver.md); the log form does not.
    val = erlang_c(230, 200.0)
    assert 0 < val < 1
    assert erlang_c(np.array([230, 1000, 10**6]), np.array([200.0, 900.0, 9.9e5])).shape == (3,)


def test_wait_tail_is_exact_for_mm1_and_mmc():
    lam, mu = 0.8, 1.0  # M/M/1: P(Wq > t) = rho exp(-(mu - lam) t)
    for t in (0.0, 1.0, 5.0):
        assert wait_tail(t, 1, lam / mu, 1 / mu, 1.0) == pytest.approx(0.8 * exp(-0.2 * t))
    c, lam, mu = 4, 3.0, 1.0  # M/M/c: P(Wq > t) = C exp(-(c mu - lam) t)
    cc = float(exact_erlang_c(4, Fraction(3)))
    assert wait_tail(2.0, c, lam / mu, 1 / mu, 1.0) == pytest.approx(cc * exp(-2.0), rel=1e-12)
    # Quantile inverts the tail: P99 of M/M/1 at rho = 0.8 is ln(0.8/0.01)/0.2.
    assert wait_quantile_s(0.99, 1, 0.8, 1.0, 1.0) == pytest.approx(log(80) / 0.2)
    assert wait_quantile_s(0.99, 10, 2.0, 1.0, 1.0) == 0.0  # C < 1%: P99 wait is zero


def test_ttft_miss_sums_classes_and_counts_hopeless_ones_in_full():
    c, a, es, cs2 = 4, 3.0, 1.0, 1.0
    cc = float(exact_erlang_c(4, Fraction(3)))
    floors = np.array([0.1, 0.5, 3.0])
    probs = np.array([0.5, 0.3, 0.2])
    slo = 2.0
    expect = 0.5 * cc * exp(-1.0 * 1.9) + 0.3 * cc * exp(-1.0 * 1.5) + 0.2
    got = ttft_miss_probability(slo, c, a, es, cs2, floors, probs)
    assert got[0] == pytest.approx(expect, rel=1e-12)
    q = ttft_quantile_s(0.7, c, a, es, cs2, floors, probs)
    assert ttft_miss_probability(q, c, a, es, cs2, floors, probs)[0] == pytest.approx(0.3, abs=1e-6)


def _load(rate, es=0.5, cs2=1.0, slots=4, floors=(0.01,), probs=(1.0,)):
    rate = np.atleast_1d(np.asarray(rate, float))
    n = rate.size
    return PoolLoad(rate, np.full(n, es), np.full(n, cs2), np.full(n, slots),
                    np.asarray(floors, float), np.tile(np.asarray(probs, float), (n, 1)))


def _brute_min(rate, es, cs2, slots, slo, floors, probs, q=0.99, rho=0.85):
    a = rate * es
    for n in range(1, 10_000):
        c = n * slots
        if a / c > rho or c <= a:
            continue
        if ttft_miss_probability(slo, c, a, es, cs2, floors, probs)[0] <= 1 - q:
            return n
    raise AssertionError


@pytest.mark.parametrize("rate,es,cs2,slots,slo", [(10, 0.5, 1.0, 4, 0.2), (300, 2.0, 0.3, 16, 0.5),
                                                  (3, 1.5, 2.5, 1, 1.0), (1000, 8.0, 0.8, 16, 0.3)])
def test_min_instances_equals_brute_force(rate, es, cs2, slots, slo):
    floors, probs = np.array([0.01, 0.1]), np.array([0.9, 0.1])
    got = min_instances(_load(rate, es, cs2, slots, floors, probs), slo)
    assert got[0] == _brute_min(rate, es, cs2, slots, slo, floors, probs)


def test_min_instances_flags_prefill_bound_pools_and_idles_empty_ones():
    load = _load([10.0, 0.0, 10.0], floors=(0.1, 0.6), probs=(0.98, 0.02))
    n = min_instances(load, slo_s=0.5)
    assert n[0] == -1 and n[1] == 0 and n[2] == -1
    ok = min_instances(_load(10.0, floors=(0.1, 0.6), probs=(0.995, 0.005)), slo_s=0.5)
    assert ok[0] > 0


@settings(max_examples=60, deadline=None)
@given(rate=st.floats(0.5, 2000), es=st.floats(0.05, 20), cs2=st.floats(0.05, 4),
       slots=st.integers(1, 256), slo=st.floats(0.05, 2.0), factor=st.floats(1.0, 3.0))
def test_min_instances_monotone_in_rate_and_slo(rate, es, cs2, slots, slo, factor):
    base = min_instances(_load(rate, es, cs2, slots), slo)[0]
    more = min_instances(_load(rate * factor, es, cs2, slots), slo)[0]
    looser = min_instances(_load(rate, es, cs2, slots), slo * factor)[0]
    assert more >= base
    assert looser <= base
    # The returned size meets both constraints and one fewer instance does not.
    a = rate * es
    assert a / (base * slots) <= 0.85 + 1e-12
    if base > 1:
        c = (base - 1) * slots
        fails_util = a / c > 0.85
        fails_slo = c <= a or ttft_miss_probability(slo, c, a, es, cs2, [0.01], [1.0])[0] > 0.01
        assert fails_util or fails_slo


def test_paper_rule_uses_p99_wait_plus_mean_prefill():
    load = _load(100.0, es=1.0, cs2=1.0, slots=8, floors=(0.1, 0.3), probs=(0.5, 0.5))
    n = min_instances(load, slo_s=0.4, paper_rule=True)[0]
    w = wait_quantile_s(0.99, n * 8, 100.0, 1.0, 1.0)
    assert w + 0.2 <= 0.4
    w_less = wait_quantile_s(0.99, (n - 1) * 8, 100.0, 1.0, 1.0)
    assert w_less + 0.2 > 0.4 or 100.0 / ((n - 1) * 8) > 0.85


@settings(max_examples=80, deadline=None)
@given(c=st.integers(2, 400), load=st.floats(0.05, 0.97), es=st.floats(0.01, 5.0),
       cs2=st.floats(0.05, 5.0), q=st.sampled_from([0.5, 0.9, 0.99, 0.999]),
       floors=st.lists(st.floats(0.001, 2.0), min_size=1, max_size=6),
       weights=st.lists(st.floats(0.01, 1.0), min_size=6, max_size=6))
def test_ttft_quantile_is_the_smallest_time_meeting_the_target(c, load, es, cs2, q, floors,
                                                               weights):
    a = load * c
    fs = np.array(floors)
    fp = np.array(weights[: fs.size]) / sum(weights[: fs.size])
    t = ttft_quantile_s(q, c, a, es, cs2, fs, fp)

    def miss(x):
        return ttft_miss_probability(x, c, a, es, cs2, fs, fp)[0]

    # The tail jumps down just after each floor, so t is an infimum: met right after it.
    assert miss(t + 1e-9) <= (1 - q) + 1e-9
    # Just before t the target is not yet met, unless t = 0.
    if t > 1e-9:
        assert miss(t * (1 - 1e-9) - 1e-12) > (1 - q) - 1e-9
