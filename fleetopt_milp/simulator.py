"""Discrete-event simulation of a fleet plan.

docs/model.md §2-4 define what is simulated; this module checks the analytical model
(section 3) against it. Plans are certified from its results by
:mod:`fleetopt_milp.certification` (section 6: "no plan that the model calls feasible may
miss its SLO in simulation"). It refuses fleets with no steady state to measure: requests
longer than the last window, or an allocation loaded to utilization >= 1.

Fidelities
----------
``slot``
    Each KV slot is a server (docs/model.md §3): every allocation of a pool is an FCFS
    M/G/c queue with ``c = instances * slots(C)`` and service time
    ``S = profile.service_s(L_in, L_out, C)`` (``C`` = pool window; compressed requests use
    their trimmed input and ``L = B``). ``TTFT = wait + profile.prefill_s(L_in)`` plus the
    compression latency for compressed requests. The exact semantics of the model's queue,
    so it validates the queueing mathematics.
``engine``
    Continuous batching per instance (docs/model.md §2), see
    :func:`fleetopt_milp._kernels.engine_run`: iteration time
    ``W + s n + H n_prefill + p x_prefill + H sum_decode (kv + 1) / C_cal`` from the
    live batch (``s`` = the profile's per-sequence cost and ``p`` its compute per prompt
    token, 0 unless calibrated; a prefilling sequence costs one calibration context per
    chunk plus the compute of the prompt tokens its chunk carries, ``x_prefill`` in all:
    prefill charged pro rata, docs/engine.md §1; a decoding one its live context), chunked
    prefill, first token when the prefill completes, then one token per iteration; batch
    cap the engine's ``Profile.engine_max_batch`` (or ``max_batch``), with admission by free
    KV blocks below it and preemption of the longest sequence by recompute when they run
    out; with ``Profile.scheduler_steps`` = M > 1 an instance admits only at the end of a
    group of M iterations or into an empty batch. Dispatch: **join the shortest queue** -
    an arriving request goes to the allocation's instance with the fewest outstanding
    requests (running + waiting), ties to the lowest index, and waits in that instance's
    FCFS queue.

Arrivals are Poisson at a rate with lengths drawn from a :class:`~fleetopt_milp.workload.
Workload`, or a :class:`~fleetopt_milp.workload.Trace` replayed with its own timestamps
(optionally time-scaled to a target rate; tiled when more requests are asked for than it
holds). Routing is :func:`fleetopt_milp.routing.route` (pools by length and
Compress-and-Route) then a random split among a pool's allocations by ``load_share``.

Measurement: the first ``warmup_fraction`` of requests (arrival order), or those arriving
in the first ``warmup_s`` seconds if more (by default 3 mean residual service times
``E[S^2] / (2 E[S])`` of the slowest allocation; an engine allocation's ``E[S]`` is its
batch's relaxation time, the hold time times ``tau / W``, docs/engine.md §2), are discarded; the measurement window
runs from the first measured arrival to the last arrival and the fleet
then drains, so every measured request completes. Utilization = busy slot-seconds inside
the window / (slots x window length); pools and the fleet average their allocations'
utilizations weighted by instances. Confidence intervals are Student-t intervals over
independent replications (default 5 for Poisson arrivals), or over ``batches`` batch
means of one long run when ``replications == 1`` (the default for trace replays; with
several replications a trace is replayed from random cyclic offsets).

Analytical values beside the simulated ones come from the exact pool moments
(:class:`~fleetopt_milp.demand.MomentTable`) and :mod:`fleetopt_milp.queueing`, for the
simulated workload at the simulated mean rate.

Replications run on a local process pool by default (``workers``), or on a Dask cluster
when ``scheduler`` is a scheduler address (``tcp://host:port``) or a
``dask.distributed.Client``; workers need fleetopt_milp importable.

This module holds :func:`simulate` and its argument checks; the pieces live beside it and
their public names are re-exported here: :mod:`~fleetopt_milp.sim_fleet` (what is
simulated), :mod:`~fleetopt_milp.sim_arrivals` (Poisson arrivals and trace replays),
:mod:`~fleetopt_milp.sim_replication` (one replication and the parallel map),
:mod:`~fleetopt_milp.sim_analytical` (the model's figures beside the simulated ones),
:mod:`~fleetopt_milp.sim_results` (result records and confidence intervals) and
:mod:`~fleetopt_milp.sim_blocks` (single-queue building blocks).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace

import numpy as np

from .errors import FleetOptError
from .hardware import Catalog
from .plan import Plan
from .sim_analytical import _analytical, _queues, _warmup_s
from .sim_arrivals import _resolve_source
from .sim_blocks import EngineTimes, engine_times, slot_start_times
from .sim_fleet import AllocationSpec, FleetSpec, fleet_from_plan
from .sim_replication import _groups, _Job, _map
from .sim_results import (
    _METRICS,
    Analytical,
    Estimate,
    GroupStats,
    SimulationResult,
    _num,  # noqa: F401  (imported from here by fleetopt_milp.certification)
    t_interval,
)
from .workload import Trace, Workload

__all__ = [
    "FIDELITIES",
    "Estimate",
    "t_interval",
    "AllocationSpec",
    "FleetSpec",
    "fleet_from_plan",
    "Analytical",
    "GroupStats",
    "SimulationResult",
    "simulate",
    "slot_start_times",
    "EngineTimes",
    "engine_times",
]

_CERTIFICATION = ("STEADY_SERVICE_TIMES", "STEADY_TAIL_REQUESTS", "PoolVerdict",
                  "Certification", "steady_state_gaps", "certification_from", "certify",
                  "Verification", "verify_candidates")


def __getattr__(name: str):
    """Certification lives in :mod:`fleetopt_milp.certification`; its names are still
    importable from here."""
    if name in _CERTIFICATION:
        from . import certification

        return getattr(certification, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


FIDELITIES = ("slot", "engine")
DEFAULT_POISSON_REQUESTS = 200_000
DEFAULT_REPLICATIONS = 5


# ---------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------


def _check_counts(**values: tuple) -> None:
    """Each ``name=(value, least)``: ``value`` is None or a whole number >= ``least``."""
    for name, (v, least) in values.items():
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < least:
            raise FleetOptError(f"{name}={v!r}: must be a whole number >= {least} "
                                f"(--{name.replace('_', '-')})")


#: Memory one simulated request takes in a replication (its arrays and temporaries), bytes.
BYTES_PER_REQUEST = 256


def _check_memory(n_requests: int | None) -> None:
    """Refuse a replication larger than this machine's memory could hold."""
    if n_requests is None:
        return
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return
    if n_requests * BYTES_PER_REQUEST > memory:
        raise FleetOptError(
            f"n_requests={n_requests:,}: one replication would need about "
            f"{n_requests * BYTES_PER_REQUEST / 1e9:,.3g} GB, more than this machine's "
            f"{memory / 1e9:,.3g} GB; use at most {memory // BYTES_PER_REQUEST:,} requests "
            "per replication and more --replications")


def _check_window(fleet: FleetSpec, longest: int) -> None:
    """Refuse requests longer than the last window: no pool can serve them."""
    last = fleet.windows_tokens[-1]
    if longest > last:
        raise FleetOptError(
            f"the simulated workload has requests up to {longest} tokens, beyond the plan's "
            f"long window of {last}; no pool can serve them: simulate the workload the plan "
            f"was made for (--workload) or re-plan with --long-context {longest} or more")


def _check_stable(fleet: FleetSpec, ana: list[Analytical]) -> None:
    """Refuse an allocation whose offered load reaches its slots (utilization >= 1, or
    traffic and no instances): its queue grows without bound, so every simulated figure
    would depend on the run length and no steady state exists (docs/model.md §3)."""
    for a, fig in zip(fleet.ordered_allocations, ana, strict=False):
        if fig.rate_rps <= 0 or fig.utilization < 1.0:
            continue
        if a.instances == 0:
            raise FleetOptError(
                f"pool {a.name!r} has no instances but receives {fig.rate_rps:,.3g} req/s of "
                "this workload; re-plan for this workload and rate (or give the pool "
                "instances, e.g. `fleetopt solve --min-instances 1`)")
        raise FleetOptError(
            f"pool {a.name!r} is overloaded: {fig.rate_rps:,.4g} req/s need "
            f"{fig.utilization * fig.servers:,.4g} busy slots of its {fig.servers:,} "
            f"(utilization {fig.utilization:.3g} >= 1), so its queue grows without bound; "
            "lower --rate/--rate-scale or re-plan for this rate")


def simulate(plan: Plan | FleetSpec, workload: Workload | str | None = None, *,
             rate_rps: float | None = None, rate_scale: float | None = None,
             trace: Trace | str | bool | None = None, n_requests: int | None = None,
             replications: int | None = None, seed: int = 0, fidelity: str = "slot",
             warmup_fraction: float = 0.1, warmup_s: float | None = None,
             batches: int = 10, confidence: float = 0.95,
             workers: int | None = None, scheduler=None, max_batch: int | None = None,
             catalog: Catalog | None = None, analytical: bool = True) -> SimulationResult:
    """Simulate a plan (or a :class:`FleetSpec`) and measure it against the model.

    - ``workload``: Workload, built-in name or path; default the plan's workload.
    - Arrivals: Poisson at ``rate_rps`` (default the plan's rate) times ``rate_scale``; or
      with ``trace`` (``True`` = the workload's own timestamps, a path/name, or a
      :class:`Trace`) a replay, time-scaled to ``rate_rps`` and/or by ``rate_scale``. A
      trace given by path or name also supplies the workload (lengths and analytical
      values); the analytical values assume Poisson arrivals at the trace's mean rate.
    - ``n_requests`` per replication, warm-up included (default 200,000 for Poisson, the
      trace's length for a replay). Discarded: the first ``warmup_fraction`` of requests
      or those arriving in the first ``warmup_s`` seconds, whichever is more (default
      ``warmup_s``: 3 mean residual service times of the slowest allocation), at most
      half the run (a note says when the cap applies: simulate more requests).
    - ``replications`` (default 5 for Poisson, 1 for traces); with 1, ``batches`` batch
      means give the intervals. Seeds come from ``SeedSequence(seed).spawn``.
    - ``fidelity``: ``"slot"`` or ``"engine"`` (module docstring); ``max_batch`` overrides
      the engine's batch cap (default ``Profile.engine_max_batch``).
    - ``workers``: local processes (default: all cores once the run is large enough);
      ``scheduler``: Dask scheduler address or ``Client``.
    """
    t_wall = time.perf_counter()
    if fidelity not in FIDELITIES:
        raise FleetOptError(f"fidelity={fidelity!r}: use one of {', '.join(FIDELITIES)}")
    _check_counts(seed=(seed, 0), n_requests=(n_requests, 1), replications=(replications, 1),
                  batches=(batches, 1), workers=(workers, 1), max_batch=(max_batch, 1))
    _check_memory(n_requests)
    is_plan = isinstance(plan, Plan)
    fleet = fleet_from_plan(plan, catalog, max_batch) if is_plan else plan.validated()
    if not is_plan and max_batch is not None:
        fleet = replace(fleet, allocations=tuple(replace(a, max_batch=max_batch)
                                                 for a in fleet.allocations)).validated()
    wl, tr, rate, longest = _resolve_source(plan if is_plan else None, workload, trace,
                                            rate_rps, rate_scale, fleet)
    _check_window(fleet, longest)
    if not 0 <= warmup_fraction < 1:
        raise FleetOptError(f"warmup_fraction={warmup_fraction}: must be in [0, 1)")
    if not 0 < confidence < 1:
        raise FleetOptError(f"confidence={confidence}: must be in (0, 1), e.g. 0.95")
    if replications is None:
        replications = 1 if tr is not None else DEFAULT_REPLICATIONS
    if replications < 1:
        raise FleetOptError(f"replications={replications}: need at least 1")
    if n_requests is None:
        n_requests = tr.n_requests if tr is not None else DEFAULT_POISSON_REQUESTS
    n_windows = batches if replications == 1 else 1
    if n_windows < 2 and replications == 1:
        raise FleetOptError(f"batches={batches}: one replication needs >= 2 batches for an "
                            "interval (or use --replications >= 2)")
    if n_requests < 20 * n_windows or n_requests < 100:
        raise FleetOptError(f"n_requests={n_requests}: too few to measure; use >= "
                            f"{max(100, 20 * n_windows)}")
    queues = _queues(fleet, wl, rate)
    ana = _analytical(fleet, queues) if analytical else None
    if ana is not None:
        _check_stable(fleet, ana)
    if warmup_s is None:
        warmup_s = _warmup_s(queues)
    if not (math.isfinite(warmup_s) and warmup_s >= 0):
        raise FleetOptError(f"warmup_s={warmup_s}: must be >= 0 seconds (None = automatic)")
    seeds = np.random.SeedSequence(seed).spawn(replications)
    jobs = [_Job(fleet, wl, tr, rate, int(n_requests), fidelity, float(warmup_fraction),
                 float(warmup_s), n_windows, tr is not None and replications > 1, s)
            for s in seeds]
    results = _map(jobs, workers, scheduler)

    names, kinds = _groups(fleet)
    stacked = {m: np.concatenate([r[m] for r in results], axis=0) for m in _METRICS}
    ana = ana or [None] * len(names)
    allocs = fleet.ordered_allocations
    counts = np.sum([r["_counts"] for r in results], axis=0)
    groups = []
    for g, (name, kind) in enumerate(zip(names, kinds, strict=True)):
        est = {m: t_interval(stacked[m][:, g], confidence) for m in _METRICS}
        groups.append(GroupStats(name=name, kind=kind, requests=int(counts[g]),
                                 analytical=ana[g], **est))
    n_alloc = len(allocs)
    notes = []
    if any(r["_warmup_capped"] for r in results):
        notes.append(f"the warm-up ({warmup_s:.0f} s: 3 mean residual service times) was "
                     "capped at half the run; simulate more requests for steady state")
    sim_seconds = sum(r["_seconds"] for r in results)
    n_total = sum(r["_n"] for r in results)
    return SimulationResult(
        fidelity=fidelity, arrivals="trace" if tr is not None else "poisson", rate_rps=rate,
        n_requests=int(n_requests), replications=int(replications),
        ci_method="replications" if replications > 1 else "batch-means",
        confidence=confidence, warmup_fraction=float(warmup_fraction),
        warmup_s=float(warmup_s), seed=int(seed),
        slo_ms=fleet.slo_s * 1e3, percentile=fleet.percentile,
        allocations=tuple(groups[:n_alloc]),
        pools=tuple(groups[n_alloc:n_alloc + len(fleet.windows_tokens)]), fleet=groups[-1],
        unserved_share=sum(r["_unserved"] for r in results) / max(n_total, 1),
        requests_per_s=n_total / max(sim_seconds, 1e-12),
        wall_s=time.perf_counter() - t_wall, notes=tuple(notes),
        measured_s=float(np.mean([r["_measured_s"] for r in results])),
        warmup_capped=any(r["_warmup_capped"] for r in results))
