"""Unified prior against its single-job specialists (issue 19): each held-out split's strict
accuracy, mean ± std over the suite's seeds, as a Markdown table and a grouped-bar PNG.

    python bench/plot_specialists.py --suite bench/results/suite_unified_d128_t2i_d128_captioner_d128.json \\
        --unified unified_d128 --t2i t2i_d128 --captioner captioner_d128 \\
        --matching bench/results/specialists_matching.json --png bench/results/specialists.png

``--suite``: one ``cola-mm eval suite --jobs images`` JSON over the three model folders (names are
the folders' run names, as the suite writes them). Text → image rows compare the unified prior
with the text → image specialist, caption rows with the captioning specialist. ``--matching``
(``python -m cola_mm.training.matching … --json``) adds each run's training FLOPs to the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def split_rows(summary: dict, suffix: str = "_all_acc") -> dict[str, dict]:
    """The per-split ``*_all_acc`` figures, without the size sub-groups (``_large``/``_small``)."""
    return {k[: -len(suffix)]: v for k, v in summary.items()
            if k.endswith(suffix) and not any(g in k for g in ("_large_", "_small_"))}


def table(suite: dict, unified: str, t2i: str, captioner: str) -> tuple[list, list]:
    entries = suite["checkpoints"]
    for name in (unified, t2i, captioner):
        if name not in entries:
            raise SystemExit(f"{name}: not in the suite JSON (it holds {', '.join(entries)})")
    image = [(split, split_rows(entries[unified]["text_to_image"]["summary"]).get(split),
              split_rows(entries[t2i]["text_to_image"]["summary"]).get(split))
             for split in split_rows(entries[unified]["text_to_image"]["summary"])]
    caption = [(split, split_rows(entries[unified]["image_to_text"]["summary"]).get(split),
                split_rows(entries[captioner]["image_to_text"]["summary"]).get(split))
               for split in split_rows(entries[unified]["image_to_text"]["summary"])]
    return image, caption


def fmt(v: dict | None) -> str:
    return "–" if v is None else f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True, help="suite JSON over the unified prior and both specialists")
    parser.add_argument("--unified", required=True, help="the unified prior's name in the suite JSON")
    parser.add_argument("--t2i", required=True, help="the text → image specialist's name")
    parser.add_argument("--captioner", required=True, help="the captioning specialist's name")
    parser.add_argument("--matching", default=None, help="matching JSON (training FLOPs per run_dir)")
    parser.add_argument("--png", required=True)
    args = parser.parse_args()
    suite = json.loads(Path(args.suite).read_text())
    image, caption = table(suite, args.unified, args.t2i, args.captioner)
    if args.matching:
        by_run = {Path(r["run_dir"]).name: r for r in json.loads(Path(args.matching).read_text())}
        for name in (args.unified, args.t2i, args.captioner):
            r = by_run.get(name)
            if r:
                print(f"{name}: {r['training_flops']:.3g} training FLOPs, {r['non_embedding'] / 1e6:.2f} M non-embedding, "
                      f"{r['max_steps']} steps × {r['batch_size']}")
    print(f"\n| text → image, all right | {args.unified} | {args.t2i} (specialist) |\n|---|---|---|")
    for split, u, s in image:
        print(f"| {split} | {fmt(u)} | {fmt(s)} |")
    print(f"\n| image → text, strict | {args.unified} | {args.captioner} (specialist) |\n|---|---|---|")
    for split, u, s in caption:
        print(f"| {split} | {fmt(u)} | {fmt(s)} |")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [max(len(image), 1), max(len(caption), 1)]})
    for ax, rows, title, other in ((axes[0], image, "text → image (judge: all right)", "text → image specialist"),
                                   (axes[1], caption, "image → text (strict grader)", "AR captioner specialist")):
        xs = range(len(rows))
        for off, idx, label in ((-0.2, 1, "unified prior"), (0.2, 2, other)):
            vals = [r[idx] for r in rows]
            ax.bar([x + off for x in xs], [100 * v["mean"] if v else 0 for v in vals], width=0.4,
                   yerr=[100 * v["std"] if v else 0 for v in vals], capsize=3, label=label)
        ax.set_xticks(list(xs), [r[0] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"unified vs specialists at equal training FLOPs (seeds {suite.get('seeds')}, "
                 f"{suite.get('limit')} per split)", fontsize=10)
    fig.tight_layout()
    fig.savefig(args.png, dpi=120)
    print(f"\nwrote {args.png}")


if __name__ == "__main__":
    main()
