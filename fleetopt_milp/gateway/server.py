"""The OpenAI-compatible C&R gateway: an ASGI app (Starlette) in front of the pools.

``POST /v1/chat/completions`` and ``POST /v1/completions``: the body is validated, routed
and, for a C&R candidate that the safety gate passes, compressed (:class:`Router`); it is
then forwarded to its pool's upstream (a vLLM or SGLang server). The upstream's answer is
passed back byte for byte with its status and headers: an SSE stream
(``text/event-stream``) chunk by chunk as it arrives, any other answer once read whole.
The upstream client is ``aiohttp``; ``httpx``'s connection pool scans all its connections
for each request, which at hundreds of concurrent requests cost more CPU than the
gateway's own work (docs/gateway.md, "HTTP API"). The gateway adds the headers
``x-fleetopt-pool``, ``x-fleetopt-compressed``, ``x-fleetopt-input-tokens`` (before),
``x-fleetopt-input-tokens-after`` and ``x-fleetopt-gateway-ms`` (time added before
forwarding).

Errors, in the OpenAI error format ``{"error": {"message", "type", "code"}}``:

- 400: malformed JSON, a missing or wrong field, an unknown message role, or a request
  longer than every pool (``context_length_exceeded``);
- 502: the pool's upstream cannot be reached or fails (other pools keep serving);
- 503: the plan routes the request to a pool with no ``--upstream``;
- 504: the upstream did not answer within the timeout.

``GET /healthz`` answers ``{"status": "ok", "pools": {role: url}}``; ``GET /metrics``
the Prometheus text of :class:`~fleetopt_milp.gateway.metrics.GatewayMetrics`;
``GET /v1/models`` is passed to the first pool's upstream.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from ..errors import FleetOptError
from .metrics import GatewayMetrics
from .router import RequestError, Router, validate_body

__all__ = ["GatewayConfig", "create_app", "parse_upstreams", "KEEPALIVE_S",
           "SERVER_KEEPALIVE_S", "SEND_ATTEMPTS"]

#: Seconds an idle upstream connection is kept for reuse (below uvicorn's default 5 s).
KEEPALIVE_S = 3.0
#: Sends of one request when kept-alive upstream connections turn out closed.
SEND_ATTEMPTS = 3
#: Seconds the gateway keeps an idle client connection open (uvicorn's timeout_keep_alive).
SERVER_KEEPALIVE_S = 75

#: Headers not forwarded in either direction (hop-by-hop, or recomputed by the server).
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate",
                         "proxy-authorization", "te", "trailers", "transfer-encoding",
                         "upgrade", "host", "content-length"})


@dataclass(frozen=True)
class GatewayConfig:
    """A gateway: its router, the upstream base URL of each pool role, and the timeout.

    ``upstreams`` maps a pool role to a base URL such as ``http://10.0.0.5:8000`` (the
    gateway appends the request path, ``/v1/chat/completions``). ``timeout_s`` bounds
    connecting and each read from an upstream (seconds). Bodies of ``offload_bytes`` or
    more are routed (counted, gated, compressed) in a worker thread, so that a long prompt
    does not hold up the relays of other requests (tiktoken encodes without the GIL).
    """

    router: Router
    upstreams: Mapping[str, str]
    timeout_s: float = 600.0
    offload_bytes: int = 32_768

    def __post_init__(self):
        unknown = sorted(set(self.upstreams) - set(self.router.roles))
        if unknown:
            raise FleetOptError(f"--upstream {unknown[0]}=...: the plan has no pool "
                                f"'{unknown[0]}'; its pools are {', '.join(self.router.roles)}")
        if self.timeout_s <= 0:
            raise FleetOptError(f"timeout_s={self.timeout_s}: must be positive seconds")
        if self.offload_bytes < 0:
            raise FleetOptError(f"offload_bytes={self.offload_bytes}: must be >= 0 bytes")


def parse_upstreams(specs: list[str]) -> dict[str, str]:
    """``["short=http://h:8000", ...]`` -> ``{"short": "http://h:8000"}`` (one per role)."""
    out: dict[str, str] = {}
    for spec in specs:
        role, sep, url = spec.partition("=")
        role, url = role.strip(), url.strip().rstrip("/")
        if not sep or not role or not url.startswith(("http://", "https://")):
            raise FleetOptError(f"--upstream {spec!r}: write ROLE=URL, e.g. "
                                "short=http://127.0.0.1:8001")
        if role in out:
            raise FleetOptError(f"--upstream {role}: given twice; give one URL per pool role")
        out[role] = url
    return out


def _error(status: int, message: str, kind: str, code: str | None = None,
           headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind, "code": code}},
                        status_code=status, headers=headers)


def _forward_headers(headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP}


def create_app(config: GatewayConfig, metrics: GatewayMetrics | None = None) -> Starlette:
    """The gateway as an ASGI app (module docstring). Serve it with uvicorn."""
    metrics = metrics or GatewayMetrics()
    router = config.router
    state: dict[str, aiohttp.ClientSession] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=config.timeout_s,
                                        sock_read=config.timeout_s)
        # Idle upstream connections are dropped after KEEPALIVE_S, before uvicorn's (and so
        # vLLM's) 5 s server-side idle timeout can close one as we reuse it.
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_S)
        # auto_decompress=False: the body is relayed as the upstream encoded it.
        async with aiohttp.ClientSession(connector=connector, timeout=timeout,
                                         auto_decompress=False) as session:
            state["session"] = session
            yield

    async def proxy(request: Request, chat: bool) -> Response:
        t0 = time.perf_counter()
        metrics.in_flight += 1
        try:
            return await _serve(request, chat, t0)
        finally:
            metrics.in_flight -= 1

    async def _serve(request: Request, chat: bool, t0: float) -> Response:
        raw = await request.body()
        try:
            body = validate_body(json.loads(raw), chat)
            if len(raw) >= config.offload_bytes:
                routed = await run_in_threadpool(router.route, body)
            else:
                routed = router.route(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            metrics.answered(None, 400)
            return _error(400, f"request body is not valid JSON ({exc})", "invalid_request_error")
        except RequestError as exc:
            metrics.answered(None, exc.status)
            return _error(exc.status, str(exc), "invalid_request_error")
        d = routed.decision
        tags = {"x-fleetopt-pool": d.pool or "-",
                "x-fleetopt-compressed": "true" if d.compressed else "false",
                "x-fleetopt-input-tokens": str(d.input_tokens),
                "x-fleetopt-input-tokens-after": str(d.input_tokens_after)}
        if d.pool is None:
            metrics.answered(None, 400)
            return _error(400, d.reason, "invalid_request_error", "context_length_exceeded", tags)
        base = config.upstreams.get(d.pool)
        if base is None:
            metrics.answered(d.pool, 503)
            return _error(503, f"pool '{d.pool}' has no upstream; start the gateway with "
                          f"--upstream {d.pool}=URL", "upstream_unavailable", headers=tags)
        added_s = time.perf_counter() - t0
        metrics.routed(d.pool, added_s, d.compressed, d.input_tokens - d.input_tokens_after)
        tags["x-fleetopt-gateway-ms"] = f"{added_s * 1e3:.3f}"
        content = raw if routed.body is body else json.dumps(routed.body).encode()
        headers = _forward_headers(request.headers)
        if content is not raw:
            headers["content-type"] = "application/json"
        try:
            resp = await _post(base + request.url.path, content, headers)
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            metrics.upstream_error(d.pool)
            metrics.answered(d.pool, 504)
            return _error(504, f"pool '{d.pool}' upstream {base} timed out ({type(exc).__name__})",
                          "upstream_timeout", headers=tags)
        except aiohttp.ClientError as exc:
            metrics.upstream_error(d.pool)
            metrics.answered(d.pool, 502)
            return _error(502, f"pool '{d.pool}' upstream {base} unreachable ({exc})",
                          "upstream_unavailable", headers=tags)
        out_headers = _forward_headers(resp.headers)
        out_headers.update(tags)
        if resp.content_type == "text/event-stream":  # relayed chunk by chunk as it comes
            metrics.answered(d.pool, resp.status)
            return StreamingResponse(_relay(resp, d.pool), status_code=resp.status,
                                     headers=out_headers, background=BackgroundTask(resp.release))
        try:  # a whole answer: read it, then send it (cheaper than a stream)
            data = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            metrics.upstream_error(d.pool)
            metrics.answered(d.pool, 502)
            return _error(502, f"pool '{d.pool}' upstream {base} failed mid-answer ({exc!r})",
                          "upstream_unavailable", headers=tags)
        finally:
            resp.release()
        metrics.answered(d.pool, resp.status)
        return Response(data, status_code=resp.status, headers=out_headers)

    async def _post(url: str, content: bytes, headers: dict) -> aiohttp.ClientResponse:
        """POST upstream. A kept-alive connection the upstream closed while idle (its idle
        timeout racing our reuse, more likely while this process is busy) fails before the
        request reaches the upstream: try up to :data:`SEND_ATTEMPTS` times. A refused
        connection is not retried."""
        for attempt in range(SEND_ATTEMPTS):
            try:
                return await state["session"].post(url, data=content, headers=headers)
            except aiohttp.ClientConnectorError:
                raise
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
                if attempt == SEND_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    async def _relay(resp: aiohttp.ClientResponse, pool: str):
        try:
            async for chunk in resp.content.iter_any():
                yield chunk
        except (TimeoutError, aiohttp.ClientError):
            metrics.upstream_error(pool)  # died mid-stream: the client sees a cut stream
            raise

    async def chat_completions(request: Request) -> Response:
        return await proxy(request, chat=True)

    async def completions(request: Request) -> Response:
        return await proxy(request, chat=False)

    async def models(request: Request) -> Response:
        role = next((r for r in router.roles if r in config.upstreams), None)
        if role is None:
            return _error(503, "no pool has an upstream", "upstream_unavailable")
        try:
            async with state["session"].get(config.upstreams[role] + "/v1/models",
                                            headers=_forward_headers(request.headers)) as resp:
                body = await resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            return _error(502, f"pool '{role}' upstream unreachable ({exc})",
                          "upstream_unavailable")
        return Response(body, status_code=resp.status, headers=_forward_headers(resp.headers))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "pools": {r: config.upstreams.get(r)
                                                       for r in router.roles}})

    async def metrics_text(request: Request) -> Response:
        return PlainTextResponse(metrics.render(),
                                 media_type="text/plain; version=0.0.4; charset=utf-8")

    routes = [Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/models", models, methods=["GET"]),
              Route("/healthz", healthz, methods=["GET"]),
              Route("/metrics", metrics_text, methods=["GET"])]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.metrics = metrics
    return app
