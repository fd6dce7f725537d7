"""The data behind a plan's report: typed records for :mod:`~fleetopt_milp.plots`.

Everything is read from the plan file, or recomputed with the planner's public API from the
inputs the plan records (:mod:`~fleetopt_milp.provenance`): the cost curves come from
:func:`~fleetopt_milp.planner.plan_candidates`, which sizes every candidate (B, gamma).
docs/reports.md explains each figure.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import FleetOptError
from .plan import Plan
from .plots import Comparison, CostCliff, CostCurve, LengthCdf, PoolBars, Savings
from .scenario import Scenario, band_end_tokens

__all__ = ["scenario_for", "length_cdf", "cost_cliff", "pool_bars", "savings", "comparisons",
           "check_simulation"]


def scenario_for(plan: Plan, catalog=None) -> Scenario:
    """The planning question behind ``plan``: its recorded workload, first profile (by its
    recorded values) and options, at the rate the plan was sized for (peak included).

    Plan files without an ``inputs`` record fall back on the workload's name and the first
    allocation's profile in ``catalog`` (default: the built-in catalogue).
    """
    from .hardware import Profile, load_catalog, resolve_profile
    from .provenance import workload_spec
    from .workload import load_workload

    wl = load_workload(workload_spec(plan))
    if plan.inputs is not None:
        profile = Profile(**plan.inputs.profiles[0].values)
        steps = plan.inputs.options.gamma_steps
        gamma_max = plan.inputs.options.gamma_max
    else:
        a = plan.pools[0].allocations[0]
        profile = resolve_profile(catalog or load_catalog(), a.profile, a.model, a.tp)
        steps, gamma_max = 11, max(2.0, plan.gamma)
    return Scenario(workload=wl, profile=profile, rate_rps=plan.rate_rps, slo_ms=plan.slo_ms,
                    percentile=plan.percentile, long_context_tokens=plan.long_context_tokens,
                    gamma_max=gamma_max, gamma_steps=steps,
                    compressible_share=plan.compressible_share, rho_max=plan.rho_max,
                    compression_latency_ms=plan.compression_latency_ms,
                    paper_compat=plan.paper_compat, service_model=plan.service_model,
                    tpot_ms=plan.tpot_slo_ms, tpot_percentile=plan.tpot_percentile)


def length_cdf(plan: Plan, scenario: Scenario) -> LengthCdf:
    """The workload's CDF of total tokens at every distinct length, with every pool
    boundary B and its band end gamma*B (docs/model.md §4)."""
    wl = scenario.workload
    tokens = np.unique(wl.total_tokens)
    splits = tuple((p.context_tokens, int(band_end_tokens(p.context_tokens, p.gamma)))
                   for p in plan.pools[:-1])
    return LengthCdf(wl.name, tokens, np.asarray(wl.cdf(tokens)), splits,
                     plan.long_context_tokens)


def cost_cliff(plan: Plan, scenario: Scenario, tables=None) -> CostCliff:
    """Fleet $/hour against the boundary at gamma = 1 and at the plan's gamma, from every
    candidate :func:`~fleetopt_milp.planner.plan_candidates` sizes (docs/model.md §4).

    The equal-marginal-cost boundaries are those where the chosen-gamma curve is at its
    minimum: moving B one candidate either way does not lower the cost (docs/reports.md).
    """
    from .planner import PlanningTables, plan_candidates

    s = scenario.validated()
    tables = tables or PlanningTables(s)
    windows, gammas, _, usd, _ = plan_candidates(s, tables)
    grid = np.unique(gammas[:, 0])
    chosen = float(grid[np.argmin(np.abs(grid - plan.gamma))])
    curves = []
    for g in sorted({1.0, chosen}):
        mask = np.isclose(gammas[:, 0], g)
        order = np.argsort(windows[mask, 0])
        curves.append(CostCurve(g, windows[mask, 0][order], usd[mask][order]))
    best = curves[-1].usd_per_hour
    finite = np.isfinite(best)
    eq = ()
    if finite.any():
        low = np.min(best[finite])
        eq = tuple(int(b) for b in curves[-1].boundaries_tokens[np.isclose(best, low)])
    return CostCliff(tuple(curves), plan.boundary_tokens, chosen, plan.usd_per_hour, eq,
                     s.profile.name)


def _sim_pools(simulation: dict | None) -> dict[str, dict]:
    return {} if not simulation else {p["name"]: p for p in simulation.get("pools", [])}


def pool_bars(plan: Plan, simulation: dict | None = None,
              tpot_slo_ms: float | None = None) -> PoolBars:
    """Per pool: the plan's utilization and TTFT at the percentile; mean TPOT from a
    simulation's JSON (``fleetopt simulate --json``, engine fidelity) when given."""
    sim = _sim_pools(simulation)
    tpot = [sim.get(p.role, {}).get("mean_tpot_ms") for p in plan.pools]
    return PoolBars(tuple(p.role for p in plan.pools),
                    np.array([p.utilization for p in plan.pools]), plan.rho_max,
                    np.array([p.p99_ttft_ms for p in plan.pools]), plan.slo_ms, plan.percentile,
                    np.array([np.nan if t is None else t for t in tpot], dtype=float),
                    tpot_slo_ms)


def savings(plan: Plan) -> Savings:
    """The plan's $/hour and each baseline's (``inf`` where a baseline is infeasible)."""
    names = tuple(plan.baselines)
    usd = np.array([plan.baselines[n].usd_per_hour if plan.baselines[n].feasible else math.inf
                    for n in names], dtype=float)
    return Savings(plan.usd_per_hour, names, usd)


def _num(x) -> float:
    return math.nan if x is None else float(x)


def comparisons(plan: Plan, simulation: dict | None = None) -> tuple[Comparison, ...]:
    """Model against simulation per pool: from a simulation's JSON when given (utilization,
    TTFT at the percentile, share over the SLO), else from the plan's ``verification``
    (share over the SLO). Empty when neither exists."""
    q = f"P{plan.percentile:g} TTFT (ms)"
    if simulation:
        pools = simulation["pools"]
        names = tuple(p["name"] for p in pools)
        out = []
        for key, label, limit in (("utilization", "utilization", plan.rho_max),
                                  ("p99_ttft_ms", q, plan.slo_ms),
                                  ("slo_miss_share", f"share over {plan.slo_ms:g} ms",
                                   1 - plan.percentile / 100)):
            sim = np.array([_num(p[key]) for p in pools])
            ci = np.array([[_num(v) for v in p[key + "_ci"]] for p in pools]).reshape(-1, 2)
            ci = np.where(np.isnan(ci), sim[:, None], ci)
            out.append(Comparison(label, names, np.array([_num(p["analytical_" + key])
                                                          for p in pools]), sim,
                                  ci[:, 0], ci[:, 1], limit))
        return tuple(out)
    cert = (plan.verification or {}).get("certification")
    if not cert:
        return ()
    pools = cert["pools"]
    sim = np.array([_num(p["slo_miss_share"]) for p in pools])
    ci = np.array([[_num(v) for v in p["slo_miss_share_ci"]] for p in pools]).reshape(-1, 2)
    return (Comparison(f"share over {plan.slo_ms:g} ms", tuple(p["pool"] for p in pools),
                       np.array([_num(p["analytical_miss_share"]) for p in pools]), sim,
                       ci[:, 0], ci[:, 1], float(pools[0]["target"])),)


def check_simulation(plan: Plan, simulation: dict, label: str) -> dict:
    """A ``fleetopt simulate --json`` result that belongs to ``plan`` (same pools)."""
    if not isinstance(simulation, dict) or simulation.get("schema") != "fleetopt-simulation/1":
        raise FleetOptError(f"{label}: not a simulation file; write one with "
                            "`fleetopt simulate PLAN.json --json PATH`")
    names = {p["name"] for p in simulation.get("pools", [])}
    if names != {p.role for p in plan.pools}:
        raise FleetOptError(f"{label}: its pools ({', '.join(sorted(names))}) are not the "
                            f"plan's ({', '.join(p.role for p in plan.pools)}); simulate this "
                            "plan file")
    return simulation

