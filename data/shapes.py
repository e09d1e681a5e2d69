"""Captioned shapes: a procedurally rendered text+image set that is also the compositional benchmark.

Each sample is a small image of one or two coloured shapes placed on a 3×3 grid, a caption in
varied natural phrasing, and the ground truth as JSON. The caption states every attribute
(shape, colour, size and grid cell; for two objects both objects and their spatial relation), so
the set grades generation GenEval-style (Ghosh et al., 2023): generated images by a probe
classifier against the prompt's attributes, generated captions by :func:`parse_caption`.
The ``novel`` split holds colour–shape pairs that never occur in train/val/test
(:data:`NOVEL_PAIRS`), which measures compositional generalisation.

Specification (renders can be checked against it)

- canvas ``size``×``size`` (default 64), background RGB :data:`BACKGROUND` = (245, 245, 245);
- shapes :data:`SHAPES`: circle, square, triangle (apex up), cross (plus sign, arms 1/3 thick);
- colours :data:`COLORS` with exact RGB values;
- sizes :data:`SIZES`: the bounding box side is 1/5 (small) or 2/5 (large) of the canvas side;
- position: the bbox centre lies in one cell of a 3×3 grid (:data:`CELLS`), jittered around the
  cell centre by at most 1/6 of a cell side, then clamped so the bbox stays inside the canvas
  and the centre inside its cell;
- bboxes are integer pixels ``[x0, y0, x1, y1]`` with exclusive ``x1, y1`` (PIL crop convention);
  each shape touches all four sides of its bbox;
- two-object scenes (``max_objects=2``, half the scenes) use two different cells, bboxes at
  least :data:`MIN_GAP_PX` apart, and a relation (:data:`RELATIONS`) true of the cells:
  ``objects[0] <relation> objects[1]``;
- rendering draws at 4× with PIL and reduces with a box filter, so edges are anti-aliased and
  every pixel fully inside a shape has exactly its colour's RGB.

A sample is a pure function of ``(seed, split, index, size, max_objects)``: its RNG is
``random.Random("shapes/{seed}/{split}/{index}")``, so a split's shards are byte-identical
across runs, splits differ for the same seed, and any sample can be regenerated alone.

Build the splits with ``cola-mm data shapes --out datasets/shapes --count 20000 --split all``,
or from Python::

    from cola_mm.data.shapes import build_shapes
    build_shapes("datasets/shapes", "train", count=10_000, seed=0, max_objects=2)
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm import tqdm

from cola_mm.data.registry import Dataset, Grade, positive_int
from cola_mm.data.shards import (DataError, ShardWriter, check_generator_args, prepare_split_dir, read_manifest,
                                 update_manifest)

DATASET_NAME = "shapes"
GENERATOR_VERSION = "shapes-1"

# --- the specification ---------------------------------------------------------------------

BACKGROUND = (245, 245, 245)
SHAPES = ("circle", "square", "triangle", "cross")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
    "purple": (140, 60, 180),
    "orange": (245, 130, 30),
    "black": (25, 25, 25),
}
SIZES = {"small": 1 / 5, "large": 2 / 5}  # bbox side as a fraction of the canvas side
GRID = 3  # the canvas is a GRID×GRID grid of cells, named row by row:
CELLS = ("top left", "top", "top right",
         "left", "center", "right",
         "bottom left", "bottom", "bottom right")
RELATIONS = ("left of", "right of", "above", "below")
SPLITS = ("train", "val", "test", "novel")

ALL_PAIRS = tuple((color, shape) for color in COLORS for shape in SHAPES)
# Held out of train/val/test: one per shape, each with a different colour, so every colour and
# every shape still appears in training (each colour keeps >= 3 shapes, each shape 6 colours).
NOVEL_PAIRS = (("red", "cross"), ("green", "circle"), ("blue", "triangle"), ("yellow", "square"))
SEEN_PAIRS = tuple(pair for pair in ALL_PAIRS if pair not in NOVEL_PAIRS)

MIN_SIZE = 16               # smallest canvas side at which every size fits in every cell
SUPERSAMPLE = 4             # draw at this factor, then box-filter down (anti-aliasing)
JITTER_FRACTION = 1 / 6     # max centre offset from the cell centre, in cell sides
CROSS_ARM_FRACTION = 1 / 3  # thickness of the cross's arms, in bbox sides
MIN_GAP_PX = 2              # smallest gap between the bboxes of a two-object scene
TWO_OBJECT_FRACTION = 0.5   # share of two-object scenes when max_objects=2
MAX_PLACEMENT_TRIES = 1000  # rejection sampling of non-overlapping placements
CAPITALIZE_PROBABILITY = 0.5
PERIOD_PROBABILITY = 0.5


# --- geometry --------------------------------------------------------------------------------

def object_side(size_name: str, canvas: int) -> int:
    """Side in pixels of the bbox of an object of size ``size_name`` on a ``canvas`` canvas."""
    return max(1, round(SIZES[size_name] * canvas))


def cell_of(bbox: list[int], canvas: int) -> str:
    """Name of the grid cell holding the centre of ``bbox`` (exact integer arithmetic)."""
    x0, y0, x1, y1 = bbox
    # centre cx = (x0 + x1) / 2 is in column floor(cx * GRID / canvas)
    col = min(GRID - 1, (x0 + x1) * GRID // (2 * canvas))
    row = min(GRID - 1, (y0 + y1) * GRID // (2 * canvas))
    return CELLS[row * GRID + col]


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _start_range(band: int, side: int, canvas: int) -> tuple[int, int]:
    """Allowed integer starts of a box of ``side`` whose centre lies in grid band ``band``.

    The centre ``start + side/2`` must satisfy ``band*canvas/GRID <= centre < (band+1)*canvas/GRID``
    and the box must fit in ``[0, canvas)``; both are solved in integers.
    """
    lo = _ceil_div(2 * band * canvas - GRID * side, 2 * GRID)
    hi = _ceil_div(2 * (band + 1) * canvas - GRID * side, 2 * GRID) - 1
    return max(lo, 0), min(hi, canvas - side)


def _place_axis(rng: random.Random, band: int, side: int, canvas: int) -> int:
    """Start of a box on one axis: the band's centre plus jitter, clamped into the band."""
    cell_side = canvas / GRID
    jitter = JITTER_FRACTION * cell_side
    centre = (band + 0.5) * cell_side + rng.uniform(-jitter, jitter)
    lo, hi = _start_range(band, side, canvas)
    return min(max(math.floor(centre - side / 2 + 0.5), lo), hi)


def _make_object(rng: random.Random, pair: tuple[str, str], size_name: str, cell: str,
                 canvas: int) -> dict:
    row, col = divmod(CELLS.index(cell), GRID)
    side = object_side(size_name, canvas)
    x0 = _place_axis(rng, col, side, canvas)
    y0 = _place_axis(rng, row, side, canvas)
    color, shape = pair
    return {"shape": shape, "color": color, "size": size_name, "cell": cell,
            "bbox": [x0, y0, x0 + side, y0 + side]}


def _separated(a: list[int], b: list[int], gap: int) -> bool:
    """True when the boxes are at least ``gap`` pixels apart along x or along y."""
    return (a[2] + gap <= b[0] or b[2] + gap <= a[0]
            or a[3] + gap <= b[1] or b[3] + gap <= a[1])


def true_relations(cell_a: str, cell_b: str) -> list[str]:
    """The relations ``a <relation> b`` that hold between two grid cells."""
    row_a, col_a = divmod(CELLS.index(cell_a), GRID)
    row_b, col_b = divmod(CELLS.index(cell_b), GRID)
    holds = {"left of": col_a < col_b, "right of": col_a > col_b,
             "above": row_a < row_b, "below": row_a > row_b}
    return [name for name in RELATIONS if holds[name]]


# --- scenes ----------------------------------------------------------------------------------

def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown shapes split {split!r}; choose one of {', '.join(SPLITS)}")


def _two_pairs(rng: random.Random, split: str) -> list[tuple[str, str]]:
    """Two different colour–shape pairs; in ``novel`` at least one is a novel pair."""
    if split != "novel":
        return rng.sample(SEEN_PAIRS, 2)
    novel = rng.choice(NOVEL_PAIRS)
    other = rng.choice([pair for pair in ALL_PAIRS if pair != novel])
    pairs = [novel, other]
    rng.shuffle(pairs)
    return pairs


def sample_scene(rng: random.Random, split: str, size: int, max_objects: int) -> dict:
    """Draw a scene: ``{"objects": [{shape, color, size, cell, bbox}, ...], "relation": ...}``.

    ``relation`` is None for one object, else the relation of ``objects[0]`` to ``objects[1]``.
    """
    _check_split(split)
    pairs = NOVEL_PAIRS if split == "novel" else SEEN_PAIRS
    size_names = tuple(SIZES)
    if max_objects < 2 or rng.random() >= TWO_OBJECT_FRACTION:
        obj = _make_object(rng, rng.choice(pairs), rng.choice(size_names), rng.choice(CELLS), size)
        return {"objects": [obj], "relation": None}
    two = _two_pairs(rng, split)
    sizes = [rng.choice(size_names) for _ in two]
    for _ in range(MAX_PLACEMENT_TRIES):
        cells = rng.sample(CELLS, 2)
        objects = [_make_object(rng, p, s, c, size) for p, s, c in zip(two, sizes, cells)]
        if _separated(objects[0]["bbox"], objects[1]["bbox"], MIN_GAP_PX):
            return {"objects": objects, "relation": rng.choice(true_relations(*cells))}
    raise RuntimeError(f"could not place two objects apart on a {size}px canvas")


# --- rendering -------------------------------------------------------------------------------

def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: list[int], rgb: tuple) -> None:
    """Draw ``shape`` filling ``box`` = [x0, y0, x1, y1) (exclusive end) in pixels."""
    x0, y0, x1, y1 = box
    right, bottom = x1 - 1, y1 - 1  # PIL's boxes include their end pixel
    if shape == "circle":
        draw.ellipse((x0, y0, right, bottom), fill=rgb)
    elif shape == "square":
        draw.rectangle((x0, y0, right, bottom), fill=rgb)
    elif shape == "triangle":  # apex up, base on the bottom edge
        draw.polygon([((x0 + right) / 2, y0), (right, bottom), (x0, bottom)], fill=rgb)
    elif shape == "cross":
        side = x1 - x0
        arm = round(side * CROSS_ARM_FRACTION)
        arm += (side - arm) % 2  # same parity as the side, so the arms sit exactly centred
        offset = (side - arm) // 2
        draw.rectangle((x0 + offset, y0, x0 + offset + arm - 1, bottom), fill=rgb)
        draw.rectangle((x0, y0 + offset, right, y0 + offset + arm - 1), fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render_scene(scene: dict, size: int) -> Image.Image:
    """Render a scene to a ``size``×``size`` RGB image (4× supersampled, box-filtered)."""
    hires = Image.new("RGB", (size * SUPERSAMPLE, size * SUPERSAMPLE), BACKGROUND)
    draw = ImageDraw.Draw(hires)
    for obj in scene["objects"]:
        box = [v * SUPERSAMPLE for v in obj["bbox"]]
        _draw_shape(draw, obj["shape"], box, COLORS[obj["color"]])
    return hires.reduce(SUPERSAMPLE)


# --- captions --------------------------------------------------------------------------------

SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
SHAPE_WORDS = {"circle": ("circle", "disc", "disk"), "square": ("square", "box"),
               "triangle": ("triangle",), "cross": ("cross", "plus sign")}
COLOR_WORDS = {name: (name,) for name in COLORS}
RELATION_WORDS = {"left of": ("to the left of", "left of", "on the left of"),
                  "right of": ("to the right of", "right of", "on the right of"),
                  "above": ("above", "over"),
                  "below": ("below", "under", "beneath")}
_VERTICAL_WORDS = {"top": ("top", "upper"), "bottom": ("bottom", "lower")}

# Where-phrases: (labels used as "top right: ...", phrases used as "... in the top right").
_EDGE_PHRASES = {
    "top": (("top", "top center", "top middle"),
            ("at the top", "near the top", "along the top edge", "in the top middle",
             "at the top center", "in the upper part")),
    "bottom": (("bottom", "bottom center", "bottom middle"),
               ("at the bottom", "near the bottom", "along the bottom edge",
                "in the bottom middle", "at the bottom center", "in the lower part")),
    "left": (("left", "left side", "middle left"),
             ("on the left", "at the left", "on the left side", "near the left edge",
              "in the middle on the left")),
    "right": (("right", "right side", "middle right"),
              ("on the right", "at the right", "on the right side", "near the right edge",
               "in the middle on the right")),
    "center": (("center", "middle", "centre"),
               ("in the center", "in the middle", "in the centre", "at the center",
                "in the middle of the image")),
}


def _corner_phrases(cell: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    vertical, horizontal = cell.split()
    labels = tuple(f"{v}{sep}{horizontal}" for v in _VERTICAL_WORDS[vertical] for sep in " -")
    phrases = tuple(f"{prep} {label}{corner}" for prep in ("in the", "at the")
                    for label in labels for corner in ("", " corner"))
    return labels, phrases


CELL_PHRASES = {cell: _EDGE_PHRASES[cell] if cell in _EDGE_PHRASES else _corner_phrases(cell)
                for cell in CELLS}

# One-object templates: every one states size, colour, shape and cell.
ONE_OBJECT_TEMPLATES = (
    "{a_obj} {pos}",
    "there is {a_obj} {pos}",
    "{label}: {a_obj}",
    "{pos}, {a_obj}",
    "{pos} there is {a_obj}",
    "an image of {a_obj} {pos}",
    "a picture showing {a_obj} {pos}",
    "{obj}, {pos}",
    "you can see {a_obj} {pos}",
    "{a_color_shape} {pos}, {size} in size",
    "the {shape} {pos} is {size} and {color}",
    "a single {obj} sits {pos}",
    "{a_size_shape} in {color}, {pos}",
    "a drawing of {a_obj} {pos} on a plain background",
)
# Two-object templates: both objects' size, colour and shape, and the relation (no cells).
TWO_OBJECT_TEMPLATES = (
    "{a_obj1} {rel} {a_obj2}",
    "there is {a_obj1} {rel} {a_obj2}",
    "{a_obj1} is {rel} {a_obj2}",
    "an image of {a_obj1} {rel} {a_obj2}",
    "two shapes: {a_obj1} {rel} {a_obj2}",
    "{a_obj1} placed {rel} {a_obj2}",
    "you can see {a_obj1} {rel} {a_obj2}",
    "a picture with {a_obj1} {rel} {a_obj2}",
)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _object_fields(rng: random.Random, obj: dict) -> dict[str, str]:
    """Words for one object, each synonym drawn once and reused by every field."""
    size = rng.choice(SIZE_WORDS[obj["size"]])
    color = rng.choice(COLOR_WORDS[obj["color"]])
    shape = rng.choice(SHAPE_WORDS[obj["shape"]])
    return {"size": size, "color": color, "shape": shape,
            "obj": f"{size} {color} {shape}",
            "a_obj": f"{_article(size)} {size} {color} {shape}",
            "a_color_shape": f"{_article(color)} {color} {shape}",
            "a_size_shape": f"{_article(size)} {size} {shape}"}


def caption_templates(scene: dict) -> tuple[str, ...]:
    """The templates that can caption ``scene`` (one- or two-object)."""
    return ONE_OBJECT_TEMPLATES if len(scene["objects"]) == 1 else TWO_OBJECT_TEMPLATES


def make_caption(scene: dict, rng: random.Random, template: int | None = None) -> str:
    """Caption ``scene`` with a random (or the given) template and random synonyms."""
    templates = caption_templates(scene)
    if template is None:
        template = rng.randrange(len(templates))
    objects = scene["objects"]
    if len(objects) == 1:
        fields = _object_fields(rng, objects[0])
        labels, phrases = CELL_PHRASES[objects[0]["cell"]]
        fields.update(label=rng.choice(labels), pos=rng.choice(phrases))
    else:
        fields = {f"{k}{i}": v for i, obj in enumerate(objects, 1)
                  for k, v in _object_fields(rng, obj).items()}
        fields["rel"] = rng.choice(RELATION_WORDS[scene["relation"]])
    text = templates[template].format(**fields)
    if rng.random() < CAPITALIZE_PROBABILITY:
        text = text[0].upper() + text[1:]
    if rng.random() < PERIOD_PROBABILITY:
        text += "."
    return text


def caption_attributes(scene: dict) -> dict:
    """What a caption of ``scene`` states: the expected result of :func:`parse_caption`.

    Cells are stated for one object only (two-object captions give the relation instead).
    """
    one = len(scene["objects"]) == 1
    objects = [{"shape": o["shape"], "color": o["color"], "size": o["size"],
                "cell": o["cell"] if one else None} for o in scene["objects"]]
    return {"objects": objects, "relation": scene["relation"]}


# --- parsing ---------------------------------------------------------------------------------

class _Unparseable(Exception):
    pass


def _phrase_regex(table: dict[str, tuple[str, ...]]) -> tuple[re.Pattern, dict[str, str]]:
    """One regex matching any phrase of ``table`` (longest first) and phrase → canonical name."""
    lookup = {phrase: name for name, phrases in table.items() for phrase in phrases}
    alternatives = "|".join(re.escape(p) for p in sorted(lookup, key=len, reverse=True))
    return re.compile(rf"\b(?:{alternatives})\b"), lookup


_SIZE_RE = _phrase_regex(SIZE_WORDS)
_COLOR_RE = _phrase_regex(COLOR_WORDS)
_SHAPE_RE = _phrase_regex({**SHAPE_WORDS, "cross": SHAPE_WORDS["cross"] + ("plus",)})
_RELATION_RE = _phrase_regex(RELATION_WORDS)
_VERTICAL_RE = _phrase_regex(_VERTICAL_WORDS)
_HORIZONTAL_RE = _phrase_regex({"left": ("left",), "right": ("right",)})
_CENTER_RE = re.compile(r"\b(?:center|centre|middle|central)\b")


def _normalize(text: str) -> str:
    """Lower case, punctuation and hyphens to spaces, single spaces."""
    return " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split())


def _find_one(pattern: tuple[re.Pattern, dict[str, str]], text: str, required: bool) -> str | None:
    regex, lookup = pattern
    found = {lookup[m.group(0)] for m in regex.finditer(text)}
    if len(found) > 1 or (required and not found):
        raise _Unparseable
    return found.pop() if found else None


def _parse_cell(text: str) -> str | None:
    vertical = _find_one(_VERTICAL_RE, text, required=False)
    horizontal = _find_one(_HORIZONTAL_RE, text, required=False)
    if vertical and horizontal:
        return f"{vertical} {horizontal}"
    if vertical or horizontal:
        return vertical or horizontal  # "top middle", "middle left" name edge cells
    return "center" if _CENTER_RE.search(text) else None


def _parse_object(text: str) -> dict:
    return {"shape": _find_one(_SHAPE_RE, text, required=True),
            "color": _find_one(_COLOR_RE, text, required=True),
            "size": _find_one(_SIZE_RE, text, required=False),
            "cell": _parse_cell(text)}


def parse_caption(text: str) -> dict | None:
    """Parse a caption back to ``{"objects": [{shape, color, size, cell}], "relation": ...}``.

    Case, punctuation and spacing are ignored; synonyms map to canonical names. One relation
    phrase ("to the left of", "above" …) splits the caption into two objects; without one it
    describes a single object. Shape and colour are required; size and cell are None when the
    caption doesn't state them. Returns None when the caption is unparseable: a missing shape
    or colour, conflicting words for one attribute (two colours for one object, "top" and
    "bottom"), or more than one relation.
    """
    if not isinstance(text, str):
        return None
    norm = _normalize(text)
    regex, lookup = _RELATION_RE
    matches = list(regex.finditer(norm))
    try:
        if not matches:
            return {"objects": [_parse_object(norm)], "relation": None}
        if len(matches) > 1:
            return None
        m = matches[0]
        objects = [_parse_object(norm[:m.start()]), _parse_object(norm[m.end():])]
        return {"objects": objects, "relation": lookup[m.group(0)]}
    except _Unparseable:
        return None


# --- samples and shards ----------------------------------------------------------------------

def sample_rng(seed: int, split: str, index: int) -> random.Random:
    """The RNG of one sample, derived from the seed, the split name and the sample index."""
    return random.Random(f"{DATASET_NAME}/{seed}/{split}/{index}")


def generate_sample(seed: int, split: str, index: int, size: int = 64,
                    max_objects: int = 1) -> tuple[Image.Image, str, dict]:
    """Sample number ``index`` of a split: (image, caption, ground-truth JSON)."""
    rng = sample_rng(seed, split, index)
    scene = sample_scene(rng, split, size, max_objects)
    template = rng.randrange(len(caption_templates(scene)))
    caption = make_caption(scene, rng, template)
    meta = {**scene, "caption": caption,
            "caption_template": f"{len(scene['objects'])}-object/{template}",
            "split": split, "index": index, "seed": seed, "image_size": size,
            "dataset": DATASET_NAME, "generator_version": GENERATOR_VERSION}
    return render_scene(scene, size), caption, meta


def _validate(out: str | os.PathLike, split: str, count: int, size: int, seed: int,
              max_objects: int, shard_size: int) -> None:
    _check_split(split)
    if not (isinstance(count, int) and count >= 1):
        raise DataError(f"count must be an integer >= 1, got {count!r}")
    if max_objects not in (1, 2):
        raise DataError(f"max_objects must be 1 or 2, got {max_objects!r}")
    check_generator_args(out, DATASET_NAME, size, seed, shard_size, MIN_SIZE)


def build_shapes(out: str | os.PathLike, split: str, count: int, size: int = 64, seed: int = 0,
                 max_objects: int = 1, shard_size: int = 1000, overwrite: bool = False,
                 progress: bool = True) -> dict:
    """Write ``count`` samples to ``out/<split>/NNNNNN.tar`` and record them in the manifest.

    Returns the split's manifest entry (count, shards, seed, size, max_objects, created).
    Raises :class:`DataError` on bad arguments or when shards exist and ``overwrite`` is False.
    """
    _validate(out, split, count, size, seed, max_objects, shard_size)
    split_dir = prepare_split_dir(Path(out) / split, overwrite)
    with ShardWriter(split_dir, max_count=shard_size) as writer:
        for index in tqdm(range(count), desc=f"shapes/{split}", disable=not progress):
            image, caption, meta = generate_sample(seed, split, index, size, max_objects)
            writer.write(f"{index:09d}", {"png": image, "txt": caption, "json": meta})
    info = {"count": count, "shards": writer.shards, "seed": seed, "size": size,
            "max_objects": max_objects}
    manifest = update_manifest(
        out, DATASET_NAME, GENERATOR_VERSION, split, info,
        novel_pairs=[list(pair) for pair in NOVEL_PAIRS],
        colors={name: list(rgb) for name, rgb in COLORS.items()},
        shapes=list(SHAPES), cells=list(CELLS), sizes=dict(SIZES),
        relations=list(RELATIONS), background=list(BACKGROUND))
    return manifest["splits"][split]


# --- canonical captions, grading and judging ---------------------------------------------------

def _canonical_object(obj: dict) -> str:
    size = SIZE_WORDS[obj["size"]][0]
    color = COLOR_WORDS[obj["color"]][0]
    shape = SHAPE_WORDS[obj["shape"]][0]
    return f"{_article(size)} {size} {color} {shape}"


def canonical_caption(scene: dict) -> str:
    """The one phrasing of a scene (the first template, every first synonym), which
    :func:`parse_caption` reads back: "a small red circle in the top left", "a large blue
    square to the left of a small green cross"."""
    objects = scene["objects"]
    if len(objects) == 1:
        where = CELL_PHRASES[objects[0]["cell"]][1][0]
        return f"{_canonical_object(objects[0])} {where}"
    if len(objects) == 2:
        relation = RELATION_WORDS[scene["relation"]][0]
        return f"{_canonical_object(objects[0])} {relation} {_canonical_object(objects[1])}"
    raise DataError(f"a shapes scene has 1 or 2 objects, this one has {len(objects)}")


def grade_caption(text: str, truth: dict) -> Grade:
    """Grade a generated caption against a scene's ground truth json.

    One object: shape, colour and cell right; two objects: both objects' shape and colour and
    the relation right (a two-object caption names no cells).
    """
    parsed = parse_caption(text)
    objects = truth["objects"]
    out = {"parsed": parsed is not None}
    if parsed is None or len(parsed["objects"]) != len(objects):
        out.update(all=False, shape=False, color=False, cell=False)
        return out
    if len(objects) == 1:
        got, want = parsed["objects"][0], objects[0]
        out.update({attr: got[attr] == want[attr] for attr in ("shape", "color", "cell")})
        out["all"] = out["shape"] and out["color"] and out["cell"]
        return out
    pairs_right = all(g["shape"] == w["shape"] and g["color"] == w["color"] for g, w in zip(parsed["objects"], objects))
    relation = parsed["relation"] == truth.get("relation")
    out.update(shape=all(g["shape"] == w["shape"] for g, w in zip(parsed["objects"], objects)),
               color=all(g["color"] == w["color"] for g, w in zip(parsed["objects"], objects)),
               relation=relation, all=pairs_right and relation)
    return out


def judge_object(pred: dict, want: dict) -> Grade:
    """Grade the probe's reading ``pred`` of a 1-object image against a ground-truth object ``want``.

    Returns per-attribute correctness (``shape``, ``color``, ``cell``, and ``size`` when
    ``want`` has one) and ``all`` = shape, colour and cell right. Size is reported but not part
    of ``all`` (GenEval's position/colour/counting criteria don't grade size either).
    """
    result = {key: pred.get(key) == want[key] for key in ("shape", "color", "cell")}
    result["all"] = all(result.values())
    if want.get("size") is not None:
        result["size"] = pred.get("size") == want["size"]
    return result


def judge_image(pred: dict, truth: dict) -> Grade:
    """Grade the probe's reading of a generated image against the json of its 1-object prompt."""
    return judge_object(pred, truth["objects"][0])


def one_object(meta: dict) -> bool:
    return len(meta.get("objects", ())) == 1


# --- command line (``cola-mm data shapes``, ``cola-mm data all``) ------------------------------

EVAL_SPLITS = ("val", "test", "novel")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=positive_int, default=20000,
                   help="samples in the split (with --split all: train; val/test/novel get a tenth)")
    p.add_argument("--size", type=positive_int, default=64, help="canvas side in pixels (default 64)")
    p.add_argument("--split", choices=SPLITS + ("all",), default="train", help="which split to write (default train)")
    p.add_argument("--max-objects", type=int, choices=(1, 2), default=1,
                   help="2 adds two-object scenes with a spatial relation (default 1)")


def _build_splits(out, splits: tuple[str, ...], count: int, args: argparse.Namespace, overwrite: bool) -> None:
    for split in splits:
        n = count if split == "train" else max(1, count // 10)  # the evaluation splits get a tenth
        info = build_shapes(out, split, n, size=args.size, seed=args.seed, max_objects=args.max_objects,
                            shard_size=args.shard_size, overwrite=overwrite)
        print(f"shapes/{split}: {info['count']} samples in {len(info['shards'])} shard(s) -> {Path(out) / split}")


def _build(args: argparse.Namespace) -> None:
    splits = SPLITS if args.split == "all" else (args.split,)
    if args.split != "all":  # one split gets exactly --count
        info = build_shapes(args.out, args.split, args.count, size=args.size, seed=args.seed,
                            max_objects=args.max_objects, shard_size=args.shard_size, overwrite=args.overwrite)
        print(f"shapes/{args.split}: {info['count']} samples in {len(info['shards'])} shard(s) "
              f"-> {Path(args.out) / args.split}")
        return
    _build_splits(args.out, splits, args.count, args, args.overwrite)


def _add_all_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes-count", type=positive_int, default=20000,
                   help="shapes training samples (default 20000; eval splits get a tenth)")
    p.add_argument("--max-objects", type=int, choices=(1, 2), default=2,
                   help="shapes scenes with up to this many objects (default 2)")


def _build_missing(root: Path, args: argparse.Namespace) -> None:
    done = read_manifest(root).get("splits", {})
    missing = tuple(s for s in SPLITS if s not in done)
    if not missing:
        print(f"shapes: already built in {root}")
        return
    _build_splits(root, missing, args.shapes_count, args, overwrite=True)


DATASET = Dataset(
    name=DATASET_NAME,
    help="captioned coloured shapes (the compositional benchmark)",
    description="Render captioned shapes: 4 shapes x 7 colours x 2 sizes x 9 cells; the novel split holds "
                "held-out colour-shape pairs.",
    add_arguments=_add_arguments, build=_build, add_all_arguments=_add_all_arguments, build_missing=_build_missing,
    eval_splits=("test", "novel"),
    canonical_caption=canonical_caption, grade_caption=grade_caption, judge_image=judge_image,
    caption_groups=(("_1obj", one_object), ("_2obj", lambda meta: not one_object(meta))),
    image_prompt_filter=one_object,
)
