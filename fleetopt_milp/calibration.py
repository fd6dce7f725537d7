"""Calibrate a serving profile from measurements a user can make (docs/engine.md §3).

Two kinds of input, both reduced to rows of one linear model of engine time:

- **Benchmark runs**: the result JSON of vLLM's ``benchmark_serving.py --save-result`` (SGLang's
  ``bench_serving`` writes the same shape) for a *burst* run (``request_rate`` = ``inf``:
  every request arrives at t = 0). The run is replayed through the engine's schedule
  (:func:`replay_schedule`): the server takes the burst in (``ingest_ms_per_request`` per
  request, the whole burst queued before the engine's first step), then prefill-first steps of
  up to ``prefill_budget_tokens`` prompt tokens, then decode steps of the live batch in groups
  of ``scheduler_steps`` (vLLM's ``--num-scheduler-steps``). With the whole burst queued at
  once the schedule does not depend on the step times, so each request's TTFT and decode time
  are *linear* in the step-time parameters and the ingest time; each gives one observation
  row.
- **Engine steps**: a CSV with the header ``batch,context_tokens,prefill_tokens,step_ms`` (one
  engine iteration per row; ``batch`` decoding sequences reading ``context_tokens`` KV tokens
  in all, plus ``prefill_tokens`` prompt tokens; ``step_ms`` its duration).

The step time is the roofline's, with efficiency factors (docs/engine.md §1)::

    step_ms = W + s * n + (H / C_cal) * context_tokens + t_pf * prefill_tokens
    W = weight_read_floor / eta_w      s = token_compute_floor / eta_c
    H = kv_read_floor / eta_kv         t_pf = token_compute_floor / eta_pf

and every TTFT pays a fixed ``ttft_overhead_ms``. Floors are at peak bandwidth and peak dense
FP16 FLOPS (:func:`~fleetopt_milp.hardware.roofline_floor_ms`). The fit is robust least
squares (``scipy.optimize.least_squares``, soft-L1 loss) on relative residuals, in the
reciprocal efficiencies, where the model is linear. ``eta_kv`` is fitted only from step CSVs
(short benchmark prompts leave it unidentified); otherwise it equals ``eta_w``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import FleetOptError
from .hardware import GpuSpec, LlmSpec, Profile, roofline_floor_ms, roofline_profile

__all__ = ["BenchmarkRun", "BenchmarkServer", "StepTable", "Schedule", "CalibrationFit",
           "read_benchmark",
           "read_steps", "replay_schedule", "burst_prediction", "BurstPrediction",
           "calibrate", "profile_toml", "write_profile_toml", "token_compute_floor_ms"]

#: Columns of the model: W, s, H / C_cal, t_pf (ms per unit), TTFT overhead (ms), the
#: benchmark server's ingest time (ms per other request of the burst).
_COLS = ("w", "seq", "kv", "pf", "overhead", "ingest")
#: Prompt tokens of one prefill step in the replay: vLLM's default ``max_num_batched_tokens``
#: without chunked prefill, ``max(max_model_len, 2048)``, at a ``--max-model-len`` <= 2048.
DEFAULT_PREFILL_BUDGET_TOKENS = 2048
#: The chunked-prefill step of calibrated profiles (vLLM's max_num_batched_tokens with
#: chunked prefill), tokens.
DEFAULT_CHUNK_TOKENS = 1024
#: Prefill compute efficiency assumed when the inputs hold no prefill (step CSVs without
#: prefill tokens).
UNIDENTIFIED_PREFILL_EFFICIENCY = 0.5
STEP_COLUMNS = ("batch", "context_tokens", "prefill_tokens", "step_ms")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchmarkRun:
    """One burst benchmark run: per request (arrival order) its prompt and completion
    lengths (tokens), TTFT (s, 0 for requests that returned no token) and decode time (s,
    the sum of its streamed gaps); ``duration_s`` of the whole run; the file's sha256."""

    path: str
    sha256: str
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    ttft_s: np.ndarray
    decode_s: np.ndarray
    duration_s: float
    itl_entries: int = 0

    @property
    def tokens_per_chunk(self) -> float:
        """Output tokens after the first per streamed gap (1 when every token is streamed
        alone; about 10 for vLLM's multi-step scheduling with 10 steps)."""
        tokens = int(np.maximum(self.output_tokens - 1, 0).sum())
        return tokens / self.itl_entries if self.itl_entries else 1.0

    @property
    def scheduler_steps(self) -> int:
        """Decode steps per scheduler call of the measured engine, inferred from the tokens
        per streamed chunk (vLLM streams a multi-step group's tokens together)."""
        return max(1, int(round(self.tokens_per_chunk)))

    @property
    def served(self) -> np.ndarray:
        """Requests that returned at least one token (empty completions are excluded)."""
        return (self.output_tokens > 0) & (self.ttft_s > 0)

    @property
    def median_tpot_ms(self) -> float:
        """Median over requests with >= 2 tokens of decode time / (output - 1), ms."""
        keep = self.served & (self.output_tokens > 1)
        return float(np.median(self.decode_s[keep] / (self.output_tokens[keep] - 1)) * 1e3)

    @property
    def median_ttft_ms(self) -> float:
        """Median TTFT of the requests that returned a token, ms."""
        return float(np.median(self.ttft_s[self.served]) * 1e3)

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens over the run's duration."""
        return float(self.output_tokens.sum() / self.duration_s)


def _field(d: dict, path: Path, key: str, kind: type | tuple[type, ...]):
    if key not in d:
        raise FleetOptError(f"{path}: field {key!r} is missing; give the JSON that "
                            "benchmark_serving.py --save-result writes")
    v = d[key]
    if not isinstance(v, kind) or isinstance(v, bool):
        raise FleetOptError(f"{path}: field {key!r} has the wrong type ({type(v).__name__})")
    return v


def _numbers(path: Path, key: str, values: list, n: int, integer: bool) -> np.ndarray:
    if len(values) != n:
        raise FleetOptError(f"{path}: field {key!r} has {len(values)} entries, expected {n} "
                            "(one per request)")
    ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
             and v >= 0 and (not integer or float(v).is_integer()) for v in values)
    if not ok:
        what = "non-negative integers" if integer else "non-negative numbers"
        raise FleetOptError(f"{path}: field {key!r} must hold {what}")
    return np.asarray(values, dtype=np.int64 if integer else float)


def read_benchmark(path: str | Path) -> BenchmarkRun:
    """Read and check one ``benchmark_serving.py --save-result`` JSON file.

    Only burst runs (``request_rate`` ``"inf"``) can be replayed. Raises
    :class:`FleetOptError` naming the file and the field for malformed or inconsistent files
    (wrong lengths, totals that disagree with the arrays, more streamed gaps than tokens).
    """
    p = Path(path)
    try:
        d = json.loads(p.read_text())
    except OSError as exc:
        raise FleetOptError(f"{p}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise FleetOptError(f"{p}: line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(d, dict):
        raise FleetOptError(f"{p}: expected a JSON object of benchmark results")
    rate = d.get("request_rate", "inf")
    if not (rate == "inf" or (isinstance(rate, float) and math.isinf(rate))):
        raise FleetOptError(f"{p}: field 'request_rate' is {rate!r}; only burst runs "
                            "(--request-rate inf) can be replayed, or give a step CSV")
    lin = _field(d, p, "input_lens", list)
    n = len(lin)
    if n == 0:
        raise FleetOptError(f"{p}: field 'input_lens' is empty; the run has no requests")
    lin = _numbers(p, "input_lens", lin, n, True)
    lout = _numbers(p, "output_lens", _field(d, p, "output_lens", list), n, True)
    ttft = _numbers(p, "ttfts", _field(d, p, "ttfts", list), n, False)
    itls = _field(d, p, "itls", list)
    if len(itls) != n:
        raise FleetOptError(f"{p}: field 'itls' has {len(itls)} entries, expected {n}")
    decode = np.zeros(n)
    entries = 0
    for i, gaps in enumerate(itls):
        if not isinstance(gaps, list):
            raise FleetOptError(f"{p}: field 'itls' entry {i} must be a list of gaps (s)")
        g = _numbers(p, f"itls[{i}]", gaps, len(gaps), False)
        if g.size > max(int(lout[i]) - 1, 0):
            raise FleetOptError(f"{p}: field 'itls' entry {i} has {g.size} gaps for "
                                f"{int(lout[i])} output tokens; the file is inconsistent")
        decode[i] = g.sum()
        entries += g.size
    bad = np.flatnonzero((lout > 0) & (ttft <= 0))
    if bad.size:
        raise FleetOptError(f"{p}: field 'ttfts' is 0 for request {int(bad[0])}, which "
                            f"returned {int(lout[bad[0]])} tokens")
    for key, arr in (("total_input_tokens", lin), ("total_output_tokens", lout)):
        if key in d and d[key] != int(arr.sum()):
            raise FleetOptError(f"{p}: field {key!r} = {d[key]} disagrees with the per-request "
                                f"lengths (sum {int(arr.sum())})")
    duration = float(_field(d, p, "duration", (int, float)))
    if not duration > 0:
        raise FleetOptError(f"{p}: field 'duration' must be positive, got {duration}")
    return BenchmarkRun(str(p), _sha256(p), lin, lout, ttft, decode, duration, entries)


@dataclass(frozen=True)
class StepTable:
    """Measured engine steps (one row per iteration) and the file's sha256."""

    path: str
    sha256: str
    batch: np.ndarray
    context_tokens: np.ndarray
    prefill_tokens: np.ndarray
    step_ms: np.ndarray


def read_steps(path: str | Path) -> StepTable:
    """Read a step CSV with the header ``batch,context_tokens,prefill_tokens,step_ms``.

    Raises :class:`FleetOptError` naming the file, the row and the column at fault.
    """
    p = Path(path)
    try:
        rows = list(csv.reader(p.read_text().splitlines()))
    except OSError as exc:
        raise FleetOptError(f"{p}: cannot read ({exc.strerror})") from None
    if not rows or tuple(c.strip() for c in rows[0]) != STEP_COLUMNS:
        raise FleetOptError(f"{p}: the header must be {','.join(STEP_COLUMNS)}")
    vals = np.zeros((len(rows) - 1, 4))
    for r, row in enumerate(rows[1:], start=2):
        if len(row) != 4:
            raise FleetOptError(f"{p}: row {r} has {len(row)} columns, expected 4")
        for c, (key, cell) in enumerate(zip(STEP_COLUMNS, row, strict=True)):
            try:
                v = float(cell)
            except ValueError:
                raise FleetOptError(f"{p}: row {r}: field {key!r} is not a number "
                                    f"({cell!r})") from None
            if not math.isfinite(v) or v < 0 or (key == "step_ms" and v == 0):
                raise FleetOptError(f"{p}: row {r}: field {key!r} must be "
                                    f"{'positive' if key == 'step_ms' else '>= 0'}, got {cell}")
            vals[r - 2, c] = v
    if vals.shape[0] == 0:
        raise FleetOptError(f"{p}: no step rows after the header")
    empty = np.flatnonzero((vals[:, 0] == 0) & (vals[:, 2] == 0))
    if empty.size:
        raise FleetOptError(f"{p}: row {int(empty[0]) + 2}: a step with batch 0 and "
                            "prefill_tokens 0 does no work")
    return StepTable(str(p), _sha256(p), vals[:, 0], vals[:, 1], vals[:, 2], vals[:, 3])


# ---------------------------------------------------------------------------------------
# Replay of a burst through the engine's schedule
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """The step sequence of a replayed burst, as features of the linear step model.

    ``cum_features`` ``(steps + 1, 4)``: cumulative sums of (1, sequences in the step, the
    decoding ones' KV tokens, prefill tokens) after each step (row 0 = before the first). ``first_step`` and
    ``last_step`` per request: the step that produced its first and its last token (-1 for
    requests that returned none).
    """

    cum_features: np.ndarray
    first_step: np.ndarray
    last_step: np.ndarray


def replay_schedule(input_tokens, output_tokens,
                    prefill_budget_tokens: int = DEFAULT_PREFILL_BUDGET_TOKENS,
                    max_batch: int = 1024, scheduler_steps: int = 1,
                    queue_order=None, output_lag_steps: int = 0) -> Schedule:
    """The schedule of a burst (all requests queued at once, in ``queue_order``, default the
    index order) in a prefill-first continuous-batching engine (vLLM's default scheduler
    without chunked prefill, docs/engine.md §3).

    While requests wait, a step prefills the next prompts in order up to
    ``prefill_budget_tokens`` tokens (at least one prompt) and ``max_batch`` running
    sequences; each prefilled request gets its first token at the end of that step (a
    request of 0 output tokens leaves then). Otherwise the running sequences decode in a
    group of ``scheduler_steps`` steps (vLLM's multi-step scheduling): every step decodes one
    token for each of them, reading its prompt plus the tokens generated so far, and the
    group's tokens reach the client at its end, where the finished sequences leave (a
    sequence that finishes inside a group stays in its steps to the end). With
    ``output_lag_steps`` = 1 a prefill step's first tokens reach the client at the end of the
    next step (vLLM's asynchronous output processing handles a step's outputs while the next
    one runs). KV capacity is assumed to hold the burst.
    """
    if scheduler_steps < 1:
        raise FleetOptError(f"scheduler_steps {scheduler_steps}: must be >= 1")
    lin = np.asarray(input_tokens, dtype=np.int64)
    lout = np.asarray(output_tokens, dtype=np.int64)
    n = lin.size
    queue = np.arange(n) if queue_order is None else np.asarray(queue_order, dtype=np.int64)
    if queue.shape != (n,) or not np.array_equal(np.sort(queue), np.arange(n)):
        raise FleetOptError("queue_order must be a permutation of the request indices")
    first = np.full(n, -1, dtype=np.int64)
    last = np.full(n, -1, dtype=np.int64)
    feats: list[tuple[float, float, float, float]] = []
    gen = np.zeros(n, dtype=np.int64)
    running: list[int] = []
    nxt = 0
    while nxt < n or running:
        if nxt < n and len(running) < max_batch:
            tokens, seqs, step = 0, 0, len(feats)
            while nxt < n and len(running) < max_batch and (
                    tokens == 0 or tokens + lin[queue[nxt]] <= prefill_budget_tokens):
                r = int(queue[nxt])
                tokens += int(lin[r])
                seqs += 1
                if lout[r] > 0:
                    first[r] = step
                    gen[r] = 1
                    if lout[r] == 1:
                        last[r] = step
                    else:
                        running.append(r)
                nxt += 1
            feats.append((1.0, float(seqs), 0.0, float(tokens)))
            continue
        idx = np.asarray(running)
        for _ in range(scheduler_steps):
            feats.append((1.0, float(idx.size), float(np.sum(lin[idx] + gen[idx])), 0.0))
            gen[idx] += 1
        done = gen[idx] >= lout[idx]
        last[idx[done]] = len(feats) - 1
        running = [int(r) for r in idx[~done]]
    cum = np.vstack([np.zeros((1, 4)), np.cumsum(np.asarray(feats), axis=0)])
    if output_lag_steps:  # a prefill step's first tokens reach the client steps later
        nsteps = len(feats)
        has = first >= 0
        first = np.where(has, np.minimum(first + output_lag_steps, nsteps - 1), first)
        last = np.where(has, np.maximum(last, first), last)
    return Schedule(cum, first, last)


@dataclass(frozen=True)
class BenchmarkServer:
    """How the measured server fed and scheduled a burst (docs/engine.md §3).

    ``ingest_ms_per_request``: the time the server (HTTP, tokenizer, hand-off to the engine)
    takes per request of a burst: the engine's first step starts after it has taken in the
    other ``N - 1`` requests, so every TTFT of a burst of ``N`` carries ``ingest (N - 1)``
    (a lone request's own ingest is part of ``ttft_overhead_ms``).
    ``scheduler_steps``: decode steps per scheduler call (vLLM ``--num-scheduler-steps``);
    ``prefill_budget_tokens``: prompt tokens per prefill step; ``output_lag_steps``: steps
    between a prefill step and the client's first token (1 with asynchronous output
    processing). These describe the benchmark's server, not the step costs a plan uses;
    the calibrated profile's ``ttft_overhead_ms`` counts the output lag at an idle engine
    (``output_lag_steps`` weight reads ``W``), a real cost of every first token.
    """

    ingest_ms_per_request: float = 0.0
    scheduler_steps: int = 1
    prefill_budget_tokens: int = DEFAULT_PREFILL_BUDGET_TOKENS
    output_lag_steps: int = 0


def measured_queue_order(run: BenchmarkRun) -> np.ndarray:
    """The order in which the measured server prefilled a burst's requests: by measured TTFT,
    each empty completion (no TTFT) right after the served request before it in index order
    (the servers take a burst in runs of consecutive requests). Used only to fit."""
    served = run.served
    key = np.where(served, run.ttft_s, np.inf)
    prev = np.maximum.accumulate(np.where(served, np.arange(key.size), -1))
    nxt = np.flip(np.minimum.accumulate(np.flip(np.where(served, np.arange(key.size),
                                                         key.size))))
    donor = np.where(prev >= 0, prev, np.minimum(nxt, key.size - 1))
    key = np.where(served, key, key[donor] if served.any() else 0.0)
    return np.lexsort((np.arange(key.size), key))


def _run_rows(run: BenchmarkRun, budget: int, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Observation rows (feature vectors over :data:`_COLS`, observed ms) of one run: each
    served request's TTFT and (if it has >= 2 tokens) its decode time, replayed in the
    measured queue order (:func:`measured_queue_order`)."""
    sch = replay_schedule(run.input_tokens, run.output_tokens, budget,
                          scheduler_steps=run.scheduler_steps,
                          queue_order=measured_queue_order(run), output_lag_steps=lag)
    others = float(run.input_tokens.size - 1)
    rows, obs = [], []
    for i in np.flatnonzero(run.served):
        f = sch.cum_features[sch.first_step[i] + 1]
        rows.append([*f, 1.0, others])
        obs.append(run.ttft_s[i] * 1e3)
        if run.output_tokens[i] > 1 and run.decode_s[i] > 0:
            d = sch.cum_features[sch.last_step[i] + 1] - f
            rows.append([*d, 0.0, 0.0])
            obs.append(run.decode_s[i] * 1e3)
    return np.asarray(rows, dtype=float).reshape(-1, len(_COLS)), np.asarray(obs, dtype=float)


def _step_rows(t: StepTable) -> tuple[np.ndarray, np.ndarray]:
    x = np.column_stack([np.ones_like(t.batch), t.batch, t.context_tokens, t.prefill_tokens,
                         np.zeros_like(t.batch), np.zeros_like(t.batch)])
    return x, t.step_ms


# ---------------------------------------------------------------------------------------
# Fit
# ---------------------------------------------------------------------------------------


def token_compute_floor_ms(model: LlmSpec, gpu: GpuSpec, tp: int) -> float:
    """One token's forward compute at peak: ``2 * active_params / (tp * peak FLOPS)``, ms."""
    return 2.0 * model.active_params_b * 1e9 / (tp * gpu.dense_fp16_tflops * 1e12) * 1e3


@dataclass(frozen=True)
class CalibrationFit:
    """The fitted profile and how well it fits.

    ``eta_*``: fitted efficiencies of the weight read (W), per-sequence decode compute (s),
    KV read (H) and prefill compute (t_pf) against their peak floors; ``ttft_overhead_ms``;
    ``residuals``: relative residuals (model / observed - 1) of every observation;
    ``kv_fitted``: whether ``eta_kv`` was fitted (else it equals ``eta_w``); ``server``: the
    measured benchmark server's ingest time (fitted from bursts of two or more sizes, else
    0), scheduler steps and prefill budget (:class:`BenchmarkServer`), which the profile
    records in its notes only.
    """

    profile: Profile
    eta_w: float
    eta_seq: float
    eta_kv: float
    eta_prefill: float
    ttft_overhead_ms: float
    prefill_ms_per_token: float
    residuals: np.ndarray
    kv_fitted: bool
    server: BenchmarkServer = BenchmarkServer()

    @property
    def median_abs_error(self) -> float:
        return float(np.median(np.abs(self.residuals)))

    @property
    def p90_abs_error(self) -> float:
        return float(np.quantile(np.abs(self.residuals), 0.9))


def _solve(x: np.ndarray, y: np.ndarray, scale: np.ndarray, free: np.ndarray,
           fixed: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Robust fit of ``y ~ x @ (scale * u)`` on relative residuals; ``u`` = reciprocal
    efficiencies (>= 1), the overhead and the ingest time (>= 0, ``scale`` 1). ``fixed``
    holds the values of the columns not ``free``."""
    from scipy.optimize import least_squares

    xs = x * scale
    base = xs[:, ~free] @ fixed[~free]
    wt = np.ones_like(y) if weight is None else weight
    a = xs[:, free] / y[:, None] * wt[:, None]
    b = (1.0 - base / y) * wt
    lo = np.where(np.isin(np.array(_COLS)[free], ("overhead", "ingest")), 0.0, 1.0)
    # Start from ordinary least squares clipped into the bounds.
    u0 = np.maximum(np.linalg.lstsq(a, b, rcond=None)[0], lo) + 1e-6
    res = least_squares(lambda u: a @ u - b, u0, bounds=(lo, np.inf), loss="soft_l1",
                        f_scale=0.05, method="trf")
    out = fixed.copy()
    out[free] = res.x
    return out


def calibrate(runs: Sequence[BenchmarkRun], steps: Sequence[StepTable], gpu: GpuSpec,
              model: LlmSpec, tp: int, name: str, *,
              prefill_budget_tokens: int = DEFAULT_PREFILL_BUDGET_TOKENS,
              output_lag_steps: int = 0,
              chunk_tokens: int = DEFAULT_CHUNK_TOKENS,
              memory_utilization: float = 0.9, max_slots: int = 256,
              citation: str = "") -> CalibrationFit:
    """Fit a ``source = "calibrated"`` profile of ``model`` on ``tp`` x ``gpu`` (docs/engine.md §3).

    KV capacity, blocks and the batch cap come from :func:`roofline_profile` (at
    ``memory_utilization``); W, s, H, the per-token prefill compute ``t_pf``, the TTFT
    overhead and the benchmark server's ingest time from the fit (each input weighs the
    same). ``prefill_budget_tokens`` is the measured engine's prefill step and
    ``output_lag_steps`` its first-token lag (for the replay, :class:`BenchmarkServer`); the
    decode steps per scheduler call come from the runs themselves
    (:attr:`BenchmarkRun.scheduler_steps`); ``chunk_tokens`` the chunked-prefill step of the
    engine planned for
    (the profile's chunk: each adds ``H + t_pf chunk`` to the step it shares). Raises
    :class:`FleetOptError` when the inputs cannot identify the decode step.
    """
    if not runs and not steps:
        raise FleetOptError("calibrate: give at least one benchmark JSON or step CSV")
    base = roofline_profile(gpu, model, tp, memory_utilization=memory_utilization,
                            max_slots=max_slots, name=name)
    w_floor, h_floor = roofline_floor_ms(base, gpu, model)
    c_floor = token_compute_floor_ms(model, gpu, tp)
    blocks = ([_run_rows(r, prefill_budget_tokens, output_lag_steps) for r in runs]
              + [_step_rows(t) for t in steps])
    x = np.vstack([b[0] for b in blocks])
    y = np.concatenate([b[1] for b in blocks])
    # Each input weighs the same whatever its size: a row's weight is 1 / sqrt(rows of its
    # kind (TTFT, decode time, step) in its input), so one large burst does not decide the fit.
    weight = np.concatenate([
        1.0 / np.sqrt(np.where(b[0][:, 4] > 0, max((b[0][:, 4] > 0).sum(), 1),
                               max((b[0][:, 4] == 0).sum(), 1))) for b in blocks])
    keep = y > 0
    x, y, weight = x[keep], y[keep], weight[keep] / weight[keep].mean()
    decode_rows = (x[:, 1] > 0).sum()
    if decode_rows < 2 or np.ptp(x[:, 1] / np.maximum(x[:, 0], 1)) == 0:
        raise FleetOptError("calibrate: the inputs hold too few decode observations at "
                            "different batch sizes to separate W from the per-sequence cost; "
                            "add runs at other concurrencies")
    kv_fitted = bool(steps) and np.ptp(x[:, 2] / np.maximum(x[:, 0], 1)) > 0
    scale = np.array([w_floor, c_floor, h_floor / base.calib_tokens, c_floor, 1.0, 1.0])
    # Unidentified columns keep neutral values: no prefill rows -> roofline chunk rate;
    # no TTFT rows -> no overhead; bursts of one size -> no ingest time (it would be
    # collinear with the overhead).
    ttft_rows = x[:, 4] > 0
    free = np.array([True, True, kv_fitted, bool(np.any(x[:, 3] > 0)), bool(np.any(ttft_rows)),
                     bool(np.ptp(x[ttft_rows, 5]) > 0) if ttft_rows.any() else False])
    fixed = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0])
    if not kv_fitted:  # H shares W's bandwidth efficiency: fold its column into W's
        x = x.copy()
        x[:, 0] += x[:, 2] * scale[2] / scale[0]
        x[:, 2] = 0.0
    if not free[3]:
        fixed[3] = 1.0 / UNIDENTIFIED_PREFILL_EFFICIENCY
    u = _solve(x, y, scale, free, fixed, weight)
    if not kv_fitted:
        u[2] = u[0]
    eta = 1.0 / u[:4]
    w_ms, seq_ms = float(w_floor * u[0]), float(c_floor * u[1])
    h_ms = float(h_floor * u[2])
    pf_ms = float(c_floor * u[3])
    pred = (x * scale) @ u
    residuals = pred / y - 1.0
    # Every first token pays the output lag: at an idle engine, one weight read W per step.
    overhead_ms = float(u[4]) + (output_lag_steps * w_ms if runs else 0.0)
    sched = sorted({r.scheduler_steps for r in runs})
    server = BenchmarkServer(float(u[5]), sched[-1] if sched else 1, prefill_budget_tokens,
                             output_lag_steps)
    bench = (f"; benchmark server: {'/'.join(map(str, sched))} decode steps per scheduler "
             "call (the profile plans for one, as vLLM V1 and SGLang run: set "
             "scheduler_steps for a multi-step engine), and, not used in planning: ingest "
             f"{server.ingest_ms_per_request:.2f} ms per request"
             f"{'' if free[5] else ' (not identified)'}, "
             f"{prefill_budget_tokens}-token prefill steps, first tokens {output_lag_steps} "
             "step(s) late" if runs else "")
    prof = replace(
        base, w_ms=w_ms, h_ms=h_ms, seq_ms=seq_ms, chunk_tokens=chunk_tokens,
        prefill_ms_per_token=pf_ms, ttft_overhead_ms=overhead_ms, source="calibrated",
        citation=citation or "fleetopt calibrate (docs/engine.md section 3)",
        notes=(f"efficiencies against peak: weight read {eta[0]:.3f}, decode compute per "
               f"sequence {eta[1]:.3f}, KV read {eta[2]:.3f}"
               f"{'' if kv_fitted else ' (= weight read, not identified)'}, prefill compute "
               f"{eta[3]:.3f}{'' if free[3] else ' (not identified: assumed)'}; block and "
               f"slot limits from the roofline at {memory_utilization:.0%} of HBM{bench}"),
        inputs_sha256=tuple([r.sha256 for r in runs] + [t.sha256 for t in steps]),
        fit_median_error=float(np.median(np.abs(residuals))),
        fit_p90_error=float(np.quantile(np.abs(residuals), 0.9)),
        fit_observations=int(y.size))
    return CalibrationFit(prof, float(eta[0]), float(eta[1]), float(eta[2]), float(eta[3]),
                          overhead_ms, float(pf_ms), residuals, kv_fitted, server)


# ---------------------------------------------------------------------------------------
# Prediction of a burst from a profile (validation against held-out runs)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BurstPrediction:
    """A profile's prediction of a burst run: median TPOT and TTFT (ms, requests that
    returned tokens), output tokens per second over the run."""

    median_tpot_ms: float
    median_ttft_ms: float
    output_tokens_per_s: float


def burst_prediction(profile: Profile, run: BenchmarkRun,
                     server: BenchmarkServer = BenchmarkServer()) -> BurstPrediction:
    """Replay ``run``'s requests (lengths only, never its timings) through
    :func:`replay_schedule` with ``profile``'s step times and ``server``'s prefill budget,
    scheduler steps and ingest time (docs/engine.md §3).

    A prefill step costs ``W + s n + t_pf * tokens`` (``t_pf`` = the profile's
    ``prefill_ms_per_token``, or for profiles without one ``t_iter(1, C_cal) / chunk``); a
    decode step ``W + s n + H * context / C_cal``; each TTFT adds ``ttft_overhead_ms`` and the
    ingest of the burst's other requests, ``ingest_ms_per_request (N - 1)``. The replay times
    the output lag's steps itself, so the lag the overhead counts (``output_lag_steps W``,
    :class:`BenchmarkServer`) is taken back out of it.
    """
    sch = replay_schedule(run.input_tokens, run.output_tokens, server.prefill_budget_tokens,
                          scheduler_steps=server.scheduler_steps,
                          output_lag_steps=server.output_lag_steps)
    pf_ms = profile.prefill_ms_per_token or (
        float(profile.iter_time_s(1, profile.calib_tokens)) * 1e3 / profile.chunk_tokens)
    coef = np.array([profile.w_ms, profile.seq_ms, profile.h_ms / profile.calib_tokens, pf_ms])
    start_ms = (max(profile.ttft_overhead_ms - server.output_lag_steps * profile.w_ms, 0.0)
                + server.ingest_ms_per_request * (run.input_tokens.size - 1))
    t_ms = sch.cum_features @ coef
    served = run.served
    ttft = t_ms[sch.first_step[served] + 1] + start_ms
    two = served & (run.output_tokens > 1)
    tpot = (t_ms[sch.last_step[two] + 1] - t_ms[sch.first_step[two] + 1]) / (
        run.output_tokens[two] - 1)
    duration_s = (t_ms[-1] + start_ms) * 1e-3
    return BurstPrediction(float(np.median(tpot)), float(np.median(ttft)),
                           float(run.output_tokens.sum() / duration_s))


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------


def _toml_value(v) -> str:
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, float):
        return repr(round(v, 6))
    return str(v)


def profile_toml(profile: Profile) -> str:
    """The catalogue TOML of one profile (``[profiles."NAME"]``), loadable by
    :func:`~fleetopt_milp.hardware.load_catalog`."""
    keys = ("gpu", "model", "tp", "w_ms", "h_ms", "seq_ms", "prefill_ms_per_token",
            "ttft_overhead_ms", "scheduler_steps", "calib_tokens",
            "chunk_tokens", "kv_blocks", "block_tokens", "max_slots", "source", "citation",
            "notes", "inputs_sha256", "fit_median_error", "fit_p90_error", "fit_observations")
    lines = [f"[profiles.{json.dumps(profile.name)}]"]
    lines += [f"{k} = {_toml_value(getattr(profile, k))}" for k in keys
              if not (isinstance(getattr(profile, k), (str, tuple)) and not getattr(profile, k))]
    return "\n".join(lines) + "\n"


def write_profile_toml(profile: Profile, path: str | Path) -> None:
    """Write :func:`profile_toml` to ``path`` atomically (temporary file, then rename)."""
    p = Path(path)
    if p.suffix != ".toml":
        raise FleetOptError(f"--out {p}: the profile file must end in .toml")
    from .files import write_text_atomic

    write_text_atomic(p, profile_toml(profile), "profile file")
