"""Plan provenance: every input a plan was made from, recorded in its plan file.

A plan file's top-level ``inputs`` object is a :class:`PlanInputs`: the workload (a built-in
name or an absolute path, with the sha256 of each data file), the traffic and the SLO, each
profile with its source and values, the model options, the command's own options (verify or
solve), the catalogue files, the package version, the seed and the solver status. From it,

- ``fleetopt plan --from PLAN.json`` and ``fleetopt solve --from PLAN.json`` re-run the same
  command with the same arguments (:meth:`PlanInputs.cli_kwargs`), which reproduces the plan
  file apart from its timing fields;
- ``fleetopt simulate PLAN.json`` loads the workload the plan was made from
  (:func:`workload_spec`) and says in one line when its data changed since
  (:meth:`WorkloadInput.change_note`).

The record keeps the command-line arguments in typed form; nothing here plans. See
docs/reports.md.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import FleetOptError

__all__ = ["absolute_if_file", "FileDigest", "WorkloadInput", "ProfileInput", "Traffic",
           "ModelOptions", "VerifyOptions", "SolveOptions", "PlanInputs", "record_inputs", "read_inputs",
           "options_beside_from", "rerun_kwargs",
           "workload_spec"]

COMMANDS = ("plan", "solve")


@dataclass(frozen=True)
class FileDigest:
    """A data file by absolute path, with its size in bytes and the sha256 of its bytes."""

    path: str
    sha256: str
    size_bytes: int

    @classmethod
    def of(cls, path: str | Path) -> FileDigest:
        p = Path(path).expanduser().resolve()
        h = hashlib.sha256()
        with p.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return cls(str(p), h.hexdigest(), p.stat().st_size)

    def changed(self) -> str | None:
        """``None`` if the file still has this digest, else a few words on what changed."""
        p = Path(self.path)
        if not p.is_file():
            return f"{self.path} is missing"
        if FileDigest.of(p).sha256 != self.sha256:
            return f"{self.path} changed (sha256 {self.sha256[:12]}... at planning)"
        return None


def absolute_if_file(spec: str) -> str:
    """A path that names an existing file becomes absolute; names stay as they are."""
    p = Path(spec).expanduser()
    return str(p.resolve()) if p.is_file() else spec


@dataclass(frozen=True)
class WorkloadInput:
    """The workload: ``spec`` is what :func:`~fleetopt_milp.workload.load_workload` is given,
    a built-in name or an absolute path; ``files`` are its data files with their digests."""

    spec: str
    builtin: bool
    name: str
    files: tuple[FileDigest, ...]

    @classmethod
    def record(cls, spec: str, name: str) -> WorkloadInput:
        """The workload ``load_workload(spec)`` loaded, under its ``name``."""
        from .workload import builtin_files, builtin_workloads

        if spec in builtin_workloads():
            return cls(spec, True, name, tuple(FileDigest.of(p) for p in builtin_files(spec)))
        path = Path(spec).expanduser().resolve()
        return cls(str(path), False, name, (FileDigest.of(path),))

    def change_note(self) -> str | None:
        """One line when a data file differs from the one planned with, else ``None``."""
        changes = [c for c in (f.changed() for f in self.files) if c]
        if not changes:
            return None
        return (f"workload '{self.name}' differs from the one planned with: "
                f"{'; '.join(changes)}; results may not match the plan")


@dataclass(frozen=True)
class ProfileInput:
    """A serving profile: the ``--gpu``/``--gpus`` entry that named it, and the resolved
    :class:`~fleetopt_milp.hardware.Profile` field by field (``values``, units as there)."""

    requested: str
    name: str
    source: str
    values: dict[str, Any]

    @classmethod
    def record(cls, requested: str, profile) -> ProfileInput:
        return cls(absolute_if_file(requested), profile.name, profile.source, asdict(profile))

    def profile(self):
        """The recorded :class:`~fleetopt_milp.hardware.Profile` (JSON lists as tuples)."""
        from .hardware import Profile

        return Profile(**{k: tuple(v) if isinstance(v, list) else v
                          for k, v in self.values.items()})

    def difference(self, profile) -> str | None:
        """Names the fields in which ``profile`` (resolved today) differs from this record."""
        now = json.loads(json.dumps(asdict(profile)))  # as recorded: tuples are lists
        diff = [k for k, v in self.values.items() if now.get(k) != v]
        if not diff:
            return None
        return (f"profile '{self.name}' differs from the one planned with in "
                f"{', '.join(diff)} (catalogue changed)")


@dataclass(frozen=True)
class Traffic:
    """Mean arrival rate (req/s) as given, the TTFT SLO, and the peak-rate rule."""

    rate_rps: float
    slo_ms: float
    percentile: float
    peak_factor: float = 1.0
    peak_window_s: float | None = None
    tpot_ms: float | None = None
    tpot_percentile: float = 99.0


@dataclass(frozen=True)
class ModelOptions:
    """The queueing and search options of docs/model.md §3-4 (C&R band, caps, latencies)."""

    long_context_tokens: int
    gamma_max: float
    gamma_steps: int
    compressible_share: float
    rho_max: float
    compression_latency_ms: float
    paper_compat: bool
    service_model: str = "slot"


@dataclass(frozen=True)
class VerifyOptions:
    """``fleetopt plan --verify``: candidates tried, requests per replication, fidelity, seed."""

    verify: bool
    candidates: int
    requests: int
    fidelity: str
    seed: int


@dataclass(frozen=True)
class SolveOptions:
    """``fleetopt solve``'s own options (docs/milp.md)."""

    gpus: str | None
    pools: int
    max_gpus: tuple[str, ...]
    max_total_gpus: int | None
    budget_usd_per_hour: float | None
    objective: str
    time_limit_s: float | None
    min_instances: int
    mix: str


@dataclass(frozen=True)
class PlanInputs:
    """Everything a plan was made from (the plan file's ``inputs``; see the module doc)."""

    command: str
    package_version: str
    workload: WorkloadInput
    traffic: Traffic
    gpu: str
    model: str | None
    tp: int | None
    profiles: tuple[ProfileInput, ...]
    options: ModelOptions
    catalog: tuple[str, ...]
    verify: VerifyOptions | None = None
    solve: SolveOptions | None = None
    solver_status: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PlanInputs:
        """Rebuild from :meth:`to_dict`; a malformed record raises :class:`FleetOptError`."""
        try:
            wl = d["workload"]
            kw = {f.name: d[f.name] for f in fields(cls) if f.name in d}
            kw.update(
                workload=WorkloadInput(wl["spec"], wl["builtin"], wl["name"],
                                       tuple(FileDigest(**f) for f in wl["files"])),
                traffic=Traffic(**d["traffic"]), options=ModelOptions(**d["options"]),
                profiles=tuple(ProfileInput(**p) for p in d["profiles"]),
                catalog=tuple(d["catalog"]),
                verify=None if d.get("verify") is None else VerifyOptions(**d["verify"]),
                solve=None if d.get("solve") is None else SolveOptions(
                    **{**d["solve"], "max_gpus": tuple(d["solve"]["max_gpus"])}))
            if kw["command"] not in COMMANDS:
                raise KeyError("command")
            record = cls(**kw)
        except (KeyError, TypeError) as exc:
            raise FleetOptError(f"plan file: 'inputs' record missing or malformed field {exc}; "
                                "re-create the plan with `fleetopt plan --json PATH`") from None
        _check_types(record, "inputs")
        return record

    def cli_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the ``fleetopt plan``/``solve`` function that made the plan
        (``json_path`` and ``from_plan`` excluded)."""
        t, o = self.traffic, self.options
        kw = dict(workload=self.workload.spec, rate=t.rate_rps, slo_ms=t.slo_ms,
                  percentile=t.percentile, gpu=self.gpu, model=self.model, tp=self.tp,
                  long_context=o.long_context_tokens, gamma_max=o.gamma_max,
                  compressible=o.compressible_share, rho_max=o.rho_max,
                  compression_ms=o.compression_latency_ms, paper_compat=o.paper_compat,
                  catalog=[Path(c) for c in self.catalog])
        kw.update(service_model=o.service_model, tpot_ms=t.tpot_ms,
                  tpot_percentile=t.tpot_percentile)
        if self.command == "plan":
            v = self.verify
            kw.update(peak_factor=t.peak_factor, peak_window_s=t.peak_window_s, verify=v.verify,
                      verify_candidates=v.candidates, verify_requests=v.requests,
                      verify_fidelity=v.fidelity, seed=v.seed)
        else:
            s = self.solve
            kw.update(gpus=s.gpus, pools=s.pools, max_gpus=list(s.max_gpus),
                      max_total_gpus=s.max_total_gpus, budget=s.budget_usd_per_hour,
                      objective=s.objective, time_limit_s=s.time_limit_s,
                      min_instances=s.min_instances, mix=s.mix)
        return kw

    def change_notes(self) -> list[str]:
        """One line per input that differs today from planning time: the workload's data
        files, and each profile as the recorded catalogue resolves it today."""
        from .hardware import load_catalog, resolve_profile

        notes = [self.workload.change_note()]
        cat = load_catalog([Path(c) for c in self.catalog])
        for rec in self.profiles:
            try:
                notes.append(rec.difference(resolve_profile(cat, rec.requested, self.model,
                                                            self.tp)))
            except FleetOptError as exc:
                notes.append(f"profile '{rec.name}' no longer resolves ({exc})")
        return [n for n in notes if n]


def _check_types(record, path: str) -> None:
    """Every field of a record (and of the records in it) has its annotated type, and every
    number is finite: a hand-edited ``inputs`` record fails here, not deep in a re-run."""
    import math
    import types
    import typing

    hints = typing.get_type_hints(type(record))
    for f in fields(record):
        v, want, name = getattr(record, f.name), hints[f.name], f"{path}.{f.name}"
        if dataclasses.is_dataclass(v):
            _check_types(v, name)
            continue
        if isinstance(v, tuple):
            for j, item in enumerate(v):
                if dataclasses.is_dataclass(item):
                    _check_types(item, f"{name}[{j}]")
                elif not isinstance(item, str):
                    raise FleetOptError(f"plan file: {name}[{j}] must be a string; re-create "
                                        "the plan with `fleetopt plan --json PATH`")
            continue
        allowed = (want,) if typing.get_origin(want) is not None and not isinstance(
            want, types.UnionType) else (typing.get_args(want) or (want,))
        allowed = tuple(typing.get_origin(t) or t for t in allowed)
        kinds = tuple(t for t in allowed if isinstance(t, type) and t is not Any)
        if float in kinds:
            kinds += (int,)
        ok = (not kinds or isinstance(v, kinds)) and not (
            isinstance(v, bool) and bool not in kinds)
        if ok and isinstance(v, float) and not math.isfinite(v):
            ok = False
        if not ok:
            raise FleetOptError(f"plan file: {name} = {v!r} is not a valid value; re-create "
                                "the plan with `fleetopt plan --json PATH`")


def record_inputs(command: str, args: dict[str, Any], profiles, plan) -> PlanInputs:
    """The :class:`PlanInputs` of a ``fleetopt plan``/``solve`` call.

    ``args`` are the command function's keyword arguments (its ``locals()`` on entry);
    ``profiles`` the resolved profiles, first the one of ``--gpu``; ``plan`` the plan made
    (its workload name, and its solver status for the MILP).
    """
    from . import __version__
    from .scenario import Scenario

    if command not in COMMANDS:
        raise ValueError(f"command must be one of {COMMANDS}")
    a = args
    requested = [a["gpu"]] if command == "plan" or not a.get("gpus") else \
        [g.strip() for g in a["gpus"].split(",") if g.strip()]
    verify = solve = None
    if command == "plan":
        verify = VerifyOptions(bool(a["verify"]), int(a["verify_candidates"]),
                               int(a["verify_requests"]), str(a["verify_fidelity"]), int(a["seed"]))
        traffic = Traffic(float(a["rate"]), float(a["slo_ms"]), float(a["percentile"]),
                          float(a["peak_factor"]), a["peak_window_s"], a.get("tpot_ms"),
                          float(a.get("tpot_percentile", 99.0)))
    else:
        solve = SolveOptions(
            ",".join(absolute_if_file(g) for g in requested) if a.get("gpus") else None,
            int(a["pools"]), tuple(a["max_gpus"]), a["max_total_gpus"], a["budget"],
            str(a["objective"]), a["time_limit_s"], int(a["min_instances"]), str(a["mix"]))
        traffic = Traffic(float(a["rate"]), float(a["slo_ms"]), float(a["percentile"]),
                          tpot_ms=a.get("tpot_ms"),
                          tpot_percentile=float(a.get("tpot_percentile", 99.0)))
    return PlanInputs(
        command=command, package_version=__version__,
        workload=WorkloadInput.record(str(a["workload"]), plan.workload), traffic=traffic,
        gpu=absolute_if_file(str(a["gpu"])), model=a["model"], tp=a["tp"],
        profiles=tuple(ProfileInput.record(r, p) for r, p in zip(requested, profiles)),
        options=ModelOptions(int(a["long_context"]), float(a["gamma_max"]),
                             Scenario.gamma_steps, float(a["compressible"]),
                             float(a["rho_max"]), float(a["compression_ms"]),
                             bool(a["paper_compat"]), str(plan.service_model)),
        catalog=tuple(str(Path(c).expanduser().resolve()) for c in a["catalog"]),
        verify=verify, solve=solve,
        solver_status=None if not plan.solver else str(plan.solver.get("status")))


def options_beside_from(args: dict[str, Any], command_fn) -> list[str]:
    """The options given with ``--from`` (values other than their defaults): ``--from``
    takes every input from the plan file, so the caller refuses them rather than ignore
    them. ``command_fn`` is the typer command whose ``locals()`` ``args`` are."""
    import inspect

    given = []
    for name, param in inspect.signature(command_fn).parameters.items():
        if name in ("from_plan", "json_path"):
            continue
        default = getattr(param.default, "default", param.default)
        if args[name] != default:
            decls = getattr(param.default, "param_decls", None) or (f"--{name}",)
            given.append(decls[0])
    return given


def rerun_kwargs(from_plan: Path, command: str, args: dict[str, Any], command_fn,
                 warn: Callable[[str], None]) -> dict[str, Any]:
    """``fleetopt plan/solve --from``: the recorded arguments to call ``command_fn`` with.

    Options given beside ``--from`` are an error (the file gives every input); each input
    that changed since planning is passed to ``warn`` as one line."""
    given = options_beside_from(args, command_fn)
    if given:
        raise FleetOptError(f"--from {from_plan}: the plan file gives every input; drop "
                            f"{', '.join(given)} (only --json may go with --from)")
    recorded = read_inputs(from_plan, command)
    for note in recorded.change_notes():
        warn(note)
    return recorded.cli_kwargs()


def read_inputs(path: str | Path, command: str | None = None) -> PlanInputs:
    """The ``inputs`` record of a plan file; with ``command``, it must have been made by it."""
    from .plan import read_plan

    inputs = read_plan(path).inputs
    if inputs is None:
        raise FleetOptError(f"--from {path}: the plan file records no inputs (written before "
                            "plan files recorded them); plan again with the options")
    if command is not None and inputs.command != command:
        raise FleetOptError(f"--from {path}: made by `fleetopt {inputs.command}`; reproduce it "
                            f"with `fleetopt {inputs.command} --from {path}`")
    return inputs


def workload_spec(plan) -> str:
    """What to load for a plan's workload: the recorded built-in name or absolute path, else
    (plan files without ``inputs``) the workload name the plan carries."""
    inputs = getattr(plan, "inputs", None)
    return inputs.workload.spec if inputs is not None else plan.workload
