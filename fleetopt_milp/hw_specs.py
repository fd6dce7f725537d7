"""Catalogue records: GPUs, LLMs and serving-instance profiles (docs/model.md §2).

:class:`GpuSpec` and :class:`LlmSpec` are what a catalogue says of a GPU type and a model;
a :class:`Profile` is one serving instance (``tp`` GPUs running one LLM) with its
iteration time, KV slots, prefill and service times. Re-exported by
:mod:`fleetopt_milp.hardware`, whose docstring states the formulas and units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .errors import FleetOptError

__all__ = ["GpuSpec", "LlmSpec", "Profile", "PROFILE_SOURCES"]

PROFILE_SOURCES = ("paper", "roofline", "calibrated", "user")
"""Allowed values of :attr:`Profile.source`."""

MAX_TP = 64


def _fail(msg: str) -> None:
    raise FleetOptError(msg)


def _check_positive(owner: str, **values: float) -> None:
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            _fail(f"{owner}: {key} must be a number, got {v!r}")
        if not math.isfinite(v) or v <= 0:
            _fail(f"{owner}: {key} must be positive, got {v!r}")


def _check_int(owner: str, **values: int) -> None:
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            _fail(f"{owner}: {key} must be an integer, got {v!r}")
        if v < 1:
            _fail(f"{owner}: {key} must be >= 1, got {v!r}")


def _scalar_or_array(x: np.ndarray):
    return float(x) if np.ndim(x) == 0 else x


def _ceil_div(a, b: int):
    """Elementwise ``ceil(a / b)`` without float rounding for integer ``a``."""
    return -(-np.asarray(a) // b)


# ---------------------------------------------------------------------------------------
# Specs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GpuSpec:
    """One GPU type (vendor data sheet). docs/model.md §2: the roofline's hardware inputs.

    ``hbm_gb``: memory of ONE GPU, GB. ``hbm_bandwidth_gb_per_s``: its peak bandwidth, GB/s.
    ``dense_fp16_tflops``: its peak dense FP16/BF16 tensor throughput, TFLOPS.
    ``usd_per_gpu_hour``: on-demand price of ONE GPU, USD/h; ``price_source`` says whose.
    """

    name: str
    hbm_gb: float
    hbm_bandwidth_gb_per_s: float
    dense_fp16_tflops: float
    usd_per_gpu_hour: float
    price_source: str
    interconnect: str = ""
    notes: str = ""
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_positive(
            f"GPU {self.name!r}",
            hbm_gb=self.hbm_gb,
            hbm_bandwidth_gb_per_s=self.hbm_bandwidth_gb_per_s,
            dense_fp16_tflops=self.dense_fp16_tflops,
            usd_per_gpu_hour=self.usd_per_gpu_hour,
        )

    @property
    def hbm_bytes(self) -> float:
        """Memory of one GPU in bytes."""
        return self.hbm_gb * 1e9

    @property
    def bandwidth_bytes_per_s(self) -> float:
        """Peak memory bandwidth of one GPU in bytes/s."""
        return self.hbm_bandwidth_gb_per_s * 1e9


@dataclass(frozen=True)
class LlmSpec:
    """One LLM's architecture (Hugging Face config.json). docs/model.md §2: model inputs.

    ``params_b``: total parameters (billions; every expert of a MoE). ``active_params_b``:
    parameters used per token (billions). ``dtype_bytes``: bytes per weight and per KV
    element (2 for fp16/bf16). ``max_context_tokens``: the model's context window.
    """

    name: str
    n_layers: int
    hidden_size: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    params_b: float
    active_params_b: float
    dtype_bytes: float
    max_context_tokens: int
    source: str
    notes: str = ""
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        owner = f"model {self.name!r}"
        _check_int(
            owner,
            n_layers=self.n_layers,
            hidden_size=self.hidden_size,
            n_heads=self.n_heads,
            n_kv_heads=self.n_kv_heads,
            head_dim=self.head_dim,
            max_context_tokens=self.max_context_tokens,
        )
        _check_positive(
            owner,
            params_b=self.params_b,
            active_params_b=self.active_params_b,
            dtype_bytes=self.dtype_bytes,
        )
        if self.active_params_b > self.params_b:
            _fail(
                f"{owner}: active_params_b ({self.active_params_b}) exceeds params_b "
                f"({self.params_b}); active parameters are a subset of the total"
            )
        if self.n_kv_heads > self.n_heads:
            _fail(f"{owner}: n_kv_heads ({self.n_kv_heads}) exceeds n_heads ({self.n_heads})")

    @property
    def is_moe(self) -> bool:
        """True for a mixture of experts (fewer active than total parameters)."""
        return self.active_params_b < self.params_b

    @property
    def weight_bytes(self) -> float:
        """Bytes of all weights: ``params_b * 1e9 * dtype_bytes`` (141.2e9 for Llama-3-70B fp16)."""
        return self.params_b * 1e9 * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> float:
        """KV-cache bytes per token: ``n_layers * n_kv_heads * head_dim * 2 * dtype_bytes``.

        The 2 is K and V. Llama-3-70B fp16: 80 * 8 * 128 * 2 * 2 = 327,680 bytes (docs/model.md §2).
        """
        return float(self.n_layers * self.n_kv_heads * self.head_dim * 2 * self.dtype_bytes)

    def kv_replication(self, tp: int) -> float:
        """Factor by which tensor parallelism inflates the instance's KV bytes per token.

        Each GPU holds ``max(1, n_kv_heads // tp)`` KV heads, so beyond ``tp = n_kv_heads``
        the KV heads are replicated (as vLLM does): 1 for ``tp <= n_kv_heads``.
        """
        return tp * max(1, self.n_kv_heads // tp) / self.n_kv_heads

    def check_tp(self, tp: int, where: str = "--tp") -> None:
        """Raise :class:`FleetOptError` unless tensor parallelism ``tp`` can split the model.

        As vLLM requires: the attention heads divide evenly over the ``tp`` GPUs, and the
        KV heads either divide evenly (``tp <= n_kv_heads``) or are replicated a whole
        number of times (``tp`` a multiple of ``n_kv_heads``). ``where`` names what to fix.
        """
        if self._splits(tp):
            return
        valid = [t for t in range(1, MAX_TP + 1) if self._splits(t)]
        which = "attention" if self.n_heads % tp else "KV"
        raise FleetOptError(
            f"tp={tp}: model {self.name!r} has {self.n_heads} attention heads and "
            f"{self.n_kv_heads} KV heads; its {which} heads cannot be split {tp} ways; use tp "
            f"in {', '.join(map(str, valid))} ({where})")

    def _splits(self, tp: int) -> bool:
        kv = self.n_kv_heads
        return self.n_heads % tp == 0 and (kv % tp == 0 or tp % kv == 0)


# ---------------------------------------------------------------------------------------
# Profile
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    """One serving instance = one model replica on `tp` GPUs of one type (docs/model.md §2).

    ``w_ms`` (``W``), ``seq_ms`` (``s``) and ``h_ms`` (``H``) define ``t_iter(n, Lbar) = W +
    s n + H * n * Lbar / calib_tokens`` in ms (``s`` = one sequence's share of a decode
    step's compute; 0 for the paper's and roofline profiles). ``kv_blocks`` of ``block_tokens`` tokens is the KV pool of the
    whole instance; ``max_slots`` caps the batch at ``calib_tokens`` context;
    ``chunk_tokens`` is the prefill chunk. ``usd_per_gpu_hour`` is the price of ONE GPU:
    the instance costs :attr:`usd_per_instance_hour` = ``tp * usd_per_gpu_hour``.
    ``source`` is one of :data:`PROFILE_SOURCES`; ``citation`` says where the figures
    come from. Calibrated profiles (docs/engine.md) also carry ``prefill_ms_per_token``
    (``p``: the compute a prompt token adds to its step, so a chunk adds ``p * chunk`` ms;
    0 in the paper's and roofline profiles, whose chunk is one weight read),
    ``ttft_overhead_ms``, the
    fixed latency every request's first token pays (server, tokenizer, network), used by
    the engine service model; ``scheduler_steps``, the decode steps the engine runs per
    scheduler call (vLLM's ``--num-scheduler-steps``; 1 = admission at every step), with
    which the profile was measured: a new prompt joins a busy engine only at the end of a
    group (docs/engine.md §2); ``inputs_sha256`` of the measurement files fitted; and the
    fit quality: ``fit_median_error`` and ``fit_p90_error``, the median and 90th
    percentile of the absolute relative residuals over ``fit_observations`` observations.
    """

    name: str
    gpu: str
    model: str
    tp: int
    w_ms: float
    h_ms: float
    calib_tokens: int
    chunk_tokens: int
    kv_blocks: int
    block_tokens: int
    max_slots: int
    usd_per_gpu_hour: float
    source: str  # "paper" | "roofline" | "calibrated" | "user"
    citation: str = ""
    notes: str = ""
    seq_ms: float = 0.0
    prefill_ms_per_token: float = 0.0
    ttft_overhead_ms: float = 0.0
    scheduler_steps: int = 1
    inputs_sha256: tuple[str, ...] = ()
    fit_median_error: float = 0.0
    fit_p90_error: float = 0.0
    fit_observations: int = 0

    def __post_init__(self) -> None:
        owner = f"profile {self.name!r}"
        for key in ("seq_ms", "prefill_ms_per_token", "ttft_overhead_ms", "fit_median_error",
                    "fit_p90_error"):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)) \
                    or not math.isfinite(v) or v < 0:
                _fail(f"{owner}: {key} must be a number >= 0, got {v!r}")
        _check_int(
            owner,
            tp=self.tp,
            calib_tokens=self.calib_tokens,
            chunk_tokens=self.chunk_tokens,
            kv_blocks=self.kv_blocks,
            block_tokens=self.block_tokens,
            max_slots=self.max_slots,
            scheduler_steps=self.scheduler_steps,
        )
        _check_positive(
            owner, w_ms=self.w_ms, h_ms=self.h_ms, usd_per_gpu_hour=self.usd_per_gpu_hour
        )
        if self.source not in PROFILE_SOURCES:
            _fail(
                f"{owner}: source must be one of {', '.join(PROFILE_SOURCES)}; "
                f"got {self.source!r}"
            )

    # -- price ----------------------------------------------------------------------------

    @property
    def gpus_per_instance(self) -> int:
        """GPUs in one instance (= ``tp``)."""
        return self.tp

    @property
    def usd_per_instance_hour(self) -> float:
        """Price of one instance, USD/h: ``tp * usd_per_gpu_hour`` (docs/model.md §2)."""
        return self.tp * self.usd_per_gpu_hour

    # -- capacity -------------------------------------------------------------------------

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the KV pool holds: ``kv_blocks * block_tokens``."""
        return self.kv_blocks * self.block_tokens

    @property
    def max_context_tokens(self) -> int:
        """Largest window ``C`` with ``slots(C) >= 1``.

        ``min(kv_blocks * block_tokens, max_slots * calib_tokens)``: the first bound keeps one
        sequence's blocks in the pool, the second keeps ``max_slots * C_cal // C >= 1``.
        """
        return min(self.kv_blocks * self.block_tokens, self.max_slots * self.calib_tokens)

    def slots(self, context_tokens: int) -> int:
        """KV slots of one instance whose pool serves contexts up to ``context_tokens``.

        ``min(kv_blocks // ceil(C / block_tokens), max_slots * calib_tokens // C)`` with
        integer division, as the paper's simulator (docs/model.md §2). paper-H100: 16 at 65,536,
        128 at 8,192, 256 at 4,096. Raises :class:`FleetOptError` when not even one
        sequence of ``C`` tokens fits.
        """
        c = context_tokens
        if isinstance(c, (float, np.floating)) and float(c).is_integer():
            c = int(c)
        if isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1:
            raise FleetOptError(
                f"profile {self.name!r}: context_tokens must be a positive integer, "
                f"got {context_tokens!r}"
            )
        c = int(c)
        by_kv = self.kv_blocks // -(-c // self.block_tokens)
        by_cap = self.max_slots * self.calib_tokens // c
        n = min(by_kv, by_cap)
        if n < 1:
            raise FleetOptError(
                f"profile {self.name!r}: context_tokens={c} leaves no KV slot "
                f"(the largest window that fits is {self.max_context_tokens} tokens); "
                f"use a smaller window, a larger tp or a GPU with more memory"
            )
        return n

    # -- timing ---------------------------------------------------------------------------

    def iter_time_s(self, batch_size, mean_context_tokens):
        """Iteration time ``(W + s n + H * n * Lbar / calib_tokens) / 1000`` in seconds (docs/model.md §2).

        ``batch_size`` (``n``) and ``mean_context_tokens`` (``Lbar``) broadcast as numpy
        arrays; scalars in, float out.
        """
        n = np.asarray(batch_size, dtype=float)
        lbar = np.asarray(mean_context_tokens, dtype=float)
        t = (self.w_ms + self.seq_ms * n + self.h_ms * n * lbar / self.calib_tokens) * 1e-3
        return _scalar_or_array(t)

    def prefill_chunks(self, input_tokens):
        """Prefill iterations of a prompt: ``ceil(L_in / chunk_tokens)`` (vectorised)."""
        lin = np.asarray(input_tokens)
        if np.any(lin < 0):
            raise FleetOptError(f"profile {self.name!r}: input_tokens must be >= 0")
        return _ceil_div(lin, self.chunk_tokens)

    @property
    def engine_max_batch(self) -> int:
        """The batch cap of a continuous-batching engine on this profile (vLLM's
        ``max_num_seqs``): ``max_slots``, at every window. The engine admits by KV blocks in
        use (tokens in flight) below it, not by reserved windows (docs/engine.md §2)."""
        return self.max_slots

    @property
    def chunk_compute_ms(self) -> float:
        """Compute a full prefill chunk adds to its step: ``prefill_ms_per_token * chunk``, ms
        (0 except in calibrated profiles)."""
        return self.prefill_ms_per_token * self.chunk_tokens

    def prefill_s(self, input_tokens):
        """Prefill time ``ceil(L_in / chunk) * (t_iter(1, calib_tokens) + chunk compute)``, s.

        One sequence at the unscaled ``H``, as in the paper's simulator (docs/model.md §2); the
        chunk compute is 0 except in calibrated profiles (docs/engine.md §1). Vectorised.
        """
        chunks = self.prefill_chunks(input_tokens)
        step = self.iter_time_s(1, self.calib_tokens) + self.chunk_compute_ms * 1e-3
        return _scalar_or_array(chunks * step)

    def service_s(self, input_tokens, output_tokens, context_tokens: int):
        """Slot holding time ``(ceil(L_in / chunk) + L_out) * t_iter(slots(C), L_in + L_out)``, s.

        Evaluated at a full batch of ``slots(context_tokens)`` sequences (conservative,
        docs/model.md §2). ``input_tokens`` and ``output_tokens`` broadcast; ``context_tokens``
        is the pool's window (one integer).
        """
        lin = np.asarray(input_tokens)
        lout = np.asarray(output_tokens)
        if np.any(lout < 0):
            raise FleetOptError(f"profile {self.name!r}: output_tokens must be >= 0")
        n = self.slots(context_tokens)
        steps = self.prefill_chunks(lin) + lout
        return _scalar_or_array(steps * self.iter_time_s(n, lin + lout))

    # -- calibration ----------------------------------------------------------------------

    def with_overrides(self, **calibration: Any) -> Profile:
        """A copy with measured figures (e.g. ``w_ms``, ``h_ms``, ``kv_blocks``) and
        ``source="calibrated"``.

        Any field but ``source`` may be overridden; an unknown name raises
        :class:`FleetOptError` listing the allowed ones.
        """
        allowed = [f.name for f in fields(self) if f.name != "source"]
        unknown = sorted(set(calibration) - set(allowed))
        if unknown:
            raise FleetOptError(
                f"profile {self.name!r}: cannot override {', '.join(unknown)}; "
                f"allowed: {', '.join(allowed)}"
            )
        return replace(self, source="calibrated", **calibration)
