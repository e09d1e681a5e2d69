"""Held out, checked: every evaluation image and prompt is hashed against the training stream.

Shapes: no evaluation image, and no evaluation prompt, of val/test/novel/two/heldout-phrasing
occurs in train (held out by construction: their combinations never occur in train, and renders
vary continuously). Digits: no val/test scan is a training scan, and no heldout-phrasing prompt
a training caption (digit test captions necessarily repeat training wording: ten classes).
The check itself must catch a planted leak.
"""

from __future__ import annotations

import argparse
import json

import pytest

from cola_mm.data import digits, shapes
from cola_mm.data.loader import ShardDataset
from cola_mm.data.overlap import fingerprints, record_overlaps, split_overlap
from cola_mm.data.shards import ShardWriter


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("heldout")
    args = argparse.Namespace(size=64, seed=0, max_objects=2, shard_size=500)
    shapes._build_splits(root / "shapes", shapes.SPLITS, 2000, args, overwrite=True)
    digits._build(argparse.Namespace(out=root / "digits", size=32, seed=0, shard_size=2000, overwrite=True))
    return root


def test_shapes_evaluation_splits_share_nothing_with_train(built):
    manifest = json.loads((built / "shapes" / "manifest.json").read_text())
    for split in ("val", "test", "novel", "two", "heldout-phrasing"):
        found = manifest["splits"][split]["overlap_with_train"]
        assert found["samples"] == 200 and found["train_samples"] == 2000
        assert found["images"] == 0 and found["prompts"] == 0, (split, found)


def test_digits_evaluation_scans_are_not_training_scans(built):
    manifest = json.loads((built / "digits" / "manifest.json").read_text())
    for split in ("val", "test", "heldout-phrasing"):
        assert manifest["splits"][split]["overlap_with_train"]["images"] == 0, split
    assert manifest["splits"]["heldout-phrasing"]["overlap_with_train"]["prompts"] == 0
    # recorded, not hidden: digit test captions use the training wording
    assert manifest["splits"]["test"]["overlap_with_train"]["prompts"] > 0


def test_a_planted_training_sample_is_caught(built, tmp_path):
    train = next(iter(ShardDataset(built / "shapes" / "train", required=("image", "txt", "json"), epochs=1)))
    leaked = tmp_path / "leaky_test"
    clean = list(ShardDataset(built / "shapes" / "test", required=("image", "txt", "json"), epochs=1))[:20]
    with ShardWriter(leaked, max_count=100) as w:
        for i, s in enumerate(clean):
            w.write(f"{i:09d}", {"png": s["image"], "txt": s["txt"], "json": s["json"]})
        w.write("000000999", {"png": train["image"], "txt": "a caption no training sample has", "json": train["json"]})
        w.write("000001000", {"png": clean[0]["image"], "txt": "  " + train["txt"].rstrip(".").upper() + ".", "json": train["json"]})
    found = split_overlap(built / "shapes" / "train", leaked)
    assert found["images"] == 1 and found["prompts"] == 1 and found["samples"] == 22


def test_record_overlaps_writes_the_manifest_and_needs_a_train_split(built, tmp_path):
    assert record_overlaps(tmp_path) == {}  # nothing to compare against
    train = fingerprints(built / "shapes" / "train")
    assert train[2] == 2000 and len(train[0]) == 2000  # no two training renders are alike either
