"""One replication of the simulation, and running many of them in parallel.

:func:`_run` samples, routes and simulates one replication at the ``slot`` or ``engine``
fidelity (the kernels of :mod:`fleetopt_milp._kernels`, docs/model.md §2-3) and measures
it per window and group (:func:`_window_metrics`); :func:`_map` runs replications
in-process, on a local process pool or on a Dask cluster.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from . import _kernels
from .errors import FleetOptError
from .parallel import dask_client
from .routing import route, split_allocations
from .sim_arrivals import _requests
from .sim_fleet import FleetSpec
from .sim_results import _METRICS
from .workload import Trace, Workload

_INLINE_BELOW = 400_000  # total simulated requests under which replications run in-process


@dataclass(frozen=True)
class _Job:
    fleet: FleetSpec
    workload: Workload
    trace: Trace | None
    rate_rps: float
    n_requests: int
    fidelity: str
    warmup_fraction: float
    warmup_s: float
    batches: int
    rotate_trace: bool
    seed: np.random.SeedSequence


def _alloc_arrays(fleet: FleetSpec):
    allocs = fleet.ordered_allocations
    inst = np.array([a.instances for a in allocs], dtype=np.int64)
    slots = np.array([fleet.slots(a) for a in allocs], dtype=np.int64)
    return allocs, inst, slots


def _run(job: _Job) -> dict:
    """Simulate one replication; returns per-window, per-group metric arrays."""
    t_start = time.perf_counter()
    fleet = job.fleet
    rng = np.random.default_rng(job.seed)
    arrival, lin, lout = _requests(job, rng)
    routed = route(lin, lout, fleet.windows_tokens, fleet.gammas, fleet.compressible_share,
                   rng)
    alloc = split_allocations(routed.pool, fleet.load_shares_by_pool, rng).astype(np.int64)
    allocs, inst, slots = _alloc_arrays(fleet)
    n = arrival.size
    lin_s = routed.input_tokens
    floor = np.zeros(n)
    service = np.zeros(n)
    order = np.argsort(alloc, kind="stable")
    bounds = np.searchsorted(alloc[order], np.arange(-1, len(allocs) + 1))
    for ai, a in enumerate(allocs):
        sel = order[bounds[ai + 1]:bounds[ai + 2]]
        if sel.size == 0:
            continue
        # TTFT floor: prefill plus the profile's fixed overhead (0 unless calibrated).
        floor[sel] = a.profile.prefill_s(lin_s[sel]) + a.profile.ttft_overhead_ms * 1e-3
        if job.fidelity == "slot":
            service[sel] = a.profile.service_s(lin_s[sel], lout[sel],
                                               fleet.windows_tokens[a.pool])
    floor += routed.compressed * fleet.compression_latency_s
    tpot = None
    preempt = None
    if job.fidelity == "slot":
        heap_size = inst * slots
        heap_off = np.concatenate([[0], np.cumsum(heap_size)[:-1]]).astype(np.int64)
        start = _kernels.fcfs_multi(arrival, service, alloc, heap_off, heap_size)
        wait = start - arrival
        ttft = wait + floor
        finish = start + service
        busy_from = start
    else:
        p = [a.profile for a in allocs]
        cap = np.array([a.max_batch or a.profile.engine_max_batch for a in allocs],
                       dtype=np.int64)
        kvb = np.array([x.kv_blocks for x in p], dtype=np.int64)
        bt = np.array([x.block_tokens for x in p], dtype=np.int64)
        inst_off = np.concatenate([[0], np.cumsum(inst)[:-1]]).astype(np.int64)
        first_admit, first_token, finish, held, preempt = _kernels.engine_run(
            arrival, alloc, lin_s.astype(np.int64), lout.astype(np.int64),
            inst_off, inst, cap, kvb, bt,
            np.array([x.chunk_tokens for x in p], dtype=np.int64),
            np.array([x.w_ms * 1e-3 for x in p]), np.array([x.h_ms * 1e-3 for x in p]),
            np.array([x.calib_tokens for x in p], dtype=np.float64),
            np.array([x.seq_ms * 1e-3 for x in p]),
            np.array([x.h_ms * 1e-3 for x in p]),
            np.array([x.prefill_ms_per_token * 1e-3 for x in p]),
            np.array([x.scheduler_steps for x in p], dtype=np.int64), True)
        wait = first_admit - arrival
        overhead = np.array([x.ttft_overhead_ms * 1e-3 for x in p] + [0.0])
        ttft = (first_token - arrival + routed.compressed * fleet.compression_latency_s
                + overhead[alloc])
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = (finish - first_token) / lout
        busy_from = finish - held
        slots = cap
    metrics = _window_metrics(job, arrival, alloc, routed.pool, wait, ttft, tpot, preempt,
                              busy_from, finish, inst, slots)
    metrics["_seconds"] = time.perf_counter() - t_start
    metrics["_n"] = n
    metrics["_unserved"] = int(np.sum(alloc < 0) + np.sum(np.isinf(ttft) & (alloc >= 0)))
    return metrics


def _groups(fleet: FleetSpec) -> tuple[list[str], list[str]]:
    allocs = fleet.ordered_allocations
    names = [a.name for a in allocs] + list(fleet.pool_names) + ["fleet"]
    kinds = ["allocation"] * len(allocs) + ["pool"] * len(fleet.pool_names) + ["fleet"]
    return names, kinds


def _window_metrics(job: _Job, arrival, alloc, pool, wait, ttft, tpot, preempt, busy_from,
                    finish, inst, slots) -> dict:
    """Metrics per measurement window (rows) and group (columns: allocations, pools, fleet)."""
    fleet = job.fleet
    n = arrival.size
    n_alloc = inst.size
    n_pool = len(fleet.windows_tokens)
    n_groups = n_alloc + n_pool + 1
    n_warm = max(int(job.warmup_fraction * n),
                 int(np.searchsorted(arrival, arrival[0] + job.warmup_s)))
    capped = n_warm > n // 2
    n_warm = min(n_warm, n // 2)
    edges = n_warm + (np.arange(job.batches + 1) * (n - n_warm)) // job.batches
    pool_of_alloc = np.array([a.pool for a in fleet.ordered_allocations], dtype=np.int64)
    q = [0.5, 0.9, 0.99, fleet.percentile / 100.0]
    out = {m: np.full((job.batches, n_groups), np.nan) for m in _METRICS}
    counts = np.zeros(n_groups, dtype=np.int64)
    slo = fleet.slo_s
    t_edges = np.append(arrival[edges[:-1]], arrival[n - 1])
    busy_w, done_w = _kernels.window_busy(busy_from, finish, alloc, t_edges, n_alloc)
    inst_pool = np.bincount(pool_of_alloc, weights=inst, minlength=n_pool)
    for b in range(job.batches):
        lo, hi = int(edges[b]), int(edges[b + 1])
        span = t_edges[b + 1] - t_edges[b]
        if span <= 0:
            continue
        # Utilization (busy slot-seconds / slot-seconds) and completions inside the window.
        util_a = np.where(inst > 0, busy_w[b] / np.maximum(inst * slots * span, 1e-300),
                          np.nan)
        util_p = np.bincount(pool_of_alloc, weights=np.nan_to_num(util_a) * inst,
                             minlength=n_pool) / np.where(inst_pool > 0, inst_pool, np.nan)
        util_f = np.sum(np.nan_to_num(util_a) * inst) / max(inst.sum(), 1)
        out["utilization"][b] = np.concatenate([util_a, util_p, [util_f]])
        comp = done_w[b]
        comp_p = np.bincount(pool_of_alloc, weights=comp, minlength=n_pool)
        out["throughput_rps"][b] = np.concatenate([comp, comp_p, [comp.sum()]]) / span
        # Per-request figures of the requests arriving in the window.
        sl = slice(lo, hi)
        w_a, w_p = alloc[sl], pool[sl]
        w_wait, w_ttft = wait[sl] * 1e3, ttft[sl] * 1e3
        w_tpot = None if tpot is None else tpot[sl] * 1e3
        w_pre = None if preempt is None else preempt[sl]
        masks = [w_a == a for a in range(n_alloc)] + [w_p == k for k in range(n_pool)]
        masks.append(np.ones(w_a.size, dtype=bool))
        for g, m in enumerate(masks):
            counts[g] += int(m.sum())
            if counts[g] == 0 or not np.any(m):
                continue
            tt = w_ttft[m]
            ww = w_wait[m]
            tq = np.quantile(tt, q, method="inverted_cdf")
            wq = np.quantile(ww, q[:3], method="inverted_cdf")
            out["p50_ttft_ms"][b, g], out["p90_ttft_ms"][b, g] = tq[0], tq[1]
            out["p99_ttft_ms"][b, g], out["ttft_at_percentile_ms"][b, g] = tq[2], tq[3]
            out["p50_wait_ms"][b, g], out["p90_wait_ms"][b, g] = wq[0], wq[1]
            out["p99_wait_ms"][b, g] = wq[2]
            out["mean_ttft_ms"][b, g] = tt.mean()
            out["mean_wait_ms"][b, g] = ww.mean()
            out["slo_miss_share"][b, g] = np.mean(tt > slo * 1e3)
            if w_tpot is not None:
                tp = w_tpot[m]
                tp = tp[np.isfinite(tp)]
                if tp.size:
                    out["mean_tpot_ms"][b, g] = tp.mean()
                    out["p99_tpot_ms"][b, g] = np.quantile(tp, 0.99)
                out["preemptions_per_request"][b, g] = w_pre[m].mean()
    out["_counts"] = counts
    out["_warmup_capped"] = capped
    out["_measured_s"] = float(t_edges[-1] - t_edges[0])
    return out

# ---------------------------------------------------------------------------------------
# Running replications
# ---------------------------------------------------------------------------------------


def _warm_kernels(fidelity: str) -> None:
    """Compile (or load from numba's cache) the kernel before forking workers."""
    z = np.zeros(1)
    i = np.zeros(1, dtype=np.int64)
    if fidelity == "slot":
        _kernels.fcfs_multi(z, z, i, i, np.ones(1, dtype=np.int64))
    else:
        one = np.ones(1, dtype=np.int64)
        _kernels.engine_run(z, i, one, one, i, one, one, one * 4, one, one, z + 1e-3,
                            z + 1e-4, z + 1.0, z, z + 1e-4, z, one, True)


def _map(jobs: list[_Job], workers: int | None, scheduler) -> list[dict]:
    if scheduler is not None:
        return _map_dask(jobs, scheduler)
    total = sum(j.n_requests for j in jobs)
    n_workers = (os.cpu_count() or 1) if workers is None else int(workers)
    if n_workers < 1:
        raise FleetOptError(f"workers={workers}: need at least one worker process")
    if n_workers == 1 or len(jobs) == 1 or (workers is None and total < _INLINE_BELOW):
        return [_run(j) for j in jobs]
    _warm_kernels(jobs[0].fidelity)
    with ProcessPoolExecutor(max_workers=min(n_workers, len(jobs))) as pool:
        return list(pool.map(_run, jobs))


def _map_dask(jobs: list[_Job], scheduler) -> list[dict]:
    with dask_client(scheduler) as client:
        return client.gather(client.map(_run, jobs, pure=False))
