"""Text-continuation quality against the number of ODE steps and the guidance scale.

Held-out prompts are the first ``--prompt-tokens`` tokens of validation documents. For each
setting the pipeline continues every prompt by ``--new-tokens`` tokens and we report:

- unigram entropy (bits) of the generated tokens, pooled — a collapse detector (a model that
  repeats a few tokens scores low; real Shakespeare val text is the reference line);
- repeated 4-grams: the fraction of 4-grams in a continuation that already occurred in it;
- VAE round trip: the generated text re-encoded by the Text VAE and decoded again, token
  accuracy — whether what the prior produced lies where the VAE can represent it;
- seconds per setting.

    python bench/bench_text_quality.py --ckpt runs/prior_small/model --json bench/results/text_quality.json

Writes a PNG (``--png``, default next to the JSON) with entropy and round-trip accuracy
against steps and against the CFG scale.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import Counter
from pathlib import Path

import torch

from cola_mm.data.loader import iter_texts
from cola_mm.pipeline import ColaPipeline

STEPS = (1, 2, 4, 8, 16, 32)
SCALES = (1.0, 3.0, 5.0, 7.0)


def unigram_entropy(token_lists: list[list[int]]) -> float:
    counts = Counter(t for toks in token_lists for t in toks)
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def repeated_ngrams(tokens: list[int], n: int = 4) -> float:
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


@torch.no_grad()
def vae_round_trip(pipe: ColaPipeline, token_lists: list[list[int]]) -> float:
    correct = total = 0
    for toks in token_lists:
        if not toks:
            continue
        ids = torch.tensor([toks])
        mean, _ = pipe.text_vae.encode(ids)
        correct += int((pipe.text_vae.decode(mean).argmax(-1) == ids).sum())
        total += len(toks)
    return correct / max(total, 1)


def evaluate_setting(pipe, prompts, new_tokens, steps, scale, seed) -> dict:
    start = time.perf_counter()
    outputs = pipe.generate_text(prompts, max_new_tokens=new_tokens, steps=steps, cfg_scale=scale, seed=seed)
    seconds = time.perf_counter() - start
    toks = [pipe.tokenizer.encode(o, add_special_tokens=False) for o in outputs]
    return {"steps": steps, "cfg_scale": scale, "entropy_bits": round(unigram_entropy(toks), 3),
            "repeated_4grams": round(sum(repeated_ngrams(t) for t in toks) / len(toks), 3),
            "vae_round_trip": round(vae_round_trip(pipe, toks), 4), "seconds": round(seconds, 1),
            "example": outputs[0][:160]}


def plot(rows_steps, rows_cfg, reference, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    for ax, rows, key, label in ((axes[0], rows_steps, "steps", "ODE steps per block (CFG 1)"),
                                 (axes[1], rows_cfg, "cfg_scale", "CFG scale (16 steps)")):
        xs = [r[key] for r in rows]
        ax.plot(xs, [r["entropy_bits"] for r in rows], "o-", label="unigram entropy (bits)")
        ax.axhline(reference, ls="--", c="gray", lw=1, label="val text entropy")
        ax.set_xlabel(label)
        ax2 = ax.twinx()
        ax2.plot(xs, [r["vae_round_trip"] for r in rows], "s-", c="tab:orange", label="VAE round trip")
        ax2.set_ylim(0, 1.02)
        if key == "steps":
            ax.set_xscale("log", base=2)
        ax.legend(loc="lower left", fontsize=7)
        ax2.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="pipeline folder")
    parser.add_argument("--data", default="datasets/text/val", help="held-out text shards")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=24)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    parser.add_argument("--png", default=None)
    args = parser.parse_args()

    pipe = ColaPipeline.from_pretrained(args.ckpt)
    docs = [t for _, t in zip(range(args.prompts), iter_texts(args.data))]
    tok = pipe.tokenizer
    doc_tokens = [tok.encode(d, add_special_tokens=False) for d in docs]
    prompts = [tok.decode(t[:args.prompt_tokens]) for t in doc_tokens]
    reference = unigram_entropy([t[args.prompt_tokens:args.prompt_tokens + args.new_tokens] for t in doc_tokens])

    rows_steps = [evaluate_setting(pipe, prompts, args.new_tokens, s, 1.0, args.seed) for s in STEPS]
    rows_cfg = [evaluate_setting(pipe, prompts, args.new_tokens, 16, c, args.seed) for c in SCALES]
    print(f"reference (val continuations) unigram entropy: {reference:.3f} bits")
    print(f"{'steps':>5} {'cfg':>4} {'entropy':>8} {'rep4':>6} {'vae_rt':>7} {'sec':>6}  example")
    for r in rows_steps + rows_cfg:
        print(f"{r['steps']:>5} {r['cfg_scale']:>4} {r['entropy_bits']:>8} {r['repeated_4grams']:>6} "
              f"{r['vae_round_trip']:>7} {r['seconds']:>6}  {r['example'][:60]!r}")
    result = {"reference_entropy_bits": round(reference, 3), "prompts": len(prompts),
              "new_tokens": args.new_tokens, "vs_steps": rows_steps, "vs_cfg": rows_cfg}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    png = Path(args.png) if args.png else (Path(args.json).with_suffix(".png") if args.json else None)
    if png is not None:
        plot(rows_steps, rows_cfg, reference, png)
        print(f"plot: {png}")


if __name__ == "__main__":
    main()
