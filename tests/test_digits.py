"""Handwritten digits: all 1,797 sklearn digits, fixed split, smooth renders, parseable captions."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
import webdataset as wds
from PIL import Image
from sklearn.datasets import load_digits

from cola_mm.data.digits import (BACKGROUND, DIGIT_WORDS, INK, PAD_CELLS, TEMPLATES, build_digits, make_digit_caption,
                                 parse_digit_caption, parse_strict, render_digit)
from cola_mm.data.shards import DataError

SOURCE = load_digits()


def read_split(root: Path, split: str) -> list[dict]:
    urls = [str(p) for p in sorted((root / split).glob("*.tar"))]
    return list(wds.WebDataset(urls, shardshuffle=False))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    manifest = build_digits(root, seed=0, shard_size=500, progress=False)
    return root, manifest


def test_manifest_and_split_sizes(built):
    root, manifest = built
    assert manifest == json.loads((root / "manifest.json").read_text())
    assert manifest["dataset"] == "digits"
    splits = manifest["splits"]
    assert {k: v["count"] for k, v in splits.items()} == {"train": 1347, "val": 150, "test": 300,
                                                          "heldout-phrasing": 300}
    assert splits["train"]["shards"] == ["000000.tar", "000001.tar", "000002.tar"]
    assert splits["test"]["shards"] == ["000000.tar"]


def test_all_samples_labels_and_captions(built):
    root, _ = built
    seen = {}
    for split in ("train", "val", "test"):
        for s in read_split(root, split):
            meta = json.loads(s["json"])
            index = meta["source_index"]
            assert meta["split"] == split and s["__key__"] == f"{index:09d}"
            assert meta["label"] == int(SOURCE.target[index])
            caption = s["txt"].decode("utf-8")
            assert caption == meta["caption"] and parse_digit_caption(caption) == meta["label"]
            assert parse_strict(caption) == meta["label"], caption
            assert index not in seen  # no scan in two splits
            seen[index] = split
    assert sorted(seen) == list(range(1797))  # every digit exactly once
    assert [i for i in range(1797) if seen[i] == "test"] == list(range(1497, 1797))
    assert [i for i in range(1797) if seen[i] == "val"] == list(range(1347, 1497))
    heldout = read_split(root, "heldout-phrasing")
    assert [json.loads(s["json"])["source_index"] for s in heldout] == list(range(1497, 1797))
    for s in heldout:  # the test scans, worded as training never words them
        caption = s["txt"].decode("utf-8")
        assert parse_strict(caption) is None and parse_digit_caption(caption) == json.loads(s["json"])["label"]
    test_labels = SOURCE.target[1497:]
    assert set(test_labels) == set(range(10))


def test_images_are_smooth_and_faithful(built):
    root, _ = built
    samples = read_split(root, "test")[:40]
    for s in samples:
        meta = json.loads(s["json"])
        image = Image.open(io.BytesIO(s["png"]))
        assert image.mode == "RGB" and image.size == (64, 64)
        rgb = np.asarray(image).astype(int)
        assert np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2])
        grey = rgb[..., 0]
        assert grey.max() == BACKGROUND[0] and grey[0, 0] == BACKGROUND[0]  # margin is background
        assert grey.min() <= INK[0] + 40  # dark ink
        assert len(np.unique(grey)) > 60  # smooth: far more than the 17 source levels
        # no block edges: neighbouring pixels change by far less than ink-to-background
        assert np.abs(np.diff(grey, axis=0)).max() < 110
        assert np.abs(np.diff(grey, axis=1)).max() < 110
        # averaged back down to the padded 8×8 grid, the render matches the source digit
        cells = 8 + 2 * PAD_CELLS
        small = np.asarray(image.convert("L").resize((cells, cells), Image.Resampling.BOX), float)
        source = np.pad(SOURCE.images[meta["source_index"]], PAD_CELLS)
        assert np.corrcoef(-small.ravel(), source.ravel())[0, 1] > 0.9


def test_nearest_upsampling_would_fail_the_smoothness_check():
    """The smoothness thresholds above do separate smooth from blocky upsampling."""
    blocky = Image.fromarray((SOURCE.images[0] * 15).astype(np.uint8)).resize((64, 64), Image.NEAREST)
    grey = np.asarray(blocky).astype(int)
    assert len(np.unique(grey)) <= 17 and np.abs(np.diff(grey, axis=1)).max() >= 110
    smooth = np.asarray(render_digit(SOURCE.images[0], 64))[..., 0].astype(int)
    assert len(np.unique(smooth)) > 60


def test_build_is_deterministic_and_seed_only_changes_captions(built, tmp_path):
    root, _ = built
    build_digits(tmp_path / "same", seed=0, shard_size=500, progress=False)
    for split, name in [("train", "000000.tar"), ("train", "000002.tar"), ("test", "000000.tar")]:
        assert (tmp_path / "same" / split / name).read_bytes() == (root / split / name).read_bytes()
    # another seed: same images and split, other phrasing
    other = tmp_path / "other"
    manifest = build_digits(other, seed=1, size=32, shard_size=2000, progress=False)
    assert manifest["splits"]["test"]["count"] == 300
    a, b = read_split(root, "test"), read_split(other, "test")
    assert [s["__key__"] for s in a] == [s["__key__"] for s in b]
    assert sum(x["txt"] != y["txt"] for x, y in zip(a, b)) > 150
    assert Image.open(io.BytesIO(b[0]["png"])).size == (32, 32)


def test_caption_templates_round_trip():
    assert len(TEMPLATES) >= 8
    texts = set()
    for label in range(10):
        for t in range(len(TEMPLATES)):
            for trial in range(20):
                caption = make_digit_caption(label, random.Random(trial), template=t)
                texts.add(caption.lower().rstrip("."))
                assert parse_digit_caption(caption) == label, caption
                assert parse_strict(caption) == label, caption
    assert len(texts) == 10 * len(TEMPLATES) * 2  # numeral and word forms of every template


def test_parse_digit_caption_robustness():
    assert parse_digit_caption("a handwritten seven") == 7
    assert parse_digit_caption("THE DIGIT 7!!") == 7
    assert parse_digit_caption("  number   Eight , written by hand ") == 8
    assert parse_digit_caption("an 8 drawn by hand") == 8
    assert parse_digit_caption("the digit 0") == 0
    for bad in ["", "a handwritten digit", "a 7 and an 8", "someone wrote this", "17", None, 3]:
        assert parse_digit_caption(bad) is None, bad
    assert DIGIT_WORDS[3] == "three"


def test_refuses_to_overwrite_and_bad_arguments(built, tmp_path):
    root, _ = built
    with pytest.raises(DataError, match="overwrite"):
        build_digits(root, progress=False)
    for kwargs in [{"size": 8}, {"seed": -1}, {"shard_size": 0}]:
        with pytest.raises(DataError) as err:
            build_digits(tmp_path / "bad", progress=False, **kwargs)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "bad").exists()
