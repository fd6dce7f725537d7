"""The demand of candidate pools before a size is chosen, and where a size makes a queue.

A :class:`PoolLoad` holds, for ``n`` candidate pools at once, what a service model
(:mod:`~fleetopt_milp.service`) derives from each pool's demand: its arrival rate, the
service-time moments of a request holding one KV slot, the slots per instance and the
TTFT floors (docs/model.md §2-3). Two methods turn it into queues at a given instance
count, and they are the only places where that happens:

- :meth:`PoolLoad.at`: candidates ``idx`` at ``instances`` each, as one
  :class:`QueueBatch` of arrays (what the sizing evaluates);
- :meth:`PoolLoad.queue`: one candidate at one size as a
  :class:`~fleetopt_milp.queueing.Queue` (what the figures use).

Under the slot model the queue depends on the size only through ``c = n slots``
(:attr:`PoolLoad.load_dependent` is False), which lets
:func:`~fleetopt_milp.sizing.min_instances` use its compiled kernel. A service model
whose service time or floors depend on the load per instance subclasses
:class:`PoolLoad`, sets ``load_dependent = True`` and overrides :meth:`PoolLoad.at`
(and :meth:`PoolLoad.lower_bound_instances`); the sizing then calls it at every size it
tries.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from .queueing import Queue

__all__ = ["PoolLoad", "QueueBatch"]


@dataclass(frozen=True)
class QueueBatch:
    """``k`` queues as arrays (candidate pools at chosen sizes), docs/model.md §3.

    servers, offered_load (Erlangs), mean_service_s, cs2: ``(k,)``. floor_s: ``(k, m)``
    TTFT floors in seconds (a broadcast view when every row shares one grid).
    floor_prob: ``(k, m)`` shares of each queue's requests at each floor.
    """

    servers: np.ndarray
    offered_load: np.ndarray
    mean_service_s: np.ndarray
    cs2: np.ndarray
    floor_s: np.ndarray
    floor_prob: np.ndarray

    @property
    def utilization(self) -> np.ndarray:
        return self.offered_load / np.maximum(self.servers, 1e-300)

    @property
    def mean_floor_s(self) -> np.ndarray:
        fp = self.floor_prob
        return np.sum(fp * self.floor_s, axis=-1) / np.maximum(np.sum(fp, axis=-1), 1e-300)


@dataclass(frozen=True)
class PoolLoad:
    """What ``n`` candidate pools must serve (docs/model.md §3), under the slot model.

    Attributes (arrays of shape ``(n,)`` unless said):
        rate_rps: arrival rate into the pool, requests/s.
        mean_service_s: E[S] of a request holding one KV slot, seconds.
        cs2: squared coefficient of variation of S.
        slots_per_instance: KV slots of one instance at the pool's window (integer).
        floor_s: TTFT floors (prefill + compression latency), seconds, shape ``(m,)``:
            one grid shared by every candidate.
        floor_prob: share of each pool's requests at each floor, shape ``(n, m)``.
    """

    rate_rps: np.ndarray
    mean_service_s: np.ndarray
    cs2: np.ndarray
    slots_per_instance: np.ndarray
    floor_s: np.ndarray
    floor_prob: np.ndarray

    #: True when the service time or the floors depend on the instance count (then
    #: :meth:`at` is the model, and the sizing calls it at every size it tries).
    load_dependent: ClassVar[bool] = False

    def __post_init__(self):
        fs = np.asarray(self.floor_s, dtype=float)
        if fs.ndim != 1:
            raise ValueError(f"PoolLoad.floor_s must be one grid of shape (m,), got {fs.shape}")
        object.__setattr__(self, "floor_s", fs)
        object.__setattr__(self, "floor_prob", np.atleast_2d(np.asarray(self.floor_prob, float)))
        for name in ("rate_rps", "mean_service_s", "cs2"):
            object.__setattr__(self, name, np.atleast_1d(np.asarray(getattr(self, name), float)))
        object.__setattr__(self, "slots_per_instance",
                           np.atleast_1d(np.asarray(self.slots_per_instance)))

    def __len__(self) -> int:
        return int(self.rate_rps.shape[0])

    @property
    def offered_load(self) -> np.ndarray:
        """Offered load ``a = lambda E[S]`` in Erlangs (slot-seconds per second)."""
        return self.rate_rps * self.mean_service_s

    @property
    def mean_floor_s(self) -> np.ndarray:
        """Mean TTFT floor (mean prefill, plus compression latency where it applies), s."""
        fp = self.floor_prob
        return np.sum(fp * self.floor_s, axis=-1) / np.maximum(np.sum(fp, axis=-1), 1e-300)

    # -- operations ----------------------------------------------------------------------
    def _with(self, **changes) -> PoolLoad:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.__dict__.update(changes)
        return new

    def take(self, idx) -> PoolLoad:
        """The candidates ``idx`` (an index array or a slice), same floor grid."""
        return self._with(**{f.name: getattr(self, f.name)[idx] for f in fields(self)
                             if f.name != "floor_s"})

    def scaled(self, share) -> PoolLoad:
        """The same pools at ``share`` times the rate (a scalar or ``(n,)``): the part of a
        pool one allocation serves, or another total rate."""
        return self._with(rate_rps=self.rate_rps * np.asarray(share, float))

    @classmethod
    def concat(cls, loads) -> PoolLoad:
        """Candidates of several loads one after the other. Floor grids are merged into
        their sorted union (shares moved to the matching columns)."""
        loads = list(loads)
        first = loads[0]
        grid = first.floor_s
        if any(ld.floor_s.shape != grid.shape or np.any(ld.floor_s != grid) for ld in loads):
            grid = np.unique(np.concatenate([ld.floor_s for ld in loads]))
            probs = []
            for ld in loads:
                fp = np.zeros((len(ld), grid.size))
                np.add.at(fp, (slice(None), np.searchsorted(grid, ld.floor_s)), ld.floor_prob)
                probs.append(fp)
        else:
            probs = [ld.floor_prob for ld in loads]
        cat = {f.name: np.concatenate([getattr(ld, f.name) for ld in loads])
               for f in fields(first) if f.name not in ("floor_s", "floor_prob")}
        return first._with(floor_s=grid, floor_prob=np.concatenate(probs), **cat)

    # -- the seam: a demand at a size becomes a queue ------------------------------------
    def lower_bound_instances(self, idx: np.ndarray, rho_max: float) -> np.ndarray:
        """The fewest instances the utilization cap allows, ``ceil(a / (slots rho_max))``
        and at least one more slot than the load (docs/model.md §3); int64."""
        a = self.offered_load[idx]
        slots = self.slots_per_instance[idx].astype(float)
        lo = np.maximum(np.ceil(a / (slots * rho_max) - 1e-12).astype(np.int64), 1)
        lo[lo * slots <= a] += 1
        return lo

    def at(self, idx, instances) -> QueueBatch:
        """Candidates ``idx`` at ``instances`` instances each (broadcast), as queues."""
        idx = np.asarray(idx)
        fp = self.floor_prob[idx]
        return QueueBatch(
            servers=np.asarray(instances) * self.slots_per_instance[idx],
            offered_load=self.offered_load[idx], mean_service_s=self.mean_service_s[idx],
            cs2=self.cs2[idx], floor_s=np.broadcast_to(self.floor_s, fp.shape), floor_prob=fp)

    def compiled_search(self, idx, slo_s: float, q: float, rho_max: float,
                        paper_rule: bool, pairs=None, preset=None) -> np.ndarray | None:
        """A load-dependent model's compiled twin of the sizing's numpy search over the
        servable candidates ``idx`` (the same counts), or ``None`` where it has none.
        With ``pairs`` (:class:`~fleetopt_milp.sizing.Pairs`): the counts of every row
        (``preset`` holds 0 for idle rows, -1 for unservable ones), ``-2`` for rows the
        cheapest candidates do not need, or ``None``."""
        return None

    def saturation_share(self, idx, instances) -> np.ndarray:
        """The share of an instance's saturation throughput the rate takes at these sizes,
        held to ``rho_max`` like the utilization (a load-dependent model's own, where
        the two differ: :mod:`~fleetopt_milp.engine_model`); 0 here."""
        return np.zeros(np.shape(idx))

    def extra_fails(self, idx, instances) -> np.ndarray:
        """Sizes at which an SLO beyond TTFT fails (a service model's own, e.g. TPOT in
        :mod:`~fleetopt_milp.engine_model`); none here."""
        return np.zeros(np.shape(idx), dtype=bool)

    def extra_unservable(self, idx) -> np.ndarray:
        """Candidates that such an SLO rules out at every size; none here."""
        return np.zeros(np.shape(idx), dtype=bool)

    def queue(self, i: int, instances: int, share: float = 1.0) -> Queue:
        """Candidate ``i`` on ``instances`` instances carrying ``share`` of its requests."""
        b = (self.scaled(share) if share != 1.0 else self).at(np.array([i]), instances)
        fp = b.floor_prob[0]
        keep = fp > 0
        return Queue(servers=int(b.servers[0]), offered_load=float(b.offered_load[0]),
                     mean_service_s=float(b.mean_service_s[0]), cs2=float(b.cs2[0]),
                     floor_s=b.floor_s[0][keep], floor_prob=fp[keep])
