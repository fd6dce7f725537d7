"""The engine service model (docs/engine.md §2): exact formulas, the moment sums it reads,
agreement with the engine simulation, and sizing under a TPOT SLO."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from fleetopt_milp.demand import MomentTable
from fleetopt_milp.engine_model import ENGINE, operating_point, tpot_figures, tpot_tail
from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.hardware import load_catalog
from fleetopt_milp.planner import plan as make_plan
from fleetopt_milp.scenario import Scenario
from fleetopt_milp.simulator import engine_times
from fleetopt_milp.sizing import min_instances
from fleetopt_milp.workload import load_workload, workload_from_requests


@pytest.fixture(scope="module")
def cat():
    return load_catalog()


@pytest.fixture(scope="module")
def prof(cat):
    return cat.profile("H100-Llama-3-70B-tp8-vllm")


def test_operating_point_solves_littles_law_exactly():
    # W = 10 ms, E[g] = 50 ms, E[a] = 100 iterations, 4 req/s on 1 instance: x = 0.2;
    # a decoding sequence's own cost 0.3 ms per step.
    op = operating_point(4.0, 1, 0.010, 0.050, 100.0, 100.0 * 500, 256, 1e6,
                         decode_cost_s=0.0003)
    assert op.step_s == pytest.approx(0.010 / 0.8)
    # The batch of an average step, and the time-average batch: a request holds its slot
    # for its 100 steps of 12.5 ms plus its own 50 ms, 1.3 s, at 4 req/s.
    assert op.step_batch == pytest.approx(4.0 * 100 * 0.0125)
    assert op.mean_batch == pytest.approx(4.0 * (100 * 0.0125 + 0.050))
    assert op.per_seq_s == pytest.approx(0.050 / 100)
    assert op.mean_tpot_s == pytest.approx(0.0125 + 0.0003)
    # The fixed point: the step is W plus what the average step's batch adds.
    assert op.step_s == pytest.approx(0.010 + op.step_batch * op.per_seq_s)
    # KV admission: 1e6 tokens / 500 tokens per live sequence = 2000 > 256: the cap binds.
    assert op.batch_cap == 256
    assert operating_point(4.0, 1, 0.010, 0.050, 100.0, 100.0 * 500, 256, 50_000,
                           decode_cost_s=0.0).batch_cap == 100
    # Unstable at lambda E[g] >= 1; two instances halve the load each.
    assert not operating_point(20.0, 1, 0.010, 0.050, 100.0, 1.0, 256, 1e6,
                               decode_cost_s=0.0).stable
    two = operating_point(20.0, 2, 0.010, 0.050, 100.0, 1.0, 256, 1e6, decode_cost_s=0.0)
    assert two.stable and two.step_s == pytest.approx(0.010 / 0.5)


def test_tpot_tail_is_poisson_in_the_batch():
    from scipy import stats

    w, d, g, b = 0.010, 0.0004, 0.001, 7.3
    # TPOT > W + d + g k + eps  <=>  N > k
    for k in (0, 3, 7, 12):
        t = w + d + g * k + 1e-7
        assert tpot_tail(t, w, d, g, b, 1000) == pytest.approx(stats.poisson.sf(k, b))
    assert tpot_tail(w + d * 0.5, w, d, g, b, 1000) == 1.0
    assert tpot_tail(w + d + g * 9 + 1e-7, w, d, g, b, 10) == 0.0  # the batch cannot exceed 10


def test_engine_sums_match_the_requests(prof):
    rng = np.random.default_rng(0)
    lin = rng.integers(1, 3000, 400)
    lout = rng.integers(1, 800, 400)
    wl = workload_from_requests(lin, lout)
    table = MomentTable(wl, prof, [2048], [1.0], 8192)
    m = table.plain(0, 8192, 8192)
    k = -(-wl.input_tokens // prof.chunk_tokens)
    li, lo = wl.input_tokens.astype(float), wl.output_tokens.astype(float)
    q = lo * li + lo * (lo + 1) / 2
    # Prefill charged pro rata: H per chunk plus p per prompt token (docs/engine.md §2).
    g = (prof.h_ms * 1e-3 * k + prof.prefill_ms_per_token * 1e-3 * li
         + prof.seq_ms * 1e-3 * (k + lo) + prof.h_ms * 1e-3 / prof.calib_tokens * q)
    p = wl.weights
    assert m.iters[0] == pytest.approx(np.sum(p * (k + lo)))
    assert m.iters2[0] == pytest.approx(np.sum(p * (k + lo) ** 2))
    assert m.step_cost_s[0] == pytest.approx(np.sum(p * g))
    assert m.kv_token_steps[0] == pytest.approx(np.sum(p * (k * li + q)))
    assert m.chunks[0] == pytest.approx(np.sum(p * k))
    assert m.prefill_tokens[0] == pytest.approx(np.sum(p * li))
    # Per chunk the prompt tokens it carries: k - 1 whole chunks and the rest.
    c = prof.chunk_tokens
    sq = (k - 1) * c * c + (li - (k - 1) * c) ** 2
    assert m.prefill_sq_tokens[0] == pytest.approx(np.sum(p * sq))
    # The spread of a chunk's cost H + p x: E[c^2] / E[c]^2 over the pool's chunks.
    ld = ENGINE.pool_load(m, table, [8192], 1.0)
    h, pt = prof.h_ms, prof.prefill_ms_per_token
    ek = np.sum(p * k)
    ex, ex2 = np.sum(p * li) / ek, np.sum(p * sq) / ek
    assert ld.chunk_disp[0] == pytest.approx((h * h + 2 * h * pt * ex + pt * pt * ex2)
                                             / (h + pt * ex) ** 2)
    assert ld.chunk_disp[0] > 1.0
    # Pools add up: (0, 2048] + (2048, 8192] = everything.
    parts = table.plain(0, 2048, 8192) + table.plain(2048, 8192, 8192)
    for f in ("iters", "iters2", "step_cost_s", "kv_token_steps", "chunks"):
        assert np.allclose(getattr(parts, f), getattr(m, f))


def _simulated(prof, wl, rate, window, n_inst, n=40_000, seed=3):
    rng = np.random.default_rng(seed)
    idx = rng.choice(wl.weights.size, n, p=wl.weights)
    arr = np.cumsum(rng.exponential(1.0 / rate, n))
    res = engine_times(arr, wl.input_tokens[idx], wl.output_tokens[idx], prof, window, n_inst)
    keep = slice(n // 5, None)
    lout = wl.output_tokens[idx][keep]
    tpot = ((res.finish_s - res.first_token_s)[keep] / lout)[lout > 0]
    span = arr[-1] - arr[n // 5]
    busy = np.sum(res.held_s[keep]) / span / n_inst
    return busy, float(np.mean(tpot))


def _chat():
    """A chat-like workload that fits an 8,192-token window: lognormal prompts and outputs."""
    rng = np.random.default_rng(11)
    lin = np.clip(rng.lognormal(6.5, 1.0, 3000), 1, 6000).astype(int)
    lout = np.clip(rng.lognormal(5.0, 0.8, 3000), 1, 2000).astype(int)
    return workload_from_requests(lin, lout, name="chat")


@pytest.mark.parametrize("load_share", [0.3, 0.6])
def test_engine_model_agrees_with_engine_simulation(prof, load_share):
    wl = _chat()
    window = 8192
    ld = ENGINE.pool_load(MomentTable(wl, prof, [4096], [1.0], window).plain(0, window, window),
                          MomentTable(wl, prof, [4096], [1.0], window), [window], 1.0)
    # The rate that puts 2 instances at ``load_share`` of their stability limit.
    rate = load_share * 2 / float(ld.step_cost_s[0])
    ld = ld.scaled(rate)
    q = ld.queue(0, 2)
    busy, tpot = _simulated(prof, wl, rate, window, 2)
    assert q.mean_batch == pytest.approx(busy, rel=0.10)
    assert q.mean_tpot_s == pytest.approx(tpot, rel=0.10)


@pytest.mark.parametrize("n_inst", [2, 4])
def test_ttft_tail_is_not_optimistic_when_prefill_dominates_the_step(prof, n_inst):
    # Prompts of one chunk at ~20 req/s per instance: prefill chunks take about 2/3 of
    # every step (r = 0.65-0.68), so a long step gathers more prompts for the next one and
    # the TTFT tail is heavier than a Poisson count of contenders gives (the earlier
    # model: 0% predicted above the simulated P99 at 2 instances, 0% above the P99.9 at
    # 4). The model's share above each simulated quantile must cover the simulated share.
    rng = np.random.default_rng(5)
    wl = workload_from_requests(rng.integers(100, 1000, 2000), rng.integers(20, 100, 2000),
                                name="short prompts")
    window = 2048
    table = MomentTable(wl, prof, [1024], [1.0], window)
    rate = 20.0 * n_inst
    q = ENGINE.pool_load(table.plain(0, window, window), table, [window], rate).queue(0, n_inst)
    n = 80_000
    sim = np.random.default_rng(9)
    idx = sim.choice(wl.weights.size, n, p=wl.weights)
    arr = np.cumsum(sim.exponential(1.0 / rate, n))
    res = engine_times(arr, wl.input_tokens[idx], wl.output_tokens[idx], prof, window, n_inst)
    ttft = (res.first_token_s - arr)[n // 5:] + prof.ttft_overhead_ms * 1e-3
    for level in (0.9, 0.99, 0.999):
        assert q.miss(float(np.quantile(ttft, level))) >= 0.9 * (1.0 - level)


def test_tpot_slo_caps_the_batch(prof, cat):
    wl = load_workload("azure-2023")
    base = Scenario(wl, prof, 200, 2000, service_model="engine")
    free = make_plan(base)
    tight = make_plan(replace(base, tpot_ms=25.0))
    assert tight.instances > free.instances
    for p in tight.pools:
        if p.instances == 0:
            continue
        assert p.tpot_ms <= 25.0 + 1e-9
        assert p.mean_batch is not None and p.mean_tpot_ms < p.tpot_ms
    # Sizing one pool under a loose TTFT SLO: the TPOT SLO binds exactly at the size found.
    table = MomentTable(_chat(), prof, [4096], [1.0], 8192)
    ld = ENGINE.pool_load(table.plain(0, 8192, 8192), table, [8192], 30.0)
    free_n = min_instances(ld, 60.0, 99.0, 1.0)[0]
    tight_ld = ld.with_tpot_slo(25e-3, 99.0)
    n = min_instances(tight_ld, 60.0, 99.0, 1.0)[0]
    assert n > free_n
    assert tight_ld.extra_fails(np.array([0]), np.array([n - 1]))[0]
    assert not tight_ld.extra_fails(np.array([0]), np.array([n]))[0]


def test_engine_plan_meets_its_ttft_slo_and_reports_figures(prof):
    p = make_plan(Scenario(load_workload("lmsys"), prof, 300, 800, service_model="engine"))
    assert p.service_model == "engine"
    for pool in p.pools:
        if pool.instances:
            assert pool.slo_miss_share <= 0.01 + 1e-12
            assert 0 < pool.utilization <= 0.85 + 1e-9
            assert pool.mean_tpot_ms >= prof.w_ms


def test_tpot_slo_needs_the_engine_model(prof):
    with pytest.raises(FleetOptError, match="service-model engine"):
        Scenario(load_workload("lmsys"), prof, 300, 800, tpot_ms=30).validated()


def test_tpot_figures_of_a_mixture_weight_the_queues(prof):
    wl = _chat()
    table = MomentTable(wl, prof, [4096], [1.0], 8192)
    ld = ENGINE.pool_load(table.plain(0, 8192, 8192), table, [8192], 20.0)
    q1, q2 = ld.queue(0, 1), ld.queue(0, 4)
    one = tpot_figures([q1], [1.0])
    mix = tpot_figures([q1, q2], [0.5, 0.5])
    assert one.mean_ms == pytest.approx(q1.mean_tpot_s * 1e3)
    assert mix.mean_ms == pytest.approx(0.5e3 * (q1.mean_tpot_s + q2.mean_tpot_s))
    assert one.p50_ms <= one.p90_ms <= one.p99_ms
    # The mixture's P90 is where half the weighted tails reach 10%.
    t = mix.p90_ms * 1e-3
    assert 0.5 * (q1.tpot_tail(t) + q2.tpot_tail(t)) <= 0.1 + 1e-9


def test_engine_kernel_charges_calibrated_step_terms_exactly(prof):
    """One request alone: prefill steps cost W + s + H + p x (x = the chunk's prompt
    tokens: pro rata), decode steps W + s + H (kv + 1) / C."""
    lin, lout = 2 * prof.chunk_tokens + 100, 3
    res = engine_times(np.array([0.0]), np.array([lin]), np.array([lout]), prof, 8192, 1)
    w, s, h = prof.w_ms * 1e-3, prof.seq_ms * 1e-3, prof.h_ms * 1e-3
    pt = prof.prefill_ms_per_token * 1e-3
    first = 3 * (w + s + h) + pt * lin
    assert res.first_token_s[0] == pytest.approx(first, rel=1e-12)
    decode = sum(w + s + h * (lin + j + 1) / prof.calib_tokens for j in range(lout))
    assert res.finish_s[0] == pytest.approx(first + decode, rel=1e-12)
    # The slot model's isolated prefill charges whole chunks: equal on whole chunks, more
    # on a partial last chunk (by the 924 tokens it does not carry).
    whole = 2 * prof.chunk_tokens
    alone = engine_times(np.array([0.0]), np.array([whole]), np.array([1]), prof, 8192, 1)
    assert prof.prefill_s(whole) == pytest.approx(alone.first_token_s[0], rel=1e-12)
    assert prof.prefill_s(lin) - first == pytest.approx(pt * (3 * prof.chunk_tokens - lin),
                                                        rel=1e-9)


def _floors(n, b, prefilling, chunks=9.0, mean_chunks=6.0, scheduler_steps=1.0):
    """The contended floors of one pool at ``n`` instances (tau 13 ms, a whole chunk P 32.5
    ms, a mean chunk 20 ms, 85 ms overhead): floor values and shares, per contention
    level."""
    from fleetopt_milp.engine_model import _contended_floors, jsq_busy

    one = np.ones(1)
    return _contended_floors(np.array([chunks]), np.zeros(1), one[:, None], 0.013 * one,
                             0.0325 * chunks * one, 0.085 * one, prefilling * one, mean_chunks * one,
                             jsq_busy(n * one, b * one), n * one, n * b * one, 0.020 * one,
                             scheduler_steps * one, one)


def test_contention_on_one_instance_is_the_random_split_poisson_form():
    # n = 1: busy = P(batch > 0) = 1 - exp(-b), and S = d N with N ~ Poisson((k + busy)
    # b_pf / d), d = min(k + 1, E[k]) f = 6 x 4: the feedback's f = 1 + r / (1 - r) = 4 at
    # the prefill share r = P_bar b_pf / tau = 0.020 x 0.4875 / 0.013 = 0.75; at the levels 0.5
    # ... 0.9999: 0 while P(N = 0) covers the level, else d times N's quantile, at least d.
    from scipy import stats

    from fleetopt_milp.engine_model import CONTENTION_LEVELS, CONTENTION_WEIGHTS

    b, b_pf, k, d = 0.8, 0.4875, 9.0, 24.0
    fs, fp = _floors(1, b, b_pf)
    busy = 1.0 - np.exp(-b)
    lam = (k + busy) * b_pf / d
    met = np.where(np.exp(-lam) >= CONTENTION_LEVELS, 0.0,
                   d * np.maximum(stats.poisson.ppf(CONTENTION_LEVELS, lam), 1.0))
    # The step without prefill takes out the mean chunk; the prompt's own chunks are whole,
    # the others' at the mean (pro rata).
    tau_d = 0.013 - 0.020 * b_pf
    want = (k + busy) * tau_d + 0.0325 * k + 0.020 * met + 0.085
    np.testing.assert_allclose(fs[0], want, rtol=1e-12)
    np.testing.assert_allclose(fp[0], CONTENTION_WEIGHTS, rtol=1e-12)
    assert met[0] == 0 < met[-1]  # half meet none, the top levels meet some


def test_feedback_dispersion_known_values():
    # 1 + r / ((1 - r) n): none without prefill; 1 / (1 - r) on one instance (the two-step
    # count of a branching process of ratio r); the surge shared by n instances under JSQ.
    from fleetopt_milp.engine_model import feedback_dispersion

    f = feedback_dispersion(np.array([0.0, 0.75, 0.75, 0.5, 0.8]),
                            np.array([1.0, 1.0, 5.0, 2.0, 40.0]))
    np.testing.assert_allclose(f, [1.0, 4.0, 1.6, 1.5, 1.1], rtol=1e-12)
    # A step made only of prefill stays finite (r is capped below 1).
    assert np.isfinite(feedback_dispersion(np.array([1.0]), np.array([1.0]))[0])


def test_contention_vanishes_with_many_idle_instances():
    # 264 instances at a mean batch of 0.07 (the default plan's long pool): a prompt
    # finds an idle instance and nobody joins it, so every level is the idle floor plus
    # the step tau_d; one instance at the same batch meets others at its top levels.
    fs, _ = _floors(264, 0.07, 0.01)
    idle = 9 * (0.013 - 0.020 * 0.01) + 0.0325 * 9 + 0.085
    np.testing.assert_allclose(fs[0], idle, rtol=1e-9)
    alone, _ = _floors(1, 0.07, 0.01)
    assert alone[0][-1] > idle + 0.03
    # Busy grows to 1 as the pool fills: P(Poisson(n b) >= n).
    from fleetopt_milp.engine_model import jsq_busy, jsq_reach

    assert jsq_busy(np.array([264.0]), np.array([0.07]))[0] < 1e-100
    assert jsq_busy(np.array([4.0]), np.array([50.0]))[0] == pytest.approx(1.0)
    assert jsq_reach(np.array([1.0]), np.array([0.0]))[0] == 1.0


def test_short_prompts_pay_their_own_tokens_not_a_whole_chunk(prof, cat):
    """The floor grid of a calibrated profile cuts the first chunk at 1/16 ... 1/2 of it:
    a prompt's own prefill is charged at its band's upper edge (docs/engine.md §2)."""
    lin = np.array([50, 100, 700, 1024, 1500])
    wl = workload_from_requests(lin, np.full(5, 10))
    table = MomentTable(wl, prof, [2048], [1.0], 8192)
    c = prof.chunk_tokens
    np.testing.assert_array_equal(table.floor_tokens, [c // 16, c // 8, c, 2 * c])
    np.testing.assert_array_equal(table.floor_chunks, [1, 1, 1, 2])
    m = table.plain(0, 8192, 8192)
    np.testing.assert_allclose(m.floor_mass[0], [0.2, 0.2, 0.4, 0.2])
    # At an idle instance the floor is k W + k H + p x + the TTFT overhead.
    ld = ENGINE.pool_load(m, table, [8192], 1.0)
    want = (table.floor_chunks * (prof.w_ms + prof.h_ms)
            + table.floor_tokens * prof.prefill_ms_per_token + prof.ttft_overhead_ms) * 1e-3
    np.testing.assert_allclose(ld.floor_s, want, rtol=1e-12)
    # A profile whose prompt tokens cost no compute keeps whole-chunk columns only: the
    # slot model's floors are unchanged.
    paper = cat.profile("paper-H100")
    t2 = MomentTable(wl, paper, [2048], [1.0], 8192)
    np.testing.assert_array_equal(t2.floor_tokens, t2.floor_chunks * paper.chunk_tokens)
    np.testing.assert_allclose(t2.floor_s, t2.floor_chunks * paper.prefill_s(paper.chunk_tokens))


def test_multi_step_engine_admits_a_prompt_at_the_end_of_the_running_group():
    """On an engine that decodes M = 10 steps per scheduler call, a prompt reaching a busy
    instance waits for the rest of the group: at each contention level, busy (1 + 9 r) steps
    before its own k; with M = 1 the floors are those of a single step."""
    from fleetopt_milp.engine_model import CONTENTION_LEVELS, CONTENTION_WEIGHTS, RESIDUAL_LEVELS

    b, b_pf, k = 3.0, 0.0, 9.0  # no other prompts: only the wait and the prompt's own steps
    one_step, _ = _floors(1, b, b_pf)
    group, _ = _floors(1, b, b_pf, scheduler_steps=10.0)
    busy = 1.0 - np.exp(-b)
    own = 0.0325 * k + 0.085
    np.testing.assert_allclose(one_step[0], (k + busy) * 0.013 + own, rtol=1e-12)
    np.testing.assert_allclose(group[0], (k + busy * (1 + 9 * RESIDUAL_LEVELS)) * 0.013 + own,
                               rtol=1e-12)
    # Midpoints of the body's bands (0.3, 0.6: medians not pushed up), the levels
    # themselves from 0.8 on (a tail quantile of the wait never under-stated).
    np.testing.assert_allclose(RESIDUAL_LEVELS, [0.15, 0.45, 0.8, 0.95, 0.99, 0.999, 0.9999])
    assert np.all(RESIDUAL_LEVELS[CONTENTION_LEVELS > 0.6] == CONTENTION_LEVELS[CONTENTION_LEVELS > 0.6])
    # On average a prompt waits 9 x 0.532 steps more than with M = 1, against 4.5 for the
    # exact uniform mean.
    mean_extra = CONTENTION_WEIGHTS @ (group[0] - one_step[0])
    assert mean_extra == pytest.approx(9 * 0.5320909 * busy * 0.013, rel=1e-6)


def test_engine_queue_steady_state_time_scale_is_its_batch_time():
    # A request holds its batch slot for E[a] (tau + g_bar) = 100 x 21 ms = 2.1 s, while
    # E[S], the drain time of a full batch of 3,000 (W + cap g_bar = 3.01 s a step), is
    # 301 s: the simulator's warm-up (3 mean residual hold times) and certification's run
    # length take the former (an lmsys short pool was "not steady" with the latter).
    from fleetopt_milp.engine_model import EngineQueue
    from fleetopt_milp.sim_analytical import _warmup_s

    q = EngineQueue(servers=6000, offered_load=100.0, mean_service_s=100 * 3.01, cs2=0.5,
                    floor_s=np.array([0.1]), floor_prob=np.array([1.0]), w_s=0.01,
                    per_seq_s=0.001, mean_batch=50.0, batch_cap=3000.0, step_s=0.02,
                    mean_iterations=100.0)
    assert q.hold_s == pytest.approx(2.1, rel=1e-12)
    # The batch settles slower than that: tau / W = 2 times E[a] tau = 4 s (below).
    assert _warmup_s([q]) == pytest.approx(3.0 * 4.0 * 1.5 / 2.0, rel=1e-12)


def test_engine_queue_relaxation_time_is_the_fluid_batchs_decay():
    # Fluid batch: db/dt = lambda_i - b / (E[a] (W + g_bar b)). At W = 10 ms, g_bar = 1 ms,
    # E[a] = 100 and lambda_i = 5 req/s (lambda_i E[g] = 0.5, tau = 20 ms) it rests at
    # b = 10; a small perturbation decays at the derivative's rate, 1 / relaxation_s.
    from fleetopt_milp.engine_model import EngineQueue

    w, g, ea, lam = 0.010, 0.001, 100.0, 5.0
    tau = w / (1.0 - lam * ea * g)
    q = EngineQueue(servers=256, offered_load=10.0, mean_service_s=1.0, cs2=0.5,
                    floor_s=np.array([0.1]), floor_prob=np.array([1.0]), w_s=w, per_seq_s=g,
                    mean_batch=10.0, batch_cap=256.0, step_s=tau, mean_iterations=ea)

    def drift(b):
        return lam - b / (ea * (w + g * b))

    assert drift(lam * ea * tau) == pytest.approx(0.0, abs=1e-12)
    h = 1e-6
    rate = -(drift(10.0 + h) - drift(10.0 - h)) / (2 * h)
    assert 1.0 / rate == pytest.approx(q.relaxation_s, rel=1e-6)
    assert q.relaxation_s == pytest.approx(4.0, rel=1e-12)  # twice E[a] tau = 2 s


def test_saturation_share_is_the_rate_over_a_full_batchs_throughput():
    # W = 10 ms, E[g] = 50 ms, E[a] = 100, cap 256, 4 req/s: a full batch steps in W +
    # cap g_bar = 10 + 256 x 0.5 = 138 ms and completes 256 / (100 x 0.138) req/s.
    op = operating_point(4.0, 1, 0.010, 0.050, 100.0, 100.0 * 500, 256, 1e6,
                         decode_cost_s=0.0)
    full_rps = 256 / (100 * (0.010 + 256 * 0.0005))
    assert op.saturation_share == pytest.approx(4.0 / full_rps, rel=1e-12)
    # It is never below the batch of an average step over the cap (a full batch's step is
    # the longest), and far above it near the knee.
    assert op.saturation_share >= op.step_batch / op.batch_cap


def test_a_pool_near_the_knee_is_sized_on_its_saturation_share(cat):
    # paper-H100 on lmsys at 200 req/s: 4 instances run at a batch occupancy of 0.78 but
    # take 0.97 of a full batch's throughput (the engine simulation jams at the cap in half
    # its runs); the sizing holds the share to rho_max = 0.85 and plans 5.
    from fleetopt_milp import Scenario, load_workload, plan

    sc = Scenario(load_workload("lmsys"), cat.profile("paper-H100"), 200.0, 500.0,
                  service_model="engine")
    p = plan(sc)
    assert [pool.instances for pool in p.pools] == [5]
    # The share at 4 and 5 instances, from the pool's own load.
    from fleetopt_milp.demand import MomentTable

    table = MomentTable(sc.workload, sc.profile, np.array([], dtype=np.int64),
                        np.array([1.0]), sc.long_context_tokens, 0.0)
    whole = np.array([sc.long_context_tokens])
    load = ENGINE.pool_load(table.plain(np.array([0]), whole, whole), table,
                            sc.long_context_tokens, sc.rate_rps)
    share = load.saturation_share(np.array([0]), np.array([4.0, 5.0]))
    assert share[0] == pytest.approx(0.97, abs=0.01)
    assert share[1] == pytest.approx(share[0] * 4 / 5, rel=1e-12)
    assert load.point(np.array([0]), np.array([4.0])).utilization[0] < 0.85
