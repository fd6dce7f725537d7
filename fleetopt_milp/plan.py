"""Plans: the fleet a planner or solver recommends, and its plan file (JSON).

A plan is a list of pools. A pool serves a range of context lengths with one window
(``context_tokens``) and is made of one or more *allocations*: ``instances`` replicas of
one profile (an instance is a replica of ``tp`` GPUs), taking a share of the pool's
requests. Each allocation is an M/G/c queue of its own (MODEL.md section 3); a pool with
one allocation is the paper's pool.

Prices: ``usd_per_hour`` is always for the whole allocation, pool or fleet
(instances x tp x $/GPU-hour); ``usd_per_year`` is that times 8,760 hours.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import FleetOptError

if TYPE_CHECKING:
    from .provenance import PlanInputs

__all__ = ["Allocation", "PoolPlan", "FleetSummary", "Plan", "read_plan", "write_plan",
           "HOURS_PER_YEAR"]

HOURS_PER_YEAR = 8760.0


@dataclass(frozen=True)
class Allocation:
    """``instances`` replicas of one profile inside a pool, taking ``load_share`` of its requests.

    ``usd_per_hour`` = instances x tp x usd_per_gpu_hour. ``slots_per_instance`` = KV slots
    of one instance at the pool's window. Queue figures are analytical (MODEL.md section 3).
    """

    profile: str
    gpu: str
    model: str
    tp: int
    instances: int
    load_share: float
    rate_rps: float
    slots_per_instance: int
    usd_per_gpu_hour: float
    usd_per_hour: float
    mean_service_s: float
    cs2: float
    utilization: float
    p99_ttft_ms: float
    slo_miss_share: float

    @property
    def gpus(self) -> int:
        return self.instances * self.tp


@dataclass(frozen=True)
class PoolPlan:
    """One context-length pool: requests with ``lo_tokens < L <= context_tokens``.

    ``compressed_in_rps``: C&R requests compressed into this pool from the band above.
    ``p99_ttft_ms`` is the pool's TTFT at the plan's percentile (the name keeps the
    P99 default; see :attr:`Plan.percentile`). Under the engine service model
    (docs/engine.md): ``mean_tpot_ms``, ``tpot_ms`` (TPOT at :attr:`Plan.tpot_percentile`)
    and ``mean_batch`` (sequences per instance); ``None`` under the slot model.
    """

    role: str
    lo_tokens: int
    context_tokens: int
    gamma: float
    allocations: tuple[Allocation, ...]
    rate_rps: float
    compressed_in_rps: float
    utilization: float
    p99_ttft_ms: float
    slo_miss_share: float
    mean_tpot_ms: float | None = None
    tpot_ms: float | None = None
    mean_batch: float | None = None

    @property
    def instances(self) -> int:
        return sum(a.instances for a in self.allocations)

    @property
    def gpus(self) -> int:
        return sum(a.gpus for a in self.allocations)

    @property
    def usd_per_hour(self) -> float:
        return sum(a.usd_per_hour for a in self.allocations)

    @property
    def gpu(self) -> str:
        return "+".join(a.gpu for a in self.allocations if a.instances > 0) or "-"


@dataclass(frozen=True)
class FleetSummary:
    """A baseline or candidate fleet in brief: its boundary, gamma, size and price."""

    name: str
    boundary_tokens: int | None
    gamma: float
    instances: int
    gpus: int
    usd_per_hour: float
    pool_instances: tuple[int, ...]
    feasible: bool = True
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    """A recommended fleet with its baselines, the scenario it answers and how it was found."""

    workload: str
    rate_rps: float
    slo_ms: float
    percentile: float
    model: str
    long_context_tokens: int
    compressible_share: float
    rho_max: float
    paper_compat: bool
    boundary_tokens: int | None
    gamma: float
    pools: tuple[PoolPlan, ...]
    baselines: dict[str, FleetSummary]
    planner_ms: float
    method: str = "analytical"
    compression_latency_ms: float = 0.0
    warnings: tuple[str, ...] = ()
    solver: dict | None = None
    verification: dict | None = None
    extra: dict = field(default_factory=dict)
    service_model: str = "slot"
    tpot_slo_ms: float | None = None
    tpot_percentile: float = 99.0
    inputs: PlanInputs | None = None  # what the plan was made from (provenance.py)

    @property
    def instances(self) -> int:
        return sum(p.instances for p in self.pools)

    @property
    def gpus(self) -> int:
        return sum(p.gpus for p in self.pools)

    @property
    def usd_per_hour(self) -> float:
        return sum(p.usd_per_hour for p in self.pools)

    @property
    def usd_per_year(self) -> float:
        return self.usd_per_hour * HOURS_PER_YEAR

    def saving_vs(self, baseline: str) -> float:
        """Fractional saving of this plan against a baseline's $/hour (0.3 = 30% cheaper)."""
        b = self.baselines[baseline]
        if not b.feasible or b.usd_per_hour <= 0:
            return float("nan")
        return 1.0 - self.usd_per_hour / b.usd_per_hour

    def to_dict(self) -> dict:
        """The plan file's JSON object (schema documented in README.md)."""
        pools = []
        for p in self.pools:
            d = {k: v for k, v in asdict(p).items() if k != "allocations"}
            d.update(gpu=p.gpu, instances=p.instances, gpus=p.gpus, usd_per_hour=p.usd_per_hour)
            d["allocations"] = [dict(asdict(a), gpus=a.gpus) for a in p.allocations]
            pools.append(d)
        out = {f.name: getattr(self, f.name) for f in fields(self)
               if f.name not in ("pools", "baselines", "extra", "inputs")}
        out.update(
            schema="fleetopt-plan/1",
            instances=self.instances,
            gpus=self.gpus,
            usd_per_hour=self.usd_per_hour,
            usd_per_year=self.usd_per_year,
            pools=pools,
            baselines={k: asdict(v) for k, v in self.baselines.items()},
            savings={k: self.saving_vs(k) for k in self.baselines},
        )
        out["warnings"] = list(self.warnings)
        out.update(self.extra)
        if self.inputs is not None:
            out["inputs"] = self.inputs.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict) -> Plan:
        """Rebuild a plan from :meth:`to_dict` output (derived fields are recomputed)."""
        try:
            pools = []
            for p in d["pools"]:
                allocs = tuple(Allocation(**{f.name: a[f.name] for f in fields(Allocation)})
                               for a in p["allocations"])
                kw = {f.name: p[f.name] for f in fields(PoolPlan)
                      if f.name != "allocations" and (f.name in p or f.default is MISSING)}
                pools.append(PoolPlan(allocations=allocs, **kw))
            baselines = {k: FleetSummary(**{
                **v, "pool_instances": tuple(v["pool_instances"]),
                "usd_per_hour": math.inf if v["usd_per_hour"] is None else v["usd_per_hour"]})
                for k, v in d["baselines"].items()}
            kw = {f.name: d[f.name] for f in fields(cls)
                  if f.name not in ("pools", "baselines", "extra", "warnings", "inputs")
                  and f.name in d}
            if d.get("inputs") is not None:
                from .provenance import PlanInputs

                kw["inputs"] = PlanInputs.from_dict(d["inputs"])
            return cls(pools=tuple(pools), baselines=baselines,
                       warnings=tuple(d.get("warnings", ())), **kw)
        except (KeyError, TypeError) as exc:
            raise FleetOptError(f"plan file: missing or malformed field {exc}; write plan files "
                                "with `fleetopt plan --json PATH`") from None


def _finite(o):
    """Replace non-finite floats (an infeasible baseline's cost) by ``None``: strict JSON."""
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    return o


def write_plan(plan: Plan, path: str | Path) -> None:
    """Write ``plan`` as strict JSON to ``path`` (infinite costs are written as ``null``)."""
    text = json.dumps(_finite(plan.to_dict()), indent=2, default=_json_default,
                      allow_nan=False)
    Path(path).write_text(text + "\n")


def read_plan(path: str | Path) -> Plan:
    """Read a plan file written by :func:`write_plan` (``fleetopt plan --json``)."""
    p = Path(path)
    if not p.is_file():
        raise FleetOptError(f"{p}: plan file not found; create one with `fleetopt plan --json {p}`")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise FleetOptError(f"{p}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(d, dict) or d.get("schema") != "fleetopt-plan/1":
        raise FleetOptError(f"{p}: not a fleetopt plan file (schema 'fleetopt-plan/1' expected)")
    return Plan.from_dict(d)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
