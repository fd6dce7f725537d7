"""Capacity of a pool's instances: ``X(k)``, the capacity levels and the filler columns.

``X_t(k)`` is the largest share of a pool's requests that ``k`` instances of type ``t``
carry within the SLO and ``rho_max``: the inverse of the minimum-instances staircase
``N_t(x)`` (docs/model.md §3). A mixed pool (docs/milp.md §4) is modelled with it in two
ways: staircase *capacity levels* ``(k_i, r_i)`` for ``mixing="full"`` (:func:`levels`),
and the best *main-plus-filler* pool of each arc for ``mixing="filler"``
(:func:`filler_columns`).

Units: shares are fractions of the pool's requests (may exceed 1 for ``X``), counts are
instances (replicas of ``tp`` GPUs), prices USD per instance-hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..poolload import PoolLoad
from ..queueing import ttft_miss_probability, wait_quantile_s
from ..sizing import min_instances
from .problem import EPS_USD, FleetProblem

__all__ = ["CAPACITY_MARGIN", "LEVEL_MERGE_TOLERANCE", "FILLER_MAX_INSTANCES", "TypeLoads",
           "CapacityLevels", "FillerColumns", "capacity_share", "levels", "filler_columns",
           "two_cheapest"]

LEVEL_MERGE_TOLERANCE = 0.002
"""Capacity levels whose per-instance capacity exceeds the level below by less than this
relative amount are merged into it (conservative: the lower ratio is used)."""

FILLER_MAX_INSTANCES = 4
"""``mixing="filler"``: a mixed pool is a main type plus 1 to this many instances of one
other type (the filler takes the share those instances carry, exactly ``X(n)``)."""

CAPACITY_MARGIN = 2e-6
"""Share subtracted from every capacity level ``X(k)`` so that HiGHS's feasibility
tolerance (1e-7) can never turn a level into an over-count (docs/solver.md)."""

_BISECTIONS = 45       # relative precision 2^-45 ~ 3e-14 of the utilization bound
_NUDGES = 4            # times X is scaled by (1 - 1e-7) until N(X) <= k is confirmed


@dataclass(frozen=True)
class TypeLoads:
    """The exact loads of one GPU type on the arcs sized so far.

    arcs: ``(n,)`` arc indices (into the candidate arcs); load: their :class:`PoolLoad`
    row by row. Invariant: ``arcs`` has no repeats (an arc is sized once per type).
    """

    arcs: np.ndarray
    load: PoolLoad

    def rows(self, arcs: np.ndarray) -> np.ndarray:
        """Rows of ``arcs`` in :attr:`load` (every arc must be present)."""
        order = np.argsort(self.arcs, kind="stable")
        return order[np.searchsorted(self.arcs[order], arcs)]

    def of(self, arcs: np.ndarray) -> PoolLoad:
        """The loads of ``arcs``."""
        return self.load.take(self.rows(arcs))

    def extended(self, arcs: np.ndarray, load: PoolLoad) -> TypeLoads:
        """These loads plus those of new ``arcs``."""
        return TypeLoads(np.concatenate([self.arcs, arcs]), PoolLoad.concat([self.load, load]))


def _slo_ok(problem: FleetProblem, load: PoolLoad, idx, instances, share) -> np.ndarray:
    """The SLO test of docs/model.md §3 for pools ``idx`` at ``instances`` instances
    carrying ``share`` of their requests (the rule in force: tail, or the paper's)."""
    s = problem.scenario
    q = s.percentile / 100.0
    slo = s.slo_ms * 1e-3
    b = load.at(idx, instances)
    a = b.offered_load * share
    if s.paper_compat:
        w = wait_quantile_s(q, b.servers, a, b.mean_service_s, b.cs2)
        return np.asarray(w + b.mean_floor_s <= slo)
    miss = ttft_miss_probability(slo, b.servers, a, b.mean_service_s, b.cs2, b.floor_s,
                                 b.floor_prob)
    return np.asarray(miss <= 1.0 - q)


def _min_instances(problem: FleetProblem, load: PoolLoad) -> np.ndarray:
    s = problem.scenario
    return min_instances(load, s.slo_ms * 1e-3, s.percentile, s.rho_max,
                         paper_rule=s.paper_compat)


def capacity_share(problem: FleetProblem, load: PoolLoad, idx, instances) -> np.ndarray:
    """Largest share of each pool's requests that ``instances`` instances carry within the
    SLO and ``rho_max`` (docs/model.md §3): ``X(k)``, the inverse of the minimum-instances
    staircase. Vectorised over ``idx`` (pool indices into ``load``) and ``instances``.

    The utilization bound ``k slots rho_max / a`` is exact where the SLO holds there;
    elsewhere a bisection on the share (relative precision 1e-12). Every result is
    confirmed with :func:`~fleetopt_milp.queueing.min_instances` (``N(X) <= k``) and nudged
    down until it is; 0 where the type cannot serve the pool. May exceed 1. Each element
    is computed independently of the others in the batch.
    """
    s = problem.scenario
    idx = np.asarray(idx, dtype=np.int64)
    k = np.asarray(instances, dtype=float)
    slots = load.slots_per_instance[idx].astype(float)
    a1 = load.offered_load[idx]
    servers = k * slots
    x = np.zeros(idx.size)
    live = (a1 > 0) & (k >= 1)
    if not np.any(live):
        return x
    li = np.flatnonzero(live)
    x_rho = servers[li] * s.rho_max / a1[li]
    ok = _slo_ok(problem, load, idx[li], k[li], x_rho)
    x[li[ok]] = x_rho[ok]
    todo = li[~ok]
    if todo.size:
        lo = np.zeros(todo.size)
        hi = servers[todo] * s.rho_max / a1[todo]
        for _ in range(_BISECTIONS):
            mid = 0.5 * (lo + hi)
            good = _slo_ok(problem, load, idx[todo], k[todo], mid)
            lo = np.where(good, mid, lo)
            hi = np.where(good, hi, mid)
        x[todo] = lo
    for _ in range(_NUDGES):
        check = np.flatnonzero(x > 0)
        if not check.size:
            break
        n = _min_instances(problem, load.take(idx[check]).scaled(x[check]))
        bad = (n > k[check]) | (n < 0)
        if not np.any(bad):
            break
        x[check[bad]] *= 1.0 - 1e-7
    else:
        check = np.flatnonzero(x > 0)
        if check.size:
            n = _min_instances(problem, load.take(idx[check]).scaled(x[check]))
            x[check[(n > k[check]) | (n < 0)]] = 0.0
    return x


@dataclass(frozen=True)
class CapacityLevels:
    """Staircase capacity levels of mixed pools (docs/milp.md §4), arrays ``(a, t, L)``.

    k: level counts ``k_1 < k_2 < ...`` (0 = unused slot, always after the used ones).
    r: capacity per instance ``r_i = (X(k_i) - CAPACITY_MARGIN) / k_i`` (share/instance),
        strictly increasing along the used levels of a pool.
    hi: largest count of level ``i``'s segment: ``k_{i+1} - 1``, the top level up to the
        pool's largest useful count.
    Invariant (never under-count): for every ``n`` in ``[k_i, hi_i]``, ``n r_i <= X(n)``,
    because ``X(n)/n`` is non-decreasing in ``n``.
    """

    k: np.ndarray
    r: np.ndarray
    hi: np.ndarray

    @classmethod
    def empty(cls, n_arcs: int, n_types: int, width: int = 1) -> CapacityLevels:
        return cls(np.zeros((n_arcs, n_types, width), np.int64),
                   np.zeros((n_arcs, n_types, width)),
                   np.zeros((n_arcs, n_types, width), np.int64))

    def used(self) -> np.ndarray:
        """``(a, t)`` number of levels of each (pool, type)."""
        return (self.k > 0).sum(axis=2)


def _level_candidates(n1: np.ndarray) -> np.ndarray:
    """``(n, C)`` candidate counts: 1, 2, 4, ... below ``N1 - 1``, then ``N1 - 1`` and
    ``N1`` (0 where absent)."""
    top = int(n1.max()) if n1.size else 1
    cols = []
    j = 1
    while j < max(top - 1, 1):
        cols.append(np.where(j < n1 - 1, j, 0))
        j *= 2
    cols.append(np.where(n1 - 1 >= 1, n1 - 1, 0))
    cols.append(n1.copy())
    kc = np.stack(cols, axis=1).astype(np.int64)
    kc[n1 <= 0] = 0
    return kc


def levels(problem: FleetProblem, load: PoolLoad, n1: np.ndarray, n_max: np.ndarray
           ) -> CapacityLevels:
    """Capacity levels of pools ``load`` (one type) with solo counts ``n1``, arrays
    ``(n, 1, L)`` (docs/milp.md §4). A candidate level (:func:`_level_candidates`) is kept
    if its capacity per instance beats the kept level below by more than
    :data:`LEVEL_MERGE_TOLERANCE` (the top one if it beats it at all); the top segment
    reaches ``n_max``."""
    n = n1.size
    kc = _level_candidates(n1)
    rows, colidx = np.nonzero(kc > 0)
    x = np.zeros(kc.shape)
    if rows.size:
        x[rows, colidx] = capacity_share(problem, load, rows, kc[rows, colidx])
    r = np.where(kc > 0, np.maximum(x - CAPACITY_MARGIN, 0.0) / np.maximum(kc, 1), 0.0)
    keep = np.zeros(kc.shape, bool)
    last_r = np.zeros(n)
    for c in range(kc.shape[1]):
        valid = (kc[:, c] > 0) & (r[:, c] > 0)
        is_top = kc[:, c] == n1
        gain = np.where(is_top, r[:, c] > last_r, r[:, c] > last_r * (1 + LEVEL_MERGE_TOLERANCE))
        take_ = valid & gain & ~np.any(keep & (kc == kc[:, [c]]), axis=1)
        keep[:, c] = take_
        last_r = np.where(take_, r[:, c], last_r)
    out = CapacityLevels.empty(n, 1, max(int(keep.sum(axis=1).max()) if n else 1, 1))
    for i in range(n):
        sel = np.flatnonzero(keep[i])
        order = np.argsort(kc[i, sel])
        ks, rs = kc[i, sel][order], r[i, sel][order]
        his = np.append(ks[1:] - 1, max(int(n_max[i]), int(ks[-1]) if ks.size else 0))
        out.k[i, 0, :ks.size] = ks
        out.r[i, 0, :ks.size] = rs
        out.hi[i, 0, :ks.size] = his
    return out


@dataclass(frozen=True)
class FillerColumns:
    """The cheapest main-plus-filler pool of each arc (``mixing="filler"``, docs/milp.md
    §4), arrays ``(a,)``: cost (USD/h, inf: none), main type and its instances, filler type,
    its instances and the share of the pool's requests it takes. Invariant: where ``cost``
    is finite, ``main != type``, ``1 <= n <= FILLER_MAX_INSTANCES``, ``0 < share < 1`` and
    ``main_n`` is below the main type's solo count."""

    cost: np.ndarray
    main: np.ndarray
    main_n: np.ndarray
    type: np.ndarray
    n: np.ndarray
    share: np.ndarray

    @classmethod
    def none(cls, n: int) -> FillerColumns:
        return cls(np.full(n, np.inf), np.full(n, -1, np.int64), np.zeros(n, np.int64),
                   np.full(n, -1, np.int64), np.zeros(n, np.int64), np.zeros(n))

    def placed(self, size: int, rows: np.ndarray) -> FillerColumns:
        """These columns at ``rows`` of ``size`` arcs (none elsewhere)."""
        out = FillerColumns.none(size)
        for f in ("cost", "main", "main_n", "type", "n", "share"):
            getattr(out, f)[rows] = getattr(self, f)
        return out

    def subset(self, mask: np.ndarray) -> FillerColumns:
        return FillerColumns(*(getattr(self, f)[mask] for f in
                               ("cost", "main", "main_n", "type", "n", "share")))

    def instances_by_type(self, n_types: int) -> np.ndarray:
        """``(a, t)`` instances of each type in each arc's filler pool (0 where none)."""
        out = np.zeros((self.cost.size, n_types))
        r = np.flatnonzero(self.main >= 0)
        out[r, self.main[r]] += self.main_n[r]
        out[r, self.type[r]] += self.n[r]
        return out


def filler_columns(problem: FleetProblem, loads: tuple[TypeLoads | None, ...],
                   arcs: np.ndarray, counts: np.ndarray, price: np.ndarray) -> FillerColumns:
    """The cheapest main-plus-filler pool of each of ``arcs``, ``counts`` ``(a, t)`` their
    exact solo counts, ``loads`` the per-type loads holding them (docs/milp.md §4).

    A filler of ``k <= FILLER_MAX_INSTANCES`` instances of type ``t2`` takes the share
    ``X_t2(k)`` it carries (:func:`capacity_share`, less :data:`CAPACITY_MARGIN`); the main
    type ``t1`` takes the rest with the exact minimum count for it, at least the
    redundancy floor less ``k``, kept only when below its solo count.
    """
    mmin = int(problem.min_instances_per_pool)
    G = len(problem.types)
    F = FILLER_MAX_INSTANCES
    n = counts.shape[0]
    out = FillerColumns.none(n)
    xf = np.zeros((n, G, F + 1))
    for t in range(G):
        rows = np.flatnonzero(counts[:, t] >= 1)
        if not rows.size:
            continue
        li = loads[t].rows(arcs[rows])
        for k in range(1, F + 1):
            x = capacity_share(problem, loads[t].load, li, np.full(rows.size, k))
            xf[rows, t, k] = np.maximum(x - CAPACITY_MARGIN, 0.0)
    for t1 in range(G):
        r1 = np.flatnonzero(counts[:, t1] >= 2)
        if not r1.size:
            continue
        li1 = loads[t1].rows(arcs[r1])
        for t2 in range(G):
            if t2 == t1:
                continue
            for k in range(1, F + 1):
                x2 = xf[r1, t2, k]
                ok = (x2 > 0) & (x2 < 1)
                if not np.any(ok):
                    continue
                rr = r1[ok]
                n1 = _min_instances(problem, loads[t1].load.take(li1[ok]).scaled(1.0 - x2[ok]))
                n1 = np.where(n1 >= 1, np.maximum(n1, mmin - k), n1)
                good = (n1 >= 1) & (n1 < counts[rr, t1])
                cost = np.where(good, price[t1] * n1 + price[t2] * k, np.inf)
                better = cost < out.cost[rr] - EPS_USD
                w = rr[better]
                out.cost[w] = cost[better]
                out.main[w] = t1
                out.main_n[w] = n1[better]
                out.type[w] = t2
                out.n[w] = k
                out.share[w] = x2[ok][better]
    return out


def two_cheapest(price: np.ndarray) -> float:
    """Least cost of a pool that is not a solo pool: instances of at least two types."""
    p = np.sort(price)
    return float(p[0] + p[1]) if p.size >= 2 else math.inf
