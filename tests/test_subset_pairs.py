"""bench/subset_pairs.py: the experiment's two-object training set is exactly the source split's
two-object samples, copied whole and byte for byte, readable by the loader; a folder that already
holds shards is refused."""

import json
import tarfile
from pathlib import Path

import pytest
from conftest import bench_module


def _members(folder: Path) -> dict[str, bytes]:
    out = {}
    for shard in sorted(folder.glob("*.tar")):
        with tarfile.open(shard) as tar:
            out.update({m.name: tar.extractfile(m).read() for m in tar if m.isfile()})
    return out


def test_keeps_exactly_the_two_object_samples_whole(tiny_datasets, tmp_path):
    from cola_mm.evaluation.images import read_samples

    mod = bench_module("subset_pairs")
    src, out = tiny_datasets / "shapes" / "train", tmp_path / "two"
    assert mod.main(["--src", str(src), "--out", str(out), "--objects", "2", "--shard-size", "7"]) == 0
    source, kept = _members(src), _members(out)
    keys = {name.split(".", 1)[0] for name in kept}
    want = {n.split(".", 1)[0] for n in source if n.endswith(".json") and len(json.loads(source[n])["objects"]) == 2}
    assert keys == want and 0 < len(want) < len({n.split(".", 1)[0] for n in source})
    assert all(kept[n] == source[n] for n in kept)  # byte for byte
    assert {n for n in source if n.split(".", 1)[0] in keys} == set(kept)  # every member of a kept sample
    assert len(list(out.glob("*.tar"))) == -(-len(keys) // 7)
    samples = read_samples(out)
    assert len(samples) == len(keys) and all(len(s["json"]["objects"]) == 2 for s in samples)
    with pytest.raises(SystemExit, match="already holds shards"):
        mod.main(["--src", str(src), "--out", str(out), "--objects", "2"])
