"""The fleet MILP as a Pyomo model (docs/milp.md §4-5).

:func:`build_model` declares the sets, then calls one small ``_define_*`` function per
part of the formulation. Each mixed pool is one unit (:func:`_define_mixed_pool`): its
staircase capacity levels live in its own Block, its rows join the formulation's row
families. Components are named after the symbols of docs/milp.md:

=====================  ======================  =============================================
symbol                 Pyomo component         meaning
=====================  ======================  =============================================
``V``                  ``model.V``             nodes (candidate boundaries; 0 source, last sink)
``A``                  ``model.A``             kept arcs ``a = (u, v)``: candidate pools
``T``                  ``model.T``             GPU types (index into ``fleet_tables.profiles``)
``Y``                  ``model.Y``             ``(u, v, t)``: type ``t`` can serve pool ``a``
``M``                  ``model.M``             arcs that may hold a mixed pool
``x[a]``               ``model.x``             binary: pool ``a`` is in the fleet
``y[a,t]``             ``model.y``             binary: pool ``a`` on type ``t`` alone, ``N1`` instances
``w[a]``               ``model.w``             binary: pool ``a`` is mixed
``s[a,t]``             ``model.s``             share of mixed pool ``a``'s requests on type ``t``
``n[a,t]``             ``model.n``             instances of type ``t`` in mixed pool ``a`` (integer)
``levels[a]``          ``model.levels``        Block of mixed pool ``a``'s capacity levels:
``L[a]``               ``model.levels[a].L``   its levels ``(t, i)``
``z[a,t,i]``           ``model.levels[a].z``   binary: level ``i`` of type ``t`` is used
``m[a,t,i]``           ``model.levels[a].m``   instances in level ``i``'s segment
``MT`` / ``ML``        ``model.MT`` / ``ML``   ``(u, v, t)`` / ``(u, v, t, i)`` of mixed pools' types / levels
``flow[v]``            ``model.flow``          ``sum_out x - sum_in x = 1 / 0 / -1``
``pick[a]``            ``model.pick``          ``x[a] = sum_t y[a,t] + w[a]``
``split[a]``           ``model.split``         ``sum_t s[a,t] = w[a]``
``one_level[a,t]``     ``model.one_level``     ``sum_i z[a,t,i] <= w[a]``
``low[a,t,i]``         ``model.low``           ``m[a,t,i] >= k_i z[a,t,i]``
``high[a,t,i]``        ``model.high``          ``m[a,t,i] <= hi_i z[a,t,i]``
``count[a,t]``         ``model.count``         ``n[a,t] = sum_i m[a,t,i]``
``capacity[a,t]``      ``model.capacity``      ``s[a,t] <= sum_i r_i m[a,t,i]``
``redundancy[a]``      ``model.redundancy``    ``sum_t n[a,t] >= min_instances w[a]``
``instances[p]``       ``model.instances``     instances of profile ``p`` (expression)
``gpus[g]``            ``model.gpus``          GPUs of GPU type ``g`` (expression)
``usd_per_hour``       ``model.usd_per_hour``  the fleet's cost, USD/h (the objective ``cost``)
``n_pools``            ``model.n_pools``       pools in the fleet (expression)
``P`` / ``G``          ``model.P`` / ``G``     profile names / GPU names (index the two above)
``K_max``              ``model.max_pools``     ``n_pools <= K``
``cap[g]``             ``model.caps``          ``gpus[g] <= cap_g`` (availability)
``G_max``              ``model.total_gpus``    ``sum_g gpus[g] <= max_total_gpus``
``B_usd``              ``model.budget``        ``usd_per_hour <= budget``
                       ``model.cost``          objective: minimise ``usd_per_hour``
=====================  ======================  =============================================

With ``mixing="filler"`` a mixed pool has no levels (and the model no ``levels`` blocks):
``s`` and ``n`` are expressions of ``w[a]`` (the arc's best main-plus-filler pool, fixed
in advance).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pyomo.environ as pyo

from .problem import FleetProblem
from .tables import ArcTables, precompute

__all__ = ["build_model", "add_pools", "user_constraints", "PoolColumns"]


@dataclass
class PoolColumns:
    """Model bookkeeping for one pool ``(u, v)``: ``solo`` type -> instances of its solo
    column (redundancy floor applied), ``mix`` the types of its mixed pool (type ->
    instances for a filler pool, None for a level-based one; empty: no mixed pool),
    ``busy`` whether it receives requests, ``row`` its row in ``model.fleet_tables``."""

    solo: dict[int, int]
    busy: bool
    row: int
    mix: dict[int, int | None] = field(default_factory=dict)


def build_model(problem: FleetProblem | ArcTables, prune: bool = True) -> pyo.ConcreteModel:
    """The fleet MILP as a Pyomo ``ConcreteModel`` (docs/milp.md §4-5; symbols: module
    docstring).

    ``problem`` may be a :class:`~.problem.FleetProblem` (tables are precomputed here) or
    the :class:`~.tables.ArcTables` of :func:`~.tables.precompute`. Add your own
    constraints before :func:`~fleetopt_milp.milp.solve_model` on these named expressions:

    - ``model.gpus[gpu]``: GPUs of GPU type ``gpu`` (e.g. ``"H100-80GB"``) in the fleet;
    - ``model.instances[profile]``: instances of a profile (e.g. ``"paper-H100"``);
    - ``model.usd_per_hour``: the fleet's price, USD/h; ``model.n_pools``: pools used.

    Example: ``model.rack = pyo.Constraint(expr=model.gpus["H100-80GB"] <= 32)``.

    Per-pool variables are keyed by the pool's nodes ``(u, v)`` (indices into
    ``model.fleet_tables.node_tokens`` / ``node_gamma``; the pool serves
    ``(node_tokens[u], node_tokens[v]]``): ``model.x[u, v]``, ``model.y[u, v, t]``,
    ``model.w[u, v]``, ``model.s[u, v, t]``, ``model.n[u, v, t]`` and the block
    ``model.levels[u, v]`` (``mixing="full"``). :func:`solve_model` may add pools
    that pruning left out (when your constraints push the optimum above the pruning
    bound); the named expressions, and so your constraints, then cover them too.
    """
    t0 = time.perf_counter()
    tables = problem if isinstance(problem, ArcTables) else precompute(problem, prune)
    t_pre = time.perf_counter() - t0 if not isinstance(problem, ArcTables) else \
        float(tables.seconds.get("total_s", 0.0))
    t1 = time.perf_counter()
    m = pyo.ConcreteModel(name="fleetopt")
    _declare_sets(m, tables)
    _define_pool_variables(m, tables)
    _define_aggregates(m, tables)
    _define_fleet_constraints(m, tables.problem)
    m.cost = pyo.Objective(expr=m.usd_per_hour, sense=pyo.minimize)
    m.fleet_builtin = frozenset(c.name for c in m.component_objects(pyo.Constraint))
    m.fleet_pools = {}
    add_pools(m, tables)
    m.fleet_seconds = {"precompute_s": t_pre, "build_s": time.perf_counter() - t1}
    return m


def _declare_sets(m: pyo.ConcreteModel, tables: ArcTables) -> None:
    """``V``, ``A``, ``Y``, ``M``, ``MT``, ``ML`` start empty and grow with the pools; ``T`` (type
    indices), ``P`` (profile names) and ``G`` (GPU names) are fixed."""
    types = tables.profiles
    m.V = pyo.Set(ordered=True)
    m.A = pyo.Set(dimen=2, ordered=True)
    m.T = pyo.Set(initialize=range(len(types)), ordered=True)
    m.P = pyo.Set(initialize=[p.name for p in types], ordered=True)
    m.G = pyo.Set(initialize=sorted({p.gpu for p in types}), ordered=True)
    m.Y = pyo.Set(dimen=3, ordered=True)
    m.M = pyo.Set(dimen=2, ordered=True)
    m.MT = pyo.Set(dimen=3, ordered=True)
    m.ML = pyo.Set(dimen=4, ordered=True)


def _define_pool_variables(m: pyo.ConcreteModel, tables: ArcTables) -> None:
    """``x[a]``, ``y[a,t]``, ``w[a]``, ``s[a,t]``, ``n[a,t]`` (expressions of ``w`` for
    filler pools), the ``levels[a]`` blocks (``mixing="full"``), and the row families
    ``flow[v]``, ``pick[a]`` and those of the mixed pools (filled by :func:`add_pools`)."""
    m.x = pyo.Var(m.A, dense=False, within=pyo.Binary)
    m.y = pyo.Var(m.Y, dense=False, within=pyo.Binary)
    m.w = pyo.Var(m.M, dense=False, within=pyo.Binary)
    if tables.mixing == "filler":
        m.s = pyo.Expression(m.MT)
        m.n = pyo.Expression(m.MT)
    else:
        m.s = pyo.Var(m.MT, dense=False, bounds=(0.0, 1.0))
        m.n = pyo.Var(m.MT, dense=False, within=pyo.NonNegativeIntegers)
        m.levels = pyo.Block(m.M)
    # Row families in a fixed order: HiGHS's answer among equally good share splits
    # depends on the order of rows and columns, and plans must not change with it.
    m.flow = pyo.Constraint(m.V)
    m.pick = pyo.Constraint(m.A)
    m.split = pyo.Constraint(m.M)
    m.one_level = pyo.Constraint(m.MT)
    m.low = pyo.Constraint(m.ML)
    m.high = pyo.Constraint(m.ML)
    m.count = pyo.Constraint(m.MT)
    m.capacity = pyo.Constraint(m.MT)
    m.redundancy = pyo.Constraint(m.M)


def _define_aggregates(m: pyo.ConcreteModel, tables: ArcTables) -> None:
    """The named expressions users constrain: ``instances[p]``, ``gpus[g]``,
    ``usd_per_hour``, ``n_pools`` (set over all pools by :func:`add_pools`)."""
    types = tables.profiles
    m.instances = pyo.Expression(m.P, rule=lambda m, n: 0)
    m.gpus = pyo.Expression(m.G, rule=lambda m, g: sum(
        p.tp * m.instances[p.name] for p in types if p.gpu == g))
    m.usd_per_hour = pyo.Expression(expr=0)
    m.n_pools = pyo.Expression(expr=0)


def _define_fleet_constraints(m: pyo.ConcreteModel, pb: FleetProblem) -> None:
    """``n_pools <= K``, availability caps, the total-GPU cap and the budget."""
    m.max_pools = pyo.Constraint(expr=m.n_pools <= int(pb.max_pools))
    capped = [g for g in m.G if pb.cap_of(g) is not None]
    if capped:
        m.caps = pyo.Constraint(capped, rule=lambda m, g: m.gpus[g] <= pb.cap_of(g))
    if pb.max_total_gpus is not None:
        m.total_gpus = pyo.Constraint(expr=sum(m.gpus[g] for g in m.G)
                                      <= int(pb.max_total_gpus))
    if pb.budget_usd_per_hour is not None:
        m.budget = pyo.Constraint(expr=m.usd_per_hour <= float(pb.budget_usd_per_hour))


def _define_filler_pool(m: pyo.ConcreteModel, key: tuple[int, int], tables: ArcTables,
                        row: int) -> dict[int, int | None]:
    """A main-plus-filler pool (docs/milp.md §4): ``n[a,t]`` and ``s[a,t]`` are fixed
    multiples of ``w[a]``. Returns its types -> instances."""
    w = m.w[key]
    x = float(tables.fill_share[row])
    main, fill = int(tables.fill_main[row]), int(tables.fill_type[row])
    n_main, n_fill = int(tables.fill_main_n[row]), int(tables.fill_n[row])
    m.MT.update([key + (main,), key + (fill,)])
    for t, n, share in ((main, n_main, 1.0 - x), (fill, n_fill, x)):
        m.n[key + (t,)] = n * w
        m.s[key + (t,)] = share * w
    return {main: n_main, fill: n_fill}


def _define_mixed_pool(m: pyo.ConcreteModel, key: tuple[int, int], tables: ArcTables,
                       row: int, min_instances: int, busy: bool) -> dict[int, int | None]:
    """A mixed pool with staircase capacity levels (docs/milp.md §4), one unit per pool:
    its block ``levels[a]`` holds the levels ``L`` (pairs ``(t, i)``) and their variables
    ``z, m``; its rows join the families ``low, high`` (``k_i z_i <= m_i <= hi_i z_i``),
    ``one_level`` (``sum_i z_i <= w``), ``count`` (``n[a,t] = sum_i m_i``), ``capacity``
    (``s[a,t] <= sum_i r_i m_i``), ``split`` (``sum_t s[a,t] = w``) and, for a pool with
    requests, ``redundancy`` (``sum_t n[a,t] >= min_instances w``). Returns its types."""
    lk, lh, lr = tables.level_k[row], tables.level_hi[row], tables.level_r[row]
    levels = [(t, i) for t in range(lk.shape[0]) for i in range(lk.shape[1]) if lk[t, i] > 0]
    types = sorted({t for t, _ in levels})
    blk = m.levels[key]
    blk.L = pyo.Set(initialize=levels, dimen=2, ordered=True)
    blk.z = pyo.Var(blk.L, within=pyo.Binary)
    blk.m = pyo.Var(blk.L, within=pyo.NonNegativeReals)
    w = m.w[key]
    m.MT.update([key + (t,) for t in types])
    m.ML.update([key + lv for lv in levels])
    z = {lv: blk.z[lv] for lv in levels}   # each variable looked up once
    seg = {lv: blk.m[lv] for lv in levels}
    n = {t: m.n[key + (t,)] for t in types}
    share = {t: m.s[key + (t,)] for t in types}
    for t in types:
        kt = key + (t,)
        lev = [(tt, i) for tt, i in levels if tt == t]
        for lv in lev:
            m.low[kt + lv[1:]] = seg[lv] >= int(lk[lv]) * z[lv]
            m.high[kt + lv[1:]] = seg[lv] <= int(lh[lv]) * z[lv]
        m.one_level[kt] = sum(z[lv] for lv in lev) <= w
        m.count[kt] = n[t] == sum(seg[lv] for lv in lev)
        m.capacity[kt] = share[t] <= sum(float(lr[lv]) * seg[lv] for lv in lev)
    m.split[key] = sum(share[t] for t in types) == w
    if min_instances > 0 and busy:
        m.redundancy[key] = sum(n[t] for t in types) >= min_instances * w
    return dict.fromkeys(types)


def add_pools(m: pyo.ConcreteModel, tables: ArcTables) -> None:
    """Add the pools of ``tables`` missing from ``m`` (and mixed pools newly allowed on
    known pools), then rebuild ``flow``, ``pick`` and the aggregate expressions over all
    pools. Pools already in ``m`` keep their variables, so user constraints stay valid."""
    mmin = int(tables.problem.min_instances_per_pool)
    n_solo = tables.solo_instances(mmin)
    pools: dict[tuple[int, int], PoolColumns] = m.fleet_pools
    for info in pools.values():
        info.row = -1  # a pool the new tables lack keeps its variables but has no row
    new, mixed = [], []
    for row in range(tables.n_arcs):
        key = (int(tables.arc_u[row]), int(tables.arc_v[row]))
        info = pools.get(key)
        if info is None:
            info = pools[key] = PoolColumns(
                {t: int(n_solo[row, t]) for t in m.T if n_solo[row, t] >= 0},
                tables.busy(row), row)
            new.append(key)
        info.row = row
        if not info.mix and tables.mix_arc[row]:
            mixed.append(key)
    # Sets grow in batches (one update per set: Pyomo's per-element add is slow).
    m.A.update(new)
    m.Y.update([key + (t,) for key in new for t in pools[key].solo])
    m.M.update(mixed)
    for key in new:
        m.x[key].value = None
        for t in pools[key].solo:
            m.y[key + (t,)].value = None
    for key in mixed:
        info = pools[key]
        m.w[key].value = None
        info.mix = _define_filler_pool(m, key, tables, info.row) \
            if tables.mixing == "filler" \
            else _define_mixed_pool(m, key, tables, info.row, mmin, info.busy)
    _define_rows(m, tables, pools)


def _define_rows(m: pyo.ConcreteModel, tables: ArcTables,
                 pools: dict[tuple[int, int], PoolColumns]) -> None:
    def put(comp, idx, expr):
        if idx in comp:
            comp[idx].set_value(expr)
        else:
            comp[idx] = expr
    sink = tables.node_tokens.size - 1
    out_of: dict[int, list] = {}
    into: dict[int, list] = {}
    for key, info in pools.items():
        out_of.setdefault(key[0], []).append(key)
        into.setdefault(key[1], []).append(key)
        e = sum(m.y[key + (t,)] for t in info.solo)
        if info.mix:
            e = e + m.w[key]
        put(m.pick, key, m.x[key] == e)
    for n in sorted(set(out_of) | set(into) | {0, sink}):
        if n not in m.V:
            m.V.add(n)
        rhs = (1 if n == 0 else 0) - (1 if n == sink else 0)
        e = sum(m.x[k] for k in out_of.get(n, ())) - sum(m.x[k] for k in into.get(n, ()))
        put(m.flow, n, pyo.Constraint.Infeasible if isinstance(e, int) and e != rhs
            else (e == rhs))
    for t, p in enumerate(tables.profiles):
        e = sum(n * m.y[key + (t,)] for key, info in pools.items()
                for tt, n in info.solo.items() if tt == t and n > 0)
        e = e + sum(m.n[key + (t,)] for key, info in pools.items() if t in info.mix)
        m.instances[p.name].set_value(e)
    m.usd_per_hour.set_value(sum(float(p.usd_per_instance_hour) * m.instances[p.name]
                                 for p in tables.profiles))
    m.n_pools.set_value(sum(m.x[k] for k in pools))
    m.fleet_tables = tables


def user_constraints(m: pyo.ConcreteModel) -> list:
    """The active constraint components added by the user after :func:`build_model`."""
    return [c for c in m.component_objects(pyo.Constraint, active=True, descend_into=True)
            if c.name not in m.fleet_builtin]
