"""Does the prior use its context (issue 24)? Paired flow losses with true / foreign / noise /
masked context per block position, for text windows and for captions, the gap along the flow
time t, and the overlap of same-seed continuations across prompts.

All measurements are :mod:`cola_mm.evaluation.context` (read its docstring for the conditions):

- text: ``--windows`` held-out windows of ``--seq-len`` tokens (``DATA/text/val``), ``--draws``
  paired draws of (t, ε) per window under the training time law (loc ``--time-loc``);
- ``gap_by_t``: the same windows at fixed times ``--t-grid`` (every block at one t), so each t
  has all windows — where along t does context help?;
- captions: ``--captions`` held-out image→text rows (``DATA/shapes/val``; ``--caption-targets``
  canonical, as the demo was trained, or original), the image block swapped (bench_condition's "images rolled",
  without a run config: rows are built from the pipeline alone);
- continuations: the first ``--prompt-tokens`` tokens of ``--prompts`` of those windows,
  ``--max-new-tokens`` each, at every seed of ``--seeds``; with ``--ar DIR`` an AR baseline's
  continuations of the same prompts at the same seeds too (``continuations_ar``); each with the
  share of its words found in the training corpus (``corpus_word_rate``: does steering cost
  word-level quality?). ``--cfg-scale`` sets the continuations' guidance, ``--continuations-only``
  skips the teacher-forced losses.

    python bench/bench_context_use.py --ckpt checkpoints/demo --data datasets \
        --out bench/results/context_use_demo.json --png bench/results/context_use_demo.png
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from cola_mm.data.captions import canonical_caption
from cola_mm.evaluation import context as C
from cola_mm.evaluation import text_metrics as tm
from cola_mm.evaluation.ar import ARGenerator
from cola_mm.evaluation.images import read_samples
from cola_mm.pipeline import ColaPipeline


COLOURS = {"true": "tab:blue", "foreign": "tab:orange", "noise": "tab:green", "masked": "tab:red"}
MARKERS = {"true": "-o", "foreign": "-s", "noise": "--^", "masked": ":v"}


def plot(result: dict, path: str) -> None:
    """Text: loss per block position per condition, and the gap per offset inside a block;
    captions: mean caption-block loss per condition (bars); gap_by_t: condition − true along t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("text", "captions", "gap_by_t") if k in result]
    if "gap_by_offset" in result.get("text", {}):
        panels.insert(panels.index("text") + 1, "gap_by_offset")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4))
    axes = list(axes) if hasattr(axes, "__len__") else [axes]
    for ax, key in zip(axes, panels):
        if key == "text":
            for name, ys in result["text"]["per_block"].items():
                ax.plot(range(len(ys)), ys, MARKERS.get(name, "-"), color=COLOURS.get(name), label=name, ms=4)
            ax.set_xlabel("block position (block 0 has no context)")
            ax.set_ylabel("teacher-forced flow loss")
            ax.set_title(f"text: {result['windows']} held-out windows of {result['seq_len']}", fontsize=10)
        elif key == "gap_by_offset":
            g = result["text"]["gap_by_offset"]
            for name, ys in g.items():
                if name != "true":
                    ax.plot(range(len(ys)), ys, MARKERS.get(name, "-"), color=COLOURS.get(name),
                            label=f"{name} − true", ms=4)
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xlabel("offset of the latent inside its block")
            ax.set_ylabel("paired loss gap, text blocks ≥ 1")
            ax.set_title("text: where inside a block context matters", fontsize=10)
        elif key == "captions":
            r = result["captions"]
            names = list(r["mean"])
            ax.bar(names, [r["mean"][n] for n in names], color=[COLOURS.get(n) for n in names],
                   yerr=[r["gap_se"][n] for n in names], capsize=3)
            ax.set_ylabel("caption-block flow loss")
            ax.set_title(f"image→text: {r['rows']} rows, image swapped (bars: SE of gap)", fontsize=10)
        else:
            g = result["gap_by_t"]
            for name, ys in g["gap"].items():
                if name != "true":
                    ax.errorbar(g["t"], ys, yerr=g["gap_se"][name], fmt=MARKERS.get(name, "-"), ms=4, capsize=2,
                                color=COLOURS.get(name), label=f"{name} − true")
            ax.axhline(0, color="grey", lw=0.8)
            ax.set_xlabel("flow time t of every block (0 = clean)")
            ax.set_ylabel("paired loss gap, text blocks ≥ 1")
            ax.set_title("text: where along t context matters", fontsize=10)
        ax.legend(fontsize=8) if key != "captions" else None
    fig.suptitle(f"context use: {result['ckpt']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def text_losses(result: dict, pipe, ids: torch.Tensor, args) -> None:
    """The teacher-forced text figures (``text``, ``gap_by_t``) of held-out windows ``ids``."""
    raw = C.text_context_losses(pipe.text_vae, pipe.dit, ids, draws=args.draws, seed=args.seed,
                                time_loc=args.time_loc, time_scale=args.time_scale, progress="text windows")
    result["text"] = C.summarize(raw)
    result["text"]["gap_by_t_law"] = C.gap_by_t(raw)  # binned draws of the training law
    result["text"]["gap_by_offset"] = C.gap_by_offset(raw, pipe.dit.config.block_size)
    grid = [float(x) for x in args.t_grid.split(",") if x]
    if grid:
        raw_t = C.text_context_losses(pipe.text_vae, pipe.dit, ids, fixed_t=grid, seed=args.seed + 1,
                                      progress="text windows, fixed t")
        per_t = [C.summarize({"loss": {n: x[d:d + 1] for n, x in raw_t["loss"].items()}, "t": raw_t["t"][d:d + 1]})
                 for d in range(len(grid))]
        result["gap_by_t"] = {"t": grid,
                              "loss": {n: [s["mean"][n] for s in per_t] for n in raw_t["loss"]},
                              "gap": {n: [s["gap"][n] for s in per_t] for n in raw_t["loss"]},
                              "gap_se": {n: [s["gap_se"][n] for s in per_t] for n in raw_t["loss"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="pipeline folder")
    parser.add_argument("--data", default="datasets", help="root of `cola-mm data all`")
    parser.add_argument("--out", required=True, help="JSON path")
    parser.add_argument("--png", default=None)
    parser.add_argument("--windows", type=int, default=48)
    parser.add_argument("--seq-len", type=int, default=None, help="default: the pipeline's trained_context")
    parser.add_argument("--draws", type=int, default=4, help="paired (t, noise) draws per window")
    parser.add_argument("--time-loc", type=float, default=1.0)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--t-grid", default="0.05,0.15,0.25,0.35,0.45,0.55,0.65,0.75,0.85,0.95",
                        help="fixed times for gap_by_t ('' to skip)")
    parser.add_argument("--captions", type=int, default=48, help="image→text rows (0 to skip)")
    parser.add_argument("--caption-targets", choices=("canonical", "original"), default="canonical",
                        help="caption text of the rows: the one rebuilt from json (the demo's training targets) "
                             "or the shard's txt")
    parser.add_argument("--prompts", type=int, default=8, help="continuation prompts (0 to skip)")
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--steps", type=int, default=None, help="ODE steps per block (pipeline default)")
    parser.add_argument("--cfg-scale", type=float, default=None,
                        help="classifier-free guidance of the continuations (pipeline default)")
    parser.add_argument("--continuations-only", action="store_true",
                        help="skip the teacher-forced losses: only the continuation overlaps")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--seed", type=int, default=0, help="seed of the paired draws")
    parser.add_argument("--ar", default=None,
                        help="an AR baseline folder (stage ar): its continuations of the same prompts at the same "
                             "seeds, for the overlap comparison")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--replot", action="store_true", help="only redraw --png from an existing --out")
    args = parser.parse_args()
    if args.replot:
        plot(json.loads(Path(args.out).read_text()), args.png)
        return
    torch.set_num_threads(args.threads)
    start = time.time()
    pipe = ColaPipeline.from_pretrained(args.ckpt)
    data = Path(args.data)
    L = args.seq_len or pipe.config.trained_context
    seeds = [int(s) for s in args.seeds.split(",") if s]
    result: dict = {"command": " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1], *sys.argv]),
                    "date": datetime.datetime.now().isoformat(timespec="seconds"), "ckpt": args.ckpt,
                    "windows": args.windows, "seq_len": L, "block_size": pipe.dit.config.block_size,
                    "draws": args.draws, "time_law": {"loc": args.time_loc, "scale": args.time_scale},
                    "note": "gap = condition − true, paired (same t and noise), over blocks >= 1; "
                            "gap_se: standard error over windows/rows"}
    ids = C.read_windows(data / "text" / "val", pipe.tokenizer, args.windows, L)
    if not args.continuations_only:
        text_losses(result, pipe, ids, args)
    if args.captions and pipe.image_vae is not None and not args.continuations_only:
        samples = read_samples(data / "shapes" / "val", args.captions)
        texts = [canonical_caption(s["json"]) if args.caption_targets == "canonical" else s["txt"] for s in samples]
        raw_c = C.caption_context_losses(pipe, samples, texts,
                                         draws=args.draws, seed=args.seed, time_loc=args.time_loc,
                                         time_scale=args.time_scale, progress="caption rows")
        result["captions"] = {"rows": len(samples), "targets": args.caption_targets,
                              "shards": str(data / "shapes" / "val"), **C.summarize(raw_c)}
    if args.prompts:
        vocab = tm.corpus_vocabulary(data / "text" / "train")
        prompts = C.prompts_from_windows(pipe.tokenizer, ids[:args.prompts], args.prompt_tokens)
        result["continuations"] = {"max_new_tokens": args.max_new_tokens, "seeds": seeds,
                                   "cfg_scale": args.cfg_scale,
                                   **C.continuation_overlap(pipe, prompts, seeds, args.max_new_tokens, args.steps,
                                                            args.cfg_scale, progress="continuations")}
        if args.ar:
            result["continuations_ar"] = {"ar": args.ar, "max_new_tokens": args.max_new_tokens, "seeds": seeds,
                                          **C.continuation_overlap(ARGenerator.from_pretrained(args.ar), prompts,
                                                                   seeds, args.max_new_tokens,
                                                                   progress="AR continuations")}
        for name in ("continuations", "continuations_ar"):  # does steering cost word-level quality?
            if name in result:
                texts = [t for ts in result[name]["texts"].values() for t in ts]
                result[name]["corpus_word_rate"] = tm.corpus_word_rate(texts, vocab)
    result["seconds"] = round(time.time() - start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.png:
        plot(result, args.png)
    for key in ("text", "captions"):
        if key in result:
            r = result[key]
            print(f"{key:9s} " + "  ".join(f"{n} {r['mean'][n]:.4f} (gap {r['gap'][n]:+.4f} ± {r['gap_se'][n]:.4f})"
                                           for n in r["mean"]))
    if "gap_by_offset" in result.get("text", {}):
        print("gap by offset in the block (foreign − true): "
              + "  ".join(f"{g:+.4f}" for g in result["text"]["gap_by_offset"]["foreign"]))
    if "gap_by_t" in result:
        print("gap by t (foreign − true): " + "  ".join(f"{t:.2f}:{g:+.4f}" for t, g in
                                                        zip(result["gap_by_t"]["t"], result["gap_by_t"]["gap"]["foreign"])))
    for name in ("continuations", "continuations_ar"):
        if name not in result:
            continue
        c = result[name]
        print("AR baseline:" if name == "continuations_ar" else "prior:")
        print(f"  corpus word rate {c['corpus_word_rate']:.3f}")
        for k in ("same_seed", "same_prompt", "different_both"):
            print(f"  {k:15s} difflib {c[k]['difflib_ratio']:.3f}  shared 3-grams {c[k]['shared_3gram_rate']:.3f}")
    print(f"{result['seconds']} s")


if __name__ == "__main__":
    main()
