"""Minimum instances per candidate pool: the smallest size meeting the TTFT SLO and the cap.

docs/model.md §3. For each candidate pool of a :class:`~fleetopt_milp.poolload.PoolLoad`,
the smallest ``n`` with ``rho = a / (n slots) <= rho_max`` and ``P(TTFT > SLO) <= 1 - q``
(the tail rule) or, with ``paper_rule``, P``q`` wait plus mean floor ``<= SLO`` (the
FleetOpt paper's rule). The search starts at the utilization bound, where most pools
already pass, brackets the rest by doubling and ends with an integer bisection; every
evaluation uses the exact Erlang C.

Two implementations of that one search:

- the compiled kernel (:mod:`fleetopt_milp._sizing`, numba), used for slot-model loads
  once loaded (:func:`~fleetopt_milp.queueing.compiled_kernels` says when);
- the numpy path below, which evaluates :meth:`PoolLoad.at` at every size it tries. It
  serves load-dependent service models and is the reference the kernel is tested and
  benchmarked against (``use_kernel=False``).

A caller that only needs the cheapest of the planner's two-pool candidates says so with
:class:`Pairs`; a load-dependent model's compiled search may then prune the others
(:meth:`PoolLoad.compiled_search`, the engine model's branch and bound).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FleetOptError
from .poolload import PoolLoad, QueueBatch
from .queueing import (
    _erlang_c_stable,
    compiled_kernels,
    erlang_c,
    load_compiled_kernels,
    ttft_miss_probability,
    wait_quantile_s,
)

__all__ = ["min_instances", "redundancy_floor", "slo_excess", "Pairs"]


@dataclass(frozen=True)
class Pairs:
    """The planner's two-pool candidates over a load's rows (docs/model.md §4), for a
    sizing that only needs the cheapest: candidate ``i`` is rows ``short_rows[i]`` and
    ``long_rows[i]`` at ``gammas[i]`` and boundary ``windows[i]``; ``no_compression``
    marks ``gamma = 1``. The counts needed are those of the ``count`` cheapest candidates
    (fewest instances, then smaller gamma, then smaller B), of the cheapest at ``gamma =
    1`` (pool routing), of the cheapest at that one's B (retrofit), and of every row no
    candidate holds."""

    short_rows: np.ndarray
    long_rows: np.ndarray
    gammas: np.ndarray
    windows: np.ndarray
    no_compression: np.ndarray
    count: int = 1


def _unservable(load: PoolLoad, idx: np.ndarray, slo_s: float, q: float,
                paper_rule: bool) -> np.ndarray:
    """Candidates whose TTFT floors alone miss the SLO at any size (the share of requests
    with a floor at or above the SLO reaches ``1 - q``; paper rule: mean floor >= SLO)."""
    if paper_rule:
        return load.mean_floor_s[idx] >= slo_s
    fp = load.floor_prob[idx]
    return np.sum(np.where(load.floor_s >= slo_s, fp, 0.0), axis=-1) >= (1.0 - q)


def slo_excess(b: QueueBatch, slo_s: float, q: float, paper_rule: bool) -> np.ndarray:
    """Excess of the SLO test for a batch of queues (> 0 means it fails), docs/model.md §3.

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
    bad = slo_excess(b, slo_s, q, paper_rule) > 0
    if load.load_dependent:  # the cap moves with the size: test it at every size
        bad |= (b.servers <= b.offered_load) | (b.utilization > rho_max * (1 + 1e-12))
        bad |= load.saturation_share(idx, n_inst) > rho_max * (1 + 1e-12)
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


#: Largest instance count a pool may need; beyond it the input is not a fleet to plan.
MAX_INSTANCES = 10**12


def _check(load: PoolLoad, rho_max: float) -> None:
    """Refuse loads no size can be searched for: non-finite or negative figures, pools with
    traffic but no slots, or a utilization bound beyond :data:`MAX_INSTANCES`."""
    rate, es, cs2 = load.rate_rps, load.mean_service_s, load.cs2
    if not (np.all(np.isfinite(rate)) and np.all(rate >= 0)):
        raise FleetOptError("pool load: every arrival rate must be a finite number >= 0 req/s")
    busy = rate > 0
    if not np.any(busy):
        return
    slots = load.slots_per_instance[busy]
    if not (np.all(np.isfinite(es[busy]) & (es[busy] > 0)) and np.all(
            np.isfinite(cs2[busy]) & (cs2[busy] >= 0)) and np.all(slots >= 1)):
        raise FleetOptError("pool load: a pool with traffic needs a finite mean service time "
                            "> 0 s, a finite cs2 >= 0 and at least one KV slot per instance")
    bound = float(np.max(load.offered_load[busy] / (slots * rho_max)))
    if not bound <= MAX_INSTANCES:
        raise FleetOptError(f"pool load: a pool would need about {bound:.3g} instances (more "
                            f"than {MAX_INSTANCES:.0e}); check the arrival rate and the "
                            "service times")


def min_instances(load: PoolLoad, slo_s: float, percentile: float = 99.0,
                  rho_max: float = 0.85, paper_rule: bool = False,
                  use_kernel: bool | None = None, pairs: Pairs | None = None) -> np.ndarray:
    """Minimum instances per candidate pool meeting the TTFT SLO and the utilization cap.

    docs/model.md §3: the smallest ``n`` with ``rho = a / (n slots) <= rho_max`` and
    ``P(TTFT > slo_s) <= 1 - q`` (tail rule) or, with ``paper_rule``, P``q`` wait plus
    mean prefill ``<= slo_s`` (the FleetOpt paper's rule). Pools with no traffic need 0.
    Returns an int64 array; ``-1`` marks pools that no instance count can serve because
    their TTFT floors alone miss the SLO.

    ``use_kernel``: ``None`` takes the compiled kernel if this process has loaded it
    (:func:`~fleetopt_milp.queueing.compiled_kernels`), ``True`` loads it, ``False`` forces
    the numpy path (the reference). Both give the same counts; load-dependent service
    models take their own compiled search where they have one
    (:meth:`PoolLoad.compiled_search`, loaded with the kernels), else the numpy path.

    ``pairs``: only the counts of the cheapest candidates :class:`Pairs` describes are
    needed. A compiled search that can prune (:meth:`PoolLoad.compiled_search` with
    ``pairs``) then returns ``-2`` for rows it did not size: a candidate with such a row
    provably needs more instances than those it must find. Every other count is as
    without ``pairs``.
    """
    if not 0 < percentile < 100:
        raise FleetOptError(f"percentile={percentile}: must be strictly between 0 and 100")
    if not 0 < rho_max <= 1:
        raise FleetOptError(f"rho_max={rho_max}: the utilization cap must be in (0, 1]")
    q = percentile / 100.0
    _check(load, rho_max)
    kernels = (load_compiled_kernels() if use_kernel
               else compiled_kernels() if use_kernel is None else None)
    if kernels is not None and not load.load_dependent:
        return kernels.min_instances(load, slo_s, q, rho_max, paper_rule)
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
        if pairs is not None and kernels is not None:
            preset = result.copy()
            preset[busy] = 1
            fast = load.compiled_search(busy, slo_s, q, rho_max, paper_rule, pairs=pairs,
                                        preset=preset)
            if fast is not None:
                return fast
        fast = (load.compiled_search(busy, slo_s, q, rho_max, paper_rule)
                if kernels is not None else None)
        result[busy] = (fast if fast is not None
                        else _search_numpy(load, busy, slo_s, q, rho_max, paper_rule))
    return result


def redundancy_floor(counts: np.ndarray, busy: np.ndarray, min_per_pool: int) -> np.ndarray:
    """``max(N, min_per_pool)`` where a pool gets requests (``busy``, broadcast against
    ``counts``) and can be served (``N >= 0``); ``-1`` and idle pools are kept as they are.
    A new array (int64)."""
    out = np.array(counts, dtype=np.int64)
    lift = np.broadcast_to(busy, out.shape) & (out >= 0)
    out[lift] = np.maximum(out[lift], min_per_pool)
    return out
