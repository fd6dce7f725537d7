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
- :mod:`~fleetopt_milp.gateway`: Compress-and-Route at run time: tokenizer, compressor,
  safety gate, router and the OpenAI-compatible gateway (docs/gateway.md).
- :mod:`~fleetopt_milp.simulator` and :mod:`~fleetopt_milp.routing`: the discrete-event
  simulator and the C&R router.

Every module is imported on first use of one of its names, so ``import fleetopt_milp``
stays light (no numpy, SciPy, Pyomo or numba until needed).
"""

from . import plan as _plan_records  # noqa: F401  (stdlib only; see below)
from .errors import CatalogError, FleetOptError, InfeasibleError, WorkloadError

# ``fleetopt_milp.plan`` is the planner's function (below, lazily), not the module of plan
# records: the module is loaded first so that its import binds the name only now, and the
# binding is removed. ``from fleetopt_milp.plan import Plan`` still finds the module.
del plan  # noqa: F821

__version__ = "0.1.0"

# Every module loads on first use of one of its names (PEP 562), so that
# ``import fleetopt_milp`` (and the ``fleetopt`` command's start-up) stays light: numpy,
# scipy, Pyomo and numba are imported only when a name that needs them is used.
_LAZY = {
    "demand": ("Moments", "MomentTable", "PoolParts", "pool_load"),
    "poolload": ("PoolLoad", "QueueBatch"),
    "hardware": ("Catalog", "GpuSpec", "LlmSpec", "Profile", "default_tp", "load_catalog",
                 "profile_warnings", "resolve_profile", "roofline_floor_ms",
                 "roofline_profile"),
    "plan": ("Allocation", "FleetSummary", "Plan", "PoolPlan", "read_plan", "write_plan",
             "check_plan_dict"),
    "planner": ("PlanningTables", "plan"),
    "queueing": ("PoolFigures", "Queue", "QueueMix", "erlang_b", "erlang_c", "pool_figures",
                 "ttft_miss_probability", "ttft_quantile_s", "wait_quantile_s", "wait_tail"),
    "sizing": ("min_instances",),
    "service": ("ServiceModel", "SlotServiceModel", "register_service_model", "service_model"),
    "scenario": ("Scenario", "default_boundaries", "gamma_grid"),
    "workload": ("Trace", "Workload", "builtin_workloads", "load_workload", "paper_split",
                 "workload_from_cdf", "workload_from_requests"),
    "files": ("write_text_atomic",),
    "simulator": ("simulate", "SimulationResult", "GroupStats", "Analytical", "Estimate",
                  "FleetSpec", "AllocationSpec", "fleet_from_plan"),
    "certification": ("certify", "certification_from", "verify_candidates", "Certification",
                      "PoolVerdict", "Verification", "steady_state_gaps",
                      "verified_plan"),
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
    "gateway": ("Tokenizer", "load_tokenizer", "compress", "compress_messages", "assess_text",
                "assess_request", "Router", "Decision"),
}


def __getattr__(name: str):
    import importlib

    for module, names in _LAZY.items():
        if name in names:
            return getattr(importlib.import_module(f".{module}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CatalogError", "FleetOptError", "InfeasibleError", "WorkloadError",
    *(n for names in _LAZY.values() for n in names),
]


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
