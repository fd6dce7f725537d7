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

Loaded with the slot kernels (:func:`fleetopt_milp.queueing.load_compiled_kernels`), never
by ``import fleetopt_milp``. Counts equal the numpy path's (tests/test_engine_sizing.py).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import binding
from numba import njit, types
from numba.extending import get_cython_function_address

from ._sizing import floor_stats, meets_slo


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
def _floors(nf, tau, b, prefilling, cols, k1, fown, mchunk, over, msteps, fchunks, fadded,
            fp_row, levels, level_steps, levels_z, none_above, level_w, fs, fp):
    """The contended TTFT floors at an operating point of ``nf`` instances (step ``tau``,
    batch ``b``, ``prefilling`` sequences), written to ``fs``/``fp``: one per used column
    and contention level; ``busy``, ``reach`` and ``spread`` as :func:`~fleetopt_milp.
    engine_model.jsq_busy`, :func:`~fleetopt_milp.engine_model.jsq_reach` and
    :func:`~fleetopt_milp.engine_model.feedback_dispersion`."""
    busy = _pdtrc(nf - 1.0, nf * b)
    tau_d = max(tau - mchunk * prefilling, 0.0)
    r = min(mchunk * prefilling / max(tau, 1e-300), 1.0 - 1e-12)
    spread = 1.0 + r / ((1.0 - r) * max(nf, 1.0))
    m = 0
    for j in cols:
        k = fchunks[j]
        d = max(1.0, min(k + 1.0, k1)) * spread
        seqs = nf * b + nf * k * prefilling / max(k1, 1e-300)
        reach = _pdtrc(max(nf - 2.0, 0.0), seqs) if nf > 1.0 else 1.0
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
def _passes(n, cols, rate, w, g, ea, kv, maxb, kvcap, k1, fown, mchunk, over, msteps, cs2,
            fchunks, fadded, fp_row, levels, level_steps, levels_z, none_above, level_w, fs, fp,
            slo_s, q, rho_max, paper_rule):
    """The candidate meets the TTFT SLO and the utilization cap at ``n`` instances: its
    operating point (:func:`~fleetopt_milp.engine_model.operating_point`), the cap, then
    the floors and the SLO test."""
    nf = float(n)
    lam_i = rate / max(nf, 1e-300)
    x = lam_i * g
    if not (x < 1.0 and nf > 0.0):  # unstable
        return False
    tau = w / (1.0 - x)
    b = lam_i * ea * tau
    kv_per_seq = kv / max(ea, 1e-300)
    cap = max(min(maxb, math.floor(kvcap / max(kv_per_seq, 1.0))), 1.0)
    c = nf * cap
    a = nf * b
    if c <= a or a / max(c, 1e-300) > rho_max * (1 + 1e-12):
        return False
    _floors(nf, tau, b, lam_i * k1 * tau, cols, k1, fown, mchunk, over, msteps, fchunks,
            fadded, fp_row, levels, level_steps, levels_z, none_above, level_w, fs, fp)
    per_seq = g / max(ea, 1e-300)
    es = ea * max(w + cap * per_seq, tau)
    theta = 2.0 * (c - a) / (es * (1.0 + cs2))
    fixed, mean_floor = floor_stats(fs, fp, slo_s)
    return meets_slo(c, a, theta, fs, fp, slo_s, q, fixed, mean_floor, paper_rule)


@njit(cache=True)
def _size_all(busy, rate, w, g, ea, kv, maxb, kvcap, k1, fown, mchunk, over, msteps, cs2,
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
                fown, mchunk[i], over[i], msteps[i], cs2[i], fchunks, fadded, row, levels,
                level_steps, levels_z, none_above, level_w, fs, fp, slo_s, q, rho_max,
                paper_rule)
        # The lower bound of EnginePoolLoad.lower_bound_instances: stability and W.
        lam = rate[i]
        stab = int(math.floor(lam * g[i] + 1e-12)) + 1
        kv_per_seq = kv[i] / max(ea[i], 1e-300)
        cap = max(min(maxb[i], math.floor(kvcap[i] / max(kv_per_seq, 1.0))), 1.0)
        util = int(math.ceil(lam * ea[i] * w[i] / (cap * rho_max) - 1e-12))
        lo = max(max(stab, util), 1)
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


def min_instances(load, busy: np.ndarray, slo_s: float, q: float, rho_max: float,
                  paper_rule: bool) -> np.ndarray:
    """Minimum instances of the engine-model candidates ``busy`` (with traffic, servable,
    no TPOT SLO): the counts of :func:`fleetopt_milp.sizing._search_numpy`."""
    from .engine_model import _NONE_ABOVE, _Z, CONTENTION_WEIGHTS, RESIDUAL_LEVELS, contention_steps

    def f64(x):
        return np.ascontiguousarray(x, dtype=np.float64)

    return _size_all(
        np.ascontiguousarray(busy, dtype=np.int64), f64(load.rate_rps), f64(load.w_s),
        f64(load.step_cost_s), f64(load.mean_iterations), f64(load.kv_token_iterations),
        f64(load.slots_per_instance), f64(load.kv_capacity_tokens), f64(load.mean_chunks),
        f64(load.floor_own_s), f64(load.mean_chunk_s), f64(load.ttft_overhead_s),
        f64(load.scheduler_steps), f64(load.cs2), f64(load.floor_chunks),
        f64(load.floor_added_s), f64(load.floor_prob), f64(RESIDUAL_LEVELS),
        f64(contention_steps()), f64(_Z),
        f64(_NONE_ABOVE),
        f64(CONTENTION_WEIGHTS), float(slo_s), float(q), float(rho_max), bool(paper_rule))
