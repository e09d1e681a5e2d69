"""Side by side: several pipelines draw the same held-out prompts, each image marked by the judge.

One row per checkpoint, one column per prompt (the first ``--n`` prompts of ``--split`` with
``--objects`` objects, in shard order; seed ``--seed`` for all); each image is labelled ``[ok]`` or
``[x]`` by the project's image judge (``data.shapes.judge_image`` on the probe's reading). The
prompts are printed, numbered like the columns.

    python bench/compare_prompts.py --ckpt checkpoints/demo --ckpt runs/ft_two240 --split shapes/val \\
        --objects 2 --n 8 --probe runs/probe --png bench/results/two_object_ft.png
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm


def main(argv: list[str] | None = None) -> int:
    from cola_mm.core.images import make_grid
    from cola_mm.data import registry
    from cola_mm.evaluation.images import read_samples
    from cola_mm.evaluation.probe import Probe
    from cola_mm.pipeline import ColaPipeline

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", action="append", required=True, help="pipeline folder (repeatable: one row each)")
    ap.add_argument("--data", default="datasets", type=Path)
    ap.add_argument("--split", default="shapes/val", help="an image split under --data (default shapes/val)")
    ap.add_argument("--objects", type=int, default=None, help="only prompts of scenes with this many objects")
    ap.add_argument("--n", type=int, default=8, help="prompts (columns, default 8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe", default="runs/probe", help="the image judge's folder (cola-mm probe train)")
    ap.add_argument("--png", required=True)
    args = ap.parse_args(argv)
    if args.n < 1:
        sys.exit("error: --n must be >= 1")
    dataset = registry.of_split(args.split)
    keep = None if args.objects is None else (lambda meta: len(meta.get("objects", ())) == args.objects)
    samples = read_samples(args.data / args.split, args.n, keep=keep)
    prompts = [s["txt"] for s in samples]
    judge = Probe.from_pretrained(args.probe)
    images, labels = [], []
    for ckpt in tqdm(args.ckpt, desc="checkpoints", unit="ckpt"):
        pipe = ColaPipeline.from_pretrained(ckpt)
        drawn = pipe.generate_image(prompts, seeds=[args.seed] * len(prompts))
        for i, (img, pred, s) in enumerate(zip(drawn, judge.predict(drawn), samples)):
            ok = dataset.judge_image(pred, s["json"])["all"]
            images.append(img.convert("RGB").resize((96, 96)))
            labels.append(f"{'[ok]' if ok else '[x]'} {Path(ckpt).name} #{i + 1}")
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    make_grid(images, cols=len(prompts), labels=labels).save(args.png)
    for i, p in enumerate(prompts):
        print(f"#{i + 1}: {p}")
    print(f"{len(args.ckpt)} rows x {len(prompts)} prompts -> {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
