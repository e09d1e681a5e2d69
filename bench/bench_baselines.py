"""Quality and speed of the text families side by side: Cola-MM's prior, the AR, masked diffusion
(issue 19, "speed at equal quality").

Every model continues the same held-out prompts (the first ``--prompt-tokens`` tokens of
``--prompts`` windows of ``DATA/text/val``) by ``--max-new-tokens`` tokens at one seed, at each
step count of its grid (the prior: ODE steps per block, ``--prior-steps``; masked diffusion:
denoising steps in all, ``--mdm-steps``; the AR has none). Per model and step count:

- quality of the batch-8 continuations: generative perplexity under ``--judge`` (an AR folder),
  the corpus-word rate, repeated 4-grams;
- speed: generated tokens/s at batch 1 (the first 8 prompts one by one) and at batch 8 (all
  prompts in batches of 8), tokens counted up to each text's ``<eos>``.

With ``--seeds 0,1,2`` every figure is the mean over the seeds (``per_seed`` holds each, ``*_std``
the spread), and the pick below reads the means: one seed's gen-PPL can swing by half.

It then names, for the prior and masked diffusion, the smallest step count whose gen-PPL is
within 1.2x of the AR's (``reaches_ar``), or the best it reaches, and their tokens/s there
against the AR's. Writes JSON and a PNG (gen-PPL against tokens/s at batch 1, one curve per
family, points labelled by steps).

    python bench/bench_baselines.py --model prior=runs/baseline_prior/model --model ar=runs/baseline_ar/model \\
        --model mdm=runs/baseline_mdm/model --judge runs/baseline_ar/model --data datasets \\
        --json bench/results/baselines_speed.json --png bench/results/baselines_speed.png
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import statistics
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from cola_mm.evaluation.generators import load_text_generator
from cola_mm.evaluation import context as C
from cola_mm.evaluation import text_metrics as tm
from cola_mm.evaluation.ar import load_ar

WITHIN = 1.2  # "equal quality": gen-PPL within this factor of the AR's (issue 24's bar)


def generate(gen, prompts: list[str], max_new_tokens: int, steps: int | None, seed: int,
             prior_cfg: float | None) -> tuple[list[str], int]:
    """(texts, generated tokens) for one batch of prompts, whatever the family."""
    if gen.family == "cola_mm":
        r = gen.generate_text(prompts, max_new_tokens=max_new_tokens, steps=steps, cfg_scale=prior_cfg,
                              seeds=[seed] * len(prompts), return_result=True)
        return r.outputs, sum(len(t) for t in r.tokens)
    if gen.family == "ar":
        return gen.generate_texts(prompts, max_new_tokens=max_new_tokens, seed=seed)
    return gen.generate_texts(prompts, max_new_tokens=max_new_tokens, steps=steps, seed=seed)


def timed(gen, prompts, batch: int, max_new_tokens: int, steps, seed: int, prior_cfg) -> tuple[list[str], float]:
    texts, tokens, start = [], 0, time.perf_counter()
    for i in range(0, len(prompts), batch):
        t, n = generate(gen, prompts[i:i + batch], max_new_tokens, steps, seed, prior_cfg)
        texts += t
        tokens += n
    return texts, tokens / max(time.perf_counter() - start, 1e-9)


FIGURES = ("tokens_per_s_batch1", "tokens_per_s_batch8", "gen_ppl", "corpus_word_rate", "repeated_4gram_rate")


def mean_and_spread(per_seed: list[dict]) -> dict:
    """Each figure's mean over the seeds, and its standard deviation as ``<figure>_std`` (0 for one)."""
    out = {}
    for key in FIGURES:
        values = [r[key] for r in per_seed]
        out[key] = statistics.fmean(values)
        out[f"{key}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, metavar="NAME=FOLDER",
                        help="a model folder of any family (repeat)")
    parser.add_argument("--judge", required=True, help="the AR whose perplexity scores every model's text")
    parser.add_argument("--data", default="datasets")
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--prior-steps", default="2,4,8,16", help="ODE steps per block to try for the prior")
    parser.add_argument("--mdm-steps", default="6,12,24,48", help="denoising steps in all to try for masked diffusion")
    parser.add_argument("--prior-cfg", type=float, default=None, help="the prior's text guidance (default: its own)")
    parser.add_argument("--seeds", default="0", help="comma-separated sampling seeds; figures are their means")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", required=True)
    parser.add_argument("--png", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [int(x) for x in args.seeds.split(",")]
    data = Path(args.data)
    models = dict(m.split("=", 1) for m in args.model)
    judge, judge_tok = load_ar(args.judge)
    vocab = tm.corpus_vocabulary(data / "text" / "train")
    grids = {"cola_mm": [int(s) for s in args.prior_steps.split(",")],
             "masked_diffusion": [int(s) for s in args.mdm_steps.split(",")], "ar": [None]}
    report = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
              "judge": args.judge, "prompts": args.prompts, "seeds": seeds, "prior_cfg": args.prior_cfg, "max_new_tokens": args.max_new_tokens,
              "models": {}}
    human = None
    for name, folder in models.items():
        gen = load_text_generator(folder)
        ids = C.read_windows(data / "text" / "val", gen.tokenizer, args.prompts,
                             args.prompt_tokens + args.max_new_tokens)
        prompts = C.prompts_from_windows(gen.tokenizer, ids, args.prompt_tokens)
        if human is None:
            human = [gen.tokenizer.decode(r[args.prompt_tokens:].tolist(), skip_special_tokens=True) for r in ids]
            report["human"] = {"gen_ppl": tm.generative_perplexity(human, judge, judge_tok, prompts=prompts),
                               "corpus_word_rate": tm.corpus_word_rate(human, vocab)}
        rows = []
        for steps in tqdm(grids[gen.family], desc=name):
            per_seed, samples = [], None
            for seed in seeds:
                texts, tps8 = timed(gen, prompts, 8, args.max_new_tokens, steps, seed, args.prior_cfg)
                _, tps1 = timed(gen, prompts[:8], 1, args.max_new_tokens, steps, seed, args.prior_cfg)
                per_seed.append({"seed": seed, "tokens_per_s_batch1": tps1, "tokens_per_s_batch8": tps8,
                                 "gen_ppl": tm.generative_perplexity(texts, judge, judge_tok, prompts=prompts),
                                 "corpus_word_rate": tm.corpus_word_rate(texts, vocab),
                                 "repeated_4gram_rate": tm.repeated_ngrams(texts, 4)})
                if samples is None:
                    samples = [{"prompt": p[-80:], "continuation": t} for p, t in zip(prompts[:3], texts[:3])]
            rows.append({"steps": steps, **mean_and_spread(per_seed), "per_seed": per_seed, "samples": samples})
            r = rows[-1]
            print(f"{name} steps={steps}: gen-PPL {r['gen_ppl']:.1f} ± {r['gen_ppl_std']:.1f}, word rate "
                  f"{r['corpus_word_rate']:.3f}, {r['tokens_per_s_batch1']:.1f} tok/s (b1), "
                  f"{r['tokens_per_s_batch8']:.1f} tok/s (b8)", flush=True)
        report["models"][name] = {"folder": folder, "family": gen.family, "rows": rows}
    ar = next((m for m in report["models"].values() if m["family"] == "ar"), None)
    if ar is not None:
        ar_row = ar["rows"][0]
        for m in report["models"].values():
            if m["family"] == "ar":
                continue
            ok = [r for r in m["rows"] if r["gen_ppl"] <= WITHIN * ar_row["gen_ppl"]]
            pick = min(ok, key=lambda r: r["steps"]) if ok else min(m["rows"], key=lambda r: r["gen_ppl"])
            m["at_equal_quality"] = {
                "reaches_ar": bool(ok), "steps": pick["steps"], "gen_ppl": pick["gen_ppl"],
                "ar_gen_ppl": ar_row["gen_ppl"],
                "speed_vs_ar_batch1": pick["tokens_per_s_batch1"] / ar_row["tokens_per_s_batch1"],
                "speed_vs_ar_batch8": pick["tokens_per_s_batch8"] / ar_row["tokens_per_s_batch8"]}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name, m in report["models"].items():
            xs = [r["tokens_per_s_batch1"] for r in m["rows"]]
            ys = [r["gen_ppl"] for r in m["rows"]]
            ax.plot(xs, ys, "o-", label=f"{name} ({m['family']})")
            for r, x, y in zip(m["rows"], xs, ys):
                if r["steps"] is not None:
                    ax.annotate(str(r["steps"]), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axhline(report["human"]["gen_ppl"], color="grey", ls=":", label="held-out human text")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("generated tokens/s, batch 1 (CPU)")
        ax.set_ylabel(f"gen-PPL under {Path(args.judge).parent.name}")
        ax.set_title("Text families: quality vs speed (labels: steps)")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
    return 0


if __name__ == "__main__":
    sys.exit(main())
