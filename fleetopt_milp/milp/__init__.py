"""The fleet MILP: Pyomo + HiGHS over pools, GPU types, budgets and availability.

The analytical planner (:mod:`fleetopt_milp.planner`) answers the paper's question: two
pools, one GPU type. This package answers the general one: up to ``K = 4`` ordered pools,
several GPU types (mixed within a pool, each allocation its own M/G/c queue),
availability caps per GPU type, a cap on total GPUs, a budget in USD/h, a minimum of
instances per pool, and Compress-and-Route with ``gamma`` chosen per boundary. The
formulation, its pruning certificate and the re-check are derived in docs/milp.md; the
solver settings in docs/solver.md.

Modules, in the order a solve runs through them:

- :mod:`.problem` - :class:`FleetProblem`, the question, and its field checks;
- :mod:`.arcs` - nodes, candidate arcs (pools) and their exact sizing;
- :mod:`.capacity` - capacity ``X(k)`` of ``k`` instances, staircase levels, filler pools;
- :mod:`.paths` - shortest paths: pruning bounds, the warm start, the baselines;
- :mod:`.tables` - :func:`precompute`: the staged pruning into :class:`ArcTables`;
- :mod:`.model` - :func:`build_model`: the Pyomo model (symbol table in its docstring);
- :mod:`.solve` - :func:`solve_model`, the exact re-check and the plan; :func:`solve`,
  :func:`solve_max_rate`;
- :mod:`.diagnose` - which constraint makes a question infeasible.

Usage: ``model = build_model(problem)``, add your own constraints on the named
expressions (``model.gpus[gpu]``, ``model.instances[profile]``, ``model.usd_per_hour``,
``model.n_pools``), then ``plan = solve_model(model)``. :func:`solve` does both.

Units: tokens, requests/s, seconds (``*_s``) or milliseconds (``*_ms``), USD per hour.
Pyomo is imported by this package only; ``fleetopt_milp`` loads it on first use.
"""

from .capacity import CAPACITY_MARGIN, FILLER_MAX_INSTANCES, LEVEL_MERGE_TOLERANCE, capacity_share
from .model import build_model
from .problem import FleetProblem
from .solve import (
    GROW_ALL_MAX_ARCS,
    GROW_FACTOR_LIMIT,
    HIGHS_OPTIONS,
    solve,
    solve_max_rate,
    solve_model,
)
from .tables import ArcTables, precompute

__all__ = [
    "FleetProblem",
    "ArcTables",
    "precompute",
    "build_model",
    "solve_model",
    "solve",
    "solve_max_rate",
    "capacity_share",
    "LEVEL_MERGE_TOLERANCE",
    "CAPACITY_MARGIN",
    "FILLER_MAX_INSTANCES",
    "GROW_FACTOR_LIMIT",
    "GROW_ALL_MAX_ARCS",
    "HIGHS_OPTIONS",
]
