"""The planning question: workload, profile, traffic, SLO and the search grids.

A :class:`Scenario` is what the planner, the MILP and the simulator are asked about
(MODEL.md sections 3-4); :func:`gamma_grid` and :func:`default_boundaries` are the candidate
C&R band ratios and boundaries every search uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FleetOptError
from .hardware import Profile
from .workload import Workload

__all__ = ["Scenario", "band_end_tokens", "default_boundaries", "gamma_grid"]

#: Tolerance of ``gamma * B`` before flooring: gammas come from a rounded grid, so
#: ``1.1 * 1000`` must give 1100 tokens, not 1099.
BAND_END_TOL = 1e-9


def band_end_tokens(boundary_tokens, gamma) -> np.ndarray:
    """The end of the C&R band above boundary ``B``: ``floor(gamma B)`` tokens (MODEL.md
    section 4), elementwise over broadcast arrays; int64. The one place this is computed."""
    b = np.asarray(boundary_tokens, dtype=float)
    return np.floor(b * np.asarray(gamma, dtype=float) + BAND_END_TOL).astype(np.int64)


@dataclass(frozen=True)
class Scenario:
    """One planning question (MODEL.md sections 3-4).

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
        """Check every field; raise :class:`FleetOptError` naming the field and the fix."""
        if not np.isfinite(self.rate_rps) or self.rate_rps <= 0:
            raise FleetOptError(f"rate_rps={self.rate_rps}: the arrival rate must be a positive "
                                "number of requests per second (--rate)")
        if not np.isfinite(self.slo_ms) or self.slo_ms <= 0:
            raise FleetOptError(f"slo_ms={self.slo_ms}: the TTFT SLO must be positive (--slo-ms)")
        if not 50 <= self.percentile < 100:
            raise FleetOptError(f"percentile={self.percentile}: use a percentile in [50, 100), "
                                "e.g. 99 for P99 (--percentile)")
        if not 0 < self.rho_max <= 1:
            raise FleetOptError(f"rho_max={self.rho_max}: the utilization cap must be in (0, 1]")
        if not 1.0 <= self.gamma_max <= 8.0:
            raise FleetOptError(f"gamma_max={self.gamma_max}: the C&R band ratio must be in "
                                "[1, 8]; 1 disables Compress-and-Route (--gamma-max)")
        if self.gamma_steps < 1:
            raise FleetOptError(f"gamma_steps={self.gamma_steps}: need at least one gamma value")
        if not 0 <= self.compressible_share <= 1:
            raise FleetOptError(f"compressible_share={self.compressible_share}: p_c is a share "
                                "in [0, 1] (--compressible)")
        if self.compression_latency_ms < 0:
            raise FleetOptError(f"compression_latency_ms={self.compression_latency_ms}: "
                                "must be >= 0 (--compression-ms)")
        longest = int(self.workload.max_total_tokens)
        if longest > self.long_context_tokens:
            share = float(1.0 - self.workload.cdf(self.long_context_tokens))
            raise FleetOptError(
                f"long_context_tokens={self.long_context_tokens}: workload '{self.workload.name}'"
                f" has requests up to {longest} tokens ({share:.2%} longer than the window); "
                f"raise --long-context to at least {longest}")
        if self.tpot_ms is not None:
            if not np.isfinite(self.tpot_ms) or self.tpot_ms <= 0:
                raise FleetOptError(f"tpot_ms={self.tpot_ms}: the TPOT SLO must be a positive "
                                    "number of ms (--tpot-ms)")
            if self.service_model != "engine":
                raise FleetOptError("tpot_ms: a TPOT SLO needs --service-model engine (the slot "
                                    "model runs every pool at a full batch)")
        if not 50 <= self.tpot_percentile < 100:
            raise FleetOptError(f"tpot_percentile={self.tpot_percentile}: use a percentile in "
                                "[50, 100) (--tpot-percentile)")
        self.profile.slots(self.long_context_tokens)  # raises if the window does not fit
        tau_ms = float(self.profile.prefill_s(1)) * 1e3
        if self.slo_ms <= tau_ms:
            raise FleetOptError(
                f"slo_ms={self.slo_ms}: below the prefill time of a single chunk "
                f"({tau_ms:.2f} ms on {self.profile.name}); no request can meet it")
        return self


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
