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

The code lives in three modules whose names are re-exported here:
:mod:`~fleetopt_milp.hw_specs` (the records :class:`GpuSpec`, :class:`LlmSpec`,
:class:`Profile`), :mod:`~fleetopt_milp.hw_roofline` (the roofline builder, floors and
warnings) and :mod:`~fleetopt_milp.hw_catalog` (TOML loading, schema checks, name
resolution).
"""

from __future__ import annotations

from .hw_catalog import Catalog, load_catalog, models_dir, resolve_profile
from .hw_roofline import (
    KV_HEADROOM_FOR_DEFAULT_TP,  # noqa: F401  (a module constant, still importable from here)
    default_tp,
    prefill_chunk_floor_ms,
    profile_warnings,
    ridge_chunk_tokens,
    roofline_floor_ms,
    roofline_profile,
)
from .hw_specs import (
    MAX_TP,  # noqa: F401  (a module constant, still importable from here)
    PROFILE_SOURCES,
    GpuSpec,
    LlmSpec,
    Profile,
)

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
