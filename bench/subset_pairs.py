"""Copy the image–caption samples of a shard folder that show a given number of objects.

An experiment's training set, never an evaluation split: it only keeps samples of the split it
reads, so a subset of ``train`` is as held out from ``val`` / ``test`` as ``train`` is. Each kept
sample is copied whole (all its members, bytes unchanged) into new shards of ``--shard-size``,
read and written by the project's own shard reader and writer.

    python bench/subset_pairs.py --src datasets/shapes/train --out datasets/shapes_train_two --objects 2

(docs/experiments.md §20: the two-object emphasis fine-tune.)
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm import tqdm

from cola_mm.data.loader import iter_raw_samples
from cola_mm.data.shards import ShardWriter


def n_objects(sample: dict) -> int | None:
    """How many objects a raw sample's json lists (None: no json or no ``objects`` list)."""
    objects = json.loads(sample["json"]).get("objects") if "json" in sample else None
    return len(objects) if isinstance(objects, list) else None


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
    if args.out.is_dir() and any(args.out.glob("*.tar")):
        sys.exit(f"error: {args.out} already holds shards; remove them first")
    seen = unknown = 0
    damaged: list[str] = []
    writer = ShardWriter(args.out, max_count=args.shard_size)
    for shard in tqdm(shards, desc="subset", unit="shard"):
        for sample in iter_raw_samples(str(shard), on_error=lambda kind, url, detail: damaged.append(detail)):
            seen += 1
            n = n_objects(sample)
            unknown += n is None
            if n == args.objects:  # every member copied as it is (bytes unchanged)
                writer.write(sample["__key__"], {ext: data for ext, data in sample.items()
                                                 if not ext.startswith("__")})
    written = writer.close()
    for detail in damaged:
        print(f"warning: damaged shard: {detail}", file=sys.stderr)
    if unknown:
        print(f"warning: {unknown} samples had no 'objects' list in their json and were dropped", file=sys.stderr)
    print(f"kept {writer.count} of {seen} samples ({args.objects} objects) in {len(written)} shard(s) -> {args.out}")
    return 0 if writer.count else 1


if __name__ == "__main__":
    sys.exit(main())
