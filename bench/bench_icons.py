"""Icons dataset build throughput and a sample grid.

    python bench/bench_icons.py --count 2000 --json bench/results/icons_build.json --png bench/results/icons_grid.png

Builds ``--count`` training scenes (64 px) into a temporary folder with ``build_icons`` (the
work of ``cola-mm data icons``: sampling, rendering, PNG encoding, shard writing) and reports
scenes/s on this machine, plus a grid of the first 16 scenes with their captions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=2000)
    ap.add_argument("--json", default=None)
    ap.add_argument("--png", default=None)
    args = ap.parse_args(argv)

    from cola_mm.core.images import make_grid
    from cola_mm.data import icons
    from cola_mm.data.loader import ShardDataset

    font = str(icons.find_font())
    start = time.perf_counter()
    found = icons.list_icons(font)
    scan_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        icons.build_icons(tmp, "train", args.count)
        build_s = time.perf_counter() - start
        samples = [s for _, s in zip(range(16), ShardDataset(Path(tmp) / "train", required=("image", "txt")))]
    results = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "icons": len(found), "font_scan_s": round(scan_s, 2), "count": args.count,
               "scenes_per_s": round(args.count / build_s, 1)}
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.png:
        make_grid([s["image"].resize((128, 128)) for s in samples], cols=4,
                  labels=[s["txt"] for s in samples]).save(args.png)
    return results


if __name__ == "__main__":
    main()
