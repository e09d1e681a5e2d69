"""Text rounding on or off, at several text guidance scales, on tuning prompts.

Rounding (``pipeline.json`` ``text_rounding``, :class:`cola_mm.pipeline.TextDecoder`) re-encodes
every finished text block from its decoded tokens before later blocks read it. This bench
chooses whether the bundled checkpoint uses it, and at which guidance, without touching the
suite's prompts: the held-out plays are the only text split, so the tuning prompts are the
windows of those plays that the suite does *not* read (the suite takes ``--suite-prompts``
evenly spaced windows; these are evenly spaced over the rest — the bench checks that the two
sets share no window).

Per setting and seed: the suite's text figures (:func:`cola_mm.evaluation.suite.continuation_figures`:
corpus-word rate, generative perplexity under ``--ar``, repeated 4-grams, same-seed overlap …).

    python bench/bench_text_rounding.py --ckpt checkpoints/demo --ar runs/baseline_ar/model \\
        --json bench/results/text_rounding.json

Writes a PNG next to the JSON (``--png``): word rate and gen-PPL per setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from cola_mm.evaluation import text_metrics as tm
from cola_mm.evaluation.ar import load_ar
from cola_mm.evaluation.context import tuning_prompts
from cola_mm.evaluation.suite import aggregate, continuation_figures, continue_prompts
from cola_mm.pipeline import ColaPipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="checkpoints/demo")
    ap.add_argument("--data", default="datasets")
    ap.add_argument("--ar", required=True, help="judge AR folder for generative perplexity")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--suite-prompts", type=int, default=32, help="the suite's --text-prompts (left out)")
    ap.add_argument("--new-tokens", type=int, default=64, help="as the suite: prompts of this many tokens too")
    ap.add_argument("--cfg", default="1,3,5", help="text guidance scales")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    ap.add_argument("--png", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    pipe = ColaPipeline.from_pretrained(args.ckpt)
    root = Path(args.data)
    _, picked, prompts = tuning_prompts(root / "text" / "val", pipe.tokenizer, args.prompts, args.suite_prompts,
                                        args.new_tokens)
    vocabulary = tm.corpus_vocabulary(root / "text" / "train")
    judge = load_ar(args.ar)
    seeds = [int(s) for s in args.seeds.split(",")]
    base = pipe.config
    rows = []
    for rounding in (False, True):
        for cfg in [float(c) for c in args.cfg.split(",")]:
            pipe.config = dataclasses.replace(base, text_rounding=rounding)
            started, per_seed = time.time(), []
            for seed in seeds:
                texts = continue_prompts(pipe, prompts, args.new_tokens, None, cfg, seed, True,
                                         f"rounding={rounding} cfg={cfg} seed {seed}")
                texts, figures = continuation_figures(texts, prompts, vocabulary, pipe.tokenizer, judge)
                per_seed.append(figures)
            row = {"rounding": rounding, "cfg_scale": cfg, "per_seed": per_seed, "summary": aggregate(per_seed),
                   "seconds": round(time.time() - started, 1), "sample": texts[:2]}
            s = row["summary"]
            print(f"rounding={rounding!s:5} cfg={cfg}: word rate {s['corpus_word_rate']['mean']:.3f} "
                  f"± {s['corpus_word_rate']['std']:.3f}, gen-PPL {s['gen_ppl']['mean']:.0f} "
                  f"± {s['gen_ppl']['std']:.0f}, 3-gram {s['same_seed_3gram']['mean']:.3f}", flush=True)
            rows.append(row)
    report = {"ckpt": args.ckpt, "judge": args.ar, "prompts": args.prompts, "new_tokens": args.new_tokens,
              "tuning_windows": picked, "seeds": seeds, "rows": rows}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, Path(args.png) if args.png else out.with_suffix(".png"))


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, key, label in ((axes[0], "corpus_word_rate", "corpus-word rate"), (axes[1], "gen_ppl", "gen-PPL")):
        for rounding, marker in ((False, "o"), (True, "s")):
            pts = [r for r in rows if r["rounding"] == rounding]
            ax.errorbar([r["cfg_scale"] for r in pts], [r["summary"][key]["mean"] for r in pts],
                        yerr=[r["summary"][key]["std"] for r in pts], marker=marker, capsize=3,
                        label=f"rounding {'on' if rounding else 'off'}")
        ax.set_xlabel("text guidance")
        ax.set_title(label)
        ax.legend()
    axes[1].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
