"""Plan files record their inputs; `--from` reproduces them; simulate finds the workload."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from fleetopt_milp.cli import main
from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.plan import read_plan
from fleetopt_milp.provenance import PlanInputs, read_inputs, workload_spec
from fleetopt_milp.workload import data_dir

TIMING = {"planner_ms", "seconds", "precompute_seconds", "build_seconds", "total_seconds"}
LMSYS = data_dir() / "fleetsim_reference_cdfs" / "lmsys_cdf.json"


def _cli(monkeypatch, *args):
    monkeypatch.setattr("sys.argv", ["fleetopt", *map(str, args)])
    main()


def _untimed(obj):
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMING}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


@pytest.fixture
def workload_file(tmp_path):
    path = tmp_path / "mine.json"
    shutil.copy(LMSYS, path)
    return path


def test_plan_records_its_inputs(tmp_path, workload_file, monkeypatch):
    out = tmp_path / "p.json"
    _cli(monkeypatch, "plan", "--workload", workload_file, "--rate", 321, "--slo-ms", 450,
         "--gpu", "paper-H100", "--service-model", "slot", "--compressible", 0.6,
         "--compression-ms", 3, "--json", out)
    rec = json.loads(out.read_text())["inputs"]
    assert rec["command"] == "plan" and rec["package_version"] == "0.1.0"
    wl = rec["workload"]
    assert wl["spec"] == str(workload_file.resolve()) and not wl["builtin"]
    assert wl["files"][0]["sha256"] == hashlib.sha256(workload_file.read_bytes()).hexdigest()
    assert rec["traffic"] == {"rate_rps": 321.0, "slo_ms": 450.0, "percentile": 99.0,
                              "peak_factor": 1.0, "peak_window_s": None, "tpot_ms": None,
                              "tpot_percentile": 99.0}
    assert rec["options"]["service_model"] == "slot"
    assert rec["options"]["compressible_share"] == 0.6
    assert rec["options"]["compression_latency_ms"] == 3.0
    prof = rec["profiles"][0]
    assert prof["name"] == "paper-H100" and prof["source"] == "paper"
    assert prof["values"]["w_ms"] == 4.0 and prof["values"]["tp"] == 8
    assert rec["verify"]["seed"] == 0 and rec["solver_status"] is None
    # the record survives a read/write round trip as typed records
    plan = read_plan(out)
    assert isinstance(plan.inputs, PlanInputs)
    assert json.loads(json.dumps(plan.inputs.to_dict())) == rec


def test_builtin_workload_records_every_data_file(tmp_path, monkeypatch):
    out = tmp_path / "p.json"
    _cli(monkeypatch, "plan", "--workload", "azure-2023", "--rate", 200, "--json", out)
    wl = json.loads(out.read_text())["inputs"]["workload"]
    assert wl["spec"] == "azure-2023" and wl["builtin"]
    assert [Path(f["path"]).name for f in wl["files"]] == [
        "AzureLLMInferenceTrace_conv.csv", "AzureLLMInferenceTrace_code.csv"]


@pytest.mark.parametrize("args", [
    ("plan", "--rate", 400, "--slo-ms", 1000, "--tpot-ms", 80, "--gamma-max", 1.5,
     "--rho-max", 0.8),
    ("plan", "--workload", "agent-heavy", "--rate", 150, "--gpu", "paper-A100",
     "--paper-compat"),
    ("solve", "--workload", "lmsys", "--rate", 500, "--gpus", "H100,A100", "--model",
     "Llama-3-70B", "--tp", 8, "--max-gpus", "H100=160", "--pools", 2),
    ("plan", "--workload", "azure-code", "--rate", 200, "--peak-window-s", 5, "--verify",
     "--verify-requests", 20000, "--seed", 3),
], ids=["plan", "plan-paper", "solve", "plan-peak-verify"])
def test_from_reproduces_the_plan_file(args, tmp_path, monkeypatch):
    first, again = tmp_path / "first.json", tmp_path / "again.json"
    _cli(monkeypatch, *args, "--json", first)
    monkeypatch.chdir(tmp_path)  # the record must not depend on the working directory
    _cli(monkeypatch, args[0], "--from", first, "--json", again)
    assert _untimed(json.loads(again.read_text())) == _untimed(json.loads(first.read_text()))


def test_from_with_a_file_workload_and_wrong_command(tmp_path, workload_file, monkeypatch,
                                                     capsys):
    first, again = tmp_path / "first.json", tmp_path / "again.json"
    _cli(monkeypatch, "plan", "--workload", workload_file, "--rate", 300, "--json", first)
    _cli(monkeypatch, "plan", "--from", first, "--json", again)
    assert _untimed(json.loads(again.read_text())) == _untimed(json.loads(first.read_text()))
    with pytest.raises(FleetOptError, match="reproduce it with `fleetopt plan --from"):
        read_inputs(first, "solve")
    workload_file.write_text(workload_file.read_text() + "\n")
    capsys.readouterr()
    _cli(monkeypatch, "plan", "--from", first, "--json", again)
    err = capsys.readouterr().err
    assert "workload 'mine' differs from the one planned with" in err
    assert len([ln for ln in err.splitlines() if "differs" in ln]) == 1


def test_simulate_finds_a_file_workload_and_flags_a_change(tmp_path, workload_file,
                                                          monkeypatch, capsys):
    out = tmp_path / "p.json"
    _cli(monkeypatch, "plan", "--workload", workload_file, "--rate", 300, "--json", out)
    plan = read_plan(out)
    assert plan.workload == "mine" and workload_spec(plan) == str(workload_file.resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    sim = ("simulate", out, "--requests", 20000, "--replications", 2, "--workers", 1)
    capsys.readouterr()
    _cli(monkeypatch, *sim)
    assert "differs" not in capsys.readouterr().out
    workload_file.write_text(workload_file.read_text() + "\n")
    _cli(monkeypatch, *sim)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "differs from" in ln]
    assert len(lines) == 1 and str(workload_file.resolve()) in lines[0]


def test_malformed_or_missing_inputs_are_one_line_errors(tmp_path, monkeypatch):
    out = tmp_path / "p.json"
    _cli(monkeypatch, "plan", "--workload", "lmsys", "--rate", 300, "--json", out)
    d = json.loads(out.read_text())
    del d["inputs"]["traffic"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(FleetOptError, match="'inputs' record missing or malformed field"):
        read_plan(bad)
    del d["inputs"]
    bad.write_text(json.dumps(d))
    with pytest.raises(FleetOptError, match="records no inputs"):
        read_inputs(bad, "plan")
    assert read_plan(bad).inputs is None and workload_spec(read_plan(bad)) == "lmsys"


def test_from_refuses_other_options(tmp_path, monkeypatch, capsys):
    out = tmp_path / "p.json"
    _cli(monkeypatch, "plan", "--workload", "lmsys", "--rate", 300, "--json", out)
    with pytest.raises(SystemExit) as exc:
        _cli(monkeypatch, "plan", "--from", out, "--rate", 5, "--gpu", "paper-A100")
    assert exc.value.code == 2
    assert "drop --rate, --gpu (only --json may go with --from)" in capsys.readouterr().err
