"""The fleet router: which pool (and which allocation) serves each request.

docs/model.md §4 (pools, Compress-and-Route), the same rule as
:meth:`fleetopt_milp.demand.MomentTable.pools`:

- ``K`` pools with ascending windows ``W_0 < ... < W_{K-1}`` (tokens); pool ``k`` serves
  requests with ``W_{k-1} < L <= W_k`` (``W_{-1} = 0``), ``L = L_in + L_out``. A request
  longer than ``W_{K-1}`` fits no pool (pool index ``-1``).
- Band of boundary ``k`` (``k < K - 1``): ``W_k < L <= floor(gamma_k W_k)``. A request in
  the band whose output fits (``L_out < W_k``) is *compressible*; with probability
  ``compressible_share`` (``p_c``) it is compressed to ``L' = W_k`` (input trimmed to
  ``W_k - L_out`` tokens) and served by pool ``k``; otherwise it stays in pool ``k + 1``.
- Inside a pool, each request goes to allocation ``j`` with probability ``load_share_j``
  (an independent thinning, so each allocation sees a Poisson stream when the pool does).

Everything is vectorised; one ``rng.random(n)`` call decides compression and another the
allocation, for every request whether or not it needs one, so two fleets routed with the
same seed see the same random numbers (common random numbers for comparing plans).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import FleetOptError
from .scenario import band_end_tokens

__all__ = ["Routed", "route", "band_ends_tokens", "split_allocations"]


@dataclass(frozen=True)
class Routed:
    """Routing of ``n`` requests (arrays of shape ``(n,)``).

    pool: int32 pool index, ``-1`` for a request longer than the last window (unserved).
    compressed: True where Compress-and-Route cut the request down to the lower window.
    input_tokens: int64 prompt tokens as served (``W_k - L_out`` when compressed).
    output_tokens: int64 generated tokens (never changed by compression).
    """

    pool: np.ndarray
    compressed: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    @property
    def total_tokens(self) -> np.ndarray:
        """Context footprint as served, ``L_in' + L_out`` tokens (``W_k`` when compressed)."""
        return self.input_tokens + self.output_tokens


def band_ends_tokens(windows_tokens, gammas) -> np.ndarray:
    """``floor(gamma_k W_k)`` for each boundary ``k < K - 1`` (tokens), as MomentTable does."""
    return band_end_tokens(np.asarray(windows_tokens, dtype=np.int64)[:-1], gammas)


def _check(windows: np.ndarray, gammas: np.ndarray, p_c: float) -> None:
    if windows.ndim != 1 or windows.size == 0:
        raise FleetOptError("windows_tokens: give one window per pool, e.g. (4096, 65536)")
    if np.any(windows < 1) or np.any(np.diff(windows) <= 0):
        raise FleetOptError(f"windows_tokens={windows.tolist()}: windows must be positive and "
                            "strictly ascending (one per pool, shortest first)")
    if gammas.shape != (windows.size - 1,):
        raise FleetOptError(f"gammas={gammas.tolist()}: need one band ratio per boundary "
                            f"({windows.size - 1} for {windows.size} pools)")
    if np.any(gammas < 1.0):
        raise FleetOptError(f"gammas={gammas.tolist()}: band ratios must be >= 1 "
                            "(1 disables Compress-and-Route)")
    ends = band_ends_tokens(windows, gammas)
    if np.any(ends > windows[1:]):
        raise FleetOptError(f"gammas={gammas.tolist()}: a band end floor(gamma*W_k) passes the "
                            "next window; lower gamma so each band stays inside the pool above")
    if not 0.0 <= p_c <= 1.0:
        raise FleetOptError(f"compressible_share={p_c}: p_c is a share in [0, 1]")


def route(input_tokens, output_tokens, windows_tokens, gammas, compressible_share: float,
          rng: np.random.Generator) -> Routed:
    """Route requests to pools by length with Compress-and-Route (docs/model.md §4).

    ``input_tokens``/``output_tokens``: integer arrays ``(n,)``. ``windows_tokens``: ``K``
    ascending pool windows. ``gammas``: ``K - 1`` band ratios. ``compressible_share``:
    ``p_c``. Uses exactly one ``rng.random(n)`` draw.
    """
    lin = np.asarray(input_tokens, dtype=np.int64)
    lout = np.asarray(output_tokens, dtype=np.int64)
    if lin.shape != lout.shape or lin.ndim != 1:
        raise FleetOptError("route: input_tokens and output_tokens must be 1-D arrays of one "
                            "length")
    windows = np.asarray(windows_tokens, dtype=np.int64).ravel()
    gm = np.asarray(gammas, dtype=float).ravel()
    p_c = float(compressible_share)
    _check(windows, gm, p_c)
    total = lin + lout
    # L in (W_{k-1}, W_k] -> k; L > W_{K-1} -> K, marked -1 below.
    pool = np.searchsorted(windows, total, side="left").astype(np.int32)
    u = rng.random(lin.size)
    compressed = np.zeros(lin.size, dtype=bool)
    new_in = lin.copy()
    if windows.size > 1 and p_c > 0.0:
        ends = band_ends_tokens(windows, gm)
        below = np.maximum(pool - 1, 0)  # candidate lower pool (valid where 1 <= pool < K)
        inner = (pool >= 1) & (pool < windows.size)
        w_low = windows[below]
        in_band = inner & (total <= ends[np.minimum(below, ends.size - 1)])
        take = in_band & (lout < w_low) & (u < p_c)
        compressed = take
        pool = np.where(take, below, pool).astype(np.int32)
        new_in = np.where(take, w_low - lout, lin)
    pool[pool >= windows.size] = -1
    return Routed(pool=pool, compressed=compressed, input_tokens=new_in, output_tokens=lout)


def split_allocations(pool, load_shares, rng: np.random.Generator) -> np.ndarray:
    """Allocation of each request: global index over all pools' allocations, ``-1`` unserved.

    ``pool``: int array from :func:`route`. ``load_shares``: per pool, the shares of its
    allocations (each list sums to 1); allocation ``j`` of pool ``k`` gets global index
    ``sum(len(load_shares[i]) for i < k) + j``. Uses exactly one ``rng.random(n)`` draw.
    """
    pool = np.asarray(pool)
    u = rng.random(pool.size)
    offsets = np.cumsum([0] + [len(s) for s in load_shares])
    out = np.full(pool.size, -1, dtype=np.int32)
    for k, shares in enumerate(load_shares):
        sh = np.asarray(shares, dtype=float)
        if sh.size == 0 or np.any(sh < 0) or abs(float(sh.sum()) - 1.0) > 1e-6:
            raise FleetOptError(f"pool {k}: allocation load shares {sh.tolist()} must be >= 0 "
                                "and sum to 1")
        mask = pool == k
        cum = np.cumsum(sh)
        cum[-1] = 1.0
        j = np.minimum(np.searchsorted(cum, u[mask], side="right"), sh.size - 1)
        out[mask] = offsets[k] + j
    return out
