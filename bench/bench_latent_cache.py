"""What a latent cache saves: prior training steps with live image encoding vs from `cola-mm data encode`.

    python bench/bench_latent_cache.py --count 1000 --steps 30 --json bench/results/latent_cache.json

On this machine (CPU), with the bundled demo's image VAE (64 px → 16 tokens) and the demo
prior's shape (configs/demo_gpu.yaml: DiT small, text blocks of 4), it

1. renders ``--count`` shapes scenes (64 px) and encodes them once (``encode_shards``), timing it;
2. trains the prior for ``--steps`` steps on image rows only (text → image and image → text,
   batch ``--batch-size``), once from the image shards and once from the cache, and reports
   the samples/s the loop logs (the median over the steps after ``--warmup``);
3. times the image VAE's encoder alone at 256 px on a randomly initialised SD-shaped VAE
   (4 channels, 8× down), per batch, beside reading the same batch from a cache: what a
   256 px run saves per step. No 256 px prior is trained here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def train_rate(pairs: Path, run: Path, steps: int, batch: int, warmup: int) -> float:
    from cola_mm.training.config import TrainConfig
    from cola_mm.training.loop import train

    demo = REPO / "checkpoints" / "demo"
    cfg = TrainConfig.from_dict({
        "stage": "prior", "run_dir": str(run), "seed": 0, "batch_size": batch, "max_steps": steps, "log_every": 1,
        "val_every": 0, "ckpt_every": steps, "optim": {"lr": 1e-3, "warmup_steps": 5},
        "model": {"vae": str(demo), "image_vae": str(demo), "dit": {"preset": "small", "block_size": 4}},
        "loss": {"freeze_vae": True, "image_time_loc": 0.0},
        "data": {"train": [{"shards": str(pairs)}],  # required; no text rows are drawn (jobs)
                 "pairs": [{"shards": str(pairs)}], "jobs": {"text_to_image": 1, "image_to_text": 1},
                 "tokenizer": str(demo / "tokenizer"), "seq_len": 128, "caption_tokens": 32,
                 "shuffle_buffer": 100}})
    out = train(cfg, progress=True)
    records = [json.loads(l) for l in (out.parent / "metrics.jsonl").read_text().splitlines()]
    rates = [r["samples_per_s"] for r in records if "samples_per_s" in r and r["step"] > warmup]
    return statistics.median(rates)


def encoder_256(batch: int, repeats: int) -> dict:
    from cola_mm.vae_image.model import ImageVAE, ImageVAEConfig

    torch.manual_seed(0)
    vae = ImageVAE(ImageVAEConfig(image_size=256, block_out_channels=(128, 256, 512, 512), latent_channels=4,
                                  layers_per_block=2, norm_num_groups=32, patch_size=2)).eval()
    pixels = torch.rand(batch, 3, 256, 256) * 2 - 1
    with torch.no_grad():
        vae.encode(pixels[:1])
        start = time.perf_counter()
        for _ in range(repeats):
            mean, logvar = vae.encode(pixels)
        enc = (time.perf_counter() - start) / repeats
        start = time.perf_counter()
        for _ in range(repeats):
            vae.to_tokens(vae.sample(mean, logvar))
        cached = (time.perf_counter() - start) / repeats
    return {"batch": batch, "tokens_per_image": vae.config.n_tokens, "vae_params_m": round(vae.num_params() / 1e6, 1),
            "encoder_s_per_batch": round(enc, 3), "cached_sample_s_per_batch": round(cached, 4)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    from cola_mm.data.shapes import build_shapes
    from cola_mm.vae_image.latent_cache import encode_shards
    from cola_mm.vae_image.model import ImageVAE

    root = Path(tempfile.mkdtemp(prefix="cola-mm-latent-bench-"))
    build_shapes(root / "shapes", "train", args.count, size=64, seed=0, shard_size=500)
    vae = ImageVAE.from_pretrained(REPO / "checkpoints" / "demo")
    start = time.perf_counter()
    encode_shards(vae, root / "shapes" / "train", root / "cache", "train", shard_size=500)
    encode_s = time.perf_counter() - start
    live = train_rate(root / "shapes" / "train", root / "run_live", args.steps, args.batch_size, args.warmup)
    cached = train_rate(root / "cache" / "train", root / "run_cached", args.steps, args.batch_size, args.warmup)
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "count": args.count, "steps": args.steps, "batch_size": args.batch_size,
               "encode_images_per_s_64px": round(args.count / encode_s, 1),
               "train_rows_per_s_64px": {"live_encoding": round(live, 2), "latent_cache": round(cached, 2),
                                         "speedup": round(cached / live, 3)},
               "encoder_256px": encoder_256(args.batch_size, 3)}
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
