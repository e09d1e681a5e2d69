"""One registry of what the project knows about each bundled dataset.

A dataset module (``data/shapes.py``, ``data/digits.py``, ``data/text.py``) ends with one
:class:`Dataset` that declares everything the rest of the project asks of it: how ``cola-mm
data NAME`` builds it, which splits the image evaluations read, the one canonical caption of a
sample, the strict grader of a generated caption, and how a judged image is graded. Nothing
else in the project asks "which dataset is this?" by name.

Adding a dataset: write its module with a ``DATASET = Dataset(...)`` and add it to
:func:`datasets` below. The evaluation, the canonical captions and the CLI pick it up.

A sample says which dataset made it in its json (``{"dataset": "shapes", …}``); an evaluation
split is named ``<dataset>/<split>`` under a dataset root (``datasets/shapes/test``).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from cola_mm.data.shards import DataError

Grade = dict[str, bool]  # per-attribute verdicts; "all" is the one that counts


def normalize_caption(text: str) -> str:
    """A caption as graders and the overlap check compare it: lower case, single spaces, no
    trailing full stop."""
    norm = " ".join(str(text).split()).lower()
    return norm[:-1].rstrip() if norm.endswith(".") else norm


def _int_at_least(text: str, low: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1, with a one-line error otherwise."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """An argparse type: an integer >= 0, with a one-line error otherwise."""
    return _int_at_least(text, 0, "a whole number >= 0")


@dataclass(frozen=True)
class Dataset:
    name: str  # the json's "dataset" field and the folder under a dataset root
    help: str  # one line for `cola-mm data --help`
    description: str  # the `cola-mm data NAME --help` text
    # command line: the flags of `cola-mm data NAME` beyond --out/--seed/--shard-size/--overwrite,
    # and the build from those flags (prints one line per split written)
    add_arguments: Callable[[argparse.ArgumentParser], None]
    build: Callable[[argparse.Namespace], None]
    # `cola-mm data all`: flags it adds there (prefixed with the dataset name), and the build of
    # what is missing under ROOT/NAME with those flags
    add_all_arguments: Callable[[argparse.ArgumentParser], None] = lambda p: None
    build_missing: Callable[[Path, argparse.Namespace], None] | None = None
    # True: a required part of every dataset root (`cola-mm data all` builds it and trains the
    # tokenizer on it; evaluations report its absence). False: optional (e.g. icons, which needs a
    # font package): `data all` builds it where its build_missing can, evaluations read it where built
    in_all: bool = True
    # image–caption datasets only (None / () for text corpora):
    image_splits: tuple[str, ...] = ()  # held-out splits whose captions prompt text → image
    caption_splits: tuple[str, ...] = ()  # held-out splits whose images are captioned
    canonical_caption: Callable[[dict], str] | None = None  # json → the one phrasing of the sample
    grade_caption: Callable[[str, dict], Grade] | None = None  # (generated caption, json) → verdicts
    judge_image: Callable[[dict, dict], Grade] | None = None  # (judge's prediction, json) → verdicts
    # which judge reads this dataset's generated images: "probe" (the shapes/digits probe,
    # cola_mm/evaluation/probe.py) or "icons" (cola_mm/evaluation/icon_judge.py)
    judge: str = "probe"
    # groups a caption evaluation reports apart: (name suffix, keep(json) -> bool)
    caption_groups: tuple[tuple[str, Callable[[dict], bool]], ...] = (("", lambda meta: True),)
    # the samples a text → image evaluation prompts with (e.g. one-object scenes)
    image_prompt_filter: Callable[[dict], bool] = field(default=lambda meta: True)

    @property
    def has_images(self) -> bool:
        return self.judge_image is not None


def datasets() -> dict[str, Dataset]:
    """Every registered dataset by name, in registration order."""
    from cola_mm.data import digits, icons, shapes, text  # the registry: one module per dataset

    return {d.name: d for d in (shapes.DATASET, digits.DATASET, text.DATASET, icons.DATASET)}


def get(name: str) -> Dataset:
    found = datasets()
    if name not in found:
        raise DataError(f"unknown dataset {name!r}; registered datasets: {', '.join(found)}")
    return found[name]


def of_sample(meta: Any) -> Dataset:
    """The dataset that made a sample, from its json's ``dataset`` field."""
    if not isinstance(meta, dict) or "dataset" not in meta:
        raise DataError("this sample has no ground-truth json naming its dataset")
    return get(meta["dataset"])


def of_split(split: str) -> Dataset:
    """The dataset of an evaluation split named ``<dataset>/<split>``."""
    return get(Path(split).parts[0] if split else "")


JOB_SPLITS = {"text_to_image": "image_splits", "image_to_text": "caption_splits"}


def evaluated(dataset: Dataset, root: str | Path | None) -> bool:
    """Whether evaluations under the dataset root ``root`` read ``dataset``: every dataset that
    ``cola-mm data all`` builds (its absence is an error the reader reports), and an optional one
    (``in_all=False``, e.g. icons, which needs a font package) only where it was built."""
    return dataset.in_all or root is None or (Path(root) / dataset.name).is_dir()


def image_eval_splits(job: str, root: str | Path | None = None) -> tuple[str, ...]:
    """The default evaluation splits of an image job (``text_to_image`` or ``image_to_text``):
    ``<dataset>/<split>`` of every image dataset (given ``root``, optional datasets only where
    built there, see :func:`evaluated`)."""
    if job not in JOB_SPLITS:
        raise ValueError(f"image jobs are {', '.join(JOB_SPLITS)}, got {job!r}")
    return tuple(f"{d.name}/{s}" for d in datasets().values() if d.has_images and evaluated(d, root)
                 for s in getattr(d, JOB_SPLITS[job]))
