"""One canonical phrasing per image, rebuilt from a shard's ground-truth JSON.

The bundled caption sets describe each image in many ways (shapes: 22 templates, synonyms,
random capitals and full stops; digits: 10 templates, numeral or word). That variety is what a
text→image prompt should tolerate, but as a *target* it hurts: a continuous prior trained on
many phrasings of one scene learns their average, which decodes to caption-shaped salad.
Training image→text on one phrasing per scene fixes that (see docs/experiments.md, captioning
experiments), so the data pipeline can swap the shard's ``txt`` for :func:`canonical_caption`
of its ``json`` — for caption targets, prompts, or both (``data.caption_targets`` /
``data.caption_prompts``).

Each dataset declares its canonical caption in its :class:`~cola_mm.data.registry.Dataset`
(``canonical_caption``); the bundled ones, which their caption parsers read back::

    shapes, one object:   "a small red circle in the top left"
    shapes, two objects:  "a large blue square to the left of a small green cross"
    digits:               "a handwritten 7"
"""

from __future__ import annotations

from typing import Any

from cola_mm.data import registry
from cola_mm.data.shards import DataError

CAPTION_STYLES = ("original", "canonical")


def canonical_caption(meta: Any) -> str:
    """The canonical caption of one sample from its ground-truth JSON (``meta``), by the
    dataset that made it (:mod:`cola_mm.data.registry`).

    Raises :class:`DataError` for a sample without JSON or from a dataset that has no
    canonical phrasing.
    """
    if not isinstance(meta, dict):
        raise DataError("canonical captions need each sample's ground-truth json; this sample has none "
                        "(use caption style 'original' for shards without it)")
    name = meta.get("dataset")
    found = registry.datasets()
    dataset = found.get(name)
    if dataset is None or dataset.canonical_caption is None:
        having = [n for n, d in found.items() if d.canonical_caption is not None]
        raise DataError(f"no canonical caption for dataset {name!r}: only {', '.join(map(repr, having))} "
                        f"have one (use caption style 'original')")
    try:
        return dataset.canonical_caption(meta)
    except (KeyError, TypeError) as err:
        raise DataError(f"{name} sample json lacks a field canonical captions need: {err}") from err


def check_style(style: str, what: str) -> str:
    if style not in CAPTION_STYLES:
        raise DataError(f"{what} must be one of {', '.join(CAPTION_STYLES)}, got {style!r}")
    return style
