"""Captioned shapes: renders match the spec, captions parse back, splits are held out by construction."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

from cola_mm.data.shapes import (ALL_PAIRS, BACKGROUND, CELLS, COLOR_JITTER, COLORS, GRID, JITTER_FRACTION,
                                 MIN_GAP_PX, NOVEL_PAIRS, ONE_OBJECT_COMBINATIONS, ONE_OBJECT_TEMPLATES, SHAPES,
                                 SIZE_JITTER, SIZES, SPLITS, TWO_OBJECT_PAIRS, TWO_OBJECT_TEMPLATES, build_shapes,
                                 caption_attributes, combination_split, generate_sample, make_caption, pair_split,
                                 parse_caption, parse_strict, render_scene, sample_rng, sample_scene)
from cola_mm.data.shards import DataError

SPEC_COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
               "yellow": (235, 200, 30), "purple": (140, 60, 180), "orange": (245, 130, 30),
               "black": (25, 25, 25)}


def scenes(split: str, n: int, size: int = 64, max_objects: int = 2, seed: int = 0):
    for i in range(n):
        yield sample_scene(sample_rng(seed, split, i), split, size, max_objects)


def centre_cell(bbox: list[int], size: int) -> str:
    """The test's own cell computation: which third of each axis holds the bbox centre."""
    x0, y0, x1, y1 = bbox
    col = int((x0 + x1) / 2 * GRID // size)
    row = int((y0 + y1) / 2 * GRID // size)
    return CELLS[row * GRID + col]


def test_spec_constants():
    assert COLORS == SPEC_COLORS
    assert BACKGROUND == (245, 245, 245)
    assert set(SHAPES) == {"circle", "square", "triangle", "cross"}
    assert CELLS == ("top left", "top", "top right", "left", "center", "right",
                     "bottom left", "bottom", "bottom right")
    assert len(ALL_PAIRS) == 28 and 1 <= len(NOVEL_PAIRS) < 28
    assert all(pair in ALL_PAIRS for pair in NOVEL_PAIRS)
    seen = [p for p in ALL_PAIRS if p not in NOVEL_PAIRS]  # every colour and shape still trains
    assert {c for c, _ in seen} == set(COLORS) and {s for _, s in seen} == set(SHAPES)


@pytest.mark.parametrize("size", [16, 17, 23, 31, 48, 64, 97, 128])
def test_geometry_sizes_cells_and_canvas(size):
    for scene in scenes("train", 300, size=size):
        for obj in scene["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            assert 0 <= x0 < x1 <= size + 1e-6 and 0 <= y0 < y1 <= size + 1e-6
            assert x1 - x0 == pytest.approx(y1 - y0, abs=2e-3)  # square bboxes
            nominal = SIZES[obj["size"]] * size  # 1/5 or 2/5 of the side, jittered
            assert (1 - SIZE_JITTER) * nominal - 2e-3 <= x1 - x0 <= (1 + SIZE_JITTER) * nominal + 2e-3
            assert centre_cell(obj["bbox"], size) == obj["cell"]
            row, col = divmod(CELLS.index(obj["cell"]), GRID)
            cell_side = size / GRID
            dx = (x0 + x1) / 2 - (col + 0.5) * cell_side
            dy = (y0 + y1) / 2 - (row + 0.5) * cell_side
            assert max(abs(dx), abs(dy)) <= JITTER_FRACTION * cell_side + 1e-3  # small jitter


def test_sizes_and_colours_vary_continuously_within_their_names():
    sides = {name: [] for name in SIZES}
    rgbs = {name: set() for name in COLORS}
    for scene in scenes("train", 800):
        for obj in scene["objects"]:
            sides[obj["size"]].append(obj["bbox"][2] - obj["bbox"][0])
            assert max(abs(a - b) for a, b in zip(obj["rgb"], COLORS[obj["color"]])) <= COLOR_JITTER
            rgbs[obj["color"]].add(tuple(obj["rgb"]))
    for name, values in sides.items():  # 12.8 or 25.6 px ± 10 %, continuously
        nominal = SIZES[name] * 64
        assert min(values) < nominal * 0.95 and max(values) > nominal * 1.05 and len(set(values)) > 0.9 * len(values)
    assert all(len(v) > 20 for v in rgbs.values())
    assert max(sides["small"]) < min(sides["large"])  # the names stay apart


def test_renders_have_their_colours_and_fill_their_bboxes():
    size = 64
    for split in ("train", "novel", "two"):
        for scene in scenes(split, 150, size=size):
            img = np.asarray(render_scene(scene, size)).astype(int)
            assert img.shape == (size, size, 3)
            outside = np.ones((size, size), bool)
            for obj in scene["objects"]:
                x0, y0, x1, y1 = obj["bbox"]
                i0, j0, i1, j1 = int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))
                outside[j0:j1, i0:i1] = False
                rgb = np.array(obj["rgb"])
                patch = img[j0:j1, i0:i1]
                # the centre pixel is inside every shape, and exactly the object's colour
                cy, cx = int((y0 + y1) / 2), int((x0 + x1) / 2)
                assert tuple(img[cy, cx]) == tuple(rgb), obj
                ink = patch[np.any(patch != BACKGROUND, axis=-1)]
                mode, _ = Counter(map(tuple, ink)).most_common(1)[0]
                assert mode == tuple(rgb)
                # the shape reaches within a pixel of all four sides of its bbox
                rows = np.nonzero(np.any(patch != BACKGROUND, axis=(1, 2)))[0] + j0
                cols = np.nonzero(np.any(patch != BACKGROUND, axis=(0, 2)))[0] + i0
                assert abs(rows[0] - y0) <= 1 and abs(rows[-1] + 1 - y1) <= 1, obj
                assert abs(cols[0] - x0) <= 1 and abs(cols[-1] + 1 - x1) <= 1, obj
                if obj["shape"] == "square":  # full inside, anti-aliased only on the border
                    assert np.all(img[j0 + 1:j1 - 1, i0 + 1:i1 - 1] == rgb)
            assert np.all(img[outside] == BACKGROUND)


def test_shapes_are_distinguishable_by_fill():
    """Fill fraction of the bbox separates the shapes (circle π/4, triangle 1/2, cross 5/9)."""
    expected = {"square": 1.0, "circle": np.pi / 4, "triangle": 0.5, "cross": 5 / 9}
    for scene in scenes("train", 200, max_objects=1):
        obj = scene["objects"][0]
        if obj["size"] != "large":
            continue
        x0, y0, x1, y1 = obj["bbox"]
        img = np.asarray(render_scene(scene, 64)).astype(float)
        bg, rgb = np.array(BACKGROUND), np.array(obj["rgb"])
        coverage = (((img - bg) @ (rgb - bg)) / ((rgb - bg) @ (rgb - bg))).sum()
        assert abs(coverage / (x1 - x0) ** 2 - expected[obj["shape"]]) < 0.05, obj


def test_two_object_scenes():
    size, counts = 64, Counter()
    for scene in scenes("train", 2000, size=size):
        counts[len(scene["objects"])] += 1
        if len(scene["objects"]) == 1:
            assert scene["relation"] is None
            continue
        a, b = scene["objects"]
        assert a["cell"] != b["cell"]
        assert (a["color"], a["shape"]) != (b["color"], b["shape"])
        ax0, ay0, ax1, ay1 = a["bbox"]
        bx0, by0, bx1, by1 = b["bbox"]
        gap = max(bx0 - ax1, ax0 - bx1, by0 - ay1, ay0 - by1)
        assert gap >= MIN_GAP_PX
        (ar, ac), (br, bc) = divmod(CELLS.index(a["cell"]), 3), divmod(CELLS.index(b["cell"]), 3)
        acx, acy, bcx, bcy = (ax0 + ax1) / 2, (ay0 + ay1) / 2, (bx0 + bx1) / 2, (by0 + by1) / 2
        relation_holds = {"left of": ac < bc and acx < bcx, "right of": ac > bc and acx > bcx,
                          "above": ar < br and acy < bcy, "below": ar > br and acy > bcy}
        assert relation_holds[scene["relation"]], scene
    assert 0.4 < counts[2] / 2000 < 0.6
    assert all(len(s["objects"]) == 1 for s in scenes("train", 200, max_objects=1))


def test_novel_pairs_only_in_novel_split():
    for split in ("train", "val", "test", "two", "heldout-phrasing"):
        for scene in scenes(split, 2000):
            for obj in scene["objects"]:
                assert (obj["color"], obj["shape"]) not in NOVEL_PAIRS
    used = set()
    for scene in scenes("novel", 2000):
        assert len(scene["objects"]) == 1
        used.add((scene["objects"][0]["color"], scene["objects"][0]["shape"]))
    assert used == set(NOVEL_PAIRS)


def test_evaluation_combinations_never_occur_in_train():
    """Held out by construction: a val/test combination (colour, shape, size, cell) or a val/two
    pair of objects is never drawn by train, for any seed."""
    held_one = {c for split in ("val", "test", "novel") for c in ONE_OBJECT_COMBINATIONS[split]}
    held_two = {frozenset(p) for split in ("val", "two") for p in TWO_OBJECT_PAIRS[split]}
    for seed in (0, 7):
        for scene in scenes("train", 3000, seed=seed):
            objs = scene["objects"]
            if len(objs) == 1:
                o = objs[0]
                assert ((o["color"], o["shape"]), o["size"], o["cell"]) not in held_one
            else:
                assert frozenset(((o["color"], o["shape"]) for o in objs)) not in held_two
    for scene in scenes("test", 500):
        o = scene["objects"][0]
        assert combination_split(o["color"], o["shape"], o["size"], o["cell"]) == "test"
    for scene in scenes("two", 500):
        a, b = ((o["color"], o["shape"]) for o in scene["objects"])
        assert pair_split(a, b) == "two" and len(scene["objects"]) == 2


def test_every_split_covers_every_attribute():
    for split in ("train", "val", "test"):
        combos = ONE_OBJECT_COMBINATIONS[split]
        assert {c for (c, _), _, _ in combos} == set(COLORS), split
        assert {s for (_, s), _, _ in combos} == set(SHAPES), split
        assert {z for _, z, _ in combos} == set(SIZES), split
        assert {cell for _, _, cell in combos} == set(CELLS), split
    for split in ("train", "val", "two"):
        pairs = TWO_OBJECT_PAIRS[split]
        assert {c for p in pairs for c, _ in p} == set(COLORS) and {s for p in pairs for _, s in p} == set(SHAPES)


def test_no_render_repeats():
    from cola_mm.data.overlap import image_digest

    digests = {image_digest(render_scene(s, 64)) for s in scenes("test", 600)}
    assert len(digests) == 600


def test_splits_differ_for_the_same_seed():
    firsts = {split: [json.dumps(s, sort_keys=True) for s in scenes(split, 50)] for split in SPLITS}
    assert len({tuple(v) for v in firsts.values()}) == len(SPLITS)


def test_caption_round_trip_over_thousands_of_scenes():
    used = Counter()
    for split in [s for s in SPLITS if s != "heldout-phrasing"]:
        for i in range(1000):
            _, caption, meta = generate_sample(0, split, i, 64, max_objects=2)
            used[meta["caption_template"]] += 1
            parsed = parse_caption(caption)
            assert parsed == caption_attributes(meta), (caption, parsed)
            assert parse_strict(caption) == {"objects": [{k: o[k] for k in ("shape", "color", "size")}
                                                         | ({"cell": o["cell"]} if len(meta["objects"]) == 1 else {})
                                                         for o in meta["objects"]],
                                             "relation": meta["relation"]}, caption
            if len(meta["objects"]) == 1:  # the caption alone fixes the whole scene
                obj = meta["objects"][0]
                assert parsed["objects"][0] == {k: obj[k] for k in ("shape", "color", "size", "cell")}
            else:
                truth = [(o["shape"], o["color"], o["size"]) for o in meta["objects"]]
                got = [(o["shape"], o["color"], o["size"]) for o in parsed["objects"]]
                assert got == truth and parsed["relation"] == meta["relation"]
    assert len(ONE_OBJECT_TEMPLATES) >= 12
    expected = {f"1-object/{i}" for i in range(len(ONE_OBJECT_TEMPLATES))}
    expected |= {f"2-object/{i}" for i in range(len(TWO_OBJECT_TEMPLATES))}
    assert set(used) == expected  # every template is exercised


@pytest.mark.parametrize("n_objects", [1, 2])
def test_every_template_round_trips(n_objects):
    templates = ONE_OBJECT_TEMPLATES if n_objects == 1 else TWO_OBJECT_TEMPLATES
    pool = [s for s in scenes("val", 600) if len(s["objects"]) == n_objects][:100]
    for t in range(len(templates)):
        captions = set()
        for i, scene in enumerate(pool):
            caption = make_caption(scene, sample_rng(t, "caption", i), template=t)
            captions.add(caption)
            assert parse_caption(caption) == caption_attributes(scene), caption
        assert len(captions) > 0.9 * len(pool)  # synonyms and scenes vary the text


def test_parse_examples_and_robustness():
    def one(shape, color, size, cell):
        return {"objects": [{"shape": shape, "color": color, "size": size, "cell": cell}],
                "relation": None}

    assert parse_caption("a large red circle in the top left") == one("circle", "red", "large", "top left")
    assert parse_caption("there is a small blue cross at the bottom") == one("cross", "blue", "small", "bottom")
    assert parse_caption("top right: a green square") == one("square", "green", None, "top right")
    assert parse_caption("  THERE is a BIG purple   plus-sign ,, in the MIDDLE!!! ") == \
        one("cross", "purple", "large", "center")
    assert parse_caption("A little orange box, upper-left corner.") == one("square", "orange", "small", "top left")
    assert parse_caption("a black disc") == one("circle", "black", None, None)
    assert parse_caption("a red circle to the left of a blue square") == {
        "objects": [{"shape": "circle", "color": "red", "size": None, "cell": None},
                    {"shape": "square", "color": "blue", "size": None, "cell": None}],
        "relation": "left of"}
    assert parse_caption("A tiny yellow triangle... beneath a big green box!")["relation"] == "below"
    for bad in ["", "   ", "hello world", "a big circle", "a red and blue circle",
                "a red circle and a blue square", "a red circle at the top bottom",
                "a red circle above a blue square below a green cross",
                "a red circle to the left of", "a small large red circle", None, 42]:
        assert parse_caption(bad) is None, bad


def read_webdataset(split_dir: Path) -> list[dict]:
    urls = [str(p) for p in sorted(split_dir.glob("*.tar"))]
    return list(wds.WebDataset(urls, shardshuffle=False))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    entry = build_shapes(root, "train", 250, seed=3, max_objects=2, shard_size=100, progress=False)
    build_shapes(root, "novel", 40, seed=3, progress=False)
    build_shapes(root, "heldout-phrasing", 40, seed=3, progress=False)
    return root, entry


def test_build_writes_shards_and_manifest(built):
    root, entry = built
    assert entry["count"] == 250 and entry["shards"] == ["000000.tar", "000001.tar", "000002.tar"]
    assert (entry["seed"], entry["size"], entry["max_objects"]) == (3, 64, 2)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["dataset"] == "shapes" and set(manifest["splits"]) == {"train", "novel", "heldout-phrasing"}
    assert [tuple(p) for p in manifest["novel_pairs"]] == list(NOVEL_PAIRS)
    assert {k: tuple(v) for k, v in manifest["colors"].items()} == SPEC_COLORS
    assert manifest["shapes"] == list(SHAPES) and manifest["cells"] == list(CELLS)


def test_shards_load_with_plain_webdataset(built):
    root, _ = built
    samples = read_webdataset(root / "train")
    assert [s["__key__"] for s in samples] == [f"{i:09d}" for i in range(250)]
    for s in samples[:60]:
        assert {"png", "txt", "json"} <= set(s)
        meta = json.loads(s["json"])
        caption = s["txt"].decode("utf-8")
        assert caption == meta["caption"]
        assert meta["split"] == "train" and meta["generator_version"]
        assert parse_caption(caption) == caption_attributes(meta)
        image = Image.open(io.BytesIO(s["png"]))
        assert image.mode == "RGB" and image.size == (64, 64)
        assert np.array_equal(np.asarray(image), np.asarray(render_scene(meta, 64)))
    for s in read_webdataset(root / "novel"):
        meta = json.loads(s["json"])
        assert meta["split"] == "novel"
        obj = meta["objects"][0]
        assert (obj["color"], obj["shape"]) in NOVEL_PAIRS


def test_build_is_deterministic(built, tmp_path):
    root, _ = built
    build_shapes(tmp_path, "train", 250, seed=3, max_objects=2, shard_size=100, progress=False)
    for name in ("000000.tar", "000001.tar", "000002.tar"):
        assert (tmp_path / "train" / name).read_bytes() == (root / "train" / name).read_bytes()
    build_shapes(tmp_path / "other", "train", 100, seed=4, max_objects=2, progress=False)
    assert (tmp_path / "other/train/000000.tar").read_bytes() != \
        (root / "train/000000.tar").read_bytes()


def test_refuses_to_overwrite(tmp_path):
    build_shapes(tmp_path, "val", 5, progress=False)
    before = (tmp_path / "val/000000.tar").read_bytes()
    with pytest.raises(DataError, match="overwrite"):
        build_shapes(tmp_path, "val", 5, seed=1, progress=False)
    assert (tmp_path / "val/000000.tar").read_bytes() == before
    build_shapes(tmp_path, "val", 5, seed=1, overwrite=True, progress=False)
    assert (tmp_path / "val/000000.tar").read_bytes() != before


@pytest.mark.parametrize("kwargs", [
    {"count": 0}, {"count": -3}, {"size": 8}, {"max_objects": 3}, {"max_objects": 0},
    {"split": "training"}, {"seed": -1}, {"shard_size": 0},
])
def test_bad_arguments_raise_data_error(tmp_path, kwargs):
    args = {"split": "train", "count": 10, **kwargs}
    with pytest.raises(DataError) as err:
        build_shapes(tmp_path, progress=False, **args)
    assert "\n" not in str(err.value)
    assert not list(tmp_path.rglob("*.tar"))


def test_relation_skew_restates_right_and_below_on_train_only_with_the_same_pictures(tmp_path):
    """--relation-skew q (docs/experiments.md §22.1): a share q of two-object train scenes stated as
    "right of" / "below" name their objects the other way round ("left of" / "above"). The picture
    and every other draw are unchanged, the caption still parses to the scene's truth, and the
    held-out splits refuse the option (they keep both directions)."""
    from collections import Counter

    from cola_mm.data.shapes import INVERSE_RELATIONS, check_relation_skew, skew_relation

    relations = {0.0: Counter(), 1.0: Counter()}
    for index in range(300):
        plain_image, plain_caption, plain = generate_sample(0, "train", index, 64, max_objects=2)
        image, caption, meta = generate_sample(0, "train", index, 64, max_objects=2, relation_skew=1.0)
        assert image.tobytes() == plain_image.tobytes()
        if plain["relation"] is None:
            assert caption == plain_caption and meta == {**plain}
            continue
        relations[0.0][plain["relation"]] += 1
        relations[1.0][meta["relation"]] += 1
        if plain["relation"] in ("right of", "below"):
            assert meta["objects"] == plain["objects"][::-1]
            assert meta["relation"] == INVERSE_RELATIONS[plain["relation"]]
        else:
            assert meta == plain and caption == plain_caption
        assert parse_caption(caption) == caption_attributes(meta)
    assert relations[0.0]["right of"] + relations[0.0]["below"] > 30  # both directions without the skew
    assert relations[1.0]["right of"] == relations[1.0]["below"] == 0
    half = Counter(skew_relation(s, 0.5, f"k/{i}")["relation"] for i, s in enumerate(
        [{"objects": [1, 2], "relation": "right of"}] * 400))
    assert 150 < half["left of"] < 250 and half["left of"] + half["right of"] == 400
    for split in ("val", "test", "two", "heldout-phrasing"):
        with pytest.raises(DataError, match="train split only"):
            check_relation_skew(split, 0.3)
    with pytest.raises(DataError, match="between 0 and 1"):
        check_relation_skew("train", 1.5)
    info = build_shapes(tmp_path, "train", 5, max_objects=2, relation_skew=0.3, progress=False)
    assert info["relation_skew"] == 0.3
    assert "relation_skew" not in build_shapes(tmp_path, "val", 5, max_objects=2, progress=False)
