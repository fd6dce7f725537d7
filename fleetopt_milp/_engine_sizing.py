"""The compiled sizing of engine-model pools (numba), twin of the numpy path.

docs/engine.md §2. :func:`min_instances` is :func:`fleetopt_milp.sizing.min_instances`'s
numpy search (the lower bound of :meth:`~fleetopt_milp.engine_model.EnginePoolLoad.
lower_bound_instances`, doubling, integer bisection) over the SLO test of
:meth:`EnginePoolLoad.at <fleetopt_milp.engine_model.EnginePoolLoad.at>`, one candidate
at a time and with no array built per size: at each size it solves the operating point in
closed form (:func:`~fleetopt_milp.engine_model.operating_point`), builds the contended
TTFT floors (:func:`~fleetopt_milp.engine_model._contended_floors`, the same operations in
the same order) and decides ``C <= C*`` from the cheapest bracket of Erlang B
(:func:`fleetopt_milp._sizing._erlang_c_at_most`), as the slot kernel does. The TPOT SLO
is not compiled: loads with one take the numpy path.

Starting from another point gives the numpy path's count because the test is monotone in
the size (the seam's requirement, :mod:`fleetopt_milp.service`): both return the
smallest passing size at or above the lower bound.

Each SLO test first settles what it can from bounding floors: :func:`_floors` with the
Poisson tails of ``busy`` and ``reach`` at Chernoff bounds (:func:`_tail`, no special
function) gives floors below the exact ones, and a test whose floors alone miss the SLO
with those fails (:func:`_passes`); only the others compute the exact floors. The
decision is the same, since the test gets harder as the floors rise.

:func:`cheapest_pairs` is the planner's branch and bound (docs/engine.md §5): it sizes only
what the cheapest two-pool candidates and the baselines need (:class:`fleetopt_milp.sizing.
Pairs`). Each row keeps a bracket (a failing and a passing size), so a pool is probed at
what the best total so far leaves it, one SLO test, and searched only if its candidate can
still win; candidates go in the order of a lower bound that adds the utilization cap's
closed form to the numpy path's bound (:func:`_lower_bound`). Counts it returns are the
numpy path's, and so are the plans (tests/test_engine_sizing.py).

Loaded with the slot kernels (:func:`fleetopt_milp.queueing.load_compiled_kernels`), never
by ``import fleetopt_milp``. Counts equal the numpy path's (tests/test_engine_sizing.py).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import binding
from numba import njit, types
from numba.extending import get_cython_function_address

from ._sizing import _bd0, floor_stats, meets_slo


def _scipy(name: str):
    """``scipy.special.<name>(double, double)``, bound by name so that the cached kernels
    link to it again in a new process."""
    binding.add_symbol(f"fleetopt_scipy_{name}",
                       get_cython_function_address("scipy.special.cython_special", name))
    return types.ExternalFunction(f"fleetopt_scipy_{name}",
                                  types.float64(types.float64, types.float64))


# The Poisson upper tail (engine_model.jsq_busy): the function the numpy path calls.
_pdtrc = _scipy("pdtrc")


@njit(cache=True)
def _poisson_level(steps, z, mu):
    """:func:`fleetopt_milp.engine_model._poisson_levels` for one level (its row ``steps``
    of :func:`~fleetopt_milp.engine_model.contention_steps`, standard score ``z``) and
    mean ``mu``: the first ``j`` with ``steps[j] >= mu`` (``numpy.searchsorted``), beyond
    the table the same Cornish-Fisher quantile."""
    lo, hi = 0, steps.size
    while lo < hi:
        mid = (lo + hi) // 2
        if steps[mid] < mu:
            lo = mid + 1
        else:
            hi = mid
    if lo >= steps.size:
        return float(math.ceil(mu + math.sqrt(mu) * z + (z ** 2 - 1.0) / 6.0))
    return float(lo)


@njit(cache=True)
def _tail(k, mu, side):
    """``P(X >= k)`` for ``X ~ Poisson(mu)``, integer ``k >= 1``: ``scipy.special.pdtrc(k -
    1, mu)`` (``side = 0``), or a lower (``side = -1``) or upper (``side = 1``) bound on it
    from the Chernoff bound ``P(X >= k) <= exp(-bd0(k, mu))`` for ``k > mu`` (``P(X <= j)
    <= exp(-bd0(j, mu))`` for ``j < mu``), widened by a relative 1e-9 against rounding: no
    special function, and tight far from the mean, where the TTFT floors mostly sit."""
    if side == 0:
        return _pdtrc(k - 1.0, mu)
    if side > 0:
        if mu >= k:
            return 1.0
        return min(1.0, math.exp(-_bd0(k, mu)) * (1.0 + 1e-9))
    j = k - 1.0
    if mu <= j:
        return 0.0
    below = math.exp(-mu) if j < 0.5 else math.exp(-_bd0(j, mu))
    return max(0.0, 1.0 - below * (1.0 + 1e-9) - 1e-15)


@njit(cache=True)
def _floors(nf, tau, b, prefilling, cols, k1, fown, mchunk, over, msteps, ecv, fchunks, fadded,
            fp_row, levels, level_steps, levels_z, none_above, level_w, fs, fp, side=0):
    """The contended TTFT floors at an operating point of ``nf`` instances (step ``tau``,
    batch ``b``, ``prefilling`` sequences), written to ``fs``/``fp``: one per used column
    and contention level; ``busy``, ``reach`` and ``spread`` as :func:`~fleetopt_milp.
    engine_model.jsq_busy`, :func:`~fleetopt_milp.engine_model.jsq_reach` and
    :func:`~fleetopt_milp.engine_model.feedback_dispersion` (Poisson tails,
    :func:`_tail`). ``side`` -1 or 1 takes both tails at a lower or upper bound instead of
    exactly: every floor is increasing in both, so those floors bound the exact ones
    (:func:`_passes` reads the lower ones)."""
    busy = _tail(nf, nf * b, side)
    tau_d = max(tau - mchunk * prefilling, 0.0)
    r = min(mchunk * prefilling / max(tau, 1e-300), 1.0 - 1e-12)
    spread = 1.0 + r / ((1.0 - r) * max(nf, 1.0))
    m = 0
    for j in cols:
        k = fchunks[j]
        d = max(1.0, min(k + 1.0, k1)) * spread * ecv
        seqs = nf * b + nf * k * prefilling / max(k1, 1e-300)
        reach = _tail(nf - 1.0, seqs, side) if nf > 1.0 else 1.0
        for lv in range(level_steps.shape[0]):
            steps = k + busy * (1.0 + (msteps - 1.0) * levels[lv])
            mu = steps * prefilling
            lam = mu / d
            lam_q = lam if lam > 0.0 else 1.0
            if reach * -math.expm1(-lam) <= none_above[lv]:
                met = d * 0.0
            else:
                met = d * max(_poisson_level(level_steps[lv], levels_z[lv], lam_q), 1.0)
            fs[m] = steps * tau_d + fown[j] + mchunk * met + fadded[j] + over
            fp[m] = fp_row[j] * level_w[lv]
            m += 1


@njit(cache=True)
def _passes(n, cols, rate, w, g, ea, kv, maxb, kvcap, k1, fown, mchunk, over, msteps, ecv, cs2,
            fchunks, fadded, fp_row, levels, level_steps, levels_z, none_above, level_w, fs, fp,
            slo_s, q, rho_max, paper_rule):
    """The candidate meets the TTFT SLO and the utilization cap at ``n`` instances: its
    operating point (:func:`~fleetopt_milp.engine_model.operating_point`), the cap, then
    the floors and the SLO test.

    The SLO test gets harder as the floors rise, so a test whose floors alone miss it
    with floors below the exact ones (:func:`_floors` with ``side = -1``: no special
    function) fails at once; the others compute the exact floors."""
    nf = float(n)
    lam_i = rate / max(nf, 1e-300)
    x = lam_i * g
    if not (x < 1.0 and nf > 0.0):  # unstable
        return False
    tau = w / (1.0 - x)
    b = lam_i * ea * tau + x
    kv_per_seq = kv / max(ea, 1e-300)
    cap = max(min(maxb, math.floor(kvcap / max(kv_per_seq, 1.0))), 1.0)
    c = nf * cap
    a = nf * b
    if c <= a or a / max(c, 1e-300) > rho_max * (1 + 1e-12):
        return False
    if lam_i * (ea * w / cap + g) > rho_max * (1 + 1e-12):  # the saturation share
        return False
    _floors(nf, tau, b, lam_i * k1 * tau, cols, k1, fown, mchunk, over, msteps, ecv, fchunks,
            fadded, fp_row, levels, level_steps, levels_z, none_above, level_w, fs, fp, -1)
    fixed, mean_floor = floor_stats(fs, fp, slo_s)
    if (mean_floor > slo_s) if paper_rule else ((1.0 - q) - fixed < 0.0):
        return False  # as meets_slo decides from the floors alone
    _floors(nf, tau, b, lam_i * k1 * tau, cols, k1, fown, mchunk, over, msteps, ecv, fchunks,
            fadded, fp_row, levels, level_steps, levels_z, none_above, level_w, fs, fp)
    per_seq = g / max(ea, 1e-300)
    es = ea * max(w + cap * per_seq, tau)
    theta = 2.0 * (c - a) / (es * (1.0 + cs2))
    fixed, mean_floor = floor_stats(fs, fp, slo_s)
    return meets_slo(c, a, theta, fs, fp, slo_s, q, fixed, mean_floor, paper_rule)


@njit(cache=True)
def _size_all(busy, rate, w, g, ea, kv, maxb, kvcap, k1, fown, mchunk, over, msteps, ecv, cs2,
              fchunks, fadded, floor_prob, levels, level_steps, levels_z, none_above, level_w,
              slo_s, q, rho_max, paper_rule):
    out = np.zeros(busy.size, dtype=np.int64)
    n_lv = level_steps.shape[0]
    prev_n, prev_rate = 0, 1.0
    col_buf = np.zeros(floor_prob.shape[1], dtype=np.int64)
    fs_buf = np.empty(floor_prob.shape[1] * n_lv)
    fp_buf = np.empty(floor_prob.shape[1] * n_lv)
    for t in range(busy.size):
        i = busy[t]
        row = floor_prob[i]
        m = 0
        for j in range(row.size):
            if row[j] > 0.0:
                col_buf[m] = j
                m += 1
        if m == 0:  # a pool without floors: column 0, at a zero share
            col_buf[0] = 0
            m = 1
        cols = col_buf[:m]
        fs = fs_buf[:cols.size * n_lv]
        fp = fp_buf[:cols.size * n_lv]
        args = (cols, rate[i], w[i], g[i], ea[i], kv[i], maxb[i], kvcap[i], k1[i],
                fown, mchunk[i], over[i], msteps[i], ecv[i], cs2[i], fchunks, fadded, row, levels,
                level_steps, levels_z, none_above, level_w, fs, fp, slo_s, q, rho_max,
                paper_rule)
        lam = rate[i]
        lo, _ = _stable_bound(i, rate, w, g, ea, kv, maxb, kvcap, rho_max)
        # The previous candidate's count scaled by the rates: a pool's size roughly follows
        # its rate, and neighbouring candidates (boundaries, gammas) are alike.
        hint = int(round(min(prev_n * lam / prev_rate, 1e13))) if prev_n > 0 else 0
        if hint <= lo:  # the numpy path's search: the bound, doubling
            if _passes(lo, *args):
                out[t] = lo
                prev_n, prev_rate = lo, lam
                continue
            hi = 2 * lo
            for _ in range(64):
                if _passes(hi, *args):
                    break
                lo = hi
                hi *= 2
        elif _passes(hint, *args):  # gallop down from the previous pool's count
            hi, step = hint, 1
            while True:
                if hi - step <= lo:
                    if _passes(lo, *args):
                        hi = lo
                    break
                if not _passes(hi - step, *args):
                    lo = hi - step
                    break
                hi -= step
                step *= 2
        else:  # gallop up from it
            lo, step = hint, 1
            for _ in range(64):
                if _passes(lo + step, *args):
                    break
                lo += step
                step *= 2
            hi = lo + step
        while hi - lo > 1:  # lo fails, hi passes
            mid = (lo + hi) // 2
            if _passes(mid, *args):
                hi = mid
            else:
                lo = mid
        out[t] = hi
        prev_n, prev_rate = hi, lam
    return out


def _row_arrays(load) -> tuple:
    """The arrays of an :class:`~fleetopt_milp.engine_model.EnginePoolLoad` the kernels read,
    in their argument order (rate to the contention weights)."""
    from .engine_model import (
        _NONE_ABOVE,
        _Z,
        CONTENTION_WEIGHTS,
        RESIDUAL_LEVELS,
        contention_steps,
    )

    def f64(x):
        return np.ascontiguousarray(x, dtype=np.float64)

    return (f64(load.rate_rps), f64(load.w_s), f64(load.step_cost_s),
            f64(load.mean_iterations), f64(load.kv_token_iterations),
            f64(load.slots_per_instance), f64(load.kv_capacity_tokens), f64(load.mean_chunks),
            f64(load.floor_own_s), f64(load.mean_chunk_s), f64(load.ttft_overhead_s),
            f64(load.scheduler_steps), f64(load.chunk_disp), f64(load.cs2),
            f64(load.floor_chunks),
            f64(load.floor_added_s), f64(load.floor_prob), f64(RESIDUAL_LEVELS),
            f64(contention_steps()), f64(_Z), f64(_NONE_ABOVE), f64(CONTENTION_WEIGHTS))


def min_instances(load, busy: np.ndarray, slo_s: float, q: float, rho_max: float,
                  paper_rule: bool) -> np.ndarray:
    """Minimum instances of the engine-model candidates ``busy`` (with traffic, servable,
    no TPOT SLO): the counts of :func:`fleetopt_milp.sizing._search_numpy`."""
    return _size_all(np.ascontiguousarray(busy, dtype=np.int64), *_row_arrays(load),
                     float(slo_s), float(q), float(rho_max), bool(paper_rule))


# ---------------------------------------------------------------------------------------
# The cheapest pairs of pools: branch and bound over the planner's candidates
# ---------------------------------------------------------------------------------------

#: "No passing size known yet" for a row's bracket.
_NONE = np.int64(1) << np.int64(62)


@njit(cache=True)
def _stable_bound(r, rate, w, g, ea, kv, maxb, kvcap, rho_max):
    """``(bound, cap)``: the lower bound of :meth:`EnginePoolLoad.lower_bound_instances
    <fleetopt_milp.engine_model.EnginePoolLoad.lower_bound_instances>` (stability, and the
    saturation share's exact threshold) of row ``r``, and its batch cap."""
    lam = rate[r]
    stab = int(math.floor(lam * g[r] + 1e-12)) + 1
    kv_per_seq = kv[r] / max(ea[r], 1e-300)
    cap = max(min(maxb[r], math.floor(kvcap[r] / max(kv_per_seq, 1.0))), 1.0)
    util = int(math.ceil(lam * (ea[r] * w[r] / cap + g[r]) / rho_max - 1e-12))
    return max(max(stab, util), 1), cap


@njit(cache=True)
def _lower_bound(r, rate, w, g, ea, kv, maxb, kvcap, rho_max):
    """The fewest instances row ``r`` can pass at: :meth:`EnginePoolLoad.
    lower_bound_instances`'s bound, raised to the utilization cap's own closed form.

    At ``n`` instances ``rho >= lambda E[a] W / (cap (n - lambda E[g]))`` (the operating
    point's ``n b / (n cap)`` less its ``lambda E[g] / (n cap)``), so the cap needs ``n >= lambda E[g] + lambda E[a] W /
    (cap rho_max)``; the bound is lowered by a relative 1e-9 against rounding, and kept only
    if the cap test itself fails one below it (so it never exceeds the true minimum)."""
    lo, cap = _stable_bound(r, rate, w, g, ea, kv, maxb, kvcap, rho_max)
    lam = rate[r]
    x = lam * g[r] + lam * ea[r] * w[r] / (cap * rho_max * (1.0 + 1e-12))
    tight = int(math.ceil(x * (1.0 - 1e-9)))
    if tight > lo and not _cap_ok(tight - 1, lam, w[r], g[r], ea[r], cap, rho_max):
        lo = tight
    return lo


@njit(cache=True)
def _cap_ok(n, rate, w, g, ea, cap, rho_max):
    """The operating point at ``n`` instances is stable and within the utilization cap
    (the first tests of :func:`_passes`, the same operations)."""
    nf = float(n)
    lam_i = rate / max(nf, 1e-300)
    x = lam_i * g
    if not (x < 1.0 and nf > 0.0):
        return False
    tau = w / (1.0 - x)
    b = lam_i * ea * tau + x
    c = nf * cap
    a = nf * b
    return not (c <= a or a / max(c, 1e-300) > rho_max * (1 + 1e-12)
                or lam_i * (ea * w / cap + g) > rho_max * (1 + 1e-12))


@njit(cache=True)
def _row_passes(r, n, d):
    """:func:`_passes` for row ``r`` at ``n`` instances; ``d`` packs the rows' arrays
    (:func:`_cheapest`)."""
    (rate, w, g, ea, kv, maxb, kvcap, k1, fown, mchunk, over, msteps, ecv, cs2, fchunks, fadded,
     floor_prob, col_ptr, col_idx, levels, level_steps, levels_z, none_above, level_w,
     fs_buf, fp_buf, slo_s, q, rho_max, paper_rule) = d
    cols = col_idx[col_ptr[r]:col_ptr[r + 1]]
    m = cols.size * levels_z.size
    return _passes(n, cols, rate[r], w[r], g[r], ea[r], kv[r], maxb[r], kvcap[r], k1[r],
                   fown, mchunk[r], over[r], msteps[r], ecv[r], cs2[r], fchunks, fadded,
                   floor_prob[r], levels, level_steps, levels_z, none_above, level_w,
                   fs_buf[:m], fp_buf[:m], slo_s, q, rho_max, paper_rule)


@njit(cache=True)
def _probe(r, m, d, fail, pas):
    """Does row ``r`` need at most ``m`` instances? From its bracket (``fail[r]`` fails,
    ``pas[r]`` passes: the test is monotone in the size) or one SLO test, which narrows
    the bracket."""
    if m <= fail[r]:
        return False
    if m >= pas[r]:
        return True
    if _row_passes(r, m, d):
        pas[r] = m
        return True
    fail[r] = m
    return False


@njit(cache=True)
def _exact(r, hint, d, fail, pas):
    """Row ``r``'s minimum instances: the smallest passing size above ``fail[r]``. With no
    passing size known, the numpy path's doubling from the bound, or a gallop from ``hint``
    (a guess inside the bracket); then an integer bisection of the bracket."""
    if fail[r] + 1 < hint < pas[r]:
        step = 1
        if _probe(r, hint, d, fail, pas):  # gallop down
            while pas[r] - fail[r] > 1:
                if not _probe(r, max(pas[r] - step, fail[r] + 1), d, fail, pas):
                    break
                step *= 2
        else:  # gallop up
            for _ in range(64):
                if _probe(r, min(fail[r] + step, pas[r]), d, fail, pas):
                    break
                step *= 2
    elif pas[r] >= _NONE:
        lo = fail[r] + 1
        if not _probe(r, lo, d, fail, pas):
            hi = 2 * lo
            for _ in range(64):
                if _probe(r, hi, d, fail, pas):
                    break
                hi *= 2
    while pas[r] - fail[r] > 1:
        _probe(r, (fail[r] + pas[r]) // 2, d, fail, pas)
    return pas[r]


@njit(cache=True)
def _before(t1, g1, w1, t2, g2, w2):
    """The planner's ranking: fewer instances, then smaller gamma, then smaller B."""
    if t1 != t2:
        return t1 < t2
    if g1 != g2:
        return g1 < g2
    return w1 < w2


@njit(cache=True)
def _sized(r, role, row_lb, d, fail, pas, ratio):
    """Row ``r``'s exact count (:func:`_exact`), its gallop seeded by ``ratio[role]`` (the
    running mean of count over bound ``row_lb`` of the rows of that role sized so far),
    which it updates."""
    lo = row_lb[r]
    n = _exact(r, int(round(lo * ratio[role])) if lo > 0 else 0, d, fail, pas)
    if lo > 0:
        ratio[role] = 0.5 * (ratio[role] + n / lo)
    return n


@njit(cache=True)
def _pair_total(a, b, top, row_lb, d, fail, pas, ratio):
    """The instances of the pair of rows ``a`` (short) and ``b`` (long) if at most ``top``,
    else -1, with as few SLO tests as the estimates allow.

    Each row's estimate is its bound times its role's ratio. The row expected to overshoot
    its share most is probed first: at ``top`` minus the other's bound (one failing test
    prunes the pair) when its estimate clears that by a margin, else at a split of the
    expected excess between the two rows (two failing tests prune it). A row that passes its
    probe is sized exactly and the other probed at what is left."""
    lo_a, lo_b = fail[a] + 1, fail[b] + 1
    est_a = max(lo_a, int(round(row_lb[a] * ratio[0])))
    est_b = max(lo_b, int(round(row_lb[b] * ratio[1])))
    if est_a - (top - lo_b) >= est_b - (top - lo_a):
        first, other, role_f, est_f, est_o, lo_o = a, b, 0, est_a, est_b, lo_b
    else:
        first, other, role_f, est_f, est_o, lo_o = b, a, 1, est_b, est_a, lo_a
    m = top - lo_o  # one failing probe prunes the pair
    excess = est_f + est_o - top - 1
    if excess >= 0 and est_f - m <= max(1, est_f // 10):  # not by a clear margin: split
        m = min(m, est_f - 1 - excess // 2)
    if _probe(first, m, d, fail, pas):
        n_f = _sized(first, role_f, row_lb, d, fail, pas, ratio)
        if not _probe(other, top - n_f, d, fail, pas):
            return -1
        return n_f + _sized(other, 1 - role_f, row_lb, d, fail, pas, ratio)
    if not _probe(other, top - fail[first] - 1, d, fail, pas):
        return -1
    n_o = _sized(other, 1 - role_f, row_lb, d, fail, pas, ratio)
    if not _probe(first, top - n_o, d, fail, pas):
        return -1
    return n_o + _sized(first, role_f, row_lb, d, fail, pas, ratio)


@njit(cache=True)
def _phase(cands, k, short, long, lb, row_lb, gam, win, d, fail, pas, ratio):
    """Size enough of candidates ``cands`` (pairs of rows ``short``/``long``) to know their
    ``k`` cheapest exactly; returns the cheapest (``-1``: none feasible).

    Branch and bound: candidates in the order of their lower bound ``lb`` (the sum of the
    rows' bounds), each pruned as soon as it provably needs more instances than the
    ``k``-th best total so far, ``T`` (:func:`_pair_total`: a row is probed at what its
    partner leaves of ``T``, one SLO test, and searched only if it passes there). A
    candidate sized in an earlier phase counts at once. Rows keep their brackets across
    phases, so no size is tested twice."""
    order = cands[np.argsort(lb[cands], kind="mergesort")]
    k = max(min(k, cands.size), 1)  # more than there are candidates: all of them
    tops = np.full(k, _NONE)
    done = np.zeros(order.size, dtype=np.bool_)
    for t in range(order.size):  # candidates already sized: their totals bound the rest
        c = order[t]
        a, b = short[c], long[c]
        if pas[a] - fail[a] == 1 and pas[b] - fail[b] == 1:
            done[t] = True
            _insert(tops, pas[a] + pas[b])
    for t in range(order.size):
        if done[t]:
            continue
        c = order[t]
        top = tops[k - 1]
        if lb[c] > top:
            break  # every later candidate's bound is at least as high
        a, b = short[c], long[c]
        if top >= _NONE:
            total = (_sized(a, 0, row_lb, d, fail, pas, ratio)
                     + _sized(b, 1, row_lb, d, fail, pas, ratio))
        else:
            total = _pair_total(a, b, top, row_lb, d, fail, pas, ratio)
        if total >= 0:
            _insert(tops, total)
    best = -1
    bt, bg, bw = _NONE, 0.0, 0.0
    for c in cands:
        a, b = short[c], long[c]
        if pas[a] - fail[a] == 1 and pas[b] - fail[b] == 1:
            tot = pas[a] + pas[b]
            if best < 0 or _before(tot, gam[c], win[c], bt, bg, bw):
                best, bt, bg, bw = c, tot, gam[c], win[c]
    return best


@njit(cache=True)
def _insert(tops, total):
    """Keep ``tops`` the sorted ``k`` smallest totals seen."""
    k = tops.size
    if total >= tops[k - 1]:
        return
    j = k - 1
    while j > 0 and tops[j - 1] > total:
        tops[j] = tops[j - 1]
        j -= 1
    tops[j] = total


@njit(cache=True)
def _cheapest(preset, rate, w, g, ea, kv, maxb, kvcap, k1, fown, mchunk, over, msteps, ecv, cs2,
              fchunks, fadded, floor_prob, levels, level_steps, levels_z, none_above, level_w,
              slo_s, q, rho_max, paper_rule, short, long, gam, win, no_comp, count):
    n_rows = preset.size
    # Each row's floor columns (those with a share), as in _size_all.
    col_ptr = np.zeros(n_rows + 1, dtype=np.int64)
    col_idx = np.zeros(n_rows * floor_prob.shape[1] + n_rows, dtype=np.int64)
    m = 0
    for r in range(n_rows):
        start = m
        for j in range(floor_prob.shape[1]):
            if floor_prob[r, j] > 0.0:
                col_idx[m] = j
                m += 1
        if m == start:  # a pool without floors: column 0, at a zero share
            col_idx[m] = 0
            m += 1
        col_ptr[r + 1] = m
    width = floor_prob.shape[1] * levels_z.size + levels_z.size
    d = (rate, w, g, ea, kv, maxb, kvcap, k1, fown, mchunk, over, msteps, ecv, cs2, fchunks, fadded,
         floor_prob, col_ptr, col_idx, levels, level_steps, levels_z, none_above, level_w,
         np.empty(width), np.empty(width), slo_s, q, rho_max, paper_rule)
    # Brackets: fail[r] fails, pas[r] passes. Idle rows need 0; unservable ones none.
    fail = np.zeros(n_rows, dtype=np.int64)
    pas = np.full(n_rows, _NONE)
    for r in range(n_rows):
        if preset[r] == 0:
            fail[r], pas[r] = -1, 0
        elif preset[r] == -1:
            fail[r] = _NONE
        else:
            fail[r] = _lower_bound(r, rate, w, g, ea, kv, maxb, kvcap, rho_max) - 1
    row_lb = fail + 1
    n_cand = short.size
    lb = np.empty(n_cand, dtype=np.int64)
    for c in range(n_cand):
        a, b = short[c], long[c]
        lb[c] = _NONE if (preset[a] == -1 or preset[b] == -1) else fail[a] + fail[b] + 2
    ratio = np.ones(2)
    feasible = np.flatnonzero(lb < _NONE)
    # Pool routing (gamma = 1), then retrofit (its B, any gamma), then every candidate.
    args = (short, long, lb, row_lb, gam, win, d, fail, pas, ratio)
    best_pr = _phase(feasible[no_comp[feasible]], 1, *args)
    if best_pr >= 0:
        _phase(feasible[win[feasible] == win[best_pr]], 1, *args)
    _phase(feasible, count, *args)
    paired = np.zeros(n_rows, dtype=np.bool_)
    paired[short] = True
    paired[long] = True
    for r in range(n_rows):  # rows of no candidate (the homogeneous pool): sized
        if not paired[r] and preset[r] != -1:
            _exact(r, 0, d, fail, pas)
    out = np.full(n_rows, -2, dtype=np.int64)
    for r in range(n_rows):
        if preset[r] == -1:
            out[r] = -1
        elif pas[r] - fail[r] == 1:
            out[r] = pas[r]
    return out


def cheapest_pairs(load, preset: np.ndarray, slo_s: float, q: float, rho_max: float,
                   paper_rule: bool, pairs) -> np.ndarray:
    """Instances of the rows the ``pairs.count`` cheapest candidates need
    (:class:`fleetopt_milp.sizing.Pairs`), ``-2`` where a row was not sized; ``preset``:
    0 (idle), -1 (unservable) or anything else (to size). Every count given is the numpy
    path's."""
    return _cheapest(
        np.ascontiguousarray(preset, dtype=np.int64), *_row_arrays(load), float(slo_s),
        float(q), float(rho_max), bool(paper_rule),
        np.ascontiguousarray(pairs.short_rows, dtype=np.int64),
        np.ascontiguousarray(pairs.long_rows, dtype=np.int64),
        np.ascontiguousarray(pairs.gammas, dtype=np.float64),
        np.ascontiguousarray(pairs.windows, dtype=np.float64),
        np.ascontiguousarray(pairs.no_compression, dtype=np.bool_), int(pairs.count))
