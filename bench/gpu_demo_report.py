"""Figures of the GPU run that trained the bundled prior (bench/gpu_demo.sh), from its unpacked
metrics (bench/gpu_demo_unpack.py): step rate, training time, val losses per run, and one PNG
of the val flow losses.

    python bench/gpu_demo_report.py [--runs runs/gpu_demo/runs] [--json bench/results/gpu_demo.json]
        [--png bench/results/gpu_demo_loss.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# run name → metrics file under --runs, and the step its first logged step continues from
RUNS = {
    "demo_gpu_b4": ("runs/demo_gpu_b4/metrics.jsonl", 0),
    "demo_gpu_b4ft": ("demo_gpu_b4ft/metrics.jsonl", 2100),  # the second leg, from demo_gpu_b4's weights
    "demo_gpu_b16": ("runs/demo_gpu_b16/metrics.jsonl", 0),
    "ar_reference": ("runs/ar_reference/metrics.jsonl", 0),
}


def summarize(path: Path, offset: int) -> dict:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    train = [r for r in rows if "samples_per_s" in r]
    val = [r for r in rows if "val_loss" in r]
    # seconds spent per logged interval: its rows / its rate (the first interval holds start-up)
    seconds, last = 0.0, 0
    config = json.loads((path.parent / "config.json").read_text()) if (path.parent / "config.json").is_file() else {}
    batch = config.get("batch_size", 64)
    for r in train:
        seconds += (r["step"] - last) * batch / r["samples_per_s"]
        last = r["step"]
    return {"steps": train[-1]["step"], "batch_size": batch, "first_step": offset,
            "train_seconds": round(seconds, 1), "steps_per_s": round(train[-1]["step"] / seconds, 2),
            "rows_per_s_mean": round(sum(r["samples_per_s"] for r in train[1:]) / max(1, len(train) - 1), 1),
            "peak_mem_mb": round(max(r.get("peak_mem_mb", 0) for r in train)),
            "val": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()} for r in val]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, default=Path("runs/gpu_demo/runs"))
    p.add_argument("--json", type=Path, default=Path("bench/results/gpu_demo.json"))
    p.add_argument("--png", type=Path, default=Path("bench/results/gpu_demo_loss.png"))
    args = p.parse_args()
    report = {"machine": "one NVIDIA H200 (bf16 autocast), 16 CPU cores; torch 2.11.0+cu130",
              "command": "OUT=$OUT BUDGET=340 DEADLINE=540 bash bench/gpu_demo.sh; then the second leg (Makefile "
                         "demo-checkpoint, runs/demo_gpu_ft) with data.num_workers=7",
              "note": "demo_gpu_b4, demo_gpu_b16 and ar_reference trained at the same time on one GPU",
              "runs": {}}
    for name, (rel, offset) in RUNS.items():
        path = args.runs / rel
        if path.is_file():
            report["runs"][name] = summarize(path, offset)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({n: {k: v for k, v in r.items() if k != "val"} for n, r in report["runs"].items()}, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, style in (("demo_gpu_b4", "o-"), ("demo_gpu_b4ft", "s-"), ("demo_gpu_b16", "^--")):
        run = report["runs"].get(name)
        if not run:
            continue
        steps = [run["first_step"] + v["step"] for v in run["val"]]
        for ax, key in zip(axes, ("val_flow_text", "val_flow_image")):
            ax.plot(steps, [v[key] for v in run["val"]], style, label=name)
    for ax, title in zip(axes, ("text blocks: val flow loss", "images: val flow loss")):
        ax.set_title(title)
        ax.set_xlabel("step (× 64 rows)")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].annotate("blocks of 16 and of 4 are\nnot comparable by loss", xy=(0.35, 0.8), xycoords="axes fraction")
    fig.tight_layout()
    fig.savefig(args.png, dpi=100)
    print(f"-> {args.json}, {args.png}")


if __name__ == "__main__":
    main()
