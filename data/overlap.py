"""Held out, checked: hash every evaluation image and prompt against the training stream.

An evaluation split is held out only if none of its images is pixel-identical to a training
image and none of its prompts (captions, normalised: case, runs of spaces and a trailing full
stop aside) is a training caption. :func:`split_overlap` counts both; the dataset builders record
the counts in the manifest (``overlap_with_train``), and the tests fail on any overlap where the
split is held out by construction.

    from cola_mm.data.overlap import split_overlap
    split_overlap("datasets/shapes/train", "datasets/shapes/test")   # {"images": 0, "prompts": 0, …}
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable

from PIL import Image
from tqdm import tqdm

from cola_mm.data.loader import ShardDataset
from cola_mm.data.registry import normalize_caption
from cola_mm.data.shards import read_manifest, write_manifest

PathLike = str | os.PathLike


def image_digest(image: Image.Image) -> str:
    """sha256 of an image's RGB pixels and size (the file encoding does not matter)."""
    rgb = image.convert("RGB")
    return hashlib.sha256(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()




def fingerprints(shards: PathLike, limit: int | None = None, progress: bool = False,
                 desc: str = "hash") -> tuple[set[str], set[str], int]:
    """(image digests, prompt keys, samples read) of the samples of ``shards``."""
    images, prompts, n = set(), set(), 0
    for sample in tqdm(ShardDataset(shards, required=(), epochs=1), desc=desc, disable=not progress):
        if "image" in sample:
            images.add(image_digest(sample["image"]))
        if sample.get("txt") is not None:
            prompts.add(normalize_caption(sample["txt"]))
        n += 1
        if limit is not None and n >= limit:
            break
    return images, prompts, n


def count_overlap(train: tuple[set[str], set[str], int], images: Iterable[Image.Image],
                  prompts: Iterable[str]) -> dict[str, int]:
    """How many of ``images`` / ``prompts`` occur in the training fingerprints ``train``."""
    train_images, train_prompts, _ = train
    return {"images": sum(image_digest(im) in train_images for im in images),
            "prompts": sum(normalize_caption(p) in train_prompts for p in prompts)}


def split_overlap(train_shards: PathLike, eval_shards: PathLike, progress: bool = False,
                  train: tuple[set[str], set[str], int] | None = None) -> dict[str, int]:
    """Evaluation samples of ``eval_shards`` whose image / prompt occurs in ``train_shards``:
    ``{"images": n, "prompts": n, "samples": n_eval, "train_samples": n_train}``. Pass ``train``
    (from :func:`fingerprints`) to hash the training stream once for several splits."""
    train = train or fingerprints(train_shards, progress=progress, desc="hash train")
    images, prompts = [], []
    for sample in ShardDataset(eval_shards, required=(), epochs=1):
        if "image" in sample:
            images.append(sample["image"])
        if sample.get("txt") is not None:
            prompts.append(sample["txt"])
    found = count_overlap(train, images, prompts)
    return {**found, "samples": max(len(images), len(prompts)), "train_samples": train[2]}


def record_overlaps(root: PathLike, progress: bool = True, train_split: str = "train") -> dict[str, dict]:
    """Measure every other split of the dataset at ``root`` against its training split and write the
    counts into the manifest (``splits.<split>.overlap_with_train``); returns them. Does nothing
    without a training split."""
    root = Path(root)
    manifest = read_manifest(root)
    splits = manifest.get("splits", {})
    if train_split not in splits:
        return {}
    train = fingerprints(root / train_split, progress=progress, desc=f"hash {root.name}/{train_split}")
    found = {split: split_overlap(None, root / split, train=train) for split in splits if split != train_split}
    for split, counts in found.items():
        manifest["splits"][split]["overlap_with_train"] = counts
    write_manifest(root, manifest)
    return found
