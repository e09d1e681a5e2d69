"""Sampling speed of the block-causal prior: KV cache vs recomputation, per-block latency,
and tokens/s against a matched-size autoregressive model, all in one run on this machine.

- KV cache vs recompute: :func:`cola_mm.prior.sampler.generate_blocks` with ``use_cache=True`` (each
  finished block's clean keys/values computed once) and ``use_cache=False`` (the clean prefix
  re-run at every denoising step), 8 blocks of 16 latents after a 16-latent prompt.
- Per-block latency: the cached sampler, ``--steps`` Euler steps per block.
- Against AR: ``transformers.LlamaForCausalLM`` built from a config with the DiT's width,
  depth, heads and SwiGLU width (vocab 8192), greedy ``generate`` with its KV cache, the same
  number of new tokens (128). The prior's figure includes the Text VAE decoder's work
  (streamed, cached) when ``--ckpt`` is given; with random weights it times the DiT alone.

    python bench/bench_sampler.py                         # DiT `small` preset, random weights
    python bench/bench_sampler.py --ckpt runs/prior_small/model --json bench/results/sampler.json
    python bench/bench_sampler.py --ckpt runs/prior_small/model --batch 8 --threads 1 --repeats 1

Target (issue "Block-causal DiT prior"): cache >= 4x faster than recompute at 8 blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from cola_mm.prior.dit import DiT, preset
from cola_mm.prior.sampler import SamplerConfig, generate_blocks


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", default=None, help="pipeline folder (default: a random `small` DiT)")
    parser.add_argument("--blocks", type=int, default=8)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="prompts generated together")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    pipe = None
    if args.ckpt:
        from cola_mm.pipeline import ColaPipeline

        pipe = ColaPipeline.from_pretrained(args.ckpt)
        dit = pipe.dit
    else:
        dit = DiT(preset("small")).eval()
    cfg = dit.config
    B = cfg.block_size
    prefix = [torch.randn(B, cfg.d_latent) for _ in range(args.batch)]
    gen = lambda: [torch.Generator().manual_seed(i) for i in range(args.batch)]  # noqa: E731
    n_tokens = args.blocks * B * args.batch

    cached = timed(lambda: generate_blocks(dit, prefix, args.blocks, SamplerConfig(steps=args.steps), gen()), args.repeats)
    recompute = timed(lambda: generate_blocks(dit, prefix, args.blocks,
                                              SamplerConfig(steps=args.steps, use_cache=False), gen()), 1)
    results = {"machine": f"{os.cpu_count()} cores, torch threads {torch.get_num_threads()}",
               "dit_params_M": round(dit.num_params() / 1e6, 2), "batch": args.batch, "blocks": args.blocks,
               "block_size": B, "steps": args.steps,
               "cached_s": round(cached, 3), "recompute_s": round(recompute, 3),
               "cache_speedup": round(recompute / cached, 2),
               "per_block_ms": round(1000 * cached / args.blocks, 1),
               "prior_tokens_per_s": round(n_tokens / cached, 1)}
    if pipe is not None:
        prompts = ["KING HENRY. Now, lords, "] * args.batch
        text_s = timed(lambda: pipe.generate_text(prompts, max_new_tokens=args.blocks * B, steps=args.steps, seed=0),
                       args.repeats)
        results["pipeline_text_s"] = round(text_s, 3)
        results["pipeline_tokens_per_s"] = round(n_tokens / text_s, 1)

    from transformers import LlamaConfig, LlamaForCausalLM

    from cola_mm.core.layers import swiglu_hidden

    ar = LlamaForCausalLM(LlamaConfig(vocab_size=8192, hidden_size=cfg.d_model, num_hidden_layers=cfg.n_layers,
                                      num_attention_heads=cfg.n_heads, intermediate_size=swiglu_hidden(cfg.d_model),
                                      max_position_embeddings=4096)).eval()
    ids = torch.randint(0, 8192, (args.batch, B))

    def ar_generate():
        with torch.no_grad():
            ar.generate(ids, max_new_tokens=args.blocks * B, min_new_tokens=args.blocks * B, do_sample=False,
                        use_cache=True, pad_token_id=0)

    ar_s = timed(ar_generate, args.repeats)
    results["ar_params_M"] = round(sum(p.numel() for p in ar.parameters()) / 1e6, 2)
    results["ar_s"] = round(ar_s, 3)
    results["ar_tokens_per_s"] = round(n_tokens / ar_s, 1)
    results["prior_vs_ar_speed"] = round(results["prior_tokens_per_s"] / results["ar_tokens_per_s"], 3)
    for key, value in results.items():
        print(f"{key:24s} {value}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
