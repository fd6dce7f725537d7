"""Evaluate a given fleet: will the fleet I run now hold at this traffic? (docs/engine.md §4)

A fleet is a :class:`~fleetopt_milp.simulator.FleetSpec` (pools by window, C&R bands,
allocations of profiles and instances): one pool built by :func:`single_pool_fleet`, or a
plan's fleet (:func:`~fleetopt_milp.simulator.fleet_from_plan`). :func:`evaluate_fleet` runs the
chosen service model (``slot`` or ``engine``) at a workload and a rate and returns, per pool
and for the fleet, utilization, mean batch, TTFT and TPOT percentiles and SLO miss shares;
and for the fleet the highest rate that still meets the SLOs (``max_rate_rps``) and the
throughput with an unbounded queue (``saturation_rps``), both by bisection on the rate with
the routing fixed. ``simulation`` (optional) holds the simulator's figures with the same
keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from .demand import MomentTable
from .errors import FleetOptError
from .hardware import Profile
from .queueing import Queue, QueueMix
from .service import service_model
from .workload import Workload

if TYPE_CHECKING:  # the simulator imports numba; load it only when simulating
    from .simulator import FleetSpec

__all__ = ["Slo", "GroupEvaluation", "FleetEvaluation", "evaluate_fleet", "single_pool_fleet"]

#: Relative precision of the rate bisections.
RATE_TOL = 1e-4


@dataclass(frozen=True)
class Slo:
    """The SLOs a fleet is evaluated against: P``percentile`` TTFT <= ``ttft_ms`` and, when
    ``tpot_ms`` is given, P``tpot_percentile`` TPOT <= ``tpot_ms``."""

    ttft_ms: float
    percentile: float = 99.0
    tpot_ms: float | None = None
    tpot_percentile: float = 99.0

    def validated(self) -> Slo:
        if not (math.isfinite(self.ttft_ms) and self.ttft_ms > 0):
            raise FleetOptError(f"slo_ms={self.ttft_ms}: the TTFT SLO must be positive (--slo-ms)")
        for key in ("percentile", "tpot_percentile"):
            if not 50 <= getattr(self, key) < 100:
                raise FleetOptError(f"{key}={getattr(self, key)}: use a percentile in [50, 100)")
        if self.tpot_ms is not None and not (math.isfinite(self.tpot_ms) and self.tpot_ms > 0):
            raise FleetOptError(f"tpot_ms={self.tpot_ms}: the TPOT SLO must be positive (--tpot-ms)")
        return self


@dataclass(frozen=True)
class GroupEvaluation:
    """Figures of one pool or of the fleet (times in ms, shares in [0, 1]).

    ``ttft_ms``: ``{"p50", "p90", "p99"}``; ``tpot_ms``: the same plus ``"mean"``.
    ``slo_miss_share``: share of requests missing the TTFT or the TPOT SLO (the sum of
    the two shares, capped at 1: a bound, exact when a request misses at most one).
    ``mean_batch``: sequences per instance (pools only; the fleet's is its mean over
    instances).
    """

    name: str
    rate_rps: float
    instances: int
    utilization: float
    mean_batch: float | None
    ttft_ms: dict
    tpot_ms: dict
    ttft_slo_miss_share: float
    tpot_slo_miss_share: float
    slo_miss_share: float

    def to_dict(self) -> dict:
        return {k: _finite(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class FleetEvaluation:
    """:func:`evaluate_fleet`'s answer: per pool, for the fleet, and the two rates (req/s).

    ``mean_output_tokens``: the served workload's mean output (tokens per request); the
    fleet's output-token throughputs (tokens/s) follow from it: ``output_tokens_per_s`` at
    the evaluated rate (``min(rate, saturation) x mean output``: beyond saturation the fleet
    serves at capacity) and ``saturation_output_tokens_per_s``.
    """

    workload: str
    rate_rps: float
    service_model: str
    slo: Slo
    pools: tuple[GroupEvaluation, ...]
    fleet: GroupEvaluation
    max_rate_rps: float
    saturation_rps: float
    simulation: dict | None = field(default=None)
    mean_output_tokens: float | None = None

    @property
    def output_tokens_per_s(self) -> float | None:
        if self.mean_output_tokens is None:
            return None
        return min(self.rate_rps, self.saturation_rps) * self.mean_output_tokens

    @property
    def saturation_output_tokens_per_s(self) -> float | None:
        if self.mean_output_tokens is None:
            return None
        return self.saturation_rps * self.mean_output_tokens

    def to_dict(self) -> dict:
        fleet = self.fleet.to_dict()
        fleet.update(max_rate_rps=_finite(self.max_rate_rps),
                     saturation_rps=_finite(self.saturation_rps),
                     output_tokens_per_s=_finite(self.output_tokens_per_s),
                     saturation_output_tokens_per_s=_finite(
                         self.saturation_output_tokens_per_s))
        out = {"schema": "fleetopt-evaluation/1", "workload": self.workload,
               "rate_rps": self.rate_rps, "service_model": self.service_model,
               "slo_ms": self.slo.ttft_ms, "percentile": self.slo.percentile,
               "tpot_slo_ms": self.slo.tpot_ms, "tpot_percentile": self.slo.tpot_percentile,
               "pools": [p.to_dict() for p in self.pools], "fleet": fleet}
        if self.simulation is not None:
            out["simulation"] = self.simulation
        return out


def _finite(v):
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def single_pool_fleet(profile: Profile, instances: int, context_tokens: int, slo: Slo
                      ) -> FleetSpec:
    """One pool of ``instances`` x ``profile`` serving every request up to ``context_tokens``."""
    from .simulator import AllocationSpec, FleetSpec

    if isinstance(instances, bool) or not isinstance(instances, int) or instances < 1:
        raise FleetOptError(f"instances={instances!r}: need a positive number of instances "
                            "(--instances)")
    return FleetSpec(("pool",), (int(context_tokens),), (), 0.0, 0.0,
                     (AllocationSpec("pool", 0, profile, instances, 1.0),),
                     slo.ttft_ms * 1e-3, slo.percentile).validated()


# ---------------------------------------------------------------------------------------
# The model's queues at a rate
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Alloc:
    """One allocation's load at unit total rate and what it takes of its pool."""

    pool: int
    instances: int
    share: float
    load: object  # PoolLoad at total rate 1 req/s
    slot_tpot_s: float  # the slot model's TPOT: E[S] / E[a]


def _allocations(fleet: FleetSpec, workload: Workload, model_name: str) -> list[_Alloc]:
    model = service_model(model_name)
    wl = workload.with_paper_split() if fleet.paper_compat and workload.kind == "trace" \
        else workload
    windows = np.array([fleet.windows_tokens], dtype=np.int64)
    gammas = np.array([fleet.gammas], dtype=float).reshape(1, -1)
    longest = int(wl.max_total_tokens)
    if longest > fleet.windows_tokens[-1]:
        raise FleetOptError(f"workload '{wl.name}' has requests up to {longest} tokens, longer "
                            f"than the largest pool window {fleet.windows_tokens[-1]}; give a "
                            "larger --context-tokens or a fleet with a longer pool")
    tables: dict[str, tuple[MomentTable, list]] = {}
    out = []
    for a in fleet.allocations:
        if a.profile.name not in tables:
            t = MomentTable(wl, a.profile, list(fleet.windows_tokens[:-1]),
                            sorted({1.0, *fleet.gammas}), fleet.windows_tokens[-1],
                            fleet.compression_latency_s)
            tables[a.profile.name] = (t, t.pool_parts(windows, gammas))
        table, parts = tables[a.profile.name]
        m = parts[a.pool].at(fleet.compressible_share)
        load = model.pool_load(m, table, [fleet.windows_tokens[a.pool]], 1.0)
        iters = float(m.iters[0] / m.mass[0]) if m.mass[0] > 0 else 1.0
        out.append(_Alloc(a.pool, int(a.instances), float(a.load_share), load,
                          float(load.mean_service_s[0]) / iters if load.load_dependent is False
                          else 0.0))
    return out


def _queue(al: _Alloc, rate_rps: float) -> Queue | None:
    """The allocation's queue at total rate ``rate_rps``; ``None`` if it has traffic but no
    instances (unstable)."""
    share = al.share * rate_rps
    if al.instances == 0:
        return None if share * float(al.load.rate_rps[0]) > 0 else Queue(0, 0.0, 1.0, 0.0,
                                                                         np.zeros(1), np.ones(1))
    return al.load.queue(0, al.instances, share)


def _stable(q: Queue | None) -> bool:
    return q is not None and (q.offered_load == 0 or q.servers > q.offered_load)


def _tpot(queues: list[Queue], shares: list[float], allocs: list[_Alloc], slo: Slo):
    """TPOT figures (ms dict, miss share) of queues with traffic ``shares``."""
    from .engine_model import EngineQueue, tpot_figures

    if all(isinstance(q, EngineQueue) for q in queues):
        f = tpot_figures(queues, shares, slo.tpot_percentile, slo.tpot_ms)
        return {"p50": f.p50_ms, "p90": f.p90_ms, "p99": f.p99_ms, "mean": f.mean_ms}, \
            f.slo_miss_share
    # The slot model runs every step at a full batch: one TPOT per allocation, E[S] / E[a].
    total = sum(shares)
    mean = sum(w * al.slot_tpot_s for w, al in zip(shares, allocs, strict=True)) / total * 1e3
    top = max(al.slot_tpot_s for w, al in zip(shares, allocs, strict=True) if w > 0) * 1e3
    miss = 0.0 if slo.tpot_ms is None else sum(
        w for w, al in zip(shares, allocs, strict=True) if al.slot_tpot_s * 1e3 > slo.tpot_ms
    ) / total
    return {"p50": mean, "p90": mean, "p99": top, "mean": mean}, miss


def _group(name: str, rate: float, allocs: list[_Alloc], queues: list, slo: Slo,
           ) -> GroupEvaluation:
    inst = sum(al.instances for al in allocs)
    shares = [al.share * float(al.load.rate_rps[0]) * rate for al in allocs]
    total = sum(shares)
    inf = float("inf")
    if total <= 0:
        zero = {"p50": 0.0, "p90": 0.0, "p99": 0.0}
        return GroupEvaluation(name, 0.0, inst, 0.0, 0.0, zero, {**zero, "mean": 0.0},
                               0.0, 0.0, 0.0)
    if not all(_stable(q) for q, w in zip(queues, shares, strict=True) if w > 0):
        infs = {"p50": inf, "p90": inf, "p99": inf}
        return GroupEvaluation(name, total, inst, inf, inf, infs, {**infs, "mean": inf},
                               1.0, 1.0, 1.0)
    live = [(q, w / total, al) for q, w, al in zip(queues, shares, allocs, strict=True) if w > 0]
    mix = QueueMix(tuple(q for q, _, _ in live), tuple(w for _, w, _ in live))
    ttft = {f"p{int(p)}": mix.ttft_quantile_s(p / 100.0) * 1e3 for p in (50, 90, 99)}
    ttft_miss = float(mix.miss(slo.ttft_ms * 1e-3))
    tpot, tpot_miss = _tpot([q for q, _, _ in live], [w for _, w, _ in live],
                            [al for _, _, al in live], slo)
    batch = sum(getattr(q, "mean_batch", q.offered_load / max(al.instances, 1)) * al.instances
                for q, _, al in live) / max(inst, 1)
    util = sum(q.offered_load for q, _, _ in live) / max(sum(q.servers for q, _, _ in live), 1)
    return GroupEvaluation(name, total, inst, util, batch, ttft, tpot, ttft_miss, tpot_miss,
                           min(1.0, ttft_miss + tpot_miss))


def _pools_and_fleet(fleet: FleetSpec, allocs: list[_Alloc], rate: float, slo: Slo):
    queues = [_queue(al, rate) for al in allocs]
    pools = []
    for k, name in enumerate(fleet.pool_names):
        sel = [i for i, al in enumerate(allocs) if al.pool == k]
        pools.append(_group(name, rate, [allocs[i] for i in sel], [queues[i] for i in sel], slo))
    return tuple(pools), _group("fleet", rate, allocs, queues, slo)


def _meets(fleet: FleetSpec, allocs: list[_Alloc], rate: float, slo: Slo) -> bool:
    """Every pool meets both SLOs at ``rate`` (TTFT miss <= 1 - q, TPOT at its percentile)."""
    pools, _ = _pools_and_fleet(fleet, allocs, rate, slo)
    q_ttft = 1.0 - slo.percentile / 100.0
    q_tpot = 1.0 - slo.tpot_percentile / 100.0
    return all(p.ttft_slo_miss_share <= q_ttft + 1e-12
               and (slo.tpot_ms is None or p.tpot_slo_miss_share <= q_tpot + 1e-12)
               for p in pools)


def _highest(ok, rate: float) -> float:
    """The largest rate where ``ok`` holds (monotone: true below, false above), by doubling
    from ``rate`` and bisection; 0 if it fails at any positive rate."""
    lo, hi = 0.0, rate
    while ok(hi):
        lo, hi = hi, hi * 2.0
        if hi > rate * 2.0 ** 40:
            return float("inf")
    while hi - lo > RATE_TOL * hi:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def evaluate_fleet(fleet: FleetSpec, workload: Workload, rate_rps: float, slo: Slo,
             service_model_name: str = "engine", simulate: str | None = None,
             n_requests: int = 100_000, replications: int = 3, seed: int = 0
             ) -> FleetEvaluation:
    """The fleet's figures at ``rate_rps`` under a service model (docs/engine.md §4).

    ``simulate`` (``"slot"`` or ``"engine"``) adds the simulator's figures, same keys
    (the simulator measures mean and P99 TPOT only; its P50/P90 TPOT are ``None``).
    """
    slo = slo.validated()
    if not (math.isfinite(rate_rps) and rate_rps > 0):
        raise FleetOptError(f"rate_rps={rate_rps}: the arrival rate must be positive (--rate)")
    if slo.tpot_ms is not None and service_model_name != "engine":
        raise FleetOptError("--tpot-ms: a TPOT SLO needs --service-model engine")
    allocs = _allocations(fleet, workload, service_model_name)
    pools, total = _pools_and_fleet(fleet, allocs, rate_rps, slo)
    max_rate = _highest(lambda r: _meets(fleet, allocs, r, slo), rate_rps)
    sat = _highest(lambda r: all(_stable(_queue(al, r)) for al in allocs), rate_rps)
    sim = None
    if simulate is not None:
        sim = _simulated(fleet, workload, rate_rps, slo, simulate, n_requests, replications,
                         seed)
    served = workload.with_paper_split() if fleet.paper_compat and workload.kind == "trace" \
        else workload
    return FleetEvaluation(workload.name, float(rate_rps), service_model_name, slo, pools,
                           total, max_rate, sat, sim, float(served.mean_output_tokens))


def _simulated(fleet: FleetSpec, workload: Workload, rate: float, slo: Slo, fidelity: str,
               n_requests: int, replications: int, seed: int) -> dict:
    from .simulator import simulate

    spec = replace(fleet, slo_s=slo.ttft_ms * 1e-3, percentile=slo.percentile)
    res = simulate(spec, workload, rate_rps=rate, fidelity=fidelity, n_requests=n_requests,
                   replications=replications, seed=seed, analytical=False)
    caps = {k: [] for k in range(len(fleet.pool_names))}
    for a in fleet.allocations:
        caps[a.pool].append((a.instances, a.profile.slots(fleet.windows_tokens[a.pool])))

    def group(g, k=None) -> dict:
        slots = [c for c in (caps[k] if k is not None else sum(caps.values(), []))]
        inst = sum(n for n, _ in slots)
        batch = g.utilization.mean * sum(n * s for n, s in slots) / max(inst, 1)
        tpot_ok = fidelity == "engine"
        return _finite({
            "name": g.name, "rate_rps": g.throughput_rps.mean, "instances": inst,
            "utilization": g.utilization.mean, "mean_batch": batch,
            "ttft_ms": {"p50": g.p50_ttft_ms.mean, "p90": g.p90_ttft_ms.mean,
                        "p99": g.p99_ttft_ms.mean},
            "tpot_ms": {"p50": None, "p90": None,
                        "p99": g.p99_tpot_ms.mean if tpot_ok else None,
                        "mean": g.mean_tpot_ms.mean if tpot_ok else None},
            "ttft_slo_miss_share": g.slo_miss_share.mean, "slo_miss_share": g.slo_miss_share.mean})

    return {"fidelity": fidelity, "requests": res.n_requests, "replications": res.replications,
            "pools": [group(g, k) for k, g in enumerate(res.pools)], "fleet": group(res.fleet)}
