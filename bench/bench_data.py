"""Data pipeline throughput: shard writing rate and loader throughput on this machine.

Writes ``--count`` captioned shapes (64 px PNG + caption + json) into shards, then reads them
back through :class:`cola_mm.data.loader.ShardDataset` with a shuffle buffer, decoding every PNG to an
RGB array and batching it as a uint8 tensor — what a training step consumes — with 0, 1 and 2
DataLoader workers.

    python bench/bench_data.py                       # default: 10,000 samples
    python bench/bench_data.py --count 20000 --json bench/results/data.json
    python bench/bench_data.py --http --json bench/results/data_http.json   # also through loopback HTTP

With ``--http`` the same shards are also served by a standard-library HTTP server on loopback
and read through ``http://127.0.0.1:PORT/{000000..NNNNNN}.tar`` (webdataset's gopen: curl).

Target (issue "Foundation"): the loader delivers >= 2,000 decoded samples/s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cola_mm.data.loader import ShardDataset, make_loader
from cola_mm.data.shapes import build_shapes


def to_arrays(sample: dict) -> dict:
    return {"image": np.asarray(sample["image"], dtype=np.uint8), "txt": sample["txt"]}


def collate(samples: list[dict]) -> dict:
    images = torch.from_numpy(np.stack([s["image"] for s in samples]))  # (b, h, w, 3) uint8
    return {"image": images, "txt": [s["txt"] for s in samples]}


def serve_folder(folder: Path):
    """A loopback HTTP server of ``folder`` in a thread; returns (server, base URL)."""
    import functools
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def measure_loader(shards, workers: int, batch_size: int) -> tuple[float, int]:
    ds = ShardDataset(shards, required=("txt", "image"), shuffle_buffer=1000,
                      shuffle_shards=True, seed=0, epochs=1, transform=to_arrays)
    loader = make_loader(ds, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    start = time.perf_counter()
    n = 0
    for batch in tqdm(loader, desc=f"read ({workers} workers)", unit="batch", leave=False):
        n += batch["image"].shape[0]
    return n / (time.perf_counter() - start), n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=10000, help="samples to write and read")
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    parser.add_argument("--http", action="store_true", help="also read the shards through loopback HTTP")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="cola-mm-bench-"))
    try:
        start = time.perf_counter()
        build_shapes(root, "train", args.count, size=args.size, seed=0, shard_size=1000)
        write_rate = args.count / (time.perf_counter() - start)
        shards = root / "train"
        mb = sum(p.stat().st_size for p in shards.glob("*.tar")) / 2**20
        results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                   "count": args.count, "size": args.size, "shard_mb": round(mb, 1),
                   "write_samples_per_s": round(write_rate)}
        for workers in (0, 1, 2):
            rate, n = measure_loader(shards, workers, args.batch_size)
            assert n == args.count, f"read {n} of {args.count} samples"
            results[f"read_samples_per_s_{workers}_workers"] = round(rate)
        if args.http:
            server, base = serve_folder(shards)
            names = sorted(p.name for p in shards.glob("*.tar"))
            url = f"{base}/{{{names[0][:-4]}..{names[-1][:-4]}}}.tar"
            results["http_url"] = url.replace(base, "http://127.0.0.1:PORT")
            try:
                for workers in (0, 1, 2):
                    rate, n = measure_loader(url, workers, args.batch_size)
                    assert n == args.count, f"read {n} of {args.count} samples over HTTP"
                    results[f"http_read_samples_per_s_{workers}_workers"] = round(rate)
            finally:
                server.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for key, value in results.items():
        print(f"{key:32s} {value}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
