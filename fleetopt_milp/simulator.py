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
    ``W + s n + P n_prefill + H sum_decode (kv + 1) / C_cal`` from the live batch
    (``s`` = the profile's per-sequence cost, 0 unless calibrated; a prefilling
    sequence costs one calibration context per chunk, plus the chunk's compute in calibrated
    profiles, as the model's prefill time ``Profile.prefill_s``; a decoding one its live
    context), chunked
    prefill, first token when the prefill completes, then one token per iteration; batch
    cap ``slots(C)`` (or ``max_batch``); the KV block budget with preemption of the
    longest sequence by recompute. Dispatch: **join the shortest queue** - an arriving
    request goes to the allocation's instance with the fewest outstanding requests
    (running + waiting), ties to the lowest index, and waits in that instance's FCFS queue.
    With the default batch cap ``slots(C)`` the KV budget always holds a full batch of
    window-length sequences, so preemption happens only with a larger ``max_batch``.

Arrivals are Poisson at a rate with lengths drawn from a :class:`~fleetopt_milp.workload.
Workload`, or a :class:`~fleetopt_milp.workload.Trace` replayed with its own timestamps
(optionally time-scaled to a target rate; tiled when more requests are asked for than it
holds). Routing is :func:`fleetopt_milp.routing.route` (pools by length and
Compress-and-Route) then a random split among a pool's allocations by ``load_share``.

Measurement: the first ``warmup_fraction`` of requests (arrival order), or those arriving
in the first ``warmup_s`` seconds if more (by default 3 mean residual service times
``E[S^2] / (2 E[S])`` of the slowest allocation), are discarded; the measurement window
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
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, fields, replace

import numpy as np
from scipy import special

from . import _kernels
from .demand import MomentTable
from .errors import FleetOptError
from .hardware import Catalog, Profile, load_catalog, resolve_profile
from .parallel import dask_client
from .plan import Plan
from .poolload import PoolLoad
from .queueing import Queue, QueueMix, pool_figures
from .routing import route, split_allocations
from .service import service_model
from .workload import Trace, Workload, load_workload, paper_split

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
_INLINE_BELOW = 400_000  # total simulated requests under which replications run in-process


# ---------------------------------------------------------------------------------------
# Confidence intervals
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Estimate:
    """A simulated figure: mean over ``n`` replications (or batches) and its interval.

    ``lo``/``hi`` bound the Student-t confidence interval of the mean; ``nan`` with fewer
    than two finite samples. Units are those of the field holding it.
    """

    mean: float
    lo: float
    hi: float
    n: int

    def to_dict(self) -> dict:
        return {"mean": self.mean, "lo": self.lo, "hi": self.hi, "n": self.n}

    @property
    def half_width(self) -> float:
        return 0.5 * (self.hi - self.lo)


def t_interval(samples, confidence: float = 0.95) -> Estimate:
    """Mean and Student-t ``confidence`` interval of i.i.d. ``samples`` (non-finite dropped).

    ``mean +- t_{(1+confidence)/2, n-1} * sd / sqrt(n)``.
    """
    x = np.asarray(samples, dtype=float).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if n < 2:
        return Estimate(m, math.nan, math.nan, n)
    half = float(special.stdtrit(n - 1, 0.5 + confidence / 2.0) * x.std(ddof=1) / math.sqrt(n))
    return Estimate(m, m - half, m + half, n)


# ---------------------------------------------------------------------------------------
# What is simulated
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AllocationSpec:
    """``instances`` replicas of ``profile`` in pool ``pool`` taking ``load_share`` of it.

    ``max_batch``: engine batch cap per instance (``None`` = ``slots(C)``, docs/model.md
    §2).
    """

    name: str
    pool: int
    profile: Profile
    instances: int
    load_share: float
    max_batch: int | None = None


@dataclass(frozen=True)
class FleetSpec:
    """A fleet to simulate: pools by window, C&R bands, allocations, and the SLO.

    ``windows_tokens``: ascending pool windows (the last is the long context).
    ``gammas``: one band ratio per boundary (``K - 1``). ``compressible_share``: ``p_c``.
    ``compression_latency_s``: added to the TTFT of compressed requests (s).
    ``slo_s``/``percentile``: the TTFT SLO (P``percentile`` TTFT <= ``slo_s``).
    ``paper_compat``: lengths of trace workloads are re-split 80/20 (docs/model.md §1).
    ``service_model``: the model whose analytical figures are printed beside the simulated
    ones (the plan's; ``"slot"`` or ``"engine"``, docs/engine.md).
    """

    pool_names: tuple[str, ...]
    windows_tokens: tuple[int, ...]
    gammas: tuple[float, ...]
    compressible_share: float
    compression_latency_s: float
    allocations: tuple[AllocationSpec, ...]
    slo_s: float
    percentile: float = 99.0
    paper_compat: bool = False
    service_model: str = "slot"

    def validated(self) -> FleetSpec:
        """Check the fleet; raise :class:`FleetOptError` naming the field and the fix."""
        k = len(self.windows_tokens)
        if len(self.pool_names) != k:
            raise FleetOptError(f"pool_names: {len(self.pool_names)} names for {k} pools")
        if not self.allocations:
            raise FleetOptError("allocations: a fleet needs at least one allocation")
        if not (math.isfinite(self.slo_s) and self.slo_s > 0):
            raise FleetOptError(f"slo_s={self.slo_s}: the TTFT SLO must be positive seconds")
        if not 0 < self.percentile < 100:
            raise FleetOptError(f"percentile={self.percentile}: must be in (0, 100)")
        if self.compression_latency_s < 0:
            raise FleetOptError(f"compression_latency_s={self.compression_latency_s}: "
                                "must be >= 0")
        for a in self.allocations:
            if not 0 <= a.pool < k:
                raise FleetOptError(f"allocation {a.name!r}: pool index {a.pool} not in 0..{k-1}")
            if a.instances < 0:
                raise FleetOptError(f"allocation {a.name!r}: instances={a.instances} must be "
                                    ">= 0")
            slots = a.profile.slots(self.windows_tokens[a.pool])
            if a.max_batch is not None and a.max_batch < 1:
                raise FleetOptError(f"allocation {a.name!r}: max_batch={a.max_batch} must be "
                                    ">= 1 (None = slots(C))")
            if a.profile.kv_capacity_tokens < self.windows_tokens[a.pool] or slots < 1:
                raise FleetOptError(f"allocation {a.name!r}: a {self.windows_tokens[a.pool]}-"
                                    f"token window does not fit {a.profile.name}'s KV cache")
        # Routing rule checks (windows ascending, band ends) and shares summing to 1.
        route(np.zeros(0, np.int64), np.zeros(0, np.int64), self.windows_tokens, self.gammas,
              self.compressible_share, np.random.default_rng(0))
        split_allocations(np.zeros(0, np.int32), self.load_shares_by_pool,
                          np.random.default_rng(0))
        return self

    @property
    def load_shares_by_pool(self) -> list[list[float]]:
        """Per pool, the load shares of its allocations in :attr:`allocations` order."""
        out: list[list[float]] = [[] for _ in self.windows_tokens]
        for a in self.allocations:
            out[a.pool].append(a.load_share)
        return out

    @property
    def ordered_allocations(self) -> tuple[AllocationSpec, ...]:
        """Allocations grouped by pool (the global index order of
        :func:`~fleetopt_milp.routing.split_allocations`)."""
        return tuple(sorted(self.allocations, key=lambda a: a.pool))

    def slots(self, a: AllocationSpec) -> int:
        """KV slots per instance of allocation ``a`` at its pool's window."""
        return a.profile.slots(self.windows_tokens[a.pool])


def _profile_for(catalog: Catalog, profile: str, gpu: str, model: str, tp: int) -> Profile:
    found = catalog.find_profile(profile)
    if found is not None:
        return found
    try:
        return resolve_profile(catalog, gpu, model, tp)
    except FleetOptError as exc:
        raise FleetOptError(f"plan allocation profile {profile!r}: not in the catalogue and no "
                            f"roofline profile for {gpu}/{model}/tp{tp} ({exc}); add it to a "
                            "catalogue file") from None


def fleet_from_plan(plan: Plan, catalog: Catalog | None = None,
                    max_batch: int | None = None) -> FleetSpec:
    """The :class:`FleetSpec` of a plan (profiles resolved from the catalogue by name).

    Raises :class:`FleetOptError` when a profile's slots at its pool's window disagree
    with the plan's ``slots_per_instance`` (the catalogue changed since the plan was made).
    """
    catalog = catalog or load_catalog()
    pools = plan.pools
    if not pools:
        raise FleetOptError("plan: no pools to simulate; write plans with `fleetopt plan`")
    windows = tuple(int(p.context_tokens) for p in pools)
    for k, p in enumerate(pools):
        lo = 0 if k == 0 else windows[k - 1]
        if int(p.lo_tokens) != lo:
            raise FleetOptError(f"plan pool {p.role!r}: lo_tokens={p.lo_tokens} but the pool "
                                f"below ends at {lo}; pools must tile (0, long context]")
    allocs = []
    for k, p in enumerate(pools):
        for j, a in enumerate(p.allocations):
            prof = _profile_for(catalog, a.profile, a.gpu, a.model, a.tp)
            s = prof.slots(windows[k])
            if s != a.slots_per_instance:
                raise FleetOptError(
                    f"plan pool {p.role!r} allocation {a.profile!r}: the catalogue gives {s} "
                    f"slots at {windows[k]} tokens, the plan {a.slots_per_instance}; re-plan "
                    "with the current catalogue")
            name = p.role if len(p.allocations) == 1 else f"{p.role}/{a.profile}#{j}"
            allocs.append(AllocationSpec(name, k, prof, int(a.instances), float(a.load_share),
                                         max_batch))
    return FleetSpec(
        pool_names=tuple(p.role for p in pools), windows_tokens=windows,
        gammas=tuple(float(p.gamma) for p in pools[:-1]),
        compressible_share=float(plan.compressible_share),
        compression_latency_s=float(plan.compression_latency_ms) * 1e-3,
        allocations=tuple(allocs), slo_s=float(plan.slo_ms) * 1e-3,
        percentile=float(plan.percentile), paper_compat=bool(plan.paper_compat),
        service_model=plan.service_model).validated()


# ---------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Analytical:
    """The model's figures for one allocation, pool or the fleet (docs/model.md §3).

    utilization: ``a / c``. p99_ttft_ms: P99 of wait + prefill (the tail rule).
    ttft_at_percentile_ms: the same at the SLO's percentile. slo_miss_share: P(TTFT > SLO).
    mean_wait_ms: Allen-Cunneen ``C(c, a) E[S] / (c - a) (1 + cs2) / 2`` (exact for M/M/c).
    p99_wait_ms: P99 of the wait. paper_p99_ttft_ms: the paper's rule, P99 wait + mean
    prefill. rate_rps, mean_service_s, cs2, servers: the queue's inputs (allocations only;
    pools and the fleet give the total rate and servers).
    """

    utilization: float
    p99_ttft_ms: float
    ttft_at_percentile_ms: float
    slo_miss_share: float
    mean_wait_ms: float
    p99_wait_ms: float
    paper_p99_ttft_ms: float
    rate_rps: float
    mean_service_s: float
    cs2: float
    servers: int

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


_METRICS = ("utilization", "throughput_rps", "mean_ttft_ms", "p50_ttft_ms", "p90_ttft_ms",
            "p99_ttft_ms", "ttft_at_percentile_ms", "mean_wait_ms", "p50_wait_ms",
            "p90_wait_ms", "p99_wait_ms", "mean_tpot_ms", "p99_tpot_ms", "slo_miss_share",
            "preemptions_per_request")


def _num(x):
    """A JSON-safe number: ``None`` for nan and infinities."""
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x


@dataclass(frozen=True)
class GroupStats:
    """Simulated figures of one allocation, pool or the fleet, each an :class:`Estimate`.

    Times in ms, throughput in completed requests/s, shares in [0, 1]. TPOT (time per
    output token after the first) and preemptions exist for the ``engine`` fidelity only
    (``nan`` for ``slot``). ``requests``: measured requests over all replications.
    ``analytical``: the model's figures for the same group.
    """

    name: str
    kind: str
    requests: int
    utilization: Estimate
    throughput_rps: Estimate
    mean_ttft_ms: Estimate
    p50_ttft_ms: Estimate
    p90_ttft_ms: Estimate
    p99_ttft_ms: Estimate
    ttft_at_percentile_ms: Estimate
    mean_wait_ms: Estimate
    p50_wait_ms: Estimate
    p90_wait_ms: Estimate
    p99_wait_ms: Estimate
    mean_tpot_ms: Estimate
    p99_tpot_ms: Estimate
    slo_miss_share: Estimate
    preemptions_per_request: Estimate
    analytical: Analytical | None = None

    def to_dict(self) -> dict:
        """Flat JSON: ``<metric>`` (mean), ``<metric>_ci`` ([lo, hi]), ``analytical_<x>``;
        ``None`` where a figure is undefined (nan) or infinite."""
        d: dict = {"name": self.name, "kind": self.kind, "requests": self.requests}
        for m in _METRICS:
            e: Estimate = getattr(self, m)
            d[m] = _num(e.mean)
            d[m + "_ci"] = [_num(e.lo), _num(e.hi)]
        if self.analytical is not None:
            for k, v in self.analytical.to_dict().items():
                d["analytical_" + k] = _num(v)
        return d


@dataclass(frozen=True)
class SimulationResult:
    """Everything one :func:`simulate` call measured.

    ``allocations``/``pools``/``fleet``: :class:`GroupStats`. ``arrivals``: ``"poisson"``
    or ``"trace"``; ``rate_rps``: mean arrival rate simulated (req/s). ``ci_method``:
    ``"replications"`` or ``"batch-means"``. ``measured_s``: simulated seconds after the
    warm-up, per replication (mean); ``warmup_capped``: the warm-up was cut to half the run
    (too few requests to warm up). ``unserved_share``: share of requests longer
    than the last window or routed to an allocation without instances (counted as SLO
    misses). ``requests_per_s``: simulated requests per second of one core (sampling,
    routing, the kernel and the statistics of one replication). ``wall_s``: wall-clock
    seconds of the whole call.
    """

    fidelity: str
    arrivals: str
    rate_rps: float
    n_requests: int
    replications: int
    ci_method: str
    confidence: float
    warmup_fraction: float
    warmup_s: float
    seed: int
    slo_ms: float
    percentile: float
    allocations: tuple[GroupStats, ...]
    pools: tuple[GroupStats, ...]
    fleet: GroupStats
    unserved_share: float
    requests_per_s: float
    wall_s: float
    notes: tuple[str, ...] = field(default=())
    measured_s: float = math.nan
    warmup_capped: bool = False

    def pool(self, name: str) -> GroupStats:
        """The pool named ``name`` (e.g. ``"short"``)."""
        for p in self.pools:
            if p.name == name:
                return p
        raise FleetOptError(f"no pool {name!r}; pools: {', '.join(p.name for p in self.pools)}")

    def to_dict(self) -> dict:
        out = {f.name: _num(getattr(self, f.name)) for f in fields(self)
               if f.name not in ("allocations", "pools", "fleet", "notes")}
        out["schema"] = "fleetopt-simulation/1"
        out["pools"] = [p.to_dict() for p in self.pools]
        out["allocations"] = [a.to_dict() for a in self.allocations]
        out["fleet"] = self.fleet.to_dict()
        out["notes"] = list(self.notes)
        return out


# ---------------------------------------------------------------------------------------
# One replication
# ---------------------------------------------------------------------------------------


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
        cap = np.array([a.max_batch or s for a, s in zip(allocs, slots, strict=True)],
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
            np.array([(x.h_ms + x.chunk_compute_ms) * 1e-3 for x in p]), True)
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
# Analytical figures
# ---------------------------------------------------------------------------------------


def _queues(fleet: FleetSpec, workload: Workload, rate_rps: float) -> list[Queue]:
    """Analytical queue of every allocation, from the exact pool moments (docs/model.md §3),
    in :attr:`FleetSpec.ordered_allocations` order."""
    windows = np.asarray(fleet.windows_tokens, dtype=np.int64)
    gammas = np.asarray(fleet.gammas, dtype=float)
    loads: dict[str, PoolLoad] = {}
    model = service_model(fleet.service_model)
    out = []
    for a in fleet.ordered_allocations:
        key = a.profile.name
        if key not in loads:  # one table per profile; every pool's load at the total rate
            t = MomentTable(workload, a.profile, windows[:-1], np.unique(np.r_[1.0, gammas]),
                            int(windows[-1]), fleet.compression_latency_s)
            moments = t.pools(windows[None, :], gammas[None, :], fleet.compressible_share)
            loads[key] = PoolLoad.concat(
                [model.pool_load(m, t, [int(windows[k])], rate_rps)
                 for k, m in enumerate(moments)])
        out.append(loads[key].queue(a.pool, a.instances, a.load_share))
    return out


def _group(queues: list[Queue], fleet: FleetSpec) -> Analytical:
    """Analytical figures of a group of allocations (rate-weighted mixture of their queues)."""
    mix = QueueMix.by_rate(queues)
    f = pool_figures(mix, fleet.slo_s, fleet.percentile, fleet.paper_compat)
    live = [(w, x) for w, x in zip(mix.shares, queues, strict=True) if w > 0]
    one = queues[0] if len(queues) == 1 else None
    return Analytical(
        utilization=f.utilization, p99_ttft_ms=f.p99_ttft_ms,
        ttft_at_percentile_ms=f.ttft_at_percentile_ms, slo_miss_share=f.slo_miss_share,
        mean_wait_ms=f.mean_wait_ms, p99_wait_ms=f.p99_wait_ms,
        paper_p99_ttft_ms=f.paper_p99_ttft_ms,
        rate_rps=sum(x.rate_rps for x in queues),
        mean_service_s=(one.mean_service_s if one is not None
                        else sum(w * x.mean_service_s for w, x in live)),
        cs2=one.cs2 if one is not None else math.nan,
        servers=mix.servers)


def _warmup_s(queues: list[Queue]) -> float:
    """Automatic warm-up time: 3 x the longest mean residual service time
    ``E[S^2] / (2 E[S]) = E[S] (1 + cs2) / 2`` of the allocations with traffic, the time an
    empty M/G/c needs to fill its slots to their steady occupancy."""
    return 3.0 * max((x.mean_service_s * (1.0 + x.cs2) / 2.0 for x in queues
                      if x.rate_rps > 0), default=0.0)


def _analytical(fleet: FleetSpec, queues: list[Queue]) -> list[Analytical]:
    """Analytical figures per group (allocations, pools, fleet), in :func:`_groups` order."""
    allocs = fleet.ordered_allocations
    out = [_group([x], fleet) for x in queues]
    for k in range(len(fleet.windows_tokens)):
        out.append(_group([x for x, a in zip(queues, allocs, strict=True) if a.pool == k],
                          fleet))
    out.append(_group(queues, fleet))
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
                            z + 1e-4, z + 1.0, z, z + 1e-4, True)


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


# ---------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------


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
      the engine's batch cap (default ``slots(C)``).
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


# ---------------------------------------------------------------------------------------
# Single-queue building blocks (tests, benchmarks, custom studies)
# ---------------------------------------------------------------------------------------


def slot_start_times(arrival_s, service_s, servers: int) -> np.ndarray:
    """Service start times (s) of one FCFS queue with ``servers`` identical servers.

    ``arrival_s`` non-decreasing, ``service_s`` >= 0 (arrays of one length). Wait =
    start - arrival. The ``slot`` fidelity's kernel (:func:`fleetopt_milp._kernels.
    fcfs_multi`) for a single queue.
    """
    arr = np.ascontiguousarray(arrival_s, dtype=np.float64)
    svc = np.ascontiguousarray(service_s, dtype=np.float64)
    if arr.shape != svc.shape or arr.ndim != 1:
        raise FleetOptError("slot_start_times: arrival_s and service_s must be 1-D arrays of "
                            "one length")
    if np.any(np.diff(arr) < 0):
        raise FleetOptError("slot_start_times: arrival_s must be non-decreasing; sort it")
    if np.any(svc < 0):
        raise FleetOptError("slot_start_times: service_s must be >= 0")
    if servers < 1:
        raise FleetOptError(f"servers={servers}: need at least one server")
    return _kernels.fcfs_multi(arr, svc, np.zeros(arr.size, dtype=np.int64),
                               np.zeros(1, dtype=np.int64),
                               np.array([servers], dtype=np.int64))


@dataclass(frozen=True)
class EngineTimes:
    """Per-request times of the ``engine`` fidelity (s): first admission to a batch, first
    token, completion; seconds holding a batch slot; times preempted."""

    first_admit_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    held_s: np.ndarray
    preemptions: np.ndarray


def engine_times(arrival_s, input_tokens, output_tokens, profile: Profile,
                 window_tokens: int, instances: int = 1, max_batch: int | None = None,
                 macro_steps: bool = True) -> EngineTimes:
    """Run the ``engine`` kernel for one allocation of ``instances`` x ``profile``.

    ``window_tokens`` = pool window ``C`` (batch cap ``slots(C)`` unless ``max_batch``).
    ``macro_steps=False`` simulates every iteration as its own event (same sample path,
    slower; for checking the macro-steps of :func:`fleetopt_milp._kernels.engine_run`).
    """
    arr = np.ascontiguousarray(arrival_s, dtype=np.float64)
    lin = np.ascontiguousarray(input_tokens, dtype=np.int64)
    lout = np.ascontiguousarray(output_tokens, dtype=np.int64)
    if not arr.shape == lin.shape == lout.shape or arr.ndim != 1:
        raise FleetOptError("engine_times: arrival_s, input_tokens and output_tokens must be "
                            "1-D arrays of one length")
    if np.any(np.diff(arr) < 0):
        raise FleetOptError("engine_times: arrival_s must be non-decreasing; sort it")
    if np.any(lin < 1) or np.any(lout < 0):
        raise FleetOptError("engine_times: input_tokens must be >= 1, output_tokens >= 0")
    if np.any(lin + lout > min(window_tokens, profile.kv_capacity_tokens)):
        raise FleetOptError(f"engine_times: a request exceeds the {window_tokens}-token window "
                            "or the KV cache; route longer requests to a larger pool")
    if instances < 1:
        raise FleetOptError(f"instances={instances}: need at least one instance")
    cap = profile.slots(window_tokens) if max_batch is None else int(max_batch)
    one = np.ones(1, dtype=np.int64)
    res = _kernels.engine_run(
        arr, np.zeros(arr.size, dtype=np.int64), lin, lout, np.zeros(1, dtype=np.int64),
        one * instances, one * cap, one * profile.kv_blocks, one * profile.block_tokens,
        one * profile.chunk_tokens, np.array([profile.w_ms * 1e-3]),
        np.array([profile.h_ms * 1e-3]), np.array([float(profile.calib_tokens)]),
        np.array([profile.seq_ms * 1e-3]),
        np.array([(profile.h_ms + profile.chunk_compute_ms) * 1e-3]), bool(macro_steps))
    return EngineTimes(*res)
