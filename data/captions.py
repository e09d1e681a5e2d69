"""One canonical phrasing per image, rebuilt from a shard's ground-truth JSON.

The bundled caption sets describe each image in many ways (shapes: 22 templates, synonyms,
random capitals and full stops; digits: 10 templates, numeral or word). That variety is what a
text→image prompt should tolerate, but as a *target* it hurts: a continuous prior trained on
many phrasings of one scene learns their average, which decodes to caption-shaped salad.
Training image→text on one phrasing per scene fixes that (see the README's captioning
experiments), so the data pipeline can swap the shard's ``txt`` for :func:`canonical_caption`
of its ``json`` — for caption targets, prompts, or both (``data.caption_targets`` /
``data.caption_prompts``).

Canonical captions, which :func:`data.shapes.parse_caption` and
:func:`data.digits.parse_digit_caption` read back::

    shapes, one object:   "a small red circle in the top left"
    shapes, two objects:  "a large blue square to the left of a small green cross"
    digits:               "a handwritten 7"
"""

from __future__ import annotations

from typing import Any

from data import digits, shapes
from data.shards import DataError

CAPTION_STYLES = ("original", "canonical")


def _shape_object(obj: dict) -> str:
    size = shapes.SIZE_WORDS[obj["size"]][0]
    color = shapes.COLOR_WORDS[obj["color"]][0]
    shape = shapes.SHAPE_WORDS[obj["shape"]][0]
    return f"{shapes._article(size)} {size} {color} {shape}"


def canonical_shapes_caption(scene: dict) -> str:
    """The one phrasing of a shapes scene (the first template, every first synonym)."""
    objects = scene["objects"]
    if len(objects) == 1:
        where = shapes.CELL_PHRASES[objects[0]["cell"]][1][0]
        return f"{_shape_object(objects[0])} {where}"
    if len(objects) == 2:
        relation = shapes.RELATION_WORDS[scene["relation"]][0]
        return f"{_shape_object(objects[0])} {relation} {_shape_object(objects[1])}"
    raise DataError(f"a shapes scene has 1 or 2 objects, this one has {len(objects)}")


def canonical_digit_caption(label: int) -> str:
    """The one phrasing of a digit: ``"a handwritten 7"``."""
    if not 0 <= int(label) <= 9:
        raise DataError(f"a digit label is 0..9, got {label}")
    return digits.TEMPLATES[0].format(num=int(label))


def canonical_caption(meta: Any) -> str:
    """The canonical caption of one sample from its ground-truth JSON (``meta``).

    Raises :class:`DataError` for a sample without JSON or from a dataset that has no
    canonical phrasing (only the bundled shapes and digits sets do).
    """
    if not isinstance(meta, dict):
        raise DataError("canonical captions need each sample's ground-truth json; this sample has none "
                        "(use caption style 'original' for shards without it)")
    name = meta.get("dataset")
    try:
        if name == shapes.DATASET_NAME:
            return canonical_shapes_caption(meta)
        if name == digits.DATASET_NAME:
            return canonical_digit_caption(meta["label"])
    except (KeyError, TypeError) as err:
        raise DataError(f"{name} sample json lacks a field canonical captions need: {err}") from err
    raise DataError(f"no canonical caption for dataset {name!r}: only {shapes.DATASET_NAME!r} and "
                    f"{digits.DATASET_NAME!r} have one (use caption style 'original')")


def check_style(style: str, what: str) -> str:
    if style not in CAPTION_STYLES:
        raise DataError(f"{what} must be one of {', '.join(CAPTION_STYLES)}, got {style!r}")
    return style
