"""Plan and solve files stay identical to those written before the issue-7 refactor.

Each line of ``tests/golden/scenarios.txt`` is re-run through the CLI and its plan file
compared with the stored one, apart from timing fields (they measure the machine).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from fleetopt_milp.cli import main

GOLDEN = Path(__file__).parent / "golden"
TIMING = {"planner_ms", "seconds", "precompute_seconds", "build_seconds", "total_seconds"}


def _scenarios() -> list[tuple[str, list[str]]]:
    rows = []
    for line in (GOLDEN / "scenarios.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, args = line.split("|", 1)
            rows.append((name.strip(), args.split()))
    return rows


def _strip(obj, like=None):
    """The plan without timing fields, floats rounded to 9 significant digits. With ``like``
    (the golden file), only its keys are kept: fields added later do not count as changes."""
    if isinstance(obj, dict):
        keys = obj.keys() if like is None else [k for k in obj if k in like]
        return {k: _strip(obj[k], None if like is None else like[k]) for k in keys
                if k not in TIMING}
    if isinstance(obj, list):
        if isinstance(like, list) and len(like) == len(obj):
            return [_strip(v, w) for v, w in zip(obj, like)]
        return [_strip(v) for v in obj]
    if isinstance(obj, float) and math.isfinite(obj) and obj != 0.0:
        return float(f"{obj:.9g}")
    return obj


@pytest.mark.parametrize(("name", "args"), _scenarios(), ids=[n for n, _ in _scenarios()])
def test_plan_file_unchanged(name, args, tmp_path, monkeypatch):
    out = tmp_path / "plan.json"
    monkeypatch.setattr("sys.argv", ["fleetopt", *args, "--json", str(out)])
    main()
    golden = json.loads((GOLDEN / f"{name}.json").read_text())
    got = _strip(json.loads(out.read_text()), golden)
    want = _strip(golden)
    assert got == want
