"""Shards from anywhere: http(s):// and pipe: URLs opened by webdataset's gopen, read by the
same resumable, split, counting loader as local files. A standard-library HTTP server on
loopback serves them."""

from __future__ import annotations

import functools
import http.server
import json
import tarfile
import threading

import pytest

from cola_mm.data.loader import ShardDataset, is_remote, list_shards, make_loader

from test_shards import keys_of, write_dataset


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    keys = write_dataset(root / "shards", 40, per_shard=10)  # 000000.tar … 000003.tar
    data = (root / "shards" / "000003.tar").read_bytes()
    (root / "shards" / "cut.tar").write_bytes(data[:len(data) // 2])
    with tarfile.open(root / "shards" / "000003.tar") as tar:  # cut exactly where a member starts
        edge = next(m for m in tar.getmembers() if m.name.startswith("000000037.")).offset
    (root / "shards" / "edge.tar").write_bytes(data[:edge])
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(root / "shards"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": f"http://127.0.0.1:{server.server_address[1]}", "dir": root / "shards", "keys": keys}
    server.shutdown()


def test_remote_urls_are_listed_without_touching_them():
    assert is_remote("https://host/a.tar") and is_remote("pipe:curl -s x") and is_remote("gs://b/a.tar")
    assert not is_remote("/data/a.tar") and not is_remote("file:/data/a.tar") and not is_remote("data/{0..1}.tar")
    assert list_shards("http://h/{000000..000002}.tar::pipe:cat /x.tar") == [
        "http://h/000000.tar", "http://h/000001.tar", "http://h/000002.tar", "pipe:cat /x.tar"]


def test_http_and_pipe_read_what_local_files_hold(served):
    local = keys_of(ShardDataset(served["dir"] / "{000000..000003}.tar", required=("txt", "image")))
    assert local == served["keys"]
    http_keys = keys_of(ShardDataset(served["url"] + "/{000000..000003}.tar", required=("txt", "image")))
    pipe_keys = keys_of(ShardDataset([f"pipe:cat {served['dir'] / f'{i:06d}.tar'}" for i in range(4)]))
    assert http_keys == local and pipe_keys == local
    sample = next(iter(ShardDataset(served["url"] + "/000000.tar")))
    assert sample["image"].size == (16, 16) and sample["txt"].startswith("caption number 0")


@pytest.mark.parametrize("stop", [3, 15, 55])  # mid-shard, next shard, second epoch
def test_http_resume_mid_shard(served, stop):
    kw = dict(shuffle_buffer=5, shuffle_shards=True, seed=1, epochs=2)
    spec = served["url"] + "/{000000..000003}.tar"
    full = keys_of(ShardDataset(spec, **kw))
    first = ShardDataset(spec, **kw)
    it = iter(first)
    head = [next(it)["__key__"] for _ in range(stop)]
    second = ShardDataset(spec, **kw)
    second.load_state_dict(json.loads(json.dumps(first.state_dict())))
    assert head + keys_of(second) == full


def test_http_with_dataloader_workers_splits_every_sample_once(served):
    loader = make_loader(ShardDataset(served["url"] + "/{000000..000003}.tar"), batch_size=4, num_workers=2)
    keys = [k for batch in loader for k in batch["__key__"]]
    assert sorted(keys) == served["keys"]


def test_unreachable_failing_and_cut_shards_are_counted_skips(served, caplog):
    """A 404, a refused connection, a failing pipe: command, a shard cut mid-member and one cut
    exactly between members each end that shard with a counted skip naming it; the good shards
    are read in full."""
    from cola_mm.apps.driver import free_port

    dead = free_port()  # nobody listens there
    shards = [served["url"] + "/000000.tar", served["url"] + "/missing.tar", f"http://127.0.0.1:{dead}/000001.tar",
              "pipe:exit 3", served["url"] + "/cut.tar", f"pipe:cat {served['dir'] / '000002.tar'}",
              served["url"] + "/edge.tar"]
    ds = ShardDataset(shards, required=("txt", "image"))
    keys = keys_of(ds)
    assert keys[-7:] == served["keys"][30:37]  # edge.tar: the samples before the cut, none lost uncounted
    keys = keys[:-7]
    assert keys[:10] == served["keys"][:10] and keys[-10:] == served["keys"][20:30]
    from_cut = keys[10:-10]  # the complete samples before the cut, in order; the one cut is dropped
    assert 3 <= len(from_cut) < 10 and from_cut == served["keys"][30:30 + len(from_cut)]
    assert ds.stats["unreadable_shard"] == 3 and ds.stats["truncated_tar"] == 2, dict(ds.stats)
    assert "missing.tar" in caplog.text and "pipe:exit 3" in caplog.text


def test_gzipped_shards_read_whole_and_a_cut_one_is_counted(tmp_path):
    """Gzipped shards cannot be resynchronised or checked for end blocks (their offsets are not
    file bytes): a whole one reads with nothing counted, a cut one ends counted."""
    import gzip
    import os

    from cola_mm.data.shards import ShardWriter

    with ShardWriter(tmp_path / "w", max_count=100) as w:
        for i in range(6):
            w.write(f"{i:06d}", {"txt": f"sample {i}", "bin": os.urandom(30000)})
    data = (tmp_path / "w" / "000000.tar").read_bytes()
    (tmp_path / "000000.tar.gz").write_bytes(gzip.compress(data))
    ds = ShardDataset(str(tmp_path / "000000.tar.gz"))
    assert len(keys_of(ds)) == 6 and dict(ds.stats) == {}
    (tmp_path / "cut.tar.gz").write_bytes(gzip.compress(data)[:-40000])
    ds = ShardDataset(str(tmp_path / "cut.tar.gz"))
    assert len(keys_of(ds)) < 6 and sum(ds.stats.values()) >= 1
