"""The icons world (Noto Color Emoji): the font, the icon list, splits held out by
construction, captions the strict grader reads back, wrong captions it refuses, rendering."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from cola_mm.data import icons
from cola_mm.data.loader import ShardDataset
from cola_mm.data.shards import DataError


@pytest.fixture(scope="module")
def font():
    return str(icons.find_font())  # the test command installs fonts-noto-color-emoji (.ci/fonts.sh)


@pytest.fixture(scope="module")
def built(font, tmp_path_factory):
    root = tmp_path_factory.mktemp("icons")
    counts = {"train": 400, "val": 60, "test": 80, "novel": 80, "two": 60, "heldout-phrasing": 40}
    for split, n in counts.items():
        icons.build_icons(root, split, n, shard_size=200, progress=False)
    samples = {split: list(ShardDataset(root / split, required=("image", "txt", "json"))) for split in counts}
    return root, samples


def test_missing_font_is_one_line_that_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(icons, "FONT_PATHS", (str(tmp_path / "none.ttf"),))
    with pytest.raises(DataError, match="apt-get install fonts-noto-color-emoji") as err:
        icons.find_font()
    assert "\n" not in str(err.value)
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "data", "icons", "--out", str(tmp_path / "o"),
                        "--font", str(tmp_path / "nope.ttf")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.strip() == f"cola-mm: error: --font: no file {tmp_path / 'nope.ttf'}"


def test_data_all_builds_the_icons_where_the_font_is_and_skips_them_with_the_hint_where_not(monkeypatch, tmp_path,
                                                                                           capsys, font):
    """`cola-mm data all` treats icons as optional: with the font it builds every split (then keeps
    them), without it one line says how to install the font and the other datasets still build."""
    from cola_mm import cli
    from cola_mm.data import registry

    real = registry.datasets()
    monkeypatch.setattr(registry, "datasets", lambda: {"icons": real["icons"]})
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.json").write_text("{}")  # already trained: skipped

    def run(*extra):
        args = cli.build_parser().parse_args(["data", "all", "--out", str(tmp_path), *extra])
        args.func(args)

    monkeypatch.setattr(icons, "FONT_PATHS", (str(tmp_path / "none.ttf"),))
    run("--icons-count", "20")
    out = capsys.readouterr().out
    assert "icons: skipped (Noto Color Emoji is not installed" in out and "apt-get install fonts-noto-color-emoji" in out
    assert not (tmp_path / "icons").exists()
    run("--icons-count", "20", "--icons-font", font)
    assert set(icons.read_manifest(tmp_path / "icons")["splits"]) == set(icons.SPLITS)
    assert icons.read_manifest(tmp_path / "icons")["splits"]["train"]["count"] == 20
    assert icons.read_manifest(tmp_path / "icons")["splits"]["test"]["count"] == 2
    capsys.readouterr()
    run("--icons-count", "20", "--icons-font", font)
    assert "icons: already built" in capsys.readouterr().out


def test_icon_list(font):
    found = icons.list_icons(font)
    names = [n for _, n in found]
    assert len(found) >= 1200 and len(set(names)) == len(names)
    assert {"doughnut", "rocket", "honey pot", "closed umbrella", "sunrise over mountains"} <= set(names)
    assert not any(icons.EXCLUDED_WORDS & set(n.split()) for n in names)
    assert set(names) <= set(icons.all_names())  # the grader knows every icon without the font


def test_splits_are_held_out_by_construction(built):
    root, samples = built
    train = samples["train"]
    one_train = {(o["icon"], s["json"]["background"], o["size"], o["cell"])
                 for s in train for o in s["json"]["objects"] if len(s["json"]["objects"]) == 1}
    pairs_train = {(o["icon"], s["json"]["background"]) for s in train for o in s["json"]["objects"]}
    two_train = {tuple(sorted(o["icon"] for o in s["json"]["objects"])) for s in train
                 if len(s["json"]["objects"]) == 2}
    assert any(len(s["json"]["objects"]) == 2 for s in train) and any(len(s["json"]["objects"]) == 1 for s in train)
    for s in train:  # alone icons only alone; no novel (icon, background) pair in one-icon training scenes
        objects = s["json"]["objects"]
        if len(objects) == 2:
            assert not any(icons.is_alone(o["icon"]) for o in objects)
        else:
            assert icons.pair_split(objects[0]["icon"], s["json"]["background"]) == "seen"
    for split in ("val", "test"):
        for s in samples[split]:
            objects = s["json"]["objects"]
            if len(objects) == 1:
                o = objects[0]
                key = (o["icon"], s["json"]["background"], o["size"], o["cell"])
                assert icons.combination_split(*key) == split and key not in one_train
    novel = samples["novel"]
    assert any(len(s["json"]["objects"]) == 1 for s in novel) and any(len(s["json"]["objects"]) == 2 for s in novel)
    for s in novel:
        objects = s["json"]["objects"]
        if len(objects) == 1:
            assert icons.pair_split(objects[0]["icon"], s["json"]["background"]) == "novel"
        else:
            assert any(icons.is_alone(o["icon"]) for o in objects)
            assert tuple(sorted(o["icon"] for o in objects)) not in two_train
    alone_seen_alone = {o["icon"] for s in train for o in s["json"]["objects"] if icons.is_alone(o["icon"])}
    assert alone_seen_alone  # alone icons are in training, one-icon scenes only
    for s in samples["two"]:
        names = tuple(sorted(o["icon"] for o in s["json"]["objects"]))
        assert len(names) == 2 and icons.two_split(*names) == "two" and names not in two_train
    # no held-out image is a training image
    digest = {hashlib.sha256(s["image"].tobytes()).hexdigest() for s in train}
    for split in ("val", "test", "novel", "two", "heldout-phrasing"):
        assert not any(hashlib.sha256(s["image"].tobytes()).hexdigest() in digest for s in samples[split]), split
    assert pairs_train  # (used above)


def test_captions_read_back_and_wrong_ones_are_refused(built):
    _, samples = built
    for split in ("train", "val", "test", "novel", "two"):
        for s in samples[split]:
            assert icons.grade_caption(s["txt"], s["json"])["all"], (s["txt"], s["json"]["objects"])
            assert icons.grade_caption(icons.canonical_caption(s["json"]), s["json"])["all"]
    for s in samples["heldout-phrasing"]:  # wording no training caption uses
        assert icons.parse_caption(s["txt"]) is None
    one = next(s["json"] for s in samples["test"] if len(s["json"]["objects"]) == 1)
    o, bg = one["objects"][0], one["background"]
    right = icons.canonical_caption(one)
    other_icon = "rocket" if o["icon"] != "rocket" else "doughnut"
    other_size = "small" if o["size"] == "large" else "large"
    other_bg = "black" if bg != "black" else "white"
    other_cell = "top left" if o["cell"] != "top left" else "bottom right"
    wrong = {
        "icon": right.replace(o["icon"], other_icon),
        "size": right.replace(o["size"], other_size, 1).replace("an ", "a ", 1) if o["size"] == "large" else
        right.replace(f"a {o['size']}", f"a {other_size}", 1),
        "background": right.replace(f"{bg} background", f"{other_bg} background"),
        "cell": icons.canonical_caption({**one, "objects": [{**o, "cell": other_cell}]}),
        "extra words": right + " and a cat",
        "no background": right.split(" on a")[0],
    }
    for what, text in wrong.items():
        assert not icons.grade_caption(text, one)["all"], (what, text)
    assert not icons.grade_caption(right.replace(o["icon"], other_icon), one)["icon"]
    two = next(s["json"] for s in samples["two"])
    right = icons.canonical_caption(two)
    assert icons.grade_caption(right, two)["all"]
    a, b = two["objects"]
    swapped = icons.canonical_caption({**two, "objects": [b, a]})
    assert not icons.grade_caption(swapped, two)["all"]  # the relation now points the other way
    only_one = icons.canonical_caption({**two, "objects": [a], "relation": None, **{}} | {"objects": [{**a, "cell": "center"}]})
    assert not icons.grade_caption(only_one, two)["all"]


def test_rendering_and_determinism(built, font, tmp_path):
    root, samples = built
    for s in samples["test"][:40]:  # one-icon scenes: the icon is drawn in its box, and nowhere else
        img, meta = s["image"], s["json"]
        assert img.size == (64, 64)
        bg = tuple(icons.BACKGROUNDS[meta["background"]])
        x0, y0, x1, y1 = meta["objects"][0]["bbox"]
        inside = outside = changed_in = 0
        for x in range(64):
            for y in range(64):
                changed = max(abs(a - b) for a, b in zip(img.getpixel((x, y)), bg)) > 30
                if x0 - 1 <= x < x1 + 1 and y0 - 1 <= y < y1 + 1:
                    inside += 1
                    changed_in += changed
                else:
                    outside += changed
        assert outside == 0 and changed_in >= 0.03 * inside, meta
    icons.build_icons(tmp_path, "test", 80, shard_size=200, progress=False)
    assert (tmp_path / "test" / "000000.tar").read_bytes() == (root / "test" / "000000.tar").read_bytes()


def test_cli_builds_icons(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "data", "icons", "--out", str(tmp_path), "--count", "30",
                        "--split", "train"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "icons/train: 30 samples" in r.stdout
    assert len(icons.icon_names(tmp_path)) >= 1200


class OneSceneJudge:
    """Reads every image as one fixed scene (so the suite's plumbing decides the figures)."""

    def __init__(self, truth: dict):
        self.reading = {"count": len(truth["objects"]), "background": truth["background"],
                        "objects": [{"cell": o["cell"], "icon": o["icon"], "size": o["size"],
                                     "top": ["cookie", "rocket", o["icon"]]} for o in truth["objects"]]}

    def predict(self, images):
        return [self.reading for _ in images]


def test_icons_rows_in_the_suite_where_built_and_judged(built, tiny_mm_pipeline, tiny_datasets, tmp_path):
    from cola_mm.data import registry
    from cola_mm.evaluation import suite
    from test_suite import FixedJudge

    root_icons, samples = built
    assert not any(s.startswith("icons/") for s in registry.image_eval_splits("text_to_image", tiny_datasets))
    root = tmp_path / "datasets"  # the tiny datasets plus icons
    root.mkdir()
    for entry in tiny_datasets.iterdir():
        (root / entry.name).symlink_to(entry)
    (root / "icons").symlink_to(root_icons)
    assert "icons/test" in registry.image_eval_splits("text_to_image", root)

    limit = 4
    first = samples["test"][:limit]
    judge = OneSceneJudge(first[0]["json"])
    report = suite.run_suite([tiny_mm_pipeline], data_root=root, probe_dir=FixedJudge(), icon_judge_dir=judge,
                             seeds=(0,), limit=limit, steps=2, jobs=("images",), progress=False, grid_examples=0)
    entry = next(iter(report["checkpoints"].values()))
    t2i = entry["text_to_image"]["summary"]
    same = sum(s["json"]["objects"] == first[0]["json"]["objects"] and s["json"]["background"] ==
               first[0]["json"]["background"] for s in first)
    assert t2i["icons_test_all_acc"]["mean"] == pytest.approx(same / limit)  # only the exact scene counts
    assert t2i["icons_test_icon_top5_acc"]["mean"] >= t2i["icons_test_icon_acc"]["mean"]
    assert {"icons_novel_all_acc", "icons_two_all_acc", "shapes_test_all_acc"} <= set(t2i)
    assert "icons_test_1obj_all_acc" in entry["image_to_text"]["summary"]
    assert entry["text_to_image_unjudged"] == []
    md = suite.tables(report)
    assert "icons_test top-5 icon" in md

    # without an icon judge: the shapes and digits rows stay, the icons splits are listed as not judged
    report = suite.run_suite([tiny_mm_pipeline], data_root=root, probe_dir=FixedJudge(), seeds=(0,), limit=2, steps=2,
                             jobs=("images",), progress=False, grid_examples=0)
    entry = next(iter(report["checkpoints"].values()))
    assert "icons/test" in entry["text_to_image_unjudged"] and "shapes_test_all_acc" in entry["text_to_image"]["summary"]
    assert not any(k.startswith("icons") for k in entry["text_to_image"]["summary"])
    assert "Not judged" in suite.tables(report) and "icons/test" in suite.tables(report)


def test_relation_skew_restates_two_icon_scenes_on_train_with_the_same_pictures(font):
    """--relation-skew for icons: the same pictures, the two icons named the other way round with
    the relation inverted, the caption graded right against the new truth; held-out splits refuse it."""
    found = icons.list_icons(font)
    skewed = 0
    for index in range(60):
        plain_image, _, plain = icons.generate_sample(0, "train", index, found, font)
        image, caption, meta = icons.generate_sample(0, "train", index, found, font, relation_skew=1.0)
        assert image.tobytes() == plain_image.tobytes()
        assert meta["relation"] not in ("right of", "below")
        if plain["relation"] in ("right of", "below"):
            skewed += 1
            assert meta["objects"] == plain["objects"][::-1]
        assert icons.grade_caption(caption, meta)["all"], caption
    assert skewed > 3
    with pytest.raises(DataError, match="train split only"):
        icons.build_icons("/tmp/never", "two", 5, font=font, relation_skew=0.5)
