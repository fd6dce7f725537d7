"""Single-queue building blocks of the simulator (tests, benchmarks, custom studies).

:func:`slot_start_times` runs the ``slot`` fidelity's FCFS M/G/c kernel for one queue
(docs/model.md §3); :func:`engine_times` runs the ``engine`` fidelity's continuous-batching
kernel for one allocation (docs/model.md §2). Re-exported by
:mod:`fleetopt_milp.simulator`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import _kernels
from .errors import FleetOptError
from .hardware import Profile

__all__ = ["slot_start_times", "EngineTimes", "engine_times"]


def slot_start_times(arrival_s, service_s, servers: int) -> np.ndarray:
    """Service start times (s) of one FCFS queue with ``servers`` identical servers.

    ``arrival_s`` non-decreasing, ``service_s`` >= 0 (arrays of one length). Wait =
    start - arrival. The ``slot`` fidelity's kernel (:func:`fleetopt_milp._kernels.
    fcfs_multi`) for a single queue.
    """
    arr = np.ascontiguousarray(arrival_s, dtype=np.float64)
    svc = np.ascontiguousarray(service_s, dtype=np.float64)
    if arr.shape != svc.shape or arr.ndim != 1:
        raise FleetOptError("slot_start_times: arrival_s and service_s must be 1-D arrays of "
                            "one length")
    if np.any(np.diff(arr) < 0):
        raise FleetOptError("slot_start_times: arrival_s must be non-decreasing; sort it")
    if np.any(svc < 0):
        raise FleetOptError("slot_start_times: service_s must be >= 0")
    if servers < 1:
        raise FleetOptError(f"servers={servers}: need at least one server")
    return _kernels.fcfs_multi(arr, svc, np.zeros(arr.size, dtype=np.int64),
                               np.zeros(1, dtype=np.int64),
                               np.array([servers], dtype=np.int64))


@dataclass(frozen=True)
class EngineTimes:
    """Per-request times of the ``engine`` fidelity (s): first admission to a batch, first
    token, completion; seconds holding a batch slot; times preempted."""

    first_admit_s: np.ndarray
    first_token_s: np.ndarray
    finish_s: np.ndarray
    held_s: np.ndarray
    preemptions: np.ndarray


def engine_times(arrival_s, input_tokens, output_tokens, profile: Profile,
                 window_tokens: int, instances: int = 1, max_batch: int | None = None,
                 macro_steps: bool = True) -> EngineTimes:
    """Run the ``engine`` kernel for one allocation of ``instances`` x ``profile``.

    ``window_tokens`` = pool window ``C``; the batch cap is the engine's
    (:attr:`~fleetopt_milp.hardware.Profile.engine_max_batch`) unless ``max_batch``.
    ``macro_steps=False`` simulates every iteration as its own event (same sample path,
    slower; for checking the macro-steps of :func:`fleetopt_milp._kernels.engine_run`).
    """
    arr = np.ascontiguousarray(arrival_s, dtype=np.float64)
    lin = np.ascontiguousarray(input_tokens, dtype=np.int64)
    lout = np.ascontiguousarray(output_tokens, dtype=np.int64)
    if not arr.shape == lin.shape == lout.shape or arr.ndim != 1:
        raise FleetOptError("engine_times: arrival_s, input_tokens and output_tokens must be "
                            "1-D arrays of one length")
    if np.any(np.diff(arr) < 0):
        raise FleetOptError("engine_times: arrival_s must be non-decreasing; sort it")
    if np.any(lin < 1) or np.any(lout < 0):
        raise FleetOptError("engine_times: input_tokens must be >= 1, output_tokens >= 0")
    if np.any(lin + lout > min(window_tokens, profile.kv_capacity_tokens)):
        raise FleetOptError(f"engine_times: a request exceeds the {window_tokens}-token window "
                            "or the KV cache; route longer requests to a larger pool")
    if instances < 1:
        raise FleetOptError(f"instances={instances}: need at least one instance")
    cap = profile.engine_max_batch if max_batch is None else int(max_batch)
    one = np.ones(1, dtype=np.int64)
    res = _kernels.engine_run(
        arr, np.zeros(arr.size, dtype=np.int64), lin, lout, np.zeros(1, dtype=np.int64),
        one * instances, one * cap, one * profile.kv_blocks, one * profile.block_tokens,
        one * profile.chunk_tokens, np.array([profile.w_ms * 1e-3]),
        np.array([profile.h_ms * 1e-3]), np.array([float(profile.calib_tokens)]),
        np.array([profile.seq_ms * 1e-3]),
        np.array([profile.h_ms * 1e-3]), np.array([profile.prefill_ms_per_token * 1e-3]),
        one * profile.scheduler_steps, bool(macro_steps))
    return EngineTimes(*res)
