"""The catalogue: TOML files of GPUs, LLMs and profiles, loaded and checked.

:func:`load_catalog` reads the built-in catalogue (``models/*.toml``) plus user files, one
schema for every file (``[gpus."NAME"]``, ``[llms."NAME"]``, ``[profiles."NAME"]``),
checking every field; :class:`Catalog` finds entries by (case-insensitive) name or alias;
:func:`resolve_profile` turns what a user names (a profile, a GPU plus a model, or a TOML
file) into a :class:`~fleetopt_milp.hw_specs.Profile` (docs/model.md §2). Re-exported by
:mod:`fleetopt_milp.hardware`.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import CatalogError, FleetOptError
from .hw_roofline import default_tp, roofline_profile
from .hw_specs import GpuSpec, LlmSpec, Profile

__all__ = ["Catalog", "load_catalog", "models_dir", "resolve_profile"]


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
    "scheduler_steps": ("int", False),
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
