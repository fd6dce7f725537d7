"""Calibrate the shipped `*-vllm` profiles (models/calibrated.toml) from public vLLM runs.

The measurements (LambdaLabsML/vllm-benchmark, no licence) are not shipped: pass the folder
that holds them (README "measurements"). Each profile is fitted on the bursts of 10, 40 and
160 requests; the bursts of 20, 80 and 320 are held out for benchmarks/bench_engine.py.

    python benchmarks/calibrate_public.py PATH/TO/vllm_benchmark_lambda  (a clone of LambdaLabsML/vllm-benchmark results)
"""

from __future__ import annotations

import sys
from pathlib import Path

from fleetopt_milp.calibration import CalibrationFit, calibrate, profile_toml, read_benchmark
from fleetopt_milp.hardware import load_catalog, models_dir

#: (profile name, folder, file stem, GPU, model, tp)
CONFIGS = (
    ("H100-Llama-3-70B-tp8-vllm", "8xH100-80GB-SXM", "Meta-Llama-3-70B-Instruct_tp8_len2048",
     "H100-80GB", "Llama-3-70B", 8),
    ("H100-Llama-3-70B-tp4-vllm", "4xH100-80GB-SXM", "Meta-Llama-3-70B-Instruct_tp4_len2048",
     "H100-80GB", "Llama-3-70B", 4),
    ("A100-Llama-3-70B-tp8-vllm", "8xA100-80GB-SXM", "Meta-Llama-3-70B-Instruct_tp8_len2000",
     "A100-80GB", "Llama-3-70B", 8),
    ("A100-Llama-3-70B-tp4-vllm", "4xA100-80GB-SXM", "Meta-Llama-3-70B-Instruct_tp4_len2000",
     "A100-80GB", "Llama-3-70B", 4),
    ("H100-Llama-3-8B-tp1-vllm", "1xH100-80GB-SXM", "Meta-Llama-3-8B-Instruct_tp1_len2048",
     "H100-80GB", "Llama-3-8B", 1),
    ("A100-Llama-3-8B-tp1-vllm", "1xA100-80GB-SXM", "Meta-Llama-3-8B-Instruct_tp1_len2000",
     "A100-80GB", "Llama-3-8B", 1),
)
FIT_BURSTS = (10, 40, 160)
HELD_OUT_BURSTS = (20, 80, 320)
#: vLLM's --gpu-memory-utilization in these runs.
MEMORY_UTILIZATION = 0.95
#: The measured server's prefill step: vLLM's default max_num_batched_tokens without chunked
#: prefill, max(--max-model-len, 2048), for --max-model-len 2048 and 2000.
PREFILL_BUDGET_TOKENS = 2048
#: vLLM 0.6 processes a step's outputs while the next step runs (asynchronous output
#: processing): a prefill step's first tokens reach the client one step late.
OUTPUT_LAG_STEPS = 1


def run_path(root: Path, burst: int, folder: str, stem: str) -> Path:
    """Where the run of ``burst`` requests at once lives (prompt_10 runs sit at the top)."""
    sub = Path(folder) if burst == 10 else Path(f"prompt_{burst}") / folder
    return root / sub / f"{stem}.json"


def fit_config(root: Path, config: tuple, cat=None) -> CalibrationFit:
    """Fit one configuration of :data:`CONFIGS` on its bursts of :data:`FIT_BURSTS`."""
    name, folder, stem, gpu, model, tp = config
    cat = cat or load_catalog()
    runs = [read_benchmark(run_path(root, b, folder, stem)) for b in FIT_BURSTS]
    cite = (f"LambdaLabsML/vllm-benchmark results/prompt_{{10,40,160}}/{folder}/{stem}.json "
            f"(runs of 2024-09-07/08), fitted by fleetopt calibrate")
    return calibrate(runs, [], cat.gpu(gpu), cat.llm(model), tp, name,
                     memory_utilization=MEMORY_UTILIZATION,
                     prefill_budget_tokens=PREFILL_BUDGET_TOKENS,
                     output_lag_steps=OUTPUT_LAG_STEPS, citation=cite)


def main(root: Path) -> str:
    cat = load_catalog()
    parts = [
        "# Profiles calibrated by `fleetopt calibrate` (docs/engine.md section 3) from public vLLM\n"
        "# serving runs: LambdaLabsML/vllm-benchmark (https://github.com/LambdaLabsML/vllm-benchmark),\n"
        "# results/prompt_{10,40,160}/; vLLM OpenAI server, --gpu-memory-utilization 0.95,\n"
        "# --max-num-seqs 1024, ShareGPT prompts sent at once; replayed with 2048-token prefill\n"
        "# steps, first tokens one step late, the server's ingest time fitted (in each profile's\n"
        "# notes; not used in planning). Only fitted figures are shipped\n"
        "# (the runs carry no licence). Written by benchmarks/calibrate_public.py; the bursts of\n"
        "# 20, 80 and 320 requests are held out for validation (benchmarks/RESULTS.md).\n"]
    for config in CONFIGS:
        parts.append(profile_toml(fit_config(root, config, cat).profile))
    text = "\n".join(parts)
    (models_dir() / "calibrated.toml").write_text(text)
    return text


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
