"""Fluency against diversity: gen-PPL and corpus-word rate against unigram entropy, one curve per
model over its sampling temperatures (JSONs of ``bench/bench_text_temperature.py``).

A lower temperature buys a lower gen-PPL with a narrower vocabulary, for the prior's noise
temperature as for an AR's softmax temperature, so one gen-PPL per model compares sampling
settings as much as models. Read at the same unigram entropy, the curves compare the models:
for each model and each point of the others, this prints (and writes to ``--json``) the model's
gen-PPL interpolated at that point's entropy (log gen-PPL linear in entropy between its two
nearest temperatures; nothing outside its range). For each point it also names the other
models' points that *dominate* it, which answers where the curves do not overlap in entropy: at
least as varied (unigram entropy), at least as fluent by every judge the two share, no more
repeated 4-grams. A model dominated at every temperature loses whatever sampling each is given.

    python bench/plot_text_frontier.py --run bundle=bench/results/text_frontier_demo.json \\
        --run "matched AR=bench/results/text_frontier_ar_matched.json" \\
        --png bench/results/text_frontier.png --json bench/results/text_frontier_compare.json
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def curve(report: dict) -> list[dict]:
    """(temperature, entropy, gen-PPL, word rate) per row, sorted by entropy."""
    points = [{"temperature": r["temperature"], "entropy": r["summary"]["unigram_entropy_bits"]["mean"],
               "gen_ppl": r["summary"]["gen_ppl"]["mean"], "gen_ppl_std": r["summary"]["gen_ppl"]["std"],
               "word_rate": r["summary"]["corpus_word_rate"]["mean"],
               "ngram_ppl": r["summary"].get("ngram_ppl", {}).get("mean"),
               "repeated_4gram": r["summary"]["repeated_4gram_rate"]["mean"]} for r in report["rows"]]
    return sorted(points, key=lambda p: p["entropy"])


def monotone(points: list[dict]) -> bool:
    """Whether entropy rises with temperature along the curve (else entropy does not index it)."""
    by_t = sorted(points, key=lambda p: p["temperature"])
    return all(a["entropy"] <= b["entropy"] for a, b in zip(by_t, by_t[1:]))


def perplexity_at(points: list[dict], entropy: float, key: str = "gen_ppl") -> float | None:
    """The log of a perplexity (``key``: gen-PPL, or the trigram judge's ``ngram_ppl``) interpolated
    linearly in entropy between the two nearest points; None outside the curve's range, where its
    entropy does not rise with temperature, or where a point lacks that perplexity."""
    if not monotone(points):
        return None
    for a, b in zip(points, points[1:]):
        if a["entropy"] <= entropy <= b["entropy"]:
            w = 0.0 if b["entropy"] == a["entropy"] else (entropy - a["entropy"]) / (b["entropy"] - a["entropy"])
            if a[key] is None or b[key] is None:
                return None
            return math.exp((1 - w) * math.log(a[key]) + w * math.log(b[key]))
    return None


def dominates(a: dict, b: dict) -> bool:
    """Whether point ``a`` is at least as good as ``b`` on every axis the frontier has: unigram
    entropy (higher), gen-PPL and, where both have it, the trigram judge (lower), repeated 4-grams
    (no more), and strictly better on at least one."""
    keys = [("entropy", 1), ("gen_ppl", -1), ("repeated_4gram", -1)]
    if a["ngram_ppl"] is not None and b["ngram_ppl"] is not None:
        keys.append(("ngram_ppl", -1))
    at_least = all(sign * (a[k] - b[k]) >= 0 for k, sign in keys)
    return at_least and any(sign * (a[k] - b[k]) > 0 for k, sign in keys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", action="append", required=True, help="LABEL=JSON of bench_text_temperature.py")
    ap.add_argument("--png", required=True)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    runs: dict[str, dict] = {}
    for item in args.run:
        label, sep, path = item.partition("=")
        if not sep or not label:
            ap.error(f"--run {item!r}: expected LABEL=JSON")
        report = json.loads(Path(path).read_text())
        if not report["rows"] or "gen_ppl" not in report["rows"][0]["summary"]:
            ap.error(f"--run {item!r}: no gen-PPL in it (run the bench with --ar JUDGE)")
        runs[label] = {"path": path, "judge": report.get("judge"), "reference": report["reference"],
                       "windows": report.get("tuning_windows"), "points": curve(report)}
    if len({json.dumps(r["windows"]) for r in runs.values()}) > 1:
        ap.error("the runs continued different tuning windows (another tokenizer or --prompts): not comparable")
    judges = {r["judge"] for r in runs.values()}
    if len(judges) > 1:
        ap.error(f"the runs were judged by different ARs ({sorted(map(str, judges))}): gen-PPL is not comparable")

    comparisons = []
    for label, run in runs.items():
        if not monotone(run["points"]):
            print(f"{label}: entropy does not rise with temperature, so it is not read at others' entropy")
        for other, orun in runs.items():
            if other == label:
                continue
            for p in orun["points"]:
                at = perplexity_at(run["points"], p["entropy"])
                ngram_at = perplexity_at(run["points"], p["entropy"], "ngram_ppl")
                comparisons.append({"model": label, "at": other, "temperature": p["temperature"],
                                    "entropy": p["entropy"], "its_gen_ppl": p["gen_ppl"], "model_gen_ppl": at,
                                    "ratio": None if at is None else p["gen_ppl"] / at,
                                    "its_ngram_ppl": p["ngram_ppl"], "model_ngram_ppl": ngram_at,
                                    "ngram_ratio": None if ngram_at is None else p["ngram_ppl"] / ngram_at})
                if at is not None:
                    ngram = "" if ngram_at is None else (f"; trigram judge {p['ngram_ppl']:.0f} vs {ngram_at:.0f}, "
                                                         f"ratio {p['ngram_ppl'] / ngram_at:.2f}")
                    print(f"at {other}'s τ {p['temperature']:g} (entropy {p['entropy']:.2f} bits, gen-PPL "
                          f"{p['gen_ppl']:.0f}): {label} {at:.0f}, ratio {p['gen_ppl'] / at:.2f}{ngram}")
    dominated = []
    for label, run in runs.items():
        for p in run["points"]:
            by = [{"model": other, "temperature": q["temperature"]} for other, orun in runs.items() if other != label
                  for q in orun["points"] if dominates(q, p)]
            dominated.append({"model": label, "temperature": p["temperature"], "dominated_by": by})
            if by:
                names = ", ".join(f"{d['model']} τ {d['temperature']:g}" for d in by)
                print(f"{label} τ {p['temperature']:g} ({p['entropy']:.2f} bits, gen-PPL {p['gen_ppl']:.0f}) is "
                      f"dominated by {names}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "comparisons": comparisons, "dominated": dominated},
                                              indent=2) + "\n")
        print(f"wrote {args.json}")
    plot(runs, Path(args.png))


def plot(runs: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("gen_ppl", "gen_ppl", "gen-PPL, the AR judge (lower: more fluent)"),
              ("word_rate", "corpus_word_rate", "corpus-word rate")]
    if all(p["ngram_ppl"] is not None for run in runs.values() for p in run["points"]):
        panels.insert(1, ("ngram_ppl", "ngram_ppl", "perplexity, the trigram judge"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    reference = next(iter(runs.values()))["reference"]
    for label, run in runs.items():
        pts = run["points"]
        for ax, (key, _, _) in zip(axes, panels):
            ax.plot([p["entropy"] for p in pts], [p[key] for p in pts], marker="o", label=label)
            for p in pts:
                ax.annotate(f"{p['temperature']:g}", (p["entropy"], p[key]), textcoords="offset points",
                            xytext=(3, 3), fontsize=7)
    for ax, (_, ref_key, title) in zip(axes, panels):
        if ref_key in reference:
            ax.scatter([reference["unigram_entropy_bits"]], [reference[ref_key]], marker="*", s=120, color="black",
                       label="the plays' own text", zorder=3)
        ax.set_xlabel("unigram entropy (bits; higher: more varied)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
        if "ppl" in ref_key:
            ax.set_yscale("log")
    fig.suptitle("tuning windows of the held-out plays; labels: sampling temperature", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
