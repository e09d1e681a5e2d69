"""Does the prior bind attributes to objects? Teacher-forced flow loss of real two-object images
under their own prompt and under prompts with the objects' colours, shapes or phrases exchanged
or replaced (cola_mm/evaluation/binding.py says what each variant is and what the ratio means).

    python bench/bench_binding.py --ckpt checkpoints/demo --json bench/results/binding.json \
        --png bench/results/binding.png

Reads the two-object scenes of ``--split`` (default ``datasets/shapes/val``; the test splits are
for reporting). Prints, per pipeline, the mean ± std over seeds of each gap (variant − true
flow loss) and of each binding ratio (exchanged / replaced: near 1 binds, near 0 reads a bag of
attributes)."""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from cola_mm.evaluation.binding import EXCHANGED, REPLACED, binding_losses, gaps_by_draw, summarize_binding
from cola_mm.evaluation.context import MASKED
from cola_mm.evaluation.images import read_samples
from cola_mm.evaluation.suite import checkpoint_name
from cola_mm.pipeline import ColaPipeline


def mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def plot(results: dict, png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for e in EXCHANGED for n in (e, REPLACED[e])]
    with_t = all("gap_by_t" in r for r in results.values())
    fig, axes = plt.subplots(1, 2 if with_t else 1, figsize=(1.6 + 1.5 * len(names) + (5 if with_t else 0), 3.6),
                             squeeze=False)
    ax = axes[0, 0]
    width = 0.8 / len(results)
    for j, (ckpt, r) in enumerate(results.items()):
        xs = [i + (j - (len(results) - 1) / 2) * width for i in range(len(names))]
        ys = [r["gap"][n]["mean"] for n in names]
        es = [r["gap"][n]["std"] for n in names]
        ax.bar(xs, ys, width, yerr=es, label=checkpoint_name(ckpt), capsize=2)
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_ylabel("flow loss gap (variant − true prompt)")
    ax.set_title("two-object images: exchanged attributes vs replaced ones", fontsize=9)
    ax.legend(fontsize=7)
    if with_t:
        ax = axes[0, 1]
        for j, (ckpt, r) in enumerate(results.items()):
            g = r["gap_by_t"]
            for name, style in (("swap_colors", "-"), ("recolor_both", "--"), ("swap_shapes", "-."),
                                ("reshape_both", ":")):
                ax.plot(g["t"], g[name], style, color=f"C{j}", marker=".",
                        label=f"{checkpoint_name(ckpt)}: {name}")
        ax.axhline(0, color="black", lw=0.5)
        ax.set_xlabel("flow time t (1 = pure noise)")
        ax.set_ylabel("gap (variant − true prompt)")
        ax.set_title("where along t the prompt's attributes matter (seed 0)", fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", action="append", required=True, help="pipeline folder (repeatable)")
    parser.add_argument("--split", default="datasets/shapes/val", help="shapes split folder")
    parser.add_argument("--limit", type=int, default=200, help="two-object scenes read")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--draws", type=int, default=4, help="(t, noise) draws per image and seed")
    parser.add_argument("--time-loc", type=float, default=0.0,
                        help="image flow-time law's loc (the bundled prior trained images at 0)")
    parser.add_argument("--by-t", default="0.1,0.3,0.5,0.7,0.9",
                        help="flow times at which the gaps are also measured one by one ('' for none)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    parser.add_argument("--png", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = [int(s) for s in args.seeds.split(",")]
    by_t = [float(t) for t in args.by_t.split(",")] if args.by_t else []
    samples = read_samples(args.split, args.limit, keep=lambda j: len(j.get("objects", [])) == 2)
    results = {}
    for ckpt in args.ckpt:
        pipe = ColaPipeline.from_pretrained(ckpt)
        runs = [summarize_binding(binding_losses(pipe, samples, draws=args.draws, seed=s, time_loc=args.time_loc,
                                                 progress=f"{checkpoint_name(ckpt)} seed {s}")) for s in seeds]
        names = [n for n in runs[0]["gap"]]
        results[ckpt] = {"per_seed": runs,
                         "gap": {n: mean_std([r["gap"][n] for r in runs]) for n in names},
                         "ratio": {e: mean_std([r["ratio"][e] for r in runs]) for e in EXCHANGED},
                         "kept": runs[0]["kept"], "ratio_images": runs[0]["ratio_images"]}
        if by_t:  # where along t the prompt's binding matters: one draw per time, seed 0
            raw = binding_losses(pipe, samples, seed=seeds[0], fixed_t=by_t, progress=f"{checkpoint_name(ckpt)} by t")
            results[ckpt]["gap_by_t"] = {"t": by_t, **gaps_by_draw(raw)}
        r = results[ckpt]
        print(f"{ckpt}: true loss {statistics.fmean(x['mean']['true'] for x in runs):.4f}")
        for e in EXCHANGED:
            ref = REPLACED[e]
            print(f"  {e:13s} gap {r['gap'][e]['mean']:+.4f} ± {r['gap'][e]['std']:.4f}   "
                  f"{ref if ref != MASKED else 'no prompt':13s} gap {r['gap'][ref]['mean']:+.4f} ± "
                  f"{r['gap'][ref]['std']:.4f}   ratio {r['ratio'][e]['mean']:.3f} ± {r['ratio'][e]['std']:.3f}"
                  f"  ({r['ratio_images'][e]} images)")
    if args.json:
        Path(args.json).write_text(json.dumps({"split": args.split, "images": len(samples), "seeds": seeds,
                                               "draws": args.draws, "time_loc": args.time_loc,
                                               "results": results}, indent=2) + "\n")
    if args.png:
        plot(results, args.png)


if __name__ == "__main__":
    main()
