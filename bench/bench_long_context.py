"""Text past the length the prior was trained on: a sliding window against none.

A pipeline trained on rows of ``trained_context`` latents (128 for the demo) is asked for more
in the app (a 112-token prompt + up to 256 new tokens). With ``window`` = ``trained_context``
(the default) the DiT and the Text VAE decoder never attend to more latents than training
showed; with no window they attend to everything. Two measurements, both settings:

1. Teacher-forced flow loss per block on held-out documents of ``--tokens`` tokens: the real
   text's latents (Text VAE encoder, windowed), and for every block k the flow-matching loss
   of its velocity given the clean blocks < k (the sampler's own cached path), at fixed
   t ∈ {0.25, 0.5, 0.75} and fixed noise. Lower = the prior predicts real text better.
   Reported for blocks inside the trained context and past it.
2. Free generation of ``--new-tokens`` tokens from ``--prompt-tokens``-token prompts:
   unigram entropy and repeated 4-grams of the tokens generated past the trained context,
   and tokens/s.

    python bench/bench_long_context.py --ckpt checkpoints/demo --json bench/results/long_context.json

Writes a PNG (loss per block position, both settings) next to the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.bench_text_quality import repeated_ngrams, unigram_entropy  # noqa: E402
from cola_mm.core.sequence import SEGMENT_TYPES  # noqa: E402
from cola_mm.data.loader import iter_texts, list_shards  # noqa: E402
from cola_mm.pipeline import ColaPipeline  # noqa: E402
from cola_mm.prior.sampler import BlockSampler, SamplerConfig  # noqa: E402

TIMES = (0.25, 0.5, 0.75)


@torch.no_grad()
def block_losses(pipe: ColaPipeline, ids: list[int], window: int, seed: int) -> list[float]:
    """Flow loss of every block of one document given its clean predecessors."""
    vae, dit, B = pipe.text_vae, pipe.dit, pipe.dit.config.block_size
    mean, _ = vae.encode(torch.tensor([ids]), window=pipe.config.trained_context)
    z0 = vae.to_prior(mean)  # (1, n, c)
    n_blocks = z0.shape[1] // B
    gen = torch.Generator().manual_seed(seed)
    sampler = BlockSampler(dit, SamplerConfig(window=window), SEGMENT_TYPES["text"])
    empty = torch.zeros(1, 0, dtype=torch.long)
    sampler.start(z0[:, :0], empty, empty, empty, empty.bool())
    losses = []
    for k in range(n_blocks):
        block = z0[:, k * B:(k + 1) * B]
        positions = torch.arange(k * B, (k + 1) * B)[None]
        total = 0.0
        for t in TIMES:
            eps = torch.randn(block.shape, generator=gen)
            v = sampler.velocity((1 - t) * block + t * eps, t, positions)
            total += float(((v - (eps - block)) ** 2).mean())
        losses.append(total / len(TIMES))
        sampler.commit(block, positions)
    return losses


def generation(pipe: ColaPipeline, prompts: list[str], new_tokens: int, steps: int, seed: int,
               past: int) -> dict:
    start = time.perf_counter()
    result = pipe.generate_text(prompts, max_new_tokens=new_tokens, steps=steps, seed=seed, return_result=True)
    seconds = time.perf_counter() - start
    tokens = result.tokens
    late = [t[past:] for t in tokens]  # generated tokens that lie past the trained context
    return {"tokens_per_s": round(sum(map(len, tokens)) / seconds, 1),
            "mean_new_tokens": round(sum(map(len, tokens)) / len(tokens), 1),
            "late_tokens": sum(map(len, late)),
            "late_entropy_bits": round(unigram_entropy(late), 3),
            "late_repeated_4grams": round(sum(repeated_ngrams(t) for t in late if t) / max(1, sum(1 for t in late if t)), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="pipeline folder")
    parser.add_argument("--data", default="datasets/text/val", help="held-out text shards")
    parser.add_argument("--docs", type=int, default=16, help="held-out documents (teacher-forced loss)")
    parser.add_argument("--tokens", type=int, default=384, help="tokens per document (a multiple of the block)")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-tokens", type=int, default=112)
    parser.add_argument("--new-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    pipe = ColaPipeline.from_pretrained(args.ckpt)
    context, B = pipe.config.trained_context, pipe.dit.config.block_size
    tok = pipe.tokenizer
    docs = []
    for text in iter_texts(list_shards(args.data)):
        ids = tok.encode(text, add_special_tokens=False)
        if len(ids) + 1 >= args.tokens:
            docs.append([tok.bos_token_id] + ids[:args.tokens - 1])
        if len(docs) == args.docs:
            break
    if not docs:
        raise SystemExit(f"no document in {args.data} has {args.tokens} tokens")
    settings = {"window": context, "none": 0}
    curves = {}
    for name, window in settings.items():
        rows = [block_losses(pipe, d, window, args.seed + i)
                for i, d in enumerate(tqdm(docs, desc=f"flow loss, window={name}", unit="doc"))]
        curves[name] = [sum(r[k] for r in rows) / len(rows) for k in range(len(rows[0]))]
    inside = context // B
    result = {"ckpt": args.ckpt, "trained_context": context, "docs": len(docs), "tokens": args.tokens,
              "loss_per_block": {k: [round(x, 4) for x in v] for k, v in curves.items()}}
    for name, curve in curves.items():
        result[f"loss_inside_{name}"] = round(sum(curve[:inside]) / inside, 4)
        result[f"loss_past_{name}"] = round(sum(curve[inside:]) / max(1, len(curve) - inside), 4)

    prompts = [tok.decode(d[1:args.prompt_tokens]) for d in docs[:args.prompts]]
    past = max(0, context - args.prompt_tokens)
    for name, trained in (("window", context), ("none", 10 ** 6)):
        pipe.config = pipe.config.replace(trained_context=trained)
        result[f"generation_{name}"] = generation(pipe, prompts, args.new_tokens, args.steps, args.seed, past)
    pipe.config = pipe.config.replace(trained_context=context)

    print(json.dumps({k: v for k, v in result.items() if k != "loss_per_block"}, indent=2))
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        plot(curves, context, B, out.with_suffix(".png"))
        print(f"plot: {out.with_suffix('.png')}")


def plot(curves: dict[str, list[float]], context: int, B: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.4), dpi=110)
    for name, curve in curves.items():
        ax.plot([(k + 1) * B for k in range(len(curve))], curve, "o-", ms=3,
                label=f"window {context}" if name == "window" else "no window")
    ax.axvline(context, ls="--", c="gray", lw=1, label="trained context")
    ax.set_xlabel("end of block (latent position)")
    ax.set_ylabel("teacher-forced flow loss")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


if __name__ == "__main__":
    main()
