"""Bad and edge inputs (issue 7, section 2): each case of the adversarial run, and its class.

Every user mistake ends in exit status 2 with one line on stderr naming the field and the
fix; no plan or evaluation exits 0 with a pool at utilization >= 1 or a non-finite figure;
plan files are validated on load; writes are atomic; certification needs a steady state.
"""

from __future__ import annotations

import errno
import json
import os
import re

import pytest
from clirun import fleetopt

from fleetopt_milp.errors import FleetOptError
from fleetopt_milp.hardware import LlmSpec, load_catalog
from fleetopt_milp.plan import read_plan, write_plan

LMSYS = ("--workload", "lmsys", "--rate", "300")
SLOT = ("--gpu", "paper-H100", "--service-model", "slot")  # the model these files were made on


@pytest.fixture(scope="module")
def plan_file(tmp_path_factory):
    """A valid plan file: lmsys at 300 req/s on paper-H100 (short and long pool)."""
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    fleetopt("plan", *LMSYS, *SLOT, "--json", path)
    return path


@pytest.fixture
def plan_dict(plan_file):
    return json.loads(plan_file.read_text())


def write(tmp_path, d, name="edited.json"):
    path = tmp_path / name
    path.write_text(json.dumps(d) if not isinstance(d, str) else d)
    return path


# ---------------------------------------------------------------------------------------
# Every numeric option is finite and in range
# ---------------------------------------------------------------------------------------

BAD_FLOATS = ("nan", "inf", "-inf", "-1")


@pytest.mark.parametrize("value", BAD_FLOATS + ("0",))
@pytest.mark.parametrize("option", ["--rate", "--slo-ms", "--percentile", "--rho-max",
                                    "--peak-window-s"])
def test_plan_positive_options(option, value):
    fleetopt("plan", *LMSYS, option, value).one_line_error(option)


@pytest.mark.parametrize("value", BAD_FLOATS)
@pytest.mark.parametrize("option", ["--gamma-max", "--compressible", "--compression-ms",
                                    "--peak-factor"])
def test_plan_float_options(option, value):
    """``--compression-ms nan`` used to be accepted and to drive gamma."""
    fleetopt("plan", *LMSYS, option, value).one_line_error(option)


@pytest.mark.parametrize(("option", "value"), [
    ("--long-context", "0"), ("--long-context", "-5"), ("--tp", "0"), ("--tp", "-8"),
    ("--verify-candidates", "0"), ("--verify-requests", "-1"), ("--seed", "-1"),
    ("--long-context", "2.5"), ("--tp", "2.5"), ("--rate", "fast"), ("--seed", "x"),
])
def test_plan_integer_options(option, value):
    args = ("--gpu", "H100", "--model", "Llama-3-70B") if option == "--tp" else ()
    fleetopt("plan", *LMSYS, *args, option, value, "--verify").one_line_error(option)


def test_negative_seed_of_verify_is_an_error_not_a_traceback():
    fleetopt("plan", *LMSYS, "--verify", "--seed", "-1").one_line_error("--seed -1")


def test_absurd_rate_is_refused_not_a_tiny_fleet():
    """1e22 req/s used to give 3 instances at utilization 1.6e20."""
    line = fleetopt("plan", "--rate", "1e22").one_line_error("rate_rps=1e+22")
    assert "instances" in line and "--rate" in line


def test_large_but_representable_rate_gives_a_sound_plan(tmp_path):
    out = tmp_path / "big.json"
    r = fleetopt("plan", *LMSYS[:2], *SLOT, "--rate", "1e9", "--json", out)
    assert r.code == 0, r.err
    plan = read_plan(out)
    assert all(0 < p.utilization < 1 for p in plan.pools)
    # The utilization cap alone needs rate E[S] / (slots rho_max) instances per pool.
    for p in plan.pools:
        a = p.allocations[0]
        floor = a.rate_rps * a.mean_service_s / (a.slots_per_instance * 0.85)
        assert floor <= a.instances <= floor * 1.01 + 1


@pytest.mark.parametrize(("option", "value"), [
    ("--time-limit-s", "nan"), ("--time-limit-s", "-1"), ("--time-limit-s", "0"),
    ("--time-limit-s", "inf"), ("--pools", "0"), ("--pools", "5"), ("--min-instances", "-1"),
    ("--max-total-gpus", "-1"), ("--budget-usd-per-hour", "nan"),
    ("--budget-usd-per-hour", "-5"), ("--rate", "1e22"), ("--compression-ms", "nan"),
    ("--objective", "speed"), ("--max-gpus", "H100=-1"), ("--mix", "some"),
    ("--budget-usd-per-hour", "1e30 --objective rate"), ("--min-instances", str(10**30)),
])
def test_solve_options(option, value):
    """``--time-limit-s nan`` used to report "optimal"; negative ones gave a traceback."""
    fleetopt("solve", *LMSYS, option, *value.split()).one_line_error()


@pytest.mark.parametrize(("option", "value"), [
    ("--rate", "nan"), ("--rate", "-1"), ("--rate", "0"), ("--rate", "inf"),
    ("--rate-scale", "nan"), ("--rate-scale", "0"), ("--requests", "-1"),
    ("--requests", "50"), ("--replications", "0"), ("--workers", "0"), ("--max-batch", "0"),
    ("--seed", "-1"), ("--fidelity", "fast"), ("--scheduler", "foo"),
    ("--requests", str(10**30)),
])
def test_simulate_options(plan_file, option, value):
    fleetopt("simulate", plan_file, "--requests", "5000", option, value).one_line_error()


# ---------------------------------------------------------------------------------------
# Tensor parallelism must split the heads
# ---------------------------------------------------------------------------------------


def test_tp_3_is_refused_naming_both_numbers():
    line = fleetopt("plan", "--gpu", "H100", "--model", "Llama-3-70B", "--tp",
                    "3").one_line_error("tp=3")
    assert "64 attention heads" in line and "8 KV heads" in line and "1, 2, 4, 8" in line


def test_tp_limited_by_kv_heads():
    qwen = load_catalog().llm("Qwen2.5-32B")  # 40 attention heads, 8 KV heads
    qwen.check_tp(8)
    with pytest.raises(FleetOptError, match="its KV heads cannot be split 5 ways"):
        qwen.check_tp(5)
    # Beyond the KV heads, a multiple of them replicates the heads (as vLLM does).
    LlmSpec("m", 2, 1024, 32, 8, 32, 1.0, 1.0, 2, 4096, "test").check_tp(16)
    with pytest.raises(FleetOptError, match="attention heads cannot be split 12 ways"):
        LlmSpec("m", 2, 1024, 32, 8, 32, 1.0, 1.0, 2, 4096, "test").check_tp(12)


# ---------------------------------------------------------------------------------------
# Plan files are validated on load
# ---------------------------------------------------------------------------------------


def _set(path: str, value):
    def edit(d):
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        node = d
        for k in keys[:-1]:
            node = node[k]
        if value is KeyError:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
        return d
    return edit


PLAN_EDITS = [
    (_set("pools.0.allocations.0.instances", 2.5), "pools[0].allocations[0].instances: must be "
     "a whole number"),
    (_set("rate_rps", 0), "rate_rps: 0 is out of range"),
    (_set("rate_rps", "fast"), "rate_rps: must be a number"),
    (_set("pools.0.allocations.0.tp", 0), "pools[0].allocations[0].tp: 0 is out of range"),
    (_set("pools.0.instances", 99), "pools[0].instances: 99 does not equal the sum"),
    (_set("instances", 1), "instances: 1 does not equal the sum"),
    (_set("gpus", 7), "gpus: 7 does not equal the sum"),
    (_set("pools.1.allocations.0.usd_per_hour", 1.0), "usd_per_hour: 1 does not equal"),
    (_set("pools.0.allocations.0.utilization", 1.2), "utilization: 1.2 is out of range"),
    (_set("pools.0.utilization", 1.0), "pools[0].utilization: 1.0 is out of range"),
    (_set("pools.0.allocations.0.load_share", 0.5), "load shares sum to 0.5"),
    (_set("pools.0.allocations.0.instances", True), "must be a whole number, got True"),
    (_set("pools.0.allocations.0.instances", -1), "instances: -1 is out of range"),
    (_set("pools.0.role", KeyError), "pools[0].role: missing"),
    (_set("slo_ms", KeyError), "slo_ms: missing"),
    (_set("baselines.homogeneous.pool_instances", KeyError), "pool_instances: must be a list"),
    (_set("pools", []), "pools: must be a non-empty list"),
    (_set("pools.1.lo_tokens", 100), "pools[1].lo_tokens: 100 but the pool below ends"),
    (_set("long_context_tokens", 131072), "the last pool must end at the long window"),
    (_set("schema", "fleetopt-plan/0"), "not a fleetopt plan file"),
    (_set("pools.0.allocations", "none"), "allocations: must be a non-empty list"),
    (_set("pools.0", 7), "pools[0]: must be a JSON object"),
    (_set("paper_compat", "no"), "paper_compat: must be true or false"),
    (_set("pools.0.allocations.0.instances", 10**400), "instances: 1000000000000000000000"),
    (_set("rate_rps", 10**400), "rate_rps: 1000000000000000000000"),
    (_set("model", ["x"] * 1000), "model: must be a string, got ['x', 'x',"),
]


@pytest.mark.parametrize(("edit", "needle"), PLAN_EDITS,
                         ids=[n.split(":")[0] for _, n in PLAN_EDITS])
def test_bad_plan_files_are_one_line_errors(tmp_path, plan_dict, edit, needle):
    path = write(tmp_path, edit(plan_dict))
    line = fleetopt("simulate", path, "--requests", "5000").one_line_error(needle)
    assert str(path) in line and "__init__" not in line
    with pytest.raises(FleetOptError, match=re.escape(needle)):
        read_plan(path)


def test_zero_instances_with_traffic_in_the_file(tmp_path, plan_dict):
    alloc = plan_dict["pools"][1]["allocations"][0]
    alloc.update(instances=0, gpus=0, usd_per_hour=0.0)
    pool = plan_dict["pools"][1]
    pool.update(instances=0, gpus=0, usd_per_hour=0.0)
    plan_dict.update(instances=plan_dict["pools"][0]["instances"],
                     gpus=plan_dict["pools"][0]["gpus"],
                     usd_per_hour=plan_dict["pools"][0]["usd_per_hour"],
                     usd_per_year=plan_dict["pools"][0]["usd_per_hour"] * 8760)
    fleetopt("simulate", write(tmp_path, plan_dict)).one_line_error(
        "0 instances cannot serve")


@pytest.mark.parametrize(("text", "needle"), [
    ('{"schema": "fleetopt-plan/1", "rate_rps": NaN}', "NaN is not a number JSON allows"),
    ('{"schema": "fleetopt-plan/1", "rate_rps": Infinity}', "Infinity is not a number"),
    ("[1, 2]", "not a fleetopt plan file"),
    ("", "not valid JSON"),
    ("\xff\xfe", "not a valid plan file"),
])
def test_unreadable_plan_files(tmp_path, text, needle):
    path = tmp_path / "bad.json"
    path.write_bytes(text.encode("latin-1"))
    fleetopt("simulate", path).one_line_error(needle)


def test_truncated_plan_file(tmp_path, plan_file):
    text = plan_file.read_text()
    fleetopt("simulate", write(tmp_path, text[: len(text) // 2])).one_line_error(
        "not valid JSON")


def test_plan_files_round_trip_exactly_and_keep_extra_keys(tmp_path, plan_dict):
    plan_dict["future_record"] = {"command": "plan", "rate": 300}  # added by later versions
    path = write(tmp_path, plan_dict)
    plan = read_plan(path)
    assert plan.extra["future_record"] == {"command": "plan", "rate": 300}
    write_plan(plan, tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == plan_dict


# ---------------------------------------------------------------------------------------
# Simulation: no steady state, no certificate; nothing unservable is simulated
# ---------------------------------------------------------------------------------------


def test_short_run_is_inconclusive_never_certified(tmp_path, plan_file):
    """A run that covered a sliver of traffic used to print "certified"."""
    out = tmp_path / "sim.json"
    r = fleetopt("simulate", plan_file, "--requests", "2000", "--json", out)
    assert r.code == 0, r.err
    status = next(ln for ln in r.out.splitlines() if "simulated requests/s" in ln
                  or ln.startswith("inconclusive"))
    assert status.startswith("inconclusive: no steady state")
    cert = json.loads(out.read_text())["certification"]
    assert not cert["certified"] and cert["unsteady"] == ["short", "long"]
    assert cert["status"].startswith("inconclusive")
    # The advised number of requests is enough for the time and count the rule asks for.
    advised = cert["more_requests"]
    assert f"{advised:,} requests" in r.out.replace("\n", " ")
    assert fleetopt("simulate", plan_file, "--requests", "2000", "--certify").code == 1


def test_millisecond_of_traffic_is_inconclusive(tmp_path):
    path = tmp_path / "fast.json"
    assert fleetopt("plan", *LMSYS[:2], "--rate", "1e6", "--json", path).code == 0
    r = fleetopt("simulate", path, "--requests", "200", "--replications", "2")
    assert r.code == 0, r.err
    assert "inconclusive: no steady state" in r.out and "\ncertified" not in r.out


def test_steady_run_is_certified(plan_file):
    r = fleetopt("simulate", plan_file, "--requests", "300000", "--replications", "2",
                 "--certify")
    assert r.code == 0, r.out
    assert "\ncertified." in r.out


def test_zero_instance_pool_that_gets_traffic(tmp_path, plan_dict):
    """The table used to crash on the None model values of such a pool."""
    pool = plan_dict["pools"][1]
    alloc = pool["allocations"][0]
    for d in (pool, alloc):
        d.update(instances=0, gpus=0, usd_per_hour=0.0, rate_rps=0.0, utilization=0.0)
    pool["compressed_in_rps"] = 0.0
    short = plan_dict["pools"][0]
    plan_dict.update(instances=short["instances"], gpus=short["gpus"],
                     usd_per_hour=short["usd_per_hour"],
                     usd_per_year=short["usd_per_hour"] * 8760)
    fleetopt("simulate", write(tmp_path, plan_dict), "--requests", "5000").one_line_error(
        "pool 'long' has no instances but receives")


def test_requests_longer_than_the_window(plan_file):
    fleetopt("simulate", plan_file, "--workload", "mooncake-conversation").one_line_error(
        "beyond the plan's long window of 65536")


def test_overloaded_pool_is_not_simulated(plan_file):
    fleetopt("simulate", plan_file, "--rate-scale", "3").one_line_error("is overloaded")


# ---------------------------------------------------------------------------------------
# Writes are atomic; unwritable paths are one-line errors
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "needle"), [
    ("dir", "is a folder"), ("missing/plan.json", "folder does not exist"),
    ("afile/plan.json", "not a folder"),
])
def test_unwritable_json_paths(tmp_path, plan_file, target, needle):
    (tmp_path / "dir").mkdir()
    (tmp_path / "afile").write_text("x")
    fleetopt("plan", *LMSYS, "--json", tmp_path / target).one_line_error(needle)
    fleetopt("simulate", plan_file, "--requests", "2000", "--json",
             tmp_path / target).one_line_error(needle)


def test_full_disk_keeps_the_previous_file(tmp_path, monkeypatch, plan_file):
    """A write cut short used to leave a truncated plan file in place of the good one."""
    out = tmp_path / "plan.json"
    good = plan_file.read_text()
    out.write_text(good)

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("fleetopt_milp.files.os.fsync", full)
    fleetopt("plan", *LMSYS[:2], "--rate", "400", "--json", out).one_line_error("disk is full")
    assert out.read_text() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_write_replaces_atomically_and_keeps_permissions(tmp_path, plan_file):
    out = tmp_path / "plan.json"
    out.write_text("old")
    out.chmod(0o640)
    write_plan(read_plan(plan_file), out)
    assert (out.stat().st_mode & 0o777) == 0o640
    assert read_plan(out).usd_per_hour == read_plan(plan_file).usd_per_hour


# ---------------------------------------------------------------------------------------
# Messages say what is true and what works
# ---------------------------------------------------------------------------------------


def test_share_beyond_the_window_is_a_count_not_zero_percent():
    line = fleetopt("plan", "--long-context", "8192").one_line_error("long_context_tokens")
    assert "0.00%" not in line and "1 of 28,185 requests" in line


@pytest.mark.parametrize("args", [
    ("--workload", "mooncake-conversation"),
    ("--workload", "mooncake-conversation", "--gpu", "L40S", "--model", "Llama-3-70B",
     "--tp", "4"),
    ("--workload", "mooncake-conversation", "--gpu", "A10G", "--model", "Llama-3.1-8B"),
    ("--workload", "azure-2023", "--long-context", "4096", "--gpu", "A10G", "--model",
     "Llama-3.1-8B"),
])
def test_long_context_advice_is_accepted(args):
    """The advice to raise --long-context used to name a value that was then refused."""
    line = fleetopt("plan", *args).one_line_error("long_context_tokens")
    m = re.search(r"raise --long-context to at least (\d+)", line)
    if m is None:
        assert "holds at most" in line
        return
    again = fleetopt("plan", *args, "--long-context", m.group(1))
    assert "long_context_tokens" not in again.err, again.err


def test_window_beyond_the_profile_names_its_limit():
    fleetopt("plan", "--long-context", str(1 << 24)).one_line_error("leaves no KV slot")


def test_peak_factor_from_the_trace():
    from fleetopt_milp.workload import load_workload

    wl = load_workload("azure-code")
    scaled = wl.trace.scaled_to_rate(200.0)
    assert wl.peak_factor(200.0, window_s=5.0) == pytest.approx(
        scaled.busiest_window_rate_rps(5.0) / 200.0)
    assert wl.peak_factor(200.0, 1.5) == 1.5
    # A window holding less than one mean arrival counts coincidences: refused.
    fleetopt("plan", "--workload", "azure-code", "--rate", "200", "--peak-window-s",
             "1e-9").one_line_error("shorter than one mean gap")
    fleetopt("plan", "--workload", "lmsys", "--peak-window-s", "5").one_line_error(
        "has no timestamps")


def test_verify_never_confirms_a_run_without_steady_state():
    line = fleetopt("plan", *LMSYS, "--verify", "--verify-requests", "2000",
                    "--verify-candidates", "2").one_line_error("infeasible (simulation)")
    assert line.count("(no steady state)") >= 2 and "--verify-requests" in line


def test_catalogue_profile_with_an_impossible_tp(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text('[profiles.y]\ngpu = "H100-80GB"\nmodel = "Llama-3-70B"\ntp = 3\nw_ms = 4\n'
                    'h_ms = 0.1\ncalib_tokens = 8192\nchunk_tokens = 1024\nkv_blocks = 60000\n'
                    'block_tokens = 16\nmax_slots = 128\n')
    line = fleetopt("plan", "--catalog", path, "--gpu", "y").one_line_error(str(path))
    assert "tp=3" in line and "the profile's tp field" in line


def test_devices_and_symlinks(tmp_path, plan_file):
    """/dev/full is a full disk; a device is written in place, never replaced by a file."""
    fleetopt("plan", *LMSYS, "--json", "/dev/full").one_line_error("disk is full")
    assert fleetopt("plan", *LMSYS, "--json", "/dev/null").code == 0
    assert not os.path.isfile("/dev/null") and not os.path.isfile("/dev/full")
    real = tmp_path / "real.json"
    real.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(real)
    write_plan(read_plan(plan_file), link)
    assert link.is_symlink() and read_plan(real).usd_per_hour == read_plan(plan_file).usd_per_hour


def test_tiny_rates_and_shares_are_not_printed_as_zero():
    r = fleetopt("plan", "--rate", "1e-3")
    assert r.code == 0, r.err
    row = next(ln for ln in r.out.splitlines() if ln.startswith("│ homogeneous"))
    cells = [c.strip() for c in row.strip("│").split("│")]
    assert cells[6] == "0.001" and cells[7] == "<0.1%"
