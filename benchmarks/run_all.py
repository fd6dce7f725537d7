"""Run every benchmark script in turn; each rewrites its own sections of RESULTS.md."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    for script in sorted(p.name for p in HERE.glob("bench_*.py")):
        print(f"== {script}", flush=True)
        subprocess.run([sys.executable, str(HERE / script)], check=True,
                       stdout=subprocess.DEVNULL)
    print((HERE / "RESULTS.md").read_text())
