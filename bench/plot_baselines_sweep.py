"""Plot the scaling sweep of the text families (issue 19): each suite text figure against
training FLOPs, one line per family, mean ± std over the suite's seeds.

    python bench/plot_baselines_sweep.py --suite bench/results/suite_<names>.json \\
        --matching bench/results/baselines_matching.json --png bench/results/baselines_sweep.png

``--suite`` (repeatable): ``cola-mm eval suite --jobs text`` JSONs over the sweep's model folders;
``--matching``: ``python -m cola_mm.training.matching … --json`` over their run configs (it
gives each run's training FLOPs and parameters; runs are matched by ``run_dir``). Prints the table
in Markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

FIGURES = (("gen_ppl", "gen-PPL (judge: the 256-wide AR)", True), ("corpus_word_rate", "corpus-word rate", False),
           ("mauve", "MAUVE", False), ("same_seed_3gram", "same-seed 3-grams shared", False))
LABELS = {"cola_mm": "Cola-MM prior", "ar": "AR (LLaMA)", "masked_diffusion": "masked diffusion (LLaDA)"}


def rows(suite: dict, matching: list[dict]) -> list[dict]:
    by_dir = {str(Path(r["run_dir"])): r for r in matching}
    out = []
    for name, entry in suite["checkpoints"].items():
        run = str(Path(entry["path"]).parent)
        if run not in by_dir:
            raise SystemExit(f"{entry['path']}: no run config with run_dir {run} in the matching JSON")
        m = by_dir[run]
        out.append({"name": name, "family": m["family"], "flops": m["training_flops"],
                    "non_embedding": m["non_embedding"], "summary": entry["text"]["summary"]})
    return sorted(out, key=lambda r: (r["family"], r["flops"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite", required=True, action="append", help="suite JSON (repeat: their checkpoints are merged)")
    parser.add_argument("--matching", required=True)
    parser.add_argument("--png", required=True)
    args = parser.parse_args()
    suites = [json.loads(Path(p).read_text()) for p in args.suite]
    merged = {"checkpoints": {k: v for s in suites for k, v in s["checkpoints"].items()}}
    data = rows(merged, json.loads(Path(args.matching).read_text()))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = [f for f in FIGURES if any(f[0] in r["summary"] for r in data)]
    fig, axes = plt.subplots(1, len(figures), figsize=(4.2 * len(figures), 3.6))
    axes = [axes] if len(figures) == 1 else axes
    for ax, (key, title, log) in zip(axes, figures):
        for family in LABELS:
            pts = [r for r in data if r["family"] == family and key in r["summary"]]
            if pts:
                ax.errorbar([p["flops"] for p in pts], [p["summary"][key]["mean"] for p in pts],
                            yerr=[p["summary"][key]["std"] for p in pts], marker="o", capsize=3, label=LABELS[family])
        ax.set_xscale("log")
        if log:
            ax.set_yscale("log")
        ax.set_xlabel("training FLOPs")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    Path(args.png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png, dpi=120)
    head = "| run | family | non-emb params | training FLOPs | " + " | ".join(t for _, t, _ in figures) + " |"
    print(head + "\n|" + "---|" * (4 + len(figures)))
    for r in data:
        cells = [f"{r['summary'][k]['mean']:.3g} ± {r['summary'][k]['std']:.2g}" if k in r["summary"] else "–"
                 for k, _, _ in figures]
        print(f"| {r['name']} | {r['family']} | {r['non_embedding'] / 1e6:.2f} M | {r['flops']:.3g} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
