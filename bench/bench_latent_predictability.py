"""How much of a Text VAE's latent can its context predict, at best (issue 24)?

The share of the latent's variance (in the prior's normalised space) that the own token, the
previous token and the previous block explain on held-out windows, with predictors fitted on
training windows: a lower bound on how much reading the context can save the flow loss at
t = 1 (:mod:`cola_mm.evaluation.latent_predictability` says why). Also the posterior's own noise over
the latent's variance, and, for scale, the previous token's R² on one-hot tokens.

    python bench/bench_latent_predictability.py --vae checkpoints/demo --data datasets \
        --out bench/results/latent_predictability.json
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

from cola_mm.evaluation.context import encode_text, read_windows
from cola_mm.evaluation.latent_predictability import bigram_r2, ridge_prev_block_r2, token_space_prev_r2
from cola_mm.vae_text.model import TextVAE
from cola_mm.vae_text.tokenizer import load_tokenizer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--vae", action="append", required=True,
                    help="a pipeline folder (its text_vae/) or a Text VAE folder; repeat to compare")
    ap.add_argument("--data", default="datasets", help="the folder of `cola-mm data all`")
    ap.add_argument("--tokenizer", default=None, help="default: the first --vae's tokenizer/ or DATA/tokenizer")
    ap.add_argument("--train-windows", type=int, default=1200)
    ap.add_argument("--val-windows", type=int, default=200)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--block", type=int, default=16, help="the prior's block (latents)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    start = time.time()
    first = Path(args.vae[0])
    tok_dir = args.tokenizer or (first / "tokenizer" if (first / "tokenizer").is_dir() else Path(args.data) / "tokenizer")
    tokenizer = load_tokenizer(tok_dir)
    n_vocab = len(tokenizer)
    ids_tr = read_windows(Path(args.data) / "text" / "train", tokenizer, args.train_windows, args.seq_len)
    ids_va = read_windows(Path(args.data) / "text" / "val", tokenizer, args.val_windows, args.seq_len)
    result = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
              "date": datetime.datetime.now().isoformat(timespec="seconds"),
              "train_windows": args.train_windows, "val_windows": args.val_windows, "seq_len": args.seq_len,
              "block": args.block, "token_space_prev_token_r2": token_space_prev_r2(ids_tr, ids_va, n_vocab),
              "vaes": {}}
    for path in args.vae:
        p = Path(path)
        vae = TextVAE.from_pretrained(p / "text_vae" if (p / "text_vae").is_dir() else p).float().eval()
        if vae.config.vocab_size != n_vocab:
            raise SystemExit(f"error: {path} has a vocabulary of {vae.config.vocab_size}, the tokenizer {n_vocab}")
        z_tr = encode_text(vae, ids_tr, progress=f"encode train ({path})")
        z_va, var_va = encode_text(vae, ids_va, with_variance=True, progress=f"encode val ({path})")
        row = {"latent_var": float(z_va.var(dim=(0, 1)).mean()),
               "posterior_noise": float(var_va.mean() / z_va.var(dim=(0, 1)).mean()),
               **bigram_r2(ids_tr, ids_va, z_tr, z_va, n_vocab),
               "prev_block_ridge": ridge_prev_block_r2(z_tr, z_va, args.block)}
        result["vaes"][path] = row
        print(path, json.dumps({k: round(v, 4) for k, v in row.items()}))
    result["seconds"] = round(time.time() - start, 1)
    print("token space, prev token R²:", round(result["token_space_prev_token_r2"], 4))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
