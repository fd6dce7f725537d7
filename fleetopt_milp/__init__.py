"""fleetopt-milp: cost-optimal LLM inference fleets under a P99 TTFT SLO.

The public API, one module per concept:

- :mod:`~fleetopt_milp.workload`: request-length distributions and traces.
- :mod:`~fleetopt_milp.hardware`: GPUs, LLMs, serving profiles (an instance = ``tp`` GPUs).
- :mod:`~fleetopt_milp.queueing`: Erlang C, M/G/c wait and TTFT tails, queues and their
  figures; :mod:`~fleetopt_milp.poolload`: candidate pools' demand and where a size makes a
  queue; :mod:`~fleetopt_milp.sizing`: minimum instances.
- :mod:`~fleetopt_milp.service`: service models (how a pool's demand becomes its queue).
- :mod:`~fleetopt_milp.demand`: exact service moments of any split into pools.
- :mod:`~fleetopt_milp.planner`: the analytical two-pool FleetOpt planner with C&R.
- :mod:`~fleetopt_milp.plan`: plans and plan files.

- :mod:`~fleetopt_milp.milp`: the Pyomo + HiGHS MILP (K pools, GPU types, caps, budgets).
- :mod:`~fleetopt_milp.simulator` and :mod:`~fleetopt_milp.routing`: the discrete-event
  simulator and the C&R router.

The MILP, the simulator and the router are imported on first use of their names, so
``import fleetopt_milp`` stays light (no Pyomo, no numba).
"""

from .demand import Moments, MomentTable, PoolParts, pool_load
from .errors import CatalogError, FleetOptError, InfeasibleError, WorkloadError
from .hardware import (
    Catalog,
    GpuSpec,
    LlmSpec,
    Profile,
    default_tp,
    load_catalog,
    profile_warnings,
    resolve_profile,
    roofline_floor_ms,
    roofline_profile,
)
from .plan import Allocation, FleetSummary, Plan, PoolPlan, read_plan, write_plan
from .planner import PlanningTables, plan
from .poolload import PoolLoad, QueueBatch
from .queueing import (
    PoolFigures,
    Queue,
    QueueMix,
    erlang_b,
    erlang_c,
    pool_figures,
    ttft_miss_probability,
    ttft_quantile_s,
    wait_quantile_s,
    wait_tail,
)
from .scenario import Scenario, default_boundaries, gamma_grid
from .service import ServiceModel, SlotServiceModel, register_service_model, service_model
from .sizing import min_instances
from .workload import (
    Trace,
    Workload,
    builtin_workloads,
    load_workload,
    paper_split,
    workload_from_cdf,
    workload_from_requests,
)

__version__ = "0.1.0"

# Heavy modules load on first use (PEP 562): the simulator needs numba, the MILP Pyomo.
_LAZY = {
    "simulator": ("simulate", "certify", "certification_from", "verify_candidates",
                  "SimulationResult", "GroupStats", "Analytical", "Estimate", "Certification",
                  "PoolVerdict", "Verification", "FleetSpec", "AllocationSpec",
                  "fleet_from_plan"),
    "routing": ("route", "Routed"),
    "deploy": ("deployment_set", "load_kube_settings", "render", "write_deployment",
               "read_gateway_config", "DeploymentSet", "EngineDeployment", "GatewayConfig",
               "PoolRoute"),
    "provenance": ("PlanInputs", "read_inputs"),
    "html_report": ("write_report", "ReportFiles"),
    "sweep": ("SweepSpec", "SweepSummary", "run_sweep"),
    "milp": ("FleetProblem", "ArcTables", "precompute", "build_model", "solve_model", "solve",
             "solve_max_rate", "capacity_share"),
    # Engine model, calibration and evaluation (docs/engine.md); scipy.optimize and stats.
    "engine_model": ("EngineServiceModel", "EnginePoolLoad", "EngineQueue", "OperatingPoint",
                     "operating_point", "TpotFigures", "tpot_figures"),
    "calibration": ("calibrate", "read_benchmark", "read_steps", "burst_prediction",
                    "BenchmarkRun", "StepTable", "CalibrationFit", "BurstPrediction",
                    "write_profile_toml"),
    "evaluate": ("evaluate_fleet", "single_pool_fleet", "Slo", "FleetEvaluation",
                 "GroupEvaluation"),
}


def __getattr__(name: str):
    import importlib

    for module, names in _LAZY.items():
        if name in names:
            return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "Allocation", "Catalog", "CatalogError", "FleetOptError", "FleetSummary", "GpuSpec",
    "InfeasibleError", "LlmSpec", "MomentTable", "Moments", "Plan", "PlanningTables",
    "PoolFigures", "PoolLoad", "PoolParts", "PoolPlan", "Queue", "QueueBatch", "QueueMix",
    "ServiceModel", "SlotServiceModel", "pool_figures", "register_service_model",
    "service_model", "Profile", "Scenario", "Trace", "Workload", "WorkloadError",
    "builtin_workloads", "default_boundaries", "default_tp", "erlang_b", "erlang_c",
    "gamma_grid", "load_catalog", "load_workload", "min_instances", "paper_split", "plan",
    "pool_load", "profile_warnings", "read_plan", "resolve_profile", "roofline_floor_ms",
    "roofline_profile", "ttft_miss_probability", "ttft_quantile_s", "wait_quantile_s",
    "wait_tail", "workload_from_cdf", "workload_from_requests", "write_plan",
    *(n for names in _LAZY.values() for n in names),
]
