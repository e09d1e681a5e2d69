"""The timeshift loc sweep (issue 19, docs/experiments.md §13.4): a Markdown table and one PNG.

    python bench/plot_loc_sweep.py --suite bench/results/suite_loc_d16_0_loc_d64_0_….json \\
        --png bench/results/loc_sweep.png

``--suite``: one ``cola-mm eval suite --jobs text,context`` JSON over priors whose folders are
named ``loc_d<D>_<loc>`` (``bash bench/loc_sweep.sh`` trains and names them; a ``p`` in ``<loc>``
stands for the decimal point). Three panels against the training loc, one line per latent width
``D``: gen-PPL (judged by the suite's ``--ar``), the corpus-word rate and the foreign − true
context gap; the points are the mean over the suite's seeds, the bars their standard deviation.
"""
from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict

NAME = re.compile(r"^loc_d(\d+)_([0-9p]+)$")
METRICS = (  # (job, key, label, log scale, table cell)
    ("text", "gen_ppl", "gen-PPL (AR judge)", True, "{:,.0f} ± {:,.0f}"),
    ("text", "corpus_word_rate", "corpus-word rate", False, "{:.3f} ± {:.3f}"),
    ("context", "text_foreign_gap", "context gap (foreign − true flow loss)", False, "{:+.4f} ± {:.4f}"),
)


def read_sweep(suite: dict) -> dict[int, list[tuple[float, dict]]]:
    """{latent width: [(loc, {key: (mean, std)}), …] sorted by loc} from a suite report."""
    sweep: dict[int, list[tuple[float, dict]]] = defaultdict(list)
    for name, entry in suite["checkpoints"].items():
        match = NAME.match(name)
        if match is None:
            raise SystemExit(f"{name}: not a loc sweep run (expected loc_d<D>_<loc>, e.g. loc_d16_1p7)")
        width, loc = int(match.group(1)), float(match.group(2).replace("p", "."))
        figures = {}
        for job, key, *_ in METRICS:
            summary = entry.get(job, {}).get("summary", {})
            if key in summary:
                figures[key] = (summary[key]["mean"], summary[key]["std"])
        sweep[width].append((loc, figures))
    return {width: sorted(runs, key=lambda r: r[0]) for width, runs in sorted(sweep.items())}


def table(sweep: dict) -> str:
    rows = ["| d latent | loc | gen-PPL | corpus-word rate | context gap |", "|---|---|---|---|---|"]  # METRICS' order
    for width, runs in sweep.items():
        best = min(runs, key=lambda r: r[1].get("gen_ppl", (float("inf"),))[0])[0]
        for loc, f in runs:
            cells = [cell.format(*f[key]) if key in f else "–" for _, key, _, _, cell in METRICS]
            if loc == best:
                cells[0] = f"**{cells[0]}**"
            rows.append(f"| {width} | {loc:g} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", required=True, help="suite JSON over the loc_d<D>_<loc> priors")
    parser.add_argument("--png", required=True)
    args = parser.parse_args()
    with open(args.suite) as f:
        suite = json.load(f)
    sweep = read_sweep(suite)
    print(table(sweep))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.8))
    for ax, (_, key, label, log, _) in zip(axes, METRICS):
        for width, runs in sweep.items():
            points = [(loc, f[key]) for loc, f in runs if key in f]
            if not points:
                continue
            ax.errorbar([p[0] for p in points], [p[1][0] for p in points], yerr=[p[1][1] for p in points],
                        marker="o", capsize=3, label=f"d latent {width}")
        ax.set_xlabel("training time law: t ~ sigmoid(loc + N(0,1))")
        ax.set_title(label)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"timeshift loc sweep, 128-wide text prior, 600 steps (seeds {suite.get('seeds')})")
    fig.tight_layout()
    fig.savefig(args.png, dpi=110)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
