"""What each pool must serve: exact service-time moments for any split of a workload.

docs/model.md §2-4. A request of ``L = L_in + L_out`` tokens in a pool of window ``C``
holds one KV slot for ``S = a (W + h_C L)`` seconds, where ``a = ceil(L_in / chunk) + L_out``
iterations and ``h_C = H slots(C) / C_cal`` (the full-batch iteration time). So every
moment of ``S`` over a range of lengths is a combination of six prefix sums over the
workload's classes (``p, p a, p a L, p a^2, p a^2 L, p a^2 L^2``), exact and O(1) per range.

Compress-and-Route (docs/model.md §4): a request with ``B < L <= gamma B`` whose output
fits (``L_out < B``) is compressible; a share ``p_c`` of those is cut to ``L' = B`` (input
trimmed to ``B - L_out``) and served by the pool of window ``B``, with ``a' =
ceil((B - L_out) / chunk) + L_out``. The pool above loses exactly those requests.

All sums here are *unnormalised* (fractions of all requests), so pool loads add and
subtract; a service model (:mod:`~fleetopt_milp.service`) turns them into a
:class:`~fleetopt_milp.poolload.PoolLoad`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from .hardware import Profile
from .poolload import PoolLoad
from .scenario import band_end_tokens
from .workload import Workload

__all__ = ["Moments", "MomentTable", "PoolParts", "pool_load"]


@dataclass(frozen=True)
class Moments:
    """Unnormalised service moments of a set of requests (arrays over candidates).

    mass: share of all requests; s1 = sum p S (s); s2 = sum p S^2 (s^2);
    floor_mass: share of all requests at each TTFT floor of :attr:`MomentTable.floor_s`.
    What the engine service model needs (docs/engine.md §2): iters = sum p a and iters2 =
    sum p a^2 (steps in the batch); step_cost_s = sum p g (s; ``g`` = the step time a
    request adds over its life); kv_token_steps = sum p kv (KV tokens held, summed over
    its steps); chunks = sum p k (prefill chunks); prefill_tokens = sum p L_in (prompt
    tokens prefilled); prefill_sq_tokens = sum p sum_chunks x^2 (``x`` the prompt tokens
    of each chunk: the spread of a chunk's cost).
    """

    mass: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    floor_mass: np.ndarray
    iters: np.ndarray
    iters2: np.ndarray
    step_cost_s: np.ndarray
    kv_token_steps: np.ndarray
    chunks: np.ndarray
    prefill_tokens: np.ndarray
    prefill_sq_tokens: np.ndarray

    def _map(self, op, other=None) -> Moments:
        """``op`` applied field by field (with ``other``'s matching field if given)."""
        return type(self)(*(op(getattr(self, f.name), None if other is None else
                               getattr(other, f.name)) for f in fields(self)))

    def __add__(self, other: Moments) -> Moments:
        return self._map(np.add, other)

    def __sub__(self, other: Moments) -> Moments:
        return self._map(np.subtract, other)

    def scaled(self, factor) -> Moments:
        """Every sum times ``factor`` (a scalar, or one value per candidate)."""
        f = np.asarray(factor, float)
        return self._map(lambda x, _: x * np.reshape(f, np.shape(f) + (1,) * (np.ndim(x)
                                                                            - np.ndim(f))))


def _ceil_div(x: np.ndarray, d: int) -> np.ndarray:
    return -(-x // d)


class MomentTable:
    """Prefix sums of a workload under one profile, queried at a fixed set of cut points.

    Build once per (workload, profile, candidate boundaries, gamma values); every query
    afterwards is O(number of candidates). ``cuts_tokens`` must contain every length at
    which a queried range starts or ends (boundaries, ``gamma * B`` band ends, windows).
    ``compression_latency_s`` is added to the TTFT floor of compressed requests.
    """

    def __init__(self, workload: Workload, profile: Profile, boundaries_tokens, gammas,
                 long_context_tokens: int, compression_latency_s: float = 0.0):
        self.workload = workload
        self.profile = profile
        self.compression_latency_s = float(compression_latency_s)
        b = np.unique(np.asarray(boundaries_tokens, dtype=np.int64))
        g = np.unique(np.asarray(gammas, dtype=float))
        self.boundaries_tokens = b
        self.gammas = g
        self.long_context_tokens = int(long_context_tokens)
        band_ends = band_end_tokens(b[:, None], g[None, :])
        self.band_end_tokens = band_ends  # (nB, nG): floor(gamma B)
        cuts = np.unique(np.concatenate([[0, self.long_context_tokens], b, band_ends.ravel()]))
        self.cuts_tokens = cuts
        # Band ends past the profile's largest window are cut points but never windows.
        self._cut_slots = np.array(
            [profile.slots(int(x)) if 0 < x <= profile.max_context_tokens else 0 for x in cuts],
            dtype=np.int64)

        lin = workload.input_tokens.astype(np.int64)
        lout = workload.output_tokens.astype(np.int64)
        ltot = (lin + lout).astype(float)
        p = workload.weights.astype(float)
        chunk = profile.chunk_tokens
        k = _ceil_div(lin, chunk)
        a = (k + lout).astype(float)
        self._tau_s = float(profile.prefill_s(chunk))  # one prefill chunk
        kmax = int(max(k.max(), _ceil_div(np.int64(self.long_context_tokens), chunk)))
        self.kmax = kmax
        # Floor columns: bands of prompt tokens, ``(edges[j-1], edges[j]]``. Whole chunks,
        # and, where a prompt token costs compute (calibrated profiles), the first chunk cut
        # at 1/16, 1/8, 1/4 and 1/2 of it: the engine model charges a prompt's own prefill at
        # its band's upper edge (docs/engine.md §2), so short prompts are not charged a
        # whole chunk. ``ncol`` columns, each with its chunks ``ceil(edge / chunk)``.
        edges = np.arange(kmax + 1, dtype=np.int64) * chunk
        if profile.prefill_ms_per_token > 0:
            sub = np.array([chunk // 16, chunk // 8, chunk // 4, chunk // 2], dtype=np.int64)
            edges = np.unique(np.concatenate([edges, sub[sub > 0]]))
        ncol = edges.size
        col = np.searchsorted(edges, lin, side="left")
        chunks_of = _ceil_div(edges, chunk)
        # TTFT floors: k prefill chunks plus the profile's fixed TTFT overhead (0 except in
        # calibrated profiles, docs/engine.md §3).
        levels = chunks_of * self._tau_s + profile.ttft_overhead_ms * 1e-3
        # Floor grid: uncompressed prefill levels, then the same shifted by compression latency.
        self.floor_s = np.concatenate([levels, levels + self.compression_latency_s])
        # Each floor's prefill chunks, prompt tokens (its band's upper edge) and the
        # compression latency in it (the engine model re-times the chunks at its operating
        # point, docs/engine.md §2).
        self.floor_chunks = np.concatenate([chunks_of, chunks_of])
        self.floor_tokens = np.concatenate([edges, edges])
        self.floor_added_s = np.repeat([0.0, self.compression_latency_s], ncol)
        # Engine features per class: the step time it adds over its life, g = H k + p L_in
        # + s a + (H / C_cal) Q (each prefill chunk reads the KV once and computes its own
        # tokens: pro rata, docs/engine.md §2), and the KV it holds, kv = k L_in + Q, with
        # Q = L_out L_in + L_out (L_out + 1) / 2 (a decoding sequence reads its context plus
        # the new token).
        h_s, s_s = profile.h_ms * 1e-3, profile.seq_ms * 1e-3
        pt_s = profile.prefill_ms_per_token * 1e-3
        hc_s = h_s / profile.calib_tokens

        def chunk_sq(lin_):  # sum over a prompt's chunks of (tokens in the chunk)^2
            kk = np.maximum(_ceil_div(lin_.astype(np.int64), chunk) - 1, 0).astype(float)
            last = lin_ - kk * chunk
            return kk * float(chunk) ** 2 + last * last

        def engine_feats(k_, lin_, lout_):
            q = lout_ * lin_ + lout_ * (lout_ + 1) / 2.0
            return h_s * k_ + pt_s * lin_ + s_s * (k_ + lout_) + hc_s * q, k_ * lin_ + q

        # Segment of each class between consecutive cuts: class with L in (cuts[j-1], cuts[j]]
        # has seg = j; prefix at cut j = sum over classes with seg <= j.
        seg = np.searchsorted(cuts, ltot, side="left")
        nseg = cuts.size + 1
        g_eng, kv_eng = engine_feats(k.astype(float), lin.astype(float), lout.astype(float))
        feats = np.stack([p, p * a, p * a * ltot, p * a * a, p * a * a * ltot,
                          p * a * a * ltot * ltot, p * g_eng, p * kv_eng, p * k, p * lin,
                          p * chunk_sq(lin.astype(float))])
        nfeat = feats.shape[0]
        sums = np.zeros((nfeat, nseg))
        for i in range(nfeat):
            sums[i] = np.bincount(seg, weights=feats[i], minlength=nseg)
        self._prefix = np.cumsum(sums, axis=1)[:, : cuts.size]  # (6, ncuts): L <= cuts[j]
        fl = np.bincount(seg * (2 * ncol) + col, weights=p, minlength=nseg * (2 * ncol))
        self._floor_prefix = np.cumsum(fl.reshape(nseg, 2 * ncol), axis=0)[: cuts.size]
        self._beyond = float(np.sum(p[ltot > self.long_context_tokens]))

        # Compressed bands, per boundary B: compressible requests in (B, gamma B].
        # Uncompressed sums come from the global prefix (band ends are cuts), less the rare
        # requests whose output alone reaches B; compressed sums need one pass per B.
        nB, nG = band_ends.shape
        nf = 2 * ncol
        ib = np.searchsorted(cuts, b)
        ie = np.searchsorted(cuts, band_ends)
        self._band_plain = (self._prefix[:, ie] - self._prefix[:, ib][:, :, None]).transpose(1, 2, 0)
        self._band_plain_floor = self._floor_prefix[ie] - self._floor_prefix[ib][:, None, :]
        self._band_comp = np.zeros((nB, nG, 8))  # sum p, p a', p a'^2, p g', p kv', p k',
        # p L_in', p sum x'^2

        self._band_comp_floor = np.zeros((nB, nG, nf))
        starts = np.searchsorted(ltot, b, side="right")
        stops = np.searchsorted(ltot, band_ends[:, -1], side="right")
        for i, bb in enumerate(b):
            lo, hi = starts[i], stops[i]
            if hi <= lo:
                continue
            lt, lo_out, pp = ltot[lo:hi], lout[lo:hi], p[lo:hi]
            gseg = np.searchsorted(band_ends[i], lt, side="left")  # L <= floor(gamma_g B)
            bad = lo_out >= bb
            if np.any(bad):  # output alone fills the window: not compressible
                for j in range(nfeat):
                    self._band_plain[i, :, j] -= np.cumsum(
                        np.bincount(gseg[bad], weights=feats[j, lo:hi][bad], minlength=nG))
                self._band_plain_floor[i] -= np.cumsum(np.bincount(
                    gseg[bad] * nf + col[lo:hi][bad], weights=pp[bad], minlength=nG * nf
                ).reshape(nG, nf), axis=0)
                keep = ~bad
                lt, lo_out, pp, gseg = lt[keep], lo_out[keep], pp[keep], gseg[keep]
            kc = _ceil_div(bb - lo_out, chunk)
            ac = (kc + lo_out).astype(float)
            pa = pp * ac
            gc, kvc = engine_feats(kc.astype(float), (bb - lo_out).astype(float),
                                   lo_out.astype(float))
            cs = np.cumsum(np.stack([pp, pa, pa * ac, pp * gc, pp * kvc, pp * kc,
                                     pp * (bb - lo_out),
                                     pp * chunk_sq((bb - lo_out).astype(float))], 1), axis=0)
            pos = np.searchsorted(lt, band_ends[i], side="right")
            self._band_comp[i] = np.where(pos[:, None] > 0, cs[np.maximum(pos - 1, 0)], 0.0)
            self._band_comp_floor[i] = np.cumsum(np.bincount(
                gseg * nf + ncol + np.searchsorted(edges, bb - lo_out, side="left"),
                weights=pp, minlength=nG * nf).reshape(nG, nf),
                axis=0)

        # Keep only the floors some request can have: fewer columns for every query. With
        # no compression latency, compressed floors coincide with uncompressed ones: merge.
        if self.compression_latency_s == 0.0:
            half = ncol
            self._floor_prefix = self._floor_prefix[:, :half] + self._floor_prefix[:, half:]
            self._band_plain_floor = (self._band_plain_floor[..., :half]
                                      + self._band_plain_floor[..., half:])
            self._band_comp_floor = (self._band_comp_floor[..., :half]
                                     + self._band_comp_floor[..., half:])
            self.floor_s = self.floor_s[:half]
            self.floor_chunks = self.floor_chunks[:half]
            self.floor_tokens = self.floor_tokens[:half]
            self.floor_added_s = self.floor_added_s[:half]
        used = (self._floor_prefix[-1] > 0) | np.any(self._band_comp_floor[:, -1] > 0, axis=0)
        cols = np.flatnonzero(used)
        self._floor_prefix = np.ascontiguousarray(self._floor_prefix[:, cols])
        self._band_plain_floor = np.ascontiguousarray(self._band_plain_floor[..., cols])
        self._band_comp_floor = np.ascontiguousarray(self._band_comp_floor[..., cols])
        self.floor_s = self.floor_s[cols]
        self.floor_chunks = self.floor_chunks[cols]
        self.floor_tokens = self.floor_tokens[cols]
        self.floor_added_s = self.floor_added_s[cols]

    # -- helpers -------------------------------------------------------------------------
    @property
    def share_beyond_long_context(self) -> float:
        """Share of requests longer than the long-context window (they fit no pool)."""
        return self._beyond

    def slots(self, window_tokens) -> np.ndarray:
        """KV slots per instance at each window (vectorised :meth:`Profile.slots`)."""
        w = np.atleast_1d(np.asarray(window_tokens, dtype=np.int64))
        idx = np.minimum(np.searchsorted(self.cuts_tokens, w), self.cuts_tokens.size - 1)
        if np.all(self.cuts_tokens[idx] == w):
            return self._cut_slots[idx]
        uniq, inv = np.unique(w, return_inverse=True)
        per = np.array([self.profile.slots(int(x)) for x in uniq], dtype=np.int64)
        return per[inv].reshape(w.shape)

    def _h_s(self, window_tokens) -> np.ndarray:
        """Full-batch per-token iteration cost ``h_C = H slots(C) / C_cal`` in seconds/token."""
        return self.profile.h_ms * 1e-3 * self.slots(window_tokens) / self.profile.calib_tokens

    @staticmethod
    def _lookup(values, grid: np.ndarray, what: str, tol: float = 0.0) -> np.ndarray:
        """Indices of ``values`` in the sorted ``grid`` (within ``tol``); ValueError if absent."""
        v = np.atleast_1d(np.asarray(values, dtype=grid.dtype))
        idx = np.searchsorted(grid, v - tol)
        near = grid[np.minimum(idx, grid.size - 1)]
        if np.any(idx >= grid.size) or np.any(np.abs(near - v) > tol):
            raise ValueError(f"{what} {v} are not on this MomentTable's grid {grid}")
        return idx

    def _cut_index(self, tokens) -> np.ndarray:
        return self._lookup(tokens, self.cuts_tokens, "lengths")

    def _gamma_index(self, gamma) -> np.ndarray:
        return self._lookup(gamma, self.gammas, "gammas", 1e-9)

    def _boundary_index(self, b) -> np.ndarray:
        return self._lookup(b, self.boundaries_tokens, "boundaries")

    def _w_s(self, window_tokens) -> np.ndarray:
        """Full-batch fixed iteration cost ``W + s slots(C)`` in seconds (``s`` = 0 except in
        calibrated profiles)."""
        return (self.profile.w_ms * 1e-3
                + self.profile.seq_ms * 1e-3 * self.slots(window_tokens))

    def _combine(self, raw: np.ndarray, window_tokens, floor: np.ndarray) -> Moments:
        """Moments from the raw sums (last axis) at the full-batch iteration of a window."""
        w, h = self._w_s(window_tokens), self._h_s(window_tokens)
        mass, pa, paL, pa2, pa2L, pa2L2 = (raw[..., i] for i in range(6))
        s1 = w * pa + h * paL
        s2 = w * w * pa2 + 2.0 * w * h * pa2L + h * h * pa2L2
        return Moments(mass, s1, s2, floor, *(raw[..., i] for i in (1, 3, 6, 7, 8, 9, 10)))

    # -- queries ---------------------------------------------------------------------------
    def plain(self, lo_tokens, hi_tokens, window_tokens) -> Moments:
        """Requests with ``lo < L <= hi``, uncompressed, served at window ``window_tokens``."""
        i = self._cut_index(lo_tokens)
        j = self._cut_index(hi_tokens)
        raw = (self._prefix[:, j] - self._prefix[:, i]).T
        floor = self._floor_prefix[j] - self._floor_prefix[i]
        return self._combine(raw, window_tokens, floor)

    def band_plain(self, b_tokens, gamma, window_tokens) -> Moments:
        """Compressible requests in ``(B, gamma B]`` as they are (uncompressed) at a window."""
        i = self._boundary_index(b_tokens)
        g = self._gamma_index(gamma)
        return self._combine(self._band_plain[i, g], window_tokens,
                             self._band_plain_floor[i, g])

    def band_compressed(self, b_tokens, gamma) -> Moments:
        """Compressible requests in ``(B, gamma B]`` cut to ``B`` tokens, at window ``B``."""
        i = self._boundary_index(b_tokens)
        g = self._gamma_index(gamma)
        bb = self.boundaries_tokens[i].astype(float)
        b_tok = self.boundaries_tokens[i]
        t_iter = self._w_s(b_tok) + self._h_s(b_tok) * bb
        raw = self._band_comp[i, g]
        return Moments(raw[:, 0], t_iter * raw[:, 1], t_iter * t_iter * raw[:, 2],
                       self._band_comp_floor[i, g], *(raw[:, i] for i in range(1, 8)))

    def pool_parts(self, windows_tokens, gammas) -> list[PoolParts]:
        """Moments of ``K`` ordered pools for candidate routings, split by ``p_c``.

        ``windows_tokens``: ``(n, K)`` ascending windows, the last the long context.
        ``gammas``: ``(n, K-1)`` band ratio at each boundary (1 = no compression).
        Pool ``k`` serves ``(W_{k-1}, W_k]`` less the share ``p_c`` of compressible requests
        compressed down from its bottom band, plus those compressed into it from the band
        above its window (docs/model.md §4). A band may not reach past the next window
        (``floor(gamma_k W_k) <= W_{k+1}``). None of this depends on ``p_c``: a search over
        ``p_c`` (or a planner that reuses its tables) keeps the parts.
        """
        w = np.atleast_2d(np.asarray(windows_tokens, dtype=np.int64))
        gm = np.atleast_2d(np.asarray(gammas, dtype=float)).reshape(w.shape[0], -1)
        if w.shape[1] > 1:
            ends = band_end_tokens(w[:, :-1], gm)
            if np.any(ends > w[:, 1:]) or np.any(np.diff(w, axis=1) <= 0):
                raise ValueError("windows must ascend and each band end gamma*W_k stay <= W_{k+1}")
        out = []
        k_pools = w.shape[1]
        zero = np.zeros(w.shape[0], dtype=np.int64)
        for k in range(k_pools):
            lo = zero if k == 0 else w[:, k - 1]
            out.append(PoolParts(
                base=self.plain(lo, w[:, k], w[:, k]),
                lost=self.band_plain(w[:, k - 1], gm[:, k - 1], w[:, k]) if k > 0 else None,
                gained=self.band_compressed(w[:, k], gm[:, k]) if k < k_pools - 1 else None))
        return out

    def pools(self, windows_tokens, gammas, compressible_share: float) -> list[Moments]:
        """Moments of ``K`` ordered pools for candidate routings at ``p_c`` (arrays over
        candidates); see :meth:`pool_parts` for the arguments."""
        return [p.at(compressible_share) for p in self.pool_parts(windows_tokens, gammas)]


@dataclass(frozen=True)
class PoolParts:
    """One pool's moments as ``base - p_c lost + p_c gained`` (docs/model.md §4).

    base: its uncompressed range at its window; lost: the compressible band below it
    (served elsewhere when compressed), ``None`` for the first pool; gained: the band above
    it cut to its window, ``None`` for the last pool.
    """

    base: Moments
    lost: Moments | None
    gained: Moments | None

    def at(self, compressible_share: float) -> Moments:
        """The pool's moments when a share ``p_c`` of band requests is compressed."""
        pc = float(compressible_share)
        m = self.base
        if self.lost is not None and pc > 0:
            m = m - self.lost.scaled(pc)
        if self.gained is not None and pc > 0:
            m = m + self.gained.scaled(pc)
        return m


def pool_load(moments: Moments, table: MomentTable, window_tokens, rate_rps: float) -> PoolLoad:
    """The slot model's :class:`PoolLoad` of pools with these moments at total arrival rate
    ``rate_rps``: :meth:`fleetopt_milp.service.SlotServiceModel.pool_load`."""
    from .service import SLOT

    return SLOT.pool_load(moments, table, window_tokens, rate_rps)
