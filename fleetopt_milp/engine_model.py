"""The engine service model: a continuous-batching instance at its operating point.

docs/engine.md §2. The slot model (docs/model.md §2-3) charges every iteration at a full
batch of full windows and reserves a window per request. A continuous-batching engine runs
the batch it has: its step time depends on the load, and the load on the step time. Per
instance, with ``lambda_i = lambda / n`` requests/s:

- a request is in the batch for ``a = k + L_out`` iterations (``k = ceil(L_in / chunk)``)
  and adds ``g = H k + p L_in + s a + (H / C_cal) Q`` seconds of step time over its life
  (``Q = L_out L_in + L_out (L_out + 1) / 2`` KV tokens read while decoding; a prefill chunk
  costs ``H`` plus ``p`` per prompt token it carries in the step it shares, as in the
  engine simulation: prefill charged pro rata, ``p`` the per-token prefill compute of
  calibrated profiles);
- so the mean step time solves ``tau = W + lambda_i E[g] tau`` (Little's law over the
  step's terms): ``tau = W / (1 - lambda_i E[g])``, stable while ``lambda_i E[g] < 1``;
- a request holds its batch slot for its ``a`` steps, each an average step plus its own
  share of it: ``E[T] = E[a] tau + E[g]``, so the (time-average) operating batch is ``b =
  lambda_i (E[a] tau + E[g])`` (Little's law), out of a batch cap
  ``min(max batch, KV tokens / mean KV tokens per live sequence)`` (the engine's admission
  limits: its batch cap and its KV blocks, tokens in flight rather than reserved windows);
- TTFT = the wait for a batch slot (an M/G/c queue over the pool's ``n x cap`` batch slots,
  draining at a full batch's step: service ``a (W + cap g_bar)``) + the end of the running
  step if the instance is busy + ``k`` prefill chunks, each
  sharing a step with the decode batch at the operating point (``tau + P``), + the
  profile's TTFT overhead, with the other prompts' chunks met in those steps as a
  random count, over-dispersed by the step's feedback (a longer step gathers more
  prompts: :func:`feedback_dispersion`) and taken at its exact Poisson quantiles
  (:func:`_contended_floors`);
- TPOT of a decoding sequence is a step with itself and the others: ``W + d + g_bar N``,
  ``d = s + (H / C_cal) (E[L_in] + (E[L_out] + 1) / 2)`` its own decode cost per token
  (its prefill came before its first token), ``g_bar = E[g] / E[a]``, with ``N ~
  Poisson(b_step)`` others, ``b_step = lambda_i E[a] tau`` the batch of an average step
  (the occupancy of an M/G/inf system), capped at the batch cap: mean ``tau + d`` and
  percentiles as ``N`` moves.

The model plugs into the planner through the service-model seam (:mod:`~fleetopt_milp.
service`): :class:`EngineServiceModel` (``"engine"``) returns an :class:`EnginePoolLoad`,
whose :meth:`~EnginePoolLoad.at` evaluates the operating point at every size the sizing
tries. Units: seconds, tokens, requests/s.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass, fields

import numpy as np
from scipy import special, stats

from .demand import Moments, MomentTable
from .errors import FleetOptError
from .poolload import PoolLoad, QueueBatch
from .queueing import Queue
from .service import EMPTY_MASS, register_service_model

__all__ = ["OperatingPoint", "operating_point", "jsq_busy", "jsq_reach", "feedback_dispersion",
           "EnginePoolLoad", "EngineQueue", "EngineServiceModel", "ENGINE", "TpotFigures",
           "tpot_figures", "tpot_tail", "pool_tpot_fields"]


@dataclass(frozen=True)
class OperatingPoint:
    """Per-instance operating point of ``k`` pools at chosen sizes (arrays ``(k,)``).

    step_s: mean step time ``tau``; mean_batch: ``b``, the time-average batch; batch_cap:
    the admission limit; per_seq_s: ``g_bar``, the mean step time one batch member adds;
    stable: ``lambda_i E[g] < 1`` (else ``tau`` is infinite); kv_tokens: mean KV tokens in
    flight; prefilling: mean sequences in prefill, ``lambda_i E[k] tau``; step_batch:
    ``b_step = lambda_i E[a] tau``, the batch of an average step (what a decoding sequence
    meets); decode_s: ``d``, a decoding sequence's own share of its step (s);
    saturation_share: ``lambda_i E[a] (W + cap g_bar) / cap``, the rate over the
    throughput of a full batch (the saturation throughput ``cap / (E[a] (W + cap
    g_bar))``).
    """

    step_s: np.ndarray
    mean_batch: np.ndarray
    batch_cap: np.ndarray
    per_seq_s: np.ndarray
    stable: np.ndarray
    kv_tokens: np.ndarray
    prefilling: np.ndarray = 0.0
    step_batch: np.ndarray = 0.0
    decode_s: np.ndarray = 0.0
    saturation_share: np.ndarray = 0.0

    @property
    def utilization(self) -> np.ndarray:
        """Batch occupancy ``b / cap`` (what the engine simulation reports)."""
        return self.mean_batch / np.maximum(self.batch_cap, 1)

    @property
    def mean_tpot_s(self) -> np.ndarray:
        """Mean time per output token: ``tau + d`` (a sequence sees itself in its step)."""
        return self.step_s + self.decode_s


def operating_point(rate_rps, instances, w_s, step_cost_s, mean_iterations,
                    kv_token_iterations, max_batch, kv_capacity_tokens,
                    mean_chunks=0.0, *, decode_cost_s) -> OperatingPoint:
    """The operating point of pools of ``instances`` instances (docs/engine.md §2).

    ``rate_rps``: the pool's arrival rate; ``w_s``: W; ``step_cost_s``: E[g];
    ``mean_iterations``: E[a]; ``kv_token_iterations``: E[kv] (KV tokens held, summed over
    a request's iterations); ``max_batch``: the engine's batch cap per instance;
    ``kv_capacity_tokens``: its KV pool; ``mean_chunks``: E[k], prefill chunks per request;
    ``decode_cost_s``: ``d``, a decoding sequence's own cost per step. All broadcast; JSQ dispatch spreads the rate evenly over the instances.
    """
    n = np.asarray(instances, float)
    lam_i = np.asarray(rate_rps, float) / np.maximum(n, 1e-300)
    x = lam_i * np.asarray(step_cost_s, float)
    stable = (x < 1.0) & (n > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(stable, np.asarray(w_s, float) / np.where(stable, 1.0 - x, 1.0), np.inf)
        ea = np.asarray(mean_iterations, float)
        b_step = lam_i * ea * tau
        b = b_step + x  # unstable: b_step is infinite
        per_seq = np.asarray(step_cost_s, float) / np.maximum(ea, 1e-300)
        kv_per_seq = np.asarray(kv_token_iterations, float) / np.maximum(ea, 1e-300)
        cap_kv = np.floor(np.asarray(kv_capacity_tokens, float) / np.maximum(kv_per_seq, 1.0))
    cap = np.maximum(np.minimum(np.asarray(max_batch, float), cap_kv), 1.0)
    with np.errstate(invalid="ignore"):
        prefilling = np.where(stable, lam_i * np.asarray(mean_chunks, float) * tau, np.inf)
    sat = lam_i * (ea * np.asarray(w_s, float) / cap + np.asarray(step_cost_s, float))
    return OperatingPoint(tau, b, cap, per_seq, stable, b * kv_per_seq, prefilling, b_step,
                          np.broadcast_to(np.asarray(decode_cost_s, float), tau.shape), sat)


#: Prefill contention of a TTFT floor (docs/engine.md §2): the other prefilling sequences
#: met over a prompt's steps, as levels of a Poisson count, each standing for the share of
#: requests below it down to the previous level (the upper end of each band:
#: conservative); the last band, the top 0.1%, at 0.9999. No band ends at 0.5: the median
#: falls inside the band (0.3, 0.6], not on a jump between two.
CONTENTION_LEVELS = np.array([0.3, 0.6, 0.8, 0.95, 0.99, 0.999, 0.9999])
CONTENTION_WEIGHTS = np.array([0.3, 0.3, 0.2, 0.15, 0.04, 0.009, 0.001])
#: The residual of a scheduler group at each contention level, as a share of the group:
#: in the body (the bands up to 0.6) the midpoint of the level's band of a uniform
#: residual, so that medians are not pushed up; from 0.8 on the level itself, the upper end
#: of its band, so that a tail quantile of the wait is never under-stated (docs/engine.md
#: §2). The weighted mean is 0.53 of a group (0.5 exactly for a uniform residual).
RESIDUAL_LEVELS = np.where(CONTENTION_LEVELS <= 0.6,
                           (CONTENTION_LEVELS + np.concatenate([[0.0], CONTENTION_LEVELS[:-1]]))
                           / 2.0, CONTENTION_LEVELS)
_NONE_ABOVE = 1.0 - CONTENTION_LEVELS  # the share of prompts meeting none, from each level up
_Z = stats.norm.ppf(CONTENTION_LEVELS)


#: Means below which the contention quantiles are exact (a table of the Poisson CDF's
#: steps); above, the Cornish-Fisher quantile rounded up.
TABLE_COUNTS = 4096


@functools.cache
def contention_steps() -> np.ndarray:
    """``(levels, TABLE_COUNTS)``: the mean at which ``P(Poisson(mean) <= j) =`` each of
    :data:`CONTENTION_LEVELS` (``scipy.special.pdtri``); the quantile at a level is the
    first ``j`` whose step is at or above the mean. Built once, on first use."""
    return special.pdtri(np.arange(float(TABLE_COUNTS))[None, :], CONTENTION_LEVELS[:, None])


def _poisson_levels(lam):
    """The Poisson quantiles at :data:`CONTENTION_LEVELS` of means ``lam > 0`` (``(..., 1)``,
    one mean for every level, or ``(..., levels)``, a mean per level -> ``(..., levels)``):
    exact (the smallest ``n`` with ``P(Poisson(lam) <= n) >= level``,
    from :func:`contention_steps`, a binary search where inverting the CDF per element
    would dominate a plan) below :data:`TABLE_COUNTS`; above, ``ceil(lam + sqrt(lam) z +
    (z^2 - 1) / 6)`` (Cornish-Fisher)."""
    steps = contention_steps()
    out = np.empty(lam.shape[:-1] + (CONTENTION_LEVELS.size,))
    for lv in range(CONTENTION_LEVELS.size):
        flat = np.ascontiguousarray(lam[..., min(lv, lam.shape[-1] - 1)]).ravel()
        n = np.searchsorted(steps[lv], flat, side="left").astype(float)
        far = n >= TABLE_COUNTS
        if far.any():
            z = _Z[lv]
            n[far] = np.ceil(flat[far] + np.sqrt(flat[far]) * z + (z ** 2 - 1.0) / 6.0)
        out[..., lv] = n.reshape(lam.shape[:-1])
    return out


def jsq_busy(instances, mean_batch):
    """P(every instance is busy) at a prompt's arrival under join-the-shortest-queue
    dispatch (arrays; docs/engine.md §2): a prompt goes to an idle instance while one
    exists, and the pool holds ``N ~ Poisson(n b)`` sequences (the M/G/inf occupancy of its
    ``n`` instances at mean batch ``b``), so ``P(N >= n)``; ``1 - exp(-b)`` at ``n = 1``
    (the random split's ``P(batch > 0)``)."""
    n = np.asarray(instances, float)
    return special.pdtrc(n - 1.0, n * np.asarray(mean_batch, float))


def jsq_reach(instances, pool_seqs):
    """P(another prompt can join a prompt's instance) while it prefills, under
    join-the-shortest-queue dispatch (arrays; docs/engine.md §2): only while the other
    ``n - 1`` instances are all busy. ``pool_seqs``: the sequences the pool holds at the
    prompt's arrival plus those arriving during its prefill (mean; departures ignored:
    conservative), ``P(Poisson(pool_seqs) >= n - 1)``; 1 at ``n = 1``."""
    n = np.asarray(instances, float)
    return np.where(n > 1.0, special.pdtrc(np.maximum(n - 2.0, 0.0), pool_seqs), 1.0)


def feedback_dispersion(prefill_share, instances):
    """Variance-to-mean ratio of the prefill count a prompt meets, from the step's
    feedback (arrays; docs/engine.md §2): every chunk in a step lengthens it by ``P``, and
    ``lambda_i P`` more prompts arrive meanwhile, so the chunks per step form a branching
    process with ratio ``r = P b_pf / tau`` (the prefill share of the step) whose count over
    two consecutive steps has variance ``1 / (1 - r)`` times its mean. Under
    join-the-shortest-queue the pool's ``n`` instances share that surge (a long step at
    one instance sends the next prompts to the others), leaving each ``1 + r / ((1 - r)
    n)``; 1 without prefill."""
    r = np.minimum(np.asarray(prefill_share, float), 1.0 - 1e-12)
    return 1.0 + r / ((1.0 - r) * np.maximum(np.asarray(instances, float), 1.0))


def _contended_floors(chunks, added_s, floor_prob, step_s, own_s, overhead_s, prefilling,
                      mean_chunks, busy, instances, pool_batch, mean_chunk_s,
                      scheduler_steps, chunk_disp):
    """TTFT floors with prefill contention, ``(k, m J)`` floors and shares.

    A prompt of ``k`` chunks waits for the running step if its instance is busy (``busy``
    of :func:`jsq_busy`, counted as a whole step) and, on an engine that schedules ``M =
    scheduler_steps`` decode steps per call, for the rest of the running group: ``M - 1``
    steps times :data:`RESIDUAL_LEVELS` (the group's residual is uniform; each contention
    level takes its band's upper end), then
    shares ``k`` steps with the decode batch: ``(k + w) tau_d + P_own + P_bar S`` (``w``
    the wait in steps), where ``tau_d = tau - P_bar b_pf`` is the step without prefill,
    ``b_pf`` the mean number of prefilling sequences, ``S`` the other prefills met over
    those steps, ``P_own = k H + p x`` the prompt's own chunks (``own_s``, per floor
    column: ``x`` its band's upper edge in prompt tokens, so conservative) and ``P_bar`` the
    pool's mean chunk cost (``mean_chunk_s``, prefill charged pro rata). Under a random
    split ``S`` has mean ``(k + w) b_pf``; a prompt met in one step stays for about
    ``E[k]`` steps, and a long step gathers more prompts for the next (the variance ratio
    ``f`` of :func:`feedback_dispersion`, with the prefill share ``P_bar b_pf / tau``), so
    the steps' counts are correlated and their sum over-dispersed by ``d = max(1, min(k +
    1, E[k])) f e``, ``e = E[c^2] / E[c]^2`` (``chunk_disp``) the spread of the chunks'
    costs ``c = H + p x`` (the count is in units of the mean chunk; a compound Poisson
    sum's variance is ``E[c^2] / E[c]`` times its mean): ``S = d N``, ``N ~ Poisson(mean / d)``. Under join-the-shortest-queue
    another prompt reaches the instance only while every other one is busy: ``P(S > 0) =
    reach P(N > 0)``, ``reach`` of :func:`jsq_reach` with the pool's ``n b`` sequences
    (``pool_batch``) plus the ``n k b_pf / E[k]`` arriving over the prompt's ``k`` steps.
    ``S`` is taken at :data:`CONTENTION_LEVELS`: 0 while ``1 - P(S > 0)`` covers the level,
    else ``d`` times the random split's Poisson quantile of ``N`` at the level, at least 1
    (above the mixture's own quantile: conservative).
    """
    pm_s = mean_chunk_s[:, None, None]
    b_pf = prefilling[:, None, None]
    tau_d = np.maximum(step_s[:, None, None] - pm_s * b_pf, 0.0)
    k = chunks[None, :, None]
    steps = k + busy[:, None, None] * (1.0 + (scheduler_steps[:, None, None] - 1.0)
                                       * RESIDUAL_LEVELS[None, None, :])
    mu = steps * b_pf
    spread = feedback_dispersion(mean_chunk_s * prefilling / np.maximum(step_s, 1e-300),
                                 instances)[:, None, None]
    d = (np.maximum(1.0, np.minimum(k + 1.0, mean_chunks[:, None, None])) * spread
         * chunk_disp[:, None, None])
    lam = mu / d
    nn = instances[:, None, None]
    reach = jsq_reach(nn, pool_batch[:, None, None]
                      + nn * k * b_pf / np.maximum(mean_chunks[:, None, None], 1e-300))
    n_q = np.maximum(_poisson_levels(np.where(lam > 0, lam, 1.0)), 1.0)
    met = d * np.where(reach * -np.expm1(-lam) <= _NONE_ABOVE[None, None, :], 0.0, n_q)
    fs = (steps * tau_d + own_s[None, :, None] + pm_s * met + added_s[None, :, None]
          + overhead_s[:, None, None])
    fp = floor_prob[:, :, None] * CONTENTION_WEIGHTS[None, None, :]
    n = fs.shape[0]
    return fs.reshape(n, -1), fp.reshape(n, -1)


def _poisson_ppf(q: float, mu):
    """``scipy.stats.poisson.ppf(q, mu)`` for ``0 < q < 1`` and ``mu > 0``: its own formula,
    without the generic wrapper's checks (a plan calls it per pool)."""
    vals = np.ceil(special.pdtrik(q, mu))
    below = np.maximum(vals - 1.0, 0.0)
    return np.where(special.pdtr(below, mu) >= q, below, vals)


def _poisson_pmf(n, mu: float):
    """``scipy.stats.poisson.pmf(n, mu)`` for integers ``n >= 0`` and ``mu > 0``: its
    formula ``exp(n log mu - log n! - mu)``."""
    return np.exp(special.xlogy(n, mu) - special.gammaln(n + 1.0) - mu)


def tpot_tail(t_s, w_s, decode_s, per_seq_s, step_batch, batch_cap):
    """P(TPOT > t): ``W + d + g_bar N > t`` with ``N ~ Poisson(b_step)`` capped at ``cap -
    1`` (docs/engine.md §2; ``decode_s`` = ``d``, ``step_batch`` = ``b_step``).

    Broadcasts; ``step_batch`` infinite (an unstable instance) gives 1.
    """
    others = np.floor((np.asarray(t_s, float) - w_s - decode_s) / np.maximum(per_seq_s, 1e-300)
                      + 1e-9)
    b = np.asarray(step_batch, float)
    finite = np.isfinite(b)
    tail = np.where(finite, stats.poisson.sf(others, np.where(finite, b, 0.0)), 1.0)
    tail = np.where(others >= np.asarray(batch_cap, float) - 1.0, 0.0, tail)
    return np.where(others < 0, 1.0, tail)


def _tpot_quantile_s(q: float, w_s, decode_s, per_seq_s, step_batch, batch_cap):
    """The ``q`` quantile of TPOT (seconds, arrays): ``W + d + g_bar min(N_q, cap - 1)``."""
    b = np.asarray(step_batch, float)
    finite = np.isfinite(b)
    pos = finite & (b > 0)
    nq = np.where(pos, _poisson_ppf(q, np.where(pos, b, 1.0)), np.where(finite, 0.0, np.inf))
    nq = np.minimum(nq, np.asarray(batch_cap, float) - 1.0)
    return w_s + decode_s + per_seq_s * nq


@dataclass(frozen=True)
class EngineQueue(Queue):
    """A :class:`~fleetopt_milp.queueing.Queue` over batch slots, with its operating point.

    The queue's servers are the pool's batch slots (instances x batch cap); its service
    time is ``a tau``. ``w_s``, ``per_seq_s``, ``mean_batch``, ``batch_cap``, ``step_s``:
    the per-instance operating point (docs/engine.md §2); ``mean_iterations``: ``E[a]``;
    ``decode_s``: ``d``; ``step_batch``: ``b_step``.
    """

    w_s: float = 0.0
    per_seq_s: float = 0.0
    mean_batch: float = 0.0
    batch_cap: float = 1.0
    step_s: float = 0.0
    mean_iterations: float = 1.0
    decode_s: float = 0.0
    step_batch: float = 0.0

    @property
    def mean_tpot_s(self) -> float:
        return self.step_s + self.decode_s

    @property
    def hold_s(self) -> float:
        """Mean seconds a request holds its batch slot at the operating point, ``E[a] tau +
        E[g] = E[a] (tau + g_bar)``: the time scale of certification's run length (the
        simulator's warm-up takes :attr:`relaxation_s`), where ``mean_service_s``, the full
        batch's drain time that sets the wait, can be far longer."""
        return self.mean_iterations * (self.step_s + self.per_seq_s)

    @property
    def relaxation_s(self) -> float:
        """The time constant of the batch's approach to its operating point, seconds:
        ``E[a] tau^2 / W = E[a] tau / (1 - lambda_i E[g])`` (docs/engine.md §2: the batch
        ``b`` drains at ``b / (E[a] (W + g_bar b))``, which grows ever slower in ``b``, so
        a perturbation decays ``tau / W`` times slower than a request's steps last). The
        simulator's warm-up scale."""
        return self.mean_iterations * self.step_s ** 2 / max(self.w_s, 1e-300)

    def tpot_tail(self, t_s: float) -> float:
        """P(TPOT > t_s) for this queue's decoding sequences."""
        return float(tpot_tail(t_s, self.w_s, self.decode_s, self.per_seq_s, self.step_batch,
                               self.batch_cap))


@dataclass(frozen=True)
class EnginePoolLoad(PoolLoad):
    """Pools' demand under the engine model (docs/engine.md §2): arrays over candidates.

    Beyond :class:`~fleetopt_milp.poolload.PoolLoad` (whose ``cs2`` is that of the
    iterations ``a``, ``slots_per_instance`` the engine's batch cap and ``floor_s`` the
    floors at an idle instance, their lower limit, ``k W + P_own`` + added latency + TTFT
    overhead):
    ``w_s`` (W), ``step_cost_s`` (E[g]), ``mean_iterations`` (E[a]),
    ``kv_token_iterations`` (E[kv]), ``kv_capacity_tokens``, ``ttft_overhead_s``,
    ``mean_chunks`` (E[k]), ``decode_cost_s`` (``d``, a decoding sequence's own cost per
    step), ``mean_chunk_s`` (``P_bar = H + p E[L_in] / E[k]``, the mean
    cost of a chunk: prefill charged pro rata), ``scheduler_steps`` (``M``, decode steps per
    scheduler call: a prompt joins a busy instance at the end of a group).
    The floor grid's prefill chunks, own prefill cost and added latency (``floor_chunks``,
    ``floor_own_s``, ``floor_added_s``) and the TPOT SLO (``tpot_slo_s``, ``tpot_q``; ``None`` = none) are
    attributes shared by every candidate.
    """

    w_s: np.ndarray = None
    step_cost_s: np.ndarray = None
    mean_iterations: np.ndarray = None
    kv_token_iterations: np.ndarray = None
    kv_capacity_tokens: np.ndarray = None
    ttft_overhead_s: np.ndarray = None
    mean_chunks: np.ndarray = None
    mean_chunk_s: np.ndarray = None
    scheduler_steps: np.ndarray = None
    chunk_disp: np.ndarray = None
    decode_cost_s: np.ndarray = None

    load_dependent = True

    def __post_init__(self):
        super().__post_init__()
        for f in fields(EnginePoolLoad):
            if f.name in ("w_s", "step_cost_s", "mean_iterations", "kv_token_iterations",
                          "kv_capacity_tokens", "ttft_overhead_s",
                          "mean_chunks", "mean_chunk_s", "scheduler_steps", "chunk_disp",
                          "decode_cost_s"):
                v = np.broadcast_to(np.asarray(getattr(self, f.name), float),
                                    self.rate_rps.shape).copy()
                object.__setattr__(self, f.name, v)
        self.__dict__.setdefault("tpot_slo_s", None)
        self.__dict__.setdefault("tpot_q", 0.99)

    def with_grid(self, floor_chunks: np.ndarray, floor_own_s: np.ndarray,
                  floor_added_s: np.ndarray) -> EnginePoolLoad:
        """These loads knowing each floor column's prefill chunks, the compute of its own
        prefill (``k H + p x``, s) and added latency."""
        return self._with(floor_chunks=np.asarray(floor_chunks, float),
                          floor_own_s=np.asarray(floor_own_s, float),
                          floor_added_s=np.asarray(floor_added_s, float))

    def with_tpot_slo(self, tpot_slo_s: float | None, tpot_percentile: float = 99.0
                      ) -> EnginePoolLoad:
        """These loads sized to keep P``tpot_percentile`` TPOT <= ``tpot_slo_s`` as well."""
        return self._with(tpot_slo_s=tpot_slo_s, tpot_q=tpot_percentile / 100.0)

    @classmethod
    def concat(cls, loads) -> EnginePoolLoad:
        loads = list(loads)
        grid = loads[0].floor_s
        if any(ld.floor_s.shape != grid.shape or np.any(ld.floor_s != grid) for ld in loads):
            raise FleetOptError("engine service model: pools of different profiles or "
                                "tables cannot be sized in one call")
        return super().concat(loads)

    # -- the operating point -------------------------------------------------------------
    def point(self, idx, instances) -> OperatingPoint:
        """The operating point of candidates ``idx`` at ``instances`` each."""
        idx = np.asarray(idx)
        return operating_point(self.rate_rps[idx], instances, self.w_s[idx],
                               self.step_cost_s[idx], self.mean_iterations[idx],
                               self.kv_token_iterations[idx], self.slots_per_instance[idx],
                               self.kv_capacity_tokens[idx], self.mean_chunks[idx],
                               decode_cost_s=self.decode_cost_s[idx])

    def lower_bound_instances(self, idx: np.ndarray, rho_max: float) -> np.ndarray:
        """``n > lambda E[g]`` (stability) and the saturation share ``lambda (E[a] W / cap +
        E[g]) / n <= rho_max`` (:meth:`saturation_share`: exact, the cap does not move with
        ``n``)."""
        lam = self.rate_rps[idx]
        stab = np.floor(lam * self.step_cost_s[idx] + 1e-12).astype(np.int64) + 1
        op = self.point(idx, np.ones(len(idx)))
        util = np.ceil(lam * (self.mean_iterations[idx] * self.w_s[idx] / op.batch_cap
                              + self.step_cost_s[idx]) / rho_max - 1e-12).astype(np.int64)
        return np.maximum(np.maximum(stab, util), 1)

    def at(self, idx, instances) -> QueueBatch:
        idx = np.asarray(idx)
        n = np.broadcast_to(np.asarray(instances), idx.shape).astype(float)
        return self._at_point(idx, n, self.point(idx, n))

    def _at_point(self, idx, n, op: OperatingPoint) -> QueueBatch:
        """:meth:`at` from the operating point ``op`` of candidates ``idx`` at ``n``."""
        servers = n * op.batch_cap
        with np.errstate(invalid="ignore"):
            offered = np.where(op.stable, n * op.mean_batch, servers)  # unstable: fails
        step = np.where(op.stable, op.step_s, self.w_s[idx])
        b = np.where(op.stable, op.mean_batch, 0.0)
        fp = self.floor_prob[idx]
        cols = np.flatnonzero(np.any(fp > 0, axis=0))  # floors some of these pools have
        if cols.size == 0:
            cols = np.arange(1)
        fs, fp = _contended_floors(self.floor_chunks[cols], self.floor_added_s[cols], fp[:, cols],
                                   step, self.floor_own_s[cols], self.ttft_overhead_s[idx],
                                   np.where(op.stable, op.prefilling, 0.0),
                                   self.mean_chunks[idx],
                                   np.where(op.stable, jsq_busy(n, b), 1.0), n, n * b,
                                   self.mean_chunk_s[idx], self.scheduler_steps[idx],
                                   self.chunk_disp[idx])
        # A request waits only while the batch is full: the queue drains at the step time
        # of a full batch (docs/engine.md §2).
        full = self.w_s[idx] + op.batch_cap * op.per_seq_s
        return QueueBatch(servers=servers, offered_load=offered,
                          mean_service_s=self.mean_iterations[idx] * np.maximum(full, step),
                          cs2=self.cs2[idx], floor_s=fs, floor_prob=fp)

    def compiled_search(self, idx, slo_s: float, q: float, rho_max: float,
                        paper_rule: bool, pairs=None, preset=None) -> np.ndarray | None:
        """The compiled sizing (:mod:`fleetopt_milp._engine_sizing`) once the compiled
        kernels are loaded, else ``None`` (the numpy search); with ``pairs`` and without a
        TPOT SLO, its branch and bound over the planner's candidates
        (:func:`~fleetopt_milp._engine_sizing.cheapest_pairs`). With a TPOT SLO, the larger
        of the compiled TTFT sizing and :meth:`tpot_min_instances`: each test passes from
        its own threshold on (a larger pool has a smaller batch, shorter steps and less
        contention), so both pass from the larger one on."""
        kernel = sys.modules.get(f"{__package__}._engine_sizing")
        if kernel is None:
            return None
        if self.tpot_slo_s is not None:
            if pairs is not None:
                return None  # size every candidate (below)
            return np.maximum(kernel.min_instances(self, idx, slo_s, q, rho_max, paper_rule),
                              self.tpot_min_instances(idx))
        if pairs is not None:
            return kernel.cheapest_pairs(self, preset, slo_s, q, rho_max, paper_rule, pairs)
        return kernel.min_instances(self, idx, slo_s, q, rho_max, paper_rule)

    def tpot_min_instances(self, idx) -> np.ndarray:
        """The fewest instances at which candidates ``idx`` (servable:
        :meth:`extra_unservable` false) meet the TPOT SLO alone (:meth:`extra_fails`); 1
        without a TPOT SLO (docs/engine.md §2).

        In closed form: the SLO allows ``m = floor((X - W - d) / g_bar)`` others in a step,
        met at the ``q`` quantile while ``P(Poisson(b_step) <= m) >= q``, that is ``b_step
        <= mu*`` with ``pdtr(m, mu*) = q``; and ``b_step = lambda E[a] W / (n - lambda
        E[g])`` at ``n`` instances, so ``n >= lambda E[g] + lambda E[a] W / mu*`` (and
        ``n > lambda E[g]``, stability; only that where ``m`` reaches the batch cap). The
        count is then moved by whole instances until :meth:`extra_fails` agrees (rounding)."""
        idx = np.asarray(idx)
        out = np.ones(idx.shape, dtype=np.int64)
        if self.tpot_slo_s is None or idx.size == 0:
            return out
        lam, g, ea, w = (self.rate_rps[idx], self.step_cost_s[idx], self.mean_iterations[idx],
                         self.w_s[idx])
        cap = self.point(idx, np.ones(idx.size)).batch_cap
        per_seq = g / np.maximum(ea, 1e-300)
        m = np.floor((self.tpot_slo_s - w - self.decode_cost_s[idx]) / np.maximum(per_seq, 1e-300)
                     + 1e-9)
        with np.errstate(divide="ignore", invalid="ignore"):
            mu = special.pdtri(np.maximum(m, 0.0), self.tpot_q)
            need = np.where(m >= cap - 1.0, 0.0, lam * ea * w / mu)
        n = np.maximum(np.floor(lam * g) + 1.0, np.ceil((lam * g + need) * (1.0 - 1e-12)))
        out = np.maximum(n, 1.0).astype(np.int64)
        for _ in range(8):  # rounding: a step or two either way
            up = self.extra_fails(idx, out)
            down = ~up & (out > 1)
            down[down] = ~self.extra_fails(idx[down], out[down] - 1)
            if not (np.any(up) or np.any(down)):
                return out
            out = out + up - down
        raise AssertionError("tpot_min_instances: the closed form is off by more than 8")

    def saturation_share(self, idx, instances) -> np.ndarray:
        """:attr:`OperatingPoint.saturation_share` at these sizes (docs/engine.md §2): the
        sizing holds it to ``rho_max``, as the batch occupancy. Near the knee (``lambda_i
        E[g]`` near 1) a pool can run at a modest occupancy with a full batch barely able
        to keep up: paper-H100 on lmsys at 200 req/s on 4 instances, occupancy 0.78 and
        saturation share 0.97, settles in the engine simulation at a batch of 0.64-0.70 of
        the cap in some runs and jams at the cap (40-70% of prompts missing the SLO) in
        others; 5 instances (share 0.78) run at 0.26-0.34 in every run."""
        return self.point(np.asarray(idx), instances).saturation_share

    def extra_fails(self, idx, instances) -> np.ndarray:
        """Sizes at which the TPOT SLO fails (none without a TPOT SLO)."""
        idx = np.asarray(idx)
        if self.tpot_slo_s is None:
            return np.zeros(idx.shape, dtype=bool)
        op = self.point(idx, instances)
        tq = _tpot_quantile_s(self.tpot_q, self.w_s[idx], op.decode_s, op.per_seq_s,
                              op.step_batch, op.batch_cap)
        return ~op.stable | (tq > self.tpot_slo_s)

    def extra_unservable(self, idx) -> np.ndarray:
        """Candidates whose TPOT alone (a batch of one) misses the TPOT SLO at any size."""
        idx = np.asarray(idx)
        if self.tpot_slo_s is None:
            return np.zeros(idx.shape, dtype=bool)
        return self.alone_tpot_s(idx) > self.tpot_slo_s

    def alone_tpot_s(self, idx) -> np.ndarray:
        """TPOT of a sequence decoding alone (a batch of one): ``W + d``, seconds; no size
        of the pool gives a lower TPOT."""
        idx = np.asarray(idx)
        return self.w_s[idx] + self.decode_cost_s[idx]

    def queue(self, i: int, instances: int, share: float = 1.0) -> EngineQueue:
        src = self.scaled(share) if share != 1.0 else self
        idx, n = np.array([i]), np.array([float(instances)])
        op = src.point(idx, n)
        b = src._at_point(idx, n, op)
        fp = b.floor_prob[0]
        keep = fp > 0
        return EngineQueue(
            servers=int(b.servers[0]), offered_load=float(b.offered_load[0]),
            mean_service_s=float(b.mean_service_s[0]), cs2=float(b.cs2[0]),
            floor_s=b.floor_s[0][keep], floor_prob=fp[keep], w_s=float(self.w_s[i]),
            per_seq_s=float(op.per_seq_s[0]), mean_batch=float(op.mean_batch[0]),
            batch_cap=float(op.batch_cap[0]), step_s=float(op.step_s[0]),
            mean_iterations=float(self.mean_iterations[i]), decode_s=float(op.decode_s[0]),
            step_batch=float(op.step_batch[0]))


@dataclass(frozen=True)
class EngineServiceModel:
    """Continuous batching at a load-dependent operating point (docs/engine.md §2)."""

    name: str = "engine"

    def pool_load(self, moments: Moments, table: MomentTable, window_tokens,
                  rate_rps: float) -> EnginePoolLoad:
        """The :class:`EnginePoolLoad` of pools with these moments at total rate ``rate_rps``.

        Reads the engine sums of :class:`~fleetopt_milp.demand.Moments`. The batch cap is
        the engine's ``max_num_seqs`` (:attr:`~fleetopt_milp.hardware.Profile.engine_max_batch`)
        at every window, as in the engine simulation; the KV blocks bound it further in
        :func:`operating_point` (tokens in flight, not reserved windows).
        """
        prof = table.profile
        mass = np.atleast_1d(moments.mass).astype(float)
        live = mass > EMPTY_MASS
        safe = np.where(live, mass, 1.0)
        a1, a2, g1, kv1, k1, lin1, sq1 = (
            np.where(live, np.atleast_1d(getattr(moments, f)) / safe, 1.0)
            for f in ("iters", "iters2", "step_cost_s", "kv_token_steps", "chunks",
                      "prefill_tokens", "prefill_sq_tokens"))
        cs2 = np.where(live, np.maximum(a2 / np.maximum(a1 ** 2, 1e-300) - 1.0, 0.0), 0.0)
        fp = np.atleast_2d(moments.floor_mass) / safe[:, None]
        fp = np.where(live[:, None], fp, 0.0)
        w = prof.w_ms * 1e-3
        over = prof.ttft_overhead_ms * 1e-3
        mean_chunk = (prof.h_ms + prof.prefill_ms_per_token * lin1 / np.maximum(k1, 1e-300)
                      ) * 1e-3
        # The spread of a chunk's cost c = H + p x over the pool's chunks: E[c^2] / E[c]^2.
        ex = lin1 / np.maximum(k1, 1e-300)
        ex2 = sq1 / np.maximum(k1, 1e-300)
        hh, pp = prof.h_ms, prof.prefill_ms_per_token
        disp = np.maximum((hh * hh + 2.0 * hh * pp * ex + pp * pp * ex2)
                          / np.maximum((hh + pp * ex) ** 2, 1e-300), 1.0)
        # The floors' lower limit over all sizes (an idle instance): k W + P_own + added.
        own = (table.floor_chunks * prof.h_ms + table.floor_tokens * prof.prefill_ms_per_token
               ) * 1e-3
        grid = table.floor_chunks * w + own + table.floor_added_s + over
        # A decoding sequence's own cost per step, averaged over its decode steps and over
        # requests: s + (H / C_cal) (L_in + (L_out + 1) / 2) (the j-th token reads L_in + j).
        decode = (prof.seq_ms + prof.h_ms / prof.calib_tokens * (lin1 + (a1 - k1 + 1.0) / 2.0)
                  ) * 1e-3
        load = EnginePoolLoad(
            rate_rps=np.where(live, rate_rps * mass, 0.0), mean_service_s=a1 * w, cs2=cs2,
            slots_per_instance=np.full(mass.shape, prof.engine_max_batch),
            floor_s=grid, floor_prob=fp, w_s=w, step_cost_s=g1, mean_iterations=a1,
            kv_token_iterations=kv1, kv_capacity_tokens=float(prof.kv_capacity_tokens),
            ttft_overhead_s=over, mean_chunks=k1, mean_chunk_s=mean_chunk,
            scheduler_steps=float(prof.scheduler_steps), chunk_disp=disp, decode_cost_s=decode)
        return load.with_grid(table.floor_chunks, own, table.floor_added_s)


ENGINE = EngineServiceModel()
register_service_model(ENGINE)


# ---------------------------------------------------------------------------------------
# TPOT figures of a pool or a fleet
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TpotFigures:
    """TPOT of a group of engine queues, ms: mean, P50/P90/P99, at ``percentile``; and the
    share of decoding requests whose TPOT exceeds the TPOT SLO (0 without one)."""

    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    at_percentile_ms: float
    slo_miss_share: float


def tpot_figures(queues: list[EngineQueue], shares: list[float], percentile: float = 99.0,
                 tpot_slo_ms: float | None = None) -> TpotFigures:
    """TPOT figures of requests split over ``queues`` with traffic ``shares`` (sum 1).

    The one place TPOT figures are computed (docs/engine.md §2): the mixture of the
    queues' discrete TPOT distributions (:func:`tpot_tail`'s), exact quantiles.
    """
    live = [(w, x) for w, x in zip(shares, queues, strict=True) if w > 0]
    if not live:
        return TpotFigures(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    if any(not np.isfinite(x.mean_batch) for _, x in live):
        inf = float("inf")
        return TpotFigures(inf, inf, inf, inf, inf, 1.0)

    # The mixture's TPOT is discrete: W + d + g_bar n with Poisson weights, the last
    # value (a full batch) taking the rest of the tail.
    vals, wts = [], []
    for w, x in live:
        if x.step_batch > 0:
            top = min(x.batch_cap - 1.0, float(_poisson_ppf(1.0 - 1e-12, x.step_batch)))
            n = np.arange(int(max(top, 0.0)) + 1)
            pmf = _poisson_pmf(n, x.step_batch)
            pmf[-1] += special.pdtrc(n[-1], x.step_batch)
        else:  # an idle queue: no other sequence in the step
            n, pmf = np.zeros(1), np.ones(1)
        vals.append(x.w_s + x.decode_s + x.per_seq_s * n)
        wts.append(w * pmf)
    v, p = np.concatenate(vals), np.concatenate(wts)
    order = np.argsort(v, kind="stable")
    v, p = v[order], p[order] / np.sum(p)
    cum = np.cumsum(p)

    def quantile(q):
        return float(v[min(int(np.searchsorted(cum, q - 1e-12)), v.size - 1)]) * 1e3

    mean = sum(w * x.mean_tpot_s for w, x in live) * 1e3
    miss = 0.0 if tpot_slo_ms is None else float(np.sum(p[v > tpot_slo_ms * 1e-3 + 1e-15]))
    return TpotFigures(mean, quantile(0.5), quantile(0.9), quantile(0.99),
                       quantile(percentile / 100.0), miss)


def pool_tpot_fields(queues, shares, percentile: float = 99.0,
                     tpot_slo_ms: float | None = None) -> dict[str, float]:
    """The engine figures of a plan's pool (:class:`~fleetopt_milp.plan.PoolPlan`'s
    ``mean_tpot_ms``, ``tpot_ms`` at ``percentile`` and ``mean_batch``, the mean batch per
    instance) from its allocations' queues and traffic shares; empty unless they are
    :class:`EngineQueue` s with traffic (docs/engine.md §2). Shared by the planner and the
    MILP."""
    live = [(q, float(x)) for q, x in zip(queues, shares, strict=True)
            if isinstance(q, EngineQueue) and x > 0 and q.servers > 0]
    if not live:
        return {}
    total = sum(x for _, x in live)
    tf = tpot_figures([q for q, _ in live], [x / total for _, x in live], percentile,
                      tpot_slo_ms)
    if len(live) == 1:
        batch = live[0][0].mean_batch
    else:  # instances of each allocation: its batch slots over its batch cap
        n = [q.servers / q.batch_cap for q, _ in live]
        batch = sum(k * q.mean_batch for k, (q, _) in zip(n, live, strict=True)) / sum(n)
    return dict(mean_tpot_ms=tf.mean_ms, tpot_ms=tf.at_percentile_ms, mean_batch=batch)
