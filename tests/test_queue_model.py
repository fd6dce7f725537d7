"""The queue records (Queue, QueueMix, PoolFigures), PoolLoad operations and the service
model seam, against closed forms (docs/model.md §3)."""

from dataclasses import dataclass, replace
from fractions import Fraction
from math import exp, factorial, log

import numpy as np
import pytest

from fleetopt_milp import (
    FleetOptError,
    PoolLoad,
    Queue,
    QueueBatch,
    QueueMix,
    Scenario,
    load_catalog,
    load_workload,
    plan,
    pool_figures,
    resolve_profile,
    service_model,
)
from fleetopt_milp.demand import MomentTable
from fleetopt_milp.service import SLOT
from fleetopt_milp.sizing import min_instances


def exact_erlang_c(c: int, a: Fraction) -> float:
    top = a**c / factorial(c) * Fraction(c) / (c - a)
    return float(top / (sum(a**k / factorial(k) for k in range(c)) + top))


def mmc(c=4, a=3.0, es=1.0, floors=(0.0,), probs=(1.0,)) -> Queue:
    return Queue(c, a, es, 1.0, np.array(floors, float), np.array(probs, float))


def test_queue_is_exact_for_mmc():
    # M/M/c with no floor: TTFT = wait, P(W > t) = C exp(-(c mu - lambda) t).
    q = mmc()
    cc = exact_erlang_c(4, Fraction(3))
    assert q.erlang_c == pytest.approx(cc, rel=1e-12)
    assert q.utilization == 0.75 and q.stable and q.rate_rps == 3.0
    assert q.miss(0.5) == pytest.approx(cc * exp(-0.5), rel=1e-12)
    assert q.wait_tail(2.0) == pytest.approx(cc * exp(-2.0), rel=1e-12)
    assert q.ttft_quantile_s(0.99) == pytest.approx(log(cc / 0.01), rel=1e-12)
    assert q.wait_quantile_s(0.99) == pytest.approx(log(cc / 0.01), rel=1e-12)
    assert q.mean_wait_s == pytest.approx(cc / 1.0, rel=1e-12)  # M/M/c: C / (c mu - lambda)
    # Textbook Erlang C: c = 5, a = 4 -> 0.5541.
    assert mmc(5, 4.0).erlang_c == pytest.approx(0.55411, abs=5e-6)


def test_unstable_and_idle_queues():
    bad = mmc(3, 3.0)
    assert not bad.stable and bad.miss(10.0) == 1.0 and bad.ttft_quantile_s(0.99) == np.inf
    assert bad.mean_wait_s == np.inf
    idle = mmc(3, 0.0, floors=(0.1, 0.6), probs=(0.9, 0.1))
    assert idle.miss(0.5) == pytest.approx(0.1) and idle.utilization == 0.0
    assert Queue(0, 1.0, 1.0, 1.0, np.zeros(1), np.ones(1)).utilization == np.inf


def test_mixture_of_one_is_the_queue_and_twins_agree_with_closed_form():
    q = mmc(6, 4.0, es=0.5, floors=(0.05, 0.3), probs=(0.7, 0.3))
    one = q.alone()
    assert one.ttft_quantile_s(0.99) == q.ttft_quantile_s(0.99)
    twins = QueueMix((q, q), (0.5, 0.5))  # bisection; the same distribution
    assert twins.ttft_quantile_s(0.99) == pytest.approx(q.ttft_quantile_s(0.99), rel=1e-12)
    assert twins.wait_quantile_s(0.9) == pytest.approx(q.wait_quantile_s(0.9), rel=1e-12)
    assert twins.miss(0.4) == pytest.approx(q.miss(0.4), rel=1e-14)
    assert twins.utilization == q.utilization and twins.servers == 12


def test_mixture_quantile_is_the_smallest_time_meeting_the_target():
    a = mmc(6, 5.0, es=0.5, floors=(0.05, 0.3), probs=(0.7, 0.3))
    b = mmc(20, 12.0, es=2.0, floors=(0.1,), probs=(1.0,))
    mix = QueueMix.by_rate([a, b])
    assert mix.shares == pytest.approx((10 / 16, 6 / 16))
    for q in (0.5, 0.9, 0.99):
        t = mix.ttft_quantile_s(q)
        assert mix.miss(t) <= 1 - q + 1e-12
        assert mix.miss(t * (1 - 1e-9)) > 1 - q - 1e-12
    assert mix.utilization == pytest.approx(17.0 / 26.0)  # busy slots over slots


def test_pool_figures_rules():
    q = mmc(6, 4.0, es=0.5, floors=(0.05, 0.3), probs=(0.7, 0.3))
    tail = pool_figures(q, 0.4, 99.0)
    paper = pool_figures(q, 0.4, 99.0, paper_rule=True)
    assert tail.ttft_ms == pytest.approx(q.ttft_quantile_s(0.99) * 1e3)
    assert tail.ttft_ms == tail.p99_ttft_ms == tail.ttft_at_percentile_ms
    assert paper.ttft_ms == pytest.approx((q.wait_quantile_s(0.99) + 0.7 * 0.05 + 0.3 * 0.3)
                                          * 1e3)
    assert paper.paper_p99_ttft_ms == paper.ttft_ms and tail.slo_miss_share == q.miss(0.4)
    p90 = pool_figures(q, 0.4, 90.0)
    assert p90.ttft_ms == pytest.approx(q.ttft_quantile_s(0.9) * 1e3)
    assert p90.p99_ttft_ms == tail.p99_ttft_ms
    empty = pool_figures(mmc(6, 0.0), 0.4, 99.0)
    assert empty.ttft_ms == 0.0 and empty.slo_miss_share == 0.0


def _load(n=3, grid=(0.01, 0.1)):
    rng = np.random.default_rng(1)
    fp = rng.random((n, len(grid)))
    return PoolLoad(rng.uniform(5, 50, n), rng.uniform(0.1, 2, n), rng.uniform(0.2, 2, n),
                    rng.integers(2, 40, n), np.array(grid), fp / fp.sum(1, keepdims=True))


def test_pool_load_take_scale_concat_keep_every_queue():
    x, y = _load(3), _load(2, grid=(0.05, 0.1, 0.4))
    cat = PoolLoad.concat([x, y])
    assert len(cat) == 5 and cat.floor_s.tolist() == [0.01, 0.05, 0.1, 0.4]
    for i, (src, j) in enumerate([(x, 0), (x, 1), (x, 2), (y, 0), (y, 1)]):
        a, b = cat.queue(i, 7), src.queue(j, 7)
        assert (a.servers, a.offered_load) == (b.servers, b.offered_load)
        assert a.miss(0.2) == pytest.approx(b.miss(0.2), rel=1e-14)
        assert a.mean_floor_s == pytest.approx(b.mean_floor_s, rel=1e-14)
    sub = cat.take(np.array([4, 0]))
    assert sub.queue(0, 3).offered_load == cat.queue(4, 3).offered_load
    half = x.scaled(0.5)
    assert np.allclose(half.offered_load, x.offered_load / 2)
    assert x.queue(1, 5, share=0.5).offered_load == pytest.approx(x.offered_load[1] / 2)
    with pytest.raises(ValueError):
        PoolLoad(x.rate_rps, x.mean_service_s, x.cs2, x.slots_per_instance,
                 np.tile(x.floor_s, (3, 1)), x.floor_prob)


def test_at_gives_one_shape():
    x = _load(3)
    b = x.at(np.array([0, 2]), np.array([4, 5]))
    assert isinstance(b, QueueBatch) and b.floor_s.shape == b.floor_prob.shape == (2, 2)
    assert b.servers.tolist() == [4 * x.slots_per_instance[0], 5 * x.slots_per_instance[2]]


def test_slot_model_is_the_exact_moments():
    cat = load_catalog()
    prof = resolve_profile(cat, "paper-H100")
    wl = load_workload("lmsys")
    t = MomentTable(wl, prof, [2048], [1.0], 65536)
    m = t.pools(np.array([[2048, 65536]]), np.array([[1.0]]), 0.0)
    ld = service_model("slot").pool_load(m[1], t, [65536], 100.0)
    lin, lout = wl.input_tokens, wl.output_tokens
    sel = (lin + lout > 2048) & (lin + lout <= 65536)
    s = prof.service_s(lin[sel], lout[sel], 65536)
    p = wl.weights[sel] / wl.weights[sel].sum()
    es = float(np.dot(p, s))
    assert ld.mean_service_s[0] == pytest.approx(es, rel=1e-12)
    assert ld.cs2[0] == pytest.approx(float(np.dot(p, s * s)) / es**2 - 1, rel=1e-9)
    assert ld.rate_rps[0] == pytest.approx(100.0 * wl.weights[sel].sum(), rel=1e-12)
    assert SLOT.name == "slot"
    with pytest.raises(FleetOptError, match="service_model"):
        service_model("nope")
    sc = Scenario(wl, prof, 100.0, 500.0, service_model="nope")
    with pytest.raises(FleetOptError, match="service_model"):
        plan(sc)


@dataclass(frozen=True)
class _SlowerWhenSmall(PoolLoad):
    """A toy load-dependent model: ``E[S] (1 + 2 / n)`` on ``n`` instances."""

    load_dependent = True

    def at(self, idx, instances):
        b = super().at(idx, instances)
        f = 1.0 + 2.0 / np.asarray(instances, float)
        return replace(b, offered_load=b.offered_load * f, mean_service_s=b.mean_service_s * f)

    def lower_bound_instances(self, idx, rho_max):
        return np.ones(np.size(idx), dtype=np.int64)


def test_load_dependent_model_plugs_into_the_sizing():
    base = _load(4)
    dep = _SlowerWhenSmall(*(getattr(base, f) for f in ("rate_rps", "mean_service_s", "cs2",
                                                        "slots_per_instance", "floor_s",
                                                        "floor_prob")))
    got = min_instances(dep, 0.5, 99.0, 0.85)
    for i in range(4):
        for n in range(1, 10_000):
            q = dep.queue(i, n)
            if q.utilization <= 0.85 and q.stable and q.miss(0.5) <= 0.01:
                break
        assert got[i] == n
        assert got[i] > min_instances(base.take([i]), 0.5, 99.0, 0.85)[0]


def test_redundancy_floor_lifts_only_busy_servable_pools():
    from fleetopt_milp.sizing import redundancy_floor

    counts = np.array([[0, 1], [3, -1], [0, 5]])
    busy = np.array([True, True, False])[:, None]
    got = redundancy_floor(counts, busy, 2)
    assert got.tolist() == [[2, 2], [3, -1], [0, 5]]
    assert counts.tolist() == [[0, 1], [3, -1], [0, 5]]  # the input is not changed


@pytest.mark.parametrize("field,value", [("rate_rps", np.nan), ("rate_rps", -1.0),
                                         ("mean_service_s", np.inf), ("cs2", np.nan),
                                         ("slots_per_instance", 0), ("rate_rps", 1e22)])
@pytest.mark.parametrize("use_kernel", [True, False])
def test_min_instances_refuses_loads_it_cannot_size(field, value, use_kernel):
    load = _load(3)
    arr = getattr(load, field).copy()
    arr[1] = value
    bad = replace(load, **{field: arr})
    with pytest.raises(FleetOptError, match="pool load"):
        min_instances(bad, 0.5, 99.0, 0.85, use_kernel=use_kernel)
