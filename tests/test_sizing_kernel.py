"""The compiled sizing kernel (fleetopt_milp._sizing) against the scipy/numpy reference,
exact rational arithmetic and the sizing invariants (docs/model.md §3)."""

import subprocess
import sys
from decimal import Decimal, getcontext
from fractions import Fraction
from math import factorial

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fleetopt_milp import (
    PlanningTables,
    PoolLoad,
    Queue,
    Scenario,
    _sizing,
    load_catalog,
    load_workload,
    resolve_profile,
)
from fleetopt_milp.planner import _size_rows
from fleetopt_milp.queueing import erlang_c, ttft_miss_probability
from fleetopt_milp.service import SLOT
from fleetopt_milp.sizing import min_instances


def exact_erlang_c(c: int, a: Fraction) -> float:
    top = a**c / factorial(c) * Fraction(c) / (c - a)
    return float(top / (sum(a**k / factorial(k) for k in range(c)) + top))


@pytest.mark.parametrize("c,a", [(1, Fraction(1, 2)), (2, Fraction(1)), (10, Fraction(8)),
                                 (50, Fraction(45)), (120, Fraction(100)), (300, Fraction(299)),
                                 (400, Fraction(301, 1))])
def test_kernel_erlang_c_matches_exact_rationals(c, a):
    assert _sizing.erlang_c_kernel(float(c), float(a)) == pytest.approx(exact_erlang_c(c, a),
                                                                        rel=1e-11)


def test_kernel_erlang_c_textbook_values():
    assert _sizing.erlang_c_kernel(1.0, 0.7) == pytest.approx(0.7, rel=1e-13)
    assert _sizing.erlang_c_kernel(2.0, 1.0) == pytest.approx(1 / 3, rel=1e-13)
    assert _sizing.erlang_c_kernel(5.0, 4.0) == pytest.approx(0.55411, abs=5e-6)


def _log_pmf_40_digits(c: int, a: float) -> float:
    """``c ln a - a - ln c!`` in 40-digit decimals (Stirling's series for ``ln c!``, whose
    terms past ``1 / (1260 c^5)`` are below 1e-40 for ``c >= 1000``)."""
    getcontext().prec = 40
    n, x = Decimal(c), Decimal(a)
    two_pi = 2 * Decimal("3.141592653589793238462643383279502884197")
    ln_fact = ((n + Decimal("0.5")) * n.ln() - n + two_pi.ln() / 2 + 1 / (12 * n)
               - 1 / (360 * n**3) + 1 / (1260 * n**5))
    return float(n * x.ln() - x - ln_fact)


@pytest.mark.parametrize("c,a", [(1, 0.3), (16, 9.0), (15, 14.5), (40, 20.0)])
def test_log_poisson_pmf_matches_scipy_for_small_c(c, a):
    want = stats.poisson.logpmf(c, a)
    assert _sizing.log_poisson_pmf(float(c), a) == pytest.approx(want, rel=1e-13, abs=1e-13)


@pytest.mark.parametrize("c,a", [(1000, 850.0), (50_000, 49_000.0), (10**6, 999_000.0),
                                 (10**6, 2e5)])
def test_log_poisson_pmf_to_the_last_bits_for_large_c(c, a):
    # Loader's form keeps its accuracy where c log a - a - lgamma(c + 1) cancels (scipy's
    # logpmf is off by 1.3e-10 at c = 10^6).
    assert _sizing.log_poisson_pmf(float(c), a) == pytest.approx(_log_pmf_40_digits(c, a),
                                                                 rel=1e-14, abs=1e-13)


@settings(max_examples=200, deadline=None)
@given(c=st.integers(1, 20_000), load=st.floats(0.01, 0.9999))
def test_kernel_erlang_c_agrees_with_scipy(c, load):
    a = load * c
    assert _sizing.erlang_c_kernel(float(c), a) == pytest.approx(erlang_c(c, a), rel=1e-9)


def test_kernel_erlang_c_at_a_million_servers():
    c, a = 10**6, 999_000.0
    assert _sizing.erlang_c_kernel(float(c), a) == pytest.approx(erlang_c(c, a), rel=1e-9)


@settings(max_examples=100, deadline=None)
@given(c=st.integers(2, 2000), load=st.floats(0.05, 0.99), es=st.floats(0.01, 5.0),
       cs2=st.floats(0.05, 5.0), slo=st.floats(0.01, 3.0), q=st.sampled_from([0.5, 0.9, 0.99]),
       floors=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=8),
       weights=st.lists(st.floats(0.0, 1.0), min_size=8, max_size=8))
def test_queue_figures_agree_with_the_numpy_closed_forms(c, load, es, cs2, slo, q, floors,
                                                         weights):
    fs = np.array(floors)
    w = np.array(weights[: fs.size]) + 1e-3
    fp = w / w.sum()
    a = load * c
    queue = Queue(c, a, es, cs2, fs, fp)
    ref = ttft_miss_probability(slo, c, a, es, cs2, fs, fp)[0]
    assert queue.miss(slo) == pytest.approx(ref, rel=1e-9, abs=1e-15)
    t = queue.ttft_quantile_s(q)
    assert ttft_miss_probability(t + 1e-9, c, a, es, cs2, fs, fp)[0] <= (1 - q) + 1e-9
    if t > 1e-9:
        assert ttft_miss_probability(t * (1 - 1e-9) - 1e-12, c, a, es, cs2, fs, fp)[0] > \
            (1 - q) - 1e-9


def _random_load(rng, n, m):
    grid = np.sort(rng.uniform(0.0, 0.6, m))
    fp = rng.random((n, m)) * (rng.random((n, m)) < 0.7)
    fp[:, 0] += 1e-3
    return PoolLoad(rng.uniform(0.1, 3000, n) * (rng.random(n) < 0.95),
                    rng.uniform(0.01, 20, n), rng.uniform(0.0, 4, n),
                    rng.integers(1, 600, n), grid, fp / fp.sum(1, keepdims=True))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), slo=st.floats(0.05, 1.5),
       pct=st.sampled_from([50.0, 90.0, 99.0, 99.9]), rho=st.floats(0.3, 1.0),
       paper=st.booleans())
def test_kernel_counts_equal_numpy_path(seed, slo, pct, rho, paper):
    load = _random_load(np.random.default_rng(seed), 64, 6)
    got = min_instances(load, slo, pct, rho, paper_rule=paper)
    want = min_instances(load, slo, pct, rho, paper_rule=paper, use_kernel=False)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("paper", [False, True])
def test_kernel_counts_equal_numpy_path_on_every_planner_candidate(paper):
    prof = resolve_profile(load_catalog(), "paper-H100")
    sc = Scenario(load_workload("azure-2023"), prof, 1000.0, 500.0, paper_compat=paper)
    tables = PlanningTables(sc)
    load, counts = _size_rows(tables, tables.rows)
    ref = min_instances(load, 0.5, 99.0, 0.85, paper_rule=paper, use_kernel=False)
    np.testing.assert_array_equal(counts, ref)
    assert np.count_nonzero(counts > 0) > 1000


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), slo=st.floats(0.05, 1.5), factor=st.floats(1.0, 4.0),
       paper=st.booleans())
def test_more_traffic_never_fewer_and_looser_slo_never_more(seed, slo, factor, paper):
    load = _random_load(np.random.default_rng(seed), 32, 5)
    base = min_instances(load, slo, 99.0, 0.85, paper_rule=paper)
    more = min_instances(load.scaled(factor), slo, 99.0, 0.85, paper_rule=paper)
    looser = min_instances(load, slo * factor, 99.0, 0.85, paper_rule=paper)
    served = base >= 0
    assert np.all(more[served & (more >= 0)] >= base[served & (more >= 0)])
    assert np.all((more >= 0) <= served)  # more traffic cannot make a pool servable
    assert np.all(looser[served] <= base[served]) and np.all(looser[served] >= 0)


def test_slot_load_compiled_form_is_the_numpy_form(monkeypatch):
    prof = resolve_profile(load_catalog(), "paper-H100")
    tables = PlanningTables(Scenario(load_workload("azure-2023"), prof, 500.0, 400.0))
    m = tables.rows.moments(0.75)
    compiled = SLOT.pool_load(m, tables.table, tables.rows.window_tokens, 500.0)
    monkeypatch.setattr("fleetopt_milp.service.compiled_kernels", lambda: None)
    ref = SLOT.pool_load(m, tables.table, tables.rows.window_tokens, 500.0)
    for f in ("rate_rps", "mean_service_s", "cs2", "slots_per_instance", "floor_s",
              "floor_prob"):
        np.testing.assert_array_equal(getattr(compiled, f), getattr(ref, f))
    assert np.count_nonzero(ref.rate_rps == 0) > 0  # empty pools take the other branch


def test_import_does_not_load_numba():
    code = "import sys, fleetopt_milp; assert 'numba' not in sys.modules, 'numba imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def _rounded(obj):
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items() if k != "planner_ms"}
    if isinstance(obj, (list, tuple)):
        return [_rounded(v) for v in obj]
    if isinstance(obj, float) and np.isfinite(obj) and obj != 0.0:
        return float(f"{obj:.9g}")
    return obj


@pytest.mark.parametrize("name,paper", [("azure-2023", False), ("lmsys", True),
                                        ("agent-heavy", False)])
def test_numpy_and_compiled_forms_give_the_same_plan(name, paper, monkeypatch):
    from fleetopt_milp import plan

    prof = resolve_profile(load_catalog(), "paper-H100")
    sc = Scenario(load_workload(name), prof, 1000.0, 500.0, paper_compat=paper,
                  compression_latency_ms=20.0 if name == "lmsys" else 0.0)
    compiled = plan(sc, PlanningTables(sc)).to_dict()
    for mod in ("queueing", "service", "sizing"):
        monkeypatch.setattr(f"fleetopt_milp.{mod}.compiled_kernels", lambda: None)
    assert _rounded(plan(sc).to_dict()) == _rounded(compiled)


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 3000), load=st.floats(0.0, 0.999), es=st.floats(0.01, 5.0),
       cs2=st.floats(0.0, 5.0), slo=st.floats(0.01, 3.0), q=st.sampled_from([0.5, 0.9, 0.99]),
       floors=st.lists(st.floats(0.0, 2.0), min_size=1, max_size=8),
       weights=st.lists(st.floats(0.0, 1.0), min_size=8, max_size=8))
def test_queue_compiled_and_numpy_forms_agree(c, load, es, cs2, slo, q, floors, weights):
    fs = np.array(floors)
    w = np.array(weights[: fs.size]) + 1e-3
    x = Queue(c, load * c, es, cs2, fs, w / w.sum())
    compiled = (x.erlang_c, x.miss(slo), x.ttft_quantile_s(q))
    import fleetopt_milp.queueing as qm

    saved = qm.compiled_kernels
    qm.compiled_kernels = lambda: None
    try:
        y = Queue(c, load * c, es, cs2, fs, w / w.sum())
        ref = (y.erlang_c, y.miss(slo), y.ttft_quantile_s(q))
    finally:
        qm.compiled_kernels = saved
    assert compiled == pytest.approx(ref, rel=1e-9, abs=1e-14)
