"""The plan report: each figure's series, valid PNGs, and an HTML page Chromium opens cleanly."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

from fleetopt_milp import plots
from fleetopt_milp import report_data as rd
from fleetopt_milp.cli import main
from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.html_report import summary_paragraphs, write_report
from fleetopt_milp.plan import read_plan


def _png_ok(data: bytes) -> np.ndarray:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = imread(io.BytesIO(data), format="png")
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert float(img[..., :3].std()) > 0.01  # not a blank canvas
    return img


def _labelled(ax) -> dict:
    return {ln.get_label(): ln for ln in ax.get_lines()}


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "plan.json"
    sys_argv = sys.argv
    sys.argv = ["fleetopt", "plan", "--workload", "azure-2023", "--rate", "400", "--json",
                str(path)]
    try:
        main()
    finally:
        sys.argv = sys_argv
    return path


@pytest.fixture(scope="module")
def plan(plan_file):
    return read_plan(plan_file)


@pytest.fixture(scope="module")
def scenario(plan):
    return rd.scenario_for(plan)


def test_length_cdf_figure(plan, scenario):
    d = rd.length_cdf(plan, scenario)
    fig = plots.length_cdf_figure(d)
    lines = _labelled(fig.axes[0])
    cdf = lines["azure-2023 CDF"]
    assert np.array_equal(cdf.get_xdata(), d.tokens) and cdf.get_ydata()[-1] == pytest.approx(1)
    assert np.all(np.diff(cdf.get_ydata()) >= 0)
    b = plan.boundary_tokens
    assert list(lines[f"B = {b:,} tokens"].get_xdata()) == [b, b]
    end = int(np.floor(b * plan.gamma + 1e-9))
    assert list(lines[f"γB = {end:,} tokens"].get_xdata()) == [end, end]
    _png_ok(plots.png_bytes(fig))
    # three pools: both boundaries are marked, a band only where gamma > 1
    three = plots.LengthCdf("w", np.array([10, 200, 3000]), np.array([.2, .7, 1.]),
                            ((100, 150), (1000, 1000)), 4096)
    labels = set(_labelled(plots.length_cdf_figure(three).axes[0]))
    assert {"B1 = 100 tokens", "γB1 = 150 tokens", "B2 = 1,000 tokens"} <= labels
    assert "γB2 = 1,000 tokens" not in labels


def test_cost_cliff_agrees_with_the_plan(plan, scenario):
    d = rd.cost_cliff(plan, scenario)
    assert [c.gamma for c in d.curves] == [1.0, plan.gamma]
    chosen = d.curves[-1]
    # The bottom of the chosen-gamma curve is the plan's cost, at the plan's boundary.
    assert np.nanmin(chosen.usd_per_hour) == pytest.approx(plan.usd_per_hour)
    assert plan.boundary_tokens in d.equal_marginal_tokens
    # gamma = 1 is pool routing: its bottom is the pool-routing baseline
    assert np.nanmin(d.curves[0].usd_per_hour) == pytest.approx(
        plan.baselines["pool_routing"].usd_per_hour)
    fig = plots.cost_cliff_figure(d)
    lines = _labelled(fig.axes[0])
    assert np.array_equal(lines["γ = 1"].get_xdata(), d.curves[0].boundaries_tokens)
    shown = np.where(np.isfinite(chosen.usd_per_hour), chosen.usd_per_hour, np.nan)
    assert np.allclose(lines[f"γ = {plan.gamma:g} (chosen)"].get_ydata(), shown, equal_nan=True)
    star = lines["equal marginal cost"]
    assert np.allclose(star.get_ydata(), plan.usd_per_hour)
    _png_ok(plots.png_bytes(fig))


def test_pools_savings_and_model_vs_sim_figures(plan):
    fig = plots.pools_figure(rd.pool_bars(plan))
    util_ax, ttft_ax = fig.axes
    assert [r.get_height() for r in util_ax.patches] == pytest.approx(
        [p.utilization for p in plan.pools])
    assert [r.get_height() for r in ttft_ax.patches] == pytest.approx(
        [p.p99_ttft_ms for p in plan.pools])
    assert list(_labelled(ttft_ax)["SLO 500"].get_ydata()) == [500, 500]
    _png_ok(plots.png_bytes(fig))

    fig = plots.savings_figure(rd.savings(plan))
    widths = [r.get_width() for r in fig.axes[0].patches]
    assert widths == pytest.approx([b.usd_per_hour for b in plan.baselines.values()]
                                   + [plan.usd_per_hour])
    texts = [t.get_text().strip() for t in fig.axes[0].texts]
    assert f"saves {plan.saving_vs('homogeneous'):.1%}" in texts
    _png_ok(plots.png_bytes(fig))

    panel = plots.Comparison("share over 500 ms", ("short", "long"), np.array([.004, .008]),
                             np.array([.005, .007]), np.array([.004, .006]),
                             np.array([.006, .008]), 0.01)
    fig = plots.model_vs_sim_figure((panel,))
    heights = [r.get_height() for r in fig.axes[0].patches]
    assert heights == pytest.approx([.004, .008, .005, .007])
    _png_ok(plots.png_bytes(fig))


def test_verified_plan_compares_model_and_simulation(tmp_path, monkeypatch):
    out = tmp_path / "v.json"
    monkeypatch.setattr("sys.argv", ["fleetopt", "plan", "--workload", "lmsys", "--rate", "200",
                                     "--verify", "--verify-requests", "20000", "--json",
                                     str(out)])
    main()
    plan = read_plan(out)
    (panel,) = rd.comparisons(plan)
    cert = plan.verification["certification"]["pools"]
    assert panel.pools == tuple(p["pool"] for p in cert)
    assert panel.simulated == pytest.approx([p["slo_miss_share"] for p in cert])
    assert panel.limit == pytest.approx(0.01)
    files = write_report(plan, tmp_path / "rep")
    assert set(files.figures) == {"length_cdf", "cost_cliff", "pools", "savings",
                                  "model_vs_sim"}
    assert "Checked by simulation" in files.html.read_text()


def test_simulation_json_gives_tpot_and_three_comparisons(plan):
    from fleetopt_milp.simulator import simulate

    sim = simulate(plan, fidelity="engine", n_requests=6000, replications=2, workers=1,
                   seed=1).to_dict()
    rd.check_simulation(plan, sim, "sim.json")
    util, ttft, miss = rd.comparisons(plan, sim)
    # the simulator's analytical figures are the plan's own
    assert util.analytical == pytest.approx([p.utilization for p in plan.pools], rel=1e-6)
    assert ttft.analytical == pytest.approx([p.p99_ttft_ms for p in plan.pools], rel=1e-3)
    assert miss.limit == pytest.approx(0.01) and ttft.limit == plan.slo_ms
    assert np.all(util.ci_lo <= util.simulated) and np.all(util.simulated <= util.ci_hi)
    bars = rd.pool_bars(plan, sim)
    assert np.isfinite(bars.tpot_ms).all()
    fig = plots.pools_figure(bars)
    assert len(fig.axes) == 3
    assert [r.get_height() for r in fig.axes[2].patches] == pytest.approx(list(bars.tpot_ms))
    fig = plots.model_vs_sim_figure((util, ttft, miss))
    assert len(fig.axes) == 3
    _png_ok(plots.png_bytes(fig))


def test_summary_is_plain_language(plan, scenario):
    text = " ".join(summary_paragraphs(plan, scenario))
    assert f"Buy {plan.instances} instances ({plan.gpus} GPUs" in text
    end = int(np.floor(plan.boundary_tokens * plan.gamma + 1e-9))
    assert f"B = {plan.boundary_tokens:,}" in text and "Compress-and-Route" in text
    assert f"({plan.boundary_tokens:,}, {end:,}] tokens (γ = {plan.gamma:g}, " in text
    long_ = plan.pools[1]
    assert (f"up to {long_.context_tokens:,} tokens, go to a long pool of {long_.instances} "
            "instance") in text
    share = float(scenario.workload.cdf(plan.boundary_tokens))
    assert f"({100 * share:.1f}% of requests)" in text


# --- the HTML page in headless Chromium --------------------------------------------------

def _install_chromium() -> str | None:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found or shutil.which("apt-get") is None or os.geteuid() != 0:
        return found
    subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True,
                   timeout=1200)
    return shutil.which("chromium")


@pytest.fixture(scope="session")
def chromium():
    path = _install_chromium()
    if path is None:
        pytest.skip("chromium is missing and cannot be installed here (needs apt-get as root); "
                    "install Debian's chromium package")
    return path


def _open(chromium: str, url: str, shot) -> list[str]:
    """Open ``url`` headless, screenshot it; return the page's console messages."""
    r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--enable-logging=stderr", "--v=0", f"--screenshot={shot}",
                        "--window-size=1200,2600", url],
                       capture_output=True, text=True, timeout=120)
    return [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]


def test_html_report_opens_in_chromium_without_console_errors(plan_file, tmp_path, chromium):
    out = tmp_path / "rep"
    r = subprocess.run([sys.executable, "-m", "fleetopt_milp.cli", "report", str(plan_file),
                        "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    page = (out / "index.html").read_text()
    srcs = re.findall(r'src="([^"]+)"', page)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "http://" not in page and "https://" not in page  # nothing to fetch
    shot = tmp_path / "shot.png"
    assert _open(chromium, (out / "index.html").as_uri(), shot) == []
    _png_ok(shot.read_bytes())
    # the check can fail: a page with a script error is caught
    bad = tmp_path / "bad.html"
    bad.write_text("<html><body><script>notDefined();</script></body></html>")
    assert any("notDefined" in m for m in _open(chromium, bad.as_uri(), tmp_path / "b.png"))


def test_report_cli_errors(plan_file, tmp_path):
    target = tmp_path / "file"
    target.write_text("")
    r = subprocess.run([sys.executable, "-m", "fleetopt_milp.cli", "report", str(plan_file),
                        "--out", str(target)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "is not a directory" in r.stderr
    with pytest.raises(FleetOptError, match="not a simulation file"):
        rd.check_simulation(read_plan(plan_file), {"pools": []}, "x.json")


def test_summary_names_the_peak_factor(tmp_path, monkeypatch):
    out = tmp_path / "pk.json"
    monkeypatch.setattr("sys.argv", ["fleetopt", "plan", "--workload", "lmsys", "--rate", "300",
                                     "--peak-factor", "1.5", "--json", str(out)])
    main()
    text = " ".join(summary_paragraphs(read_plan(out)))
    assert "sized for a peak of 450.0 requests/s, 1.50 times the mean 300.0" in text


def test_report_without_a_loadable_workload(plan_file, tmp_path):
    import json

    d = json.loads(plan_file.read_text())
    d.pop("inputs")
    d["workload"] = "gone-stem"  # a file workload's stem, as plan files without inputs hold
    old = tmp_path / "old.json"
    old.write_text(json.dumps(d))
    files = write_report(read_plan(old), tmp_path / "rep")
    assert set(files.figures) == {"pools", "savings"}
    page = files.html.read_text()
    assert "could not be loaded" in page and "records no inputs" in page
