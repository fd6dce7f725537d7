"""numba kernels of the discrete-event simulator (see :mod:`fleetopt_milp.simulator`).

Two kernels, both compiled with ``@njit(cache=True)`` and both single-threaded (parallelism
is across independent replications):

- :func:`fcfs_multi` - the ``slot`` fidelity: FCFS M/G/c queues whose servers are KV slots
  (docs/model.md §3). One binary min-heap of slot free times per queue.
- :func:`engine_run` - the ``engine`` fidelity: continuous batching per instance (docs/model.md
  §2) with chunked prefill, a KV block budget and preemption by recompute.

Times are seconds, lengths tokens.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["fcfs_multi", "engine_run", "window_busy"]


@njit(cache=True)
def fcfs_multi(arrival, service, queue, heap_off, heap_size):  # pragma: no cover - numba
    """Start times of FCFS multi-server queues (the ``slot`` fidelity).

    ``arrival`` (s, non-decreasing), ``service`` (s) and ``queue`` (int, ``-1`` = not
    served) per request; queue ``q`` has ``heap_size[q]`` servers whose free times live in
    a binary min-heap at ``heap[heap_off[q]:heap_off[q] + heap_size[q]]``. Each arrival
    takes the server that frees first (FCFS with a central queue): ``start = max(arrival,
    min free time)``, then that server frees at ``start + service``. Requests of queue
    ``-1`` or of a queue without servers get ``start = inf``.
    """
    n = arrival.shape[0]
    total = 0
    for q in range(heap_size.shape[0]):
        total = max(total, heap_off[q] + heap_size[q])
    heap = np.full(total, -np.inf)
    start = np.empty(n)
    for i in range(n):
        q = queue[i]
        if q < 0 or heap_size[q] == 0:
            start[i] = np.inf
            continue
        off = heap_off[q]
        size = heap_size[q]
        s = heap[off]
        a = arrival[i]
        if a > s:
            s = a
        start[i] = s
        v = s + service[i]
        # Replace the root with v and sift down.
        pos = 0
        while True:
            child = 2 * pos + 1
            if child >= size:
                break
            c2 = child + 1
            cv = heap[off + child]
            if c2 < size:
                c2v = heap[off + c2]
                if c2v < cv:
                    child = c2
                    cv = c2v
            if cv >= v:
                break
            heap[off + pos] = cv
            pos = child
        heap[off + pos] = v
    return start


# ---------------------------------------------------------------------------------------
# engine fidelity
# ---------------------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _tree_fix(tree, key, leaves, j):  # pragma: no cover - numba
    """Restore the min tournament tree after ``key[j]`` changed (``tree[1]`` = argmin)."""
    pos = (j + leaves) // 2
    while pos >= 1:
        a = tree[2 * pos]
        b = tree[2 * pos + 1]
        if b < 0 or (a >= 0 and key[a] <= key[b]):
            tree[pos] = a
        else:
            tree[pos] = b
        pos //= 2


@njit(cache=True)
def window_busy(busy_from, finish, queue, edges, n_queues):  # pragma: no cover - numba
    """Busy seconds and completions per (window, queue) for the statistics of a run.

    Request ``i`` of queue ``queue[i]`` (``-1`` skipped) is busy on ``[busy_from[i],
    finish[i]]``; windows are ``[edges[b], edges[b + 1])``. Returns ``busy[b, q]`` (the
    overlap in seconds) and ``done[b, q]`` (requests finishing inside window ``b``).
    """
    nb = edges.shape[0] - 1
    busy = np.zeros((nb, n_queues))
    done = np.zeros((nb, n_queues))
    t_lo = edges[0]
    t_hi = edges[nb]
    for i in range(busy_from.shape[0]):
        q = queue[i]
        if q < 0:
            continue
        s = busy_from[i]
        e = finish[i]
        if not (e > t_lo and s < t_hi):
            if e == t_lo and nb > 0:
                done[0, q] += 1.0
            continue
        b = np.searchsorted(edges, max(s, t_lo), side="right") - 1
        while b < nb and edges[b] < e:
            lo = max(s, edges[b])
            hi = min(e, edges[b + 1])
            if hi > lo:
                busy[b, q] += hi - lo
            if edges[b] <= e < edges[b + 1]:
                done[b, q] += 1.0
            b += 1
    return busy, done


@njit(cache=True, inline="always")
def _ceil_div(a, b):  # pragma: no cover - numba
    return -(-a // b)


# Rows of the batch-slot state array ``sl`` of :func:`engine_run` (one column per slot):
# request id, KV tokens held, prefill target, KV blocks held, tokens generated, output length.
REQ, KV, TGT, BLK, DEC, LOUT = 0, 1, 2, 3, 4, 5


@njit(cache=True, inline="always")
def _preempt_longest(j, t, base, n, sl, free_blk, q_head, q_tail, nxt, dec, held, admit_t,
                     preempted):  # pragma: no cover - numba
    """Preempt instance ``j``'s longest sequence (most KV tokens; ties: latest arrival):
    free its blocks and put it back at the head of the queue. Returns the new batch size."""
    vi = 0
    for i in range(1, n):
        if sl[KV, base + i] > sl[KV, base + vi] or (
                sl[KV, base + i] == sl[KV, base + vi] and sl[REQ, base + i] > sl[REQ, base + vi]):
            vi = i
    v = sl[REQ, base + vi]
    free_blk[j] += sl[BLK, base + vi]
    dec[v] = sl[DEC, base + vi]
    held[v] += t - admit_t[v]
    preempted[v] += 1
    last = base + n - 1
    sl[REQ, base + vi] = sl[REQ, last]
    sl[KV, base + vi] = sl[KV, last]
    sl[TGT, base + vi] = sl[TGT, last]
    sl[BLK, base + vi] = sl[BLK, last]
    sl[DEC, base + vi] = sl[DEC, last]
    sl[LOUT, base + vi] = sl[LOUT, last]
    nxt[v] = q_head[j]
    q_head[j] = v
    if q_tail[j] < 0:
        q_tail[j] = v
    return n - 1


@njit(cache=True, inline="always")
def _schedule(j, t, inst_alloc, run_off, n_run, sl, free_blk, q_head, q_tail, nxt, iter_end,
              dec, admit_t, first_admit, held, preempted, lin, lout, max_batch, block_tokens,
              cost, chunk_tokens, mac_m, mac_t0, mac_ctx0, macro, may_admit,
              macro_cap):  # pragma: no cover
    """Schedule instance ``j``'s next event at time ``t`` and set ``iter_end[j]``.

    1. Each decoding sequence whose next token crosses a block boundary takes a block;
       while blocks are short, the longest sequence is preempted (recompute).
    2. Admission from the head of the queue (FCFS) while the batch is below its cap and the
       free blocks hold the whole prompt (prompt + generated tokens after a preemption);
       none in an iteration that preempted unless the batch is empty, and none unless
       ``may_admit`` (the end of a scheduler group) or the batch is empty.
    3. ``iter_end = t + W + s n + P n_prefill + p x_prefill + H sum_decode (kv + 1) / C_cal``;
       ``inf`` if idle (``s`` = the profile's per-sequence cost; ``P`` = a chunk's fixed cost,
       ``H``; ``p`` = the compute per prompt token and ``x_prefill`` the prompt tokens the
       step's chunks carry, at most ``chunk`` each: prefill charged pro rata; ``s`` and
       ``p`` are 0 unless calibrated).
    4. Macro-step (``macro``): when every sequence decodes, the next ``m`` iterations are
       known in closed form - iteration ``i`` costs ``W + H (ctx0 + i n) / C_cal`` - up to
       the first completion, so the event covers ``m`` iterations (``mac_m[j]``) if the
       free blocks hold their growth and this boundary did not preempt (admission would
       be retried at the next one), and at most ``macro_cap`` iterations (the rest of the
       scheduler group). Until the first completion no waiting request can be
       admitted (the queue's head did not fit, or the batch is full) except one arriving
       into an empty queue, which cuts the step short (:func:`_macro_cut`). Same sample
       path as single steps, fewer events.
    """
    a = inst_alloc[j]
    bt = block_tokens[a]
    base = run_off[j]
    n = n_run[j]
    ch = chunk_tokens[a]
    npf = 0
    pft = 0
    ctx = 0
    short = 0
    for i in range(base, base + n):
        if sl[KV, i] >= sl[TGT, i]:
            if sl[KV, i] + 1 > sl[BLK, i] * bt:
                if free_blk[j] > 0:
                    sl[BLK, i] += 1
                    free_blk[j] -= 1
                else:
                    short += 1
            ctx += sl[KV, i] + 1
        else:
            npf += 1
            pft += min(ch, sl[TGT, i] - sl[KV, i])
    preempted_now = short > 0
    while short > 0:
        n = _preempt_longest(j, t, base, n, sl, free_blk, q_head, q_tail, nxt, dec, held,
                             admit_t, preempted)
        short = 0
        for i in range(base, base + n):
            if sl[KV, i] >= sl[TGT, i] and sl[KV, i] + 1 > sl[BLK, i] * bt:
                if free_blk[j] > 0:
                    sl[BLK, i] += 1
                    free_blk[j] -= 1
                else:
                    short += 1
    if preempted_now:
        npf = 0
        pft = 0
        ctx = 0
        for i in range(base, base + n):
            if sl[KV, i] >= sl[TGT, i]:
                ctx += sl[KV, i] + 1
            else:
                npf += 1
                pft += min(ch, sl[TGT, i] - sl[KV, i])
    if ((not preempted_now) or n == 0) and (may_admit or n == 0):
        cap = max_batch[a]
        while n < cap and q_head[j] >= 0:
            r = q_head[j]
            tgt = lin[r] + dec[r]
            nb = _ceil_div(tgt, bt)
            if nb > free_blk[j]:
                break
            q_head[j] = nxt[r]
            if q_head[j] < 0:
                q_tail[j] = -1
            nxt[r] = -1
            free_blk[j] -= nb
            admit_t[r] = t
            if np.isnan(first_admit[r]):
                first_admit[r] = t
            k = base + n
            sl[REQ, k] = r
            sl[KV, k] = 0
            sl[TGT, k] = tgt
            sl[BLK, k] = nb
            sl[DEC, k] = dec[r]
            sl[LOUT, k] = lout[r]
            n += 1
            npf += 1
            pft += min(ch, tgt)
    n_run[j] = n
    mac_m[j] = 1
    if n == 0:
        iter_end[j] = np.inf
        return
    m = 1
    # Not after a preemption: admission was skipped, the next boundary retries it.
    if macro and npf == 0 and not preempted_now:
        m = sl[LOUT, base] - sl[DEC, base]
        for i in range(base + 1, base + n):
            m = min(m, sl[LOUT, i] - sl[DEC, i])
        m = min(m, macro_cap)
        if m > 1:
            grow = 0
            for i in range(base, base + n):
                grow += max(0, _ceil_div(sl[KV, i] + m, bt) - sl[BLK, i])
            if grow > free_blk[j]:
                m = 1
    hc = cost[a, 2]
    if m == 1:
        iter_end[j] = (t + cost[a, 0] + cost[a, 1] * n + cost[a, 3] * npf + cost[a, 4] * pft
                       + hc * ctx)
    else:
        mac_m[j] = m
        mac_t0[j] = t
        mac_ctx0[j] = ctx
        iter_end[j] = (t + m * (cost[a, 0] + cost[a, 1] * n)
                       + hc * (m * ctx + n * (m * (m - 1) // 2)))


@njit(cache=True)
def _macro_end(k, t0, ctx0, n, w, hc):  # pragma: no cover - numba
    """End time of the ``k``-th iteration (1-based) of a macro-step started at ``t0``."""
    return t0 + k * w + hc * (k * ctx0 + n * (k * (k - 1) // 2))


@njit(cache=True)
def _macro_cut(j, ta, mac_m, mac_t0, mac_ctx0, n_run, inst_alloc, iter_end, w_s, h_s,
               calib_tokens, seq_s):  # pragma: no cover - numba
    """Shorten instance ``j``'s macro-step to the iteration running at ``ta``, so a request
    arriving at ``ta`` is admitted at the next iteration boundary as with single steps."""
    a = inst_alloc[j]
    n = n_run[j]
    w = w_s[a] + seq_s[a] * n
    hc = h_s[a] / calib_tokens[a]
    lo = 1
    hi = mac_m[j]
    while lo < hi:  # smallest k with end(k) >= ta
        mid = (lo + hi) // 2
        if _macro_end(mid, mac_t0[j], mac_ctx0[j], n, w, hc) >= ta:
            hi = mid
        else:
            lo = mid + 1
    mac_m[j] = lo
    iter_end[j] = _macro_end(lo, mac_t0[j], mac_ctx0[j], n, w, hc)


@njit(cache=True)
def engine_run(arrival, alloc, lin, lout, inst_off, inst_count, max_batch, kv_blocks,
               block_tokens, chunk_tokens, w_s, h_s, calib_tokens, seq_s, pf_s, pt_s,
               sched_steps, macro=True):  # pragma: no cover
    """Continuous batching per instance (the ``engine`` fidelity, docs/model.md §2).

    Per request (arrival order): ``arrival`` (s), ``alloc`` (allocation, ``-1`` = not
    served), ``lin`` prompt tokens as served, ``lout`` output tokens. Per allocation:
    instances ``inst_off[a]:inst_off[a] + inst_count[a]``, batch cap ``max_batch``, KV
    budget ``kv_blocks`` of ``block_tokens``, prefill ``chunk_tokens``, ``w_s`` = W (s),
    ``h_s`` = H (s) at ``calib_tokens`` context, ``seq_s`` = s (s per decoding sequence),
    ``pf_s`` = P (s per prefill chunk in a step, ``H``), ``pt_s`` = p (s per prompt token
    a chunk carries: prefill charged pro rata), ``sched_steps`` = M (iterations per
    scheduler call, vLLM's ``--num-scheduler-steps``).

    Rules (documented in :mod:`fleetopt_milp.simulator`):

    - dispatch at arrival to the allocation's instance with the fewest outstanding requests
      (running + waiting; ties to the lowest index), FCFS queue per instance; an idle
      instance starts at the arrival, with every request arriving at that instant;
    - an iteration's time is ``W + s n + P n_prefill + p x_prefill + H sum_decode (kv + 1)
      / C_cal``: a prefilling sequence costs one calibration context per chunk plus the
      compute of the prompt tokens its chunk carries (``x_prefill`` in all, at most
      ``chunk`` each); a decoding one its live context;
    - a prefilling sequence advances ``chunk`` tokens per iteration; its first token is
      out at the end of the iteration that completes its prefill; then one token per
      iteration until ``lout`` tokens (``ceil(L_in / chunk) + L_out`` iterations in all);
    - admission and preemption as in :func:`_schedule`; with ``M > 1`` an instance admits
      only at the end of a group of ``M`` iterations (or into an empty batch, which starts
      a new group), as multi-step scheduling does.

    Sequence state lives in per-instance batch regions (contiguous arrays) and all-decode
    stretches advance as macro-steps (``macro``, see :func:`_schedule`) for speed.
    Returns ``(first_admit, first_token, finish, held, preempted)`` per request: times in
    s, ``held`` = seconds holding a batch slot, ``preempted`` = count. Requests that no
    instance serves get ``inf`` times.
    """
    n = arrival.shape[0]
    n_alloc = inst_count.shape[0]
    # Per allocation: W, s, H per KV token read, P, p (seconds).
    cost = np.empty((n_alloc, 5))
    for a in range(n_alloc):
        cost[a, 0] = w_s[a]
        cost[a, 1] = seq_s[a]
        cost[a, 2] = h_s[a] / calib_tokens[a]
        cost[a, 3] = pf_s[a]
        cost[a, 4] = pt_s[a]
    ni = 0
    for a in range(n_alloc):
        ni = max(ni, inst_off[a] + inst_count[a])
    m = max(ni, 1)
    inst_alloc = np.zeros(m, dtype=np.int64)
    run_off = np.zeros(m + 1, dtype=np.int64)
    for a in range(n_alloc):
        for j in range(inst_off[a], inst_off[a] + inst_count[a]):
            inst_alloc[j] = a
    for j in range(ni):
        run_off[j + 1] = run_off[j] + max_batch[inst_alloc[j]]
    total = max(run_off[ni], 1)
    sl = np.zeros((6, total), dtype=np.int64)  # rows REQ, KV, TGT, BLK, DEC, LOUT
    n_run = np.zeros(m, dtype=np.int64)
    free_blk = np.zeros(m, dtype=np.int64)
    for j in range(ni):
        free_blk[j] = kv_blocks[inst_alloc[j]]
    outstanding = np.zeros(m, dtype=np.int64)
    q_head = np.full(m, -1, dtype=np.int64)
    q_tail = np.full(m, -1, dtype=np.int64)
    iter_end = np.full(m, np.inf)
    mac_m = np.ones(m, dtype=np.int64)
    mac_t0 = np.zeros(m)
    mac_ctx0 = np.zeros(m, dtype=np.int64)
    grp = np.zeros(m, dtype=np.int64)  # iterations into the current scheduler group
    leaves = 1
    while leaves < ni:
        leaves *= 2
    tree = np.full(2 * leaves, -1, dtype=np.int64)
    for j in range(ni):
        tree[leaves + j] = j
    for pos in range(leaves - 1, 0, -1):
        a_ = tree[2 * pos]
        b_ = tree[2 * pos + 1]
        tree[pos] = a_ if (b_ < 0 or (a_ >= 0 and iter_end[a_] <= iter_end[b_])) else b_

    nxt = np.full(n, -1, dtype=np.int64)
    dec = np.zeros(n, dtype=np.int64)
    admit_t = np.zeros(n)
    first_admit = np.full(n, np.nan)
    first_token = np.full(n, np.nan)
    finish = np.full(n, np.nan)
    held = np.zeros(n)
    preempted = np.zeros(n, dtype=np.int64)

    i_arr = 0
    while True:
        jm = tree[1]
        tm = iter_end[jm] if jm >= 0 else np.inf
        ta = arrival[i_arr] if i_arr < n else np.inf
        if ta == np.inf and tm == np.inf:
            break
        if tm < ta:
            # Instance jm completes its iteration at tm (or, with an empty batch, wakes up):
            # every sequence advances one step, then the next iteration is scheduled.
            j = jm
            base = run_off[j]
            cnt = n_run[j]
            ch = chunk_tokens[inst_alloc[j]]
            bt = block_tokens[inst_alloc[j]]
            steps = mac_m[j]
            i = base + cnt - 1
            while i >= base:
                done = False
                if sl[KV, i] < sl[TGT, i]:
                    sl[KV, i] = min(sl[KV, i] + ch, sl[TGT, i])
                    if sl[KV, i] == sl[TGT, i]:
                        r = sl[REQ, i]
                        if np.isnan(first_token[r]):
                            first_token[r] = tm
                        done = sl[DEC, i] >= sl[LOUT, i]
                else:
                    sl[KV, i] += steps
                    sl[DEC, i] += steps
                    done = sl[DEC, i] >= sl[LOUT, i]
                    if steps > 1 and not done:  # blocks written during the macro-step
                        need = _ceil_div(sl[KV, i], bt)
                        if need > sl[BLK, i]:
                            free_blk[j] -= need - sl[BLK, i]
                            sl[BLK, i] = need
                if done:
                    r = sl[REQ, i]
                    finish[r] = tm
                    dec[r] = sl[DEC, i]
                    free_blk[j] += sl[BLK, i]
                    held[r] += tm - admit_t[r]
                    outstanding[j] -= 1
                    last = base + cnt - 1
                    sl[REQ, i] = sl[REQ, last]
                    sl[KV, i] = sl[KV, last]
                    sl[TGT, i] = sl[TGT, last]
                    sl[BLK, i] = sl[BLK, last]
                    sl[DEC, i] = sl[DEC, last]
                    sl[LOUT, i] = sl[LOUT, last]
                    cnt -= 1
                i -= 1
            n_run[j] = cnt
            ms = sched_steps[inst_alloc[j]]
            grp[j] = 0 if cnt == 0 else (grp[j] + steps) % ms
            _schedule(j, tm, inst_alloc, run_off, n_run, sl, free_blk, q_head, q_tail, nxt,
                      iter_end, dec, admit_t, first_admit, held, preempted, lin, lout,
                      max_batch, block_tokens, cost, chunk_tokens, mac_m, mac_t0, mac_ctx0,
                      macro, grp[j] == 0, (1 << 62) if ms == 1 else ms - grp[j])
            _tree_fix(tree, iter_end, leaves, j)
        else:
            r = i_arr
            i_arr += 1
            a = alloc[r]
            if a < 0 or inst_count[a] == 0:
                first_admit[r] = np.inf
                first_token[r] = np.inf
                finish[r] = np.inf
                continue
            # Join the shortest queue: fewest outstanding requests, lowest index on ties.
            j = inst_off[a]
            best = outstanding[j]
            for k in range(inst_off[a] + 1, inst_off[a] + inst_count[a]):
                if outstanding[k] < best:
                    best = outstanding[k]
                    j = k
            outstanding[j] += 1
            was_empty = q_head[j] < 0
            if q_tail[j] >= 0:
                nxt[q_tail[j]] = r
            else:
                q_head[j] = r
            q_tail[j] = r
            if (mac_m[j] > 1 and was_empty and n_run[j] < max_batch[alloc[r]]
                    and sched_steps[a] == 1):
                _macro_cut(j, ta, mac_m, mac_t0, mac_ctx0, n_run, inst_alloc, iter_end, w_s,
                           h_s, calib_tokens, seq_s)
                _tree_fix(tree, iter_end, leaves, j)
            elif iter_end[j] == np.inf:
                # Wake the idle instance at ta; arrivals at the same instant join its batch.
                iter_end[j] = ta
                _tree_fix(tree, iter_end, leaves, j)
    return first_admit, first_token, finish, held, preempted
