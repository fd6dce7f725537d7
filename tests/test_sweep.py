"""What-if sweeps: axis parsing, rows that agree with the planner, resume, parallel runs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from fleetopt_milp import plots
from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.planner import plan
from fleetopt_milp.sweep import (
    COLUMNS,
    SweepSpec,
    cost_by_rate,
    cost_ttft_front,
    existing_keys,
    parse_values,
    read_rows,
    run_sweep,
)

SPEC = SweepSpec(workloads=("lmsys",), gpus=("paper-H100", "paper-A100"),
                 long_contexts_tokens=(65536,), rates_rps=(200.0, 400.0, 800.0),
                 slos_ms=(300.0, 500.0), compressible_shares=(0.75,))


def _rows(path) -> set[tuple]:
    df = read_rows(path)
    return {tuple(r) for r in df.itertuples(index=False)}


def test_parse_values_ranges_and_lists():
    assert parse_values("100:200:50", float, "--rate") == (100.0, 150.0, 200.0)
    assert parse_values("100:190:50,500,100", float, "--rate") == (100.0, 150.0, 500.0)
    assert parse_values("0.5:1:0.25", float, "--compressible") == (0.5, 0.75, 1.0)
    assert len(parse_values("100:2000:20", float, "--rate")) == 96
    assert parse_values("65536,131072", int, "--long-context") == (65536, 131072)
    assert parse_values("a, b,", str, "--gpu") == ("a", "b")
    for text, kind, needle in (("1:x:2", float, "START:STOP:STEP"),
                               ("5:1:1", float, "STOP >= START"), ("1.5", int, "whole"),
                               ("", float, "at least one")):
        with pytest.raises(FleetOptError, match=needle):
            parse_values(text, kind, "--opt")


def test_rows_agree_with_the_planner(tmp_path):
    out = tmp_path / "s.csv"
    summary = run_sweep(SPEC, out)
    assert (summary.total, summary.skipped, summary.planned) == (12, 0, 12)
    df = read_rows(out)
    assert list(df.columns) == list(COLUMNS) and len(df) == 12 and df["key"].is_unique
    for p in SPEC.points(SPEC.groups()[1])[::3]:
        pl = plan(SPEC.scenario(p))
        row = df[df["key"] == SPEC.key(p)].iloc[0]
        assert row["usd_per_hour"] == pytest.approx(pl.usd_per_hour)
        assert row["boundary_tokens"] == pl.boundary_tokens and row["gamma"] == pl.gamma
        assert row["ttft_ms"] == pytest.approx(max(q.p99_ttft_ms for q in pl.pools))
        assert row["saving_vs_homogeneous"] == pytest.approx(pl.saving_vs("homogeneous"))
    # cost grows with the rate for each profile
    for _, grp in df.groupby(["gpu", "slo_ms"]):
        assert np.all(np.diff(grp.sort_values("rate_rps")["usd_per_hour"]) >= 0)


def test_an_interrupted_sweep_resumes(tmp_path):
    full = tmp_path / "full.csv"
    run_sweep(SPEC, full, chunk_size=2)
    lines = full.read_text().splitlines(keepends=True)
    cut = tmp_path / "cut.csv"
    cut.write_text("".join(lines[:6]) + lines[6][:40])  # 5 rows, then a torn append
    assert len(existing_keys(cut)) == 5 and cut.read_text() == "".join(lines[:6])
    seen = []
    summary = run_sweep(SPEC, cut, chunk_size=2, on_progress=lambda d, t: seen.append((d, t)))
    assert (summary.skipped, summary.planned) == (5, 7)
    assert seen[0] == (5, 12) and seen[-1] == (12, 12)
    assert _rows(cut) == _rows(full)
    assert run_sweep(SPEC, cut).planned == 0  # nothing left to do


def test_parallel_runs_write_the_same_rows(tmp_path):
    from dask.distributed import LocalCluster

    serial, procs, dask = (tmp_path / f"{n}.csv" for n in ("serial", "procs", "dask"))
    run_sweep(SPEC, serial)
    run_sweep(SPEC, procs, workers=2, chunk_size=3)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster:
        run_sweep(SPEC, dask, scheduler=cluster.scheduler_address, chunk_size=5)
    assert _rows(procs) == _rows(serial) == _rows(dask)


def test_sweep_figures(tmp_path):
    out = tmp_path / "s.csv"
    run_sweep(SPEC, out)
    d = cost_by_rate(read_rows(out), SPEC)
    assert set(d.series) == {"paper-H100", "paper-A100"}
    rates, usd = d.series["paper-A100"]
    assert list(rates) == [200.0, 400.0, 800.0]  # at the first SLO only
    fig = plots.cost_vs_rate_figure(d)
    line = {ln.get_label(): ln for ln in fig.axes[0].get_lines()}["paper-A100"]
    assert np.allclose(line.get_ydata(), usd)

    f = cost_ttft_front(SPEC)
    assert f.front.any() and len(set(f.boundary_tokens)) > 10
    for i in np.flatnonzero(f.front):  # no fleet is both faster and cheaper than a front one
        assert not np.any((f.ttft_ms < f.ttft_ms[i]) & (f.usd_per_hour < f.usd_per_hour[i]))
    fig = plots.cost_ttft_front_figure(f)
    assert len(fig.axes[0].collections[0].get_offsets()) == len(f.ttft_ms)
    assert plots.png_bytes(fig)[:4] == b"\x89PNG"


def test_sweep_cli(tmp_path, monkeypatch, capsys):
    from fleetopt_milp.cli import main

    out, pdir = tmp_path / "s.csv", tmp_path / "plots"
    args = [sys.executable, "-m", "fleetopt_milp.cli", "sweep", "--out", str(out), "--workload",
            "lmsys", "--rate", "200:600:200", "--gpu", "paper-H100", "--workers", "1"]
    r = subprocess.run([*args, "--plots", str(pdir)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "3 scenarios: 0 already" in r.stdout and len(read_rows(out)) == 3
    assert {p.name for p in pdir.iterdir()} == {"cost_vs_rate.png", "cost_ttft_front.png"}
    monkeypatch.setattr("sys.argv", ["fleetopt", *args[3:]])
    main()
    assert "3 scenarios: 3 already" in capsys.readouterr().out
    for extra, needle in ((["--out", str(tmp_path / "s.xlsx")], "give a .csv or .parquet"),
                          (["--rate", "5:1:1"], "STOP >= START"),
                          (["--slo-ms", "1"], "below the prefill time")):
        monkeypatch.setattr("sys.argv", ["fleetopt", *args[3:], *extra])
        with pytest.raises(SystemExit) as exc:
            main()
        err = capsys.readouterr().err
        assert exc.value.code == 2 and needle in err and "Traceback" not in err


def test_a_killed_sweep_resumes_to_the_same_rows(tmp_path):
    import signal
    import time

    args = [sys.executable, "-m", "fleetopt_milp.cli", "sweep", "--workload", "lmsys",
            "--rate", "100:800:100", "--slo-ms", "300,500", "--gpu", "paper-H100",
            "--workers", "1", "--chunk-size", "1"]
    ref, cut = tmp_path / "ref.csv", tmp_path / "cut.csv"
    subprocess.run([*args, "--out", str(ref)], check=True, capture_output=True, timeout=120)
    proc = subprocess.Popen([*args, "--out", str(cut)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if cut.exists() and len(cut.read_text().splitlines()) >= 4:  # header + 3 rows
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    proc.wait(timeout=30)
    kept = len(existing_keys(cut))
    assert 3 <= kept < 16, "the sweep was not interrupted mid-way"
    r = subprocess.run([*args, "--out", str(cut)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and f"16 scenarios: {kept} already" in r.stdout
    assert _rows(cut) == _rows(ref)


def test_parquet_output_and_resume(tmp_path):
    out = tmp_path / "s.parquet"
    first = run_sweep(SPEC, out)
    assert first.planned == 12 and out.is_file() and (tmp_path / "s.parquet.csv").is_file()
    pq = read_rows(out)
    assert {tuple(r) for r in pq.itertuples(index=False)} == _rows(tmp_path / "s.parquet.csv")
    (tmp_path / "s.parquet.csv").unlink()  # only the Parquet file is left: resume from it
    again = run_sweep(SPEC, out)
    assert (again.skipped, again.planned) == (12, 0)
    assert read_rows(out).equals(pq)


def test_a_foreign_csv_is_never_overwritten(tmp_path):
    out = tmp_path / "mine.csv"
    out.write_text("a,b\n1,2\n")
    with pytest.raises(FleetOptError, match="not a sweep file"):
        run_sweep(SPEC, out)
    assert out.read_text() == "a,b\n1,2\n"


def test_infeasible_scenarios_are_rows_and_bad_chunks_are_errors(tmp_path):
    spec = SweepSpec(workloads=("agent-heavy",), gpus=("paper-H100",),
                     long_contexts_tokens=(65536,), rates_rps=(100.0,), slos_ms=(40.0, 500.0),
                     compressible_shares=(0.75,))
    out = tmp_path / "s.csv"
    assert run_sweep(spec, out).infeasible == 1
    df = read_rows(out).set_index("slo_ms")
    assert df.loc[40.0, "status"] == "infeasible" and df.loc[40.0, "usd_per_hour"] == np.inf
    assert "prefill alone" in df.loc[40.0, "message"] and "\n" not in df.loc[40.0, "message"]
    assert df.loc[500.0, "status"] == "ok" and np.isfinite(df.loc[500.0, "usd_per_hour"])
    with pytest.raises(FleetOptError, match="chunk_size=0"):
        run_sweep(spec, tmp_path / "t.csv", chunk_size=0)


def test_the_service_model_reaches_every_scenario_and_its_key():
    from fleetopt_milp.sweep import SweepSpec

    common = dict(workloads=("lmsys",), gpus=("paper-H100",), long_contexts_tokens=(65536,),
                  rates_rps=(200.0,), slos_ms=(500.0,), compressible_shares=(0.75,))
    slot, engine = SweepSpec(**common), SweepSpec(**common, service_model="engine")
    point = slot.points(slot.groups()[0])[0]
    assert slot.scenario(point).service_model == "slot"
    assert engine.scenario(point).service_model == "engine"
    assert slot.key(point) != engine.key(point)  # a resumed sweep never mixes the two
    want = plan(engine.scenario(point))
    assert want.service_model == "engine" and want.pools[-1].mean_tpot_ms is not None


def test_an_unwritable_output_is_a_one_line_error(tmp_path):
    from fleetopt_milp.sweep import SweepSpec

    spec = SweepSpec(workloads=("lmsys",), gpus=("paper-H100",), long_contexts_tokens=(65536,),
                     rates_rps=(200.0,), slos_ms=(500.0,), compressible_shares=(0.75,))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(FleetOptError, match="cannot write"):
        run_sweep(spec, blocker / "out.csv")
