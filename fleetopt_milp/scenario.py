"""The planning question: workload, profile, traffic, SLO and the search grids.

A :class:`Scenario` is what the planner, the MILP and the simulator are asked about
(docs/model.md §3-4); :func:`gamma_grid` and :func:`default_boundaries` are the candidate
C&R band ratios and boundaries every search uses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .errors import FleetOptError
from .hardware import Profile
from .workload import Workload

__all__ = ["Scenario", "band_end_tokens", "default_boundaries", "gamma_grid"]

#: Tolerance of ``gamma * B`` before flooring: gammas come from a rounded grid, so
#: ``1.1 * 1000`` must give 1100 tokens, not 1099.
BAND_END_TOL = 1e-9


def band_end_tokens(boundary_tokens, gamma) -> np.ndarray:
    """The end of the C&R band above boundary ``B``: ``floor(gamma B)`` tokens (docs/model.md
    §4), elementwise over broadcast arrays; int64. The one place this is computed."""
    b = np.asarray(boundary_tokens, dtype=float)
    return np.floor(b * np.asarray(gamma, dtype=float) + BAND_END_TOL).astype(np.int64)


@dataclass(frozen=True)
class Scenario:
    """One planning question (docs/model.md §3-4).

    rate_rps: total arrival rate (requests/s, Poisson for planning).
    slo_ms / percentile: the TTFT SLO, e.g. P99 TTFT <= 500 ms.
    long_context_tokens: window of the long pool (and of the homogeneous baseline).
    gamma_max / gamma_steps: the C&R band ratios searched, ``linspace(1, gamma_max, steps)``.
    compressible_share: ``p_c``, the share of band requests that compress safely.
    rho_max: utilization cap of every pool.
    compression_latency_ms: added to the TTFT of compressed requests.
    paper_compat: the paper's rule (P99 wait + mean prefill) and 80/20 length split.
    boundaries_tokens: candidate boundaries; ``None`` = :func:`default_boundaries`.
    service_model: the name of the service model that turns each pool's demand into the
        queue it is sized on (:mod:`fleetopt_milp.service`; ``"slot"``, docs/model.md §2-3;
        ``"engine"``, docs/engine.md §2).
    tpot_ms / tpot_percentile: the TPOT (time per output token) SLO, e.g. P99 TPOT <= 50
        ms; ``None`` = none. Needs the engine service model.
    """

    workload: Workload
    profile: Profile
    rate_rps: float
    slo_ms: float
    percentile: float = 99.0
    long_context_tokens: int = 65536
    gamma_max: float = 2.0
    gamma_steps: int = 11
    compressible_share: float = 0.75
    rho_max: float = 0.85
    compression_latency_ms: float = 0.0
    paper_compat: bool = False
    boundaries_tokens: tuple[int, ...] | None = None
    service_model: str = "slot"
    tpot_ms: float | None = None
    tpot_percentile: float = 99.0

    def validated(self) -> Scenario:
        """Check every field; raise :class:`FleetOptError` naming the field and the fix.

        Numbers must be finite and in range, counts whole numbers; the long window must
        hold the workload's longest request and fit the profile; the SLO must exceed one
        prefill chunk; and the rate must need fewer than :data:`MAX_FLEET_INSTANCES`
        instances (:func:`fleet_size_floor`).
        """
        _number("rate_rps", self.rate_rps, "--rate", low=0.0, low_open=True,
                what="the arrival rate (requests/s)")
        _number("slo_ms", self.slo_ms, "--slo-ms", low=0.0, low_open=True,
                what="the TTFT SLO (ms)")
        _number("percentile", self.percentile, "--percentile", low=50.0, high=100.0,
                high_open=True, what="the SLO percentile (99 = P99)")
        _number("rho_max", self.rho_max, "--rho-max", low=0.0, low_open=True, high=1.0,
                what="the utilization cap of every pool")
        _number("gamma_max", self.gamma_max, "--gamma-max", low=1.0, high=8.0,
                what="the largest C&R band ratio (1 disables C&R)")
        _number("compressible_share", self.compressible_share, "--compressible", low=0.0,
                high=1.0, what="p_c, the share of band requests that compress")
        _number("compression_latency_ms", self.compression_latency_ms, "--compression-ms",
                low=0.0, what="the compression latency (ms)")
        _whole("gamma_steps", self.gamma_steps, "", low=1)
        _whole("long_context_tokens", self.long_context_tokens, "--long-context", low=1)
        if not isinstance(self.paper_compat, bool | np.bool_):
            raise FleetOptError(f"paper_compat={self.paper_compat!r}: must be True or False")
        if self.tpot_ms is not None:
            _number("tpot_ms", self.tpot_ms, "--tpot-ms", low=0.0, low_open=True,
                    what="the TPOT SLO (ms per output token)")
            if self.service_model != "engine":
                raise FleetOptError("tpot_ms: a TPOT SLO needs --service-model engine (the slot "
                                    "model runs every pool at a full batch)")
        _number("tpot_percentile", self.tpot_percentile, "--tpot-percentile", low=50.0,
                high=100.0, high_open=True, what="the TPOT SLO percentile (99 = P99)")
        self._check_window()
        tau_ms = float(self.profile.prefill_s(1)) * 1e3
        if self.slo_ms <= tau_ms:
            raise FleetOptError(
                f"slo_ms={self.slo_ms}: below the prefill time of a single chunk "
                f"({tau_ms:.2f} ms on {self.profile.name}); no request can meet it; "
                "raise --slo-ms")
        floor = fleet_size_floor(self)
        if floor > MAX_FLEET_INSTANCES:
            raise FleetOptError(
                f"rate_rps={self.rate_rps:g}: even one homogeneous pool at the utilization cap "
                f"needs about {floor:.3g} instances of {self.profile.name}, more than the "
                f"{MAX_FLEET_INSTANCES:.0e} this planner sizes; check the units of --rate "
                "(requests per second)")
        return self

    def _check_window(self) -> None:
        """The long window holds the longest request and fits one sequence per instance;
        advice to widen it names a value the profile accepts, or the profile's limit."""
        longest = int(self.workload.max_total_tokens)
        fits = int(self.profile.max_context_tokens)
        if longest > self.long_context_tokens:
            over = _share_text(self.workload, self.long_context_tokens)
            if longest <= fits:
                fix = f"raise --long-context to at least {longest}"
            else:
                fix = (f"{self.profile.name} holds at most {fits} tokens per sequence, so "
                       "choose a GPU or tp with more memory (--gpu/--tp), or a workload "
                       f"without requests over {fits} tokens")
            raise FleetOptError(
                f"long_context_tokens={self.long_context_tokens}: workload "
                f"'{self.workload.name}' has requests up to {longest} tokens ({over} longer "
                f"than the window); {fix}")
        if self.long_context_tokens > fits:
            raise FleetOptError(
                f"long_context_tokens={self.long_context_tokens}: a window this long leaves no "
                f"KV slot on {self.profile.name} (at most {fits} tokens); lower --long-context "
                f"to between {longest} and {fits}, or choose a GPU or tp with more memory")


#: Largest fleet (instances) the planner sizes: counts stay exact integers in float64
#: (below 2^53) through the queueing maths, with margin for the SLO's extra instances.
MAX_FLEET_INSTANCES = 1e12


def fleet_size_floor(scenario: Scenario) -> float:
    """About how many instances one homogeneous pool needs at the utilization cap alone:
    ``rate S(E[L_in], E[L_out]) / (slots(C) rho_max)`` with ``C`` the long window
    (docs/model.md §3), the service time taken at the mean lengths (cheap, and the right
    order of magnitude). It guards the integer arithmetic of sizing against absurd rates."""
    per_slot = _slot_seconds(scenario.workload, scenario.profile,
                             scenario.long_context_tokens)
    return scenario.rate_rps * per_slot / scenario.rho_max


@lru_cache(maxsize=64)
def _slot_seconds(workload: Workload, profile: Profile, window_tokens: int) -> float:
    """Mean service seconds per KV slot of one instance, ``S(E[L_in], E[L_out]) /
    slots(C)``, cached: planners validate the same scenario many times."""
    mean_s = float(profile.service_s(max(1.0, round(workload.mean_input_tokens)),
                                     max(1.0, round(workload.mean_output_tokens)),
                                     window_tokens))
    return mean_s / profile.slots(window_tokens)


def _share_text(workload: Workload, window_tokens: int) -> str:
    """How many requests exceed the window, in words that never round to zero."""
    if workload.trace is not None:
        t = workload.trace
        n = int(np.sum(t.input_tokens + t.output_tokens > window_tokens))
        return f"{n:,} of {t.n_requests:,} requests"
    share = float(1.0 - workload.cdf(window_tokens))
    return f"{share:.2%}" if share >= 1e-3 else f"{100 * share:.2g}% of requests"


def _number(name: str, value, option: str, *, what: str, low: float | None = None,
            high: float | None = None, low_open: bool = False, high_open: bool = False
            ) -> None:
    """``value`` is a finite real number in the given range, or raise naming the option."""
    ok = (not isinstance(value, bool) and isinstance(value, int | float | np.integer
                                                     | np.floating)
          and math.isfinite(value))
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        rng = f"{'(' if low_open or low is None else '['}{lo}, {hi}{')' if high_open or high is None else ']'}"
        where = f"; fix {option}" if option else ""
        raise FleetOptError(f"{name}={value!r}: {what} must be a finite number in {rng}{where}")


def _whole(name: str, value, option: str, *, low: int) -> None:
    """``value`` is a whole number ``>= low``, or raise naming the option."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        where = f"; fix {option}" if option else ""
        raise FleetOptError(f"{name}={value!r}: must be a whole number >= {low}{where}")


def gamma_grid(gamma_max: float, steps: int) -> np.ndarray:
    """The C&R band ratios searched: ``steps`` values evenly from 1 to ``gamma_max``."""
    if gamma_max <= 1.0 or steps == 1:
        return np.array([1.0])
    return np.round(np.linspace(1.0, gamma_max, steps), 6)


def default_boundaries(workload: Workload, long_context_tokens: int, n_grid: int = 64
                       ) -> np.ndarray:
    """Candidate boundaries: the workload's CDF breakpoints, ``2^k`` and ``1.5 * 2^k``, and
    ``n_grid`` log-spaced lengths (multiples of 64 tokens), all in ``[64, long context)``.
    """
    pts = [np.asarray(workload.breakpoints_tokens, dtype=np.int64)]
    k = np.arange(6, int(np.log2(long_context_tokens)) + 1)
    pts += [2 ** k, (3 * 2 ** (k - 1))]
    grid = np.geomspace(128, long_context_tokens, n_grid + 2)[1:-1]
    pts.append((np.round(grid / 64) * 64).astype(np.int64))
    b = np.unique(np.concatenate(pts))
    return b[(b >= 64) & (b < long_context_tokens)]
