"""CLIP judge: retrieval accuracy and CLIPScore with ``open_clip_torch`` (issue 17).

Two kinds of CLIP score the same way (``encode_images`` / ``encode_texts`` give unit vectors):

- :class:`SmallClip`, the project's own: ``open_clip.model.CLIP`` built from a
  :class:`ClipConfig` (a small ViT on 64 px images, a small causal text transformer, open_clip's
  own BPE tokenizer, which ships inside the package and works offline) and trained from scratch
  with open_clip's contrastive ``ClipLoss`` on the TRAIN splits of every image dataset of
  :func:`cola_mm.data.registry.datasets`. No pretrained weights: the hubs are unreachable.
- :class:`OpenClip`, a user's own pretrained open_clip model loaded from a LOCAL checkpoint file
  by :func:`load_open_clip` (``open_clip.create_model_and_transforms(arch, pretrained=<file>)``).

Scores::

    retrieval_accuracy(model, samples)   # image→text and text→image top-1/top-5, with chance
    clip_score(model, images, prompts)   # CLIPScore = mean of 2.5 · max(cos(E_image, E_text), 0)

CLIPScore is Hessel et al. (2021), "CLIPScore: A Reference-free Evaluation Metric for Image
Captioning", w = 2.5 (torchmetrics reports 100 · max(cos, 0) instead). A score is only as good as
its CLIP: :func:`train_clip` writes ``report.json`` with the held-out retrieval accuracies, so a
reader can see how far to trust it.

Retrieval is measured on each held-out set on its own (the captions of that set are the
candidates), two ways:

- ``pair``: the retrieved item is the sample's own partner (chance k/N);
- ``content``: the retrieved item has the same content as the query: the same canonical caption
  (:func:`cola_mm.data.captions.canonical_caption`, e.g. ``a handwritten 6``), so any of the
  twenty ``digits/test`` images of a 6 counts for "the number six written by hand". Its chance
  level is computed exactly from how many items share each content (see :func:`_chance`).

Train and evaluate::

    python -m cola_mm.evaluation.clip train --data datasets --out runs/clip --config configs/clip_small.yaml
    python -m cola_mm.evaluation.clip eval --model runs/clip --data datasets
    python -m cola_mm.evaluation.clip eval --arch ViT-B-32 --checkpoint ~/clip/open_clip_pytorch_model.bin

    model = SmallClip.from_pretrained("runs/clip")               # or load_open_clip(arch, file)
    clip_score(model, images, prompts)                            # float
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pickle
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
from PIL import Image
from safetensors import SafetensorError
from torch import nn
from tqdm import tqdm

from cola_mm.core.components import CheckpointError, PretrainedMixin
from cola_mm.core.config import Config, ConfigError, check, load_yaml
from cola_mm.core.images import fit_square, to_rgb
from cola_mm.data import registry
from cola_mm.data.captions import canonical_caption
from cola_mm.data.loader import ShardDataset
from cola_mm.data.shards import DataError
from cola_mm.evaluation.images import read_samples

PathLike = str | os.PathLike
REPORT_NAME = "report.json"
CLIP_SCORE_WEIGHT = 2.5  # Hessel et al. 2021
ENCODE_BATCH = 256
OPEN_CLIP_VOCAB = 49408  # open_clip's SimpleTokenizer: 49152 BPE tokens + <start_of_text>, <end_of_text>, ...
# every image dataset's held-out text → image splits (shapes, digits, icons); those not built are skipped
EVAL_SPLITS = registry.image_eval_splits("text_to_image")
TRAIN_DATASETS = ("shapes", "digits")  # the default; configs/clip_icons.yaml adds icons


# --- configs ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class ClipConfig(Config):
    """The small CLIP: open_clip's ``CLIP`` with a ViT image tower and a causal text tower."""
    embed_dim: int = 128  # the joint embedding
    image_size: int = 64
    patch_size: int = 16  # 64 px → 4×4 patches (8 px patches: 2.3× slower per step on CPU)
    vision_width: int = 128
    vision_layers: int = 4
    vision_head_width: int = 32
    context_length: int = 24  # the longest bundled caption is 21 tokens with <start>/<end>
    text_width: int = 128
    text_layers: int = 3
    text_heads: int = 4
    vocab_size: int = OPEN_CLIP_VOCAB  # open_clip's own BPE tokenizer (offline, in the package)

    def __post_init__(self):
        for name in ("embed_dim", "vision_width", "vision_layers", "vision_head_width", "text_width",
                     "text_layers", "text_heads"):
            check(getattr(self, name) >= 1, f"{name} must be >= 1, got {getattr(self, name)}")
        check(self.image_size >= 16, f"image_size must be >= 16, got {self.image_size}")
        check(self.patch_size >= 1 and self.image_size % self.patch_size == 0,
              f"patch_size must divide image_size ({self.image_size}), got {self.patch_size}")
        check(self.vision_width % self.vision_head_width == 0,
              f"vision_width ({self.vision_width}) must be a multiple of vision_head_width ({self.vision_head_width})")
        check(self.text_width % self.text_heads == 0,
              f"text_width ({self.text_width}) must be a multiple of text_heads ({self.text_heads})")
        check(self.context_length >= 4, f"context_length must be >= 4, got {self.context_length}")
        check(self.vocab_size == OPEN_CLIP_VOCAB,
              f"vocab_size must be {OPEN_CLIP_VOCAB} (open_clip's SimpleTokenizer), got {self.vocab_size}")

    def vision_cfg(self) -> CLIPVisionCfg:
        return CLIPVisionCfg(layers=self.vision_layers, width=self.vision_width, head_width=self.vision_head_width,
                             patch_size=self.patch_size, image_size=self.image_size)

    def text_cfg(self) -> CLIPTextCfg:
        return CLIPTextCfg(context_length=self.context_length, vocab_size=self.vocab_size, width=self.text_width,
                           heads=self.text_heads, layers=self.text_layers)


@dataclass(frozen=True)
class ClipTrainConfig(Config):
    """How :func:`train_clip` trains (``configs/clip_small.yaml`` holds these defaults)."""
    model: ClipConfig = ClipConfig()
    steps: int = 800
    batch_size: int = 128  # contrastive batch: every other caption of the batch is a negative
    lr: float = 1e-3  # AdamW peak, one-cycle (linear warmup, cosine decay)
    warmup_fraction: float = 0.1
    weight_decay: float = 0.1  # not on gains, biases, position/class embeddings or the logit scale
    seed: int = 0
    datasets: tuple[str, ...] = TRAIN_DATASETS  # image datasets whose train splits it learns from
    mix: str = "equal"  # batch share per image dataset: "equal" or "size" (proportional to its train split)
    eval_splits: tuple[str, ...] = EVAL_SPLITS  # <dataset>/<split> under the data root; missing ones skipped
    eval_limit: int = 200  # samples per held-out set

    def __post_init__(self):
        check(self.steps >= 1, f"steps must be >= 1, got {self.steps}")
        check(self.batch_size >= 2, f"batch_size must be >= 2, got {self.batch_size}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(0 < self.warmup_fraction < 1, f"warmup_fraction must be in (0, 1), got {self.warmup_fraction}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(self.mix in ("equal", "size"), f"mix must be 'equal' or 'size', got {self.mix!r}")
        with_images = [name for name, d in registry.datasets().items() if d.has_images]
        check(len(self.datasets) >= 1 and len(set(self.datasets)) == len(self.datasets)
              and set(self.datasets) <= set(with_images),
              f"datasets must name distinct image datasets ({', '.join(with_images)}), got {list(self.datasets)}")
        check(self.eval_limit >= 2, f"eval_limit must be >= 2, got {self.eval_limit}")


def load_train_config(config: ClipTrainConfig | PathLike | None) -> ClipTrainConfig:
    """A :class:`ClipTrainConfig` from itself, a YAML file, or the defaults (None)."""
    if config is None:
        return ClipTrainConfig()
    if isinstance(config, ClipTrainConfig):
        return config
    return ClipTrainConfig.from_dict(load_yaml(config), where=str(config))


# --- the models ------------------------------------------------------------------------------

def _unit(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


class ClipEncoder:
    """What the scores need: ``encode_images(list of PIL) → (n, d)`` and ``encode_texts(list of
    str) → (n, d)``, both L2-normalised, in eval mode (restored after), without gradients, batched."""

    def _image_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        raise NotImplementedError

    def _tokens(self, texts: Sequence[str]) -> torch.Tensor:
        raise NotImplementedError

    def _clip(self) -> nn.Module:
        raise NotImplementedError

    @torch.no_grad()
    def _encode(self, items: Sequence, batch, encode) -> torch.Tensor:
        clip = self._clip()
        device = next(clip.parameters()).device
        was = clip.training
        clip.eval()
        try:
            out = [encode(clip, batch(items[i:i + ENCODE_BATCH]).to(device))
                   for i in range(0, len(items), ENCODE_BATCH)]
        finally:
            clip.train(was)
        if not out:
            raise ValueError("nothing to encode")
        return _unit(torch.cat(out)).cpu()

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self._encode(list(images), self._image_batch, lambda clip, x: clip.encode_image(x))

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self._encode(list(texts), self._tokens, lambda clip, t: clip.encode_text(t))


def image_to_uint8(image: Image.Image, size: int) -> torch.Tensor:
    """A PIL image (any mode) → uint8 (3, size, size): RGB, centre square resized to ``size``."""
    pixels = np.asarray(fit_square(to_rgb(image), size), dtype=np.uint8)
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)


class SmallClip(ClipEncoder, PretrainedMixin, nn.Module):
    """The project's small CLIP (``open_clip.model.CLIP``), saved as config.json + model.safetensors.

    Images go in as [-1, 1] (``x / 127.5 - 1``) at ``config.image_size``; texts through open_clip's
    SimpleTokenizer, truncated to ``config.context_length`` tokens.
    """

    KIND = "SmallClip"
    CONFIG_CLASS = ClipConfig

    def __init__(self, config: ClipConfig):
        super().__init__()
        self.config = config
        self.clip = CLIP(config.embed_dim, config.vision_cfg(), config.text_cfg())
        self.tokenizer = open_clip.tokenizer.SimpleTokenizer(context_length=config.context_length)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor):
        """x (b, 3, S, S) in [-1, 1], tokens (b, context) → (image features, text features, logit scale)."""
        return self.clip(x, tokens)

    def _clip(self) -> nn.Module:
        return self.clip

    def _image_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        size = self.config.image_size
        return torch.stack([image_to_uint8(im, size) for im in images]).float() / 127.5 - 1.0

    def _tokens(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))


class OpenClip(ClipEncoder):
    """A user's pretrained open_clip model, its eval preprocessing and its tokenizer."""

    def __init__(self, model: nn.Module, preprocess, tokenizer, arch: str, checkpoint: str):
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.arch, self.checkpoint = arch, checkpoint

    def _clip(self) -> nn.Module:
        return self.model

    def _image_batch(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return torch.stack([self.preprocess(to_rgb(im)) for im in images])

    def _tokens(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))


def load_open_clip(arch: str, checkpoint_path: PathLike, device: str | torch.device = "cpu") -> OpenClip:
    """A pretrained open_clip model from a LOCAL checkpoint file (``.pt``/``.bin``/``.safetensors``,
    a state dict as open_clip writes it); ``arch`` is an open_clip model name
    (``open_clip.list_models()``, e.g. ``ViT-B-32``). Nothing is downloaded: a path that is not a
    file is a :class:`CheckpointError`, and so is any failure to load it."""
    path = Path(checkpoint_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"open_clip checkpoint not found: {path} (a local file is required; "
                              f"nothing is downloaded)")
    if arch not in open_clip.list_models():
        raise CheckpointError(f"unknown open_clip arch {arch!r}; see open_clip.list_models()")
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=str(path), device=device)
        tokenizer = open_clip.get_tokenizer(arch)
    except (RuntimeError, KeyError, ValueError, OSError, EOFError, pickle.UnpicklingError, SafetensorError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"cannot load {path} as open_clip {arch}: {first}") from None
    model.eval()
    return OpenClip(model, preprocess, tokenizer, arch, str(path))


def load_clip(model: PathLike, checkpoint: PathLike | None = None) -> ClipEncoder:
    """A SmallClip folder (``checkpoint`` None), or an open_clip arch ``model`` + a local ``checkpoint`` file."""
    if checkpoint is None:
        return SmallClip.from_pretrained(model)
    return load_open_clip(str(model), checkpoint)


# --- scores ----------------------------------------------------------------------------------

def clip_scores(model: ClipEncoder, images: Sequence[Image.Image], prompts: Sequence[str],
                w: float = CLIP_SCORE_WEIGHT) -> torch.Tensor:
    """Per-pair CLIPScore (n,): w · max(cos(E_image, E_text), 0)."""
    if len(images) != len(prompts):
        raise ValueError(f"{len(images)} images but {len(prompts)} prompts")
    if not len(images):
        raise ValueError("clip_score needs at least one image–prompt pair")
    cos = (model.encode_images(images) * model.encode_texts(prompts)).sum(-1)
    return w * cos.clamp_min(0.0)


def clip_score(model: ClipEncoder, images: Sequence[Image.Image], prompts: Sequence[str],
               w: float = CLIP_SCORE_WEIGHT) -> float:
    """The standard CLIPScore (Hessel et al. 2021) of image–prompt pairs: the mean over pairs of
    w · max(cos(E_image, E_text), 0), w = 2.5 (so in [0, 2.5])."""
    return float(clip_scores(model, images, prompts, w).mean())


def _chance(keys: Sequence[str], k: int) -> float:
    """Chance of hitting an item of the query's own key among k drawn at random without
    replacement from n candidates, m of which share that key: 1 − C(n−m, k) / C(n, k), averaged."""
    n = len(keys)
    k = min(k, n)
    counts: dict[str, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    return sum(1.0 - math.comb(n - counts[key], k) / math.comb(n, k) for key in keys) / n


def _sample_key(sample: dict) -> str:
    try:
        return canonical_caption(sample.get("json"))
    except DataError:
        return sample["txt"]


@torch.no_grad()
def retrieval_accuracy(model: ClipEncoder, samples: Sequence[dict], keys: Sequence[str] | None = None,
                       ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Image→text and text→image retrieval over one held-out set (its captions are the candidates).

    ``samples``: dicts with ``image`` (PIL) and ``txt``; ``keys``: the content of each sample
    (default: its canonical caption from its json, else its caption). Returns, for each k in
    ``ks``: ``i2t_top{k}`` / ``t2i_top{k}`` (the partner itself among the k best; chance
    ``chance_top{k}`` = k/n) and ``i2t_content_top{k}`` / ``t2i_content_top{k}`` (an item of the
    same content among them; chance ``content_chance_top{k}``), plus ``n`` and ``contents``
    (distinct keys).
    """
    n = len(samples)
    if n < 2:
        raise ValueError(f"retrieval needs at least 2 samples, got {n}")
    keys = list(keys) if keys is not None else [_sample_key(s) for s in samples]
    if len(keys) != n:
        raise ValueError(f"{n} samples but {len(keys)} keys")
    sim = model.encode_images([s["image"] for s in samples]) @ model.encode_texts([s["txt"] for s in samples]).T
    ids = {key: i for i, key in enumerate(dict.fromkeys(keys))}
    key_ids = torch.tensor([ids[key] for key in keys])
    same = key_ids[:, None] == key_ids[None, :]  # (n, n): same content
    own = torch.arange(n)
    out: dict[str, float] = {"n": n, "contents": len(ids)}
    for k in ks:
        kk = min(k, n)
        i2t = sim.topk(kk, dim=1).indices  # (n, k): the best texts of each image
        t2i = sim.T.topk(kk, dim=1).indices  # (n, k): the best images of each text
        out[f"i2t_top{k}"] = float((i2t == own[:, None]).any(1).float().mean())
        out[f"t2i_top{k}"] = float((t2i == own[:, None]).any(1).float().mean())
        out[f"i2t_content_top{k}"] = float(same.gather(1, i2t).any(1).float().mean())
        out[f"t2i_content_top{k}"] = float(same.gather(1, t2i).any(1).float().mean())
        out[f"chance_top{k}"] = kk / n
        out[f"content_chance_top{k}"] = _chance(keys, k)
    return out


def evaluate_clip(model: ClipEncoder, data_root: PathLike, splits: Sequence[str] = EVAL_SPLITS,
                  limit: int = 200) -> dict[str, dict]:
    """Per held-out split: retrieval accuracies and the CLIPScore of matching vs shuffled pairs
    (each caption moved to the next image, so no image keeps its own). Missing splits are left
    out; :class:`DataError` when none is there."""
    results: dict[str, dict] = {}
    for split in splits:
        folder = Path(data_root).expanduser() / split
        if not folder.is_dir():
            continue
        samples = read_samples(folder, limit, required=("image", "txt"))
        images, prompts = [s["image"] for s in samples], [s["txt"] for s in samples]
        shuffled = prompts[1:] + prompts[:1]
        results[split] = {"retrieval": retrieval_accuracy(model, samples),
                          "clip_score": {"matching": clip_score(model, images, prompts),
                                         "shuffled": clip_score(model, images, shuffled)}}
    if not results:
        raise DataError(f"none of the held-out splits {', '.join(splits)} is under {data_root}")
    return results


# --- training --------------------------------------------------------------------------------

class _Pool:
    """One dataset's train split in memory: uint8 images (n, 3, S, S) and tokens (n, context),
    drawn in shuffled passes (no sample twice in a batch while the split is larger than it)."""

    def __init__(self, images: torch.Tensor, tokens: torch.Tensor, gen: torch.Generator):
        self.images, self.tokens, self.gen = images, tokens, gen
        self.order = torch.randperm(len(images), generator=gen)
        self.pos = 0

    def take(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        picks = []
        while k > 0:
            if self.pos >= len(self.order):
                self.order, self.pos = torch.randperm(len(self.images), generator=self.gen), 0
            chunk = self.order[self.pos:self.pos + k]
            picks.append(chunk)
            self.pos += len(chunk)
            k -= len(chunk)
        idx = torch.cat(picks)
        return self.images[idx], self.tokens[idx]


def _load_train_pools(data_root: PathLike, names: Sequence[str], model: SmallClip, gen: torch.Generator,
                      progress: bool) -> dict[str, _Pool]:
    pools = {}
    for name in names:
        folder = Path(data_root).expanduser() / name / "train"
        if not folder.is_dir():
            print(f"train_clip: no {folder}; training without {name}", file=sys.stderr)
            continue
        images, texts = [], []
        for s in tqdm(ShardDataset(folder, required=("image", "txt"), epochs=1), desc=f"read {name}/train",
                      unit="img", disable=not progress):
            images.append(image_to_uint8(s["image"], model.config.image_size))
            texts.append(s["txt"])
        if images:
            pools[name] = _Pool(torch.stack(images), model.tokenizer(texts), gen)
    if not pools:
        raise DataError(f"no train split of {', '.join(names)} under {data_root} "
                        f"(expected e.g. {Path(data_root) / names[0] / 'train'})")
    return pools


def _shares(pools: dict[str, _Pool], batch_size: int, mix: str) -> dict[str, int]:
    """Samples per batch from each dataset: equal, or proportional to its size (each at least 1)."""
    names = list(pools)
    weights = [1.0 if mix == "equal" else float(len(pools[n].images)) for n in names]
    raw = [batch_size * w / sum(weights) for w in weights]
    shares = [max(1, int(r)) for r in raw]
    shares[int(np.argmax(raw))] += batch_size - sum(shares)
    return dict(zip(names, shares))


def _param_groups(clip: nn.Module, weight_decay: float) -> list[dict]:
    """open_clip's rule: no weight decay on gains, biases, norms, position/class embeddings, logit scale."""
    decay, no_decay = [], []
    for name, p in clip.named_parameters():
        exclude = p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name \
            or "positional_embedding" in name or "class_embedding" in name
        (no_decay if exclude else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def train_clip(data_root: PathLike, out: PathLike, steps: int | None = None, batch_size: int | None = None,
               seed: int | None = None, progress: bool = True,
               config: ClipTrainConfig | PathLike | None = None) -> Path:
    """Train a :class:`SmallClip` on the train splits of ``config.datasets`` under ``data_root``
    with open_clip's ``ClipLoss`` and AdamW; save it to ``out`` (config.json + model.safetensors)
    and write ``out/report.json`` with :func:`evaluate_clip` on the held-out splits.

    ``config``: a :class:`ClipTrainConfig`, a YAML file (``configs/clip_small.yaml``) or None for
    the defaults; ``steps``/``batch_size``/``seed`` override it when given. Returns ``out``.
    """
    cfg = load_train_config(config)
    over = {k: v for k, v in (("steps", steps), ("batch_size", batch_size), ("seed", seed)) if v is not None}
    cfg = cfg.replace(**over) if over else cfg  # __post_init__ validates the overrides
    out = Path(out)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    model = SmallClip(cfg.model)
    start = time.time()
    pools = _load_train_pools(data_root, cfg.datasets, model, gen, progress)
    load_seconds = time.time() - start
    shares = _shares(pools, cfg.batch_size, cfg.mix)
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(_param_groups(model.clip, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps,
                                                pct_start=cfg.warmup_fraction)
    model.train()
    losses: list[float] = []
    start = time.time()
    bar = tqdm(range(cfg.steps), desc="train clip", unit="step", disable=not progress)
    for step in bar:
        parts = [pools[name].take(k) for name, k in shares.items()]
        x = torch.cat([p[0] for p in parts]).float() / 127.5 - 1.0
        tokens = torch.cat([p[1] for p in parts])
        image_features, text_features, logit_scale = model(x, tokens)
        loss = loss_fn(image_features, text_features, logit_scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.clip.logit_scale.clamp_(0, math.log(100))  # as open_clip's trainer does
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{losses[-1]:.3f}", scale=f"{model.clip.logit_scale.exp().item():.1f}")
    train_seconds = time.time() - start
    model.eval()
    model.save_pretrained(out)  # replaces the folder: the report is written after it
    start = time.time()
    results = evaluate_clip(model, data_root, cfg.eval_splits, cfg.eval_limit)
    every = max(1, cfg.steps // 20)
    report = {"results": results, "train_seconds": round(train_seconds, 1), "load_seconds": round(load_seconds, 1),
              "eval_seconds": round(time.time() - start, 1),
              "train_sets": {name: len(pool.images) for name, pool in pools.items()}, "batch_shares": shares,
              "first_loss": losses[0], "last_loss": losses[-1],
              "loss_curve": [[i, round(sum(losses[i:i + every]) / len(losses[i:i + every]), 4)]
                             for i in range(0, len(losses), every)],
              "logit_scale": round(model.clip.logit_scale.exp().item(), 2), "num_params": model.num_params(),
              "open_clip_version": open_clip.__version__, "torch_version": torch.__version__,
              "threads": torch.get_num_threads(), "clip_score_weight": CLIP_SCORE_WEIGHT,
              "config": cfg.to_dict()}
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    return out


# --- command line ----------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cola_mm.evaluation.clip", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    tr = sub.add_parser("train", help="train the small CLIP and write its report")
    tr.add_argument("--data", default="datasets")
    tr.add_argument("--out", default="runs/clip")
    tr.add_argument("--config", default=None, help="a YAML like configs/clip_small.yaml (default: its values)")
    tr.add_argument("--steps", type=registry.positive_int)
    tr.add_argument("--batch-size", type=registry.positive_int)
    tr.add_argument("--seed", type=int)
    ev = sub.add_parser("eval", help="retrieval accuracy and CLIPScore of a CLIP on the held-out splits")
    ev.add_argument("--model", help="a SmallClip folder")
    ev.add_argument("--arch", help="the open_clip arch of --checkpoint (e.g. ViT-B-32)")
    ev.add_argument("--checkpoint", help="a local open_clip checkpoint file")
    ev.add_argument("--data", default="datasets")
    ev.add_argument("--limit", type=registry.positive_int, default=200)
    args = parser.parse_args(argv)
    try:
        if args.command == "train":
            path = train_clip(args.data, args.out, args.steps, args.batch_size, args.seed, config=args.config)
            print(json.dumps(json.loads((path / REPORT_NAME).read_text())["results"], indent=2))
        else:
            if args.checkpoint and args.arch:
                model = load_open_clip(args.arch, args.checkpoint)
            elif args.model and not args.checkpoint:
                model = SmallClip.from_pretrained(args.model)
            else:
                parser.error("give --model FOLDER, or --arch ARCH --checkpoint FILE")
            print(json.dumps(evaluate_clip(model, args.data, EVAL_SPLITS, args.limit), indent=2))
    except (ConfigError, CheckpointError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
