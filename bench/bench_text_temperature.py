"""The text job's noise temperature, on tuning prompts: which default should a pipeline ship?

Each generated text block starts from noise ``temperature · ε`` (``pipeline.json``
``text_temperature``, :class:`cola_mm.prior.sampler.SamplerConfig`). Below 1 the ODE starts
nearer the middle of the noise distribution and ends nearer the modes of the prior: fewer
latents fall between the Text VAE's token codes, at some cost in diversity (0 gives one output
per prompt whatever the seed). This bench measures that trade on the windows of the held-out
plays that the suite does *not* read (:func:`cola_mm.evaluation.context.tuning_windows`), so the
choice never sees the suite's prompts.

Per temperature and seed, the suite's text figures (with ``--speaker-prompts``, also its speaker
figures on speaker prompts that the suite's do not include) (:func:`cola_mm.evaluation.suite.continuation_figures`:
corpus-word rate, repeated 4-grams, same-seed overlap across prompts, the trigram Kneser-Ney
judge's perplexity of :mod:`cola_mm.evaluation.ngram`, MAUVE against the plays' own
continuations where the sentence encoder is installed, and gen-PPL with ``--ar``);
per temperature also the *cross-seed* overlap: the mean shared 3-gram rate of one prompt's
continuations under different seeds (1.0 = the seed no longer matters).

    python bench/bench_text_temperature.py --ckpt checkpoints/demo --ar runs/baseline_ar/model \\
        --json bench/results/text_temperature.json

``reference`` scores the plays' own next tokens after each prompt by the same figures (their
corpus-word rate, unigram entropy and gen-PPL are what text of this corpus measures).

``--steps N`` runs the prior's sampler at N ODE steps per block instead of its ``default_steps``
(the same prompts and figures, so step counts can be chosen on tuning prompts too).

``--ckpt`` may also be an AR baseline folder (``cola-mm train`` with ``stage: ar``): its rows are
then softmax temperatures (with ``--top-p``), chosen by the same figures on the same prompts, so
a comparison of the prior with an AR can give each family its own best sampling
(``cola-mm export --text-temperature`` stores the choice in the AR folder).

Writes a PNG next to the JSON: word rate, gen-PPL and cross-seed overlap per temperature.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import torch

from cola_mm.evaluation import text_metrics as tm
from cola_mm.evaluation.context import pair_overlap, tuning_prompts
from cola_mm.evaluation.suite import aggregate, continuation_figures, continue_prompts
from cola_mm.evaluation.generators import load_text_generator


def cross_seed_overlap(by_seed: list[list[str]]) -> float:
    """Mean shared word-3-gram rate between the continuations of the same prompt under two seeds."""
    rates = [pair_overlap(a, b)["shared_3gram_rate"] for a, b in itertools.combinations(by_seed, 2)]
    return sum(rates) / len(rates) if rates else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default="checkpoints/demo")
    ap.add_argument("--data", default="datasets")
    ap.add_argument("--ar", default=None, help="judge AR folder for generative perplexity (default: none)")
    ap.add_argument("--temperatures", default="1,0.8,0.6,0.4,0")
    ap.add_argument("--prompts", type=int, default=48)
    ap.add_argument("--suite-prompts", type=int, default=32, help="the suite's --text-prompts (left out)")
    ap.add_argument("--new-tokens", type=int, default=64, help="as the suite: prompts of this many tokens too")
    ap.add_argument("--cfg", type=float, default=None, help="text guidance (default: the pipeline's)")
    ap.add_argument("--speaker-prompts", type=int, default=16,
                    help="prompts ending on a held-out character's speaker line, none of the suite's (0: none)")
    ap.add_argument("--suite-speaker-prompts", type=int, default=16, help="the suite's --speaker-prompts (left out)")
    ap.add_argument("--lead-blocks", type=int, default=0,
                    help="every row: the first N generated blocks start from --lead-temperature noise")
    ap.add_argument("--lead-temperature", type=float, default=1.0)
    ap.add_argument("--top-p", type=float, default=None, help="an AR folder only: nucleus cutoff (default: its own)")
    ap.add_argument("--steps", type=int, default=None,
                    help="the prior only: ODE steps per block (default: the pipeline's default_steps)")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", required=True)
    ap.add_argument("--png", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    pipe = load_text_generator(args.ckpt)
    is_prior = pipe.family == "cola_mm"
    if pipe.family not in ("cola_mm", "ar"):
        ap.error(f"--ckpt {args.ckpt}: a Cola-MM pipeline or an AR folder, not {pipe.family}")
    if not is_prior and args.lead_blocks:
        ap.error("--lead-blocks: the prior's sampler only; an AR folder has no noise blocks")
    if is_prior and args.top_p is not None:
        ap.error("--top-p: an AR folder only; the prior's sampler has no top-p")
    if not is_prior and args.steps is not None:
        ap.error("--steps: the prior's sampler only; an AR folder has no ODE steps")
    if args.steps is not None and args.steps < 1:
        ap.error(f"--steps {args.steps}: at least 1")
    if args.top_p is not None:
        pipe.top_p = args.top_p
    root = Path(args.data)
    ids, picked, prompts = tuning_prompts(root / "text" / "val", pipe.tokenizer, args.prompts, args.suite_prompts,
                                          args.new_tokens)
    vocabulary = tm.corpus_vocabulary(root / "text" / "train")
    judge = None
    if args.ar:
        from cola_mm.evaluation.ar import load_ar

        judge = load_ar(args.ar)
    # the plays' own next 64 tokens after each prompt, scored alike: what text reads like here
    references = [pipe.tokenizer.decode(row[args.new_tokens:2 * args.new_tokens].tolist(), skip_special_tokens=True)
                  for row in ids]
    from cola_mm.evaluation.suite import mauve_encoder, ngram_judge_for

    ngram = ngram_judge_for(pipe.tokenizer, root / "text" / "train")  # a judge of neither family
    encoder = mauve_encoder()  # MAUVE against the plays' own continuations, as the suite scores it
    mauve_references = [r.strip() for r in references]
    _, reference = continuation_figures(references, prompts, vocabulary, pipe.tokenizer, judge, ngram=ngram)
    print("reference (the plays' own continuations): "
          + ", ".join(f"{k} {v:.3f}" for k, v in reference.items()), flush=True)
    said_prompts, play_speakers = [], {}
    if args.speaker_prompts:
        from cola_mm.evaluation import speakers as sp

        said_prompts = sp.speaker_prompts(root / "text" / "val", root / "text" / "train", pipe.tokenizer,
                                          args.speaker_prompts, avoid=args.suite_speaker_prompts)
        play_speakers = sp.speakers_by_play(root / "text" / "val")
    seeds = [int(s) for s in args.seeds.split(",")]
    base = pipe.config if is_prior else None
    rows = []
    for temperature in [float(t) for t in args.temperatures.split(",")]:
        if is_prior:
            pipe.config = dataclasses.replace(base, text_temperature=temperature, text_lead_blocks=args.lead_blocks,
                                              text_lead_temperature=args.lead_temperature)
        else:  # the AR's softmax temperature, checked like every AR setting
            from cola_mm.evaluation.ar import check_sampling

            check_sampling(temperature, pipe.top_p)
            pipe.temperature = temperature
        started, per_seed, by_seed = time.time(), [], []
        for seed in seeds:
            texts = continue_prompts(pipe, prompts, args.new_tokens, args.steps, args.cfg, seed, True,
                                     f"temperature {temperature} seed {seed}")
            texts, figures = continuation_figures(texts, prompts, vocabulary, pipe.tokenizer, judge, encoder,
                                                  mauve_references, ngram=ngram)
            if said_prompts:
                said = continue_prompts(pipe, [p["prompt"] for p in said_prompts], 48, args.steps, args.cfg,  # as the suite
                                        seed, True, f"temperature {temperature} speakers seed {seed}")
                figures.update(sp.speaker_figures(said, said_prompts, play_speakers))
            per_seed.append(figures)
            by_seed.append(texts)
        row = {"temperature": temperature, "per_seed": per_seed, "summary": aggregate(per_seed),
               "cross_seed_3gram": cross_seed_overlap(by_seed), "seconds": round(time.time() - started, 1),
               "sample": by_seed[0][:2]}
        s = row["summary"]
        ppl = f", gen-PPL {s['gen_ppl']['mean']:.0f} ± {s['gen_ppl']['std']:.0f}" if "gen_ppl" in s else ""
        print(f"temperature {temperature}: word rate {s['corpus_word_rate']['mean']:.3f} "
              f"± {s['corpus_word_rate']['std']:.3f}{ppl}, same-seed 3-grams {s['same_seed_3gram']['mean']:.3f}, "
              f"cross-seed 3-grams {row['cross_seed_3gram']:.3f}"
              + (f", speech after the speaker line {s['speech_after_speaker']['mean']:.2f}" if said_prompts else ""),
              flush=True)
        rows.append(row)
    report = {"ckpt": args.ckpt, "family": pipe.family, "judge": args.ar, "prompts": args.prompts,
              "new_tokens": args.new_tokens,
              "cfg_scale": args.cfg if args.cfg is not None or not is_prior else base.default_cfg_scale,
              "top_p": None if is_prior else pipe.top_p,
              "steps": (args.steps or base.default_steps) if is_prior else None,
              "lead_blocks": args.lead_blocks, "lead_temperature": args.lead_temperature,
              "tuning_windows": picked, "seeds": seeds, "reference": reference, "rows": rows}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    plot(rows, reference, Path(args.png) if args.png else out.with_suffix(".png"))


def plot(rows: list[dict], reference: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("corpus_word_rate", "corpus-word rate"), ("unigram_entropy_bits", "unigram entropy (bits)")]
    if "gen_ppl" in rows[0]["summary"]:
        panels.append(("gen_ppl", "gen-PPL"))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(4.2 * (len(panels) + 1), 3.5))
    temps = [r["temperature"] for r in rows]
    for ax, (key, label) in zip(axes, panels):
        ax.errorbar(temps, [r["summary"][key]["mean"] for r in rows], yerr=[r["summary"][key]["std"] for r in rows],
                    marker="o", capsize=3)
        ax.axhline(reference[key], color="grey", linestyle="--", label="the plays' own text")
        ax.set_xlabel("text temperature")
        ax.set_title(label)
        ax.legend(fontsize=8)
        if key == "gen_ppl":
            ax.set_yscale("log")
    ax = axes[-1]
    ax.plot(temps, [r["cross_seed_3gram"] for r in rows], marker="o", label="one prompt, two seeds")
    ax.plot(temps, [r["summary"]["same_seed_3gram"]["mean"] for r in rows], marker="s", label="one seed, two prompts")
    ax.set_xlabel("text temperature")
    ax.set_title("shared word 3-grams")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
