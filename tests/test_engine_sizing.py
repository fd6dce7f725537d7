"""The compiled engine-model sizing (fleetopt_milp._engine_sizing) against the numpy path:
the same instance counts on every candidate pool the planner sizes (docs/engine.md §2)."""

import subprocess
import sys

import numpy as np
import pytest

from fleetopt_milp import PlanningTables, Scenario, load_catalog, load_workload, resolve_profile
from fleetopt_milp.planner import _size_rows
from fleetopt_milp.sizing import min_instances

CAT = load_catalog()


@pytest.mark.parametrize("profile,workload,rate,slo_ms", [
    ("H100-Llama-3-70B-tp8-vllm", "azure-2023", 1000.0, 500.0),
    ("H100-Llama-3-70B-tp8-vllm", "lmsys", 5000.0, 300.0),
    ("H100-Llama-3-70B-tp8-vllm", "mooncake-conversation", 100.0, 2000.0),
    ("paper-H100", "agent-heavy", 5000.0, 300.0),
])
@pytest.mark.parametrize("paper", [False, True])
def test_compiled_counts_equal_numpy_path_on_every_candidate(profile, workload, rate, slo_ms,
                                                             paper):
    sc = Scenario(load_workload(workload), resolve_profile(CAT, profile), rate, slo_ms,
                  service_model="engine", paper_compat=paper)
    tables = PlanningTables(sc)  # loads the compiled kernels
    load, counts = _size_rows(tables, tables.rows)
    busy = np.flatnonzero(counts > 0)[:1]
    assert load.compiled_search(busy, slo_ms * 1e-3, 0.99, sc.rho_max,
                                paper) is not None  # the compiled path ran
    ref = min_instances(load, slo_ms * 1e-3, sc.percentile, sc.rho_max, paper_rule=paper,
                        use_kernel=False)
    np.testing.assert_array_equal(counts, ref)
    # Pools of every kind: sized, unservable at any size, idle.
    assert np.count_nonzero(counts > 1) > 100


@pytest.mark.parametrize("workload,rate,tpot_ms", [
    ("azure-2023", 1000.0, 40.0),   # the TTFT SLO sizes most pools
    ("azure-2023", 1000.0, 20.0),   # the TPOT SLO sizes most pools
    ("lmsys", 2000.0, 25.0),
    ("mooncake-conversation", 100.0, 15.0),
])
def test_tpot_slo_compiled_counts_equal_the_numpy_path(workload, rate, tpot_ms):
    # With a TPOT SLO the compiled sizing is the larger of the compiled TTFT count and the
    # TPOT count: the numpy search over the union of both tests gives the same counts.
    sc = Scenario(load_workload(workload), resolve_profile(CAT, "H100-Llama-3-70B-tp8-vllm"),
                  rate, 2000.0 if workload == "mooncake-conversation" else 500.0,
                  service_model="engine", tpot_ms=tpot_ms)
    tables = PlanningTables(sc)
    load, counts = _size_rows(tables, tables.rows)
    busy = np.flatnonzero(counts > 0)
    assert load.compiled_search(busy[:1], sc.slo_ms * 1e-3, 0.99, sc.rho_max,
                                False) is not None  # the compiled path ran
    ref = min_instances(load, sc.slo_ms * 1e-3, 99.0, sc.rho_max, use_kernel=False)
    np.testing.assert_array_equal(counts, ref)
    # Both SLOs size some pools: the TPOT count is above the TTFT one on some rows.
    tpot_only = load.tpot_min_instances(busy)
    no_tpot = min_instances(load.with_tpot_slo(None), sc.slo_ms * 1e-3, 99.0, sc.rho_max,
                            use_kernel=False)[busy]
    assert np.array_equal(counts[busy], np.maximum(tpot_only, no_tpot))
    assert np.any(tpot_only > no_tpot)
    # The closed form is the threshold: the TPOT SLO holds there and fails one below.
    assert not np.any(load.extra_fails(busy, tpot_only))
    lower = tpot_only > 1
    assert np.all(load.extra_fails(busy[lower], tpot_only[lower] - 1))


def test_import_does_not_load_the_engine_kernel():
    code = ("import sys, fleetopt_milp; "
            "assert 'numba' not in sys.modules; "
            "assert 'fleetopt_milp._engine_sizing' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_tpot_poisson_forms_are_scipy_stats_to_the_bit():
    from scipy import stats

    from fleetopt_milp.engine_model import _poisson_pmf, _poisson_ppf

    mus = np.concatenate([np.geomspace(1e-3, 2000.0, 400), [0.5, 1.0, 2.0, 50.0]])
    for q in (0.5, 0.9, 0.99, 0.999, 1.0 - 1e-12):
        np.testing.assert_array_equal(_poisson_ppf(q, mus), stats.poisson.ppf(q, mus))
    for mu in mus[::20]:
        n = np.arange(int(3 * mu) + 5)
        np.testing.assert_array_equal(_poisson_pmf(n, mu), stats.poisson.pmf(n, mu))


@pytest.mark.parametrize("msteps", [1.0, 10.0])
@pytest.mark.parametrize("n,b,b_pf,tau_ms", [(1, 0.8, 0.3, 13.0), (5, 80.7, 1.91, 80.2),
                                             (24, 22.2, 0.26, 23.1), (264, 0.07, 0.01, 13.0)])
def test_compiled_floors_equal_the_numpy_floors(n, b, b_pf, tau_ms, msteps):
    # The contended floors themselves (feedback dispersion, Poisson quantiles, JSQ terms,
    # the wait for a scheduler group), not only the counts they lead to: one-chunk to
    # four-chunk prompts, a prefill-heavy step (lmsys's short pool) and a nearly idle pool.
    from fleetopt_milp import _engine_sizing
    from fleetopt_milp.engine_model import (
        _NONE_ABOVE,
        _Z,
        CONTENTION_LEVELS,
        CONTENTION_WEIGHTS,
        RESIDUAL_LEVELS,
        _contended_floors,
        contention_steps,
        jsq_busy,
    )

    chunks = np.array([1.0, 2.0, 3.0, 4.0])
    added = np.array([0.0, 0.0, 0.0, 0.05])
    share = np.array([0.48, 0.33, 0.09, 0.10])
    tau, p_s, pm_s, over, k1 = tau_ms * 1e-3, 0.0325, 0.020, 0.085, float(share @ chunks)
    own = p_s * chunks
    one = np.ones(1)
    want_fs, want_fp = _contended_floors(chunks, added, share[None, :], tau * one, own,
                                         over * one, b_pf * one, k1 * one,
                                         jsq_busy(n * one, b * one), n * one, n * b * one,
                                         pm_s * one, msteps * one, 1.3 * one)
    fs = np.empty(chunks.size * CONTENTION_LEVELS.size)
    fp = np.empty_like(fs)
    _engine_sizing._floors(float(n), tau, b, b_pf, np.arange(chunks.size), k1, own, pm_s, over,
                           msteps, 1.3, chunks, added, share, RESIDUAL_LEVELS, contention_steps(),
                           _Z, _NONE_ABOVE, CONTENTION_WEIGHTS, fs, fp)
    np.testing.assert_allclose(fs, want_fs[0], rtol=1e-13)
    np.testing.assert_allclose(fp, want_fp[0], rtol=1e-13)


def test_contention_quantiles_are_scipy_poisson_ppf():
    # The Cornish-Fisher guess corrected by steps of one is the exact quantile, from means
    # far below 1 to the thousands of chunks a long pool's prompt can meet.
    from scipy import stats

    from fleetopt_milp import _engine_sizing
    from fleetopt_milp.engine_model import (
        _Z,
        CONTENTION_LEVELS,
        TABLE_COUNTS,
        _poisson_levels,
        contention_steps,
    )

    lam = np.geomspace(1e-4, 0.7 * TABLE_COUNTS, 3001)[:, None]  # quantiles in the table
    want = stats.poisson.ppf(CONTENTION_LEVELS, lam)
    np.testing.assert_array_equal(_poisson_levels(lam), want)
    got = [[_engine_sizing._poisson_level(row, z, x) for row, z in zip(contention_steps(), _Z)]
           for x in lam[:, 0]]
    np.testing.assert_array_equal(got, want)
    # Beyond the table: the Cornish-Fisher quantile rounded up, within one of the exact.
    far = np.array([[2.0 * TABLE_COUNTS], [1e5]])
    assert np.all(np.abs(_poisson_levels(far) - stats.poisson.ppf(CONTENTION_LEVELS, far)) <= 1)


def _full_search_plans(monkeypatch, sc, tables, count):
    """The plans with every candidate sized (no branch and bound)."""
    from fleetopt_milp import planner

    run = planner._Search.run
    monkeypatch.setattr(planner._Search, "run", staticmethod(lambda t, c=None: run(t, None)))
    try:
        return planner.candidate_plans(sc, count, tables)
    finally:
        monkeypatch.setattr(planner._Search, "run", staticmethod(run))


def _summary(plans):
    return [(p.boundary_tokens, p.gamma, [a.instances for pool in p.pools
                                          for a in pool.allocations],
             {k: (v.instances, v.boundary_tokens, v.gamma, v.usd_per_hour)
              for k, v in p.baselines.items()}) for p in plans]


@pytest.mark.parametrize("profile,workload,rate,slo_ms,paper,count", [
    ("H100-Llama-3-70B-tp8-vllm", "azure-2023", 1000.0, 500.0, False, 1),
    ("H100-Llama-3-70B-tp8-vllm", "lmsys", 1000.0, 1000.0, False, 4),
    ("H100-Llama-3-70B-tp8-vllm", "agent-heavy", 200.0, 2000.0, False, 1),
    ("H100-Llama-3-70B-tp8-vllm", "mooncake-conversation", 100.0, 5000.0, False, 3),
    ("paper-H100", "agent-heavy", 5000.0, 300.0, True, 1),
    ("paper-H100", "azure-2023", 3000.0, 800.0, False, 6),
])
def test_branch_and_bound_plans_equal_sizing_every_candidate(monkeypatch, profile, workload,
                                                             rate, slo_ms, paper, count):
    from fleetopt_milp import planner

    sc = Scenario(load_workload(workload), resolve_profile(CAT, profile), rate, slo_ms,
                  service_model="engine", paper_compat=paper,
                  long_context_tokens=131072 if workload.startswith("mooncake") else 65536)
    tables = PlanningTables(sc)
    found = planner._Search.run(tables, count)
    n = found.windows.shape[0]
    assert np.count_nonzero(found.counts == -2) > n // 4  # the bound pruned candidates
    assert _summary(planner.candidate_plans(sc, count, tables)) == _summary(
        _full_search_plans(monkeypatch, sc, tables, count))
    # Every count the pruned search gives is the numpy path's.
    load, ref = _size_rows(tables, tables.rows)
    got = np.concatenate([found.counts[:, 0], found.counts[:, 1]])
    sized = got != -2
    np.testing.assert_array_equal(got[sized], ref[: 2 * n][sized])
    assert found.h_count == ref[2 * n]


def test_asking_for_more_plans_than_candidates_sizes_every_candidate():
    from fleetopt_milp import planner

    sc = Scenario(load_workload("azure-2023"), resolve_profile(CAT, "H100-Llama-3-70B-tp8-vllm"),
                  1000.0, 500.0, service_model="engine")
    tables = PlanningTables(sc)
    n = tables.windows.shape[0]
    load, ref = _size_rows(tables, tables.rows)
    want = np.stack([ref[:n], ref[n:2 * n]], axis=1)
    # No pruning is possible: every candidate is sized, whatever count the caller asks for
    # (the reports' cost-TTFT front asks for 2**30), and the kernel's ranking holds all.
    for count in (n, 1 << 30):
        np.testing.assert_array_equal(planner._Search.run(tables, count).counts, want)
    found = planner._Search.run(tables, n - 1)
    assert np.count_nonzero(found.counts == -2) < n // 2
    sized = found.counts != -2
    np.testing.assert_array_equal(found.counts[sized], want[sized])
