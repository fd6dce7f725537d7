"""Why no fleet exists: the constraint that binds (docs/milp.md §8).

:func:`slo_infeasible` explains a question no GPU type can answer (prefill alone misses
the SLO); :func:`diagnose` re-solves an infeasible model without each constraint group
(budget, availability caps, total GPUs, user constraints), then without all of them, and
raises :class:`~fleetopt_milp.errors.InfeasibleError` naming the group that binds and the
amount needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pyomo.environ as pyo

from ..errors import InfeasibleError
from .problem import FleetProblem

__all__ = ["slo_infeasible", "diagnose"]


def slo_infeasible(problem: FleetProblem, whole_pool_loads=()) -> InfeasibleError:
    """No pool holding the longest requests meets the SLO on any type: prefill alone of the
    longest inputs takes longer than the SLO (docs/model.md §3); or, under a TPOT SLO, a
    sequence decoding alone in a pool of all requests is slower than it on every type
    (docs/engine.md §2). ``whole_pool_loads``: ``(profile, load)`` of the one-pool fleet
    on each type that can hold it."""
    s = problem.scenario
    if s.tpot_ms is not None and whole_pool_loads:
        alone = {p.name: float(ld.alone_tpot_s(0)) * 1e3 for p, ld in whole_pool_loads}
        name = min(alone, key=alone.get)
        if alone[name] > s.tpot_ms:
            return InfeasibleError(
                f"no fleet meets the TPOT SLO: a decode step of one sequence takes "
                f"{alone[name]:.1f} ms even on {name}, above --tpot-ms {s.tpot_ms:g}; relax "
                "--tpot-ms or add a faster GPU type", binding="tpot")
    workload = problem.workload
    slo = s.slo_ms * 1e-3
    best, where = -1, ""
    for p in problem.types:
        tau = float(p.prefill_s(1))
        k_min = int(np.ceil(slo / tau - 1e-12))
        lin = (k_min - 1) * p.chunk_tokens + 1
        if lin > best:
            best, where = lin, p.name
    share = float(np.sum(workload.weights[workload.input_tokens >= best]))
    return InfeasibleError(
        f"no fleet meets P{s.percentile:g} TTFT <= {s.slo_ms:g} ms: prefill alone takes "
        f">= {s.slo_ms:g} ms for inputs of {best} tokens or more even on {where} "
        f"({share:.2%} of all requests), so every pool holding the longest requests misses "
        "the SLO; relax --slo-ms or --percentile, or add a GPU with faster prefill",
        binding="prefill")


def _groups(model: pyo.ConcreteModel, user: list) -> list[tuple[str, list]]:
    groups = []
    for name, attr in (("budget", "budget"), ("availability", "caps"),
                       ("total_gpus", "total_gpus")):
        if hasattr(model, attr):
            groups.append((name, [getattr(model, attr)]))
    if user:
        groups.append(("user", user))
    return groups


def diagnose(model: pyo.ConcreteModel, resolve: Callable[[pyo.ConcreteModel], float | None],
             user: list) -> None:
    """Find the constraint that makes ``model`` infeasible and raise
    :class:`InfeasibleError` naming it. ``resolve(model)`` solves the model as it stands
    and returns the optimum (None if infeasible); ``user`` are the user's constraints."""
    t = model.fleet_tables
    pb = t.problem
    groups = _groups(model, user)
    pruned = math.isfinite(t.upper_bound_usd_per_hour) and bool(user)
    note = (f" (searched fleets up to ${t.upper_bound_usd_per_hour:,.2f}/h; build with "
            "prune=False to search them all)") if pruned else ""

    def without(comps, objective=None):
        """Optimum with ``comps`` switched off (of ``objective`` if given, else cost)."""
        for c in comps:
            c.deactivate()
        if objective is not None:
            model.cost.deactivate()
            model.fleet_probe = pyo.Objective(expr=objective, sense=pyo.minimize)
        try:
            return resolve(model)
        finally:
            for c in comps:
                c.activate()
            if objective is not None:
                model.del_component("fleet_probe")
                model.cost.activate()

    for name, comps in groups:
        y = without(comps)
        if y is None:
            continue
        if name == "budget":
            raise InfeasibleError(
                f"budget ${pb.budget_usd_per_hour:,.2f}/h is below the cheapest feasible fleet "
                f"${y:,.2f}/h; raise --budget-usd-per-hour to at least "
                f"{math.ceil(y * 100) / 100:.2f}" + note, binding="budget")
        if name == "availability":
            over = []
            for g in model.caps:
                need = without(comps, objective=model.gpus[g])
                if need is not None and need > pb.cap_of(g) + 1e-6:
                    over.append(f"at least {int(round(need))} {g} GPUs (cap {pb.cap_of(g)})")
            raise InfeasibleError(
                "availability caps leave no fleet that meets the SLO: it needs "
                f"{' and '.join(over) or 'more GPUs than the caps allow together'} (the "
                f"cheapest without caps costs ${y:,.2f}/h); raise --max-gpus or add GPU types"
                + note, binding="availability")
        if name == "total_gpus":
            need = without(comps, objective=sum(model.gpus[g] for g in model.gpus))
            raise InfeasibleError(
                f"max_total_gpus={pb.max_total_gpus}: the fewest GPUs of a fleet that meets the "
                f"SLO with the other constraints is {int(round(need))}; raise --max-total-gpus"
                + note, binding="total_gpus")
        raise InfeasibleError(
            f"your constraint(s) {', '.join(c.name for c in comps)} leave no fleet (without "
            f"them the cheapest is ${y:,.2f}/h)" + note, binding="user")
    all_groups = [c for _, comps in groups for c in comps]
    if all_groups:
        y = without(all_groups)
        if y is not None:
            raise InfeasibleError(
                f"{' and '.join(n for n, _ in groups)} together leave no fleet (without them "
                f"the cheapest is ${y:,.2f}/h); relax one of them" + note,
                binding="+".join(n for n, _ in groups))
    raise slo_infeasible(pb)
