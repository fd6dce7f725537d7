"""The memory-bandwidth roofline: profiles built from specs, and physical floors.

:func:`roofline_profile` builds a :class:`~fleetopt_milp.hw_specs.Profile` from a GPU's
and a model's specs (docs/model.md §2); :func:`roofline_floor_ms`,
:func:`prefill_chunk_floor_ms` and :func:`profile_warnings` flag profiles faster (or
larger) than their hardware allows. Re-exported by :mod:`fleetopt_milp.hardware`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import FleetOptError
from .hw_specs import MAX_TP, GpuSpec, LlmSpec, Profile, _check_int

if TYPE_CHECKING:
    from .hw_catalog import Catalog

__all__ = ["roofline_profile", "default_tp", "ridge_chunk_tokens", "roofline_floor_ms",
           "prefill_chunk_floor_ms", "profile_warnings"]

KV_HEADROOM_FOR_DEFAULT_TP = 0.2
""":func:`default_tp` keeps at least this share of the instance's HBM free for KV cache."""


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
