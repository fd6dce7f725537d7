"""Safety gate, router and the gateway CLI commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from fleetopt_milp.cli import app
from fleetopt_milp.gateway.compress import chat_tokens
from fleetopt_milp.gateway.corpus import labelled_samples, prose_documents
from fleetopt_milp.gateway.measure import measure_compression, read_prompts
from fleetopt_milp.gateway.metrics import GatewayMetrics
from fleetopt_milp.gateway.router import RequestError, Router, RouterPool, validate_body
from fleetopt_milp.gateway.safety import assess_request, assess_text
from fleetopt_milp.gateway.tokenizer import load_tokenizer
from fleetopt_milp.plan import read_plan
from fleetopt_milp.routing import route

TOK = load_tokenizer()
GOLDEN = Path(__file__).parent / "golden" / "plan-azure-default.json"
DOCS = prose_documents()
needs_docs = pytest.mark.skipif(not DOCS, reason="Debian licence texts not on this machine")


@pytest.mark.parametrize("split", ["dev", "held-out"])
def test_gate_on_the_labelled_set(split):
    samples = labelled_samples(split)
    labels = {s.label for s in samples}
    if len(labels) < 4:
        pytest.skip("the machine lacks the labelled set's source files")
    right = sum(assess_text(s.text).safe == (s.label == "prose") for s in samples)
    assert right / len(samples) >= 0.97
    unsafe_called_safe = [s.source for s in samples
                          if s.label != "prose" and assess_text(s.text).safe]
    assert len(unsafe_called_safe) <= 1


def test_gate_reasons():
    assert assess_text("Hello. This is prose.") .kind == "prose"
    v = assess_text("Intro.\n\n```python\nx = 1\n```\n")
    assert not v.safe and v.kind == "code" and "fenced" in v.reason
    v = assess_text('{"a": [1, 2, 3], "b": {"c": null}}')
    assert not v.safe and v.kind == "json" and "parses as JSON" in v.reason
    v = assess_text("| a | b |\n|---|---|\n| 1 | 2 |")
    assert not v.safe and v.kind == "table"
    v = assess_text("name,age,city\nann,31,paris\nbob,45,rome\ncid,22,oslo")
    assert not v.safe and v.reason == "table: comma-separated values"
    v = assess_text("<html>\n<body>\n<p>hi</p>\n</body>\n</html>")
    assert not v.safe and v.kind == "markup"


def test_gate_on_requests():
    chat = {"messages": [{"role": "system", "content": "def f(): return 1;"},
                         {"role": "user", "content": "An older turn. Of prose."},
                         {"role": "assistant", "content": "A reply, in prose."},
                         {"role": "user", "content": "x = {1: 2};\nprint(x);"}]}
    v = assess_request(chat)  # system prompt and last user turn are never cut: not judged
    assert v.safe and v.kind == "conversation"
    chat["messages"][2]["content"] = "Here:\n```\nx = 1\n```"
    v = assess_request(chat)
    assert not v.safe and v.reason.startswith("message 2 (assistant): ")
    v = assess_request({"messages": [{"role": "user", "content": "only turn"}]})
    assert not v.safe and v.kind == "protected"
    assert not assess_request({"prompt": ["a", "b"]}).safe


def _router(windows=(2048, 16384), gammas=(2.0,), default_max_tokens=64):
    roles = ("short", "long") if len(windows) == 2 else tuple(f"p{k}" for k in range(len(windows)))
    lo = (0, *windows[:-1])
    return Router(tuple(RouterPool(r, a, w) for r, a, w in zip(roles, lo, windows)), gammas,
                  TOK, default_max_tokens)


def test_router_candidates_agree_with_the_package_router():
    r = _router((1024, 4096, 32768), (1.5, 2.0))
    rng = np.random.default_rng(3)
    lin = rng.integers(1, 40000, 5000)
    lout = rng.integers(1, 3000, 5000)
    plain, cr = r.candidates(lin, lout)
    ref = route(lin, lout, r.windows, r.gammas, 1.0, np.random.default_rng(0))
    assert np.array_equal(cr, ref.pool)
    assert np.array_equal(plain, route(lin, lout, r.windows, r.gammas, 0.0,
                                       np.random.default_rng(0)).pool)
    # Edges: L = W fits; L = W + 1 is in the band; L = floor(gamma W) is the band's end.
    p, c = r.candidates([1024 - 10, 1025 - 10, 1536 - 10, 1537 - 10], [10, 10, 10, 10])
    assert p.tolist() == [0, 1, 1, 1] and c.tolist() == [0, 0, 0, 1]


def test_router_from_plan_file():
    plan = read_plan(GOLDEN)
    r = Router.from_plan(plan, TOK, 256)
    assert r.roles == ("short", "long")
    assert r.windows.tolist() == [2496, 65536]
    assert r.band_ends.tolist() == [int(np.floor(1.9 * 2496))]


@needs_docs
def test_decisions_and_reasons():
    r = _router()
    doc = max((t for _, t in DOCS), key=len)
    d = r.route({"prompt": "Short question?", "max_tokens": 64}).decision
    assert (d.pool, d.compressed, d.candidate) == ("short", False, False)
    assert d.reason == f"L={d.input_tokens + 64} fits pool 'short' (0, 2048]"

    text = doc[:9000] + "\n\nWhich section covers patents?"
    n = TOK.count(text)
    assert 2048 < n + 64 <= 4096
    routed = r.route({"prompt": text, "max_tokens": 64})
    d = routed.decision
    assert d.pool == "short" and d.compressed and d.candidate and d.budget_tokens == 2048 - 64
    assert d.input_tokens == n and d.input_tokens_after == TOK.count(routed.body["prompt"])
    assert d.input_tokens_after <= 2048 - 64
    assert "C&R band (2048, 4096]" in d.reason and "prose" in d.reason

    small = doc[:3000]
    assert 2048 < TOK.count(small) + 2048 <= 4096
    d = r.route({"prompt": small, "max_tokens": 2048}).decision  # output fills the window
    assert d.pool == "long" and not d.candidate and "max_tokens=2048 >= its window" in d.reason

    d = r.route({"prompt": "x = 1;\n" * 700, "max_tokens": 64}).decision
    assert d.pool == "long" and d.candidate and not d.compressed and d.content == "code"

    d = r.route({"prompt": text}).decision  # no max_tokens: the default, and said so
    assert d.max_tokens == 64 and d.max_tokens_assumed

    d = r.route({"prompt": "hi", "max_tokens": 20000}).decision
    assert d.pool is None and "exceeds the longest pool window 16384" in d.reason


def test_validation_names_the_field():
    with pytest.raises(RequestError, match=r"messages\[1\].role='robot'"):
        validate_body({"messages": [{"role": "user", "content": "a"},
                                    {"role": "robot", "content": "b"}]}, chat=True)
    with pytest.raises(RequestError, match="'prompt' must be a string"):
        validate_body({"prompt": 3}, chat=False)
    with pytest.raises(RequestError, match="'max_tokens'=True"):
        validate_body({"prompt": "a", "max_tokens": True}, chat=False)


@needs_docs
def test_measure_compression_on_prompt_files(tmp_path):
    doc = max((t for _, t in DOCS), key=len)
    (tmp_path / "a.txt").write_text(doc[:9000] + "\n\nWhat is conveyed?")
    (tmp_path / "b.txt").write_text("int x = 1;\nint y = 2;\n" * 250)
    assert 2048 < TOK.count("int x = 1;\nint y = 2;\n" * 250) + 64 <= 4096
    (tmp_path / "c.jsonl").write_text(json.dumps({"prompt": "hello", "max_tokens": 5}) + "\n")
    m = measure_compression(_router(), read_prompts([tmp_path]))
    assert (m.requests, m.band_requests, m.compressed) == (3, 2, 1)
    assert m.compressible_share == 0.5
    assert m.gate_safe_share == pytest.approx(2 / 3)
    assert m.reasons == {"code": 1}
    assert 0 < m.compress_ms_p50 <= m.compress_ms_p99


def test_cli_compress_route_and_measure(tmp_path):
    runner = CliRunner()
    text = ("The first sentence sets the task. " + "Filler sentence about nothing much. " * 60
            + "\n\nWhat is the task?")
    res = runner.invoke(app, ["compress", "--budget-tokens", "40"], input=text)
    assert res.exit_code == 0
    assert TOK.count(res.stdout) <= 40
    assert res.stdout.startswith("The first sentence sets the task.")
    assert res.stdout.endswith("What is the task?")
    assert f"tokens: {TOK.count(text)} -> {TOK.count(res.stdout)} (budget 40" in res.stderr

    reqs = [{"prompt": "hello", "max_tokens": 5}, {"prompt": "hi", "max_tokens": 70000}]
    res = runner.invoke(app, ["route", str(GOLDEN)],
                        input="".join(json.dumps(b) + "\n" for b in reqs))
    assert res.exit_code == 0
    lines = [json.loads(x) for x in res.stdout.splitlines()]
    assert [x["pool"] for x in lines] == ["short", None]
    assert lines[0]["total_tokens"] == 1 + 5

    res = runner.invoke(app, ["route", str(GOLDEN)], input='{"prompt": "a"}\nnot json\n')
    assert res.exit_code != 0

    p = tmp_path / "p.txt"
    p.write_text(text)
    out = tmp_path / "m.json"
    res = runner.invoke(app, ["measure-compression", str(p), "--plan", str(GOLDEN),
                              "--json", str(out)])
    assert res.exit_code == 0, res.output
    got = json.loads(out.read_text())
    assert got["requests"] == 1 and got["band_requests"] == 0
    assert got["compressible_share"] is None
    assert "no prompt falls in a C&R band" in res.stdout


@needs_docs
def test_chat_band_request_is_compressed_without_touching_protected_turns():
    r = _router()
    doc = max((t for _, t in DOCS), key=len)
    body = {"messages": [{"role": "system", "content": "Answer from the licence."},
                         {"role": "user", "content": doc[:5000]},
                         {"role": "assistant", "content": doc[5000:9000]},
                         {"role": "user", "content": "Can I charge for copies?"}],
            "max_tokens": 64}
    routed = r.route(body)
    d = routed.decision
    assert d.candidate and d.compressed and d.pool == "short" and d.content == "conversation"
    new = routed.body["messages"]
    assert new[0] == body["messages"][0] and new[3] == body["messages"][3]
    assert d.input_tokens_after == chat_tokens(new, TOK) <= 2048 - 64
    assert body["messages"][1]["content"] == doc[:5000]  # the caller's body is not mutated


def test_metrics_text_format():
    m = GatewayMetrics()
    m.answered("short", 200)
    m.answered(None, 400)
    m.routed("short", 0.0007, True, 120)
    m.routed("short", 0.003, False, 0)
    m.upstream_error("long")
    lines = set(m.render().splitlines())
    # Cumulative buckets: 0.7 ms falls in le=0.001, 3 ms in le=0.005.
    expected = {
        'fleetopt_gateway_requests_total{pool="short",status="200"} 1',
        'fleetopt_gateway_requests_total{pool="-",status="400"} 1',
        'fleetopt_gateway_compressions_total{pool="short"} 1',
        'fleetopt_gateway_compressed_tokens_saved_total{pool="short"} 120',
        'fleetopt_gateway_upstream_errors_total{pool="long"} 1',
        'fleetopt_gateway_added_latency_seconds_count{pool="short"} 2',
        'fleetopt_gateway_added_latency_seconds_sum{pool="short"} 0.0037',
        *(f'fleetopt_gateway_added_latency_seconds_bucket{{pool="short",le="{le}"}} {n}'
          for le, n in (("0.0005", 0), ("0.001", 1), ("0.002", 1), ("0.005", 2), ("+Inf", 2))),
    }
    assert expected <= lines
    text = m.render()
    assert text.endswith("fleetopt_gateway_in_flight 0\n")


@pytest.mark.parametrize("path", sorted(GOLDEN.parent.glob("*.json")), ids=lambda p: p.stem)
def test_every_golden_plan_builds_a_router(path):
    plan = read_plan(path)
    r = Router.from_plan(plan, TOK, 256)
    assert r.roles == tuple(p.role for p in plan.pools)
    assert r.windows.tolist() == [p.context_tokens for p in plan.pools]


@needs_docs
def test_three_pool_plan_compresses_into_the_middle_pool():
    r = Router.from_plan(read_plan(GOLDEN.parent / "solve-azure-2types.json"), TOK, 256)
    assert r.roles == ("short", "medium", "long") and r.windows.tolist()[:2] == [896, 4032]
    doc = max((t for _, t in DOCS), key=len)
    text = doc[:18000] + "\n\nWho may modify the work?"
    assert 4032 < TOK.count(text) + 100 <= r.band_ends[1]
    d = r.route({"prompt": text, "max_tokens": 100}).decision
    assert d.pool == "medium" and d.compressed and d.budget_tokens == 4032 - 100
    assert "C&R band (4032, 7660]" in d.reason
