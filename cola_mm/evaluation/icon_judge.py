"""The icon judge: which icons a 64 px image holds, where, how large, on which background.

Part of issue 18. The judge is a small timm CNN, trained from scratch (no hub weights) on fresh
renders of the icons world (:mod:`cola_mm.data.icons`). It works as a per-cell detector: the
64 px image is resized to 96 px, so ``resnet10t``'s stride-32 feature map is exactly the 3×3
grid. Every cell's feature vector goes through one shared head (occupied, icon, size). A
global head gives the count and the background::

    image ─resize 96─▶ CNN ─▶ (b, c, 3, 3) ─per cell─▶ occupied 2 | icon N | size 2   (shared weights)
                                          └─mean─▶ count 3 (0, 1, 2) | background 8

Training renders come from their own RNG namespace (:data:`TRAIN_NAMESPACE`), over every icon,
background, size and cell, the held-out combinations included. None of them is an image of a
built split. :func:`evaluate_judge` reads held-out renders (:data:`EVAL_NAMESPACE`) and, when
given, built ``icons`` splits graded by :func:`judge_image`.

    python -m cola_mm.evaluation.icon_judge train --out runs/icon_judge --steps 2000
    python -m cola_mm.evaluation.icon_judge eval --judge runs/icon_judge --data datasets/icons
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from cola_mm.core.components import PretrainedMixin
from cola_mm.core.config import Config, check
from cola_mm.data import icons as world
from cola_mm.data.shapes import CELLS
from cola_mm.evaluation.probe import images_to_tensor

TRAIN_NAMESPACE = "icon-judge/train"
EVAL_NAMESPACE = "icon-judge/eval"
COUNTS = (0, 1, 2)
COUNT_WEIGHTS = (0.1, 0.5, 0.4)
INPUT = 96  # 96 px = 3 × resnet10t's stride 32: one feature per grid cell


@dataclass(frozen=True)
class IconJudgeConfig(Config):
    arch: str = "resnet10t"
    icons: tuple[str, ...] = ()  # class names, in logit order (the font's icons)
    backgrounds: tuple[str, ...] = tuple(world.BACKGROUNDS)
    sizes: tuple[str, ...] = tuple(world.SIZES)

    def __post_init__(self):
        check(timm.is_model(self.arch), f"arch {self.arch!r} is not a timm model")
        check(len(self.icons) >= 2 and len(set(self.icons)) == len(self.icons),
              "icons must be a list of distinct names")


class IconJudge(PretrainedMixin, nn.Module):
    KIND = "IconJudge"
    CONFIG_CLASS = IconJudgeConfig

    def __init__(self, config: IconJudgeConfig):
        super().__init__()
        self.config = config
        self.backbone = timm.create_model(config.arch, pretrained=False, num_classes=0, in_chans=3)
        c = self.backbone.num_features
        self.cell_pos = nn.Parameter(torch.zeros(len(CELLS), c))
        self.cell_head = nn.Linear(c, 2 + len(config.icons) + len(config.sizes))
        self.global_head = nn.Linear(c, len(COUNTS) + len(config.backgrounds))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (b, 3, 64, 64) in [-1, 1] → occupied (b, 9, 2), icon (b, 9, N), size (b, 9, 2),
        count (b, 3), background (b, B)."""
        x = F.interpolate(x, size=(INPUT, INPUT), mode="bilinear", align_corners=False)
        feats = F.adaptive_avg_pool2d(self.backbone.forward_features(x), 3)  # (b, c, 3, 3)
        cells = feats.flatten(2).transpose(1, 2) + self.cell_pos  # (b, 9, c), row by row = CELLS order
        per_cell = self.cell_head(cells).split([2, len(self.config.icons), len(self.config.sizes)], dim=-1)
        glob = self.global_head(feats.mean((2, 3))).split([len(COUNTS), len(self.config.backgrounds)], dim=-1)
        return {"occupied": per_cell[0], "icon": per_cell[1], "size": per_cell[2], "count": glob[0],
                "background": glob[1]}

    @torch.no_grad()
    def predict(self, images: Sequence[Image.Image], top_k: int = 5) -> list[dict]:
        """``{"count", "background", "objects": [{cell, icon, size, top}]}`` per image (``top``: the
        ``top_k`` most likely icons of that cell)."""
        was = self.training
        self.eval()
        out = []
        try:
            for start in range(0, len(images), 128):
                x = images_to_tensor(images[start:start + 128])
                logits = self(x.to(next(self.parameters()).device))
                top = logits["icon"].topk(top_k, dim=-1).indices.tolist()
                occupied = logits["occupied"].argmax(-1).tolist()
                size = logits["size"].argmax(-1).tolist()
                count = logits["count"].argmax(-1).tolist()
                bg = logits["background"].argmax(-1).tolist()
                for i in range(x.shape[0]):
                    objects = [{"cell": cell, "icon": self.config.icons[top[i][j][0]],
                                "size": self.config.sizes[size[i][j]],
                                "top": [self.config.icons[k] for k in top[i][j]]}
                               for j, cell in enumerate(CELLS) if occupied[i][j] == 1]
                    out.append({"count": COUNTS[count[i]], "background": self.config.backgrounds[bg[i]],
                                "objects": objects})
        finally:
            self.train(was)
        return out


# --------------------------------------------------------------------------- renders


def judge_scene(namespace: str, seed: int, index: int, found, canvas: int = 64) -> dict:
    """A render of 0, 1 or 2 icons: any icon, background, size and cell (held-out ones included)."""
    rng = random.Random(f"{namespace}/{seed}/{index}")
    n = rng.choices(COUNTS, weights=COUNT_WEIGHTS)[0]
    background = rng.choice(tuple(world.BACKGROUNDS))
    for _ in range(world.MAX_TRIES):
        picks = rng.sample(found, n)
        cells = rng.sample(CELLS, n)
        objects = [world.place_icon(rng, cp, name, rng.choice(tuple(world.SIZES)), cell, canvas)
                   for (cp, name), cell in zip(picks, cells)]
        if n < 2 or world.separated(objects[0]["bbox"], objects[1]["bbox"]):
            return {"objects": objects, "relation": None, "background": background}
    raise RuntimeError("cannot place two icons apart")


def _targets(scene: dict, config: IconJudgeConfig) -> dict:
    index = {name: i for i, name in enumerate(config.icons)}
    occupied = [0] * len(CELLS)
    icon = [-100] * len(CELLS)
    size = [-100] * len(CELLS)
    for o in scene["objects"]:
        j = CELLS.index(o["cell"])
        occupied[j], icon[j], size[j] = 1, index[o["icon"]], config.sizes.index(o["size"])
    return {"occupied": occupied, "icon": icon, "size": size, "count": len(scene["objects"]),
            "background": config.backgrounds.index(scene["background"])}


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Generated images are blurry VAE decodes: blur half the batch a little, add noise."""
    b = x.shape[0]
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    pick = (torch.rand(b, 1, 1, 1, generator=gen) < 0.5).float()
    x = pick * blurred + (1 - pick) * x
    return x + torch.randn(x.shape, generator=gen) * torch.rand(b, 1, 1, 1, generator=gen) * 0.05


def loss_fn(out: dict, t: dict) -> torch.Tensor:
    return (F.cross_entropy(out["occupied"].flatten(0, 1), t["occupied"].flatten())
            + F.cross_entropy(out["icon"].flatten(0, 1), t["icon"].flatten(), ignore_index=-100)
            + F.cross_entropy(out["size"].flatten(0, 1), t["size"].flatten(), ignore_index=-100)
            + F.cross_entropy(out["count"], t["count"]) + F.cross_entropy(out["background"], t["background"]))


def train_judge(out: str | Path, steps: int = 2000, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                font: str | None = None, progress: bool = True) -> IconJudge:
    font_path = str(world.find_font(font))
    found = world.list_icons(font_path)
    config = IconJudgeConfig(icons=tuple(name for _, name in found))
    torch.manual_seed(seed)
    judge = IconJudge(config)
    opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(seed)
    log = []
    bar = tqdm(range(steps), desc="train icon judge", disable=not progress)
    for step in bar:
        scenes = [judge_scene(TRAIN_NAMESPACE, seed, step * batch_size + i, found) for i in range(batch_size)]
        x = images_to_tensor([world.render_scene(s, 64, font_path) for s in scenes])
        rows = [_targets(s, config) for s in scenes]
        t = {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}
        loss = loss_fn(judge(_augment(x, gen)), t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0 or step == steps - 1:
            log.append({"step": step + 1, "loss": round(loss.item(), 4)})
            bar.set_postfix(loss=f"{loss.item():.3f}")
    out = Path(out)
    judge.save_pretrained(out)
    (out / "train_log.json").write_text(json.dumps({"steps": steps, "batch_size": batch_size, "lr": lr,
                                                    "seed": seed, "log": log}, indent=2) + "\n")
    return judge


# --------------------------------------------------------------------------- grading


def judge_image(pred: dict, truth: dict, top_k: int = 1) -> dict[str, bool]:
    """Grade a prediction against a scene (:func:`cola_mm.data.icons.judge_image`, the grading the
    evaluation suite uses)."""
    return world.judge_image(pred, truth, top_k)


SPLITS = ("test", "novel", "two")


def evaluate_judge(judge: IconJudge, n: int = 1000, data: str | Path | None = None, font: str | None = None,
                   limit: int = 500, image_vae=None, splits: Sequence[str] = SPLITS) -> dict:
    """Accuracy on ``n`` held-out renders (their own namespace) and, with ``data``, on the built
    icons ``splits`` (default test, novel, two; those missing are skipped). With ``image_vae`` the
    split images are graded after its round trip (posterior mean → decode), under
    ``<split>_through_vae`` beside the originals: the most a prior that decodes through that VAE
    can score."""
    from cola_mm.data.loader import ShardDataset

    font_path = str(world.find_font(font))
    found = world.list_icons(font_path)
    report = {}
    scenes = [judge_scene(EVAL_NAMESPACE, 0, i, found) for i in range(n)]
    preds = judge.predict([world.render_scene(s, 64, font_path) for s in scenes])
    report["renders"] = grade_summary(preds, scenes, n)
    if data is not None:
        for split in splits:
            folder = Path(data) / split
            if folder.is_dir():
                samples = [s for _, s in zip(range(limit), ShardDataset(folder, required=("image", "json")))]
                images, truths = [s["image"] for s in samples], [s["json"] for s in samples]
                report[split] = grade_summary(judge.predict(images), truths, len(samples))
                if image_vae is not None:
                    through = judge.predict(vae_round_trip(image_vae, images))
                    report[f"{split}_through_vae"] = grade_summary(through, truths, len(samples))
    return report


@torch.no_grad()
def vae_round_trip(vae, images: Sequence[Image.Image], batch_size: int = 64) -> list[Image.Image]:
    """Each image encoded by the image VAE (posterior mean) and decoded again, as RGB PIL images."""
    from cola_mm.core.images import fit_square, image_to_tensor, tensor_to_image, to_rgb

    out = []
    for i in range(0, len(images), batch_size):
        x = torch.stack([image_to_tensor(fit_square(to_rgb(im), vae.config.image_size))
                         for im in images[i:i + batch_size]])
        mean, _ = vae.encode(x)
        out += [tensor_to_image(y) for y in vae.decode(mean).float()]
    return out


def grade_summary(preds: list[dict], truths: list[dict], n: int) -> dict:
    """The share of ``n`` images right on each judged field, on all of them ("all") and with the
    icon in the top 5 ("icon_top5"), from the judge's ``preds`` against the scenes' ``truths``."""
    grades = [judge_image(p, t) for p, t in zip(preds, truths)]
    top5 = [judge_image(p, t, top_k=5)["icon"] for p, t in zip(preds, truths)]
    out = {k: round(sum(g[k] for g in grades) / max(1, n), 4) for k in grades[0]} if grades else {}
    out["icon_top5"] = round(sum(top5) / max(1, n), 4)
    out["n"] = n
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cola_mm.evaluation.icon_judge", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("train", help="train the judge on fresh renders")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--font", default=None)
    p = sub.add_parser("eval", help="the judge's accuracy on held-out renders and built splits")
    p.add_argument("--judge", required=True)
    p.add_argument("--data", default=None, help="a built icons dataset root (its test, novel, two)")
    p.add_argument("--splits", default=None,
                   help="comma-separated splits of --data to grade instead (e.g. val, to choose an image VAE)")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--image-vae", default=None,
                   help="also grade the splits after this image VAE's round trip (an image VAE or pipeline folder)")
    p.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if args.cmd == "train":
        start = time.perf_counter()
        judge = train_judge(args.out, args.steps, args.batch_size, args.lr, font=args.font)
        report = evaluate_judge(judge, n=500)
        report["train_s"] = round(time.perf_counter() - start, 1)
        (Path(args.out) / "report.json").write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2))
        return 0
    if args.image_vae is not None and args.data is None:
        ap.error("--image-vae grades the built splits: give --data too")
    splits = SPLITS
    if args.splits is not None:
        if args.data is None:
            ap.error("--splits names splits of --data: give --data too")
        splits = tuple(x.strip() for x in args.splits.split(",") if x.strip())
        missing = [x for x in splits if not (Path(args.data) / x).is_dir()]
        if not splits or missing:
            ap.error(f"--splits: no split folder {', '.join(missing) or '(none named)'} in {args.data}")
    judge = IconJudge.from_pretrained(args.judge)
    image_vae = None
    if args.image_vae is not None:
        from cola_mm.vae_image.model import ImageVAE

        image_vae = ImageVAE.from_pretrained(args.image_vae)  # an image VAE folder, or a pipeline's image_vae/
    report = evaluate_judge(judge, n=args.n, data=args.data, image_vae=image_vae, splits=splits)
    print(json.dumps(report, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
