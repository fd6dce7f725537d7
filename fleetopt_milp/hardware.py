"""Hardware and model catalogue, serving-instance profiles and the roofline (docs/model.md §2).

An *instance* is one model replica: ``tp`` GPUs of one type running one LLM with tensor
parallelism. Its price is ``tp x usd_per_gpu_hour`` (the paper's simulator prices a TP-8
replica at one GPU's price; this package never does). A :class:`Profile` carries what the
planner needs of an instance:

- iteration time of continuous batching, ``t_iter(n, Lbar) = W + s n + H * n * Lbar / C_cal``
  (``W``, ``s``, ``H`` in ms; ``n`` sequences of mean context ``Lbar`` tokens; ``C_cal``
  tokens; the per-sequence cost ``s`` is 0 except in calibrated profiles, docs/engine.md);
- KV slots of an instance serving contexts up to ``C`` tokens,
  ``slots(C) = min(KV_blocks // ceil(C / block), max_slots * C_cal // C)``;
- prefill ``T_pf = ceil(L_in / chunk) * (t_iter(1, C_cal) + p * chunk)`` (``p``: the
  per-token prefill compute of calibrated profiles, 0 otherwise) and service time
  ``S = (ceil(L_in / chunk) + L_out) * t_iter(slots(C), L_in + L_out)``.

Profiles come from the paper (``paper-A100``, ``paper-H100``, ``paper-A10G``), from a
memory-bandwidth roofline over catalogue specs (:func:`roofline_profile`), or from a
measured benchmark (:meth:`Profile.with_overrides`). :func:`profile_warnings` flags
profiles faster than physics allows.

Units: GB = 10^9 bytes, GB/s = 10^9 bytes/s, TFLOPS = 10^12 FLOP/s, ``*_ms``
milliseconds, ``*_s`` seconds, lengths in tokens, prices in USD per hour.

The catalogue is TOML, one schema for every file: ``[gpus."NAME"]``, ``[llms."NAME"]``
and ``[profiles."NAME"]`` tables (see ``models/*.toml``). Names are case-insensitive.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from .errors import CatalogError, FleetOptError

__all__ = [
    "GpuSpec",
    "LlmSpec",
    "Profile",
    "Catalog",
    "PROFILE_SOURCES",
    "load_catalog",
    "models_dir",
    "resolve_profile",
    "roofline_profile",
    "default_tp",
    "ridge_chunk_tokens",
    "roofline_floor_ms",
    "prefill_chunk_floor_ms",
    "profile_warnings",
]

PROFILE_SOURCES = ("paper", "roofline", "calibrated", "user")
"""Allowed values of :attr:`Profile.source`."""

KV_HEADROOM_FOR_DEFAULT_TP = 0.2
""":func:`default_tp` keeps at least this share of the instance's HBM free for KV cache."""

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
    the engine service model; ``inputs_sha256`` of the measurement files fitted; and the
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


# ---------------------------------------------------------------------------------------
# Roofline
# ---------------------------------------------------------------------------------------


def ridge_chunk_tokens(gpu: GpuSpec, model: LlmSpec) -> int:
    """Default prefill chunk: largest multiple of 16 tokens whose compute fits in a weight read.

    A chunk of ``k`` tokens costs ``2 * active_params * k`` FLOP; a decode iteration reads
    ``weight_bytes``. At peak they balance at ``k* = dense_fp16_tflops * weight_bytes /
    (2 * active_params * hbm_bandwidth)`` (the roofline ridge: 295 tokens for H100 fp16,
    so 288; 153 -> 144 for A100). Below ``k*`` a chunked-prefill iteration costs about one
    decode iteration, as the prefill model ``ceil(L_in / chunk) * t_iter(1, C_cal)``
    assumes (docs/model.md §2). Mixture-of-experts models get a larger chunk (total / active).
    """
    ridge = (
        gpu.dense_fp16_tflops
        * 1e12
        * model.weight_bytes
        / (2.0 * model.active_params_b * 1e9 * gpu.bandwidth_bytes_per_s)
    )
    return max(16, int(ridge // 16) * 16)


def _smallest_tp(gpu: GpuSpec, model: LlmSpec, usable_fraction: float) -> int | None:
    tp = 1
    while tp <= MAX_TP:
        if model.weight_bytes < tp * gpu.hbm_bytes * usable_fraction:
            return tp
        tp *= 2
    return None


def default_tp(gpu: GpuSpec, model: LlmSpec) -> int:
    """Smallest power of two ``tp`` whose HBM holds the weights with >= 20% of it left for KV.

    Llama-3-70B fp16 (141.2 GB): 4 on H100-80GB, 1 on B200-192GB, 8 on A10G-24GB.
    Raises :class:`FleetOptError` beyond ``tp = 64``.
    """
    tp = _smallest_tp(gpu, model, 1.0 - KV_HEADROOM_FOR_DEFAULT_TP)
    if tp is None:
        raise FleetOptError(
            f"{model.name} ({model.weight_bytes / 1e9:.1f} GB of weights) does not fit "
            f"{MAX_TP} x {gpu.name} with {KV_HEADROOM_FOR_DEFAULT_TP:.0%} of HBM left for KV"
        )
    return tp


def roofline_profile(
    gpu: GpuSpec,
    model: LlmSpec,
    tp: int,
    *,
    bandwidth_efficiency: float = 0.8,
    memory_utilization: float = 0.9,
    per_layer_overhead_us: float = 3.0,
    chunk_tokens: int | None = None,
    block_tokens: int = 16,
    max_slots: int = 256,
    calib_tokens: int = 8192,
    name: str | None = None,
) -> Profile:
    """Profile of ``model`` on ``tp`` x ``gpu`` from a memory-bandwidth roofline (docs/model.md §2).

    With ``BW = tp * hbm_bandwidth * bandwidth_efficiency`` (bytes/s):

    - ``W = weight_bytes / BW + n_layers * per_layer_overhead_us``: every decode iteration
      reads all weights. For a MoE this is the *total* parameter count: a large batch
      routes tokens to every expert, so all of them are read each iteration.
    - ``H = kv_bytes_per_token * calib_tokens / BW``: reading one ``calib_tokens``-token
      sequence's KV cache.
    - ``KV tokens = (tp * HBM * memory_utilization - weight_bytes) / kv_bytes_per_token``,
      ``kv_blocks = floor(KV tokens / block_tokens)`` (activations and runtime overhead live
      in the ``1 - memory_utilization`` share).
    - KV bytes per token are multiplied by :meth:`LlmSpec.kv_replication` when ``tp``
      exceeds the KV heads; inter-GPU (all-reduce) time is not modelled.
    - ``chunk_tokens`` defaults to :func:`ridge_chunk_tokens`.

    Llama-3-70B fp16 on 8 x H100-80GB: W = 6.83 ms, H = 0.125 ms, 82,931 KV blocks.
    Raises :class:`FleetOptError` if the weights do not fit, naming the smallest tp that does.
    """
    _check_int("roofline_profile", tp=tp, block_tokens=block_tokens, max_slots=max_slots,
               calib_tokens=calib_tokens)
    model.check_tp(tp)
    for key, v in (("bandwidth_efficiency", bandwidth_efficiency),
                   ("memory_utilization", memory_utilization)):
        if not 0 < v <= 1:
            raise FleetOptError(f"roofline_profile: {key} must be in (0, 1], got {v!r}")
    if per_layer_overhead_us < 0:
        raise FleetOptError(
            f"roofline_profile: per_layer_overhead_us must be >= 0, got {per_layer_overhead_us!r}"
        )
    usable = tp * gpu.hbm_bytes * memory_utilization
    kv_per_token = model.kv_bytes_per_token * model.kv_replication(tp)
    kv_tokens = (usable - model.weight_bytes) / kv_per_token
    kv_blocks = int(kv_tokens // block_tokens) if kv_tokens > 0 else 0
    if kv_blocks < 1:
        fits = _smallest_tp(gpu, model, memory_utilization)
        hint = (f"the smallest tp that fits is {fits}" if fits is not None
                else f"it does not fit even {MAX_TP} GPUs")
        raise FleetOptError(
            f"{model.name} ({model.weight_bytes / 1e9:.1f} GB of weights) does not fit "
            f"tp={tp} x {gpu.name} ({tp * gpu.hbm_gb:g} GB, {memory_utilization:.0%} usable) "
            f"with room for KV cache; {hint}"
        )
    bw = tp * gpu.bandwidth_bytes_per_s * bandwidth_efficiency
    w_ms = model.weight_bytes / bw * 1e3 + model.n_layers * per_layer_overhead_us * 1e-3
    h_ms = kv_per_token * calib_tokens / bw * 1e3
    chunk = ridge_chunk_tokens(gpu, model) if chunk_tokens is None else chunk_tokens
    return Profile(
        name=name or f"{gpu.name}/{model.name}/tp{tp}",
        gpu=gpu.name,
        model=model.name,
        tp=tp,
        w_ms=w_ms,
        h_ms=h_ms,
        calib_tokens=calib_tokens,
        chunk_tokens=chunk,
        kv_blocks=kv_blocks,
        block_tokens=block_tokens,
        max_slots=max_slots,
        usd_per_gpu_hour=gpu.usd_per_gpu_hour,
        source="roofline",
        citation=(
            f"memory-bandwidth roofline (docs/model.md §2): {bandwidth_efficiency:.0%} of "
            f"{gpu.hbm_bandwidth_gb_per_s:g} GB/s per GPU, {memory_utilization:.0%} of HBM, "
            f"{per_layer_overhead_us:g} us per layer; price: {gpu.price_source}"
        ),
    )


def roofline_floor_ms(profile: Profile, gpu: GpuSpec, model: LlmSpec) -> tuple[float, float]:
    """Physical floors ``(W, H)`` in ms for ``profile``: its reads at PEAK bandwidth.

    ``W >= weight_bytes / (tp * bandwidth)`` and ``H >= kv_bytes_per_token * calib_tokens /
    (tp * bandwidth)``, no overhead, efficiency 1. Llama-3-70B fp16 on 8 x H100: (5.27, 0.100).
    """
    bw = profile.tp * gpu.bandwidth_bytes_per_s
    kv = model.kv_bytes_per_token * model.kv_replication(profile.tp)
    return model.weight_bytes / bw * 1e3, kv * profile.calib_tokens / bw * 1e3


def prefill_chunk_floor_ms(profile: Profile, gpu: GpuSpec, model: LlmSpec) -> float:
    """Compute floor of one prefill chunk in ms: ``2 * active_params * chunk / (tp * peak FLOPS)``.

    The profile charges a chunk ``t_iter(1, calib_tokens)``; below this floor it is faster
    than the GPUs' peak dense FP16 throughput allows.
    """
    flop = 2.0 * model.active_params_b * 1e9 * profile.chunk_tokens
    return flop / (profile.tp * gpu.dense_fp16_tflops * 1e12) * 1e3


def profile_warnings(profile: Profile, catalog: Catalog) -> list[str]:
    """Warnings for a profile faster (or larger) than its hardware allows.

    Checks, against the catalogue's GPU and model: ``W`` and ``H`` below their
    :func:`roofline_floor_ms`; a prefill chunk faster than :func:`prefill_chunk_floor_ms`;
    a KV pool plus weights larger than the instance's memory. paper-H100 warns
    (W = 4.0 ms < 5.27 ms); a default roofline profile does not. Returns ``[]`` if all
    is physical; one warning if the GPU or model is not in the catalogue.
    """
    gpu = catalog.find_gpu(profile.gpu)
    model = catalog.find_llm(profile.model)
    if gpu is None or model is None:
        missing = f"GPU {profile.gpu!r}" if gpu is None else f"model {profile.model!r}"
        return [f"profile {profile.name!r}: {missing} is not in the catalogue, so its "
                f"roofline floors cannot be checked"]
    out: list[str] = []
    tol = 1e-9
    w_floor, h_floor = roofline_floor_ms(profile, gpu, model)
    where = f"{model.name} fp{8 * model.dtype_bytes:g} on {profile.tp} x {gpu.name}"
    if profile.w_ms < w_floor * (1 - tol):
        out.append(
            f"profile {profile.name!r}: W = {profile.w_ms:.2f} ms is below the weight-read floor "
            f"of {w_floor:.2f} ms ({model.weight_bytes / 1e9:.1f} GB of weights over {where} "
            f"at {gpu.hbm_bandwidth_gb_per_s:g} GB/s peak each); its fleets will be undersized"
        )
    if profile.h_ms < h_floor * (1 - tol):
        out.append(
            f"profile {profile.name!r}: H = {profile.h_ms:.3f} ms is below the KV-read floor of "
            f"{h_floor:.3f} ms ({profile.calib_tokens} tokens of KV over {where} at peak bandwidth)"
        )
    chunk_floor = prefill_chunk_floor_ms(profile, gpu, model)
    chunk_ms = float(profile.prefill_s(profile.chunk_tokens)) * 1e3
    if chunk_ms < chunk_floor * (1 - tol):
        out.append(
            f"profile {profile.name!r}: a {profile.chunk_tokens}-token prefill chunk takes "
            f"{chunk_ms:.2f} ms, below its compute floor of {chunk_floor:.2f} ms "
            f"({where} at {gpu.dense_fp16_tflops:g} TFLOPS peak each); prefill is understated"
        )
    kv_per_token = model.kv_bytes_per_token * model.kv_replication(profile.tp)
    kv_bytes = profile.kv_capacity_tokens * kv_per_token
    total = kv_bytes + model.weight_bytes
    hbm = profile.tp * gpu.hbm_bytes
    if total > hbm * (1 + tol):
        out.append(
            f"profile {profile.name!r}: its KV pool ({profile.kv_capacity_tokens:,} tokens, "
            f"{kv_bytes / 1e9:.1f} GB) plus {model.weight_bytes / 1e9:.1f} GB of weights exceeds "
            f"the {hbm / 1e9:g} GB of {profile.tp} x {gpu.name}; its slots are overstated"
        )
    return out


# ---------------------------------------------------------------------------------------
# Catalogue
# ---------------------------------------------------------------------------------------


def _key(name: str) -> str:
    return name.strip().casefold()


@dataclass(frozen=True)
class Catalog:
    """GPUs, LLMs and profiles by name (case-insensitive). Build with :func:`load_catalog`.

    ``gpus``, ``llms``, ``profiles`` map each entry's own name to it; ``files`` lists the
    TOML files read, in order (later entries of the same name override earlier ones, field
    by field).
    """

    gpus: Mapping[str, GpuSpec] = field(default_factory=dict)
    llms: Mapping[str, LlmSpec] = field(default_factory=dict)
    profiles: Mapping[str, Profile] = field(default_factory=dict)
    files: tuple[Path, ...] = ()

    @staticmethod
    def _find(table: Mapping[str, Any], name: str):
        k = _key(name)
        for entry_name, entry in table.items():
            if _key(entry_name) == k or k in (_key(a) for a in getattr(entry, "aliases", ())):
                return entry
        return None

    def find_gpu(self, name: str) -> GpuSpec | None:
        """The GPU named (or aliased) ``name``, or None."""
        return self._find(self.gpus, name)

    def find_llm(self, name: str) -> LlmSpec | None:
        """The LLM named (or aliased) ``name``, or None."""
        return self._find(self.llms, name)

    def find_profile(self, name: str) -> Profile | None:
        """The profile named ``name``, or None."""
        return self._find(self.profiles, name)

    def gpu(self, name: str) -> GpuSpec:
        """The GPU named ``name``; :class:`CatalogError` listing the known GPUs otherwise."""
        g = self.find_gpu(name)
        if g is None:
            raise CatalogError(f"unknown GPU {name!r}; known GPUs: {', '.join(self.gpus)}")
        return g

    def llm(self, name: str) -> LlmSpec:
        """The LLM named ``name``; :class:`CatalogError` listing the known models otherwise."""
        m = self.find_llm(name)
        if m is None:
            raise CatalogError(f"unknown model {name!r}; known models: {', '.join(self.llms)}")
        return m

    def profile(self, name: str) -> Profile:
        """The profile named ``name``; :class:`CatalogError` listing the known ones otherwise."""
        p = self.find_profile(name)
        if p is None:
            raise CatalogError(
                f"unknown profile {name!r}; known profiles: {', '.join(self.profiles)}"
            )
        return p


# Field schemas: name -> (kind, required). Kinds: "str", "int" (>= 1), "num" (> 0), "num0"
# (>= 0), "aliases" (a list of strings).
_GPU_SCHEMA = {
    "hbm_gb": ("num", True),
    "hbm_bandwidth_gb_per_s": ("num", True),
    "dense_fp16_tflops": ("num", True),
    "usd_per_gpu_hour": ("num", True),
    "price_source": ("str", True),
    "interconnect": ("str", False),
    "notes": ("str", False),
    "aliases": ("aliases", False),
}
_LLM_SCHEMA = {
    "n_layers": ("int", True),
    "hidden_size": ("int", True),
    "n_heads": ("int", True),
    "n_kv_heads": ("int", True),
    "head_dim": ("int", True),
    "params_b": ("num", True),
    "active_params_b": ("num", False),
    "dtype_bytes": ("num", True),
    "max_context_tokens": ("int", True),
    "source": ("str", True),
    "notes": ("str", False),
    "aliases": ("aliases", False),
}
_PROFILE_SCHEMA = {
    "gpu": ("str", True),
    "model": ("str", True),
    "tp": ("int", True),
    "w_ms": ("num", True),
    "h_ms": ("num", True),
    "calib_tokens": ("int", True),
    "chunk_tokens": ("int", True),
    "kv_blocks": ("int", True),
    "block_tokens": ("int", True),
    "max_slots": ("int", True),
    "usd_per_gpu_hour": ("num", False),
    "source": ("str", False),
    "citation": ("str", False),
    "notes": ("str", False),
    "seq_ms": ("num0", False),
    "prefill_ms_per_token": ("num0", False),
    "ttft_overhead_ms": ("num0", False),
    "inputs_sha256": ("aliases", False),
    "fit_median_error": ("num0", False),
    "fit_p90_error": ("num0", False),
    "fit_observations": ("int", False),
}
_SECTIONS = {"gpus": _GPU_SCHEMA, "llms": _LLM_SCHEMA, "profiles": _PROFILE_SCHEMA}


def _validate_entry(
    path: Path, section: str, name: str, raw: Any, base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Checked fields of one table; fields it omits are taken from ``base`` (the entry of the
    same name from an earlier file) when there is one, so a user file can re-price a GPU
    with two lines."""
    where = f"{path}: [{section}.{name!r}]"
    if not isinstance(raw, dict):
        raise CatalogError(f"{where} must be a table of fields, got {type(raw).__name__}")
    schema = _SECTIONS[section]
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        raise CatalogError(
            f"{where}: unknown field(s) {', '.join(unknown)}; allowed: {', '.join(schema)}"
        )
    out: dict[str, Any] = {}
    for key, (kind, required) in schema.items():
        if key not in raw:
            if base is not None and key in base:
                out[key] = base[key]
            elif required:
                raise CatalogError(f"{where}: missing field {key!r}")
            continue
        v = raw[key]
        if kind == "str":
            if not isinstance(v, str) or not v.strip():
                raise CatalogError(f"{where}: field {key!r} must be a non-empty string, got {v!r}")
        elif kind == "int":
            if isinstance(v, bool) or not isinstance(v, int):
                raise CatalogError(f"{where}: field {key!r} must be an integer, got {v!r}")
            if v < 1:
                raise CatalogError(f"{where}: field {key!r} must be >= 1, got {v!r}")
        elif kind in ("num", "num0"):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise CatalogError(f"{where}: field {key!r} must be a number, got {v!r}")
            if not math.isfinite(v) or v < 0 or (v == 0 and kind == "num"):
                need = "positive" if kind == "num" else ">= 0"
                raise CatalogError(f"{where}: field {key!r} must be {need}, got {v!r}")
        elif kind == "aliases":
            if not isinstance(v, list) or not all(isinstance(a, str) and a.strip() for a in v):
                raise CatalogError(f"{where}: field {key!r} must be a list of names, got {v!r}")
            v = tuple(v)
        out[key] = v
    return out


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{path}: not valid TOML ({exc})") from exc
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read ({exc.strerror})") from exc
    unknown = sorted(set(data) - set(_SECTIONS))
    if unknown:
        raise CatalogError(
            f"{path}: unknown table(s) {', '.join(unknown)}; a catalogue file holds only "
            f"[gpus.NAME], [llms.NAME] and [profiles.NAME] tables"
        )
    for section in _SECTIONS:
        if section in data and not isinstance(data[section], dict):
            raise CatalogError(f"{path}: {section} must be tables like [{section}.NAME]")
    return data


def models_dir() -> Path:
    """The built-in catalogue directory: ``$FLEETOPT_MODELS_DIR`` or ``<repo>/models``."""
    env = os.environ.get("FLEETOPT_MODELS_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parent.parent / "models"


def _toml_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*.toml") if p.is_file())
    if path.is_file():
        return [path]
    raise CatalogError(f"catalogue path {path} does not exist (give a .toml file or a directory)")


def load_catalog(extra_paths: Sequence[Path | str] = ()) -> Catalog:
    """Read the built-in catalogue (:func:`models_dir`, every ``*.toml`` below it) plus
    ``extra_paths`` (TOML files or directories, same schema), in that order.

    An entry of the same (case-insensitive) name as an earlier one overrides it field by
    field: ``[gpus."H100-80GB"]`` with only ``usd_per_gpu_hour`` and ``price_source``
    re-prices the built-in H100. A profile without ``usd_per_gpu_hour`` takes its GPU's price;
    without ``source`` it is ``"user"`` (``"paper"`` etc. if given). Missing, zero,
    negative or mistyped fields raise :class:`CatalogError` naming the file, the table and
    the field.
    """
    base = models_dir()
    if not base.is_dir():
        raise CatalogError(
            f"catalogue directory {base} not found; set FLEETOPT_MODELS_DIR to a directory "
            f"of catalogue TOML files"
        )
    files = _toml_files(base)
    for p in extra_paths:
        files.extend(_toml_files(Path(p).expanduser()))

    # Entries by case-folded name: (display name, checked fields, file); later files
    # override earlier ones field by field.
    entries: dict[str, dict[str, tuple[str, dict[str, Any], Path]]] = {s: {} for s in _SECTIONS}
    for path in files:
        data = _read_toml(path)
        for section, table in entries.items():
            for name, raw in data.get(section, {}).items():
                key = _key(name)
                if key not in table:  # an alias of an earlier entry overrides that entry
                    key = next((k for k, (_, kw, _) in table.items()
                                if key in (_key(a) for a in kw.get("aliases", ()))), key)
                prev = table.get(key)
                kw = _validate_entry(path, section, name, raw, prev[1] if prev else None)
                table[key] = (prev[0] if prev else name, kw, path)

    def build(section: str, cls: type, name: str, kw: dict[str, Any], path: Path) -> Any:
        try:
            return cls(name=name, **kw)
        except FleetOptError as exc:
            raise CatalogError(f"{path}: [{section}.{name!r}]: {exc}") from exc

    gpus: dict[str, GpuSpec] = {}
    for name, kw, path in entries["gpus"].values():
        gpus[name] = build("gpus", GpuSpec, name, kw, path)
    llms: dict[str, LlmSpec] = {}
    for name, kw, path in entries["llms"].values():
        kw = {**kw}
        kw.setdefault("active_params_b", kw["params_b"])
        llms[name] = build("llms", LlmSpec, name, kw, path)
    partial = Catalog(gpus=gpus, llms=llms)
    profiles: dict[str, Profile] = {}
    for name, fixed, path in entries["profiles"].values():
        kw = {**fixed}
        where = f"{path}: [profiles.{name!r}]"
        if "usd_per_gpu_hour" not in kw:
            g = partial.find_gpu(kw["gpu"])
            if g is None:
                raise CatalogError(
                    f"{where}: missing field 'usd_per_gpu_hour' and GPU {kw['gpu']!r} is not in "
                    f"the catalogue to take it from"
                )
            kw["usd_per_gpu_hour"] = g.usd_per_gpu_hour
        kw.setdefault("source", "user")
        profiles[name] = build("profiles", Profile, name, kw, path)
        llm = partial.find_llm(kw["model"])
        if llm is not None:  # a model the catalogue knows: its heads must split tp ways
            try:
                llm.check_tp(profiles[name].tp, "the profile's tp field")
            except FleetOptError as exc:
                raise CatalogError(f"{where}: {exc}") from None

    _check_alias_clashes(gpus, "GPU")
    _check_alias_clashes(llms, "model")
    return Catalog(
        gpus=MappingProxyType(gpus),
        llms=MappingProxyType(llms),
        profiles=MappingProxyType(profiles),
        files=tuple(files),
    )


def _check_alias_clashes(table: Mapping[str, Any], what: str) -> None:
    owner: dict[str, str] = {_key(n): n for n in table}
    for name, entry in table.items():
        for alias in entry.aliases:
            k = _key(alias)
            if owner.setdefault(k, name) != name:
                raise CatalogError(
                    f"{what} alias {alias!r} of {name!r} is already the name or alias of "
                    f"{owner[k]!r}; remove one of them"
                )


def resolve_profile(
    catalog: Catalog, gpu: str, model: str | None = None, tp: int | None = None
) -> Profile:
    """The profile a user means by ``gpu`` (plus ``model`` and ``tp``).

    - ``gpu`` names a calibrated profile (e.g. ``"paper-H100"``): that profile; ``model``
      and ``tp``, if given, must match it.
    - ``gpu`` names a GPU (e.g. ``"H100-80GB"``, ``"H100"``): :func:`roofline_profile` of
      ``model`` (required) on ``tp`` GPUs, by default :func:`default_tp`.
    - ``gpu`` is a path to a TOML file: its single profile, or (if it has none) its single
      GPU treated as above.

    Unknown names raise :class:`CatalogError` listing the known ones.
    """
    if gpu.lower().endswith(".toml") or (os.sep in gpu and Path(gpu).is_file()):
        path = Path(gpu).expanduser()
        data = _read_toml(path) if path.is_file() else None
        if data is None:
            raise CatalogError(f"profile file {path} does not exist")
        cat = load_catalog([*catalog.files, path])
        names = list(data.get("profiles", {})) or list(data.get("gpus", {}))
        if len(names) != 1:
            raise CatalogError(
                f"{path}: expected exactly one [profiles.NAME] (or one [gpus.NAME]) table, "
                f"found {len(names)}: {', '.join(names) or 'none'}"
            )
        return resolve_profile(cat, names[0], model, tp)

    prof = catalog.find_profile(gpu)
    if prof is not None:
        if model is not None:
            wanted = catalog.find_llm(model)
            same = _key(model) == _key(prof.model) or (
                wanted is not None and wanted is catalog.find_llm(prof.model)
            )
            if not same:
                raise CatalogError(
                    f"profile {prof.name!r} serves {prof.model}, not {model}; drop the model or "
                    f"pass a GPU name ({', '.join(catalog.gpus)}) to build a roofline profile"
                )
        if tp is not None and tp != prof.tp:
            raise CatalogError(
                f"profile {prof.name!r} is calibrated at tp={prof.tp}, not tp={tp}; drop tp or "
                f"pass a GPU name to build a roofline profile"
            )
        return prof

    spec = catalog.find_gpu(gpu)
    if spec is None:
        raise CatalogError(
            f"unknown GPU or profile {gpu!r}; known profiles: {', '.join(catalog.profiles)}; "
            f"known GPUs: {', '.join(catalog.gpus)}"
        )
    if model is None:
        raise CatalogError(
            f"GPU {spec.name!r} needs a model to build a roofline profile; known models: "
            f"{', '.join(catalog.llms)}"
        )
    llm = catalog.llm(model)
    return roofline_profile(spec, llm, default_tp(spec, llm) if tp is None else tp)
