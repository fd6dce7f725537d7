"""The fleet question the MILP answers, and the checks of every field (docs/milp.md §1).

:class:`FleetProblem` wraps a :class:`~fleetopt_milp.scenario.Scenario` (workload, rate,
SLO, windows, C&R grid) with what only the MILP handles: several GPU types, up to four
pools, availability caps, a cap on all GPUs, a budget, redundancy and how a pool may mix
GPU types. :meth:`FleetProblem.validated` rejects bad input with a one-line
:class:`~fleetopt_milp.errors.FleetOptError` naming the field and the CLI option to fix.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from numbers import Integral, Real
from types import MappingProxyType

import numpy as np

from ..errors import FleetOptError
from ..hardware import Profile
from ..scenario import Scenario
from ..workload import Workload

__all__ = ["FleetProblem", "EPS_USD", "MIXING_MODES", "check_solver_limits",
           "redundancy_floor"]

EPS_USD = 1e-6
"""USD/h below which two fleet costs count as equal (ties keep the fleet found first)."""

MIXING_MODES = ("auto", "full", "filler", "none")
"""Values of :attr:`FleetProblem.mixing` (``--mix``)."""

BUSY_MASS = 1e-15
"""A pool whose share of all requests is at most this receives none (no redundancy floor)."""


def _whole(value) -> bool:
    """A whole number (Python or numpy integer, not a bool)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


@dataclass(frozen=True)
class FleetProblem:
    """A fleet question for the MILP (docs/model.md §3-4 and §6, docs/milp.md §1).

    scenario: workload, rate, SLO, long window, gamma grid, ``p_c``, ``rho_max``,
        compression latency, paper rule and candidate boundaries (its ``profile`` is used
        only when ``profiles`` is empty).
    profiles: the GPU types (serving profiles of one model) the fleet may use; an instance
        of a profile is a replica of ``tp`` GPUs.
    max_pools: ``K``, the largest number of pools (1 to 4); fewer are chosen when cheaper.
    max_gpus: availability caps, GPU name (``Profile.gpu``) -> most GPUs of that type.
    max_total_gpus: cap on all GPUs of the fleet, or None.
    budget_usd_per_hour: the fleet must cost at most this (USD per hour), or None.
    min_instances_per_pool: redundancy; every pool that receives requests gets at least
        this many instances.
    mixing: how a pool may split its load between GPU types: ``"full"`` (any split,
        continuous shares, capacity levels), ``"filler"`` (a main type plus a few instances
        of one other type, one binary per pool), ``"none"`` (one type per pool) or
        ``"auto"`` (``"full"`` when availability or total-GPU caps couple the pools, else
        ``"filler"``; ``"none"`` under a service model other than slot, for which mixed
        pools are not modelled); docs/milp.md §4.
    """

    scenario: Scenario
    profiles: tuple[Profile, ...] = ()
    max_pools: int = 2
    max_gpus: Mapping[str, int] = field(default_factory=dict)
    max_total_gpus: int | None = None
    budget_usd_per_hour: float | None = None
    min_instances_per_pool: int = 0
    mixing: str = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_gpus", MappingProxyType(dict(self.max_gpus)))
        object.__setattr__(self, "profiles", tuple(self.profiles))

    @property
    def types(self) -> tuple[Profile, ...]:
        """The profiles the fleet may use (``profiles``, or the scenario's one)."""
        return tuple(self.profiles) if self.profiles else (self.scenario.profile,)

    @property
    def workload(self) -> Workload:
        """The workload the pools are sized for (with the paper's 80/20 split under the
        paper rule, docs/model.md §4)."""
        s = self.scenario
        if s.paper_compat and s.workload.kind == "trace":
            return s.workload.with_paper_split()
        return s.workload

    def with_rate(self, rate_rps: float) -> FleetProblem:
        """The same question at another arrival rate (requests/s)."""
        return replace(self, scenario=replace(self.scenario, rate_rps=float(rate_rps)))

    def validated(self) -> FleetProblem:
        """Check every field; raise :class:`FleetOptError` naming the field and the fix."""
        k = self.max_pools
        if not _whole(k) or not 1 <= k <= 4:
            raise FleetOptError(f"max_pools={k!r}: choose 1 to 4 pools (--pools)")
        types = self.types
        if not types or not all(isinstance(p, Profile) for p in types):
            raise FleetOptError("profiles: give at least one serving profile (--gpus)")
        names = [p.name for p in types]
        if len(set(names)) != len(names):
            raise FleetOptError(f"profiles: {', '.join(names)} lists a profile twice; give "
                                "each GPU type once (--gpus)")
        models = {p.model for p in types}
        if len(models) > 1:
            raise FleetOptError(f"profiles serve different models ({', '.join(sorted(models))}"
                                "); a fleet serves one model: pass --model once")
        long = self.scenario.long_context_tokens
        able = [p for p in types if p.max_context_tokens >= long]
        if not able:
            best = max(types, key=lambda p: p.max_context_tokens)
            raise FleetOptError(
                f"long_context_tokens={long}: no GPU type can hold a {long}-token window "
                f"(largest: {best.max_context_tokens} on {best.name}); lower --long-context "
                "or add a GPU with more memory to --gpus")
        replace(self.scenario, profile=able[0]).validated()
        if (self.scenario.service_model != "slot" and len(types) > 1
                and self.mixing in ("full", "filler")):
            raise FleetOptError(
                f"mixing={self.mixing!r}: pools mixing GPU types are modelled for the slot "
                f"service model only, not {self.scenario.service_model!r} (docs/milp.md §4); "
                "use one type per pool (--mix none) or --service-model slot")
        self._check_caps()
        b = self.budget_usd_per_hour
        if b is not None and (isinstance(b, bool) or not isinstance(b, Real)
                              or not (math.isfinite(b) and b > 0)):
            raise FleetOptError(f"budget_usd_per_hour={b!r}: must be a positive amount in "
                                "USD per hour (--budget-usd-per-hour)")
        if self.mixing not in MIXING_MODES:
            raise FleetOptError(f"mixing={self.mixing!r}: use auto, full, filler or none "
                                "(--mix)")
        m = self.min_instances_per_pool
        if not _whole(m) or m < 0:
            raise FleetOptError(f"min_instances_per_pool={m!r}: must be a whole number of "
                                "instances >= 0 (--min-instances)")
        return self

    def _check_caps(self) -> None:
        gpus = {p.gpu.casefold(): p.gpu for p in self.types}
        for gpu, cap in self.max_gpus.items():
            if str(gpu).casefold() not in gpus:
                raise FleetOptError(f"max_gpus[{gpu!r}]: {gpu} is not a GPU of the fleet's "
                                    f"types ({', '.join(sorted(set(gpus.values())))}); fix "
                                    "--max-gpus")
            if not _whole(cap) or cap < 0:
                raise FleetOptError(f"max_gpus[{gpu!r}]={cap!r}: a cap is a whole number of "
                                    "GPUs >= 0 (--max-gpus TYPE=N)")
        t = self.max_total_gpus
        if t is not None and (not _whole(t) or t < 0):
            raise FleetOptError(f"max_total_gpus={t!r}: must be a whole number of GPUs >= 0 "
                                "(--max-total-gpus)")

    @property
    def mixing_mode(self) -> str:
        """The resolved :attr:`mixing` (``"none"`` with one type or a service model other
        than slot; ``"auto"`` resolved)."""
        if len(self.types) < 2 or self.mixing == "none" or \
                self.scenario.service_model != "slot":
            return "none"
        if self.mixing == "auto":
            coupled = bool(self.max_gpus) or self.max_total_gpus is not None
            return "full" if coupled else "filler"
        return self.mixing

    def cap_of(self, gpu: str) -> int | None:
        """The availability cap (GPUs) of GPU ``gpu``, or None."""
        for k, v in self.max_gpus.items():
            if k.casefold() == gpu.casefold():
                return int(v)
        return None

    @property
    def price_usd_per_instance_hour(self) -> np.ndarray:
        """``(t,)`` USD per instance-hour of each type (an instance is ``tp`` GPUs)."""
        return np.array([p.usd_per_instance_hour for p in self.types])

    def within_caps(self, instances_by_type: np.ndarray) -> np.ndarray:
        """Whether instance vectors ``(..., t)`` meet the availability caps and the cap on
        all GPUs (an instance of type ``t`` holds ``tp_t`` GPUs)."""
        types = self.types
        tp = np.array([p.tp for p in types])
        gpus = instances_by_type * tp
        ok = np.ones(instances_by_type.shape[:-1], bool)
        for gpu in {p.gpu for p in types}:
            cap = self.cap_of(gpu)
            if cap is None:
                continue
            sel = np.array([p.gpu == gpu for p in types])
            ok &= gpus[..., sel].sum(axis=-1) <= cap
        if self.max_total_gpus is not None:
            ok &= gpus.sum(axis=-1) <= self.max_total_gpus
        return ok


def redundancy_floor(counts: np.ndarray, mass: np.ndarray, min_per_pool: int) -> np.ndarray:
    """``(a, t)`` instance counts with the redundancy floor: ``max(N, min_per_pool)`` for
    pools that receive requests (``mass > 0``); -1 (type cannot serve) and pools without
    requests are left as they are. The one place the floor is applied to solo pools."""
    out = counts.copy()
    busy = (mass > BUSY_MASS)[:, None] & (out >= 0)
    out[busy] = np.maximum(out[busy], min_per_pool)
    return out


def check_solver_limits(time_limit_s, mip_rel_gap) -> None:
    """Reject a time limit (seconds) or relative MIP gap that is not finite and in range."""
    if time_limit_s is not None and (isinstance(time_limit_s, bool)
                                     or not isinstance(time_limit_s, Real)
                                     or not (math.isfinite(time_limit_s) and time_limit_s > 0)):
        raise FleetOptError(f"time_limit_s={time_limit_s!r}: the HiGHS time limit must be a "
                            "positive number of seconds (--time-limit-s)")
    if isinstance(mip_rel_gap, bool) or not isinstance(mip_rel_gap, Real) or not (
            math.isfinite(mip_rel_gap) and 0 <= mip_rel_gap < 1):
        raise FleetOptError(f"mip_rel_gap={mip_rel_gap!r}: the relative MIP gap must be in "
                            "[0, 1)")
