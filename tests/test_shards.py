"""Shard writing and the resumable loader: format compatibility, splitting, bad samples, resume."""

from __future__ import annotations

import io
import json
import logging
import tarfile

import pytest
import torch
import webdataset as wds
from PIL import Image

from cola_mm.data.loader import ShardDataset, iter_texts, list_shards, make_loader
from cola_mm.data.shards import DataError, ShardWriter, prepare_split_dir, read_manifest, update_manifest


def _image(i: int, size: int = 16) -> Image.Image:
    return Image.new("RGB", (size, size), (i % 256, (7 * i) % 256, (13 * i) % 256))


def write_dataset(path, n: int, per_shard: int, with_image: bool = True) -> list[str]:
    keys = []
    with ShardWriter(path, max_count=per_shard) as w:
        for i in range(n):
            key = f"{i:09d}"
            fields = {"txt": f"caption number {i} ✓", "json": {"i": i}}
            if with_image:
                fields["png"] = _image(i)
            w.write(key, fields)
            keys.append(key)
    return keys


def keys_of(ds) -> list[str]:
    return [s["__key__"] for s in ds]


# --------------------------------------------------------------------------- formats


def test_our_shards_load_with_plain_webdataset(tmp_path):
    write_dataset(tmp_path, 25, per_shard=10)
    assert sorted(p.name for p in tmp_path.glob("*.tar")) == ["000000.tar", "000001.tar", "000002.tar"]
    urls = sorted(str(p) for p in tmp_path.glob("*.tar"))
    got = list(wds.WebDataset(urls, shardshuffle=False).decode("pil"))
    assert len(got) == 25
    s = got[7]
    assert s["__key__"] == "000000007"
    assert s["txt"] == "caption number 7 ✓"
    assert s["json"] == {"i": 7}
    assert s["png"].getpixel((3, 3)) == _image(7).getpixel((3, 3))


def test_img2dataset_shards_load_unchanged(tmp_path):
    """img2dataset writes ``{shard:05d}.tar`` with webdataset's TarWriter (jpg/txt/json per
    key, 9-digit keys) plus a parquet and a stats json beside each tar."""
    out = tmp_path / "laion"
    out.mkdir()
    for shard in range(2):
        with wds.TarWriter(str(out / f"{shard:05d}.tar")) as tw:
            for i in range(5):
                key = f"{shard:05d}{i:04d}"
                buf = io.BytesIO()
                _image(i, 32).save(buf, format="JPEG", quality=95)
                meta = {"url": f"http://example.com/{key}.jpg", "caption": f"photo {key}",
                        "key": key, "status": "success", "error_message": None,
                        "width": 32, "height": 32, "original_width": 640,
                        "original_height": 480, "exif": "{}", "sha256": "0" * 64}
                tw.write({"__key__": key, "jpg": buf.getvalue(), "txt": f"photo {key}",
                          "json": json.dumps(meta).encode()})
        (out / f"{shard:05d}.parquet").write_bytes(b"PAR1")
        (out / f"{shard:05d}_stats.json").write_text("{}")
    ds = ShardDataset(out, required=("txt", "image", "json"))
    samples = list(ds)
    assert len(samples) == 10 and not ds.stats
    assert samples[0]["__key__"] == "000000000"
    assert samples[0]["image"].size == (32, 32) and samples[0]["image"].mode == "RGB"
    assert samples[6]["txt"] == "photo 000010001"
    assert samples[6]["json"]["status"] == "success"


def test_writer_is_atomic_and_deterministic(tmp_path):
    write_dataset(tmp_path / "a", 12, per_shard=5)
    write_dataset(tmp_path / "b", 12, per_shard=5)
    for name in ("000000.tar", "000001.tar", "000002.tar"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    with pytest.raises(RuntimeError):
        with ShardWriter(tmp_path / "c", max_count=100) as w:
            w.write("000", {"txt": "x"})
            raise RuntimeError("crash mid-shard")
    assert not list((tmp_path / "c").iterdir())  # no partial shard left


def test_prepare_split_dir_refuses_to_clobber(tmp_path):
    write_dataset(tmp_path, 3, per_shard=5)
    with pytest.raises(DataError, match="--overwrite"):
        prepare_split_dir(tmp_path, overwrite=False)
    prepare_split_dir(tmp_path, overwrite=True)
    assert not list(tmp_path.glob("*.tar"))


def test_manifest_merges_splits(tmp_path):
    update_manifest(tmp_path, "shapes", "1", "train", {"count": 10}, seed=3)
    update_manifest(tmp_path, "shapes", "1", "val", {"count": 2})
    m = read_manifest(tmp_path)
    assert m["splits"]["train"]["count"] == 10 and m["splits"]["val"]["count"] == 2
    assert m["seed"] == 3
    with pytest.raises(DataError):
        update_manifest(tmp_path, "digits", "1", "train", {"count": 1})


# --------------------------------------------------------------------------- shard lists


def test_list_shards_patterns(tmp_path):
    write_dataset(tmp_path / "train", 30, per_shard=10, with_image=False)
    d = tmp_path / "train"
    expected = [str(d / f"{i:06d}.tar") for i in range(3)]
    assert list_shards(d) == expected
    assert list_shards(str(d / "*.tar")) == expected
    assert list_shards(str(d / "{000000..000002}.tar")) == expected
    assert list_shards(f"{d / '000000.tar'}::{d / '000002.tar'}") == [expected[0], expected[2]]
    with pytest.raises(DataError, match="e.g."):
        list_shards(tmp_path)  # a dataset root: hint at the split folder
    with pytest.raises(DataError, match="does not exist"):
        list_shards(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no shards"):
        list_shards(tmp_path / "empty")
    with pytest.raises(DataError, match="no shards match"):
        list_shards(str(tmp_path / "*.zip"))


# --------------------------------------------------------------------------- bad samples


def test_bad_samples_are_skipped_and_counted(tmp_path, caplog):
    path = tmp_path / "000000.tar"
    good = io.BytesIO()
    _image(1).save(good, format="PNG")
    members = [
        ("a.txt", b"fine"), ("a.png", good.getvalue()),
        ("b.txt", b"broken image"), ("b.png", b"\x89PNG not really"),
        ("c.png", good.getvalue()),  # no caption
        ("d.txt", b"\xff\xfe latin-1 \xe9"), ("d.png", good.getvalue()),  # not UTF-8
        ("e.txt", b"bad meta"), ("e.json", b"{nope"), ("e.png", good.getvalue()),
        ("f.txt", b"also fine"), ("f.png", good.getvalue()),
    ]
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    # a second shard, truncated in the middle of its second sample
    write_dataset(tmp_path / "t", 3, per_shard=10)
    src = tmp_path / "t" / "000000.tar"
    with tarfile.open(src) as tar:
        cut = tar.getmember("000000001.png").offset_data + 10  # inside the 2nd sample's image
    (tmp_path / "000001.tar").write_bytes(src.read_bytes()[:cut])

    ds = ShardDataset(str(tmp_path / "*.tar"), required=("txt", "image"))
    with caplog.at_level(logging.WARNING):
        got = [s["txt"] for s in ds]
    assert got[:2] == ["fine", "also fine"]
    assert got[2:] == ["caption number 0 ✓"]  # complete samples before the damage survive
    assert ds.stats == {"corrupt_image": 1, "missing_field": 1, "bad_encoding": 1,
                        "bad_json": 1, "truncated_tar": 1}
    assert "truncated_tar" in caplog.text and "corrupt_image" in caplog.text


# --------------------------------------------------------------------------- splitting


def _consume_rank(root, rank, world, workers, **kw):
    ds = ShardDataset(root, rank=rank, world_size=world, required=("txt",), **kw)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    return [s["__key__"] for s in loader]


@pytest.mark.parametrize("n_shards", [8, 3])  # enough shards to split by shard, and too few
def test_two_nodes_two_workers_see_every_sample_once(tmp_path, n_shards):
    keys = write_dataset(tmp_path, 8 * 7, per_shard=-(-56 // n_shards), with_image=False)
    assert len(list(tmp_path.glob("*.tar"))) == n_shards
    seen = []
    for rank in range(2):
        part = _consume_rank(tmp_path, rank, 2, workers=2, shuffle_buffer=5, shuffle_shards=True, seed=1)
        assert part
        seen += part
    assert sorted(seen) == keys  # every sample exactly once


def test_shuffle_is_seeded_and_changes_per_epoch(tmp_path):
    keys = write_dataset(tmp_path, 40, per_shard=10, with_image=False)
    a = keys_of(ShardDataset(tmp_path, shuffle_buffer=16, shuffle_shards=True, seed=5, epochs=2))
    b = keys_of(ShardDataset(tmp_path, shuffle_buffer=16, shuffle_shards=True, seed=5, epochs=2))
    c = keys_of(ShardDataset(tmp_path, shuffle_buffer=16, shuffle_shards=True, seed=6, epochs=2))
    assert a == b and a != c
    assert sorted(a[:40]) == keys and sorted(a[40:]) == keys and a[:40] != a[40:]
    assert a[:40] != keys  # actually shuffled


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("stop", [1, 17, 40, 63])  # start, mid-shard, epoch boundary, 2nd epoch
def test_resume_continues_exactly(tmp_path, stop):
    write_dataset(tmp_path, 40, per_shard=7, with_image=False)
    kw = dict(shuffle_buffer=9, shuffle_shards=True, seed=3, epochs=3)
    full = keys_of(ShardDataset(tmp_path, **kw))
    first = ShardDataset(tmp_path, **kw)
    it = iter(first)
    head = [next(it)["__key__"] for _ in range(stop)]
    state = first.state_dict()
    assert {"epoch", "consumed", "shard", "offset"} <= state.keys()
    second = ShardDataset(tmp_path, **kw)
    second.load_state_dict(json.loads(json.dumps(state)))  # survives a JSON round trip
    assert head + keys_of(second) == full


def test_resume_with_stateful_dataloader_workers(tmp_path):
    write_dataset(tmp_path, 48, per_shard=6, with_image=False)
    kw = dict(shuffle_buffer=4, shuffle_shards=True, seed=2, epochs=2, required=("txt",))

    def batches(loader):
        return [tuple(b["__key__"]) for b in loader]

    full = batches(make_loader(ShardDataset(tmp_path, **kw), batch_size=3, num_workers=2))
    loader = make_loader(ShardDataset(tmp_path, **kw), batch_size=3, num_workers=2)
    head = []
    for i, b in enumerate(loader):
        head.append(tuple(b["__key__"]))
        if i == 10:
            state = loader.state_dict()
            break
    resumed = make_loader(ShardDataset(tmp_path, **kw), batch_size=3, num_workers=2)
    resumed.load_state_dict(state)
    assert head + batches(resumed) == full


def test_load_state_for_other_dataset_is_refused(tmp_path):
    write_dataset(tmp_path / "a", 20, per_shard=5, with_image=False)
    write_dataset(tmp_path / "b", 20, per_shard=10, with_image=False)
    state = ShardDataset(tmp_path / "a").state_dict()
    with pytest.raises(DataError, match="4 shards"):
        ShardDataset(tmp_path / "b").load_state_dict(state)


def test_iter_texts(tmp_path):
    write_dataset(tmp_path, 5, per_shard=2)
    assert list(iter_texts(tmp_path)) == [f"caption number {i} ✓" for i in range(5)]
