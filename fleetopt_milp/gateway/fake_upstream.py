"""A fake OpenAI-compatible upstream, and a uvicorn server in a thread, for tests and benchmarks.

:func:`fake_openai_app` answers ``/v1/chat/completions`` and ``/v1/completions`` with a
deterministic body that names its pool (``role``) and echoes what it received, so a test
can check where a request went and what the gateway forwarded; with ``"stream": true``
it sends ``chunks`` Server-Sent Events and ``data: [DONE]``, whose bytes depend only on
the request (:func:`expected_stream`). :class:`ServerThread` serves any ASGI app on
loopback at an ephemeral port and stops it on exit. Nothing here leaves 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["fake_openai_app", "expected_stream", "ServerThread"]


def _prompt_chars(body: dict) -> int:
    if "messages" in body:
        return sum(len(m.get("content") or "") for m in body["messages"]
                   if isinstance(m.get("content"), str))
    p = body.get("prompt")
    return len(p) if isinstance(p, str) else 0


def expected_stream(role: str, body: dict, chunks: int) -> bytes:
    """The exact bytes :func:`fake_openai_app` streams for ``body``."""
    tag = body.get("user", "")
    events = [json.dumps({"pool": role, "user": tag, "index": i, "chars": _prompt_chars(body),
                          "choices": [{"delta": {"content": f"tok{i} "}}]})
              for i in range(chunks)]
    return b"".join(f"data: {e}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def fake_openai_app(role: str, delay_s: float = 0.0, chunks: int = 8) -> Starlette:
    """An OpenAI-like server for pool ``role`` (module docstring); ``delay_s`` per request."""

    async def handle(request: Request) -> Response:
        body = json.loads(await request.body())
        if delay_s:
            await asyncio.sleep(delay_s)
        if body.get("stream"):
            data = expected_stream(role, body, chunks)
            parts = data.split(b"\n\n")[:-1]

            async def gen():
                for part in parts:
                    yield part + b"\n\n"

            return StreamingResponse(gen(), media_type="text/event-stream")
        return JSONResponse({"pool": role, "path": request.url.path, "received": body,
                             "chars": _prompt_chars(body),
                             "choices": [{"text": "ok", "message": {"content": "ok"}}]})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": f"fake-{role}"}]})

    return Starlette(routes=[Route("/v1/chat/completions", handle, methods=["POST"]),
                             Route("/v1/completions", handle, methods=["POST"]),
                             Route("/v1/models", models, methods=["GET"])])


class ServerThread:
    """Serve an ASGI ``app`` with uvicorn on 127.0.0.1 (ephemeral port) in a daemon thread.

    Use as a context manager; ``url`` is ``http://127.0.0.1:PORT``. :meth:`stop` (also on
    exit) asks uvicorn to exit and joins the thread within ``timeout_s``.
    """

    def __init__(self, app, timeout_s: float = 10.0):
        import uvicorn

        self.timeout_s = timeout_s
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="error",
                                lifespan="on", backlog=2048, timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = ""

    def start(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + self.timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(self.timeout_s)

    def kill(self) -> None:
        """Stop at once: open connections are dropped (an upstream dying)."""
        self.server.force_exit = True
        self.stop()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
