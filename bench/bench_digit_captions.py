"""Which digit captions are wrong every time, and which only for some seeds?

``cola-mm eval caption`` gives one accuracy per seed. This bench runs that same evaluation (the
same function, sampling and seeds) on the digits test split for several seeds and sorts the
scans by how many seeds caption them wrong: the ones wrong at every seed are what the model
cannot read; the ones wrong at some seeds are sampling noise. It also counts what the
always-wrong captions say.

    python bench/bench_digit_captions.py --ckpt runs/mm_small_joint5w/model runs/mm_small_joint2/model \\
        --json bench/results/digit_captions.json
    python bench/bench_digit_captions.py --ckpt runs/mm_small_joint2/model --split digits/train --seeds 0
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cola_mm.data.digits import parse_digit_caption  # noqa: E402
from cola_mm.evaluation.images import evaluate_captions  # noqa: E402
from cola_mm.pipeline import ColaPipeline  # noqa: E402


def consistency(ckpt: str, data: str, seeds: list[int], limit: int, split: str = "digits/test") -> dict:
    pipe = ColaPipeline.from_pretrained(ckpt)
    per_seed, answers = {}, []
    for seed in seeds:
        results, examples = evaluate_captions(pipe, data, limit=limit, seed=seed, splits=(split,),
                                              keep=limit)
        per_seed[seed] = results[f"{split.replace('/', '_')}_all_acc"]
        answers.append([(text, ok) for _, _, text, ok in examples])
    wrong = [sum(not seed_answers[i][1] for seed_answers in answers) for i in range(len(answers[0]))]
    always = [i for i, w in enumerate(wrong) if w == len(seeds)]
    said = Counter(str(parse_digit_caption(answers[0][i][0])) for i in always)
    return {"checkpoint": ckpt, "split": split, "n": len(wrong), "acc_per_seed": per_seed,
            "wrong_at_every_seed": len(always), "wrong_at_some_seeds": sum(0 < w < len(seeds) for w in wrong),
            "always_wrong_caption_says": dict(said.most_common())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", nargs="+", required=True, help="pipeline folders to compare")
    ap.add_argument("--data", default="datasets", help="dataset root with digits/test (default datasets)")
    ap.add_argument("--split", default="digits/test", choices=("digits/test", "digits/train"),
                    help="digits/train measures how well the training scans are captioned (default digits/test)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--limit", type=int, default=300, help="scans (default 300: the whole test split)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    rows = [consistency(c, args.data, args.seeds, args.limit, args.split) for c in args.ckpt]
    for r in rows:
        accs = " / ".join(f"{100 * a:.1f}" for a in r["acc_per_seed"].values())
        print(f"{r['checkpoint']} on {r['split']}: {accs} % right; of {r['n']} scans, {r['wrong_at_every_seed']} wrong at every "
              f"seed, {r['wrong_at_some_seeds']} at some; always-wrong captions say {r['always_wrong_caption_says']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
