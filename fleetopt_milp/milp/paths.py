"""Shortest paths over candidate pools: pruning bounds, the warm start and the baselines.

A fleet is a source-to-sink path of at most ``K`` arcs in the graph of candidate
boundaries (docs/milp.md §2). With a cost per arc, shortest paths by layers give the
cheapest path (:func:`best_path`) and a lower bound on every path through each arc
(:func:`cheapest_through`); these drive the warm start and the pruning certificate
(docs/milp.md §6). Costs are USD per hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..plan import FleetSummary
from .capacity import FillerColumns
from .problem import EPS_USD, FleetProblem

__all__ = ["Fleet", "NO_FLEET", "cheapest_through", "best_path", "feasible_path",
           "two_pool_fleet", "baselines", "BASELINE_NAMES"]

BASELINE_NAMES = ("homogeneous", "pool_routing", "retrofit", "fleetopt")

FILLER = -1
"""Type index meaning "the arc's main-plus-filler pool" in :attr:`Fleet.types`."""


@dataclass(frozen=True)
class Fleet:
    """A feasible fleet found before the MILP: its cost (USD/h), its arcs (indices into the
    arcs it was searched over, in path order) and each arc's type (:data:`FILLER`: the
    arc's main-plus-filler pool). ``usd_per_hour`` is inf and the tuples empty if none."""

    usd_per_hour: float
    arcs: tuple[int, ...]
    types: tuple[int, ...]

    def on(self, arcs: np.ndarray) -> Fleet:
        """The same fleet with its arcs mapped through ``arcs`` (sub-index -> index)."""
        return Fleet(self.usd_per_hour, tuple(int(arcs[a]) for a in self.arcs), self.types)

    def better_than(self, other: Fleet) -> bool:
        return self.usd_per_hour < other.usd_per_hour - EPS_USD


NO_FLEET = Fleet(math.inf, (), ())


def cheapest_through(n_nodes: int, u, v, cost, max_pools: int) -> np.ndarray:
    """Cost of the cheapest source-to-sink path of at most ``max_pools`` arcs through each
    arc ``u -> v`` (node 0 the source, ``n_nodes - 1`` the sink), arc costs ``cost``;
    inf where no such path. With lower bounds as costs, a lower bound on every fleet that
    uses the arc."""
    sink = n_nodes - 1
    inf = np.inf
    d_s = np.full((max_pools + 1, n_nodes), inf)
    d_t = np.full((max_pools + 1, n_nodes), inf)
    d_s[0, 0] = 0.0
    d_t[0, sink] = 0.0
    for k in range(1, max_pools + 1):
        np.minimum.at(d_s[k], v, d_s[k - 1][u] + cost)
        np.minimum.at(d_t[k], u, d_t[k - 1][v] + cost)
    best = np.full(u.size, inf)
    for k1 in range(max_pools):
        tail = np.min(d_t[: max_pools - k1], axis=0)
        best = np.minimum(best, d_s[k1][u] + cost + tail[v])
    return best


def best_path(n_nodes: int, u, v, cost, max_pools: int) -> tuple[float, tuple[int, ...]]:
    """The cheapest source-to-sink path of at most ``max_pools`` arcs: ``(cost, arcs)``;
    ``(inf, ())`` if none."""
    sink = n_nodes - 1
    d = np.full((max_pools + 1, n_nodes), np.inf)
    d[0, 0] = 0.0
    via = np.full((max_pools + 1, n_nodes), -1, dtype=np.int64)
    for k in range(1, max_pools + 1):
        cand = d[k - 1][u] + cost
        order = np.lexsort((cand, v))
        first = np.ones(order.size, bool)
        first[1:] = v[order][1:] != v[order][:-1]
        best = order[first]
        d[k][v[best]] = cand[best]
        via[k][v[best]] = best
    k = int(np.argmin(d[:, sink]))
    if not np.isfinite(d[k, sink]):
        return math.inf, ()
    path, node = [], sink
    for kk in range(k, 0, -1):
        a = int(via[kk][node])
        path.append(a)
        node = int(u[a])
    return float(d[k, sink]), tuple(reversed(path))


def feasible_path(problem: FleetProblem, n_nodes: int, u, v, n_solo: np.ndarray,
                  fill: FillerColumns | None) -> Fleet:
    """A cheap fleet that meets the caps: shortest paths over the arcs' solo pools
    (``n_solo`` ``(a, t)`` instances, -1 where a type cannot serve) and main-plus-filler
    pools ``fill``, with GPUs of capped types priced up by a multiplier (0, then growing)
    until the path meets the caps (docs/milp.md §6)."""
    types = problem.types
    G = len(types)
    price = problem.price_usd_per_instance_hour
    tp = np.array([p.tp for p in types], dtype=float)
    capped = np.array([problem.cap_of(p.gpu) is not None for p in types])
    weight = tp * (capped | (problem.max_total_gpus is not None))
    solo_cost = np.where(n_solo >= 0, n_solo * price, np.inf)
    if fill is None:
        fill = FillerColumns.none(n_solo.shape[0])
    fill_inst = fill.instances_by_type(G)
    scale = float(np.max(price / tp))
    best = NO_FLEET
    for mult in ((0.0,) + tuple(2.0 ** np.arange(-3, 7)) if weight.any() else (0.0,)):
        mu = mult * scale
        eff_solo = solo_cost + mu * np.where(n_solo >= 0, n_solo, 0) * weight
        eff_fill = fill.cost + mu * (fill_inst @ weight)
        pick = np.argmin(eff_solo, axis=1)
        eff = np.minimum(eff_solo[np.arange(pick.size), pick], eff_fill)
        _, path = best_path(n_nodes, u, v, eff, problem.max_pools)
        if not path:
            continue
        usage = np.zeros(G)
        cost, ty = 0.0, []
        for a in path:
            if eff_fill[a] < eff_solo[a, pick[a]]:
                usage += fill_inst[a]
                cost += fill.cost[a]
                ty.append(FILLER)
            else:
                usage[pick[a]] += n_solo[a, pick[a]]
                cost += solo_cost[a, pick[a]]
                ty.append(int(pick[a]))
        found = Fleet(float(cost), tuple(int(a) for a in path), tuple(ty))
        if problem.within_caps(usage) and found.better_than(best):
            best = found
        if mult == 0.0 and best.arcs:
            break  # the unpenalised optimum meets the caps
    return best


def two_pool_fleet(problem: FleetProblem, n_nodes: int, u, v, n_solo: np.ndarray) -> Fleet:
    """The cheapest fleet of at most two pools, one type per pool (``n_solo`` ``(a, t)``
    exact counts): the analytical planner's search over every pair of types, checked
    against the caps."""
    G = len(problem.types)
    price = problem.price_usd_per_instance_hour
    sink = n_nodes - 1
    best = NO_FLEET
    eye = np.eye(G, dtype=np.int64)
    for a in np.flatnonzero((u == 0) & (v == sink)):
        for t in range(G):
            n = n_solo[a, t]
            if n >= 0 and problem.within_caps(eye[t] * n) and n * price[t] < best.usd_per_hour:
                best = Fleet(float(n * price[t]), (int(a),), (t,))
    if problem.max_pools < 2:
        return best
    s_idx = np.flatnonzero((u == 0) & (v != sink))
    l_of = {int(u[i]): int(i) for i in np.flatnonzero((v == sink) & (u != 0))}
    s_idx = np.array([a for a in s_idx if int(v[a]) in l_of], dtype=np.int64)
    if not s_idx.size:
        return best
    l_idx = np.array([l_of[int(v[a])] for a in s_idx], dtype=np.int64)
    for t1 in range(G):
        for t2 in range(G):
            n1 = n_solo[s_idx, t1]
            n2 = n_solo[l_idx, t2]
            usage = eye[t1][None, :] * n1[:, None] + eye[t2][None, :] * n2[:, None]
            ok = (n1 >= 0) & (n2 >= 0) & problem.within_caps(usage)
            cost = np.where(ok, n1 * price[t1] + n2 * price[t2], np.inf)
            i = int(np.argmin(cost))
            found = Fleet(float(cost[i]), (int(s_idx[i]), int(l_idx[i])), (t1, t2))
            if found.better_than(best):
                best = found
    return best


def baselines(problem: FleetProblem, node_tokens, node_gamma, u, v, counts
              ) -> tuple[dict[str, FleetSummary], dict[str, str]]:
    """The analytical planner's baselines (docs/model.md §4), each the best over the types:
    one type for the whole fleet, exact ``counts`` ``(a, t)`` on the one- and two-pool
    arcs ``u -> v``. Returns ``(baselines, profile name of each)``."""
    types = problem.types
    price = problem.price_usd_per_instance_hour
    tp = np.array([p.tp for p in types])
    sink = node_tokens.size - 1
    homo = np.flatnonzero((u == 0) & (v == sink))
    short = {int(vv): i for i, (uu, vv) in enumerate(zip(u, v, strict=True))
             if uu == 0 and vv != sink}
    long = {int(uu): i for i, (uu, vv) in enumerate(zip(u, v, strict=True))
            if vv == sink and uu != 0}
    pairs = [(x, short[x], long[x]) for x in sorted(short) if x in long]
    out: dict[str, FleetSummary] = {}
    who: dict[str, str] = {}

    def keep(name, summary, prof):
        if name not in out or (summary.feasible and summary.usd_per_hour < out[name].usd_per_hour
                               - EPS_USD):
            out[name] = summary
            who[name] = prof
    for t, prof in enumerate(types):
        if homo.size and counts[homo[0], t] >= 0:
            n = int(counts[homo[0], t])
            keep("homogeneous", FleetSummary("homogeneous", None, 1.0, n, n * int(tp[t]),
                                             n * price[t], (n,)), prof.name)
        rows = []
        for x, a1, a2 in pairs:
            n1, n2 = counts[a1, t], counts[a2, t]
            if n1 >= 0 and n2 >= 0:
                rows.append((float((n1 + n2) * price[t]), int(n1 + n2), float(node_gamma[x]),
                             int(node_tokens[x]), int(n1), int(n2)))
        if not rows:
            continue
        rows.sort()
        pr = [r for r in rows if r[2] == 1.0]

        def summ(name, r, t=t):
            return FleetSummary(name, r[3], r[2], r[1], r[1] * int(tp[t]), r[0], (r[4], r[5]))
        keep("fleetopt", summ("fleetopt", rows[0]), prof.name)
        if pr:
            keep("pool_routing", summ("pool_routing", pr[0]), prof.name)
            rf = [r for r in rows if r[3] == pr[0][3]]
            keep("retrofit", summ("retrofit", rf[0]), prof.name)
    for name in BASELINE_NAMES:
        if name not in out:
            out[name] = FleetSummary(name, None, 1.0, 0, 0, math.inf, (), False,
                                     "no single-type fleet meets the SLO")
            who[name] = ""
    return {k: out[k] for k in BASELINE_NAMES}, {k: who[k] for k in BASELINE_NAMES}
