"""Service models: how a pool's demand becomes the queue it is sized as.

docs/model.md §2-3. The demand side (:mod:`~fleetopt_milp.demand`) gives, for candidate
pools, the exact unnormalised moments of the requests each pool serves
(:class:`~fleetopt_milp.demand.Moments`: mass, ``sum p S``, ``sum p S^2`` and the mass at
each TTFT floor of the table's grid), the pool's window and the total rate. A *service
model* turns that into a :class:`~fleetopt_milp.poolload.PoolLoad`, which the sizing and
the figures then use. This module is the seam between the two.

The seam
--------
A service model is any object with a ``name`` and a method::

    pool_load(moments, table, window_tokens, rate_rps) -> PoolLoad

(``moments``: the pools' :class:`Moments`, arrays over candidates; ``table``: the
:class:`~fleetopt_milp.demand.MomentTable` they came from, which also knows the profile,
the slots at each window and the floor grid; ``window_tokens``: ``(n,)`` windows;
``rate_rps``: the total arrival rate of the workload, requests/s.) Register it with
:func:`register_service_model`; :attr:`Scenario.service_model
<fleetopt_milp.scenario.Scenario.service_model>` picks it by name.

A demand at a given size becomes a queue in exactly two places, both on the load:
:meth:`PoolLoad.at(idx, instances) <fleetopt_milp.poolload.PoolLoad.at>` (arrays, what
:func:`~fleetopt_milp.sizing.min_instances` evaluates at every size it tries) and
:meth:`PoolLoad.queue(i, instances, share) <fleetopt_milp.poolload.PoolLoad.queue>` (one
:class:`~fleetopt_milp.queueing.Queue`, what :func:`~fleetopt_milp.queueing.pool_figures`
reads). So a model in which the size changes the queue plugs in by returning a
:class:`PoolLoad` subclass that

- sets the class attribute ``load_dependent = True`` (the sizing then skips its compiled
  slot-model kernel and calls :meth:`at` at every size it tries: the lower bound, each
  doubling and each bisection step; it also checks ``rho <= rho_max`` at every size);
- overrides ``at(idx, instances)`` to return the
  :class:`~fleetopt_milp.poolload.QueueBatch` at those sizes (``servers``,
  ``offered_load``, ``mean_service_s``, ``cs2``, ``floor_s`` of shape ``(k, m)``,
  ``floor_prob``), for example from per-batch coefficients it stores as extra fields;
  :meth:`queue` builds on :meth:`at`, so figures follow;
- overrides ``lower_bound_instances(idx, rho_max)`` if the utilization bound
  ``ceil(a / (slots rho_max))`` is not a valid lower bound under the model (it must
  never exceed the true minimum; the search is a doubling then a bisection from it, so
  the SLO test must be monotone in the size);
- keeps the base fields meaningful without a size: ``rate_rps`` (the sizing skips pools
  without traffic), finite ``mean_service_s > 0`` and ``cs2 >= 0`` and
  ``slots_per_instance >= 1`` (checked before every search), and ``floor_s``/``floor_prob``
  as the floors' lower limit over all sizes (a pool whose floors alone miss the SLO there
  is flagged ``-1`` without a search);
- keeps any extra per-candidate fields as arrays over candidates, so that
  :meth:`~fleetopt_milp.poolload.PoolLoad.take`, ``scaled`` and ``concat`` carry them.

New per-pool figures of such a model (e.g. TPOT) belong on its queue records and in
:class:`~fleetopt_milp.queueing.PoolFigures`, computed once there. A model that needs
more sums of the demand than ``Moments`` holds adds fields to it (and the matching prefix
sums to ``MomentTable``): ``Moments`` arithmetic and the planner's stacked candidate rows
carry every field.

:class:`SlotServiceModel` (``"slot"``) is the model of docs/model.md §2-3: each request
holds one KV slot for its whole service ``S = a (W + h_C L)``, whose moments are exact;
the size enters only through ``c = n slots``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from .demand import Moments, MomentTable
from .errors import FleetOptError
from .poolload import PoolLoad
from .queueing import compiled_kernels

__all__ = ["ServiceModel", "SlotServiceModel", "SLOT", "service_model",
           "register_service_model", "service_model_names", "scenario_pool_load",
           "unit_pool_load", "load_at_rate"]

#: Pools with less than this share of all requests carry no traffic.
EMPTY_MASS = 1e-15


@runtime_checkable
class ServiceModel(Protocol):
    """Turns pools' demand (exact moments) into the load they are sized on."""

    name: str

    def pool_load(self, moments: Moments, table: MomentTable, window_tokens,
                  rate_rps: float) -> PoolLoad:
        ...


@dataclass(frozen=True)
class SlotServiceModel:
    """One request holds one KV slot for its whole service time (docs/model.md §2-3)."""

    name: str = "slot"

    def pool_load(self, moments: Moments, table: MomentTable, window_tokens,
                  rate_rps: float) -> PoolLoad:
        """The :class:`PoolLoad` of pools with these moments at total arrival rate
        ``rate_rps`` (requests/s).

        ``E[S] = s1 / mass``, ``cs2 = s2 mass / s1^2 - 1`` (docs/model.md §3); floor shares
        normalised to the pool's own requests; slots per instance at each pool's window.
        Computed by the compiled form once loaded (identical numbers), else by numpy.
        """
        mass = np.ascontiguousarray(np.atleast_1d(moments.mass), dtype=np.float64)
        s1 = np.ascontiguousarray(np.atleast_1d(moments.s1), dtype=np.float64)
        s2 = np.ascontiguousarray(np.atleast_1d(moments.s2), dtype=np.float64)
        floor_mass = np.ascontiguousarray(np.atleast_2d(moments.floor_mass), dtype=np.float64)
        k = compiled_kernels()
        if k is not None:
            rate, es, cs2, fp = k.slot_load_kernel(mass, s1, s2, floor_mass, float(rate_rps),
                                                   EMPTY_MASS)
        else:
            live = mass > EMPTY_MASS
            safe = np.where(live, mass, 1.0)
            es = np.where(live, s1 / safe, 1.0)
            cs2 = np.maximum(np.where(live, s2 * safe / np.maximum(s1 ** 2, 1e-300) - 1.0,
                                      0.0), 0.0)
            fp = np.where(live[:, None], floor_mass / safe[:, None], 0.0)
            rate = np.where(live, rate_rps * mass, 0.0)
        slots = np.broadcast_to(table.slots(window_tokens), mass.shape)
        return PoolLoad(rate, es, cs2, slots, table.floor_s, fp)


SLOT = SlotServiceModel()

_MODELS: dict[str, ServiceModel] = {SLOT.name: SLOT}


def register_service_model(model: ServiceModel) -> None:
    """Make ``model`` available by its ``name`` (replaces a model of the same name)."""
    if not isinstance(model, ServiceModel):
        raise TypeError("a service model needs a name and a pool_load method")
    _MODELS[model.name] = model


def _builtin_models() -> None:
    """Register the built-in models defined in their own modules (docs/engine.md)."""
    from . import engine_model  # noqa: F401  (registers "engine")


def service_model_names() -> tuple[str, ...]:
    _builtin_models()
    return tuple(sorted(_MODELS))


def service_model(name: str) -> ServiceModel:
    """The service model called ``name``; :class:`FleetOptError` if there is none."""
    if name not in _MODELS:
        _builtin_models()
    try:
        return _MODELS[name]
    except KeyError:
        raise FleetOptError(f"service_model={name!r}: unknown; use one of "
                            f"{', '.join(service_model_names())}") from None


def scenario_pool_load(scenario, moments: Moments, table: MomentTable, window_tokens
                       ) -> PoolLoad:
    """The load of pools with these moments under ``scenario``'s service model, at its
    arrival rate, sized to its TPOT SLO as well when it has one (the engine model's own
    SLO, docs/engine.md §2). The one place the planner and the MILP turn demand into the
    load they size."""
    return load_at_rate(unit_pool_load(scenario, moments, table, window_tokens), scenario)


def unit_pool_load(scenario, moments: Moments, table: MomentTable, window_tokens
                   ) -> PoolLoad:
    """:func:`scenario_pool_load` at a total rate of 1 request/s and without the TPOT SLO:
    what does not depend on the rate or the SLOs, so tables reused over rates keep it
    (:class:`~fleetopt_milp.planner.PlanningTables`). A service model's rate enters only
    as ``rate_rps = rate x mass``, so :func:`load_at_rate` gives the same numbers."""
    return service_model(scenario.service_model).pool_load(moments, table, window_tokens, 1.0)


def load_at_rate(unit: PoolLoad, scenario) -> PoolLoad:
    """A :func:`unit_pool_load` at ``scenario``'s rate and TPOT SLO."""
    load = unit.scaled(scenario.rate_rps)
    if scenario.tpot_ms is not None:
        load = load.with_tpot_slo(scenario.tpot_ms * 1e-3, scenario.tpot_percentile)
    return load
