"""`cola-mm data import`: a folder + captions (jsonl, csv), COCO captions, a Hugging Face datasets
folder → img2dataset shards the loader reads; skips counted, interrupted imports resumed."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import pytest
from PIL import Image

from cola_mm.data import importer
from cola_mm.data.loader import ShardDataset
from cola_mm.data.shards import DataError, read_manifest


def make_photos(folder):
    """Six photo-shaped files: odd sizes and modes, one corrupt; plus captions rows."""
    folder.mkdir(parents=True, exist_ok=True)
    specs = [("wide.jpg", "RGB", (300, 100)), ("tall.png", "RGBA", (90, 240)), ("grey.png", "L", (64, 64)),
             ("small.webp", "RGB", (20, 30)), ("pal.gif", "P", (120, 120))]
    for i, (name, mode, size) in enumerate(specs):
        Image.new(mode, size, 40 * i + 20 if mode in ("L", "P") else (40 * i, 200 - 30 * i, 90)).save(folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    rows = [{"file": name, "caption": f"photo {i} of a thing", "photographer": f"p{i}"}
            for i, (name, _, _) in enumerate(specs)]
    rows += [{"file": "broken.jpg", "caption": "a broken file", "photographer": "x"},
             {"file": "nowhere.jpg", "caption": "a missing file", "photographer": "y"},
             {"file": "wide.jpg", "caption": "   ", "photographer": "z"}]
    return rows


def read(split_dir):
    return list(ShardDataset(split_dir, required=("txt", "image", "json")))


def test_folder_jsonl_import(tmp_path):
    rows = make_photos(tmp_path / "photos")
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    entry = importer.import_rows(importer.folder_rows(tmp_path / "photos", tmp_path / "captions.jsonl"), None,
                                 tmp_path / "out", "train", {"t": 1}, size=32, shard_size=2, progress=False)
    assert entry["count"] == 5 and entry["source_rows"] == 8
    assert entry["skipped"] == {"unreadable_image": 1, "missing_image": 1, "empty_caption": 1}
    samples = read(tmp_path / "out" / "train")
    assert [s["txt"] for s in samples] == [f"photo {i} of a thing" for i in range(5)]
    assert all(s["image"].size == (32, 32) and s["image"].mode == "RGB" for s in samples)
    meta = samples[0]["json"]
    assert meta["source"] == "wide.jpg" and (meta["original_width"], meta["original_height"]) == (300, 100)
    assert meta["photographer"] == "p0"
    assert sorted(p.name for p in (tmp_path / "out" / "train").glob("*.tar")) == ["000000.tar", "000001.tar",
                                                                                    "000002.tar"]
    manifest = read_manifest(tmp_path / "out")
    assert manifest["dataset"] == "imported" and manifest["splits"]["train"]["count"] == 5
    # the centre crop: a 300×100 image keeps its middle
    wide = Image.open(tmp_path / "photos" / "wide.jpg").convert("RGB")
    assert importer.centre_square(wide, 32).size == (32, 32)


def test_folder_csv_import_and_bad_columns(tmp_path):
    rows = make_photos(tmp_path / "photos")
    with (tmp_path / "c.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "caption", "photographer"])
        writer.writeheader()
        writer.writerows(rows[:3])
    entry = importer.import_rows(importer.folder_rows(tmp_path / "photos", tmp_path / "c.csv"), None,
                                 tmp_path / "out", "val", {}, progress=False)
    assert entry["count"] == 3 and read(tmp_path / "out" / "val")[2]["image"].size == (64, 64)
    (tmp_path / "bad.jsonl").write_text('{"name": "a.jpg", "caption": "x"}\n')
    with pytest.raises(DataError, match="no image file column"):
        importer.folder_rows(tmp_path / "photos", tmp_path / "bad.jsonl")


def test_coco_import_keeps_every_caption(tmp_path):
    make_photos(tmp_path / "imgs")
    coco = {"images": [{"id": 7, "file_name": "wide.jpg", "width": 300, "height": 100, "license": 3},
                       {"id": 9, "file_name": "tall.png", "width": 90, "height": 240},
                       {"id": 11, "file_name": "grey.png"}],  # no caption: skipped
            "annotations": [{"image_id": 7, "caption": "a wide photo", "id": 1},
                            {"image_id": 7, "caption": "something wide", "id": 2},
                            {"image_id": 9, "caption": "a tall photo", "id": 3}]}
    (tmp_path / "captions.json").write_text(json.dumps(coco))
    entry = importer.import_rows(importer.coco_rows(tmp_path / "captions.json", tmp_path / "imgs"), None,
                                 tmp_path / "out", "train", {}, progress=False)
    assert entry["count"] == 2 and entry["skipped"] == {"empty_caption": 1}
    first = read(tmp_path / "out" / "train")[0]
    assert first["txt"] == "a wide photo" and first["json"]["captions"] == ["a wide photo", "something wide"]
    assert first["json"]["id"] == 7 and first["json"]["license"] == 3
    (tmp_path / "notcoco.json").write_text('{"images": 3}')
    with pytest.raises(DataError, match="not a COCO captions file"):
        importer.coco_rows(tmp_path / "notcoco.json", tmp_path / "imgs")


def test_hf_datasets_folder_import(tmp_path):
    datasets = pytest.importorskip("datasets")
    images = [Image.new("RGB", (50 + 10 * i, 40), (30 * i, 60, 90)) for i in range(4)]
    ds = datasets.Dataset.from_dict({"image": images, "text": [f"hf photo {i}" for i in range(4)],
                                     "score": [0.5, 0.6, 0.7, 0.8]}).cast_column("image", datasets.Image())
    ds.save_to_disk(str(tmp_path / "hf"))
    entry = importer.import_rows(importer.hf_rows(tmp_path / "hf"), None, tmp_path / "out", "train", {},
                                 size=16, progress=False)
    samples = read(tmp_path / "out" / "train")
    assert entry["count"] == 4 and [s["txt"] for s in samples] == [f"hf photo {i}" for i in range(4)]
    assert samples[3]["json"]["score"] == 0.8 and samples[3]["json"]["original_width"] == 80
    with pytest.raises(DataError, match="no caption column 'nope'"):
        importer.hf_rows(tmp_path / "hf", caption_column="nope")


def test_interrupted_import_resumes_to_the_same_shards(tmp_path):
    rows = make_photos(tmp_path / "photos")
    rows = rows[:5] * 3  # 15 good rows → shards of 4
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    def source(stop_after=None):
        for i, row in enumerate(importer.folder_rows(tmp_path / "photos", tmp_path / "c.jsonl")):
            if stop_after is not None and i == stop_after:
                raise KeyboardInterrupt
            yield row

    kw = dict(size=24, shard_size=4, progress=False)
    whole = importer.import_rows(source(), None, tmp_path / "a", "train", {"s": 1}, **kw)
    with pytest.raises(KeyboardInterrupt):
        importer.import_rows(source(stop_after=10), None, tmp_path / "b", "train", {"s": 1}, **kw)
    progress = json.loads((tmp_path / "b" / "train" / importer.PROGRESS_FILE).read_text())
    assert progress["rows_done"] == 8 and progress["shards"] == ["000000.tar", "000001.tar"]
    assert not list((tmp_path / "b" / "train").glob("*.tmp"))  # the shard being written was dropped
    resumed = importer.import_rows(source(), None, tmp_path / "b", "train", {"s": 1}, **kw)
    assert resumed["count"] == whole["count"] == 15 and resumed["shards"] == whole["shards"]
    for name in whole["shards"]:
        assert (tmp_path / "a" / "train" / name).read_bytes() == (tmp_path / "b" / "train" / name).read_bytes()
    with pytest.raises(DataError, match="other settings"):  # same folder, other settings
        importer.import_rows(source(), None, tmp_path / "b", "train", {"s": 1}, size=32, shard_size=4,
                             progress=False)


def test_cli_import(tmp_path):
    rows = make_photos(tmp_path / "photos")
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cli = [sys.executable, "-m", "cola_mm.cli", "data", "import"]
    r = subprocess.run(cli + ["folder", str(tmp_path / "photos"), "--captions", str(tmp_path / "c.jsonl"),
                              "--out", str(tmp_path / "out"), "--no-progress"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "imported 5 samples of 8 source rows" in r.stdout and "unreadable_image 1" in r.stdout
    r = subprocess.run(cli + ["coco", str(tmp_path / "nothing.json"), "--images", str(tmp_path / "photos"),
                              "--out", str(tmp_path / "o2")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip() == f"cola-mm: error: COCO captions file not found: " \
                                                     f"{tmp_path / 'nothing.json'}"
