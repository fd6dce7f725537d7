"""Minimum instances per candidate pool: the smallest size meeting the TTFT SLO and the cap.

docs/model.md §3. For each candidate pool of a :class:`~fleetopt_milp.poolload.PoolLoad`,
the smallest ``n`` with ``rho = a / (n slots) <= rho_max`` and ``P(TTFT > SLO) <= 1 - q``
(the tail rule) or, with ``paper_rule``, P``q`` wait plus mean floor ``<= SLO`` (the
FleetOpt paper's rule). The search starts at the utilization bound, where most pools
already pass, brackets the rest by doubling and ends with an integer bisection; every
evaluation uses the exact Erlang C.

Two implementations of that one search:

- the compiled kernel (:mod:`fleetopt_milp._sizing`, numba, loaded on the first sizing so
  ``import fleetopt_milp`` stays light), used for slot-model loads;
- the numpy path below, which evaluates :meth:`PoolLoad.at` at every size it tries. It
  serves load-dependent service models and is the reference the kernel is tested and
  benchmarked against (``use_kernel=False``).
"""

from __future__ import annotations

import numpy as np

from .errors import FleetOptError
from .poolload import PoolLoad, QueueBatch
from .queueing import _erlang_c_stable, erlang_c, ttft_miss_probability, wait_quantile_s

__all__ = ["min_instances"]


def _unservable(load: PoolLoad, idx: np.ndarray, slo_s: float, q: float,
                paper_rule: bool) -> np.ndarray:
    """Candidates whose TTFT floors alone miss the SLO at any size (the share of requests
    with a floor at or above the SLO reaches ``1 - q``; paper rule: mean floor >= SLO)."""
    if paper_rule:
        return load.mean_floor_s[idx] >= slo_s
    fp = load.floor_prob[idx]
    return np.sum(np.where(load.floor_s >= slo_s, fp, 0.0), axis=-1) >= (1.0 - q)


def _excess(b: QueueBatch, slo_s: float, q: float, paper_rule: bool) -> np.ndarray:
    """Excess of the SLO test for a batch of queues (> 0 means it fails).

    Tail rule: P(TTFT > SLO) - (1 - q). Paper rule: P``q`` wait + mean floor - SLO, in
    seconds. The tail rule skips the class sum where the fixed share plus Erlang C already
    passes (the sum is at most C).
    """
    c, a, es, cs2 = b.servers, b.offered_load, b.mean_service_s, b.cs2
    if paper_rule:
        return wait_quantile_s(q, c, a, es, cs2) + b.mean_floor_s - slo_s
    fs, fp = b.floor_s, b.floor_prob
    over = fs >= slo_s
    fixed = np.sum(np.where(over, fp, 0.0), axis=-1)
    stable = c > a
    ec = _erlang_c_stable(c, a) if np.all(stable) else erlang_c(c, a)
    out = fixed + ec - (1.0 - q)
    need = np.flatnonzero(out > 0)
    if need.size:
        cols = np.flatnonzero(np.any(fp[need] > 0, axis=0))
        out[need] = ttft_miss_probability(slo_s, c[need], a[need], es[need], cs2[need],
                                          fs[need][:, cols], fp[need][:, cols]) - (1.0 - q)
    return out


def _fails(load: PoolLoad, idx: np.ndarray, n_inst: np.ndarray, slo_s: float, q: float,
           paper_rule: bool, rho_max: float) -> np.ndarray:
    b = load.at(idx, n_inst)
    bad = _excess(b, slo_s, q, paper_rule) > 0
    if load.load_dependent:  # the cap moves with the size: test it at every size
        bad |= (b.servers <= b.offered_load) | (b.utilization > rho_max * (1 + 1e-12))
        bad |= load.extra_fails(idx, n_inst)
    return bad


def _search_numpy(load: PoolLoad, busy: np.ndarray, slo_s: float, q: float, rho_max: float,
                  paper_rule: bool) -> np.ndarray:
    """Minimum instances of candidates ``busy`` (all servable): bound, doubling, bisection."""
    lo = load.lower_bound_instances(busy, rho_max)
    ok = ~_fails(load, busy, lo, slo_s, q, paper_rule, rho_max)
    out = np.where(ok, lo, 0)
    todo = np.flatnonzero(~ok)
    if todo.size == 0:
        return out
    lo = lo[todo]  # infeasible counts
    hi = lo * 2
    for _ in range(64):
        bad = _fails(load, busy[todo], hi, slo_s, q, paper_rule, rho_max)
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
        bad = _fails(load, busy[todo[sel]], mid[sel], slo_s, q, paper_rule, rho_max)
        lo[sel] = np.where(bad, mid[sel], lo[sel])
        hi[sel] = np.where(bad, hi[sel], mid[sel])
    out[todo] = hi
    return out


def min_instances(load: PoolLoad, slo_s: float, percentile: float = 99.0,
                  rho_max: float = 0.85, paper_rule: bool = False,
                  use_kernel: bool = True) -> np.ndarray:
    """Minimum instances per candidate pool meeting the TTFT SLO and the utilization cap.

    docs/model.md §3: the smallest ``n`` with ``rho = a / (n slots) <= rho_max`` and
    ``P(TTFT > slo_s) <= 1 - q`` (tail rule) or, with ``paper_rule``, P``q`` wait plus
    mean prefill ``<= slo_s`` (the FleetOpt paper's rule). Pools with no traffic need 0.
    Returns an int64 array; ``-1`` marks pools that no instance count can serve because
    their TTFT floors alone miss the SLO. ``use_kernel=False`` forces the numpy path
    (the reference; load-dependent service models always take it).
    """
    if not 0 < percentile < 100:
        raise FleetOptError(f"percentile={percentile}: must be strictly between 0 and 100")
    if not 0 < rho_max <= 1:
        raise FleetOptError(f"rho_max={rho_max}: the utilization cap must be in (0, 1]")
    q = percentile / 100.0
    if use_kernel and not load.load_dependent:
        from . import _sizing  # numba: compiled (or loaded from cache) on first use

        return _sizing.min_instances(load, slo_s, q, rho_max, paper_rule)
    result = np.zeros(len(load), dtype=np.int64)
    busy = np.flatnonzero(load.rate_rps > 0)
    if busy.size == 0:
        return result
    hopeless = _unservable(load, busy, slo_s, q, paper_rule)
    if load.load_dependent:
        hopeless |= load.extra_unservable(busy)
    result[busy[hopeless]] = -1
    busy = busy[~hopeless]
    if busy.size:
        result[busy] = _search_numpy(load, busy, slo_s, q, rho_max, paper_rule)
    return result
