"""What-if sweeps: plan every combination of workloads, GPU profiles, long windows, rates,
SLOs and p_c, one CSV row per scenario; resumable and parallel.

- A :class:`SweepSpec` lists the values of each axis and the options every scenario shares.
- Scenarios that share moment tables (same workload, profile and long window: the tables do
  not depend on the rate, the SLO or p_c, docs/model.md §4) are planned together in
  :class:`SweepChunk` s, re-targeting one :class:`~fleetopt_milp.planner.PlanningTables`;
  a worker process also keeps the tables between chunks of the same group.
- Chunks run in this process, on local processes or on Dask
  (:func:`~fleetopt_milp.parallel.as_completed_map`, shared with the simulator).
- Each finished chunk is appended to the CSV in one write; a restart repairs a torn last
  line and skips every scenario whose key is already in the file. A ``.parquet`` output
  is written (atomically) from that CSV, kept beside it as ``OUT.parquet.csv``, at the end.

docs/reports.md describes the columns and the plots.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import FleetOptError, InfeasibleError
from .parallel import as_completed_map

__all__ = ["SweepSpec", "ScenarioPoint", "SweepChunk", "SweepRow", "SweepSummary",
           "parse_values", "run_sweep", "read_rows", "existing_keys", "checkpoint_path", "cost_by_rate",
           "cost_ttft_front"]


def _expand_range(item: str, option: str) -> list[float]:
    parts = item.split(":")
    try:
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise FleetOptError(f"{option} {item!r}: a range is START:STOP:STEP with numbers, e.g. "
                            "100:2000:20") from None
    if step <= 0 or stop < start:
        raise FleetOptError(f"{option} {item!r}: need STEP > 0 and STOP >= START")
    n = int(math.floor((stop - start) / step + 1e-9)) + 1
    if n > 100_000:
        raise FleetOptError(f"{option} {item!r}: {n:,} values; use a larger STEP")
    return [round(start + i * step, 9) for i in range(n)]


def parse_values(text: str, kind: type, option: str) -> tuple:
    """A comma list of values; numeric items may be ranges ``START:STOP:STEP`` (STOP
    included when it falls on a step). ``kind`` is ``str``, ``int`` or ``float``."""
    out: list = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if kind is str:
            out.append(item)
            continue
        vals = _expand_range(item, option) if ":" in item else [item]
        for v in vals:
            try:
                x = float(v)
            except ValueError:
                raise FleetOptError(f"{option} {item!r}: not a number") from None
            if kind is int and x != int(x):
                raise FleetOptError(f"{option} {item!r}: needs whole numbers (tokens)")
            out.append(int(x) if kind is int else x)
    if not out:
        raise FleetOptError(f"{option}: give at least one value")
    return tuple(dict.fromkeys(out))  # unique, in the order given


@dataclass(frozen=True)
class ScenarioPoint:
    """One scenario of a sweep: a value of every axis."""

    workload: str
    gpu: str
    long_context_tokens: int
    rate_rps: float
    slo_ms: float
    compressible_share: float


@dataclass(frozen=True)
class SweepSpec:
    """The axes of a sweep (every combination is planned) and the options all share."""

    workloads: tuple[str, ...]
    gpus: tuple[str, ...]
    long_contexts_tokens: tuple[int, ...]
    rates_rps: tuple[float, ...]
    slos_ms: tuple[float, ...]
    compressible_shares: tuple[float, ...]
    model: str | None = None
    tp: int | None = None
    percentile: float = 99.0
    gamma_max: float = 2.0
    rho_max: float = 0.85
    compression_latency_ms: float = 0.0
    paper_compat: bool = False
    catalog: tuple[str, ...] = ()
    service_model: str = "slot"
    tpot_ms: float | None = None
    tpot_percentile: float = 99.0

    @property
    def n_scenarios(self) -> int:
        return (len(self.workloads) * len(self.gpus) * len(self.long_contexts_tokens)
                * len(self.rates_rps) * len(self.slos_ms) * len(self.compressible_shares))

    def groups(self) -> list[tuple[str, str, int]]:
        """(workload, gpu, long window) combinations: scenarios that share moment tables."""
        return list(itertools.product(self.workloads, self.gpus, self.long_contexts_tokens))

    def points(self, group: tuple[str, str, int]) -> list[ScenarioPoint]:
        return [ScenarioPoint(*group, r, s, c) for r, s, c in itertools.product(
            self.rates_rps, self.slos_ms, self.compressible_shares)]

    def key(self, p: ScenarioPoint) -> str:
        """The row key: every input that defines the scenario, shared options included."""
        return "|".join(str(v) for v in (
            p.workload, p.gpu, self.model, self.tp, p.long_context_tokens, p.rate_rps,
            p.slo_ms, self.percentile, p.compressible_share, self.gamma_max, self.rho_max,
            self.compression_latency_ms, self.paper_compat, self.service_model, self.tpot_ms,
            self.tpot_percentile))

    def scenario(self, p: ScenarioPoint):
        """The :class:`~fleetopt_milp.scenario.Scenario` of a point (workload and profile
        from the per-process caches)."""
        from .scenario import Scenario

        return Scenario(workload=_workload(p.workload), profile=_profile(
            self.catalog, p.gpu, self.model, self.tp), rate_rps=p.rate_rps, slo_ms=p.slo_ms,
            percentile=self.percentile, long_context_tokens=p.long_context_tokens,
            gamma_max=self.gamma_max, compressible_share=p.compressible_share,
            rho_max=self.rho_max, compression_latency_ms=self.compression_latency_ms,
            paper_compat=self.paper_compat, service_model=self.service_model,
            tpot_ms=self.tpot_ms, tpot_percentile=self.tpot_percentile)

    def validate(self) -> None:
        """Every scenario is a valid question (one-line :class:`FleetOptError` otherwise)."""
        for g in self.groups():
            for p in self.points(g):
                self.scenario(p).validated()


@dataclass(frozen=True)
class SweepChunk:
    """Scenarios of one table group planned together by one worker."""

    spec: SweepSpec
    points: tuple[ScenarioPoint, ...]


@dataclass(frozen=True)
class SweepRow:
    """One scenario's cheapest fleet (a CSV row: the key, the point's axes, then the rest).
    ``status``: ``ok`` or ``infeasible`` (``message`` says why). ``boundary_tokens`` is -1
    for one homogeneous pool. ``ttft_ms``: the largest pool TTFT at the percentile;
    ``max_utilization`` likewise."""

    key: str
    point: ScenarioPoint
    status: str
    usd_per_hour: float
    instances: int
    gpus: int
    boundary_tokens: int
    gamma: float
    short_instances: int
    long_instances: int
    ttft_ms: float
    max_utilization: float
    homogeneous_usd_per_hour: float
    pool_routing_usd_per_hour: float
    saving_vs_homogeneous: float
    message: str


COLUMNS = ("key", *(f.name for f in fields(ScenarioPoint)),
           *(f.name for f in fields(SweepRow)[2:]))


@lru_cache(maxsize=16)
def _workload(spec: str):
    from .workload import load_workload

    return load_workload(spec)


@lru_cache(maxsize=64)
def _profile(catalog: tuple[str, ...], gpu: str, model: str | None, tp: int | None):
    from .hardware import resolve_profile

    return resolve_profile(_catalog(catalog), gpu, model, tp)


@lru_cache(maxsize=4)
def _catalog(catalog: tuple[str, ...]):
    from .hardware import load_catalog

    return load_catalog([Path(c) for c in catalog])


_TABLES: dict = {}


def _tables(scenario):
    """Moment tables kept per process between chunks of the same group (a few at most)."""
    from .planner import PlanningTables

    key = (scenario.workload.name, scenario.workload.source, scenario.profile,
           scenario.long_context_tokens, scenario.gamma_max, scenario.compression_latency_ms,
           scenario.paper_compat, scenario.service_model)
    if key not in _TABLES:
        if len(_TABLES) >= 4:
            _TABLES.clear()
        _TABLES[key] = PlanningTables(scenario)
    return _TABLES[key]


def _row(spec: SweepSpec, p: ScenarioPoint) -> SweepRow:
    from .planner import plan

    s = spec.scenario(p)
    base = dict(key=spec.key(p), point=p)
    try:
        pl = plan(s, _tables(s))
    except InfeasibleError as exc:
        return SweepRow(**base, status="infeasible", usd_per_hour=math.inf, instances=0, gpus=0,
                        boundary_tokens=-1, gamma=1.0, short_instances=0, long_instances=0,
                        ttft_ms=math.nan, max_utilization=math.nan,
                        homogeneous_usd_per_hour=math.inf, pool_routing_usd_per_hour=math.inf,
                        saving_vs_homogeneous=math.nan, message=" ".join(str(exc).split()))
    served = [q for q in pl.pools if q.instances > 0]
    two = len(pl.pools) == 2
    return SweepRow(
        **base, status="ok", usd_per_hour=pl.usd_per_hour, instances=pl.instances,
        gpus=pl.gpus, boundary_tokens=-1 if pl.boundary_tokens is None else pl.boundary_tokens,
        gamma=pl.gamma, short_instances=pl.pools[0].instances if two else 0,
        long_instances=pl.pools[-1].instances,
        ttft_ms=max((q.p99_ttft_ms for q in served), default=0.0),
        max_utilization=max((q.utilization for q in served), default=0.0),
        homogeneous_usd_per_hour=pl.baselines["homogeneous"].usd_per_hour,
        pool_routing_usd_per_hour=pl.baselines["pool_routing"].usd_per_hour,
        saving_vs_homogeneous=pl.saving_vs("homogeneous"), message="")


def run_chunk(chunk: SweepChunk) -> list[SweepRow]:
    """Plan every scenario of a chunk (runs in a worker)."""
    return [_row(chunk.spec, p) for p in chunk.points]


# ---- the CSV: atomic chunk appends, repair and resume --------------------------------------


def _csv_text(rows: list[SweepRow], header: bool) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    if header:
        w.writerow(COLUMNS)
    for r in rows:
        d = asdict(r)
        w.writerow([d["key"], *d.pop("point").values(), *list(d.values())[1:]])
    return buf.getvalue()


def _append(path: Path, text: str) -> None:
    """Append ``text`` in one write and flush it to disk (a crash tears at most this chunk,
    which the next run drops)."""
    with path.open("a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def existing_keys(path: Path) -> set[str]:
    """Keys of the complete rows already in ``path``; a torn last line (an interrupted
    append) is removed by rewriting the file atomically. A file with other columns is an
    error: a sweep never overwrites what it did not write."""
    if not path.exists() or path.stat().st_size == 0:
        return set()
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if next(csv.reader([lines[0]])) != list(COLUMNS):
        raise FleetOptError(f"--out {path}: exists and is not a sweep file of this version; "
                            "give another --out or remove it")
    good = [ln for ln in lines[1:] if ln.endswith("\n")
            and len(next(csv.reader([ln]), [])) == len(COLUMNS)]
    if len(good) != len(lines) - 1:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(lines[0] + "".join(good), encoding="utf-8")
        tmp.replace(path)
    return {next(csv.reader([ln]))[0] for ln in good}


def checkpoint_path(out: Path) -> Path:
    """The CSV a sweep appends to: ``out`` itself, or ``OUT.csv`` beside a ``.parquet``
    ``out`` (the Parquet file is written from it when the sweep ends)."""
    suffix = out.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise FleetOptError(f"--out {out}: give a .csv or .parquet file")
    return out if suffix == ".csv" else out.with_name(out.name + ".csv")


@dataclass(frozen=True)
class SweepSummary:
    """What a :func:`run_sweep` call did: scenarios in the sweep, found already written,
    planned now, and of those infeasible."""

    path: Path
    total: int
    skipped: int
    planned: int
    infeasible: int


def run_sweep(spec: SweepSpec, out: str | Path, *, workers: int = 1, scheduler=None,
              chunk_size: int | None = None,
              on_progress: Callable[[int, int], None] | None = None) -> SweepSummary:
    """Plan every scenario of ``spec`` not yet in the CSV ``out``, appending rows per chunk.

    ``workers`` local processes, or Dask with ``scheduler`` (address or Client).
    ``chunk_size``: scenarios per task (default: about 8 tasks per worker, at most 50).
    ``on_progress(done, total)`` is called after each chunk, counting skipped scenarios.
    A file that cannot be written is a one-line :class:`FleetOptError`.
    """
    try:
        return _run_sweep(spec, Path(out), workers, scheduler, chunk_size, on_progress)
    except OSError as exc:
        where = exc.filename or out
        raise FleetOptError(f"--out {out}: cannot write {where} ({exc.strerror}); choose a "
                            "file in a folder you can write to") from None


def _run_sweep(spec: SweepSpec, target: Path, workers: int, scheduler,
               chunk_size: int | None, on_progress) -> SweepSummary:
    """:func:`run_sweep` without the translation of file errors."""
    path = checkpoint_path(target)
    spec.validate()
    if path != target and target.exists() and not path.exists():  # resume from the Parquet
        path.parent.mkdir(parents=True, exist_ok=True)
        _append(path, read_rows(target).to_csv(index=False, lineterminator="\n"))
    done = existing_keys(path)
    todo = [[p for p in spec.points(g) if spec.key(p) not in done] for g in spec.groups()]
    n_todo = sum(map(len, todo))
    if chunk_size is not None and chunk_size < 1:
        raise FleetOptError(f"chunk_size={chunk_size}: need at least 1 scenario per task "
                            "(--chunk-size)")
    n_workers = 1 if scheduler is None and workers <= 1 else max(workers, 2)
    size = chunk_size or max(1, min(50, math.ceil(n_todo / (8 * n_workers))))
    chunks = [SweepChunk(spec, tuple(pts[i:i + size])) for pts in todo
              for i in range(0, len(pts), size)]
    if not path.exists() or path.stat().st_size == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
        _append(path, _csv_text([], header=True))
    skipped = spec.n_scenarios - n_todo
    count, infeasible = skipped, 0
    if on_progress:
        on_progress(count, spec.n_scenarios)
    for rows in as_completed_map(run_chunk, chunks, workers, scheduler):
        _append(path, _csv_text(rows, header=False))
        count += len(rows)
        infeasible += sum(r.status != "ok" for r in rows)
        if on_progress:
            on_progress(count, spec.n_scenarios)
    if path != target:
        tmp = target.with_name(f".{target.name}.tmp")
        read_rows(path).to_parquet(tmp, index=False)
        tmp.replace(target)
    return SweepSummary(target, spec.n_scenarios, skipped, n_todo, infeasible)


# ---- reading rows back and the data of the sweep's figures ---------------------------------


def read_rows(path: str | Path):
    """A sweep's rows (CSV or Parquet) as a pandas DataFrame (infinite costs as ``inf``)."""
    import pandas as pd

    if Path(path).suffix.lower() == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, keep_default_na=False, na_values=["nan"],
                       dtype={"workload": str, "gpu": str, "message": str})


def _baseline_slice(rows, spec: SweepSpec, free: tuple[str, ...]):
    """Feasible rows at the first listed value of every axis not in ``free``."""
    first = {"workload": spec.workloads[0], "gpu": spec.gpus[0],
             "long_context_tokens": spec.long_contexts_tokens[0], "rate_rps": spec.rates_rps[0],
             "slo_ms": spec.slos_ms[0], "compressible_share": spec.compressible_shares[0]}
    mask = rows["status"] == "ok"
    for col, val in first.items():
        if col not in free:
            mask &= np.isclose(rows[col], val) if isinstance(val, float | int) else \
                rows[col] == val
    return rows[mask]


def cost_by_rate(rows, spec: SweepSpec):
    """:class:`~fleetopt_milp.plots.CostByRate`: $/hour against rate per GPU profile, the
    other axes at their first listed values."""
    from .plots import CostByRate

    sel = _baseline_slice(rows, spec, ("gpu", "rate_rps"))
    return CostByRate({g: (grp["rate_rps"].to_numpy(float), grp["usd_per_hour"].to_numpy(float))
                       for g, grp in sel.groupby("gpu")})


def cost_ttft_front(spec: SweepSpec):
    """:class:`~fleetopt_milp.plots.CostTtftFront` over boundaries: for every swept SLO (the
    other axes at their first listed values), the cheapest fleet at each candidate boundary
    B (best gamma there; the homogeneous fleet as B = -1), from
    :func:`~fleetopt_milp.planner.candidate_plans`. ``front`` marks the fleets no other is
    both faster and cheaper than."""
    from .planner import candidate_plans
    from .plots import CostTtftFront

    pts: list[tuple[float, float, int]] = []
    for slo in spec.slos_ms:
        s = spec.scenario(ScenarioPoint(spec.workloads[0], spec.gpus[0],
                                        spec.long_contexts_tokens[0], spec.rates_rps[0], slo,
                                        spec.compressible_shares[0]))
        seen: set[int] = set()
        with np.errstate(invalid="ignore", divide="ignore"):
            cands = candidate_plans(s, 1 << 30, _tables(s))  # cheapest first
        for pl in cands:
            b = -1 if pl.boundary_tokens is None else pl.boundary_tokens
            if b not in seen:
                seen.add(b)
                pts.append((max(q.p99_ttft_ms for q in pl.pools if q.instances > 0),
                            pl.usd_per_hour, b))
    ttft, usd, bound = (np.array(c) for c in zip(*pts))
    order = np.lexsort((usd, ttft))
    front = np.zeros(len(ttft), dtype=bool)
    best = math.inf
    for i in order:
        if usd[i] < best:
            front[i], best = True, usd[i]
    return CostTtftFront(ttft, usd, bound.astype(int), front)
