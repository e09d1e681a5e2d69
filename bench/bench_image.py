"""Speed of the image jobs on this machine: text → image latency and captions per second.

- Text → image: wall time of ``ColaPipeline.generate_image(prompt, steps=S)`` for one 64 px
  image (prompt encoding, one image block of S Euler steps with classifier-free guidance,
  image VAE decoding), at S = 8 and 16; best of ``--repeats`` after a warm-up.
- Captioning: ``ColaPipeline.caption`` over a batch of ``--caption-batch`` real test renders
  (image encoding, text blocks until every caption has emitted ``<eos>``), as captions/s,
  and one image alone (latency).

    python bench/bench_image.py --ckpt runs/mm_small/model --json bench/results/image_speed.json

Target (issue "Image VAE and the unified multimodal sequence"): ≤ 1 s per image at 16 steps on
2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch

from cola_mm.evaluation.images import read_samples
from bench_sampler import timed  # bench/ is on sys.path when run as a script
from cola_mm.pipeline import ColaPipeline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="pipeline folder with an image_vae/")
    parser.add_argument("--data", default="datasets/shapes/test", help="images to caption")
    parser.add_argument("--prompt", default="a large red circle in the center")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--caption-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pipe = ColaPipeline.from_pretrained(args.ckpt)
    results = {"threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "ckpt": args.ckpt}
    for steps in (8, 16):
        s = timed(lambda: pipe.generate_image(args.prompt, steps=steps), args.repeats)
        results[f"text_to_image_s_{steps}_steps"] = s
        print(f"text→image, 1 image, {steps} steps: {s * 1000:.0f} ms")
    images = [x["image"] for x in read_samples(args.data, args.caption_batch)]
    s = timed(lambda: pipe.caption(images[:1]), args.repeats)
    results["caption_latency_s"] = s
    print(f"caption, 1 image, {pipe.config.default_steps} steps/block: {s * 1000:.0f} ms")
    s = timed(lambda: pipe.caption(images), max(1, args.repeats // 2))
    results["captions_per_s"] = len(images) / s
    results["caption_batch"] = len(images)
    print(f"caption, batch of {len(images)}: {len(images) / s:.1f} captions/s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
