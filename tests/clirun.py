"""Run the ``fleetopt`` command in-process (much faster than a subprocess) and check the
command-line contract: exit 0 with a result, or exit 2 with one line on stderr."""

from __future__ import annotations

import io
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass

from fleetopt_milp.cli import main


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def one_line_error(self, needle: str = "") -> str:
        """Assert exit 2 with exactly one line on stderr containing ``needle``."""
        assert self.code == 2, (self.code, self.err, self.out[-2000:])
        assert "Traceback" not in self.err
        lines = self.err.splitlines()
        assert len(lines) == 1, self.err
        assert needle in lines[0], lines[0]
        return lines[0]


def fleetopt(*args: str) -> Run:
    """``fleetopt ARGS`` in this process; returns the exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["fleetopt", *map(str, args)]
    try:
        with redirect_stdout(out), redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return Run(code, out.getvalue(), err.getvalue())
