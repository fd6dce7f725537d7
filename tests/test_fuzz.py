"""Fuzzing the command line (issue 7): hypothesis over option values and plan-file contents.

The contract: every run ends in exit 0 with a sound result (a plan file that reads back,
no pool at utilization >= 1, every figure finite) or in exit 2 with one line on stderr and
no traceback. Runs are in-process, derandomized (reproducible in CI) and few enough to
take well under a minute on two cores.
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
from pathlib import Path

import pytest
from clirun import Run, fleetopt
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleetopt_milp.plan import read_plan

FUZZ = settings(derandomize=True, deadline=None, database=None, max_examples=60,
                suppress_health_check=[HealthCheck.too_slow])

ODD = [math.nan, math.inf, -math.inf, 0.0, -0.0, -1.0, 1e-300, 1e300, 1e22, 5e-324]


def number(lo: float, hi: float) -> st.SearchStrategy[str]:
    """A value for a float option: plausible (in ``[lo, hi]``), odd, or anything."""
    plausible = st.floats(lo, hi)
    return st.one_of(plausible, plausible, plausible, st.sampled_from(ODD), st.floats()).map(repr)


def whole(lo: int, hi: int) -> st.SearchStrategy[str]:
    """A value for an integer option: plausible, out of range, or not an integer."""
    plausible = st.integers(lo, hi)
    return st.one_of(plausible, plausible, st.integers(-10**6, 10**12),
                     st.sampled_from(["2.5", "1e3", "-0", "x", ""])).map(str)


PLAN_OPTIONS = {
    "--rate": number(1e-2, 1e6),
    "--slo-ms": number(10.0, 1e4),
    "--percentile": number(50.0, 99.99),
    "--rho-max": number(0.05, 1.0),
    "--gamma-max": number(1.0, 8.0),
    "--compressible": number(0.0, 1.0),
    "--compression-ms": number(0.0, 100.0),
    "--peak-factor": number(1.0, 4.0),
    "--long-context": whole(4096, 1 << 18),
    "--workload": st.sampled_from(["lmsys", "azure-2023", "azure-code", "agent-heavy",
                                   "nope", ""]),
}


def check_contract(run: Run, out: Path | None = None) -> None:
    """Exit 0 with a sound plan file (when one was asked for), or exit 2 with one line."""
    assert "Traceback" not in run.err, run.err
    if run.code == 2:
        run.one_line_error()
        return
    assert run.code == 0, (run.code, run.err)
    if out is not None:
        plan = read_plan(out)  # validates: utilization < 1, every number finite
        assert all(0 <= p.utilization < 1 for p in plan.pools)
        assert math.isfinite(plan.usd_per_hour) and plan.instances >= 0


@settings(FUZZ, max_examples=100)
@given(st.dictionaries(st.sampled_from(sorted(PLAN_OPTIONS)), st.just(None), max_size=4)
       .flatmap(lambda keys: st.fixed_dictionaries({k: PLAN_OPTIONS[k] for k in keys})),
       st.sampled_from([False, False, False, True]))
def test_plan_options(options, peak_window):
    args = [a for k, v in options.items() for a in (k, v)]
    if peak_window:
        args += ["--peak-window-s", "5"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "plan.json"
        run = fleetopt("plan", *args, "--json", out)
        check_contract(run, out if run.code == 0 else None)


# ---------------------------------------------------------------------------------------
# Plan files
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plan_dict(tmp_path_factory):
    path = tmp_path_factory.mktemp("fuzz") / "plan.json"
    assert fleetopt("plan", "--workload", "lmsys", "--rate", "300", "--json", path).code == 0
    return json.loads(path.read_text())


def _leaves(d, prefix=()):
    """Paths of every value in a JSON object (dict keys and list indices)."""
    items = d.items() if isinstance(d, dict) else enumerate(d)
    for k, v in items:
        yield prefix + (k,)
        if isinstance(v, dict | list) and v:
            yield from _leaves(v, prefix + (k,))


JSON_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([10**400, -(10**30)]),
    st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0, -1, 0.5, 1, 2.5]),
    st.text(max_size=5), st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.just(KeyError))


def _apply(d: dict, path: tuple, value) -> None:
    node = d
    for k in path[:-1]:
        node = node[k]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value


@settings(FUZZ, suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_plan_file_contents(plan_dict, data):
    d = copy.deepcopy(plan_dict)
    paths = sorted(_leaves(d), key=str)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = sorted(_leaves(d), key=str)
        if not paths:
            break
        path = data.draw(st.sampled_from(paths))
        _apply(d, path, data.draw(JSON_VALUES))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plan.json"
        path.write_text(json.dumps(d))
        out = Path(tmp) / "sim.json"
        run = fleetopt("simulate", path, "--requests", "3000", "--replications", "2",
                       "--json", out)
        check_contract(run)
        if run.code == 0:
            sim = json.loads(out.read_text())
            assert sim["certification"]["status"]


@settings(FUZZ, max_examples=40, suppress_health_check=[HealthCheck.too_slow,
                                                        HealthCheck.function_scoped_fixture])
@given(rate=st.one_of(st.none(), number(1.0, 600.0)),
       scale=st.one_of(st.none(), number(0.1, 1.5)),
       requests=st.one_of(st.integers(100, 4000).map(str), whole(-5, 99)),
       replications=st.one_of(st.none(), whole(1, 3)),
       seed=st.one_of(st.integers(0, 2**63).map(str), whole(-5, 5)),
       fidelity=st.sampled_from(["slot", "slot", "engine", "fast"]))
def test_simulate_options(tmp_path, plan_dict, rate, scale, requests, replications, seed,
                          fidelity):
    path = tmp_path / "plan.json"
    if not path.exists():
        path.write_text(json.dumps(plan_dict))
    args = ["--requests", requests, "--seed", seed, "--fidelity", fidelity]
    for opt, v in (("--rate", rate), ("--rate-scale", scale), ("--replications", replications)):
        if v is not None:
            args += [opt, v]
    check_contract(fleetopt("simulate", path, *args))


# ---------------------------------------------------------------------------------------
# The planning question through the API
# ---------------------------------------------------------------------------------------

SCENARIO_FIELDS = {
    "rate_rps": st.floats(1e-3, 1e7), "slo_ms": st.floats(5, 1e4),
    "percentile": st.floats(50, 99.999), "rho_max": st.floats(0.01, 1.0),
    "compression_latency_ms": st.floats(0, 50), "gamma_max": st.floats(1, 8),
    "compressible_share": st.floats(0, 1),
    "long_context_tokens": st.sampled_from([65536, 65536, 131072]),
}
ODD_VALUES = st.one_of(st.floats(), st.sampled_from(ODD), st.integers(-5, 5),
                       st.sampled_from([True, None, "1", 2.5]))


@settings(FUZZ, max_examples=60, suppress_health_check=[HealthCheck.too_slow,
                                                        HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_scenario_validated_or_sound_plan(paper_h100, lmsys, data):
    """Every field plausible, or one of them odd: a FleetOptError (one line) or a sound plan."""
    from fleetopt_milp.errors import FleetOptError
    from fleetopt_milp.planner import plan
    from fleetopt_milp.scenario import Scenario

    odd = data.draw(st.sampled_from([None, None, None, *SCENARIO_FIELDS]))
    fields = {k: data.draw(ODD_VALUES if k == odd else v) for k, v in SCENARIO_FIELDS.items()}
    try:
        result = plan(Scenario(lmsys, paper_h100, **fields))
    except FleetOptError as exc:
        assert "\n" not in str(exc)
        return
    assert result.checked() is result
    assert all(0 <= p.utilization < 1 for p in result.pools)


@pytest.fixture(scope="module")
def lmsys():
    from fleetopt_milp.workload import load_workload

    return load_workload("lmsys")
