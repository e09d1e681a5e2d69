"""Icons: captioned scenes of Noto Color Emoji icons, the third image world (issue 18).

``cola-mm data icons --out DIR [--font PATH]`` renders 64 px scenes of one or two icons. Each
icon has a size (small or large) and a cell of the 3×3 grid, with continuous jitter. Every
scene has a background colour from a named palette. Captions are built from the Unicode names
("a large doughnut in the top left on a pale blue background", "a small rocket to the right of
a large cookie on a white background"). The ground truth is in each sample's json.

- **The icons.** They are single code points in U+1F300–1FAFF and U+2600–27BF that the font
  draws: 1,245 with Debian's ``fonts-noto-color-emoji`` 2.042, of 1,280 drawn. Skin-tone modifiers and
  components are left out, and so are names with a size word ("large red circle"), which would
  make a size caption ambiguous. The list comes from the font actually used, so it is stored in
  the manifest.
- **The font** is found at Debian's path or given with ``--font``. Without it, the command
  fails with one line that says how to install it; ``cola-mm data all`` skips the icons with
  that line and builds the rest (icons are an optional dataset: not in the tokenizer's corpus).
- **Splits held out by construction.** The hashes are fixed, so they do not depend on the seed.
  - ``novel``: about 10 % of (icon, background) pairs never appear in training. Their one-icon
    scenes form ``novel``. A tenth of the icons ("alone" icons) appear in training only in
    one-icon scenes, and ``novel``'s two-icon scenes pair them.
  - ``val`` and ``test``: of the seen pairs, the (icon, background, size, cell) combinations
    hashed to bucket 0 form ``val`` and bucket 1 form ``test``. Neither occurs in ``train``, so
    no test image is a training image.
  - ``two``: two-icon scenes whose unordered pair of icons is never in training.
  - ``heldout-phrasing``: ``test`` and ``two`` scenes captioned with templates and words that
    no training caption uses.

The icon judge is :mod:`cola_mm.evaluation.icon_judge`, a per-cell CNN trained on renders
from its own namespace; the suite reads icons rows wherever a dataset root holds ``icons/``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import unicodedata
from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont
from tqdm import tqdm

from cola_mm.data.registry import Dataset, Grade, normalize_caption, positive_int
from cola_mm.data.shapes import (CELL_PHRASES, CELLS, RELATION_WORDS, SIZE_WORDS, cell_of, check_relation_skew,
                                 skew_relation, true_relations)
from cola_mm.data.shards import (DataError, ShardWriter, check_generator_args, prepare_split_dir, read_manifest,
                                 update_manifest)

DATASET_NAME = "icons"
GENERATOR_VERSION = "icons-1"
FONT_PATHS = ("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf",
              "/usr/share/fonts/noto/NotoColorEmoji.ttf",
              "/System/Library/Fonts/Apple Color Emoji.ttc")
FONT_SIZE = 109  # the one bitmap size Noto Color Emoji carries
RANGES = ((0x1F300, 0x1FAFF), (0x2600, 0x27BF))
EXCLUDED_WORDS = {"large", "small", "big", "medium", "tiny", "modifier", "component"}
BACKGROUNDS = {"white": (250, 250, 250), "pale blue": (200, 225, 245), "pale yellow": (250, 240, 190),
               "pale green": (205, 240, 205), "pink": (250, 210, 225), "grey": (190, 190, 190),
               "dark blue": (35, 45, 90), "black": (18, 18, 18)}
SIZES = {"small": 1 / 4, "large": 1 / 2}  # icon side as a fraction of the canvas side
SPLITS = ("train", "val", "test", "novel", "two", "heldout-phrasing")
JITTER_FRACTION = 1 / 8  # max centre offset from the cell centre, in cell sides
SIZE_JITTER = 0.08
TWO_FRACTION = 0.4  # share of two-icon scenes in train, val and heldout-phrasing
MIN_SIZE = 32
BUCKETS = 10
MAX_TRIES = 1000
MISSING_FONT = ("Noto Color Emoji is not installed (looked in {paths}): install it with `sudo apt-get install "
                "fonts-noto-color-emoji`, or pass --font PATH")


# --------------------------------------------------------------------------- the icons


def find_font(path: str | os.PathLike | None = None) -> Path:
    if path is not None:
        if not Path(path).is_file():
            raise DataError(f"--font: no file {path}")
        return Path(path)
    for p in FONT_PATHS:
        if Path(p).is_file():
            return Path(p)
    raise DataError(MISSING_FONT.format(paths=", ".join(FONT_PATHS)))


@lru_cache(maxsize=4)
def load_font(path: str) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, FONT_SIZE)
    except OSError as err:
        raise DataError(f"{path}: not a colour bitmap font Pillow can open at size {FONT_SIZE} ({err})") from None


@lru_cache(maxsize=1)
def all_names() -> tuple[str, ...]:
    """Every name an icon can have, from Unicode alone (no font): what the grader recognises, so a
    caption naming the wrong icon is read, and graded wrong, rather than left unparsed."""
    names = set()
    for lo, hi in RANGES:
        for cp in range(lo, hi + 1):
            name = unicodedata.name(chr(cp), None)
            if name is not None and not EXCLUDED_WORDS & set(name.lower().split()):
                names.add(name.lower())
    return tuple(sorted(names))


@lru_cache(maxsize=4)
def list_icons(font_path: str) -> tuple[tuple[int, str], ...]:
    """(code point, name) of every usable icon the font draws, in code point order."""
    font = load_font(font_path)
    found = []
    for lo, hi in RANGES:
        for cp in range(lo, hi + 1):
            name = unicodedata.name(chr(cp), None)
            if name is None or EXCLUDED_WORDS & set(name.lower().split()):
                continue
            canvas = Image.new("RGBA", (136, 128), (0, 0, 0, 0))
            ImageDraw.Draw(canvas).text((0, 0), chr(cp), font=font, embedded_color=True)
            if canvas.getbbox() is not None:
                found.append((cp, name.lower()))
    if len(found) < 20:
        raise DataError(f"{font_path} draws only {len(found)} icons in U+1F300-1FAFF and U+2600-27BF: "
                        "not a colour emoji font")
    return tuple(found)


@lru_cache(maxsize=4096)
def icon_bitmap(font_path: str, cp: int) -> Image.Image:
    """The icon's glyph, RGBA, cropped to its visible pixels."""
    canvas = Image.new("RGBA", (160, 160), (0, 0, 0, 0))
    ImageDraw.Draw(canvas).text((10, 10), chr(cp), font=load_font(font_path), embedded_color=True)
    return canvas.crop(canvas.getbbox())


# --------------------------------------------------------------------------- held-out construction


def _bucket(*parts: str) -> int:
    digest = hashlib.sha256(("icons/" + "/".join(parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def is_alone(name: str) -> bool:
    """An icon seen in training only in one-icon scenes."""
    return _bucket("alone", name) == 0


def pair_split(name: str, background: str) -> str:
    return "novel" if _bucket("pair", name, background) == 0 else "seen"


def combination_split(name: str, background: str, size: str, cell: str) -> str:
    """train, val, test or novel, for a one-icon scene."""
    if pair_split(name, background) == "novel":
        return "novel"
    return {0: "val", 1: "test"}.get(_bucket("combo", name, background, size, cell), "train")


def two_split(a: str, b: str) -> str:
    """novel (an alone icon), val, two or train, for an unordered pair of icons."""
    if is_alone(a) or is_alone(b):
        return "novel"
    first, second = sorted((a, b))
    return {0: "val", 1: "two"}.get(_bucket("two", first, second), "train")


# --------------------------------------------------------------------------- scenes


def _place(rng: random.Random, cell: str, side: float, canvas: int) -> list[float]:
    row, col = divmod(CELLS.index(cell), 3)
    c = canvas / 3
    box = []
    for band in (col, row):
        centre = (band + 0.5) * c + rng.uniform(-1, 1) * JITTER_FRACTION * c
        lo = min(max(centre - side / 2, 0.0), canvas - side)
        box.append(lo)
    x0, y0 = box
    return [x0, y0, x0 + side, y0 + side]


def place_icon(rng: random.Random, cp: int, name: str, size: str, cell: str, canvas: int) -> dict:
    side = SIZES[size] * canvas * (1 + rng.uniform(-SIZE_JITTER, SIZE_JITTER))
    for _ in range(MAX_TRIES):
        box = _place(rng, cell, side, canvas)
        if cell_of(box, canvas) == cell:
            return {"icon": name, "codepoint": f"U+{cp:04X}", "size": size, "cell": cell,
                    "bbox": [round(v, 2) for v in box]}
    raise RuntimeError(f"cannot place a {size} icon in cell {cell} of a {canvas}px canvas")


def separated(a: list[float], b: list[float]) -> bool:
    return a[2] + 1 <= b[0] or b[2] + 1 <= a[0] or a[3] + 1 <= b[1] or b[3] + 1 <= a[1]


def sample_scene(rng: random.Random, split: str, icons: tuple[tuple[int, str], ...], canvas: int) -> dict:
    """A scene: ``{"objects": [{icon, codepoint, size, cell, bbox}], "relation", "background"}``."""
    if split not in SPLITS:
        raise DataError(f"unknown icons split {split!r}; choose one of {', '.join(SPLITS)}")
    two = split == "two" or (split in ("train", "val", "heldout-phrasing") and rng.random() < TWO_FRACTION) \
        or (split == "novel" and rng.random() < 0.5)
    want = {"heldout-phrasing": "two" if two else "test"}.get(split, split)
    for _ in range(MAX_TRIES * 10):
        background = rng.choice(tuple(BACKGROUNDS))
        if not two:
            cp, name = rng.choice(icons)
            size, cell = rng.choice(tuple(SIZES)), rng.choice(CELLS)
            if combination_split(name, background, size, cell) != want:
                continue
            return {"objects": [place_icon(rng, cp, name, size, cell, canvas)], "relation": None,
                    "background": background}
        (cp1, n1), (cp2, n2) = rng.sample(icons, 2)
        if two_split(n1, n2) != want:
            continue
        cells = rng.sample(CELLS, 2)
        objects = [place_icon(rng, cp, n, rng.choice(tuple(SIZES)), c, canvas) for (cp, n), c in
                   zip(((cp1, n1), (cp2, n2)), cells)]
        if separated(objects[0]["bbox"], objects[1]["bbox"]):
            return {"objects": objects, "relation": rng.choice(true_relations(*cells)), "background": background}
    raise RuntimeError(f"no {split} scene found")


def render_scene(scene: dict, canvas: int, font_path: str) -> Image.Image:
    img = Image.new("RGB", (canvas, canvas), BACKGROUNDS[scene["background"]])
    for obj in scene["objects"]:
        x0, y0, x1, y1 = obj["bbox"]
        bitmap = icon_bitmap(font_path, int(obj["codepoint"][2:], 16))
        w, h = bitmap.size
        scale = (x1 - x0) / max(w, h)  # the glyph's longer side fills the box
        glyph = bitmap.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
        left = round(x0 + ((x1 - x0) - glyph.width) / 2)
        top = round(y0 + ((y1 - y0) - glyph.height) / 2)
        img.paste(glyph, (left, top), glyph)
    return img


# --------------------------------------------------------------------------- captions


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


ONE_TEMPLATES = ("{a_obj} {pos} on {a_bg} background",
                 "{a_obj} {pos}, {bg} background",
                 "{label}: {a_obj} on {a_bg} background",
                 "on {a_bg} background, {a_obj} {pos}",
                 "an image of {a_obj} {pos} on {a_bg} background",
                 "there is {a_obj} {pos} on {a_bg} background",
                 "{a_bg} background with {a_obj} {pos}")
TWO_TEMPLATES = ("{a_obj1} {rel} {a_obj2} on {a_bg} background",
                 "{a_obj1} {rel} {a_obj2}, {bg} background",
                 "{a_bg} background with {a_obj1} {rel} {a_obj2}",
                 "there is {a_obj1} {rel} {a_obj2} on {a_bg} background")
HELDOUT_ONE = ("please draw {a_obj} {pos} against {a_bg} backdrop",
               "show me {a_obj} placed {pos}, the backdrop {bg}")
HELDOUT_TWO = ("please draw {a_obj1} sitting {rel} {a_obj2} against {a_bg} backdrop",
               "show me {a_obj1} positioned {rel} {a_obj2}, the backdrop {bg}")
HELDOUT_SIZES = {"small": ("miniature", "smallish"), "large": ("huge", "sizeable")}


def _obj(rng: random.Random, obj: dict, heldout: bool) -> str:
    size = rng.choice((HELDOUT_SIZES if heldout else SIZE_WORDS)[obj["size"]])
    return f"{_article(size)} {size} {obj['icon']}"


def make_caption(scene: dict, rng: random.Random, heldout: bool = False) -> tuple[str, str]:
    """(caption, template id) of ``scene``; ``heldout`` uses the held-out templates and words."""
    objects, bg = scene["objects"], scene["background"]
    fields = {"bg": bg, "a_bg": f"{_article(bg)} {bg}"}
    if len(objects) == 1:
        templates = HELDOUT_ONE if heldout else ONE_TEMPLATES
        labels, phrases = CELL_PHRASES[objects[0]["cell"]]
        fields.update(a_obj=_obj(rng, objects[0], heldout), pos=rng.choice(phrases), label=rng.choice(labels))
    else:
        templates = HELDOUT_TWO if heldout else TWO_TEMPLATES
        fields.update(a_obj1=_obj(rng, objects[0], heldout), a_obj2=_obj(rng, objects[1], heldout),
                      rel=rng.choice(RELATION_WORDS[scene["relation"]]))
    k = rng.randrange(len(templates))
    text = templates[k].format(**fields)
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:]
    return text, f"{'heldout' if heldout else len(objects)}/{k}"


def canonical_caption(meta: dict) -> str:
    objects, bg = meta["objects"], meta["background"]
    if len(objects) == 1:
        o = objects[0]
        return f"{_article(o['size'])} {o['size']} {o['icon']} {CELL_PHRASES[o['cell']][1][0]} on {_article(bg)} {bg} " \
               f"background"
    a, b = objects
    rel = RELATION_WORDS[meta["relation"]][0]
    return f"{_article(a['size'])} {a['size']} {a['icon']} {rel} {_article(b['size'])} {b['size']} {b['icon']} " \
           f"on {_article(bg)} {bg} background"


# --------------------------------------------------------------------------- the strict grammar


def _alt(phrases) -> str:
    return "|".join(re.escape(p) for p in sorted(set(phrases), key=len, reverse=True))


@lru_cache(maxsize=4)
def _grammar(names: tuple[str, ...]) -> list[tuple[re.Pattern, int]]:
    """Anchored regexes of every training template (one-icon: 1, two-icon: 2)."""
    sizes = {p: s for s, ps in SIZE_WORDS.items() for p in ps}
    size, icon = f"(?:{_alt(sizes)})", f"(?:{_alt(names)})"
    bg = f"(?:{_alt(BACKGROUNDS)})"
    pos = f"(?:{_alt(p for c in CELLS for p in CELL_PHRASES[c][1])})"
    label = f"(?:{_alt(p for c in CELLS for p in CELL_PHRASES[c][0])})"
    rel = f"(?:{_alt(p for ps in RELATION_WORDS.values() for p in ps)})"

    def obj(tag: str) -> str:
        return f"(?:an|a) (?P<size{tag}>{size}) (?P<icon{tag}>{icon})"

    out = []
    for templates, n in ((ONE_TEMPLATES, 1), (TWO_TEMPLATES, 2)):
        for t in templates:
            pattern = re.escape(t)
            for field, regex in (("a_obj1", obj("1")), ("a_obj2", obj("2")), ("a_obj", obj("1")),
                                 ("a_bg", f"(?:an|a) (?P<bg>{bg})"), ("bg", f"(?P<bg>{bg})"),
                                 ("pos", f"(?P<pos>{pos})"), ("label", f"(?P<label>{label})"),
                                 ("rel", f"(?P<rel>{rel})")):
                pattern = pattern.replace(re.escape("{" + field + "}"), regex)
            out.append((re.compile(f"^{pattern}$"), n))
    return out


def parse_caption(text: str, names: tuple[str, ...] | None = None) -> dict | None:
    """A caption of the training grammar → ``{"objects": [{icon, size, cell}], "relation",
    "background"}``; None for anything else."""
    if not isinstance(text, str):
        return None
    names = all_names() if names is None else names
    norm = normalize_caption(text)
    sizes = {p: s for s, ps in SIZE_WORDS.items() for p in ps}
    cells = {p: c for c in CELLS for p in (*CELL_PHRASES[c][0], *CELL_PHRASES[c][1])}
    rels = {p: r for r, ps in RELATION_WORDS.items() for p in ps}
    for regex, n in _grammar(names):
        m = regex.match(norm)
        if m is None:
            continue
        g = m.groupdict()
        if n == 1:
            cell = cells[g.get("pos") or g.get("label")]
            return {"objects": [{"icon": g["icon1"], "size": sizes[g["size1"]], "cell": cell}], "relation": None,
                    "background": g["bg"]}
        return {"objects": [{"icon": g["icon1"], "size": sizes[g["size1"]], "cell": None},
                            {"icon": g["icon2"], "size": sizes[g["size2"]], "cell": None}],
                "relation": rels[g["rel"]], "background": g["bg"]}
    return None


def grade_caption(text: str, truth: dict) -> Grade:
    """Strict: the caption must be one sentence of the grammar, naming the right icon(s), size(s),
    cell (one icon) or relation (two), and background."""
    parsed = parse_caption(text)
    keys = ("icon", "size", "cell", "relation", "background", "count")
    if parsed is None:
        return {**{k: False for k in keys}, "parsed": False, "all": False}
    want = truth["objects"]
    got = parsed["objects"]
    count = len(got) == len(want)
    one = len(want) == 1
    icon = count and all(g["icon"] == w["icon"] for g, w in zip(got, want))
    size = count and all(g["size"] == w["size"] for g, w in zip(got, want))
    cell = count and (not one or got[0]["cell"] == want[0]["cell"])
    relation = count and (one or parsed["relation"] == truth["relation"])
    background = parsed["background"] == truth["background"]
    verdict = {"icon": icon, "size": size, "cell": cell, "relation": relation, "background": background,
               "count": count, "parsed": True}
    verdict["all"] = all(verdict[k] for k in keys)
    return verdict


# --------------------------------------------------------------------------- samples and shards


def generate_sample(seed: int, split: str, index: int, icons, font_path: str, size: int = 64,
                    relation_skew: float = 0.0) -> tuple:
    key = f"{DATASET_NAME}/{seed}/{split}/{index}"  # the sample's RNG and its relation-skew draw
    rng = random.Random(key)
    scene = skew_relation(sample_scene(rng, split, icons, size), relation_skew, key)
    caption, template = make_caption(scene, rng, heldout=split == "heldout-phrasing")
    meta = {**scene, "caption": caption, "caption_template": template, "split": split, "index": index,
            "seed": seed, "image_size": size, "dataset": DATASET_NAME, "generator_version": GENERATOR_VERSION}
    return render_scene(scene, size, font_path), caption, meta


def build_icons(out: str | os.PathLike, split: str, count: int, size: int = 64, seed: int = 0,
                shard_size: int = 1000, overwrite: bool = False, font: str | os.PathLike | None = None,
                progress: bool = True, relation_skew: float = 0.0) -> dict:
    font_path = str(find_font(font))
    if not (isinstance(count, int) and count >= 1):
        raise DataError(f"count must be an integer >= 1, got {count!r}")
    if split not in SPLITS:
        raise DataError(f"unknown icons split {split!r}; choose one of {', '.join(SPLITS)}")
    relation_skew = check_relation_skew(split, relation_skew)
    check_generator_args(out, DATASET_NAME, size, seed, shard_size, MIN_SIZE)
    icons = list_icons(font_path)
    split_dir = prepare_split_dir(Path(out) / split, overwrite)
    with ShardWriter(split_dir, max_count=shard_size) as writer:
        for index in tqdm(range(count), desc=f"icons/{split}", disable=not progress):
            image, caption, meta = generate_sample(seed, split, index, icons, font_path, size, relation_skew)
            writer.write(f"{index:09d}", {"png": image, "txt": caption, "json": meta})
    info = {"count": count, "shards": writer.shards, "seed": seed, "size": size,
            **({"relation_skew": relation_skew} if relation_skew else {})}
    manifest = update_manifest(out, DATASET_NAME, GENERATOR_VERSION, split, info,
                               icons=[[f"U+{cp:04X}", name] for cp, name in icons],
                               backgrounds={k: list(v) for k, v in BACKGROUNDS.items()}, sizes=dict(SIZES),
                               cells=list(CELLS), font=font_path)
    return manifest["splits"][split]


def icon_names(root: str | os.PathLike) -> tuple[str, ...]:
    """The icon names a built dataset used (its manifest)."""
    return tuple(name for _, name in read_manifest(root).get("icons", ()))


# --------------------------------------------------------------------------- command line


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=positive_int, default=20000,
                   help="samples in the split (with --split all: train; every other split gets a tenth)")
    p.add_argument("--size", type=positive_int, default=64, help="canvas side in pixels (default 64)")
    p.add_argument("--split", choices=SPLITS + ("all",), default="all", help="which split to write (default all)")
    p.add_argument("--font", default=None, help="a colour emoji font file (default: Debian's Noto Color Emoji)")
    p.add_argument("--relation-skew", type=float, default=0.0,
                   help="train only: the share of two-icon scenes 'right of' / 'below' restated as "
                        "'left of' / 'above' (default 0: both directions evenly; docs/experiments.md §22.1)")


def _build(args: argparse.Namespace) -> None:
    splits = SPLITS if args.split == "all" else (args.split,)
    for split in splits:
        n = args.count if split == "train" or args.split != "all" else max(1, args.count // 10)
        skew = args.relation_skew if split == "train" or args.split != "all" else 0.0
        info = build_icons(args.out, split, n, size=args.size, seed=args.seed, shard_size=args.shard_size,
                           overwrite=args.overwrite, font=args.font, relation_skew=skew)
        print(f"icons/{split}: {info['count']} samples in {len(info['shards'])} shard(s) -> {Path(args.out) / split}")


def _add_all_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--icons-count", type=positive_int, default=20000,
                   help="icons training scenes (default 20000; eval splits get a tenth); built only where the "
                        "Noto Color Emoji font is installed")
    p.add_argument("--icons-font", default=None, help="a colour emoji font file for the icons (default: Debian's)")


def _build_missing(root: Path, args: argparse.Namespace) -> None:
    """`cola-mm data all`: the icons splits not built yet under ``root``. Optional: without the font
    this prints why and how to install it, and the other datasets are still built."""
    try:
        font = find_font(getattr(args, "icons_font", None))
    except DataError as err:
        print(f"icons: skipped ({err})")
        return
    manifest = read_manifest(root)
    done = manifest.get("splits", {}) if manifest.get("generator_version") == GENERATOR_VERSION else {}
    missing = tuple(s for s in SPLITS if s not in done)
    if not missing:
        print(f"icons: already built in {root}")
        return
    count = getattr(args, "icons_count", 20000)
    for split in missing:
        n = count if split == "train" else max(1, count // 10)
        info = build_icons(root, split, n, size=args.size, seed=args.seed, shard_size=args.shard_size,
                           overwrite=True, font=font)
        print(f"icons/{split}: {info['count']} samples in {len(info['shards'])} shard(s) -> {root / split}")


def judge_image(pred: dict, truth: dict, top_k: int = 1) -> Grade:
    """Grade the icon judge's reading of an image (:meth:`cola_mm.evaluation.icon_judge.IconJudge.predict`)
    against a scene's json: the count, the background, and every icon at its cell with its size
    (``icon``: the cell's top-1 icon, or within its top ``top_k``); ``all`` needs every one of them.
    ``icon_top5`` (the right icon among a cell's five most likely, cells right) is reported beside
    and is not part of ``all``."""
    want = {o["cell"]: o for o in truth["objects"]}
    got = {o["cell"]: o for o in pred["objects"]}
    cells = set(got) == set(want)

    def icon_right(k: int) -> bool:
        return cells and all((got[c]["icon"] == w["icon"]) if k == 1 else (w["icon"] in got[c]["top"][:k])
                             for c, w in want.items())

    verdict = {"count": pred["count"] == len(truth["objects"]) and len(got) == len(want), "cell": cells,
               "icon": icon_right(top_k), "size": cells and all(got[c]["size"] == w["size"] for c, w in want.items()),
               "background": pred["background"] == truth["background"]}
    verdict["all"] = all(verdict.values())
    verdict["icon_top5"] = icon_right(5)
    return verdict


DATASET = Dataset(
    name=DATASET_NAME,
    help="captioned scenes of colour emoji icons (Noto Color Emoji; ~1,280 icons)",
    description="Render 64 px scenes of one or two Noto Color Emoji icons: size, 3x3 cell, background colour, "
                "captions from the Unicode names. Splits held out by construction: val/test combinations never in "
                "train, novel (icon, background) pairs and icons seen only alone, unseen icon pairs in two, "
                "heldout-phrasing wording. Needs `sudo apt-get install fonts-noto-color-emoji` (or --font).",
    add_arguments=_add_arguments, build=_build, add_all_arguments=_add_all_arguments, build_missing=_build_missing,
    in_all=False,  # optional: `data all` builds it where the font is installed; not in the tokenizer
    # evaluated where built (registry.evaluated): text → image is read by the icon judge
    image_splits=("test", "novel", "two", "heldout-phrasing"), caption_splits=("test", "novel", "two"),
    canonical_caption=canonical_caption, grade_caption=grade_caption, judge_image=judge_image, judge="icons",
    caption_groups=(("_1obj", lambda meta: len(meta.get("objects", ())) == 1),
                    ("_2obj", lambda meta: len(meta.get("objects", ())) == 2)),
)
