"""Handwritten digits: scikit-learn's 1,797 real 8×8 digit scans as a small captioned image set.

The images are the UCI "Optical Recognition of Handwritten Digits" samples bundled with
scikit-learn (:func:`sklearn.datasets.load_digits`, offline): 8×8 ink counts 0..16. Each is
padded by one blank cell on every side, upsampled smoothly (bicubic) to ``size``×``size`` and
drawn as dark ink :data:`INK` on the same light background as :mod:`cola_mm.data.shapes`, so the two sets
share a look. Captions name the digit in varied phrasing (:data:`TEMPLATES`, numeral or word);
:func:`parse_digit_caption` reads the digit back.

Splits (fixed, independent of the seed; generator ``digits-2``): the last :data:`TEST_COUNT` =
300 source indices (1497..1796) are ``test``, the :data:`VAL_COUNT` = 150 before them ``val``
(model selection), the first 1,347 ``train``: no scan is in two of them. ``heldout-phrasing``
captions the test scans with templates training never uses (:data:`HELDOUT_TEMPLATES`), a
text → image prompt set no training caption matches. Every class has 27–33 test samples. The seed
only picks the caption phrasing. Captions are graded by the strict grammar of :func:`parse_strict`.

Build with ``cola-mm data digits --out datasets/digits``, or from Python::

    from cola_mm.data.digits import build_digits
    build_digits("datasets/digits", size=64)
"""

from __future__ import annotations

import argparse
import os
import random
import re
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from cola_mm.data.registry import Dataset, Grade, normalize_caption, positive_int
from cola_mm.data.shards import (DataError, ShardWriter, check_generator_args, prepare_split_dir, read_manifest,
                                 update_manifest)

DATASET_NAME = "digits"
GENERATOR_VERSION = "digits-2"

BACKGROUND = (245, 245, 245)  # same as cola_mm.data.shapes
INK = (25, 25, 25)
SOURCE_MAX = 16.0   # ink counts in load_digits run 0..16
PAD_CELLS = 1       # blank source cells added on each side before upsampling (a margin)
MIN_SIZE = 16
TEST_COUNT = 300
VAL_COUNT = 150
SPLITS = ("train", "val", "test", "heldout-phrasing")
CAPITALIZE_PROBABILITY = 0.5
PERIOD_PROBABILITY = 0.5

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = (
    "a handwritten {num}",
    "the digit {num}",
    "a hand-drawn {num}",
    "number {num}, written by hand",
    "a handwritten digit: {num}",
    "the number {num} written by hand",
    "an image of the handwritten digit {num}",
    "{a_num} drawn by hand",
    "handwriting showing the number {num}",
    "a scan of a handwritten {num}",
)


HELDOUT_TEMPLATES = (
    "please write the number {num}",
    "show me {a_num} written in ink",
    "draw the numeral {num} with a pen",
)


def split_indices(split: str, total: int) -> range:
    """Source indices of ``split``: the last TEST_COUNT are test (and heldout-phrasing), the
    VAL_COUNT before them val, the rest train."""
    if split not in SPLITS:
        raise DataError(f"unknown digits split {split!r}; choose one of {', '.join(SPLITS)}")
    if split in ("test", "heldout-phrasing"):
        return range(total - TEST_COUNT, total)
    if split == "val":
        return range(total - TEST_COUNT - VAL_COUNT, total - TEST_COUNT)
    return range(total - TEST_COUNT - VAL_COUNT)


def render_digit(pixels: np.ndarray, size: int) -> Image.Image:
    """Upsample one 8×8 digit (values 0..16) to a smooth ``size``×``size`` RGB image."""
    ink = np.pad(np.clip(pixels / SOURCE_MAX, 0.0, 1.0).astype(np.float32), PAD_CELLS)
    smooth = Image.fromarray(ink).resize((size, size), Image.Resampling.BICUBIC)
    coverage = np.clip(np.asarray(smooth), 0.0, 1.0)[..., None]  # (size, size, 1)
    background, ink_rgb = np.array(BACKGROUND, np.float32), np.array(INK, np.float32)
    rgb = background + coverage * (ink_rgb - background)
    return Image.fromarray(np.rint(rgb).astype(np.uint8))


def _a_num(num: str) -> str:
    return f"{'an' if num in ('8', 'eight') else 'a'} {num}"


def make_digit_caption(label: int, rng: random.Random, template: int | None = None,
                       templates: tuple[str, ...] = TEMPLATES) -> str:
    """Caption a digit with a random (or the given) template, as a numeral or a word."""
    if template is None:
        template = rng.randrange(len(templates))
    num = rng.choice((str(label), DIGIT_WORDS[label]))
    text = templates[template].format(num=num, a_num=_a_num(num))
    if rng.random() < CAPITALIZE_PROBABILITY:
        text = text[0].upper() + text[1:]
    if rng.random() < PERIOD_PROBABILITY:
        text += "."
    return text


_NUMBER_RE = re.compile(r"\b(?:[0-9]|" + "|".join(DIGIT_WORDS) + r")\b")
_NUM = "(?P<num>[0-9]|" + "|".join(DIGIT_WORDS) + ")"
_STRICT_RE = tuple(re.compile("^" + re.escape(t).replace(r"\{num\}", _NUM).replace(r"\{a_num\}", "(?P<art>an|a) " + _NUM)
                              + "$") for t in TEMPLATES)


def parse_strict(text: str) -> int | None:
    """The digit of a caption that is, as a whole, one sentence of the caption grammar (a
    template with one digit, numeral or word, and the right article; case, runs of spaces and one
    trailing full stop aside), else None."""
    if not isinstance(text, str):
        return None
    norm = normalize_caption(text)
    for regex in _STRICT_RE:
        m = regex.match(norm)
        if m:
            num = m.group("num")
            if m.groupdict().get("art") is not None and _a_num(num) != f"{m.group('art')} {num}":
                return None
            return int(num) if num.isdigit() else DIGIT_WORDS.index(num)
    return None


def parse_digit_caption(text: str) -> int | None:
    """The digit a caption names (numeral or word, any case), or None if none or several."""
    if not isinstance(text, str):
        return None
    words = re.sub(r"[^a-z0-9]+", " ", text.lower())
    found = {int(m) if m.isdigit() else DIGIT_WORDS.index(m) for m in _NUMBER_RE.findall(words)}
    return found.pop() if len(found) == 1 else None


def _validate(out: str | os.PathLike, size: int, seed: int, shard_size: int) -> None:
    check_generator_args(out, DATASET_NAME, size, seed, shard_size, MIN_SIZE)


def build_digits(out: str | os.PathLike, size: int = 64, seed: int = 0, shard_size: int = 1000,
                 overwrite: bool = False, progress: bool = True) -> dict:
    """Write ``out/train`` and ``out/test`` shards and ``out/manifest.json``; return the manifest.

    Raises :class:`DataError` on bad arguments or when shards exist and ``overwrite`` is False
    (checked for both splits before anything is written).
    """
    from sklearn.datasets import load_digits  # heavy import, only needed here

    _validate(out, size, seed, shard_size)
    digits = load_digits()
    total = len(digits.target)
    split_dirs = {split: prepare_split_dir(Path(out) / split, overwrite) for split in SPLITS}
    manifest: dict = {}
    for split in SPLITS:
        indices = split_indices(split, total)
        with ShardWriter(split_dirs[split], max_count=shard_size) as writer:
            for index in tqdm(indices, desc=f"digits/{split}", disable=not progress):
                label = int(digits.target[index])
                rng = random.Random(f"{DATASET_NAME}/{seed}/{index}" + ("/heldout" if split == "heldout-phrasing" else ""))
                templates = HELDOUT_TEMPLATES if split == "heldout-phrasing" else TEMPLATES
                template = rng.randrange(len(templates))
                caption = make_digit_caption(label, rng, template, templates)
                template = f"heldout/{template}" if split == "heldout-phrasing" else template
                meta = {"label": label, "caption": caption, "caption_template": template,
                        "source_index": index, "split": split, "seed": seed,
                        "image_size": size, "dataset": DATASET_NAME,
                        "generator_version": GENERATOR_VERSION}
                image = render_digit(digits.images[index], size)
                writer.write(f"{index:09d}", {"png": image, "txt": caption, "json": meta})
        info = {"count": len(indices), "shards": writer.shards, "seed": seed, "size": size,
                "source_indices": [indices.start, indices.stop]}
        manifest = update_manifest(
            out, DATASET_NAME, GENERATOR_VERSION, split, info,
            source="sklearn.datasets.load_digits", classes=list(DIGIT_WORDS),
            split_rule=f"test (and heldout-phrasing) = the last {TEST_COUNT} source indices, val = the "
                       f"{VAL_COUNT} before them, train = the rest",
            background=list(BACKGROUND), ink=list(INK))
    return manifest


# --- canonical captions, grading and judging ---------------------------------------------------

def canonical_digit_caption(label: int) -> str:
    """The one phrasing of a digit: ``"a handwritten 7"``."""
    if not 0 <= int(label) <= 9:
        raise DataError(f"a digit label is 0..9, got {label}")
    return TEMPLATES[0].format(num=int(label))


def canonical_caption(meta: dict) -> str:
    return canonical_digit_caption(meta["label"])


def grade_caption(text: str, truth: dict) -> Grade:
    """Right when the caption is one sentence of the caption grammar (:func:`parse_strict`)
    naming the sample's digit."""
    parsed = parse_strict(text)
    return {"parsed": parsed is not None, "all": parsed == int(truth["label"])}


def judge_digit(pred: dict, label: int) -> bool:
    """True when the probe reads the image as digit ``label``."""
    return pred.get("digit") == int(label)


def judge_image(pred: dict, truth: dict) -> Grade:
    return {"all": judge_digit(pred, truth["label"])}


# --- command line (``cola-mm data digits``, ``cola-mm data all``) ------------------------------

def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=positive_int, default=64, help="canvas side in pixels (default 64)")


def _build(args: argparse.Namespace) -> None:
    from cola_mm.data.overlap import record_overlaps

    manifest = build_digits(args.out, size=args.size, seed=args.seed, shard_size=args.shard_size,
                            overwrite=args.overwrite)
    for split, info in manifest["splits"].items():
        print(f"digits/{split}: {info['count']} samples -> {Path(args.out) / split}")
    for split, found in record_overlaps(args.out).items():
        print(f"digits/{split}: {found['images']} images and {found['prompts']} prompts also in train "
              f"(of {found['samples']})")


def _build_missing(root: Path, args: argparse.Namespace) -> None:
    manifest = read_manifest(root)
    if manifest.get("generator_version") == GENERATOR_VERSION and set(SPLITS) <= set(manifest.get("splits", {})):
        print(f"digits: already built in {root}")
        return
    _build(argparse.Namespace(out=root, size=args.size, seed=args.seed, shard_size=args.shard_size, overwrite=True))


DATASET = Dataset(
    name=DATASET_NAME,
    help="scikit-learn's 1,797 real handwritten digits, captioned",
    description="Upsample sklearn's 8x8 digits smoothly to the canvas, caption them; fixed train/val/test "
                "split by scan, plus test scans captioned with held-out phrasing.",
    add_arguments=_add_arguments, build=_build, build_missing=_build_missing,
    image_splits=("test", "heldout-phrasing"), caption_splits=("test",),
    canonical_caption=canonical_caption, grade_caption=grade_caption, judge_image=judge_image,
)
