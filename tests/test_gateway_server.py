"""The gateway against real HTTP upstreams on loopback (fake OpenAI servers in threads).

Every server binds 127.0.0.1 on an ephemeral port; loops are bounded; each client call
has a timeout.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import httpx
import pytest

from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.gateway.fake_upstream import ServerThread, expected_stream, fake_openai_app
from fleetopt_milp.gateway.router import Router, RouterPool
from fleetopt_milp.gateway.server import GatewayConfig, create_app, parse_upstreams
from fleetopt_milp.gateway.tokenizer import load_tokenizer

LICENCES = Path("/usr/share/common-licenses")
TIMEOUT = httpx.Timeout(20.0)
SHORT, LONG = 2048, 16384
GAMMA = 2.0


def _router(default_max_tokens: int = 64) -> Router:
    return Router((RouterPool("short", 0, SHORT), RouterPool("long", SHORT, LONG)), (GAMMA,),
                  load_tokenizer(), default_max_tokens)


@pytest.fixture(scope="module")
def upstreams():
    with ServerThread(fake_openai_app("short")) as s, ServerThread(fake_openai_app("long")) as lg:
        yield {"short": s.url, "long": lg.url}


@pytest.fixture(scope="module")
def gateway(upstreams):
    app = create_app(GatewayConfig(_router(), upstreams, timeout_s=10.0))
    with ServerThread(app) as g:
        yield g.url, app


@pytest.fixture(scope="module")
def prose() -> str:
    if not LICENCES.is_dir():
        pytest.skip("Debian licence texts not on this machine")
    return (LICENCES / "GPL-3").read_text()


def _band_prompt(prose: str, tok) -> str:
    """A prose prompt with L in (SHORT, GAMMA * SHORT] at max_tokens=64."""
    text, n = prose, 0
    while True:
        n += 1
        cut = prose[: 2000 * n] + "\n\nWhat does the licence say about patents?"
        if tok.count(cut) + 64 > SHORT + 200:
            text = cut
            break
    assert tok.count(text) + 64 <= GAMMA * SHORT
    return text


def test_routes_by_length_and_compresses_band_prose(gateway, prose):
    url, _ = gateway
    tok = load_tokenizer()
    band = _band_prompt(prose, tok)
    with httpx.Client(timeout=TIMEOUT) as c:
        r = c.post(url + "/v1/completions", json={"prompt": "Hi there.", "max_tokens": 64})
        assert r.status_code == 200
        assert r.json()["pool"] == "short" and r.headers["x-fleetopt-pool"] == "short"
        assert r.headers["x-fleetopt-compressed"] == "false"
        assert r.json()["received"] == {"prompt": "Hi there.", "max_tokens": 64}

        r = c.post(url + "/v1/completions", json={"prompt": band, "max_tokens": 64})
        assert r.status_code == 200
        got = r.json()
        assert got["pool"] == "short" and r.headers["x-fleetopt-compressed"] == "true"
        sent = got["received"]["prompt"]
        assert tok.count(sent) == int(r.headers["x-fleetopt-input-tokens-after"])
        assert tok.count(sent) <= SHORT - 64
        assert int(r.headers["x-fleetopt-input-tokens"]) == tok.count(band)
        assert sent.endswith("What does the licence say about patents?")

        code = Path(__file__).read_text() * 3  # the same length band, but code
        r = c.post(url + "/v1/completions", json={"prompt": code[: len(band)], "max_tokens": 64})
        assert r.status_code == 200
        assert r.json()["pool"] == "long" and r.headers["x-fleetopt-compressed"] == "false"
        assert r.json()["received"]["prompt"] == code[: len(band)]  # untouched


def test_long_prompts_routed_in_a_worker_thread_give_the_same_answer(gateway, upstreams, prose):
    url, _ = gateway
    band = _band_prompt(prose, load_tokenizer())
    app = create_app(GatewayConfig(_router(), upstreams, offload_bytes=0))
    with ServerThread(app) as g, httpx.Client(timeout=TIMEOUT) as c:
        body = {"prompt": band, "max_tokens": 64}
        inline = c.post(url + "/v1/completions", json=body)
        offloaded = c.post(g.url + "/v1/completions", json=body)
    assert offloaded.status_code == 200 and offloaded.headers["x-fleetopt-compressed"] == "true"
    assert offloaded.content == inline.content


def test_chat_without_max_tokens_gets_the_default_forwarded(gateway):
    url, _ = gateway
    body = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Hello?"}]}
    with httpx.Client(timeout=TIMEOUT) as c:
        r = c.post(url + "/v1/chat/completions", json=body)
    assert r.status_code == 200
    assert r.json()["received"] == dict(body, max_tokens=64)
    assert r.json()["path"] == "/v1/chat/completions"


def test_answers_pass_through_byte_for_byte(gateway, upstreams):
    url, _ = gateway
    body = {"prompt": "Stream this please.", "max_tokens": 64, "stream": True, "user": "s1"}
    with httpx.Client(timeout=TIMEOUT) as c:
        direct = c.post(upstreams["short"] + "/v1/completions", json=body)
        via = c.post(url + "/v1/completions", json=body)
    assert via.status_code == 200 and via.headers["x-fleetopt-pool"] == "short"
    assert via.content == direct.content == expected_stream("short", body, 8)
    assert via.headers["content-type"].startswith("text/event-stream")
    whole = dict(body, stream=False)
    with httpx.Client(timeout=TIMEOUT) as c:
        direct = c.post(upstreams["short"] + "/v1/completions", json=whole)
        via = c.post(url + "/v1/completions", json=whole)
    assert via.status_code == 200 and via.content == direct.content
    assert via.headers["content-type"] == direct.headers["content-type"]


@pytest.mark.parametrize("payload, status, needle", [
    (b"{not json", 400, "not valid JSON"),
    (b"[1, 2]", 400, "JSON object"),
    (json.dumps({"messages": [{"role": "wizard", "content": "hi"}]}).encode(), 400,
     "unknown role"),
    (json.dumps({"messages": []}).encode(), 400, "non-empty list"),
    (json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": -3}).encode(),
     400, "positive integer"),
])
def test_client_mistakes_get_4xx_and_the_gateway_keeps_serving(gateway, payload, status, needle):
    url, _ = gateway
    with httpx.Client(timeout=TIMEOUT) as c:
        r = c.post(url + "/v1/chat/completions", content=payload,
                   headers={"content-type": "application/json"})
        assert r.status_code == status
        assert needle in r.json()["error"]["message"]
        ok = c.post(url + "/v1/chat/completions",
                    json={"messages": [{"role": "user", "content": "still there?"}]})
        assert ok.status_code == 200


def test_request_longer_than_every_pool_is_rejected(gateway):
    url, _ = gateway
    with httpx.Client(timeout=TIMEOUT) as c:
        r = c.post(url + "/v1/completions", json={"prompt": "word " * 100, "max_tokens": LONG})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


def test_upstream_down_gives_502_for_its_pool_and_missing_upstream_503(upstreams):
    with ServerThread(fake_openai_app("dead")) as dead:
        dead_url = dead.url
    # dead_url's port is now closed: connections are refused.
    app = create_app(GatewayConfig(_router(), {"short": dead_url, "long": upstreams["long"]}))
    with ServerThread(app) as g, httpx.Client(timeout=TIMEOUT) as c:
        r = c.post(g.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 8})
        assert r.status_code == 502 and r.headers["x-fleetopt-pool"] == "short"
        assert "unreachable" in r.json()["error"]["message"]
        r = c.post(g.url + "/v1/completions", json={"prompt": "hi", "max_tokens": SHORT + 10})
        assert r.status_code == 200 and r.json()["pool"] == "long"
        metrics = c.get(g.url + "/metrics").text
    assert 'fleetopt_gateway_upstream_errors_total{pool="short"} 1' in metrics
    assert 'fleetopt_gateway_requests_total{pool="short",status="502"} 1' in metrics
    app = create_app(GatewayConfig(_router(), {"long": upstreams["long"]}))
    with ServerThread(app) as g, httpx.Client(timeout=TIMEOUT) as c:
        r = c.post(g.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 8})
        assert r.status_code == 503 and "--upstream short=URL" in r.json()["error"]["message"]


def test_health_metrics_and_models(gateway, upstreams):
    url, app = gateway
    with httpx.Client(timeout=TIMEOUT) as c:
        h = c.get(url + "/healthz").json()
        assert h == {"status": "ok", "pools": upstreams}
        assert c.get(url + "/v1/models").json()["data"][0]["id"] == "fake-short"
        text = c.get(url + "/metrics").text
    m = app.state.metrics
    n_short = sum(v for (p, s), v in m.requests.items() if p == "short" and s == 200)
    assert f'fleetopt_gateway_requests_total{{pool="short",status="200"}} {n_short}' in text
    assert "# TYPE fleetopt_gateway_added_latency_seconds histogram" in text
    count = m.latency["short"].n
    assert f'fleetopt_gateway_added_latency_seconds_bucket{{pool="short",le="+Inf"}} {count}' \
        in text


def test_concurrent_requests_none_lost_or_misrouted_and_killed_pool_gets_502():
    """500 concurrent requests over two pools, twice; the long upstream is killed between."""
    short = ServerThread(fake_openai_app("short", delay_s=0.02)).start()
    long_ = ServerThread(fake_openai_app("long", delay_s=0.02)).start()
    app = create_app(GatewayConfig(_router(), {"short": short.url, "long": long_.url},
                                   timeout_s=10.0))
    n = 500

    async def run(url: str):
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30),
                                         connector=aiohttp.TCPConnector(limit=0)) as c:
            async def one(i: int):
                want = "long" if i % 2 else "short"
                mt = SHORT + 1 if want == "long" else 16
                async with c.post(url + "/v1/completions", json={
                        "prompt": f"request {i}.", "max_tokens": mt, "user": str(i)}) as r:
                    body = await r.read()
                    return i, want, r.status, r.headers.get("x-fleetopt-pool"), (
                        json.loads(body) if r.status == 200 else None)

            first = await asyncio.gather(*(one(i) for i in range(n)))
            await asyncio.to_thread(long_.kill)
            second = await asyncio.gather(*(one(i) for i in range(n, 2 * n)))
            return first, second

    try:
        with ServerThread(app) as g:
            first, second = asyncio.run(asyncio.wait_for(run(g.url), 60))
    finally:
        short.stop()
        long_.stop()
    for i, want, status, pool, body in first:
        assert status == 200 and pool == want
        assert body["pool"] == want and body["received"]["user"] == str(i)
    for i, want, status, pool, body in second:
        assert pool == want
        if want == "short":
            assert status == 200 and body["received"]["user"] == str(i)
        else:
            assert status == 502


def test_upstream_options_are_checked():
    assert parse_upstreams(["short=http://127.0.0.1:9/", "long = http://h:80"]) == {
        "short": "http://127.0.0.1:9", "long": "http://h:80"}
    for bad, msg in ((["short"], "write ROLE=URL"), (["short=ftp://x"], "write ROLE=URL"),
                     (["a=http://x", "a=http://y"], "given twice")):
        with pytest.raises(FleetOptError, match=msg):
            parse_upstreams(bad)
    with pytest.raises(FleetOptError, match="the plan has no pool 'medium'; its pools are "
                                            "short, long"):
        GatewayConfig(_router(), {"medium": "http://127.0.0.1:9"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fleetopt_gateway_command_end_to_end(upstreams):
    golden = Path(__file__).parent / "golden" / "plan-azure-default.json"
    cli = [sys.executable, "-m", "fleetopt_milp.cli", "gateway", str(golden)]
    bad = subprocess.run(cli + ["--upstream", "medium=http://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: --upstream medium=...: the plan has no pool 'medium'; "
                                  "its pools are short, long")
    port = _free_port()
    proc = subprocess.Popen(cli + ["--upstream", f"short={upstreams['short']}", "--upstream",
                                   f"long={upstreams['long']}", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=TIMEOUT) as c:
            deadline = time.monotonic() + 30
            while True:
                try:
                    assert c.get(url + "/healthz").json()["pools"] == upstreams
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
                    time.sleep(0.2)
            r = c.post(url + "/v1/completions", json={"prompt": "hello", "max_tokens": 3000})
            assert r.status_code == 200 and r.json()["pool"] == "long"
    finally:
        proc.terminate()
        proc.wait(15)
