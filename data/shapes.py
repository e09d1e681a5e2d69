"""Captioned shapes: a procedurally rendered text+image set that is also the compositional benchmark.

Each sample is a small image of one or two coloured shapes placed on a 3×3 grid, a caption in
varied natural phrasing, and the ground truth as JSON. The caption states every attribute
(shape, colour, size and grid cell; for two objects both objects and their spatial relation), so
the set grades generation GenEval-style (Ghosh et al., 2023): generated images by a judge
against the prompt's attributes, generated captions by the strict grammar of
:func:`parse_strict`.

Splits, held out by construction (generator ``shapes-2``)

- a one-object scene is a *combination* (colour, shape, size, cell); a two-object scene has an
  unordered *pair* of colour–shape pairs. Every combination and every pair belongs to exactly
  one split, fixed by a hash of its names (independent of the seed): ``val`` and ``test``
  combinations (a tenth each) and ``val`` and ``two`` pairs (a tenth each) never occur in
  ``train``, so no test image and no test caption can be recalled from training;
- ``train`` / ``val``: one-object scenes (and, with ``max_objects=2``, half two-object scenes)
  from their own combinations and pairs;
- ``test``: one-object scenes from the test combinations;
- ``novel``: one-object scenes of the colour–shape pairs :data:`NOVEL_PAIRS`, which no other
  split ever shows;
- ``two``: two-object scenes with a relation, from the ``two`` pairs;
- ``heldout-phrasing``: test combinations and ``two`` pairs captioned with templates and
  synonyms that training never uses (:data:`HELDOUT_ONE_TEMPLATES` …): a prompt set for text →
  image that no training caption matches.

Scenes vary continuously, so no render repeats: the centre is jittered around the cell centre
(sub-pixel), the side by ±:data:`SIZE_JITTER` of its nominal size, and each colour channel by up
to ±:data:`COLOR_JITTER` around the named colour's RGB. :func:`cola_mm.data.overlap.split_overlap`
hashes every evaluation image and prompt against the training stream; ``cola-mm data shapes``
records the result (0) in the manifest.

Specification (renders can be checked against it)

- canvas ``size``×``size`` (default 64), background RGB :data:`BACKGROUND` = (245, 245, 245);
- shapes :data:`SHAPES`: circle, square, triangle (apex up), cross (plus sign, arms 1/3 thick);
- colours :data:`COLORS` (the named RGB; a scene's ``rgb`` is within ±COLOR_JITTER of it);
- sizes :data:`SIZES`: the bounding box side is 1/5 (small) or 2/5 (large) of the canvas side,
  times 1 ± SIZE_JITTER;
- position: the bbox centre lies in one cell of a 3×3 grid (:data:`CELLS`), at most 1/6 of a
  cell side from the cell centre on each axis, clamped so the bbox stays inside the canvas;
- bboxes are float pixels ``[x0, y0, x1, y1]`` (exclusive end), drawn at 4× and box-filtered,
  so edges are anti-aliased at quarter-pixel precision;
- two-object scenes use two different cells, bboxes at least :data:`MIN_GAP_PX` apart, and a
  relation (:data:`RELATIONS`) true of the cells: ``objects[0] <relation> objects[1]``.

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
import hashlib
import math
import os
import random
import re
from pathlib import Path

from PIL import Image, ImageDraw
from tqdm import tqdm

from cola_mm.data.registry import Dataset, Grade, normalize_caption, positive_int
from cola_mm.data.shards import (DataError, ShardWriter, check_generator_args, prepare_split_dir, read_manifest,
                                 update_manifest)

DATASET_NAME = "shapes"
GENERATOR_VERSION = "shapes-2"

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
SPLITS = ("train", "val", "test", "novel", "two", "heldout-phrasing")
ONE_OBJECT_SPLITS = ("test", "novel")  # evaluation splits of one-object scenes only

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
SIZE_JITTER = 0.1           # object side = nominal side · (1 + U(±SIZE_JITTER))
COLOR_JITTER = 10           # each RGB channel of an object = the named colour's + U{±COLOR_JITTER}
HOLDOUT_BUCKETS = 10        # combinations hash into 10 buckets: 0 → val, 1 → test (or two), the rest → train
TWO_OBJECT_FRACTION = 0.5   # share of two-object scenes when max_objects=2
MAX_PLACEMENT_TRIES = 1000  # rejection sampling of non-overlapping placements
CAPITALIZE_PROBABILITY = 0.5
PERIOD_PROBABILITY = 0.5


# --- geometry --------------------------------------------------------------------------------

def object_side(size_name: str, canvas: int) -> float:
    """Nominal side in pixels of the bbox of an object of size ``size_name`` on a ``canvas`` canvas."""
    return SIZES[size_name] * canvas


def cell_of(bbox: list[float], canvas: int) -> str:
    """Name of the grid cell holding the centre of ``bbox``."""
    x0, y0, x1, y1 = bbox
    col = min(GRID - 1, max(0, math.floor((x0 + x1) / 2 * GRID / canvas)))
    row = min(GRID - 1, max(0, math.floor((y0 + y1) / 2 * GRID / canvas)))
    return CELLS[row * GRID + col]


def _place_axis(rng: random.Random, band: int, side: float, canvas: int) -> float:
    """Start of a box on one axis: the band's centre plus jitter, kept inside the canvas and with
    its centre inside the band."""
    cell_side = canvas / GRID
    jitter = JITTER_FRACTION * cell_side
    centre = (band + 0.5) * cell_side + rng.uniform(-jitter, jitter)
    centre = min(max(centre, side / 2), canvas - side / 2)  # inside the canvas
    eps = 1e-3
    centre = min(max(centre, band * cell_side + eps), (band + 1) * cell_side - eps)  # inside the band
    return centre - side / 2


def _jittered_rgb(rng: random.Random, color: str) -> list[int]:
    return [min(255, max(0, c + rng.randint(-COLOR_JITTER, COLOR_JITTER))) for c in COLORS[color]]


def _make_object(rng: random.Random, pair: tuple[str, str], size_name: str, cell: str,
                 canvas: int) -> dict:
    row, col = divmod(CELLS.index(cell), GRID)
    side = object_side(size_name, canvas) * (1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER))
    x0 = _place_axis(rng, col, side, canvas)
    y0 = _place_axis(rng, row, side, canvas)
    color, shape = pair
    return {"shape": shape, "color": color, "size": size_name, "cell": cell,
            "bbox": [round(v, 3) for v in (x0, y0, x0 + side, y0 + side)], "rgb": _jittered_rgb(rng, color)}


def _separated(a: list[float], b: list[float], gap: float) -> bool:
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


def _bucket(*names: str) -> int:
    """A fixed bucket in 0..HOLDOUT_BUCKETS-1 of a combination, from a hash of its names."""
    digest = hashlib.sha256("shapes-combo/".encode() + "/".join(names).encode()).digest()
    return int.from_bytes(digest[:8], "big") % HOLDOUT_BUCKETS


def combination_split(color: str, shape: str, size: str, cell: str) -> str:
    """The one split a one-object combination belongs to: novel, val, test or train."""
    if (color, shape) in NOVEL_PAIRS:
        return "novel"
    return {0: "val", 1: "test"}.get(_bucket(color, shape, size, cell), "train")


def pair_split(a: tuple[str, str], b: tuple[str, str]) -> str:
    """The one split an unordered pair of colour–shape pairs belongs to: novel, val, two or train."""
    if a in NOVEL_PAIRS or b in NOVEL_PAIRS:
        return "novel"
    first, second = sorted((a, b))
    return {0: "val", 1: "two"}.get(_bucket(*first, *second), "train")


ONE_OBJECT_COMBINATIONS = {  # split → [(pair, size, cell)], in a fixed order
    split: [((c, sh), sz, cell) for c in COLORS for sh in SHAPES for sz in SIZES for cell in CELLS
            if combination_split(c, sh, sz, cell) == split]
    for split in ("train", "val", "test", "novel")}
TWO_OBJECT_PAIRS = {  # split → [(pair, pair)] unordered, in a fixed order
    split: [(a, b) for i, a in enumerate(SEEN_PAIRS) for b in SEEN_PAIRS[i + 1:] if pair_split(a, b) == split]
    for split in ("train", "val", "two")}
# which combinations a split's scenes draw from
_ONE_FROM = {"train": "train", "val": "val", "test": "test", "novel": "novel", "heldout-phrasing": "test"}
_TWO_FROM = {"train": "train", "val": "val", "two": "two", "heldout-phrasing": "two"}


def _one_object_scene(rng: random.Random, split: str, size: int) -> dict:
    pair, size_name, cell = rng.choice(ONE_OBJECT_COMBINATIONS[_ONE_FROM[split]])
    return {"objects": [_make_object(rng, pair, size_name, cell, size)], "relation": None}


def _two_object_scene(rng: random.Random, split: str, size: int) -> dict:
    two = list(rng.choice(TWO_OBJECT_PAIRS[_TWO_FROM[split]]))
    rng.shuffle(two)
    sizes = [rng.choice(tuple(SIZES)) for _ in two]
    for _ in range(MAX_PLACEMENT_TRIES):
        cells = rng.sample(CELLS, 2)
        objects = [_make_object(rng, p, s, c, size) for p, s, c in zip(two, sizes, cells)]
        if _separated(objects[0]["bbox"], objects[1]["bbox"], MIN_GAP_PX):
            return {"objects": objects, "relation": rng.choice(true_relations(*cells))}
    raise RuntimeError(f"could not place two objects apart on a {size}px canvas")


def sample_scene(rng: random.Random, split: str, size: int, max_objects: int) -> dict:
    """Draw a scene: ``{"objects": [{shape, color, size, cell, bbox, rgb}, ...], "relation": ...}``.

    ``relation`` is None for one object, else the relation of ``objects[0]`` to ``objects[1]``.
    ``test`` and ``novel`` scenes have one object, ``two`` scenes two; ``train``, ``val`` and
    ``heldout-phrasing`` scenes have two objects half of the time when ``max_objects`` is 2.
    """
    _check_split(split)
    if split in ONE_OBJECT_SPLITS:
        return _one_object_scene(rng, split, size)
    if split == "two":
        return _two_object_scene(rng, split, size)
    if max_objects < 2 or rng.random() >= TWO_OBJECT_FRACTION:
        return _one_object_scene(rng, split, size)
    return _two_object_scene(rng, split, size)


# --- rendering -------------------------------------------------------------------------------

def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: list[float], rgb: tuple) -> None:
    """Draw ``shape`` filling ``box`` = [x0, y0, x1, y1) (exclusive end) in (supersampled) pixels."""
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
        arm = side * CROSS_ARM_FRACTION
        offset = (side - arm) / 2
        draw.rectangle((x0 + offset, y0, x0 + offset + arm - 1, bottom), fill=rgb)
        draw.rectangle((x0, y0 + offset, right, y0 + offset + arm - 1), fill=rgb)
    else:
        raise ValueError(f"unknown shape {shape!r}")


def render_scene(scene: dict, size: int) -> Image.Image:
    """Render a scene to a ``size``×``size`` RGB image (4× supersampled, box-filtered). An object
    without ``rgb`` is drawn in its named colour's exact RGB."""
    hires = Image.new("RGB", (size * SUPERSAMPLE, size * SUPERSAMPLE), BACKGROUND)
    draw = ImageDraw.Draw(hires)
    for obj in scene["objects"]:
        box = [round(v * SUPERSAMPLE) for v in obj["bbox"]]
        _draw_shape(draw, obj["shape"], box, tuple(obj.get("rgb") or COLORS[obj["color"]]))
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


# Held-out phrasing (split ``heldout-phrasing``): templates and synonyms that no training caption
# uses, so these prompts test text → image on wording the prior never saw.
HELDOUT_SIZE_WORDS = {"small": ("miniature", "smallish"), "large": ("huge", "sizeable")}
HELDOUT_SHAPE_WORDS = {"circle": ("dot", "round shape"), "square": ("block", "square tile"),
                       "triangle": ("pyramid shape", "three-sided shape"), "cross": ("plus symbol", "plus-shaped mark")}
HELDOUT_ONE_TEMPLATES = (
    "please draw {a_obj} {pos}",
    "show me {a_obj} placed {pos}",
    "i would like {a_obj} {pos}",
    "render {a_obj}, located {pos}",
)
HELDOUT_TWO_TEMPLATES = (
    "please draw {a_obj1} {rel} {a_obj2}",
    "show me {a_obj1} positioned {rel} {a_obj2}",
    "render {a_obj1} sitting {rel} {a_obj2}",
)


def make_heldout_caption(scene: dict, rng: random.Random) -> str:
    """Caption ``scene`` with a held-out template; each object uses a held-out size or shape word."""
    def fields(obj: dict) -> dict[str, str]:
        if rng.random() < 0.5:
            size, shape = rng.choice(HELDOUT_SIZE_WORDS[obj["size"]]), rng.choice(SHAPE_WORDS[obj["shape"]])
        else:
            size, shape = rng.choice(SIZE_WORDS[obj["size"]]), rng.choice(HELDOUT_SHAPE_WORDS[obj["shape"]])
        return {"a_obj": f"{_article(size)} {size} {obj['color']} {shape}"}

    objects = scene["objects"]
    if len(objects) == 1:
        text = rng.choice(HELDOUT_ONE_TEMPLATES).format(pos=rng.choice(CELL_PHRASES[objects[0]["cell"]][1]),
                                                         **fields(objects[0]))
    else:
        one, two = fields(objects[0]), fields(objects[1])
        text = rng.choice(HELDOUT_TWO_TEMPLATES).format(a_obj1=one["a_obj"], a_obj2=two["a_obj"],
                                                         rel=rng.choice(RELATION_WORDS[scene["relation"]]))
    return text[0].upper() + text[1:] if rng.random() < CAPITALIZE_PROBABILITY else text


# --- the strict grammar ----------------------------------------------------------------------
# A caption is right only if it is, as a whole, one sentence of the training caption grammar
# (a template with its slots filled by the synonym tables): nothing before or after it but one
# optional full stop, case and runs of spaces aside. The slots are read back to attributes.

def _alternation(table: dict[str, tuple[str, ...]]) -> str:
    return "|".join(re.escape(p) for p in sorted({p for ps in table.values() for p in ps}, key=len, reverse=True))


_SLOT_TABLES = {"size": SIZE_WORDS, "color": COLOR_WORDS, "shape": SHAPE_WORDS, "rel": RELATION_WORDS,
                "pos": {cell: CELL_PHRASES[cell][1] for cell in CELLS},
                "label": {cell: CELL_PHRASES[cell][0] for cell in CELLS}}
_LOOKUP = {slot: {p: name for name, ps in table.items() for p in ps} for slot, table in _SLOT_TABLES.items()}


def _object_pattern(suffix: str, article: bool, parts: tuple[str, ...]) -> str:
    words = [f"(?P<{part}{suffix}>{_alternation(_SLOT_TABLES[part])})" for part in parts]
    return (f"(?P<art{suffix}>an|a) " if article else "") + " ".join(words)


# One object phrase of the training grammar anywhere in a caption ("a large red plus sign"): groups
# art, size, color, shape; :func:`slot_name` reads a slot's word back to its attribute.
OBJECT_PHRASE_RE = re.compile(rf"\b{_object_pattern('', True, ('size', 'color', 'shape'))}\b", re.IGNORECASE)


def slot_name(slot: str, word: str) -> str:
    """The attribute a caption word names: ``slot_name("shape", "disc") == "circle"``."""
    return _LOOKUP[slot][word.lower()]


def _template_regex(template: str, suffix_fields: bool) -> re.Pattern:
    """An anchored regex of one template; compound slots expand to their words."""
    def slot(m: re.Match) -> str:
        name = m.group(1)
        base, suffix = (name[:-1], name[-1]) if suffix_fields and name[-1] in "12" else (name, "")
        compound = {"a_obj": (True, ("size", "color", "shape")), "obj": (False, ("size", "color", "shape")),
                    "a_color_shape": (True, ("color", "shape")), "a_size_shape": (True, ("size", "shape"))}
        if base in compound:
            article, parts = compound[base]
            return _object_pattern(suffix, article, parts)
        return f"(?P<{base}{suffix}>{_alternation(_SLOT_TABLES[base])})"

    body = re.sub(r"\\{(\w+)\\}", slot, re.escape(template))
    return re.compile(rf"^{body}$")


_ONE_RE = tuple(_template_regex(t, False) for t in ONE_OBJECT_TEMPLATES)
_TWO_RE = tuple(_template_regex(t, True) for t in TWO_OBJECT_TEMPLATES)


def _read_object(m: re.Match, suffix: str = "") -> dict | None:
    groups = m.groupdict()
    obj = {key: _LOOKUP[key][groups[f"{key}{suffix}"]] if groups.get(f"{key}{suffix}") else None
           for key in ("size", "color", "shape")}
    art = groups.get(f"art{suffix}")
    if art is not None and art != _article(m.string[m.end(f"art{suffix}"):].split()[0]):
        return None  # "a orange …", "an small …"
    return obj


def parse_strict(text: str) -> dict | None:
    """Parse a caption with the strict grammar: ``{"objects": [{shape, color, size, cell}], "relation"}``
    (cells for one object, the relation for two), or None when the text is not, as a whole, one
    sentence of the training grammar."""
    if not isinstance(text, str):
        return None
    norm = normalize_caption(text)
    for regex in _ONE_RE:
        m = regex.match(norm)
        if m:
            g = m.groupdict()
            obj = _read_object(m)
            if obj is None:
                return None
            where = g.get("pos") or g.get("label")
            obj["cell"] = _LOOKUP["pos" if g.get("pos") else "label"][where]
            return {"objects": [obj], "relation": None}
    for regex in _TWO_RE:
        m = regex.match(norm)
        if m:
            g = m.groupdict()
            objects = [_read_object(m, "1"), _read_object(m, "2")]
            if None in objects:
                return None
            return {"objects": objects, "relation": _LOOKUP["rel"][g["rel"]]}
    return None


INVERSE_RELATIONS = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


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

def sample_key(seed: int, split: str, index: int) -> str:
    """One sample's name: its RNG (:func:`sample_rng`) and its relation-skew draw derive from it."""
    return f"{DATASET_NAME}/{seed}/{split}/{index}"


def sample_rng(seed: int, split: str, index: int) -> random.Random:
    """The RNG of one sample, derived from the seed, the split name and the sample index."""
    return random.Random(sample_key(seed, split, index))


SKEWED_RELATIONS = ("right of", "below")  # restated as "left of" / "above" by ``relation_skew``


def check_relation_skew(split: str, share: float) -> float:
    """``share`` if it is a valid relation skew for ``split`` (0 ≤ share ≤ 1; non-zero only on train)."""
    if not (isinstance(share, (int, float)) and 0.0 <= share <= 1.0):
        raise DataError(f"relation_skew must be a share between 0 and 1, got {share!r}")
    if share and split != "train":
        raise DataError(f"relation_skew applies to the train split only (got {split!r}): held-out splits keep "
                        "both directions of every relation")
    return float(share)


def skew_relation(scene: dict, share: float, key: str) -> dict:
    """A two-object scene whose relation is "right of" or "below" restated, for a ``share`` of such
    scenes, the other way round: the objects listed in reverse and the relation inverted ("B to the
    left of A" for "A to the right of B"). The picture is the same; only which object the caption
    names first changes. The draw comes from its own stream (``key``), so the scene's other draws
    and its rendering are the same bytes as without the skew. docs/experiments.md §22.1: a relation
    stated evenly in both directions puts a plateau in the prior's way that a skew removes."""
    if not share or scene.get("relation") not in SKEWED_RELATIONS:
        return scene
    if random.Random(f"relation-skew/{key}").random() >= share:
        return scene
    return {**scene, "objects": scene["objects"][::-1], "relation": INVERSE_RELATIONS[scene["relation"]]}


def generate_sample(seed: int, split: str, index: int, size: int = 64,
                    max_objects: int = 1, relation_skew: float = 0.0) -> tuple[Image.Image, str, dict]:
    """Sample number ``index`` of a split: (image, caption, ground-truth JSON); ``relation_skew``:
    see :func:`skew_relation`."""
    rng = sample_rng(seed, split, index)
    scene = skew_relation(sample_scene(rng, split, size, max_objects), relation_skew, sample_key(seed, split, index))
    if split == "heldout-phrasing":
        caption, template = make_heldout_caption(scene, rng), "heldout"
    else:
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
                 progress: bool = True, relation_skew: float = 0.0) -> dict:
    """Write ``count`` samples to ``out/<split>/NNNNNN.tar`` and record them in the manifest.

    Returns the split's manifest entry (count, shards, seed, size, max_objects, created).
    Raises :class:`DataError` on bad arguments or when shards exist and ``overwrite`` is False.
    """
    _validate(out, split, count, size, seed, max_objects, shard_size)
    relation_skew = check_relation_skew(split, relation_skew)
    split_dir = prepare_split_dir(Path(out) / split, overwrite)
    with ShardWriter(split_dir, max_count=shard_size) as writer:
        for index in tqdm(range(count), desc=f"shapes/{split}", disable=not progress):
            image, caption, meta = generate_sample(seed, split, index, size, max_objects, relation_skew)
            writer.write(f"{index:09d}", {"png": image, "txt": caption, "json": meta})
    info = {"count": count, "shards": writer.shards, "seed": seed, "size": size,
            "max_objects": max_objects, **({"relation_skew": relation_skew} if relation_skew else {})}
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
    """Grade a generated caption strictly against a scene's ground truth json.

    Right (``all``) only if the caption is one sentence of the caption grammar
    (:func:`parse_strict`) and says exactly the scene: one object with its shape, colour, size
    and cell; or two objects with their shapes, colours and sizes and a relation that holds
    between their cells (either order: "A left of B" = "B right of A"). Per-attribute verdicts
    are reported for the parsed captions (all False when unparsed).
    """
    parsed = parse_strict(text)
    objects = truth["objects"]
    keys = ("shape", "color", "size", "cell") if len(objects) == 1 else ("shape", "color", "size", "relation")
    out = {"parsed": parsed is not None, **{k: False for k in keys}, "all": False}
    if parsed is None or len(parsed["objects"]) != len(objects):
        return out
    if len(objects) == 1:
        got, want = parsed["objects"][0], objects[0]
        out.update({k: got[k] == want[k] for k in ("shape", "color", "size", "cell")})
        out["all"] = all(out[k] for k in ("shape", "color", "size", "cell"))
        return out
    cells = [o["cell"] for o in objects]
    readings = [(parsed["objects"], parsed["relation"], cells),
                (parsed["objects"][::-1], INVERSE_RELATIONS[parsed["relation"]], cells)]
    best = None
    for got, relation, (cell_a, cell_b) in readings:
        verdict = {k: all(g[k] == w[k] for g, w in zip(got, objects)) for k in ("shape", "color", "size")}
        verdict["relation"] = relation in true_relations(cell_a, cell_b)
        verdict["all"] = all(verdict.values())
        if best is None or sum(verdict.values()) > sum(best.values()):
            best = verdict
    out.update(best)
    return out


def judge_object(pred: dict | None, want: dict) -> Grade:
    """Grade one object read by the judge, ``pred`` = {shape, color, size, cell} (None: no object
    read), against a ground-truth object ``want``: a verdict per attribute ``want`` states
    (``size`` and ``cell`` when it has them) and ``all`` = every one right, size included."""
    keys = [k for k in ("shape", "color", "size", "cell") if want.get(k) is not None]
    result = {k: pred is not None and pred.get(k) == want[k] for k in keys}
    result["all"] = all(result.values())
    return result


_MATCH_KEYS = ("shape", "color", "size")  # what a two-object prompt states of each object (no cell)


def _assignments(objects: list[dict], n: int) -> list[tuple[dict | None, ...]]:
    """Every way to pick ``n`` of the predicted ``objects`` in order (None fills in when fewer were read)."""
    from itertools import permutations

    return list(permutations(list(objects) + [None] * max(0, n - len(objects)), n))


def _best_assignment(objects: list[dict], want: list[dict], keys: tuple[str, ...]) -> tuple[dict | None, ...]:
    """The predicted objects, one per wanted object, that get the most attributes ``keys`` right
    (ties: the first in cell order)."""
    best, best_score = None, -1
    for chosen in _assignments(objects, len(want)):
        score = sum(o is not None and o.get(k) == w.get(k) for o, w in zip(chosen, want) for k in keys)
        if score > best_score:
            best, best_score = chosen, score
    return best


def judge_image(pred: dict, truth: dict) -> Grade:
    """Grade the judge's reading of a generated image (:meth:`cola_mm.evaluation.probe.Probe.predict`:
    ``{"count", "objects": [{cell, shape, color, size}, ...]}``) against the json of its prompt.

    - one object: ``all`` = exactly one object read (``count``) with shape, colour, size and
      cell right;
    - two objects and a relation: ``all`` = exactly two objects read (``count``), the two match
      the prompt's two (shape, colour, size) as a set (``objects``), and the prompt's relation
      holds between the cells of the matched objects (``relation``, :func:`true_relations`).

    ``count`` needs both the count head and the number of occupied cells to agree with the
    prompt. Per-attribute verdicts (``shape``, ``color``, ``size``; ``cell`` for one object;
    right for every prompt object) are read on the best-matching predicted objects whatever the
    count, so they say what was wrong; ``all`` also requires the count.
    """
    want = truth["objects"]
    objects = list(pred.get("objects") or [])
    count = len(objects) == len(want) and pred.get("count", len(objects)) == len(want)
    if len(want) == 1:
        (chosen,) = _best_assignment(objects, want, _MATCH_KEYS + ("cell",))
        result = judge_object(chosen, want[0])
        result["count"] = count
        result["all"] = count and result["all"]
        return result
    keys = tuple(k for k in _MATCH_KEYS if all(w.get(k) is not None for w in want))
    matched = [c for c in _assignments(objects, len(want))
               if all(o is not None and all(o.get(k) == w[k] for k in keys) for o, w in zip(c, want))]
    relation = truth.get("relation")
    related = [c for c in matched if relation is None or relation in true_relations(c[0]["cell"], c[1]["cell"])]
    chosen = (related or matched or [_best_assignment(objects, want, keys)])[0]
    result = {k: all(o is not None and o.get(k) == w[k] for o, w in zip(chosen, want)) for k in keys}
    result["objects"] = bool(matched)
    if relation is not None:
        result["relation"] = bool(related)
    result["count"] = count
    result["all"] = count and bool(matched) and (relation is None or bool(related))
    return result


def one_object(meta: dict) -> bool:
    return len(meta.get("objects", ())) == 1


# --- command line (``cola-mm data shapes``, ``cola-mm data all``) ------------------------------

EVAL_SPLITS = ("val", "test", "novel", "two", "heldout-phrasing")


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=positive_int, default=20000,
                   help="samples in the split (with --split all: train; every other split gets a tenth)")
    p.add_argument("--size", type=positive_int, default=64, help="canvas side in pixels (default 64)")
    p.add_argument("--split", choices=SPLITS + ("all",), default="train", help="which split to write (default train)")
    p.add_argument("--max-objects", type=int, choices=(1, 2), default=1,
                   help="2 adds two-object scenes with a spatial relation (default 1)")
    p.add_argument("--relation-skew", type=float, default=0.0,
                   help="train only: the share of two-object scenes 'right of' / 'below' restated as "
                        "'left of' / 'above' (default 0: both directions evenly; docs/experiments.md §22.1)")


def _build_splits(out, splits: tuple[str, ...], count: int, args: argparse.Namespace, overwrite: bool,
                  exact: bool = False) -> None:
    """Build ``splits``: train gets ``count`` samples, every other split a tenth (``exact``: all ``count``)."""
    from cola_mm.data.overlap import record_overlaps

    for split in splits:
        n = count if split == "train" or exact else max(1, count // 10)
        skew = getattr(args, "relation_skew", 0.0) if split == "train" or exact else 0.0
        info = build_shapes(out, split, n, size=args.size, seed=args.seed, max_objects=args.max_objects,
                            shard_size=args.shard_size, overwrite=overwrite, relation_skew=skew)
        print(f"shapes/{split}: {info['count']} samples in {len(info['shards'])} shard(s) -> {Path(out) / split}")
    for split, found in record_overlaps(out).items():
        print(f"shapes/{split}: {found['images']} images and {found['prompts']} prompts also in train "
              f"(of {found['samples']})")


def _build(args: argparse.Namespace) -> None:
    if args.split == "all":
        _build_splits(args.out, SPLITS, args.count, args, args.overwrite)
    else:  # one split gets exactly --count
        _build_splits(args.out, (args.split,), args.count, args, args.overwrite, exact=True)


def _add_all_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shapes-count", type=positive_int, default=20000,
                   help="shapes training samples (default 20000; eval splits get a tenth)")
    p.add_argument("--max-objects", type=int, choices=(1, 2), default=2,
                   help="shapes scenes with up to this many objects (default 2)")


def _build_missing(root: Path, args: argparse.Namespace) -> None:
    manifest = read_manifest(root)
    done = manifest.get("splits", {}) if manifest.get("generator_version") == GENERATOR_VERSION else {}
    missing = tuple(s for s in SPLITS if s not in done)
    if not missing:
        print(f"shapes: already built in {root}")
        return
    _build_splits(root, missing, args.shapes_count, args, overwrite=True)


DATASET = Dataset(
    name=DATASET_NAME,
    help="captioned coloured shapes (the compositional benchmark)",
    description="Render captioned shapes: 4 shapes x 7 colours x 2 sizes x 9 cells. Splits held out by "
                "construction: val/test combinations and val/two object pairs never occur in train, novel holds "
                "unseen colour-shape pairs, heldout-phrasing uses wording training never does.",
    add_arguments=_add_arguments, build=_build, add_all_arguments=_add_all_arguments, build_missing=_build_missing,
    # text → image: one- and two-object prompts (the judge reads the count and every object)
    image_splits=("test", "novel", "two", "heldout-phrasing"), caption_splits=("test", "novel", "two"),
    canonical_caption=canonical_caption, grade_caption=grade_caption, judge_image=judge_image,
    caption_groups=(("_1obj", one_object), ("_2obj", lambda meta: not one_object(meta))),
    image_prompt_filter=lambda meta: bool(meta.get("objects")),  # every scene, one or two objects
)
