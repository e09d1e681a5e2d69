"""Probe: a GenEval-style judge of generated 64×64 images that can say "wrong" (issue 17).

GenEval (Ghosh et al., 2023) grades text-to-image models by running an object detector on the
generated images and checking the prompt's attributes. Hub weights are unreachable here, so the
judge is a small timm CNN trained from scratch on fresh renders of the shapes specification
(:mod:`cola_mm.data.shapes`), as a *per-cell detector*: for each of the 9 grid cells it says
whether an object is centred there and, if so, its shape, colour and size; a count head says how
many objects the image holds (0, 1, 2, or 3 and more)::

    image (b, 3, H, W) in [-1, 1] ─timm CNN─▶ features (b, c, h, w)
        ─adaptive avg pool─▶ (b, c, g, g) ─flatten─▶ (b, c·g·g) ─▶ kind (2) | count (4)
                                                               └─▶ 9 cells × (occupied 2 | shape 4 | colour 7 | size 2)

``predict`` → ``{"kind": "shapes"|"digits", "count": int (3 = 3 or more),
"objects": [{"cell", "shape", "color", "size"}, ...] (the occupied cells, in cell order),
"digit": int | None}``. The ``digit`` does *not* come from this CNN: for images read as digits
it is filled by :class:`cola_mm.evaluation.digit_judge.DigitJudge`, an sklearn SVC the project's
judge did not train (issue 17). :func:`cola_mm.data.shapes.judge_image` grades a prediction:
count and every attribute (size included) must be right.

Training data (:class:`ProbeBatches`): canvases with 0, 1, 2 or 3 objects (weights
:data:`COUNT_WEIGHTS`) drawn by :func:`probe_scene` with every colour–shape pair (the
:data:`~cola_mm.data.shapes.NOVEL_PAIRS` included, so ``novel`` can be judged), any size and
cell, objects in distinct cells and at least ``MIN_GAP_PX`` apart as in the ``two`` split; plus
``digits/train`` scans for the ``kind`` head. Light augmentation (blur, noise, colour offset,
shift ≤ 2 px; small rotations and zooms of digits) because generated images are slightly blurry
VAE decodes. The renders have their own RNG namespace (:data:`TRAIN_NAMESPACE`, sample ``i`` is a
pure function of ``(seed, i)``), disjoint from every ``shapes/{seed}/{split}/{index}`` stream;
``tests/test_probe.py`` hashes the first training renders against the built eval splits (0 shared).

:func:`evaluate_probe` (written to ``report.json`` by :func:`train_probe`) measures the judge:
held-out ``shapes/test``, ``novel`` and ``two`` shards graded by ``judge_image``; the test renders
blurred and noised (:data:`BLUR_SIGMAS`, :data:`NOISE_STDS`); empty, two- and three-object
canvases from a separate namespace (:data:`EVAL_NAMESPACE`); the digit classifier on ``digits/test``.

Legend: ``b`` batch, ``c`` feature channels, ``h, w`` feature map, ``g`` pool grid.

    cola-mm probe train --data datasets --out runs/probe
    probe = Probe.from_pretrained("runs/probe")
    pred = probe.predict([image])[0]
    judge_image(pred, sample_json)["all"]          # cola_mm.data.shapes / cola_mm.data.digits
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import timm
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from tqdm import tqdm

from cola_mm.core.components import PretrainedMixin
from cola_mm.core.config import Config, check
from cola_mm.core.images import random_warp
from cola_mm.data.loader import ShardDataset
from cola_mm.data.shapes import (CELLS, COLORS, MIN_GAP_PX, SHAPES, SIZES, _make_object, _separated,
                                 judge_image, render_scene)
from cola_mm.data.shards import DataError
from cola_mm.evaluation.digit_judge import DigitJudge

PathLike = str | os.PathLike
KINDS = ("shapes", "digits")
MAX_COUNT = 3  # the count head's last class means "3 or more"
HEAD_ORDER = ("kind", "count", "occupied", "shape", "color", "size")  # logits dict order
CELL_HEADS = ("occupied", "shape", "color", "size")  # per-cell heads, (b, 9, classes) each
REPORT_NAME = "report.json"
IGNORE = -100  # target of a head that does not apply to a sample (cross_entropy ignore_index)
PREDICT_BATCH = 256
COUNT_WEIGHTS = (0.1, 0.35, 0.35, 0.2)  # share of training canvases with 0, 1, 2, 3 objects
TRAIN_NAMESPACE = "probe-train"  # training canvas i: random.Random(f"probe-train/{seed}/{i}")
EVAL_NAMESPACE = "probe-eval"  # evaluate_probe's synthetic canvases
BLUR_SIGMAS = (1.0, 2.0)  # px, gaussian blur of the test renders in evaluate_probe
NOISE_STDS = (0.05, 0.1)  # additive gaussian noise on images in [-1, 1] (0.05 ≈ 6/255)
MAX_PLACEMENT_TRIES = 200


def num_targets(config: "ProbeConfig") -> int:
    """Target columns: kind, count, then per cell (occupied, shape, color, size)."""
    return 2 + len(config.cells) * len(CELL_HEADS)


# --- configs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProbeConfig(Config):
    arch: str = "resnet10t"  # timm CNN, built with pretrained=False (no hub weights)
    image_size: int = 64  # input side; other sizes are resized to it
    pool_grid: int = 2  # final feature map pooled to g×g and flattened (keeps position)
    dropout: float = 0.0  # before the heads
    shapes: tuple[str, ...] = SHAPES  # class names of each head, so a saved probe is self-describing
    colors: tuple[str, ...] = tuple(COLORS)
    cells: tuple[str, ...] = CELLS
    sizes: tuple[str, ...] = tuple(SIZES)

    def __post_init__(self):
        check(timm.is_model(self.arch), f"arch {self.arch!r} is not a timm model (see timm.list_models())")
        check(self.image_size >= 16, f"image_size must be >= 16, got {self.image_size}")
        check(self.pool_grid >= 1, f"pool_grid must be >= 1, got {self.pool_grid}")
        check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        for name in ("shapes", "colors", "cells", "sizes"):
            names = getattr(self, name)
            check(len(names) >= 1 and len(set(names)) == len(names),
                  f"{name} must be a non-empty list of distinct names, got {list(names)}")
        check(set(self.cells) <= set(CELLS), f"cells must be grid cells of cola_mm.data.shapes, got {list(self.cells)}")

    def classes(self) -> dict[str, tuple]:
        """Class labels of every head, in logit order (per-cell heads: per cell)."""
        return {"kind": KINDS, "count": tuple(range(MAX_COUNT + 1)), "occupied": (False, True),
                "shape": self.shapes, "color": self.colors, "size": self.sizes}

    def pairs(self) -> tuple[tuple[str, str], ...]:
        """Every colour–shape pair the probe is trained on (novel pairs included)."""
        return tuple((c, s) for c in self.colors for s in self.shapes)


@dataclass(frozen=True)
class AugmentConfig(Config):
    """Training-time augmentation, each drawn per sample (generated images are not exact renders)."""
    blur_sigma: float = 1.5  # gaussian blur σ ~ U(0, blur_sigma) px, on half the samples
    noise_std: float = 0.06  # additive gaussian noise σ ~ U(0, noise_std) (images in [-1, 1])
    color_offset: float = 0.04  # per-channel offset ~ U(±color_offset) (0.04 ≈ 5/255)
    shift_px: int = 2  # translation ~ U{-shift_px..shift_px}, edges replicated (< cell margins)
    warp_degrees: float = 10.0  # digits only: rotation ~ U(±warp_degrees)
    warp_scale: float = 0.1  # digits only: zoom ~ U(1 ± warp_scale)

    def __post_init__(self):
        check(min(self.blur_sigma, self.noise_std, self.color_offset, self.warp_degrees) >= 0,
              "blur_sigma, noise_std, color_offset and warp_degrees must be >= 0")
        check(0 <= self.warp_scale < 0.5, f"warp_scale must be in [0, 0.5), got {self.warp_scale}")
        check(0 <= self.shift_px <= 4, f"shift_px must be in 0..4 (cells stay right), got {self.shift_px}")


# --- the model -------------------------------------------------------------------------------

class Probe(PretrainedMixin, nn.Module):
    KIND = "Probe"
    CONFIG_CLASS = ProbeConfig

    def __init__(self, config: ProbeConfig):
        super().__init__()
        self.config = config
        self.backbone = timm.create_model(config.arch, pretrained=False, num_classes=0, in_chans=3)
        self.pool = nn.AdaptiveAvgPool2d(config.pool_grid)
        self.dropout = nn.Dropout(config.dropout)
        width = self.backbone.num_features * config.pool_grid ** 2
        classes = config.classes()
        self.heads = nn.ModuleDict({name: nn.Linear(width, len(classes[name])) for name in ("kind", "count")})
        self.per_cell = [len(classes[name]) for name in CELL_HEADS]
        self.cell_head = nn.Linear(width, len(config.cells) * sum(self.per_cell))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """x (b, 3, H, W) in [-1, 1] → logits: kind (b, 2), count (b, 4), and per cell
        occupied (b, 9, 2), shape (b, 9, S), color (b, 9, C), size (b, 9, Z)."""
        feats = self.backbone.forward_features(x)  # (b, c, h, w)
        if feats.ndim != 4:
            raise ValueError(f"probe arch {self.config.arch!r} must be a CNN with a (b, c, h, w) "
                             f"feature map, got shape {tuple(feats.shape)}")
        h = self.dropout(self.pool(feats).flatten(1))  # (b, c·g·g)
        out = {name: head(h) for name, head in self.heads.items()}
        cells = self.cell_head(h).reshape(x.shape[0], len(self.config.cells), sum(self.per_cell))
        out.update(zip(CELL_HEADS, cells.split(self.per_cell, dim=-1)))
        return out

    def read(self, logits: dict[str, torch.Tensor]) -> list[dict]:
        """Logits → predictions (without the digit): kind, count, objects."""
        classes = self.config.classes()
        best = {name: v.argmax(-1).tolist() for name, v in logits.items()}
        out = []
        for i in range(len(best["kind"])):
            objects = [{"cell": cell, **{name: classes[name][best[name][i][j]] for name in ("shape", "color", "size")}}
                       for j, cell in enumerate(self.config.cells) if best["occupied"][i][j] == 1]
            out.append({"kind": KINDS[best["kind"][i]], "count": best["count"][i], "objects": objects,
                        "digit": None})
        return out

    @torch.no_grad()
    def predict(self, images: Sequence[Image.Image], digit_judge: DigitJudge | None = None) -> list[dict]:
        """Read every image: ``{"kind", "count", "objects": [{cell, shape, color, size}], "digit"}``.

        ``digit`` is None unless the image is read as a digit; then it is the label given by
        ``digit_judge`` (default :meth:`DigitJudge.shared`, fitted on first use). Runs in eval
        mode (the module's mode is restored afterwards), in batches.
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        out: list[dict] = []
        try:
            for start in range(0, len(images), PREDICT_BATCH):
                chunk = images[start:start + PREDICT_BATCH]
                x = images_to_tensor(chunk, self.config.image_size)
                preds = self.read(self(x.to(device)))
                digit_rows = [i for i, p in enumerate(preds) if p["kind"] == "digits"]
                if digit_rows:
                    judge = digit_judge or DigitJudge.shared()
                    for i, digit in zip(digit_rows, judge.predict([chunk[i] for i in digit_rows])):
                        preds[i]["digit"] = digit
                out.extend(preds)
        finally:
            self.train(was_training)
        return out


def image_to_uint8(image: Image.Image, size: int = 64) -> torch.Tensor:
    """A PIL image → uint8 (3, size, size), converted to RGB and resized (bicubic) if needed."""
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BICUBIC)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def image_to_tensor(image: Image.Image, size: int = 64) -> torch.Tensor:
    """A PIL image → float (3, size, size) in [-1, 1] (converted to RGB, resized if needed)."""
    return image_to_uint8(image, size).float() / 127.5 - 1.0


def images_to_tensor(images: Iterable[Image.Image], size: int = 64) -> torch.Tensor:
    """PIL images → (b, 3, size, size) in [-1, 1]."""
    return torch.stack([image_to_tensor(im, size) for im in images])


# --- data ------------------------------------------------------------------------------------

def _split_dir(data_root: PathLike, dataset: str, split: str) -> Path:
    return Path(data_root).expanduser() / dataset / split


def _read_split(folder: Path, limit: int | None, keep=lambda meta: True) -> list[tuple[Image.Image, dict]]:
    """(image, json) of the samples of a shard folder that pass ``keep``, at most ``limit``."""
    found = []
    for sample in ShardDataset(folder, required=("image", "json"), epochs=1):
        if keep(sample["json"]):
            found.append((sample["image"], sample["json"]))
            if limit is not None and len(found) >= limit:
                break
    return found


def place_objects(rng: random.Random, n: int, size: int = 64,
                  pairs: Sequence[tuple[str, str]] | None = None,
                  sizes: Sequence[str] = tuple(SIZES), cells: Sequence[str] = CELLS) -> dict:
    """A scene of ``n`` objects (0..9) in distinct ``cells``, each with a random colour–shape pair of
    ``pairs`` (default every pair) and size, bboxes at least ``MIN_GAP_PX`` apart (as in the
    ``two`` split). Built on :func:`cola_mm.data.shapes._make_object`; render it with ``render_scene``."""
    pairs = pairs or tuple((c, s) for c in COLORS for s in SHAPES)
    for _ in range(MAX_PLACEMENT_TRIES):
        chosen = rng.sample(tuple(cells), n)
        objects = [_make_object(rng, rng.choice(pairs), rng.choice(tuple(sizes)), cell, size) for cell in chosen]
        if all(_separated(a["bbox"], b["bbox"], MIN_GAP_PX) for i, a in enumerate(objects) for b in objects[i + 1:]):
            return {"objects": objects, "relation": None}
    raise RuntimeError(f"could not place {n} objects apart on a {size}px canvas")


def probe_scene(seed: int, index: int, size: int = 64, config: "ProbeConfig | None" = None) -> dict:
    """Training canvas number ``index``: 0–3 objects (:data:`COUNT_WEIGHTS`), a pure function of
    ``(seed, index)`` in the :data:`TRAIN_NAMESPACE` RNG namespace."""
    config = config or ProbeConfig()
    rng = random.Random(f"{TRAIN_NAMESPACE}/{seed}/{index}")
    n = rng.choices(range(len(COUNT_WEIGHTS)), weights=COUNT_WEIGHTS)[0]
    return place_objects(rng, n, size, config.pairs(), config.sizes, config.cells)


def random_scene(rng: random.Random, size: int = 64, n: int = 1) -> dict:
    """A scene of ``n`` objects with every colour–shape pair possible (novel ones included)."""
    return place_objects(rng, n, size)


def scene_targets(scene: dict, config: ProbeConfig) -> list[int]:
    """Target row of a shapes canvas: kind, count (capped at 3), then per cell occupied, shape,
    color, size (IGNORE for the attributes of an empty cell)."""
    by_cell = {obj["cell"]: obj for obj in scene["objects"]}
    row = [KINDS.index("shapes"), min(len(scene["objects"]), MAX_COUNT)]
    for cell in config.cells:
        obj = by_cell.get(cell)
        if obj is None:
            row += [0, IGNORE, IGNORE, IGNORE]
        else:
            row += [1, config.shapes.index(obj["shape"]), config.colors.index(obj["color"]),
                    config.sizes.index(obj["size"])]
    return row


def _digit_targets(config: ProbeConfig) -> list[int]:
    return [KINDS.index("digits")] + [IGNORE] * (num_targets(config) - 1)


class ProbeBatches:
    """Endless training batches: fresh canvases (:func:`probe_scene`, indices 0, 1, 2, … in order)
    plus digits drawn from the train shards (for ``kind``).

    ``next()`` → (x (b, 3, S, S) uint8, targets (b, 2 + 9·4) long, see :func:`scene_targets`).
    """

    def __init__(self, data_root: PathLike, config: ProbeConfig, batch_size: int,
                 digits_fraction: float, seed: int):
        self.config = config
        self.batch_size = batch_size
        self.seed = seed
        self.index = 0  # next training canvas
        self.rng = random.Random(f"{TRAIN_NAMESPACE}-digits/{seed}")
        digits = _read_split(_split_dir(data_root, "digits", "train"), None)
        if not digits:
            raise DataError(f"no digits in {_split_dir(data_root, 'digits', 'train')}")
        self.digit_x = torch.stack([image_to_uint8(im, config.image_size) for im, _ in digits])  # (n, 3, S, S)
        self.digit_y = torch.tensor([_digit_targets(config)] * len(digits), dtype=torch.long)
        self.n_digits = round(batch_size * digits_fraction)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        n_shapes = self.batch_size - self.n_digits
        size = self.config.image_size
        scenes = [probe_scene(self.seed, self.index + i, size, self.config) for i in range(n_shapes)]
        self.index += n_shapes
        shape_x = [image_to_uint8(render_scene(s, size), size) for s in scenes]
        shape_y = [scene_targets(s, self.config) for s in scenes]
        pick = torch.tensor([self.rng.randrange(len(self.digit_x)) for _ in range(self.n_digits)],
                            dtype=torch.long)
        x = torch.cat([torch.stack(shape_x), self.digit_x[pick]]) if shape_x else self.digit_x[pick]
        y = torch.cat([torch.tensor(shape_y, dtype=torch.long).reshape(-1, num_targets(self.config)),
                       self.digit_y[pick]])
        return x, y

    def __iter__(self):
        return self


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of x (b, 3, H, W) with its own σ (b,), separable, edges replicated."""
    radius = max(1, math.ceil(3 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype)
    kernel = torch.exp(-0.5 * (offsets[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)  # (b, k)
    kernel = kernel / kernel.sum(-1, keepdim=True)
    b, c, h, w = x.shape
    y = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    k = kernel.repeat_interleave(c, 0)  # (b·c, k)
    y = F.conv2d(y, k[:, None, None, :], groups=b * c)  # along width
    y = F.conv2d(y, k[:, None, :, None], groups=b * c)  # along height
    return y.reshape(b, c, h, w)


def augment(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
            warp: torch.Tensor | None = None) -> torch.Tensor:
    """Light per-sample augmentation of x (b, 3, H, W) in [-1, 1]; returns a new tensor.

    ``warp`` (b,) bool marks the images that may also be rotated and zoomed (digits: their
    labels do not depend on geometry, unlike a shape's cell and size).
    """
    b, _, h, w = x.shape
    if warp is not None and bool(warp.any()) and (cfg.warp_degrees > 0 or cfg.warp_scale > 0):
        x = torch.where(warp[:, None, None, None], random_warp(x, cfg.warp_degrees, cfg.warp_scale, gen), x)
    if cfg.shift_px > 0:
        s = cfg.shift_px
        padded = F.pad(x, (s, s, s, s), mode="replicate")
        dx, dy = torch.randint(0, 2 * s + 1, (2, b), generator=gen).tolist()
        x = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    if cfg.blur_sigma > 0:
        sigma = torch.rand(b, generator=gen) * cfg.blur_sigma
        sigma = torch.where(torch.rand(b, generator=gen) < 0.5, sigma, torch.zeros_like(sigma))
        if float(sigma.max()) > 0.05:
            blurred = _gaussian_blur(x, sigma.clamp_min(0.05))
            x = torch.where((sigma > 0.05)[:, None, None, None], blurred, x)
    if cfg.color_offset > 0:
        x = x + (torch.rand(b, 3, 1, 1, generator=gen) * 2 - 1) * cfg.color_offset
    if cfg.noise_std > 0:
        std = torch.rand(b, 1, 1, 1, generator=gen) * cfg.noise_std
        x = x + std * torch.randn(x.shape, generator=gen)
    return x.clamp(-1.0, 1.0)


# --- training and evaluation -----------------------------------------------------------------

def probe_loss(probe: Probe, x: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Sum over heads of the cross-entropy on the samples (and cells) the head applies to;
    x (b, 3, H, W), targets (b, 2 + 9·4) (:func:`scene_targets`), :data:`IGNORE` where a head
    does not apply. Per-cell heads: mean over the cells they apply to."""
    logits = probe(x)
    n_cells = len(probe.config.cells)
    columns = {"kind": targets[:, 0], "count": targets[:, 1]}
    cells = targets[:, 2:].reshape(-1, n_cells, len(CELL_HEADS))  # (b, 9, 4)
    columns.update({name: cells[..., i] for i, name in enumerate(CELL_HEADS)})
    total, logs = x.new_zeros(()), {}
    for name in HEAD_ORDER:
        t = columns[name].reshape(-1)
        if (t != IGNORE).any():
            z = logits[name]
            loss = F.cross_entropy(z.reshape(-1, z.shape[-1]), t, ignore_index=IGNORE)
            total = total + loss
            logs[name] = loss.item()
    return total, logs


def train_probe(data_root: PathLike, out: PathLike, steps: int = 1500, batch_size: int = 64,
                seed: int = 0, progress: bool = True, config: ProbeConfig | None = None,
                lr: float = 2e-3, digits_fraction: float = 0.15,
                augmentation: AugmentConfig | None = None, eval_limit: int | None = None,
                evaluate: bool = True, eval_canvases_count: int = 300) -> Path:
    """Train a probe on fresh 0–3-object canvases and ``data_root/digits/train``, save it to
    ``out`` (``config.json`` + ``model.safetensors``) and write ``out/report.json`` with the
    held-out accuracies of :func:`evaluate_probe` (at most ``eval_limit`` samples per split;
    ``eval_canvases_count`` empty/two/three-object canvases each; ``evaluate=False``: training
    figures only).

    AdamW with a one-cycle schedule (warmup, cosine decay); runs on the CPU. Returns ``out``.
    """
    config = config or ProbeConfig()
    augmentation = augmentation or AugmentConfig()
    if steps < 1 or batch_size < 2:
        raise ValueError(f"steps must be >= 1 and batch_size >= 2, got {steps}, {batch_size}")
    if not 0.0 <= digits_fraction < 1.0:
        raise ValueError(f"digits_fraction must be in [0, 1), got {digits_fraction}")
    out = Path(out)
    torch.manual_seed(seed)
    probe = Probe(config)
    batches = ProbeBatches(data_root, config, batch_size, digits_fraction, seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    start = time.time()
    probe.train()
    bar = tqdm(range(steps), desc="train probe", unit="step", disable=not progress)
    first_loss = last_loss = None
    for step in bar:
        x, y = next(batches)
        is_digit = y[:, 0] == KINDS.index("digits")
        x = augment(x.float() / 127.5 - 1.0, augmentation, gen, warp=is_digit)
        loss, logs = probe_loss(probe, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        last_loss = loss.item()
        first_loss = last_loss if first_loss is None else first_loss
        if step % 10 == 0:
            bar.set_postfix(loss=f"{last_loss:.3f}", **{k: f"{v:.2f}" for k, v in logs.items()})
    train_seconds = time.time() - start
    probe.eval()
    probe.save_pretrained(out)  # replaces the folder: the report is written after it
    eval_start = time.time()
    metrics = evaluate_probe(probe, data_root, limit=eval_limit, canvases=eval_canvases_count) if evaluate else {}
    report = {"metrics": metrics, "train_seconds": round(train_seconds, 1),
              "eval_seconds": round(time.time() - eval_start, 1), "steps": steps,
              "batch_size": batch_size, "seed": seed, "lr": lr, "digits_fraction": digits_fraction,
              "training_canvases": batches.index, "count_weights": list(COUNT_WEIGHTS),
              "first_loss": first_loss, "last_loss": last_loss, "threads": torch.get_num_threads(),
              "blur_sigmas_px": list(BLUR_SIGMAS), "noise_stds": list(NOISE_STDS),
              "config": config.to_dict(), "augmentation": augmentation.to_dict()}
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return out


def _mean(flags: list[bool]) -> float:
    return sum(flags) / len(flags) if flags else float("nan")


def perturb(images: Sequence[Image.Image], blur_sigma: float = 0.0, noise_std: float = 0.0,
            seed: int = 0, size: int = 64) -> list[Image.Image]:
    """Blur (gaussian, σ px) and/or add gaussian noise (σ on the [-1, 1] scale) to images."""
    if not len(images):
        return []
    x = torch.stack([image_to_uint8(im, size) for im in images]).float() / 127.5 - 1.0
    if blur_sigma > 0:
        x = _gaussian_blur(x, torch.full((len(x),), float(blur_sigma)))
    if noise_std > 0:
        x = x + noise_std * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return [Image.fromarray(v.permute(1, 2, 0).numpy()) for v in x]


def _object_key(obj: dict) -> tuple:
    return (obj["cell"], obj["shape"], obj["color"], obj["size"])


def eval_canvases(n_objects: int, count: int, size: int = 64, config: ProbeConfig | None = None) -> list[dict]:
    """``count`` canvases of ``n_objects`` objects from the :data:`EVAL_NAMESPACE` RNG namespace."""
    config = config or ProbeConfig()
    return [place_objects(random.Random(f"{EVAL_NAMESPACE}/{n_objects}/{i}"), n_objects, size, config.pairs(),
                          config.sizes, config.cells) for i in range(count)]


def _grade_canvases(probe: Probe, scenes: list[dict]) -> dict[str, float]:
    """count right, and all = count right and exactly the scene's objects (cell, shape, colour, size)."""
    size = probe.config.image_size
    preds = probe.predict([render_scene(s, size) for s in scenes])
    count = [p["count"] == min(len(s["objects"]), MAX_COUNT) for p, s in zip(preds, scenes)]
    exact = [c and sorted(map(_object_key, p["objects"])) == sorted(map(_object_key, s["objects"]))
             for c, p, s in zip(count, preds, scenes)]
    return {"count": _mean(count), "all": _mean(exact), "n": len(scenes)}


def evaluate_probe(probe: Probe | PathLike, data_root: PathLike, limit: int | None = None,
                   perturbed_limit: int = 500, canvases: int = 300) -> dict[str, float]:
    """The judge's own accuracy, on images it never trained on (a Probe or its folder):

    - ``shapes_{test,novel,two}_*``: the held-out shards under ``data_root`` graded by
      :func:`cola_mm.data.shapes.judge_image` against their json: ``all`` (count and every
      attribute right; two: objects matched and relation), each verdict, ``kind``, ``n``;
    - ``shapes_test_blur{σ}_*`` / ``shapes_test_noise{σ}_*``: the first ``perturbed_limit`` test
      renders blurred (σ px, :data:`BLUR_SIGMAS`) or noised (σ on [-1, 1], :data:`NOISE_STDS`);
    - ``canvas{0,2,3}_{count,all}``: ``canvases`` empty, two- and three-object canvases with every
      colour–shape pair (:data:`EVAL_NAMESPACE`): count right, and exactly the objects right;
    - ``digits_test_classifier``: :class:`~cola_mm.evaluation.digit_judge.DigitJudge` alone on
      ``digits/test``; ``digits_test_kind``: read as digits; ``digits_test_all``: both (what
      ``digits.judge_image`` sees).

    ``limit`` caps the samples per split. Splits missing under ``data_root`` are left out;
    raises :class:`DataError` when none is there.
    """
    from cola_mm.data.digits import judge_image as judge_digit_image
    from cola_mm.evaluation.digit_judge import evaluate_digit_judge

    if not isinstance(probe, Probe):
        probe = Probe.from_pretrained(probe)
    metrics: dict[str, float] = {}

    def grade(prefix: str, images: list, metas: list) -> None:
        preds = probe.predict(images)
        grades = [judge_image(p, meta) for p, meta in zip(preds, metas)]
        for key in grades[0]:
            metrics[f"{prefix}_{key}"] = _mean([g[key] for g in grades])
        metrics[f"{prefix}_kind"] = _mean([p["kind"] == "shapes" for p in preds])
        metrics[f"{prefix}_n"] = len(images)

    for split in ("test", "novel", "two"):
        folder = _split_dir(data_root, "shapes", split)
        if not folder.is_dir():
            continue
        samples = _read_split(folder, limit)
        if not samples:
            continue
        images, metas = [im for im, _ in samples], [meta for _, meta in samples]
        grade(f"shapes_{split}", images, metas)
        if split == "test":
            few, few_metas = images[:perturbed_limit], metas[:perturbed_limit]
            for sigma in BLUR_SIGMAS:
                grade(f"shapes_test_blur{sigma:g}", perturb(few, blur_sigma=sigma), few_metas)
            for std in NOISE_STDS:
                grade(f"shapes_test_noise{std:g}", perturb(few, noise_std=std, seed=1), few_metas)
    if metrics and canvases:
        for n in (0, 2, 3):
            for key, value in _grade_canvases(probe, eval_canvases(n, canvases, probe.config.image_size,
                                                                   probe.config)).items():
                metrics[f"canvas{n}_{key}"] = value
    folder = _split_dir(data_root, "digits", "test")
    if folder.is_dir():
        samples = _read_split(folder, limit)
        images = [im for im, _ in samples]
        preds = probe.predict(images)
        metrics["digits_test_classifier"] = evaluate_digit_judge(images, [m["label"] for _, m in samples])
        metrics["digits_test_kind"] = _mean([p["kind"] == "digits" for p in preds])
        metrics["digits_test_all"] = _mean([judge_digit_image(p, m)["all"] for p, (_, m) in zip(preds, samples)])
        metrics["digits_test_n"] = len(samples)
    if not metrics:
        raise DataError(f"no shapes/test, shapes/novel, shapes/two or digits/test shards under {data_root}")
    return metrics
