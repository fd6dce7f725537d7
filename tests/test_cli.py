"""The command line: plan files, one-line errors with exit status 2."""

import json
import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run([sys.executable, "-m", "fleetopt_milp.cli", *args],
                          capture_output=True, text=True, timeout=120)


def test_plan_writes_the_plan_file(tmp_path):
    out = tmp_path / "plan.json"
    r = run("plan", "--workload", "lmsys", "--rate", "300", "--gpu", "paper-H100",
            "--service-model", "slot", "--json", str(out))
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    assert d["schema"] == "fleetopt-plan/1"
    assert d["usd_per_hour"] == pytest.approx(sum(p["usd_per_hour"] for p in d["pools"]))
    assert d["usd_per_hour"] == pytest.approx(d["instances"] * 8 * 4.02)
    assert set(d["baselines"]) >= {"homogeneous", "pool_routing", "retrofit"}
    assert d["baselines"]["homogeneous"]["usd_per_hour"] >= d["usd_per_hour"]
    assert "Fleet plan" in r.stdout and "homogeneous" in r.stdout


@pytest.mark.parametrize("args,needle", [
    (("--rate", "-1"), "rate_rps=-1.0"),
    (("--workload", "no-such-workload"), "built-in names"),
    (("--gpu", "X100"), "unknown GPU or profile 'X100'"),
    (("--workload", "mooncake-conversation"), "raise --long-context"),
    (("--slo-ms", "40", "--workload", "agent-heavy", "--gpu", "paper-H100"),
     "infeasible (prefill)"),
])
def test_user_mistakes_are_one_line_errors(args, needle):
    r = run("plan", *args)
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_plan_verify_and_peak_window(tmp_path):
    out = tmp_path / "plan.json"
    r = run("plan", "--workload", "azure-code", "--rate", "200", "--peak-window-s", "5",
            "--gpu", "paper-H100", "--service-model", "slot", "--verify", "--verify-requests", "30000", "--json", str(out))
    assert r.returncode == 0, r.stderr
    d = json.loads(out.read_text())
    # The busiest 5 s of the trace scaled to 200 req/s runs at 1.89x the mean.
    assert d["peak_factor"] == pytest.approx(1.891, abs=0.01)
    assert d["rate_rps"] == pytest.approx(200 * d["peak_factor"])
    v = d["verification"]
    assert v["confirmed"] and v["checked"] == v["rejected"] + 1
    assert v["certification"]["certified"]
    assert v["usd_per_hour"] == pytest.approx(d["usd_per_hour"])


def test_peak_window_needs_a_trace():
    r = run("plan", "--workload", "lmsys", "--peak-window-s", "5")
    assert r.returncode == 2 and "has no timestamps" in r.stderr
