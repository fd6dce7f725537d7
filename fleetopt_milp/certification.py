"""Certification of plans by simulation, and verification of candidate plans.

A plan is certified when, in a simulation that reached steady state, no pool's share of
requests over the TTFT SLO is significantly above ``1 - percentile / 100`` (docs/model.md
§6: "no plan that the model calls feasible may miss its SLO in simulation").
:func:`verify_candidates` simulates candidate plans cheapest first and returns the first
one certified (``fleetopt plan --verify``). The simulation itself is
:func:`fleetopt_milp.simulator.simulate`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, replace

from .errors import FleetOptError, InfeasibleError
from .plan import Plan
from .simulator import Estimate, GroupStats, SimulationResult, _num, simulate
from .workload import Workload, load_workload

__all__ = ["STEADY_SERVICE_TIMES", "STEADY_TAIL_REQUESTS", "PoolVerdict", "Certification",
           "steady_state_gaps", "certification_from", "certify", "Verification",
           "verify_candidates", "verified_plan"]


#: Certification needs, per pool with traffic, a measured run (after the warm-up) of at
#: least this many mean service times: every slot then turns over many times, so the run
#: has left its empty start behind and reached the steady state the SLO is about.
STEADY_SERVICE_TIMES = 10.0
#: ... and at least this many measured requests per unit of the tail share the SLO allows
#: (1,000 for a P99 SLO): the miss share is then estimated from ~10 expected misses.
STEADY_TAIL_REQUESTS = 10.0


@dataclass(frozen=True)
class PoolVerdict:
    """One pool's certification: its simulated share over the SLO against the target.

    ``target`` = ``1 - percentile / 100``; ``passed`` when the lower end of the interval of
    ``slo_miss_share`` is at most the target (the share is not significantly above it).
    ``analytical_miss_share``: the model's prediction. ``steady``: the run reached a steady
    state for this pool (:func:`steady_state_gaps`); ``gaps`` says what was missing.
    """

    pool: str
    slo_miss_share: Estimate
    target: float
    passed: bool
    analytical_miss_share: float
    steady: bool = True
    gaps: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        e = self.slo_miss_share
        return {"pool": self.pool, "slo_miss_share": _num(e.mean),
                "slo_miss_share_ci": [_num(e.lo), _num(e.hi)], "target": self.target,
                "passed": self.passed, "analytical_miss_share": _num(self.analytical_miss_share),
                "steady": self.steady, "gaps": list(self.gaps)}


@dataclass(frozen=True)
class Certification:
    """Whether a plan meets its TTFT SLO in simulation (docs/model.md §6).

    ``certified``: every pool passed, in a run that reached steady state for every pool.
    ``failing``: names of the pools that did not pass. ``inconclusive``: pools that passed
    only because their interval straddles the target (mean or upper bound above it); more
    requests or replications would settle them. ``unsteady``: pools whose run was too
    short to reach steady state; ``more_requests``: requests per replication that would
    settle them (0 when none is unsteady).
    """

    certified: bool
    pools: tuple[PoolVerdict, ...]
    failing: tuple[str, ...]
    inconclusive: tuple[str, ...]
    simulation: SimulationResult
    unsteady: tuple[str, ...] = ()
    more_requests: int = 0

    @property
    def status(self) -> str:
        """One line: ``certified``, ``NOT certified: ...`` or ``inconclusive: ...``."""
        if self.failing:
            return "NOT certified: " + ", ".join(self.failing) + " miss the SLO"
        if self.unsteady:
            gaps = "; ".join(f"{v.pool}: {', '.join(v.gaps)}" for v in self.pools if v.gaps)
            return (f"inconclusive: no steady state ({gaps}); simulate at least "
                    f"{self.more_requests:,} requests per replication (--requests)")
        text = "certified"
        if self.inconclusive:
            text += (f" (inconclusive: {', '.join(self.inconclusive)}; simulate more requests "
                     "to settle them)")
        return text

    def to_dict(self) -> dict:
        return {"certified": self.certified, "status": self.status,
                "failing": list(self.failing), "inconclusive": list(self.inconclusive),
                "unsteady": list(self.unsteady), "more_requests": self.more_requests,
                "pools": [p.to_dict() for p in self.pools],
                "fidelity": self.simulation.fidelity,
                "requests": self.simulation.n_requests,
                "replications": self.simulation.replications,
                "ci_method": self.simulation.ci_method}


def steady_state_gaps(result: SimulationResult, pool: GroupStats) -> tuple[tuple[str, ...], int]:
    """What keeps ``pool``'s measurements from a steady state, and the requests per
    replication that would close the gaps (0 when there is none).

    Required for a pool with traffic: the warm-up was not cut short; the measured time per
    replication is at least :data:`STEADY_SERVICE_TIMES` mean service times of the pool
    (analytical ``E[S]``); and its measured requests number at least
    :data:`STEADY_TAIL_REQUESTS` ``/ (1 - percentile / 100)``.
    """
    ana = pool.analytical
    pool_rate = ana.rate_rps if ana is not None else math.nan
    if pool.requests == 0 and not pool_rate > 0:
        return (), 0  # no traffic: nothing to measure
    rate, warm = result.rate_rps, result.warmup_s
    keep = 1.0 - result.warmup_fraction  # share of a run measured, at best
    gaps: list[str] = []
    need = 0.0
    if result.warmup_capped:
        gaps.append("the warm-up was cut to half the run")
        need = max(need, 2.0 * rate * warm)
    need_s = STEADY_SERVICE_TIMES * (ana.mean_service_s if ana is not None else math.nan)
    if math.isfinite(need_s) and not result.measured_s >= need_s:
        gaps.append(f"{result.measured_s:.3g} s measured per replication, under "
                    f"{STEADY_SERVICE_TIMES:g} mean service times ({need_s:.3g} s)")
        need = max(need, rate * max(warm + need_s, need_s / keep))
    need_n = STEADY_TAIL_REQUESTS / max(1.0 - result.percentile / 100.0, 1e-12)
    if pool.requests < need_n:
        gaps.append(f"{pool.requests:,} requests measured, under {need_n:,.0f}")
        share = pool_rate / rate if pool_rate > 0 else pool.requests / max(
            result.fleet.requests, 1)
        per_run = need_n / max(share, 1e-12) / result.replications
        need = max(need, rate * warm + per_run / keep)
    return tuple(gaps), int(math.ceil(1.1 * need / 1000.0) * 1000) if gaps else 0


def certification_from(result: SimulationResult) -> Certification:
    """Certify the pools of a finished simulation (the rule of :func:`certify`).

    A pool passes when the lower end of its miss share's interval is at most the target;
    the plan is certified only when every pool passes in a run that reached steady state
    (:func:`steady_state_gaps`); otherwise the verdict is inconclusive, never certified.
    """
    target = 1.0 - result.percentile / 100.0
    verdicts = []
    more = 0
    for p in result.pools:
        est = p.slo_miss_share
        if p.requests == 0:
            passed = True
        else:
            bound = est.lo if math.isfinite(est.lo) else est.mean
            passed = bool(bound <= target + 1e-12)
        gaps, n = steady_state_gaps(result, p)
        more = max(more, n)
        verdicts.append(PoolVerdict(p.name, est, target, passed,
                                    p.analytical.slo_miss_share if p.analytical else math.nan,
                                    not gaps, gaps))
    failing = tuple(v.pool for v in verdicts if not v.passed)
    unsteady = tuple(v.pool for v in verdicts if not v.steady)
    unsure = tuple(v.pool for v in verdicts if v.passed and (
        v.slo_miss_share.mean > target or v.slo_miss_share.hi > target))
    return Certification(not failing and not unsteady, tuple(verdicts), failing, unsure,
                         result, unsteady, more)


def certify(plan: Plan, workload: Workload | str | None = None, **simulate_kwargs
            ) -> Certification:
    """Certify ``plan`` by simulation: each pool's share of requests over the SLO must not
    be significantly above ``1 - percentile / 100`` (lower CI bound <= target).

    Keyword arguments go to :func:`simulate` (default: ``slot`` fidelity, Poisson at the
    plan's rate, 5 replications of 200,000 requests).
    """
    return certification_from(simulate(plan, workload, **simulate_kwargs))


@dataclass(frozen=True)
class Verification:
    """Result of :func:`verify_candidates`: the cheapest plan the simulator confirms.

    ``plan``/``certification``: the confirmed plan (``None`` when none of the ``checked``
    candidates passed). ``rejected``: candidates simulated and rejected, cheaper than the
    confirmed one. ``rejections``: ``(usd_per_hour, failing pools)`` of each.
    """

    plan: Plan | None
    certification: Certification | None
    checked: int
    rejected: int
    rejections: tuple[tuple[float, tuple[str, ...]], ...]

    def to_dict(self) -> dict:
        return {"confirmed": self.plan is not None, "checked": self.checked,
                "rejected": self.rejected,
                "usd_per_hour": self.plan.usd_per_hour if self.plan is not None else None,
                "rejections": [{"usd_per_hour": u, "failing": list(f)}
                               for u, f in self.rejections],
                "certification": self.certification.to_dict() if self.certification else None}


def verify_candidates(candidate_plans: Iterable[Plan], workload: Workload | str | None = None,
                      *, max_candidates: int = 10, **simulate_kwargs) -> Verification:
    """Simulate candidate plans cheapest first; return the first one :func:`certify` passes.

    ``candidate_plans`` must come cheapest first (it may be a lazy iterable: plans are
    built only as far as needed); at most ``max_candidates`` are simulated. Every
    candidate is simulated with the same seed (common random numbers). Use for
    ``fleetopt plan --verify``.
    """
    if max_candidates < 1:
        raise FleetOptError(f"max_candidates={max_candidates}: need at least 1")
    wl = workload
    rejections = []
    checked = 0
    last_usd = -math.inf
    for cand in candidate_plans:
        if checked >= max_candidates:
            break
        if cand.usd_per_hour < last_usd - 1e-9:
            raise FleetOptError("candidate_plans: give candidates cheapest first "
                                f"(${cand.usd_per_hour:.2f}/h after ${last_usd:.2f}/h)")
        last_usd = cand.usd_per_hour
        if wl is None:
            wl = load_workload(cand.workload)
        cert = certify(cand, wl, **simulate_kwargs)
        checked += 1
        if cert.certified:
            return Verification(cand, cert, checked, len(rejections), tuple(rejections))
        rejections.append((cand.usd_per_hour, cert.failing or tuple(
            f"{p} (no steady state)" for p in cert.unsteady)))
    return Verification(None, None, checked, len(rejections), tuple(rejections))


def verified_plan(candidate_plans: Iterable[Plan], workload: Workload | str | None = None,
                  *, max_candidates: int = 10, fidelity: str = "slot",
                  **simulate_kwargs) -> Plan:
    """The cheapest candidate the simulator certifies (:func:`verify_candidates`), with the
    verification record (and a one-line ``summary``) in :attr:`Plan.verification`.

    Raises :class:`InfeasibleError` (binding ``"simulation"``) when none of the candidates
    tried is certified, naming each rejected one and why.
    """
    ver = verify_candidates(candidate_plans, workload, max_candidates=max_candidates,
                            fidelity=fidelity, **simulate_kwargs)
    rejected = "; ".join(f"${u:,.2f}/h fails in {', '.join(f)}" for u, f in ver.rejections)
    if ver.plan is None:
        raise InfeasibleError(
            f"none of the {ver.checked} cheapest candidates meets the SLO in {fidelity} "
            f"simulation ({rejected}); raise --verify-requests (runs with no steady state) or "
            "--verify-candidates, or relax the SLO", binding="simulation")
    summary = (f"{fidelity} simulation certifies this plan; {ver.rejected} cheaper "
               "candidate(s) rejected" + (f" ({rejected})" if rejected else ""))
    return replace(ver.plan, verification={**ver.to_dict(), "summary": summary})
