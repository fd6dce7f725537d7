"""Workloads: joint (input, output) token distributions and arrival traces.

Implements docs/model.md section 1 ("Workload"):

- A request has ``L_in`` input (prompt) tokens and ``L_out`` output (generated) tokens; its
  context footprint is ``L = L_in + L_out`` tokens.
- A :class:`Workload` is a *joint* distribution of ``(L_in, L_out)`` held as weighted classes,
  either an empirical sample from a trace (``kind="trace"``) or a CDF of the total ``L``
  split as the paper does (``kind="cdf"``, paper compatibility mode).
- ``F(x)`` = fraction of requests with ``L <= x`` (:meth:`Workload.cdf`).
- A :class:`Trace` keeps the requests of a timestamped source in arrival order so the
  simulator can replay them.

File readers and the built-in workloads (``load_workload``, ``builtin_workloads``,
``data_dir``) live in :mod:`fleetopt_milp.workload_files` and are importable from here.

Zero output tokens: a request that generated 0 tokens still had to produce its first token
(TTFT needs one), so trace rows with 0 output tokens are read as ``output_tokens = max(out, 1)``.
This is counted and reported with a :class:`UserWarning`; none of the shipped files has such
rows. Zero input tokens and negative lengths are errors.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from .errors import WorkloadError

__all__ = [
    "CDF_LAST_FRACTION_TOLERANCE",
    "Trace",
    "Workload",
    "paper_split",
    "workload_from_cdf",
    "workload_from_requests",
]

_FILES = ("DATA_DIR_ENV", "WORKLOAD_FORMATS", "builtin_files", "builtin_workloads", "data_dir",
          "load_workload")


def __getattr__(name: str):
    """The file readers (:mod:`fleetopt_milp.workload_files`) load on first use."""
    if name in _FILES:
        from . import workload_files

        return getattr(workload_files, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


CDF_LAST_FRACTION_TOLERANCE = 1e-6
"""A CDF's last cumulative fraction may differ from 1 by at most this much; within it the
fractions are divided by the last one (renormalised), beyond it the file is rejected."""

MAX_CDF_TOKENS = 1 << 24
"""Largest CDF breakpoint accepted (16,777,216 tokens): the CDF is expanded into one class per
integer length, so the breakpoint bounds memory (about 24 bytes per token of range)."""

# --------------------------------------------------------------------------------------------
# helpers for immutable arrays
# --------------------------------------------------------------------------------------------


def _frozen(values: Any, dtype: type, what: str) -> np.ndarray:
    """A read-only 1-D copy of ``values`` as ``dtype``; integer dtypes reject fractions."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise WorkloadError(f"{what} must be a 1-D array, got shape {arr.shape}")
    if np.issubdtype(dtype, np.integer):
        if arr.dtype.kind == "f":
            if arr.size and not (np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
                raise WorkloadError(f"{what} must hold whole token counts")
        elif arr.dtype.kind not in "iub" and arr.size:
            raise WorkloadError(f"{what} must hold integers, got dtype {arr.dtype}")
    out = np.array(arr, dtype=dtype, copy=True)
    out.setflags(write=False)
    return out


def paper_split(total_tokens: Any) -> tuple[np.ndarray, np.ndarray]:
    """Split total lengths ``L`` (tokens) into ``(L_in, L_out)`` as the FleetOpt paper does.

    docs/model.md §1 (paper compatibility mode), identical to the paper's simulator
    (``fleet_sim.workload.synthetic.CdfWorkload.sample_request``)::

        L_in  = max(1, floor(0.8 L))
        L_out = max(1, L - L_in)

    computed in exact integer arithmetic (``floor(0.8 L) = (4 L) // 5``). So ``L = 1`` gives
    ``(1, 1)`` (two tokens in total), ``L = 10`` gives ``(8, 2)``, ``L = 4097`` gives
    ``(3277, 820)``. Returns two int64 arrays shaped like ``total_tokens``.
    """
    total = np.asarray(total_tokens, dtype=np.int64)
    if np.any(total < 1):
        raise WorkloadError("paper_split: total lengths must be >= 1 token")
    l_in = np.maximum(1, (4 * total) // 5)
    l_out = np.maximum(1, total - l_in)
    return l_in, l_out


def _merge_classes(
    input_tokens: np.ndarray, output_tokens: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge equal ``(input, output)`` pairs (summing weights); sort by total, ties by input."""
    if input_tokens.size == 0:
        return input_tokens, output_tokens, weights
    pairs = np.stack([input_tokens, output_tokens], axis=1)
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    merged = np.bincount(inverse.ravel(), weights=weights, minlength=len(uniq))
    order = np.argsort(uniq[:, 0] + uniq[:, 1], kind="stable")  # np.unique sorted by input
    return uniq[order, 0].copy(), uniq[order, 1].copy(), merged[order]


# --------------------------------------------------------------------------------------------
# Trace
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests in arrival order, for replay in the simulator (docs/model.md §1, "Arrivals").

    Attributes:
        arrival_s: float64 arrival times in seconds since the first request, non-decreasing
            (several requests may share a timestamp).
        input_tokens: int64 prompt lengths in tokens, each >= 1.
        output_tokens: int64 generated lengths in tokens, each >= 1 (trace rows with 0 output
            tokens are read as 1; see the module docstring).

    The arrays are read-only copies. Instances compare and hash by identity.
    """

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __post_init__(self) -> None:
        arrival = _frozen(self.arrival_s, np.float64, "Trace.arrival_s")
        inp = _frozen(self.input_tokens, np.int64, "Trace.input_tokens")
        out = _frozen(self.output_tokens, np.int64, "Trace.output_tokens")
        if not (arrival.size == inp.size == out.size):
            raise WorkloadError(
                f"Trace: arrival_s, input_tokens and output_tokens have different lengths "
                f"({arrival.size}, {inp.size}, {out.size})"
            )
        if arrival.size == 0:
            raise WorkloadError("Trace: needs at least one request")
        if not np.all(np.isfinite(arrival)):
            raise WorkloadError("Trace: arrival_s must be finite")
        if np.any(np.diff(arrival) < 0):
            raise WorkloadError("Trace: arrival_s must be non-decreasing (arrival order)")
        if np.any(inp < 1) or np.any(out < 1):
            raise WorkloadError("Trace: input_tokens and output_tokens must be >= 1")
        object.__setattr__(self, "arrival_s", arrival)
        object.__setattr__(self, "input_tokens", inp)
        object.__setattr__(self, "output_tokens", out)

    @property
    def n_requests(self) -> int:
        """Number of requests."""
        return int(self.arrival_s.size)

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last arrival."""
        return float(self.arrival_s[-1] - self.arrival_s[0])

    @property
    def mean_rate_rps(self) -> float:
        """Mean arrival rate in requests per second: ``n_requests / duration_s``.

        ``inf`` when every request arrives at the same instant (``duration_s == 0``).
        """
        duration = self.duration_s
        return self.n_requests / duration if duration > 0 else math.inf

    def busiest_window_rate_rps(self, window_s: float) -> float:
        """Peak arrival rate (req/s): the most arrivals in any window ``[t, t + window_s)``,
        divided by ``window_s`` (seconds).

        Exact over all sliding windows: the maximum is attained by a window starting at an
        arrival, so ``count_i = #{j : a_i <= a_j < a_i + window_s}`` via ``searchsorted``.
        A window longer than the trace counts every request.
        """
        if not (math.isfinite(window_s) and window_s > 0):
            raise WorkloadError(f"busiest_window_rate_rps: window_s must be > 0 s, got {window_s}")
        a = self.arrival_s
        ends = np.searchsorted(a, a + window_s, side="left")
        counts = ends - np.arange(a.size)
        return float(counts.max()) / window_s

    def scaled_to_rate(self, rate_rps: float) -> Trace:
        """The same requests with arrival times stretched or compressed so the mean rate is
        ``rate_rps`` (req/s). Inter-arrival times are all multiplied by
        ``mean_rate_rps / rate_rps``, so burstiness (inter-arrival CV, peak/mean) is kept;
        the first arrival is at 0 s.
        """
        if not (math.isfinite(rate_rps) and rate_rps > 0):
            raise WorkloadError(f"scaled_to_rate: rate_rps must be > 0 req/s, got {rate_rps}")
        if self.duration_s <= 0:
            raise WorkloadError(
                "scaled_to_rate: every request arrives at the same instant, so the trace has "
                "no rate to scale; use a trace spanning some time"
            )
        factor = self.mean_rate_rps / rate_rps
        arrival = (self.arrival_s - self.arrival_s[0]) * factor
        return Trace(arrival, self.input_tokens, self.output_tokens)


# --------------------------------------------------------------------------------------------
# Workload
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Workload:
    """A joint distribution of (input, output) tokens as weighted classes (docs/model.md §1).

    Classes are sorted by total tokens ``input + output`` ascending (ties in any order);
    class ``i`` is a request with ``input_tokens[i]`` prompt tokens and ``output_tokens[i]``
    generated tokens, drawn with probability ``weights[i]``.

    Attributes:
        name: short name (a built-in name or the file's stem).
        source: the file path(s) read, or a description.
        kind: ``"trace"`` (empirical sample, joint lengths kept) or ``"cdf"`` (total-length
            CDF, split 80/20 as the paper does).
        input_tokens: int64 prompt tokens per class, >= 1.
        output_tokens: int64 generated tokens per class, >= 1.
        weights: float64 probability of each class, >= 0, summing to 1 (within 1e-9).
        breakpoints_tokens: the CDF breakpoints (tokens) for ``kind="cdf"``; the planner uses
            them as candidate pool boundaries. Empty for traces.
        trace: the arrival-ordered requests when the source has timestamps, else ``None``.

    The arrays are read-only copies. Instances compare and hash by identity.
    """

    name: str
    source: str
    kind: str
    input_tokens: np.ndarray
    output_tokens: np.ndarray
    weights: np.ndarray
    breakpoints_tokens: tuple[int, ...] = ()
    trace: Trace | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("trace", "cdf"):
            raise WorkloadError(f"Workload.kind must be 'trace' or 'cdf', got {self.kind!r}")
        inp = _frozen(self.input_tokens, np.int64, "Workload.input_tokens")
        out = _frozen(self.output_tokens, np.int64, "Workload.output_tokens")
        w = _frozen(self.weights, np.float64, "Workload.weights")
        if not (inp.size == out.size == w.size):
            raise WorkloadError(
                f"Workload {self.name!r}: input_tokens, output_tokens and weights have "
                f"different lengths ({inp.size}, {out.size}, {w.size})"
            )
        if inp.size == 0:
            raise WorkloadError(f"Workload {self.name!r}: needs at least one class")
        if np.any(inp < 1) or np.any(out < 1):
            raise WorkloadError(f"Workload {self.name!r}: token counts must be >= 1")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise WorkloadError(f"Workload {self.name!r}: weights must be finite and >= 0")
        if abs(float(w.sum()) - 1.0) > 1e-9:
            raise WorkloadError(f"Workload {self.name!r}: weights sum to {float(w.sum())!r}, not 1")
        if np.any(np.diff(inp + out) < 0):
            raise WorkloadError(
                f"Workload {self.name!r}: classes must be sorted by total tokens ascending"
            )
        bps = tuple(int(b) for b in self.breakpoints_tokens)
        if any(b2 <= b1 for b1, b2 in zip(bps, bps[1:], strict=False)) or (bps and bps[0] < 1):
            raise WorkloadError(
                f"Workload {self.name!r}: breakpoints_tokens must be positive and increasing"
            )
        object.__setattr__(self, "input_tokens", inp)
        object.__setattr__(self, "output_tokens", out)
        object.__setattr__(self, "weights", w)
        object.__setattr__(self, "breakpoints_tokens", bps)

    # ---- basic properties -------------------------------------------------------------------

    @property
    def n_classes(self) -> int:
        """Number of (input, output) classes."""
        return int(self.weights.size)

    @cached_property
    def total_tokens(self) -> np.ndarray:
        """int64 context footprint ``L = input + output`` (tokens) per class, ascending."""
        total = self.input_tokens + self.output_tokens
        total.setflags(write=False)
        return total

    @cached_property
    def max_total_tokens(self) -> int:
        """Largest total length (tokens) of any class with positive weight."""
        positive = np.flatnonzero(self.weights > 0)
        return int(self.total_tokens[positive[-1]])

    @cached_property
    def mean_input_tokens(self) -> float:
        """Mean prompt length ``E[L_in]`` in tokens."""
        return float(np.dot(self.weights, self.input_tokens))

    @cached_property
    def mean_output_tokens(self) -> float:
        """Mean generated length ``E[L_out]`` in tokens."""
        return float(np.dot(self.weights, self.output_tokens))

    @cached_property
    def mean_total_tokens(self) -> float:
        """Mean context footprint ``E[L]`` in tokens."""
        return float(np.dot(self.weights, self.total_tokens))

    @cached_property
    def _cumulative(self) -> np.ndarray:
        """``F`` just after each class (cumulative weights), accurate to ~1e-15."""
        # A plain cumsum over ~10^5 classes drifts by ~1e-12. Two levels instead: cumulative
        # sums inside blocks of 256 (short sums, small rounding), and block offsets summed with
        # Neumaier compensation (one Python step per block).
        w = self.weights
        block = 256
        n = w.size
        blocks = np.concatenate([w, np.zeros((-n) % block)]).reshape(-1, block)
        inner = np.cumsum(blocks, axis=1)
        offsets = np.empty(blocks.shape[0])
        total, comp = 0.0, 0.0
        for k, block_sum in enumerate(inner[:, -1].tolist()):
            offsets[k] = total + comp
            t = total + block_sum
            if abs(total) >= abs(block_sum):
                comp += (total - t) + block_sum
            else:
                comp += (block_sum - t) + total
            total = t
        cum = (inner + offsets[:, None]).ravel()[:n]
        np.clip(cum, 0.0, 1.0, out=cum)
        cum.setflags(write=False)
        return cum

    def cdf(self, tokens: Any) -> float | np.ndarray:
        """``F(x) = P(L <= x)``: the share of requests whose total tokens ``L`` is at most ``x``.

        ``tokens`` is a number or an array of numbers (tokens); returns a float or a float64
        array of the same shape. Right-continuous step function over the classes; for a CDF
        workload it equals the piecewise-linear source CDF at every integer ``x`` (except
        ``x = 1``: the paper split turns ``L = 1`` into ``(1, 1)``, two tokens).
        """
        x = np.asarray(tokens, dtype=np.float64)
        idx = np.searchsorted(self.total_tokens, x, side="right")
        cum = np.concatenate(([0.0], self._cumulative))
        result = cum[idx]
        if np.ndim(tokens) == 0:
            return float(result)
        return result

    def peak_factor(self, rate_rps: float, factor: float = 1.0,
                    window_s: float | None = None) -> float:
        """The multiple of the mean rate ``rate_rps`` (req/s) to plan for (bursty traffic).

        Either ``factor`` as given (>= 1; 1 plans for the mean), or, with ``window_s``, from
        this workload's trace: time-scaled to ``rate_rps``, its busiest ``window_s``-second
        window over its mean rate (:meth:`Trace.busiest_window_rate_rps`; the window is in
        the scaled timeline, and must hold at least one mean arrival), at least 1. Raises
        :class:`WorkloadError` naming the option.
        """
        if not (math.isfinite(factor) and factor >= 1.0):
            raise WorkloadError(f"--peak-factor {factor}: must be a finite number >= 1 "
                                "(1 = plan for the mean)")
        if window_s is None:
            return float(factor)
        if factor != 1.0:
            raise WorkloadError("--peak-factor and --peak-window-s: give one of them, not both")
        if self.trace is None:
            raise WorkloadError(f"--peak-window-s: workload '{self.name}' has no timestamps; "
                                "use a trace workload (e.g. azure-code) or --peak-factor")
        if not (math.isfinite(window_s) and window_s > 0):
            raise WorkloadError(f"--peak-window-s {window_s}: must be a positive, finite "
                                "duration in seconds")
        if not (math.isfinite(rate_rps) and rate_rps > 0):
            raise WorkloadError(f"rate_rps={rate_rps}: the arrival rate must be positive "
                                "(--rate)")
        if window_s * rate_rps < 1.0:
            raise WorkloadError(
                f"--peak-window-s {window_s:g}: shorter than one mean gap between arrivals "
                f"({1.0 / rate_rps:.3g} s at {rate_rps:g} req/s), so the busiest window "
                "would count coincident arrivals and grow without bound; use a window of at "
                f"least {1.0 / rate_rps:.3g} s (typically seconds)")
        scaled = self.trace.scaled_to_rate(rate_rps)
        return max(1.0, scaled.busiest_window_rate_rps(window_s) / rate_rps)

    # ---- derived workloads ------------------------------------------------------------------

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n`` requests i.i.d. from the classes; returns int64 ``(input, output)`` tokens.

        Uses one ``rng.random(n)`` call (inverse transform over the cumulative weights), so the
        draws are reproducible for a seeded generator.
        """
        if n < 0:
            raise WorkloadError(f"sample: n must be >= 0, got {n}")
        cum = self._cumulative
        u = rng.random(int(n)) * cum[-1]
        idx = np.minimum(np.searchsorted(cum, u, side="right"), cum.size - 1)
        return self.input_tokens[idx].copy(), self.output_tokens[idx].copy()

    def with_paper_split(self) -> Workload:
        """Re-split every class's total ``L`` as the paper does (:func:`paper_split`), merging
        classes that become identical. ``kind`` and ``breakpoints_tokens`` are unchanged; the
        trace is dropped (its requests no longer match the classes).

        This is the paper compatibility mode of docs/model.md §1: it discards the real
        input/output split of a trace (e.g. a 60K-token prompt then "produces" 12K tokens).
        """
        l_in, l_out = paper_split(self.total_tokens)
        inp, out, w = _merge_classes(l_in, l_out, self.weights)
        return Workload(
            name=self.name,
            source=f"{self.source} (paper 80/20 split)",
            kind=self.kind,
            input_tokens=inp,
            output_tokens=out,
            weights=w,
            breakpoints_tokens=self.breakpoints_tokens,
            trace=None,
        )

    def truncated(self, max_total_tokens: int) -> Workload:
        """Only the classes with ``L <= max_total_tokens`` (tokens), weights renormalised to 1;
        the trace keeps the same requests (arrival times unchanged), breakpoints above the cap
        are dropped. Raises :class:`WorkloadError` if no request is that short.
        """
        keep = (self.total_tokens <= max_total_tokens) & (self.weights > 0)
        if not np.any(keep):
            raise WorkloadError(
                f"workload {self.name!r}: no request has at most {max_total_tokens} tokens; "
                f"the shortest has {int(self.total_tokens[self.weights > 0][0])}"
            )
        w = self.weights[keep]
        trace = None
        if self.trace is not None:
            t = self.trace
            mask = (t.input_tokens + t.output_tokens) <= max_total_tokens
            trace = Trace(t.arrival_s[mask], t.input_tokens[mask], t.output_tokens[mask])
        return Workload(
            name=self.name,
            source=f"{self.source} (truncated to L <= {max_total_tokens})",
            kind=self.kind,
            input_tokens=self.input_tokens[keep],
            output_tokens=self.output_tokens[keep],
            weights=w / math.fsum(w.tolist()),
            breakpoints_tokens=tuple(b for b in self.breakpoints_tokens if b <= max_total_tokens),
            trace=trace,
        )

    def __repr__(self) -> str:
        return (
            f"Workload(name={self.name!r}, kind={self.kind!r}, classes={self.n_classes}, "
            f"mean_in={self.mean_input_tokens:.1f}, mean_out={self.mean_output_tokens:.1f}, "
            f"max_total={self.max_total_tokens}, "
            f"trace={'None' if self.trace is None else self.trace.n_requests})"
        )


# --------------------------------------------------------------------------------------------
# constructors
# --------------------------------------------------------------------------------------------


def _cdf_points(points: Any, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate ``[[tokens, fraction], ...]``; returns int64 tokens and float64 fractions
    (renormalised when the last fraction is within the tolerance of 1)."""
    if not isinstance(points, (list, tuple)):
        raise WorkloadError(
            f"{where}: expected a list of [tokens, cumulative_fraction] pairs, got "
            f"{type(points).__name__}; write e.g. [[512, 0.3], [4096, 0.9], [8192, 1.0]]"
        )
    if len(points) == 0:
        raise WorkloadError(
            f"{where}: entry 1: the CDF has no breakpoints; write e.g. [[512, 0.3], [8192, 1.0]]"
        )
    xs: list[int] = []
    fs: list[float] = []
    for k, entry in enumerate(points, start=1):
        here = f"{where}: entry {k}"
        if (
            not isinstance(entry, (list, tuple))
            or len(entry) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in entry)
        ):
            raise WorkloadError(
                f"{here}: {json.dumps(entry) if _jsonable(entry) else entry!r} is not a "
                f"[tokens, cumulative_fraction] pair of numbers; write e.g. [4096, 0.9]"
            )
        tok, frac = entry
        if not math.isfinite(tok) or tok != int(tok):
            raise WorkloadError(
                f"{here}: tokens {tok!r} is not a whole number; breakpoints are token counts"
            )
        tok = int(tok)
        if tok <= 0:
            raise WorkloadError(f"{here}: tokens {tok} is not positive; breakpoints must be >= 1")
        if tok > MAX_CDF_TOKENS:
            raise WorkloadError(
                f"{here}: tokens {tok} exceeds the supported maximum {MAX_CDF_TOKENS}"
            )
        frac = float(frac)
        if not math.isfinite(frac) or frac < 0 or frac > 1 + CDF_LAST_FRACTION_TOLERANCE:
            raise WorkloadError(
                f"{here}: cumulative fraction {frac!r} is outside [0, 1]; fractions are shares "
                f"of requests (0.9, not 90)"
            )
        if xs and tok <= xs[-1]:
            raise WorkloadError(
                f"{here}: tokens {tok} is not above the previous {xs[-1]}; breakpoints must be "
                f"strictly increasing"
            )
        if fs and frac < fs[-1]:
            raise WorkloadError(
                f"{here}: cumulative fraction {frac:.6g} is below the previous {fs[-1]:.6g}; "
                f"a CDF must be non-decreasing"
            )
        xs.append(tok)
        fs.append(frac)
    last = fs[-1]
    if abs(last - 1.0) > CDF_LAST_FRACTION_TOLERANCE:
        raise WorkloadError(
            f"{where}: entry {len(fs)}: the last cumulative fraction is {last:.6g}, not 1; a CDF "
            f"must reach 1 (add a final breakpoint [max_tokens, 1.0])"
        )
    if last <= 0:
        raise WorkloadError(f"{where}: entry {len(fs)}: the CDF never rises above 0")
    x_arr = np.array(xs, dtype=np.int64)
    f_arr = np.array(fs, dtype=np.float64)
    if last != 1.0:
        f_arr = f_arr / last  # within CDF_LAST_FRACTION_TOLERANCE: renormalise
    return x_arr, f_arr


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def workload_from_cdf(
    points: Sequence[Sequence[float]], *, name: str = "cdf", source: str = "CDF points"
) -> Workload:
    """A ``kind="cdf"`` workload from total-length CDF breakpoints ``[[x_k, F_k], ...]``.

    docs/model.md §1: ``x_k`` are strictly increasing token counts >= 1, ``F_k`` the
    non-decreasing share of requests with total ``L <= x_k``; the last ``F`` must be 1 (within
    :data:`CDF_LAST_FRACTION_TOLERANCE`, inside which the fractions are renormalised).
    The CDF is piecewise linear between breakpoints with ``F(0) = 0``, i.e. ``L`` is uniform
    over the integers of each segment ``(x_{k-1}, x_k]``. It is expanded exactly into one class
    per integer ``L = 1 .. x_last`` with weight ``(F_k - F_{k-1}) / (x_k - x_{k-1})``
    (zero-weight classes dropped), each split by :func:`paper_split`.

    The paper's simulator draws ``randint(x_{k-1}, x_k)`` (both ends included, first segment
    ``[1, x_1]``), which puts slightly more mass on each lower breakpoint; this expansion
    follows the stated piecewise-linear CDF instead, so ``F(x_k)`` is reproduced exactly.
    """
    xs, fs = _cdf_points(points, source)
    lo = np.concatenate(([0], xs[:-1]))
    width = xs - lo
    mass = np.diff(np.concatenate(([0.0], fs)))
    per_token = mass / width
    totals = np.arange(1, int(xs[-1]) + 1, dtype=np.int64)
    w = np.repeat(per_token, width)
    keep = w > 0
    totals, w = totals[keep], w[keep]
    l_in, l_out = paper_split(totals)
    inp, out, w = _merge_classes(l_in, l_out, w)
    return Workload(
        name=name,
        source=source,
        kind="cdf",
        input_tokens=inp,
        output_tokens=out,
        weights=w,
        breakpoints_tokens=tuple(int(x) for x in xs),
        trace=None,
    )


def workload_from_requests(
    input_tokens: Any,
    output_tokens: Any,
    arrival_s: Any = None,
    *,
    name: str = "trace",
    source: str = "requests",
) -> Workload:
    """A ``kind="trace"`` workload from per-request lengths (tokens, each >= 1).

    Identical ``(input, output)`` pairs merge into one class weighted by its count / N; the
    joint lengths are kept (docs/model.md §1: real traces give the joint distribution). When
    ``arrival_s`` (seconds, non-decreasing) is given, the requests are also kept as a
    :class:`Trace` in arrival order.
    """
    inp = _frozen(input_tokens, np.int64, "input_tokens")
    out = _frozen(output_tokens, np.int64, "output_tokens")
    if inp.size != out.size:
        raise WorkloadError(
            f"{source}: input_tokens and output_tokens have different lengths "
            f"({inp.size}, {out.size})"
        )
    if inp.size == 0:
        raise WorkloadError(f"{source}: no requests")
    trace = Trace(arrival_s, inp, out) if arrival_s is not None else None
    ci, co, w = _merge_classes(inp, out, np.full(inp.size, 1.0 / inp.size))
    return Workload(
        name=name,
        source=source,
        kind="trace",
        input_tokens=ci,
        output_tokens=co,
        weights=w,
        trace=trace,
    )
