"""Exact pool moments from prefix sums equal a class-by-class computation (docs/model.md §3-4)."""

import numpy as np
import pytest
from conftest import brute_force_pools

from fleetopt_milp.demand import MomentTable, pool_load
from fleetopt_milp.workload import load_workload


@pytest.mark.parametrize("windows,gammas,p_c,lat", [
    ((2048, 65536), (1.0,), 0.75, 0.0),
    ((2048, 65536), (1.7,), 0.75, 0.003),
    ((1024, 4096, 65536), (2.0, 1.5), 0.6, 0.0),
    ((3000, 8192, 40960), (1.3, 2.0), 1.0, 0.01),
])
def test_pool_moments_equal_brute_force(small_trace, paper_h100, windows, gammas, p_c, lat):
    table = MomentTable(small_trace, paper_h100, windows[:-1], [1.0, 1.3, 1.5, 1.7, 2.0],
                        windows[-1], lat)
    got = table.pools(np.array([windows]), np.array([gammas]), p_c)
    ref = brute_force_pools(small_trace, paper_h100, windows, gammas, p_c, lat)
    for k, (m, r) in enumerate(zip(got, ref)):
        assert m.mass[0] == pytest.approx(r["mass"], rel=1e-12, abs=1e-15)
        assert m.s1[0] == pytest.approx(r["s1"], rel=1e-10)
        assert m.s2[0] == pytest.approx(r["s2"], rel=1e-10)
        load = pool_load(m, table, [windows[k]], rate_rps=100.0)
        assert load.rate_rps[0] == pytest.approx(100.0 * r["mass"], rel=1e-12)
        es = r["s1"] / r["mass"]
        assert load.mean_service_s[0] == pytest.approx(es, rel=1e-10)
        assert load.cs2[0] == pytest.approx(r["s2"] / r["mass"] / es**2 - 1, rel=1e-8, abs=1e-12)
        for f, share in r["floors"].items():
            col = np.flatnonzero(np.isclose(table.floor_s, f, atol=1e-12, rtol=0))
            assert load.floor_prob[0, col].sum() == pytest.approx(share / r["mass"], rel=1e-9)
    # Traffic is conserved across pools.
    assert sum(m.mass[0] for m in got) == pytest.approx(1.0, rel=1e-12)


def test_output_longer_than_boundary_is_not_compressed(paper_h100):
    from fleetopt_milp.workload import workload_from_requests

    wl = workload_from_requests([100, 500, 300], [200, 1500, 600], name="t")  # totals 300/2000/900
    table = MomentTable(wl, paper_h100, [800], [1.0, 2.0, 2.5], 65536)
    short, long_ = table.pools(np.array([[800, 65536]]), np.array([[2.5]]), 1.0)
    # 900 tokens with 600 out compresses (600 < 800); 2000 with 1500 out cannot.
    assert short.mass[0] == pytest.approx(2 / 3)
    assert long_.mass[0] == pytest.approx(1 / 3)


def test_cdf_workload_moments_match_brute_force_on_a_few_windows(paper_h100):
    wl = load_workload("azure-2023-cdf")
    table = MomentTable(wl, paper_h100, [4096], [1.0, 2.0], 65536)
    got = table.pools(np.array([[4096, 65536]]), np.array([[2.0]]), 0.75)
    ref = brute_force_pools(wl, paper_h100, (4096, 65536), (2.0,), 0.75)
    for m, r in zip(got, ref):
        assert m.mass[0] == pytest.approx(r["mass"], rel=1e-12)
        assert m.s1[0] == pytest.approx(r["s1"], rel=1e-10)
        assert m.s2[0] == pytest.approx(r["s2"], rel=1e-10)
