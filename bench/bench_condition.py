"""Does the prior use its condition? Flow loss of the target blocks with the true condition vs
a mismatched one, on held-out rows.

For each validation batch of packed multimodal rows (the run's own data config, the val
splits) the trained prior's flow loss is computed three times with the same noise and times:

- ``true``: the rows as they are;
- ``images rolled``: every image in the batch replaced by the next sample's image. Image→text
  captions now sit after a foreign image (a captioner that reads its image loses more);
  text→image targets become foreign images for their prompts (a generator that follows its
  prompt loses more).

Image blocks (``flow_image``: text→image targets) are reported apart from caption blocks
(``flow_caption``: the text blocks of rows that hold image–caption samples; text-only windows
are left out). A gap near 0 means the job ignores its condition.

    python bench/bench_condition.py --ckpt runs/demo/model --config runs/demo/config.json \
        --json bench/results/condition_use.json
    python bench/bench_condition.py --ckpt checkpoints/demo --config configs/demo_gpu.yaml \
        --json bench/results/demo_gpu_condition_use.json      # the bundled prior
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from tqdm import tqdm

from cola_mm.training.config import TrainConfig
from cola_mm.training.stages.prior import JointStage


def rolled(batch: dict, key: str) -> dict:
    out = dict(batch)
    if batch[key].shape[0] > 1:
        out[key] = torch.roll(batch[key], 1, dims=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="trained multimodal pipeline folder")
    parser.add_argument("--config", required=True, help="the run's config (config.json, or its YAML; its data "
                                                        "section is used)")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import yaml

    raw = yaml.safe_load(Path(args.config).read_text())  # YAML or JSON
    dit_cfg = {k: v for k, v in json.loads((Path(args.ckpt) / "dit" / "config.json").read_text()).items()
               if not k.startswith("_") and k != "d_latent"}
    raw.update(model={"init": args.ckpt, "image_vae": args.ckpt, "dit": {**dit_cfg, "preset": "small"}},
               batch_size=args.batch_size, run_dir="/tmp/unused", deepspeed=None)
    stage = JointStage(TrainConfig.from_dict(raw))
    module = stage.module.eval()
    results = {name: {"flow_image": [], "flow_caption": []} for name in ("true", "images rolled")}
    for i, batch in enumerate(tqdm(stage.val_batches(args.batches), desc="val batches", unit="batch")):
        # keep the loss on rows of image–caption samples only: text blocks there are captions
        pairs_rows = batch["is_image"].any(dim=1, keepdim=True)
        batch = dict(batch, loss_weight=batch["loss_weight"] * pairs_rows)
        for name, b in (("true", batch), ("images rolled", rolled(batch, "pixels"))):
            torch.manual_seed(1000 + i)  # same noise, times and VAE samples for both passes
            with torch.no_grad():
                _, logs = module(**b)
            for k, src in (("flow_image", "flow_image"), ("flow_caption", "flow_text")):
                if src in logs:
                    results[name][k].append(logs[src])
    summary = {name: {k: sum(v) / len(v) for k, v in r.items() if v} for name, r in results.items()}
    for name, r in summary.items():
        print(f"{name:16s} " + "  ".join(f"{k} {v:.4f}" for k, v in r.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({"ckpt": args.ckpt, "batches": args.batches, **summary}, indent=2) + "\n")


if __name__ == "__main__":
    main()
