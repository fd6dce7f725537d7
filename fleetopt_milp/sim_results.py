"""The simulator's result records and their statistics.

:class:`Estimate` and :func:`t_interval` (Student-t intervals over replications or batch
means), :class:`Analytical` (the model's figures for a group, docs/model.md §3),
:class:`GroupStats` (the simulated figures of one allocation, pool or the fleet) and
:class:`SimulationResult` (one :func:`~fleetopt_milp.simulator.simulate` call). Re-exported
by :mod:`fleetopt_milp.simulator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np
from scipy import special

from .errors import FleetOptError

__all__ = ["Estimate", "t_interval", "Analytical", "GroupStats", "SimulationResult"]


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
