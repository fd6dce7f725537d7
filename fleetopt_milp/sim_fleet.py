"""What the simulator simulates: a fleet of pools, C&R bands and allocations.

A :class:`FleetSpec` is the simulator's input (docs/model.md §2-4): pools by window, the
Compress-and-Route bands between them (§4), the allocations of instances of a profile
(an instance = ``tp`` GPUs, §2) in each pool, and the TTFT SLO. :func:`fleet_from_plan`
builds it from a plan. Re-exported by :mod:`fleetopt_milp.simulator`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import FleetOptError
from .hardware import Catalog, Profile, load_catalog, resolve_profile
from .plan import Plan
from .routing import route, split_allocations

__all__ = ["AllocationSpec", "FleetSpec", "fleet_from_plan"]


@dataclass(frozen=True)
class AllocationSpec:
    """``instances`` replicas of ``profile`` in pool ``pool`` taking ``load_share`` of it.

    ``max_batch``: engine batch cap per instance (``None`` = the profile's
    ``engine_max_batch``, docs/engine.md §2; the slot fidelity reserves ``slots(C)``).
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
                                    ">= 1 (None = the profile's engine batch cap)")
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

    Raises :class:`FleetOptError` when a profile's slots at its pool's window (the engine's
    batch cap under the engine model) disagree with the plan's ``slots_per_instance`` (the
    catalogue changed since the plan was made).
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
            # The plan's batch cap: the engine's under the engine model (docs/engine.md §2),
            # the reserved KV slots of the window under the slot model.
            s = (prof.engine_max_batch if plan.service_model == "engine"
                 else prof.slots(windows[k]))
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
