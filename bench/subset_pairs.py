"""Copy the image–caption samples of a shard folder that show a given number of objects.

An experiment's training set, never an evaluation split: it only keeps samples of the split it
reads, so a subset of ``train`` is as held out from ``val`` / ``test`` as ``train`` is. Each kept
sample is copied whole (all its members, bytes unchanged) into new shards of ``--shard-size``.

    python bench/subset_pairs.py --src datasets/shapes/train --out datasets/shapes_train_two --objects 2

(docs/experiments.md §20: the two-object emphasis fine-tune.)
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from pathlib import Path

from tqdm import tqdm


def samples(tar_path: Path):
    """(key, [(name, bytes)]) per sample of one shard, in shard order."""
    with tarfile.open(tar_path) as tar:
        key, members = None, []
        for m in tar:
            if not m.isfile():
                continue
            k = m.name.split(".", 1)[0]
            if k != key and members:
                yield key, members
                members = []
            key = k
            members.append((m.name, tar.extractfile(m).read()))
        if members:
            yield key, members


def n_objects(members) -> int | None:
    for name, data in members:
        if name.endswith(".json"):
            objects = json.loads(data).get("objects")
            return len(objects) if isinstance(objects, list) else None
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, type=Path, help="a shard folder (one split)")
    ap.add_argument("--out", required=True, type=Path, help="new shard folder (must not hold shards)")
    ap.add_argument("--objects", required=True, type=int, help="keep samples whose json lists this many objects")
    ap.add_argument("--shard-size", type=int, default=2000)
    args = ap.parse_args(argv)
    shards = sorted(args.src.glob("*.tar"))
    if not shards:
        sys.exit(f"error: no shards (*.tar) in {args.src}")
    if args.objects < 1 or args.shard_size < 1:
        sys.exit("error: --objects and --shard-size must be >= 1")
    args.out.mkdir(parents=True, exist_ok=True)
    if any(args.out.glob("*.tar")):
        sys.exit(f"error: {args.out} already holds shards; remove them first")
    kept = seen = unknown = 0
    writer, n_shard = None, 0
    for shard in tqdm(shards, desc="subset", unit="shard"):
        for key, members in samples(shard):
            seen += 1
            n = n_objects(members)
            unknown += n is None
            if n != args.objects:
                continue
            if writer is None or kept % args.shard_size == 0:
                if writer is not None:
                    writer.close()
                writer = tarfile.open(args.out / f"{n_shard:06d}.tar", "w")
                n_shard += 1
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                writer.addfile(info, io.BytesIO(data))
            kept += 1
    if writer is not None:
        writer.close()
    if unknown:
        print(f"warning: {unknown} samples had no 'objects' list in their json and were dropped", file=sys.stderr)
    print(f"kept {kept} of {seen} samples ({args.objects} objects) in {n_shard} shard(s) -> {args.out}")
    return 0 if kept else 1


if __name__ == "__main__":
    sys.exit(main())
