"""Training rate of a config on this machine in fp32 and in bf16 autocast, and whether the losses agree.

    python bench/bench_train_precision.py --config configs/demo_gpu.yaml --steps 16 \
        --json bench/results/cpu_precision.json

Runs ``cola-mm train`` once per precision for ``--steps`` steps from the same seed (no validation,
one checkpoint at the end, in a temporary folder), reads the rows/s the loop logs every
``--log-every`` steps, and reports the median after the first logged window (start-up), the bf16 /
fp32 speed-up, the largest relative difference between the two runs' logged losses, and the hours
``--recipe-rows`` rows would take at each rate. On a CPU with bf16 matrix units (AMX, AVX-512
BF16) bf16 autocast is what `precision: bf16` turns on; fp32 is the CPU default (`precision: auto`).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from cola_mm.training.loop import cpu_has_bf16_matmul

REPO = Path(__file__).resolve().parents[1]


def run(config: str, precision: str, steps: int, log_every: int, workers: int, folder: Path) -> list[dict]:
    run_dir = folder / precision
    cmd = [sys.executable, "-m", "cola_mm.cli", "train", "--config", config, "--set", f"run_dir={run_dir}",
           "--set", f"max_steps={steps}", "--set", f"log_every={log_every}", "--set", "val_every=0",
           "--set", f"ckpt_every={steps}", "--set", f"data.num_workers={workers}", "--set",
           f"precision={precision}", "--no-progress"]
    print(f"{precision}: {steps} steps of {config}", flush=True)
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{precision} run failed:\n{proc.stderr[-2000:]}")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "samples_per_s" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/demo_gpu.yaml")
    ap.add_argument("--steps", type=int, default=16)
    ap.add_argument("--log-every", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1, help="data.num_workers")
    ap.add_argument("--recipe-rows", type=int, default=217_600,
                    help="rows of the recipe to estimate hours for (default: the bundled prior's two legs)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.steps < 2 * args.log_every:
        sys.exit("--steps must cover at least two logged windows (2 × --log-every)")

    with tempfile.TemporaryDirectory() as tmp:
        records = {p: run(args.config, p, args.steps, args.log_every, args.workers, Path(tmp)) for p in ("fp32", "bf16")}
    rates = {p: statistics.median(r["samples_per_s"] for r in recs[1:]) for p, recs in records.items()}
    diffs = [abs(b["loss"] - f["loss"]) / abs(f["loss"]) for f, b in zip(records["fp32"], records["bf16"])]
    report = {
        "command": "python bench/bench_train_precision.py " + " ".join(sys.argv[1:]),
        "machine": f"{torch.get_num_threads()} threads ({platform.machine()}), torch {torch.__version__}, "
                   f"bf16 matrix units: {cpu_has_bf16_matmul()}",
        "config": args.config, "steps": args.steps, "log_every": args.log_every, "workers": args.workers,
        "rows_per_s": {p: round(v, 2) for p, v in rates.items()},
        "speedup_bf16": round(rates["bf16"] / rates["fp32"], 2),
        "max_relative_loss_difference": round(max(diffs), 5),
        "recipe_rows": args.recipe_rows,
        "recipe_hours": {p: round(args.recipe_rows / v / 3600, 2) for p, v in rates.items()},
        "losses": {p: [(r["step"], round(r["loss"], 5)) for r in recs] for p, recs in records.items()},
        "rows_per_s_logged": {p: [round(r["samples_per_s"], 2) for r in recs] for p, recs in records.items()},
    }
    print(json.dumps({k: report[k] for k in ("rows_per_s", "speedup_bf16", "max_relative_loss_difference",
                                               "recipe_hours")}, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
