"""How much of each icon an image VAE keeps, along its training: the icon judge through the round trip.

    python bench/bench_icon_vae_steps.py --run runs/vae_image_icons64_10k --judge runs/icon_judge \\
        --data datasets/icons --json bench/results/icon_vae_steps.json --png bench/results/icon_vae_steps.png

Grades every image VAE the run folder holds (each complete checkpoint's ``components/image_vae`` and the
final ``model/``; train with ``--set keep_last=N`` to keep them all), plus any ``--vae`` folders, on
the ``--split`` (default ``val``: this chooses a VAE, so it never reads test). Each image is
encoded (posterior mean), decoded and graded by the icon judge; the figures are the most a prior
that decodes through that VAE can score. The run's validation PSNR at the same step is read from
its ``metrics.jsonl``. A PNG plots both against the step.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from tqdm import tqdm


def _step_of(folder: Path) -> int | None:
    match = re.search(r"step_(\d+)", str(folder))
    return int(match.group(1)) if match else None


def find_vaes(run: Path | None, extra: list[str], records: list[dict] | None = None) -> list[tuple[int | None, Path]]:
    """(step, image VAE folder) for every complete checkpoint of ``run``, its final model (at the
    last step of ``records``, default the run's metrics.jsonl) and every ``extra`` folder, by step."""
    from cola_mm.training.checkpoint import STEP_RE, list_complete
    from cola_mm.training.loop import METRICS_FILE, MetricsLog

    found = {}
    if run is not None:
        for ckpt in list_complete(run):
            found[int(STEP_RE.match(ckpt.name).group(1))] = ckpt / "components" / "image_vae"
    for folder in map(Path, extra):
        found[_step_of(folder)] = folder
    if run is not None and (run / "model" / "image_vae").is_dir():
        records = MetricsLog(run / METRICS_FILE, True).read() if records is None else records
        found[max((r["step"] for r in records), default=None)] = run / "model" / "image_vae"
    return sorted(found.items(), key=lambda kv: (kv[0] is None, kv[0] or 0))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None, help="an image VAE training run folder")
    ap.add_argument("--vae", action="append", default=[], help="another image VAE folder (step read from step_N)")
    ap.add_argument("--judge", required=True)
    ap.add_argument("--data", required=True, help="a built icons dataset root")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--json", required=True)
    ap.add_argument("--png", default=None)
    args = ap.parse_args(argv)

    from cola_mm.data.loader import ShardDataset
    from cola_mm.evaluation.icon_judge import IconJudge, grade_summary, vae_round_trip
    from cola_mm.vae_image.model import ImageVAE

    from cola_mm.training.loop import METRICS_FILE, MetricsLog

    run = Path(args.run) if args.run else None
    records = MetricsLog(run / METRICS_FILE, True).read() if run is not None else []
    vaes = find_vaes(run, args.vae, records)
    if not vaes:
        sys.exit(f"no image VAE found in {args.run} or --vae")
    folder = Path(args.data) / args.split
    if not folder.is_dir():
        sys.exit(f"no split folder {folder}")
    psnr = {r["step"]: round(r["val_psnr"], 2) for r in records if "val_psnr" in r}
    judge = IconJudge.from_pretrained(args.judge)
    samples = [s for _, s in zip(range(args.limit), ShardDataset(folder, required=("image", "json")))]
    images, truths = [s["image"] for s in samples], [s["json"] for s in samples]
    rows = [{"vae": "renders", "step": None, **grade_summary(judge.predict(images), truths, len(samples))}]
    for step, path in tqdm(vaes, desc="image VAEs", unit="vae"):
        vae = ImageVAE.from_pretrained(path)
        rows.append({"vae": str(path), "step": step, "val_psnr": psnr.get(step),
                     **grade_summary(judge.predict(vae_round_trip(vae, images)), truths, len(samples))})
        print(f"step {step}: all right {rows[-1]['all']:.3f}, icon top-5 {rows[-1]['icon_top5']:.3f}, "
              f"val PSNR {rows[-1]['val_psnr']}")
    report = {"command": "python bench/bench_icon_vae_steps.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "split": args.split, "judge": args.judge, "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    if args.png:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        points = [r for r in rows[1:] if r["step"] is not None]
        fig, ax = plt.subplots(figsize=(6, 3.6))
        ax.plot([r["step"] for r in points], [100 * r["all"] for r in points], "o-", label="all right")
        ax.plot([r["step"] for r in points], [100 * r["icon_top5"] for r in points], "s--", label="icon top-5")
        ax.axhline(100 * rows[0]["all"], color="grey", lw=0.8, label="judge on the renders")
        ax.set_xlabel("image VAE training step")
        ax.set_ylabel(f"icons/{args.split} through the VAE (%)")
        if any(r["val_psnr"] for r in points):
            ax2 = ax.twinx()
            ax2.plot([r["step"] for r in points if r["val_psnr"]], [r["val_psnr"] for r in points if r["val_psnr"]],
                     "^:", color="tab:red", label="val PSNR")
            ax2.set_ylabel("val PSNR (dB)", color="tab:red")
        ax.legend(loc="lower right", fontsize=8)
        ax.set_title("How much of each icon the image VAE keeps")
        fig.tight_layout()
        fig.savefig(args.png, dpi=120)
    return report


if __name__ == "__main__":
    main()
