"""Where the simulator's requests come from: Poisson arrivals or a trace replay.

:func:`_resolve_source` settles the workload (lengths and analytical values), the trace
and the mean rate of one :func:`~fleetopt_milp.simulator.simulate` call; :func:`_requests`
draws one replication's arrivals and lengths (docs/model.md §1, "Arrivals"): Poisson at a
rate with lengths from a workload, or a trace replayed with its own timestamps (tiled
cyclically when more requests are asked for than it holds).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np

from .errors import FleetOptError
from .plan import Plan
from .workload import Trace, load_workload, paper_split

if TYPE_CHECKING:
    from .sim_replication import _Job


def _trace_segment(trace: Trace, n: int, offset: int):
    """``n`` requests of ``trace`` from ``offset``, cyclically; each wrap shifts time by
    the trace's duration plus one mean gap, so arrivals stay ordered."""
    m = trace.n_requests
    k = offset + np.arange(n)
    idx = k % m
    cycle = k // m
    gap = trace.duration_s / max(m - 1, 1)
    period = trace.duration_s + (gap if gap > 0 else 1.0)
    arrival = trace.arrival_s[idx] + cycle * period
    arrival = arrival - arrival[0]
    return arrival, trace.input_tokens[idx].copy(), trace.output_tokens[idx].copy()


def _requests(job: _Job, rng: np.random.Generator):
    if job.trace is not None:
        offset = int(rng.integers(job.trace.n_requests)) if job.rotate_trace else 0
        arrival, lin, lout = _trace_segment(job.trace, job.n_requests, offset)
        if job.fleet.paper_compat and job.workload.kind == "trace":
            lin, lout = paper_split(lin + lout)
        return arrival, lin, lout
    lin, lout = job.workload.sample(job.n_requests, rng)
    arrival = np.cumsum(rng.exponential(1.0 / job.rate_rps, job.n_requests))
    return arrival, lin, lout


def _resolve_source(plan: Plan | None, workload, trace, rate_rps, rate_scale, fleet):
    """(workload for lengths/analytics, trace or None, mean rate simulated)."""
    if workload is None:
        if plan is None:
            raise FleetOptError("workload: give a workload (name, path or Workload) to "
                                "simulate a FleetSpec")
        from .provenance import workload_spec

        try:
            wl = load_workload(workload_spec(plan))
        except FleetOptError as exc:
            raise FleetOptError(f"the plan's workload {workload_spec(plan)!r} cannot be loaded "
                                f"({exc}); pass it with --workload PATH") from None
    elif isinstance(workload, (str, os.PathLike)):
        wl = load_workload(workload)
    else:
        wl = workload
    tr = None
    if trace is not None and trace is not False:
        if trace is True:
            if wl.trace is None:
                raise FleetOptError(f"trace: workload {wl.name!r} has no timestamps; give a "
                                    "trace file (--trace PATH) or simulate Poisson arrivals")
            tr = wl.trace
        elif isinstance(trace, Trace):
            tr = trace
        else:
            wl = load_workload(trace)
            if wl.trace is None:
                raise FleetOptError(f"trace={trace}: this file has no timestamps; give an "
                                    "Azure CSV or Mooncake JSONL trace")
            tr = wl.trace
    if rate_scale is not None and not (math.isfinite(rate_scale) and rate_scale > 0):
        raise FleetOptError(f"rate_scale={rate_scale}: must be a positive factor")
    if rate_rps is not None and not (math.isfinite(rate_rps) and rate_rps > 0):
        raise FleetOptError(f"rate_rps={rate_rps}: must be a positive rate in req/s")
    scale = 1.0 if rate_scale is None else float(rate_scale)
    if tr is not None:
        if rate_rps is not None or scale != 1.0:
            target = (rate_rps if rate_rps is not None else tr.mean_rate_rps) * scale
            tr = tr.scaled_to_rate(target)
        rate = tr.mean_rate_rps
    else:
        if rate_rps is None:
            if plan is None:
                raise FleetOptError("rate_rps: give the Poisson arrival rate (req/s)")
            rate_rps = plan.rate_rps
        rate = float(rate_rps) * scale
    if fleet.paper_compat and wl.kind == "trace":
        wl = wl.with_paper_split()
    longest = int(wl.max_total_tokens)
    if tr is not None:
        longest = max(longest, int(np.max(tr.input_tokens + tr.output_tokens)))
    return wl, tr, rate, longest
