"""Plans: the fleet a planner or solver recommends, and its plan file (JSON).

A plan is a list of pools. A pool serves a range of context lengths with one window
(``context_tokens``) and is made of one or more *allocations*: ``instances`` replicas of
one profile (an instance is a replica of ``tp`` GPUs), taking a share of the pool's
requests. Each allocation is an M/G/c queue of its own (docs/model.md §3); a pool with
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
from .files import write_text_atomic

if TYPE_CHECKING:
    from .provenance import PlanInputs

__all__ = ["Allocation", "PoolPlan", "FleetSummary", "Plan", "read_plan", "write_plan",
           "HOURS_PER_YEAR"]

HOURS_PER_YEAR = 8760.0


@dataclass(frozen=True)
class Allocation:
    """``instances`` replicas of one profile inside a pool, taking ``load_share`` of its requests.

    ``usd_per_hour`` = instances x tp x usd_per_gpu_hour. ``slots_per_instance`` = KV slots
    of one instance at the pool's window. Queue figures are analytical (docs/model.md §3).
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
    def from_dict(cls, d: dict, where: str = "plan") -> Plan:
        """Rebuild a plan from :meth:`to_dict` output, validated first by
        :func:`check_plan_dict` (``where`` names the source in errors). Derived fields are
        recomputed; unknown top-level keys are kept in :attr:`extra`."""
        d = check_plan_dict(d, where)
        pools = []
        for p in d["pools"]:
            allocs = tuple(Allocation(**{f.name: a[f.name] for f in fields(Allocation)})
                           for a in p["allocations"])
            kw = {f.name: p[f.name] for f in fields(PoolPlan)
                  if f.name != "allocations" and (f.name in p or f.default is MISSING)}
            pools.append(PoolPlan(allocations=allocs, **kw))
        baselines = {k: FleetSummary(**{
            **{f.name: v[f.name] for f in fields(FleetSummary) if f.name in v},
            "pool_instances": tuple(v["pool_instances"]),
            "usd_per_hour": math.inf if v["usd_per_hour"] is None else v["usd_per_hour"]})
            for k, v in d["baselines"].items()}
        names = {f.name for f in fields(cls)}
        kw = {k: d[k] for k in names - {"pools", "baselines", "extra", "warnings", "inputs"}
              if k in d}
        if d.get("inputs") is not None:
            from .provenance import PlanInputs

            kw["inputs"] = PlanInputs.from_dict(d["inputs"])
        extra = {k: v for k, v in d.items() if k not in names and k not in DERIVED_KEYS}
        return cls(pools=tuple(pools), baselines=baselines,
                   warnings=tuple(d.get("warnings", ())), extra=extra, **kw)

    def checked(self) -> Plan:
        """This plan if it is sound (:func:`check_plan_dict` on its file form), else raise
        :class:`FleetOptError`: no pool at utilization >= 1, every figure finite."""
        check_plan_dict(self.to_dict(), "plan")
        return self


# ---------------------------------------------------------------------------------------
# Plan-file validation
# ---------------------------------------------------------------------------------------

SCHEMA = "fleetopt-plan/1"
DERIVED_KEYS = frozenset({"schema", "instances", "gpus", "usd_per_hour", "usd_per_year",
                          "savings"})
"""Top-level keys :meth:`Plan.to_dict` derives from the pools (checked, not stored)."""

_FIX = "fix the field or re-create the file with `fleetopt plan --json PATH`"
_REL_TOL = 1e-6  # written totals are sums of floats: equal to this relative precision

# Field rules: (kind, low, high, low_open, high_open, required). Kinds: "num" (finite
# number), "int" (whole number), "str", "bool", "num?"/"int?" (also null), "dict?".
_ANY = (None, None, False, False)
_STR = ("str", *_ANY, True)
_NONNEG = ("num", 0, None, False, False, True)
_POSITIVE = ("num", 0, None, True, False, True)
_SHARE = ("num", 0, 1, False, False, True)
_COUNT = ("int", 0, None, False, False, True)
_GAMMA = ("num", 1, None, False, False, True)
_QUEUE = {"utilization": ("num", 0, 1, False, True, True), "p99_ttft_ms": _NONNEG,
          "slo_miss_share": _SHARE}
_TOP = {
    "workload": _STR, "rate_rps": _POSITIVE, "slo_ms": _POSITIVE,
    "percentile": ("num", 0, 100, True, True, True), "model": _STR,
    "long_context_tokens": ("int", 1, None, False, False, True),
    "compressible_share": _SHARE, "rho_max": ("num", 0, 1, True, False, True),
    "paper_compat": ("bool", *_ANY, True), "boundary_tokens": ("int?", 1, None, False, False, True),
    "gamma": _GAMMA, "planner_ms": _NONNEG, "method": ("str", *_ANY, False),
    "compression_latency_ms": ("num", 0, None, False, False, False),
    "solver": ("dict?", *_ANY, False), "verification": ("dict?", *_ANY, False),
}
_POOL = {"role": _STR, "lo_tokens": _COUNT, "context_tokens": ("int", 1, None, False, False, True),
         "gamma": _GAMMA, "rate_rps": _NONNEG, "compressed_in_rps": _NONNEG, **_QUEUE}
_ALLOC = {"profile": _STR, "gpu": _STR, "model": _STR, "tp": ("int", 1, None, False, False, True),
          "instances": _COUNT, "load_share": _SHARE, "rate_rps": _NONNEG,
          "slots_per_instance": ("int", 1, None, False, False, True),
          "usd_per_gpu_hour": _POSITIVE, "usd_per_hour": _NONNEG, "mean_service_s": _NONNEG,
          "cs2": _NONNEG, **_QUEUE}
_BASELINE = {"boundary_tokens": ("int?", 1, None, False, False, True), "gamma": _GAMMA,
             "instances": _COUNT, "gpus": _COUNT, "usd_per_hour": ("num?", 0, None, False, False, True),
             "feasible": ("bool", *_ANY, False), "reason": ("str", *_ANY, False)}


class _Checker:
    """Checks the fields of one plan file; every failure names the file and the field."""

    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, problem: str) -> None:
        raise FleetOptError(f"{self.where}: {key}: {problem}; {_FIX}")

    def value(self, d: dict, key: str, rule: tuple, path: str):
        kind, lo, hi, lo_open, hi_open, required = rule
        name = f"{path}{key}"
        if key not in d:
            if required:
                self.fail(name, "missing")
            return None
        v = d[key]
        base = kind.rstrip("?")
        if v is None:
            if kind.endswith("?"):
                return None
            self.fail(name, f"must be {_KIND_TEXT[base]}, got null")
        if base == "str" and not isinstance(v, str):
            self.fail(name, f"must be a string, got {_show(v)}")
        if base == "bool" and not isinstance(v, bool):
            self.fail(name, f"must be true or false, got {_show(v)}")
        if base == "dict" and not isinstance(v, dict):
            self.fail(name, f"must be an object or null, got {_show(v)}")
        if base in ("num", "int"):
            if isinstance(v, bool) or not isinstance(v, int | float):
                self.fail(name, f"must be {_KIND_TEXT[base]}, got {_show(v)}")
            if isinstance(v, int) and abs(v) >= _MAX_INT:
                self.fail(name, f"{_show(v)} is too large (at most {_MAX_INT - 1})")
            if not math.isfinite(v):
                self.fail(name, f"must be a finite number, got {v!r}")
            if base == "int" and not float(v).is_integer():
                self.fail(name, f"must be a whole number, got {v!r}")
            low_bad = lo is not None and (v <= lo if lo_open else v < lo)
            high_bad = hi is not None and (v >= hi if hi_open else v > hi)
            if low_bad or high_bad:
                self.fail(name, f"{v!r} is out of range; it must be in "
                          f"{'(' if lo_open or lo is None else '['}"
                          f"{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}"
                          f"{')' if hi_open or hi is None else ']'}")
            return int(v) if base == "int" else float(v)
        return v

    def fields(self, d, rules: dict, path: str) -> dict:
        if not isinstance(d, dict):
            self.fail(path.rstrip(".") or "file", f"must be a JSON object, got {_show(d)}")
        return {k: self.value(d, k, r, path) for k, r in rules.items() if k in d or r[-1]}

    def total(self, d: dict, key: str, path: str, want: float, whole: bool) -> None:
        """A written total, if present, must equal the sum it summarises."""
        if key not in d:
            return
        got = self.value(d, key, ("int" if whole else "num", 0, None, False, False, True), path)
        if abs(got - want) > _REL_TOL * max(1.0, abs(want)):
            self.fail(f"{path}{key}", f"{got:g} does not equal the sum of its parts "
                      f"({want:g})")

    def sequence(self, d: dict, key: str, path: str, nonempty: bool = True) -> list:
        v = d.get(key)
        if not isinstance(v, list | tuple) or (nonempty and not v):
            self.fail(f"{path}{key}", "must be a non-empty list" if nonempty else "must be a "
                      f"list, got {_show(v)}")
        return list(v)


_MAX_INT = 2**63  # counts and token lengths are int64 downstream


def _show(v, width: int = 60) -> str:
    """A value for an error line: its repr, cut to ``width`` characters."""
    text = repr(v)
    return text if len(text) <= width else text[: width - 3] + "..."


_KIND_TEXT = {"num": "a number", "int": "a whole number", "str": "a string",
              "bool": "true or false", "dict": "an object"}


def _check_allocation(c: _Checker, a: dict, path: str) -> dict:
    v = c.fields(a, _ALLOC, path)
    c.total(a, "gpus", path, v["instances"] * v["tp"], True)
    c.total(a, "usd_per_hour", path, v["instances"] * v["tp"] * v["usd_per_gpu_hour"], False)
    if v["rate_rps"] > 0 and v["instances"] == 0:
        c.fail(f"{path}instances", f"0 instances cannot serve {v['rate_rps']:g} req/s; give "
               "the allocation instances or no traffic")
    return {**a, **v}


def _check_pool(c: _Checker, p: dict, path: str) -> dict:
    v = c.fields(p, _POOL, path)
    allocs = [_check_allocation(c, a, f"{path}allocations[{j}].")
              for j, a in enumerate(c.sequence(p, "allocations", path))]
    if v["context_tokens"] <= v["lo_tokens"]:
        c.fail(f"{path}context_tokens", f"{v['context_tokens']} must exceed lo_tokens "
               f"({v['lo_tokens']})")
    c.total(p, "instances", path, sum(a["instances"] for a in allocs), True)
    c.total(p, "gpus", path, sum(a["instances"] * a["tp"] for a in allocs), True)
    c.total(p, "usd_per_hour", path, math.fsum(a["usd_per_hour"] for a in allocs), False)
    c.total(p, "rate_rps", path, math.fsum(a["rate_rps"] for a in allocs), False)
    shares = math.fsum(a["load_share"] for a in allocs)
    if v["rate_rps"] > 0 and abs(shares - 1.0) > _REL_TOL:
        c.fail(f"{path}allocations", f"load shares sum to {shares:g}, not 1")
    return {**p, **v, "allocations": allocs}


def check_plan_dict(d, where: str = "plan") -> dict:
    """Validate a plan file's JSON object (schema, types, ranges and totals).

    Raises :class:`FleetOptError` naming ``where``, the field (``pools[1].allocations[0].
    instances``) and the fix. Unknown top-level keys are allowed (later additions).
    Checked: every number finite and in range; whole numbers where counts are meant; every
    utilization below 1; pools tiling ``(0, long_context_tokens]``; written totals (pool
    and fleet instances, GPUs, $/hour, rates) equal to the sums of their allocations.
    Returns the object with whole numbers as ``int`` and other numbers as ``float``.
    """
    c = _Checker(where)
    if not isinstance(d, dict) or d.get("schema") != SCHEMA:
        raise FleetOptError(f"{where}: not a fleetopt plan file (schema {SCHEMA!r} expected); "
                            "write plan files with `fleetopt plan --json PATH`")
    top = c.fields(d, _TOP, "")
    pools = [_check_pool(c, p, f"pools[{k}].") for k, p in enumerate(c.sequence(d, "pools", ""))]
    lo = 0
    for k, p in enumerate(pools):
        if p["lo_tokens"] != lo:
            c.fail(f"pools[{k}].lo_tokens", f"{p['lo_tokens']} but the pool below ends at "
                   f"{lo}; pools must tile (0, long_context_tokens]")
        lo = p["context_tokens"]
    if lo != top["long_context_tokens"]:
        c.fail(f"pools[{len(pools) - 1}].context_tokens", f"{lo} but long_context_tokens is "
               f"{top['long_context_tokens']}; the last pool must end at the long window")
    allocs = [a for p in pools for a in p["allocations"]]
    c.total(d, "instances", "", sum(a["instances"] for a in allocs), True)
    c.total(d, "gpus", "", sum(a["instances"] * a["tp"] for a in allocs), True)
    usd = math.fsum(a["usd_per_hour"] for a in allocs)
    c.total(d, "usd_per_hour", "", usd, False)
    c.total(d, "usd_per_year", "", usd * HOURS_PER_YEAR, False)
    if "warnings" in d and not (isinstance(d["warnings"], list | tuple)
                                and all(isinstance(w, str) for w in d["warnings"])):
        c.fail("warnings", "must be a list of strings")
    baselines = d.get("baselines")
    if not isinstance(baselines, dict):
        c.fail("baselines", "must be an object of named fleets")
    checked = {}
    for name, b in baselines.items():
        path = f"baselines.{name}."
        if isinstance(b, dict) and b.get("feasible") is False and b.get("usd_per_hour") == math.inf:
            b = {**b, "usd_per_hour": None}  # an infeasible baseline has no cost
        v = c.fields(b, _BASELINE, path)
        if v.get("feasible", True) and v["usd_per_hour"] is None:
            c.fail(f"{path}usd_per_hour", "a feasible baseline needs a finite cost")
        counts = c.sequence(b, "pool_instances", path, nonempty=False)
        v["pool_instances"] = [c.value({"": n}, "", _COUNT, f"{path}pool_instances[{j}]")
                               for j, n in enumerate(counts)]
        checked[name] = {"name": str(b.get("name", name)), **v}
    return {**d, **top, "pools": pools, "baselines": checked}


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
    """Write ``plan`` as strict JSON to ``path``, atomically (infinite costs are written as
    ``null``). Raises :class:`FleetOptError` for an unsound plan or an unwritable path."""
    plan.checked()
    text = json.dumps(_finite(plan.to_dict()), indent=2, default=_json_default,
                      allow_nan=False)
    write_text_atomic(path, text + "\n", "plan file")


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def read_plan(path: str | Path) -> Plan:
    """Read and validate a plan file written by :func:`write_plan` (``fleetopt plan
    --json``); every problem raises :class:`FleetOptError` naming the file and the field."""
    p = Path(path)
    if not p.is_file():
        raise FleetOptError(f"{p}: plan file not found; create one with `fleetopt plan --json {p}`")
    try:
        d = json.loads(p.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise FleetOptError(f"{p}: line {exc.lineno}: not valid JSON ({exc.msg}); re-create "
                            "it with `fleetopt plan --json PATH`") from None
    except (ValueError, RecursionError) as exc:  # NaN/Infinity, bad UTF-8, deep nesting
        raise FleetOptError(f"{p}: not a valid plan file ({exc}); re-create it with "
                            "`fleetopt plan --json PATH`") from None
    except OSError as exc:
        raise FleetOptError(f"{p}: cannot read the plan file ({exc.strerror})") from None
    return Plan.from_dict(d, str(p))


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")
