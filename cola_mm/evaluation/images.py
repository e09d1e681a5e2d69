"""Evaluation of the image jobs (``cola-mm eval image-vae | text-to-image | caption``).

- **Image VAE**: PSNR (dB, images mapped to [0, 1]) of posterior-mean reconstructions of
  held-out images.
- **Text → image** (GenEval-style, Ghosh et al. 2023): each held-out caption is the prompt; a
  probe classifier trained on real renders (:mod:`cola_mm.evaluation.probe`) judges the generated image.
  Shapes (:func:`cola_mm.data.shapes.judge_image`): one-object prompts need exactly one object
  with shape, colour, size and cell right ("all right" also per object size: small objects
  are where a 64 px model fails first); two-object prompts (the ``two`` split) need exactly two
  objects matching the prompt's and the relation between them; digits: the digit (read by an
  sklearn classifier, :mod:`cola_mm.evaluation.digit_judge`). The ``novel`` split (colour–shape
  pairs never seen in training) is reported apart. With a CLIP (:mod:`cola_mm.evaluation.clip`),
  also the CLIPScore of the generated images against their prompts (per split and size).
- **Image → text**: captions of held-out real images graded against the json ground truth by
  their dataset's ``grade_caption`` (:mod:`cola_mm.data.registry`; shapes: one-object scenes
  shape, colour and cell right, two-object scenes both objects' shape and colour and the
  relation right; digits: the digit).

Every function returns a flat ``{name: value}`` dict; :func:`format_table` prints it.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import torch
from tqdm import tqdm

from cola_mm.data import registry
from cola_mm.data.loader import ShardDataset
from cola_mm.data.shards import DataError

PathLike = str | os.PathLike


def read_samples(shards: PathLike, limit: int | None = None, keep: Callable[[dict], bool] | None = None,
                 skipped: Counter | None = None, allow_empty: bool = False,
                 required: tuple[str, ...] = ("image", "json")) -> list[dict[str, Any]]:
    """The first ``limit`` samples (image, txt, json) of held-out shards, in shard order, that
    have the ``required`` fields and pass ``keep(json)`` (e.g. one-object scenes only). Bad samples (a corrupt image, a truncated
    tar …) are skipped and counted into ``skipped`` by reason. A missing split folder is a
    :class:`DataError` naming it; so is a split with no usable sample unless ``allow_empty``."""
    if not any(ch in str(shards) for ch in "*?[{:") and not Path(shards).exists():
        raise DataError(f"missing split {shards}: build it with `cola-mm data all --out {Path(shards).parent.parent}`")
    out = []
    dataset = ShardDataset(shards, required=required, epochs=1)
    for s in dataset:
        if keep is not None and not keep(s["json"]):
            continue
        out.append(s)
        if limit is not None and len(out) >= limit:
            break
    if skipped is not None:
        skipped.update(dataset.stats)
    if not out and not allow_empty:
        raise DataError(f"no usable samples in {shards}")
    return out


def _batches(items: list, size: int):
    for i in range(0, len(items), size):
        yield items[i:i + size]


# --------------------------------------------------------------------------- image VAE


@torch.no_grad()
def evaluate_image_vae(vae, data: PathLike, limit: int | None = 500, batch_size: int = 64,
                       progress: bool = True) -> dict[str, float]:
    from cola_mm.core.images import fit_square, image_to_tensor, to_rgb
    from cola_mm.vae_image.losses import psnr

    samples = read_samples(data, limit)
    size = vae.config.image_size
    values = []
    for chunk in tqdm(list(_batches(samples, batch_size)), desc="image VAE PSNR", disable=not progress):
        x = torch.stack([image_to_tensor(fit_square(to_rgb(s["image"]), size)) for s in chunk])
        mean, _ = vae.encode(x)
        values.append(psnr(vae.decode(mean).float(), x))
    v = torch.cat(values)
    return {"psnr_db": v.mean().item(), "psnr_db_p10": v.quantile(0.1).item(), "images": float(len(v))}


# --------------------------------------------------------------------------- text → image


class _Tally:
    """Per verdict name (``all``, ``count``, ``shape`` …): how many samples got it right and how many
    were graded on it. A verdict only some prompts have (the cell: one object; the relation: two)
    is a share of those prompts, not of the whole split."""

    def __init__(self):
        self.right, self.graded, self.n = Counter(), Counter(), 0

    def add(self, verdict: dict[str, bool]) -> None:
        self.right.update({name: int(ok) for name, ok in verdict.items()})
        self.graded.update(verdict.keys())
        self.n += 1

    def shares(self, prefix: str) -> dict[str, float]:
        """``{prefix}_{verdict}_acc`` for every verdict seen."""
        return {f"{prefix}_{name}_acc": self.right[name] / n for name, n in self.graded.items()}


@torch.no_grad()
def evaluate_text_to_image(pipe, probe, data_root: PathLike, limit: int | None = 200, steps: int | None = None,
                           cfg_scale: float | None = None, seed: int = 0, batch_size: int = 16,
                           splits: tuple[str, ...] | None = None,
                           progress: bool = True, keep: int = 0, clip=None) -> tuple[dict[str, float], list]:
    """Accuracy of generated images per split (default: every image dataset's evaluation splits,
    :func:`cola_mm.data.registry.image_eval_splits`), each graded by its dataset's
    ``judge_image``; also returns up to ``keep`` (prompt, image, correct) examples per split for
    sample grids.

    ``clip``: a :class:`cola_mm.evaluation.clip.ClipEncoder` (or None): then also the mean
    CLIPScore (w = 2.5, in [0, 2.5]) of the generated images against their prompts,
    ``{split}_clip_score`` and, for one-object prompts, ``{split}_{size}_clip_score``."""
    if clip is not None:
        from cola_mm.evaluation.clip import clip_scores
    root = Path(data_root)
    judges = probe if isinstance(probe, dict) else {"probe": probe}  # {dataset.judge: judge}
    results: dict[str, float] = {}
    examples = []
    for split in splits or registry.image_eval_splits("text_to_image", root):
        dataset = registry.of_split(split)
        judge = judges.get(dataset.judge)
        if judge is None:
            raise ValueError(f"{split} is judged by the {dataset.judge} judge, which was not given")
        skipped: Counter = Counter()
        samples = read_samples(root / split, limit, keep=dataset.image_prompt_filter, skipped=skipped)
        tally = _Tally()
        by_objects: dict[int, _Tally] = {}  # objects in the prompt -> its prompts' verdicts
        by_size: dict[str, list[int]] = {}  # size name -> [all right, count]
        clip_sum, clip_by_size = 0.0, Counter()  # CLIPScore sums: the split, per size
        kept = 0
        bar = tqdm(total=len(samples), desc=f"text→image {split}", disable=not progress)
        for k, chunk in enumerate(_batches(samples, batch_size)):
            prompts = [s["txt"] for s in chunk]
            images = pipe.generate_image(prompts, steps=steps, cfg_scale=cfg_scale, seed=seed + k * batch_size)
            scores = clip_scores(clip, images, prompts).tolist() if clip is not None else [0.0] * len(images)
            for s, img, pred, score in zip(chunk, images, judge.predict(images), scores):
                verdict = dataset.judge_image(pred, s["json"])
                objects = s["json"].get("objects") or [{}]
                clip_sum += score
                if len(objects) == 1 and objects[0].get("size") is not None:  # one-object prompts: per size too
                    sized = by_size.setdefault(objects[0]["size"], [0, 0])
                    sized[0] += int(verdict["all"])
                    sized[1] += 1
                    clip_by_size[objects[0]["size"]] += score
                tally.add(verdict)
                by_objects.setdefault(len(objects), _Tally()).add(verdict)
                if kept < keep:
                    examples.append((split, s["txt"], img, verdict["all"]))
                    kept += 1
            bar.update(len(chunk))
        bar.close()
        name = split.replace("/", "_")
        results.update(tally.shares(name))
        results[f"{name}_n"] = float(len(samples))
        results[f"{name}_skipped"] = float(sum(skipped.values()))
        if clip is not None:
            results[f"{name}_clip_score"] = clip_sum / len(samples)
        if len(by_objects) > 1:  # a split that mixes one- and two-object prompts (val, heldout-phrasing): each apart
            for k, group in sorted(by_objects.items()):
                results.update(group.shares(f"{name}_{k}obj"))
                results[f"{name}_{k}obj_n"] = float(group.n)
        for size, (right, count) in sorted(by_size.items()):
            results[f"{name}_{size}_all_acc"] = right / count
            results[f"{name}_{size}_n"] = float(count)
            if clip is not None:
                results[f"{name}_{size}_clip_score"] = clip_by_size[size] / count
    return results, examples


# --------------------------------------------------------------------------- image → text


@torch.no_grad()
def evaluate_captions(pipe, data_root: PathLike, limit: int | None = 200, steps: int | None = None,
                      cfg_scale: float | None = None, seed: int = 0, batch_size: int = 32,
                      splits: tuple[str, ...] | None = None,
                      progress: bool = True, keep: int = 0) -> tuple[dict[str, float], list]:
    """Accuracy of captions of held-out images per split and group (e.g. one- and two-object
    scenes), each graded by its dataset's ``grade_caption``; also returns up to ``keep``
    (image, caption, correct) examples per group for sample grids."""
    root = Path(data_root)
    results: dict[str, float] = {}
    examples = []
    for split in splits or registry.image_eval_splits("image_to_text", root):
        dataset = registry.of_split(split)
        for suffix, keep_sample in dataset.caption_groups:
            skipped: Counter = Counter()
            samples = read_samples(root / split, limit, keep=keep_sample, skipped=skipped, allow_empty=True)
            if not samples:  # e.g. no two-object scenes in a one-object split
                continue
            tally = _Tally()
            kept = 0
            bar = tqdm(total=len(samples), desc=f"caption {split}{suffix}", disable=not progress)
            for k, chunk in enumerate(_batches(samples, batch_size)):
                captions = pipe.caption([s["image"] for s in chunk], steps=steps, cfg_scale=cfg_scale,
                                        seed=seed + k * batch_size)
                for s, text in zip(chunk, captions):
                    verdict = dataset.grade_caption(text, s["json"])
                    tally.add(verdict)
                    if kept < keep:
                        examples.append((f"{split}{suffix}", s["image"], text, verdict["all"]))
                        kept += 1
                bar.update(len(chunk))
            bar.close()
            name = split.replace("/", "_") + suffix
            results.update(tally.shares(name))
            results[f"{name}_n"] = float(len(samples))
            results[f"{name}_skipped"] = float(sum(skipped.values()))
    return results, examples


def format_table(results: dict[str, float]) -> str:
    width = max(len(k) for k in results)
    lines = []
    for k, v in results.items():
        if k.endswith("_acc"):
            lines.append(f"{k:<{width}}  {100 * v:6.2f} %")
        elif k.endswith("_n") or k.endswith("_skipped") or k == "images":
            lines.append(f"{k:<{width}}  {int(v):6d}")
        else:
            lines.append(f"{k:<{width}}  {v:8.3f}")
    return "\n".join(lines)
