"""Tests for fleetopt_milp.workload (docs/model.md §1) against the shipped data files."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fleetopt_milp.errors import WorkloadError
from fleetopt_milp.workload import (
    DATA_DIR_ENV,
    Trace,
    Workload,
    builtin_workloads,
    data_dir,
    load_workload,
    paper_split,
    workload_from_cdf,
    workload_from_requests,
)

DATA = Path(__file__).resolve().parent.parent / "data"
AZURE_CDF = DATA / "fleetsim_reference_cdfs" / "azure_cdf.json"


def _azure_points() -> tuple[list[int], np.ndarray]:
    pts = json.loads(AZURE_CDF.read_text())
    return [int(p[0]) for p in pts], np.array([p[1] for p in pts])


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _error(spec: str | Path) -> str:
    with pytest.raises(WorkloadError) as info:
        load_workload(spec)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---------------------------------------------------------------------------------------------
# paper split and CDF expansion
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "expected"),
    [
        (1, (1, 1)),
        (2, (1, 1)),
        (5, (4, 1)),
        (10, (8, 2)),
        (4097, (3277, 820)),
        (8192, (6553, 1639)),
    ],
)
def test_paper_split_values(total: int, expected: tuple[int, int]) -> None:
    l_in, l_out = paper_split(total)
    assert (int(l_in), int(l_out)) == expected


def test_paper_split_matches_the_paper_simulator_float_rule() -> None:
    total = np.arange(1, 70_000)
    l_in, l_out = paper_split(total)
    ref_in = np.array([max(1, int(t * 0.8)) for t in total.tolist()])
    np.testing.assert_array_equal(l_in, ref_in)
    np.testing.assert_array_equal(l_out, np.maximum(1, total - ref_in))


def test_azure_cdf_expansion_reproduces_breakpoints() -> None:
    w = load_workload("azure-2023-cdf")
    xs, fs = _azure_points()
    assert w.kind == "cdf" and w.trace is None
    assert w.breakpoints_tokens == tuple(xs)
    np.testing.assert_allclose(w.cdf(xs), fs, rtol=0, atol=1e-12)
    assert math.isclose(float(w.weights.sum()), 1.0, abs_tol=1e-12)
    assert np.all(np.diff(w.total_tokens) >= 0)
    # (8192, 12288] has no mass; 16384 is the last token with mass
    assert w.max_total_tokens == 16384
    assert w.cdf(12288) == pytest.approx(fs[xs.index(8192)], abs=1e-12)


def test_azure_cdf_mean_is_the_piecewise_uniform_mean() -> None:
    w = load_workload("azure-2023-cdf")
    xs, fs = _azure_points()
    lo = [0, *xs[:-1]]
    masses = np.diff(np.concatenate(([0.0], fs)))
    exact = sum(m * (a + 1 + b) / 2 for m, a, b in zip(masses, lo, xs, strict=True))
    # The paper split turns L = 1 into (1, 1): that class (weight F_1 / x_1) gains one token.
    exact += fs[0] / xs[0]
    assert w.mean_total_tokens == pytest.approx(exact, rel=1e-12)
    assert w.mean_total_tokens == pytest.approx(1627.2, abs=0.1)
    total = w.total_tokens
    mask = total >= 3
    np.testing.assert_array_equal(w.input_tokens[mask], (4 * total[mask]) // 5)


def test_cdf_is_linear_between_breakpoints() -> None:
    w = workload_from_cdf([[100, 0.5], [300, 1.0]], name="two")
    assert w.cdf(50) == pytest.approx(0.25, abs=1e-15)
    assert w.cdf(200) == pytest.approx(0.75, abs=1e-13)
    assert w.cdf(0) == 0.0 and w.cdf(10**9) == pytest.approx(1.0)
    out = w.cdf(np.array([[100, 300], [150.5, -3]]))
    assert out.shape == (2, 2)
    np.testing.assert_allclose(out, [[0.5, 1.0], [0.625, 0.0]], atol=1e-13)


def test_cdf_object_form_and_zero_weight_segments() -> None:
    w = load_workload("agent-heavy")
    assert w.kind == "cdf"
    assert w.total_tokens[0] == 129  # (0, 128] has no mass, dropped
    assert w.cdf(128) == 0.0
    assert w.cdf(65536) == pytest.approx(1.0, abs=1e-12)


def test_last_fraction_within_tolerance_is_renormalised(tmp_path: Path) -> None:
    path = _write(tmp_path / "near.json", "[[100, 0.4], [200, 0.9999995]]")
    w = load_workload(path)
    assert w.cdf(100) == pytest.approx(0.4 / 0.9999995, abs=1e-12)
    assert w.cdf(200) == pytest.approx(1.0, abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(2, 4000), min_size=1, max_size=12, unique=True),
    st.lists(st.floats(0.0, 1.0), min_size=12, max_size=12),
)
def test_random_valid_cdfs(tokens: list[int], fractions: list[float]) -> None:
    xs = sorted(tokens)
    fs = sorted(fractions[: len(xs)])
    fs[-1] = 1.0
    w = workload_from_cdf([[x, f] for x, f in zip(xs, fs, strict=True)])
    assert math.isclose(float(w.weights.sum()), 1.0, abs_tol=1e-12)
    assert np.all(w.weights > 0)
    assert np.all(np.diff(w.total_tokens) >= 0)
    np.testing.assert_allclose(w.cdf(xs), fs, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# built-in traces
# ---------------------------------------------------------------------------------------------


def test_builtin_names() -> None:
    names = builtin_workloads()
    assert set(names) == {
        "azure-2023",
        "azure-conv",
        "azure-code",
        "azure-2023-cdf",
        "lmsys",
        "agent-heavy",
        "mooncake-conversation",
        "mooncake-synthetic",
        "sharegpt",
        "sharegpt-vllm",
        "arxiv-summarization",
    }
    assert all(isinstance(d, str) and d for d in names.values())
    assert "synthetic" in names["agent-heavy"].lower()
    assert data_dir() == DATA


def test_azure_2023_reproduces_the_paper_cdf() -> None:
    w = load_workload("azure-2023")
    assert w.kind == "trace" and w.trace is not None
    assert w.trace.n_requests == 28_185
    xs, fs = _azure_points()
    np.testing.assert_allclose(w.cdf(xs), fs, rtol=0, atol=1e-12)
    # merged by time, relative to the first request (the conversation file starts earlier)
    assert w.trace.arrival_s[0] == 0.0
    assert np.all(np.diff(w.trace.arrival_s) >= 0)
    assert w.trace.duration_s == pytest.approx(3513.2, abs=0.1)
    # classes merge identical (input, output) pairs
    assert w.n_classes < 28_185
    assert len({(a, b) for a, b in zip(w.input_tokens, w.output_tokens, strict=True)}) == (
        w.n_classes
    )


def test_azure_conv_means() -> None:
    w = load_workload("azure-conv")
    assert w.trace is not None and w.trace.n_requests == 19_366
    assert w.mean_input_tokens == pytest.approx(1155, abs=1)
    assert w.mean_output_tokens == pytest.approx(211, abs=1)
    assert w.trace.mean_rate_rps == pytest.approx(5.53, abs=0.01)


def test_mooncake_conversation() -> None:
    w = load_workload("mooncake-conversation")
    assert w.trace is not None and w.trace.n_requests == 12_031
    assert w.trace.mean_rate_rps == pytest.approx(3.40, abs=0.005)
    assert w.trace.duration_s == pytest.approx(3536.999, abs=1e-6)
    assert w.mean_input_tokens == pytest.approx(12_035, abs=1)
    assert w.mean_output_tokens == pytest.approx(343, abs=1)
    assert w.max_total_tokens > 64 * 1024


def test_lengths_csv_has_no_trace() -> None:
    w = load_workload("arxiv-summarization")
    assert w.kind == "trace" and w.trace is None
    assert float(w.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert w.mean_input_tokens == pytest.approx(2588, abs=1)
    assert w.mean_output_tokens == pytest.approx(291, abs=1)


def test_with_paper_split_on_a_trace() -> None:
    w = load_workload("azure-conv")
    p = w.with_paper_split()
    assert p.kind == "trace" and p.trace is None
    assert float(p.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert p.mean_total_tokens == pytest.approx(w.mean_total_tokens, abs=1e-6)  # no L < 3
    np.testing.assert_array_equal(p.input_tokens, (4 * p.total_tokens) // 5)
    assert p.n_classes == len(np.unique(w.total_tokens))  # one class per total after merging
    assert w.mean_output_tokens < 0.2 * w.mean_total_tokens < p.mean_output_tokens + 1


def test_truncated_and_sample() -> None:
    w = load_workload("mooncake-conversation")
    t = w.truncated(8192)
    assert t.max_total_tokens <= 8192
    assert float(t.weights.sum()) == pytest.approx(1.0, abs=1e-12)
    assert t.trace is not None and t.trace.n_requests == int(round(w.cdf(8192) * 12_031))
    rng = np.random.default_rng(7)
    a_in, a_out = w.sample(200_000, rng)
    assert a_in.dtype == np.int64 and a_in.shape == (200_000,)
    assert a_in.mean() == pytest.approx(w.mean_input_tokens, rel=0.02)
    again = w.sample(200_000, np.random.default_rng(7))
    np.testing.assert_array_equal(again[0], a_in)
    np.testing.assert_array_equal(again[1], a_out)
    with pytest.raises(WorkloadError, match="no request has at most 10 tokens"):
        w.truncated(10)


def test_workloads_are_immutable() -> None:
    w = load_workload("azure-2023-cdf")
    with pytest.raises(ValueError):
        w.weights[0] = 1.0
    with pytest.raises(AttributeError):
        w.name = "x"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# Trace
# ---------------------------------------------------------------------------------------------


def test_busiest_window_on_a_hand_made_trace() -> None:
    trace = Trace(np.array([0.0, 1.0, 1.5, 2.0, 10.0]), np.ones(5), np.ones(5))
    assert trace.duration_s == 10.0 and trace.n_requests == 5
    assert trace.mean_rate_rps == pytest.approx(0.5)
    assert trace.busiest_window_rate_rps(1.0) == pytest.approx(2.0)  # {1, 1.5} or {1.5, 2}
    assert trace.busiest_window_rate_rps(2.0) == pytest.approx(1.5)  # {0, 1, 1.5}
    assert trace.busiest_window_rate_rps(0.1) == pytest.approx(10.0)  # one request
    assert trace.busiest_window_rate_rps(100.0) == pytest.approx(0.05)  # all five


def test_busiest_window_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    arrival = np.sort(np.round(rng.exponential(1.0, 300).cumsum(), 1))
    trace = Trace(arrival, np.ones(300), np.ones(300))
    for window in (0.5, 3.0, 17.0):
        brute = max(int(np.sum((arrival >= t) & (arrival < t + window))) for t in arrival)
        assert trace.busiest_window_rate_rps(window) == pytest.approx(brute / window)


def test_scaled_to_rate() -> None:
    trace = Trace(np.array([0.0, 1.0, 1.5, 2.0, 10.0]), np.ones(5), np.ones(5))
    fast = trace.scaled_to_rate(5.0)
    assert fast.mean_rate_rps == pytest.approx(5.0)
    np.testing.assert_allclose(fast.arrival_s, [0.0, 0.1, 0.15, 0.2, 1.0])
    mooncake = load_workload("mooncake-conversation").trace
    assert mooncake is not None
    assert mooncake.scaled_to_rate(100.0).mean_rate_rps == pytest.approx(100.0, rel=1e-12)
    with pytest.raises(WorkloadError, match="rate_rps must be > 0"):
        trace.scaled_to_rate(0.0)
    with pytest.raises(WorkloadError, match="same instant"):
        Trace(np.zeros(3), np.ones(3), np.ones(3)).scaled_to_rate(1.0)


def test_trace_validation() -> None:
    with pytest.raises(WorkloadError, match="non-decreasing"):
        Trace(np.array([1.0, 0.0]), np.ones(2), np.ones(2))
    with pytest.raises(WorkloadError, match=">= 1"):
        Trace(np.array([0.0, 1.0]), np.array([1, 0]), np.ones(2))


def test_workload_from_requests_merges_duplicates() -> None:
    w = workload_from_requests([5, 3, 5, 1], [1, 1, 1, 10], [0.0, 1.0, 1.0, 4.0])
    assert w.input_tokens.tolist() == [3, 5, 1]
    assert w.output_tokens.tolist() == [1, 1, 10]
    assert w.weights.tolist() == [0.25, 0.5, 0.25]
    assert w.trace is not None and w.trace.input_tokens.tolist() == [5, 3, 5, 1]
    assert isinstance(w, Workload)


# ---------------------------------------------------------------------------------------------
# data directory override
# ---------------------------------------------------------------------------------------------


def test_data_dir_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path / "tiny.json", "[[10, 0.5], [20, 1.0]]")
    _write(
        tmp_path / "workloads.toml",
        '[workloads.tiny]\nformat = "cdf"\nfiles = ["tiny.json"]\ndescription = "tiny"\n',
    )
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path))
    assert builtin_workloads() == {"tiny": "tiny"}
    w = load_workload("tiny")
    assert w.name == "tiny" and w.max_total_tokens == 20
    msg = _error("azure-2023")  # not a built-in in this data directory
    assert "unknown built-in workload" in msg and "built-in names: tiny" in msg


# ---------------------------------------------------------------------------------------------
# error paths: each names the file, the line/entry and the problem
# ---------------------------------------------------------------------------------------------


def test_file_not_found_suggests_builtins(tmp_path: Path) -> None:
    msg = _error(str(tmp_path / "nope.json"))
    assert "nope.json" in msg and "file not found" in msg and "azure-2023-cdf" in msg


def test_unknown_builtin_lists_names() -> None:
    msg = _error("azure-2025")
    assert msg.startswith("azure-2025:") and "unknown built-in workload" in msg
    assert "mooncake-conversation" in msg and "azure-2023" in msg


@pytest.mark.parametrize("name", ["empty.json", "empty.csv", "empty.jsonl"])
def test_empty_file(tmp_path: Path, name: str) -> None:
    msg = _error(_write(tmp_path / name, "\n  \n"))
    assert name in msg and "line 1" in msg and "empty" in msg


def test_unsupported_extension(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path / "w.txt", "1,2\n"))
    assert "w.txt" in msg and "unsupported file extension '.txt'" in msg and ".jsonl" in msg


def test_bad_gzip(tmp_path: Path) -> None:
    msg = _error(_write(tmp_path / "t.jsonl.gz", "not gzip"))
    assert "t.jsonl.gz" in msg and "not a valid gzip file" in msg


@pytest.mark.parametrize(
    ("text", "where", "problem"),
    [
        ("[[64, 0.1], [128", "line 1", "not valid JSON"),
        ('{"points": []}', "entry 1", 'under the key "cdf"'),
        ("42", "entry 1", "expected a list of [tokens, cumulative_fraction] pairs"),
        ("[]", "entry 1", "no breakpoints"),
        ("[[64, 0.1], [128]]", "entry 2", "is not a [tokens, cumulative_fraction] pair"),
        ('[[64, 0.1], ["128", 1.0]]', "entry 2", "is not a [tokens, cumulative_fraction] pair"),
        ("[[64, 0.1], [64, 1.0]]", "entry 2", "tokens 64 is not above the previous 64"),
        ("[[64, 0.1], [32, 1.0]]", "entry 2", "strictly increasing"),
        (
            "[[1, 0.1], [2, 0.3], [3, 0.5], [4, 0.7], [5, 0.62], [6, 1.0]]",
            "entry 5",
            "cumulative fraction 0.62 is below the previous 0.7; a CDF must be non-decreasing",
        ),
        ("[[64, 10], [128, 100]]", "entry 1", "cumulative fraction 10.0 is outside [0, 1]"),
        ("[[64, -0.1], [128, 1]]", "entry 1", "outside [0, 1]"),
        ("[[64, 0.5], [128, 0.98]]", "entry 2", "last cumulative fraction is 0.98, not 1"),
        ("[[0, 0.5], [128, 1.0]]", "entry 1", "tokens 0 is not positive"),
        ("[[64, 0.5], [-5, 1.0]]", "entry 2", "tokens -5 is not positive"),
        ("[[64.5, 0.5], [128, 1.0]]", "entry 1", "tokens 64.5 is not a whole number"),
    ],
)
def test_cdf_json_errors(tmp_path: Path, text: str, where: str, problem: str) -> None:
    msg = _error(_write(tmp_path / "data.json", text))
    assert msg.startswith(str(tmp_path / "data.json") + ": " + where)
    assert problem in msg


AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
AZURE_ROW = "2023-11-16 18:17:03.9799600,100,10\n"


@pytest.mark.parametrize(
    ("body", "where", "problem"),
    [
        (
            "TIMESTAMP,ContextTokens\n2023-11-16 18:17:03,100\n",
            "line 1",
            "missing column(s) GeneratedTokens",
        ),
        (AZURE_HEADER, "line 1", "no data rows"),
        (
            AZURE_HEADER + AZURE_ROW + "2023-11-16 18:17:04,abc,10\n",
            "line 3",
            "ContextTokens = 'abc' is not a number",
        ),
        (
            AZURE_HEADER + AZURE_ROW + "2023-11-16 18:17:04,100,-3\n",
            "line 3",
            "GeneratedTokens = -3 is negative",
        ),
        (
            AZURE_HEADER + AZURE_ROW + "2023-11-16 18:17:04,100.5,3\n",
            "line 3",
            "not a whole number",
        ),
        (
            AZURE_HEADER + AZURE_ROW + "yesterday,100,3\n",
            "line 3",
            "TIMESTAMP 'yesterday' is not a date-time",
        ),
        (AZURE_HEADER + AZURE_ROW + ",100,3\n", "line 3", "TIMESTAMP '' is not a date-time"),
        (
            AZURE_HEADER + AZURE_ROW + "2023-11-16 18:17:04,100\n",
            "line 3",
            "2 cells but the header has 3",
        ),
        (
            AZURE_HEADER + AZURE_ROW + "2023-11-16 18:17:01,100,3\n",
            "line 3",
            "is earlier than the previous row's",
        ),
        (AZURE_HEADER + AZURE_ROW + "2023-11-16 18:17:04,0,3\n", "line 3", "ContextTokens = 0"),
        ("a,b\n1,2\n", "line 1", "unrecognised CSV header"),
    ],
)
def test_azure_csv_errors(tmp_path: Path, body: str, where: str, problem: str) -> None:
    msg = _error(_write(tmp_path / "trace.csv", body))
    assert msg.startswith(str(tmp_path / "trace.csv") + ": " + where)
    assert problem in msg


def test_lengths_csv_errors(tmp_path: Path) -> None:
    path = _write(tmp_path / "lens.csv", "num_prefill_tokens,pd_ratio\n10,2.0\n")
    msg = _error(path)
    assert "lens.csv: line 1: missing column(s) num_decode_tokens" in msg
    path = _write(tmp_path / "lens.csv", "num_prefill_tokens,num_decode_tokens\n10,2\n\n7,x\n")
    msg = _error(path)
    assert "lens.csv: line 4: num_decode_tokens = 'x' is not a number" in msg


def test_zero_output_tokens_counted_as_one(tmp_path: Path) -> None:
    path = _write(tmp_path / "z.csv", AZURE_HEADER + AZURE_ROW + "2023-11-16 18:17:04,50,0")
    with pytest.warns(
        UserWarning, match=r"z.csv: 1 request\(s\) with GeneratedTokens = 0 .*line 3"
    ):
        w = load_workload(path)
    assert w.output_tokens.tolist() == [1, 10]
    assert w.trace is not None and w.trace.arrival_s.tolist() == pytest.approx([0.0, 0.02004])


def test_small_azure_file_reads_correctly(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "ok.csv",
        AZURE_HEADER + "2023-11-16 18:17:03.9799600,100,10\n2023-11-16 18:17:05.4799600,7,3",
    )
    w = load_workload(path)
    assert w.name == "ok" and w.source == str(path)
    assert w.trace is not None and w.trace.arrival_s.tolist() == [0.0, 1.5]
    assert w.input_tokens.tolist() == [7, 100] and w.weights.tolist() == [0.5, 0.5]


MOON = '{"timestamp": 0, "input_length": 100, "output_length": 10, "hash_ids": [1]}\n'


@pytest.mark.parametrize(
    ("body", "where", "problem"),
    [
        (MOON + '{"timestamp": 5, "input_length": 100\n', "line 2", "not valid JSON"),
        (MOON + "[1, 2, 3]\n", "line 2", "expected a JSON object"),
        (
            MOON + '{"timestamp": 5, "input_length": 100}\n',
            "line 2",
            "missing field(s) output_length",
        ),
        (
            MOON + '{"timestamp": 5, "input_length": "a", "output_length": 1}\n',
            "line 2",
            'input_length = "a" is not a finite number',
        ),
        (
            MOON + '{"timestamp": 5, "input_length": 7, "output_length": -1}\n',
            "line 2",
            "output_length = -1 is negative",
        ),
        (
            MOON + '{"timestamp": 5, "input_length": 7.5, "output_length": 1}\n',
            "line 2",
            "not a whole number",
        ),
        (
            MOON + '{"timestamp": "x", "input_length": 7, "output_length": 1}\n',
            "line 2",
            'timestamp = "x" is not a finite number',
        ),
        (
            '{"timestamp": 9, "input_length": 1, "output_length": 1}\n\n' + MOON,
            "line 3",
            "timestamp 0 ms is earlier than the previous request's 9 ms",
        ),
    ],
)
def test_mooncake_errors(tmp_path: Path, body: str, where: str, problem: str) -> None:
    msg = _error(_write(tmp_path / "m.jsonl", body))
    assert msg.startswith(str(tmp_path / "m.jsonl") + ": " + where)
    assert problem in msg


def test_mooncake_gzip_reads(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl.gz"
    body = MOON + '{"timestamp": 1500, "input_length": 7, "output_length": 3}\n'
    path.write_bytes(gzip.compress(body.encode()))
    w = load_workload(path)
    assert w.name == "m"
    assert w.trace is not None and w.trace.arrival_s.tolist() == [0.0, 1.5]
    assert w.trace.input_tokens.tolist() == [100, 7]
