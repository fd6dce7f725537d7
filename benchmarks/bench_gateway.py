"""The C&R gateway under load, against real local upstreams on loopback.

Writes the ``gateway-load`` section of benchmarks/RESULTS.md. Run:
``.venv/bin/python benchmarks/bench_gateway.py`` (about a minute). Three processes serve
on 127.0.0.1 at ephemeral ports: two fake OpenAI upstreams (pools ``short`` and ``long``,
each answering after a fixed delay) and the gateway; this process is the client, with
500 requests in flight. The same requests are sent straight to their upstream and through
the gateway in the same run, so the gateway's added latency is measured against a direct
baseline. A last phase kills the long pool's upstream mid-run.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import signal
import socket
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _results import md_table, write_section  # noqa: E402

from fleetopt_milp.gateway.corpus import prose_documents, question_sentences  # noqa: E402
from fleetopt_milp.gateway.fake_upstream import expected_stream  # noqa: E402
from fleetopt_milp.gateway.router import Router, RouterPool  # noqa: E402
from fleetopt_milp.gateway.server import KEEPALIVE_S, SERVER_KEEPALIVE_S  # noqa: E402
from fleetopt_milp.gateway.tokenizer import load_tokenizer  # noqa: E402

CONCURRENCY = 500
LIGHT = 16
N_REQUESTS = 4000
DELAY_S = 0.02
WINDOWS = (1024, 8192)
GAMMA = 2.0
CHUNKS = 8


def _router() -> Router:
    return Router((RouterPool("short", 0, WINDOWS[0]), RouterPool("long", WINDOWS[0], WINDOWS[1])),
                  (GAMMA,), load_tokenizer(), 64)


def _serve(make_app, args, q, keep_alive_s: float = 5) -> None:
    """Child process: build the app, bind 127.0.0.1:0, report the port, serve (idle
    connections closed after ``keep_alive_s``, uvicorn's and vLLM's default 5 s)."""
    import uvicorn

    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)  # connections queue from now on, before uvicorn starts accepting
    q.put(sock.getsockname()[1])
    config = uvicorn.Config(make_app(*args), log_level="error", backlog=4096,
                            timeout_keep_alive=keep_alive_s)
    uvicorn.Server(config).run(sockets=[sock])


def _upstream_app(role: str):
    from fleetopt_milp.gateway.fake_upstream import fake_openai_app

    return fake_openai_app(role, delay_s=DELAY_S, chunks=CHUNKS)


def _gateway_app(upstreams: dict):
    from fleetopt_milp.gateway.server import GatewayConfig, create_app

    return create_app(GatewayConfig(_router(), upstreams, timeout_s=30.0))


def _start(ctx, make_app, *args, keep_alive_s: float = 5):
    q = ctx.Queue()
    p = ctx.Process(target=_serve, args=(make_app, args, q, keep_alive_s), daemon=True)
    p.start()
    return p, f"http://127.0.0.1:{q.get(timeout=60)}"


def _requests(router: Router) -> list[tuple[dict, str, dict]]:
    """(body sent, expected pool, body the upstream should receive), for N_REQUESTS."""
    tok = router.tokenizer
    docs = [t for _, t in prose_documents()]
    corpus = "\n\n".join(docs)
    ids = tok.encode(corpus)
    qs = question_sentences()
    code = Path(__file__).read_text()
    out = []
    for i in range(N_REQUESTS):
        kind = ("short", "short", "stream", "long", "band", "short", "band-code", "short",
                "long", "band")[i % 10]
        q = qs[i % len(qs)]
        if kind in ("short", "stream"):
            body = {"prompt": q, "max_tokens": 64}
        elif kind == "long":
            body = {"prompt": q, "max_tokens": 2000}
        elif kind == "band":
            start = (i * 7919) % (len(ids) - 2000)
            body = {"prompt": tok.decode(ids[start:start + 1100 + i % 700]) + "\n\n" + q,
                    "max_tokens": 64}
        else:
            body = {"prompt": (code * 3)[(i * 131) % len(code):][:5000], "max_tokens": 64}
        body["user"] = str(i)
        if kind == "stream":
            body["stream"] = True
        routed = router.route(body)
        out.append((body, routed.decision.pool, routed.body))
    return out


async def _fire(url_of, reqs, on_done=None, concurrency=CONCURRENCY):
    """Send every request with ``concurrency`` in flight; returns per request (status,
    seconds, pool header, response bytes, gateway-ms header), and the wall time."""
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    results = [None] * len(reqs)
    done = 0
    connector = aiohttp.TCPConnector(limit=concurrency, keepalive_timeout=KEEPALIVE_S)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as client:
        async def one(i, body):
            nonlocal done
            async with sem:
                t0 = time.perf_counter()
                try:
                    async with client.post(url_of(i) + "/v1/completions", json=body) as r:
                        content = await r.read()
                    res = (r.status, time.perf_counter() - t0,
                           r.headers.get("x-fleetopt-pool"), content,
                           float(r.headers.get("x-fleetopt-gateway-ms", "nan")))
                except (TimeoutError, aiohttp.ClientError) as exc:
                    res = (0, time.perf_counter() - t0, None, repr(exc).encode(), float("nan"))
            results[i] = res
            done += 1
            if on_done is not None:
                on_done(done)

        t0 = time.perf_counter()
        await asyncio.gather(*(one(i, b) for i, b in enumerate(reqs)))
        wall = time.perf_counter() - t0
    return results, wall


def _failures(reqs, results) -> str:
    """The distinct reasons of non-200 answers, with counts (upstream URLs elided)."""
    import json
    import re

    reasons = Counter()
    for (_, pool, _), (status, _, _, content, _) in zip(reqs, results):
        if status == 200:
            continue
        try:
            msg = json.loads(content)["error"]["message"]
        except (ValueError, KeyError, TypeError):
            msg = content.decode(errors="replace")
        msg = re.sub(r"http://127\.0\.0\.1:\d+|127\.0\.0\.1:\d+", "URL", msg)[:90]
        reasons[f"{pool}, {status or 'client error'}: {msg}"] += 1
    return "; ".join(f"{n} x {r}" for r, n in reasons.most_common(6)) or "none"


def _check(reqs, results) -> tuple[int, int, int]:
    """(lost or failed, misrouted, streams not byte-identical) of a gateway phase."""
    import json

    lost = misrouted = bad_stream = 0
    for (body, pool, fwd), (status, _, header, content, _) in zip(reqs, results):
        if status != 200:
            lost += 1
            continue
        if body.get("stream"):
            bad_stream += content != expected_stream(pool, fwd, CHUNKS)
            misrouted += header != pool
            continue
        got = json.loads(content)
        misrouted += header != pool or got["pool"] != pool or got["received"] != fwd
    return lost, misrouted, bad_stream


def main() -> str:
    ctx = mp.get_context("fork")  # children start before this process runs any thread
    router = _router()
    reqs = _requests(router)
    procs = {}
    procs["short"], short_url = _start(ctx, _upstream_app, "short")
    procs["long"], long_url = _start(ctx, _upstream_app, "long")
    ups = {"short": short_url, "long": long_url}
    procs["gateway"], gw_url = _start(ctx, _gateway_app, ups, keep_alive_s=SERVER_KEEPALIVE_S)
    kinds = Counter(("compressed" if p == "short" and f is not b and f.get("prompt") != b.get(
        "prompt") else p) for b, p, f in reqs)
    try:
        direct_bodies = [f for _, _, f in reqs]
        direct, direct_wall = asyncio.run(_fire(lambda i: ups[reqs[i][1]], direct_bodies))
        sent = [b for b, _, _ in reqs]
        via, via_wall = asyncio.run(_fire(lambda i: gw_url, sent))
        lost, misrouted, bad_stream = _check(reqs, via)
        n_light = N_REQUESTS // 5
        light_direct, light_dw = asyncio.run(_fire(lambda i: ups[reqs[i][1]],
                                                   direct_bodies[:n_light], concurrency=LIGHT))
        light_via, light_vw = asyncio.run(_fire(lambda i: gw_url, sent[:n_light],
                                                concurrency=LIGHT))

        def kill_long(done):
            if done == N_REQUESTS // 3 and procs["long"].is_alive():
                os.kill(procs["long"].pid, signal.SIGKILL)

        killed, _ = asyncio.run(_fire(lambda i: gw_url, sent, on_done=kill_long))
    finally:
        for p in procs.values():
            if p.is_alive():
                p.kill()
            p.join(5)
    rows = []
    for label, d_res, d_wall, v_res, v_wall in (
            (f"{CONCURRENCY}", direct, direct_wall, via, via_wall),
            (f"{LIGHT}", light_direct, light_dw, light_via, light_vw)):
        d_ok = [r[1] for r in d_res if r[0] == 200]
        v_ok = [r[1] for r in v_res if r[0] == 200]
        d50, d99 = (np.percentile(d_ok, q) * 1e3 for q in (50, 99))
        v50, v99 = (np.percentile(v_ok, q) * 1e3 for q in (50, 99))
        g50, g99 = (np.nanpercentile([r[4] for r in v_res], q) for q in (50, 99))
        rows += [[label, "direct to upstream", f"{len(d_ok)}/{len(d_res)}",
                  f"{len(d_res) / d_wall:,.0f}", f"{d50:.1f}", f"{d99:.1f}", "-", "-", "-"],
                 [label, "through the gateway", f"{len(v_ok)}/{len(v_res)}",
                  f"{len(v_res) / v_wall:,.0f}", f"{v50:.1f}", f"{v99:.1f}", f"{v50 - d50:+.1f}",
                  f"{v99 - d99:+.1f}", f"{g50:.2f} / {g99:.2f}"]]
    by_pool = Counter((p, r[0]) for (_, p, _), r in zip(reqs, killed))
    n_streams = sum(1 for b, _, _ in reqs if b.get("stream"))
    kill_rows = [[pool, by_pool[(pool, 200)], by_pool[(pool, 502)],
                  sum(v for (p, s), v in by_pool.items() if p == pool and s not in (200, 502))]
                 for pool in ("short", "long")]
    return (f"{N_REQUESTS:,} requests with {CONCURRENCY} in flight, over HTTP on loopback; "
            f"pools `short` (window {WINDOWS[0]:,}) and `long` ({WINDOWS[1]:,}), gamma "
            f"{GAMMA:g}; each fake upstream answers after {DELAY_S * 1e3:g} ms. Mix: "
            f"{kinds['short']} to `short` ({n_streams} of them streamed, {CHUNKS} SSE events "
            f"each), {kinds['compressed']} band prose requests (1.1-1.8K tokens) compressed "
            f"into `short`, {kinds['long']} to `long` (long outputs and band code, which the "
            "gate keeps whole). Latency is per request at the client; the direct baseline "
            "sends each upstream exactly the body the gateway forwards. Client, gateway and "
            "upstreams share the machine's 2 cores.\n\n"
            + md_table(["in flight", "path", "answered 200", "throughput req/s", "p50 ms",
                        "p99 ms", "added p50 ms", "added p99 ms",
                        "gateway's own time p50 / p99 ms"], rows)
            + f"\n\nAt {CONCURRENCY} in flight the gateway, one Python process, is the "
            "bottleneck: its throughput is its CPU capacity on this shared machine, and the "
            "added latency is mostly queueing for it (Little's law: in flight / throughput). "
            f"The {LIGHT}-in-flight rows (the first {N_REQUESTS // 5:,} requests) show the "
            "overhead per request without that queue. *Gateway's own time* is the "
            "`x-fleetopt-gateway-ms` header: parse, count, gate and compress, before "
            "forwarding."
            f"\n\n**Correctness.** Through the gateway at {CONCURRENCY} in flight: {lost} "
            f"requests lost or failed ({_failures(reqs, via)}), {misrouted} misrouted "
            f"(pool header, upstream's pool and forwarded body all checked against the "
            f"router's decision made in the client), {bad_stream} of {n_streams} streams not "
            "byte-identical to the upstream's.\n\n"
            f"**Upstream killed mid-run.** Same {N_REQUESTS:,} requests; the `long` upstream "
            f"is killed (SIGKILL) once {N_REQUESTS // 3:,} have been answered:\n\n"
            + md_table(["pool", "200", "502", "other"], kill_rows)
            + f"\n\nNon-200 answers in this phase: {_failures(reqs, killed)}.")


if __name__ == "__main__":
    write_section("gateway-load", "## C&R gateway under load (issue 9)\n\n" + main())
    print(Path(__file__).resolve().parent.joinpath("RESULTS.md").read_text())
