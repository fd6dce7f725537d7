"""The model's figures beside the simulated ones (docs/model.md §3).

Every allocation's analytical queue comes from the exact pool moments
(:class:`~fleetopt_milp.demand.MomentTable`) of the simulated workload at the simulated
mean rate; groups (pools, the fleet) mix their allocations' queues by rate
(:mod:`fleetopt_milp.queueing`).
"""

from __future__ import annotations

import math

import numpy as np

from .demand import MomentTable
from .poolload import PoolLoad
from .queueing import Queue, QueueMix, pool_figures
from .service import service_model
from .sim_fleet import FleetSpec
from .sim_results import Analytical
from .workload import Workload


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


def _hold_s(x: Queue) -> float:
    """Mean seconds a request holds a slot: ``E[S]``, or an engine queue's time in its batch
    (:attr:`fleetopt_milp.engine_model.EngineQueue.hold_s`; its ``E[S]`` is the drain time
    of a full batch, docs/engine.md §2)."""
    return getattr(x, "hold_s", x.mean_service_s)


def _relaxation_s(x: Queue) -> float:
    """Seconds for an empty allocation's occupancy to settle: its hold time (:func:`_hold_s`),
    or an engine queue's relaxation time
    (:attr:`fleetopt_milp.engine_model.EngineQueue.relaxation_s`, docs/engine.md §2)."""
    return getattr(x, "relaxation_s", _hold_s(x))


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
        mean_service_s=(_hold_s(one) if one is not None
                        else sum(w * _hold_s(x) for w, x in live)),
        cs2=one.cs2 if one is not None else math.nan,
        servers=mix.servers)


def _warmup_s(queues: list[Queue]) -> float:
    """Automatic warm-up time: 3 x the longest mean residual service time
    ``E[S^2] / (2 E[S]) = E[S] (1 + cs2) / 2`` of the allocations with traffic, the time an
    empty M/G/c needs to fill its slots to their steady occupancy (``E[S]``: the time a
    request holds its slot, stretched for an engine queue to its relaxation time,
    :func:`_relaxation_s`)."""
    return 3.0 * max((_relaxation_s(x) * (1.0 + x.cs2) / 2.0 for x in queues
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
