"""Images/s and captions/s of the unified prior against its specialists (issue 19, "speed at
equal quality", the image jobs).

Each model works at the setting the suite scored (each pipeline's own ODE steps and guidance,
the AR captioner's greedy decoding), so its quality is the suite's figure for that model. Text →
image: the first ``--n`` prompts of ``DATA/shapes/test`` drawn one by one (batch 1) and in
batches of 8. Image → text: the same split's images captioned one by one and in batches of 8.
One warm-up call per model and batch is left out of the timing.

    python bench/bench_specialists_speed.py --unified runs/unified_d128/model --t2i runs/t2i_d128/model \\
        --captioner runs/captioner_d128/model --data datasets --threads 1 \\
        --json bench/results/specialists_speed.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from cola_mm.evaluation.images import read_samples


def rate(fn, items: list, batch: int) -> float:
    """Items per second of ``fn`` over ``items`` in batches of ``batch`` (one warm-up batch first)."""
    fn(items[:batch])
    start = time.perf_counter()
    for i in range(0, len(items), batch):
        fn(items[i:i + batch])
    return len(items) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--unified", required=True, help="the unified Cola-MM pipeline folder")
    parser.add_argument("--t2i", default=None, help="the text → image specialist (a Cola-MM pipeline folder)")
    parser.add_argument("--captioner", default=None, help="the AR captioner folder (stage ar-captioner)")
    parser.add_argument("--data", default="datasets")
    parser.add_argument("--n", type=int, default=16, help="prompts / images per measurement (default 16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from cola_mm.baselines.ar_captioner import ARCaptioner
    from cola_mm.pipeline import ColaPipeline

    samples = read_samples(Path(args.data) / "shapes" / "test", limit=args.n,
                           required=("image", "txt", "json"))
    prompts = [s["txt"] for s in samples]
    images = [s["image"] for s in samples]
    models = {"unified": ColaPipeline.from_pretrained(args.unified)}
    if args.t2i:
        models["t2i_specialist"] = ColaPipeline.from_pretrained(args.t2i)
    if args.captioner:
        models["ar_captioner"] = ARCaptioner.from_pretrained(args.captioner)
    jobs = [(name, "images_per_s", lambda xs, m=m: m.generate_image(xs), prompts)
            for name, m in models.items() if name != "ar_captioner"]
    jobs += [(name, "captions_per_s", lambda xs, m=m: m.caption(xs), images)
             for name, m in models.items() if name != "t2i_specialist"]
    results: dict = {name: {} for name in models}
    with torch.inference_mode():
        for name, what, fn, items in tqdm(jobs, desc="models × jobs"):
            for batch in (1, 8):
                results[name][f"{what}_batch{batch}"] = round(rate(fn, items, batch), 3)
    for name, r in results.items():
        print(name, r)
    u = results["unified"]
    ratios = {}
    if "t2i_specialist" in results:
        ratios["unified_over_t2i_images_batch1"] = round(u["images_per_s_batch1"] / results["t2i_specialist"]["images_per_s_batch1"], 3)
        ratios["unified_over_t2i_images_batch8"] = round(u["images_per_s_batch8"] / results["t2i_specialist"]["images_per_s_batch8"], 3)
    if "ar_captioner" in results:
        ratios["unified_over_captioner_batch1"] = round(u["captions_per_s_batch1"] / results["ar_captioner"]["captions_per_s_batch1"], 3)
        ratios["unified_over_captioner_batch8"] = round(u["captions_per_s_batch8"] / results["ar_captioner"]["captions_per_s_batch8"], 3)
    print(ratios)
    out = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(),
           "threads": args.threads, "n": args.n, "split": "shapes/test",
           "models": {"unified": args.unified, "t2i_specialist": args.t2i, "ar_captioner": args.captioner},
           "results": results, "ratios": ratios,
           "command": "python " + " ".join(shlex.quote(a) for a in sys.argv)}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
