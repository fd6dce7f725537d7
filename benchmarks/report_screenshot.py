"""Screenshot of a plan report in headless Chromium: benchmarks/report_screenshot.png.

Plans azure-2023 at 1000 req/s with ``--verify`` (so every figure appears), writes the
report with ``fleetopt report`` and opens it in Debian's ``chromium`` (install it with
``apt-get install -y chromium``). Fails if the page logs anything to the console.

Run: ``.venv/bin/python benchmarks/report_screenshot.py``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent / "report_screenshot.png"


def main() -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("chromium not found: apt-get install -y chromium")
    cli = [sys.executable, "-m", "fleetopt_milp.cli"]
    with tempfile.TemporaryDirectory() as d:
        plan, rep = Path(d) / "plan.json", Path(d) / "report"
        subprocess.run([*cli, "plan", "--verify", "--verify-requests", "100000", "--json",
                        str(plan)], check=True, capture_output=True)
        subprocess.run([*cli, "report", str(plan), "--out", str(rep)], check=True)
        r = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                            "--enable-logging=stderr", "--v=0", f"--screenshot={OUT}",
                            "--window-size=1200,4200", (rep / "index.html").as_uri()],
                           capture_output=True, text=True, timeout=120)
    console = [ln for ln in r.stderr.splitlines() if ":CONSOLE" in ln]
    if console or not OUT.is_file():
        sys.exit("console messages:\n" + "\n".join(console))
    print(f"screenshot written to {OUT}")


if __name__ == "__main__":
    main()
