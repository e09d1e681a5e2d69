"""Matching model families by size and by training compute (issue 19).

    python -m cola_mm.training.matching configs/baseline_prior.yaml configs/baseline_ar.yaml …
        [--set KEY=VALUE] [--json FILE]

For every run config it builds the stage's model (no data is read: only the tokenizer and, for
the prior, its Text VAE) and prints

* **parameters**, embeddings apart: ``non_embedding`` (every weight of the trained network but
  token-embedding tables), ``embedding`` (token tables; the AR's and the masked diffusion LM's
  are tied to their output layer) and, for the prior, its Text VAE's parameters (another
  network, counted apart as well);
* **training FLOPs**, by one formula for every family::

      FLOPs per training row = 6 · N_matmul · T  +  C_vae
      N_matmul = non-embedding parameters + the output layer's d·V when it is tied to the
                 embedding (a matmul at every position even though its weights are the table's)
      T        = positions through the trained network per row: L for the AR and masked
                 diffusion, 2L for the prior (the 2L layout: clean copy + noisy copy)
      C_vae    = the prior's Text VAE: 2 · N_encoder · L when frozen (one forward of the encoder);
                 6 · N_vae · L + 8 · N_encoder · L when trained jointly (its own loss, the encoder
                 again for z0 with gradients, the frozen reference encoder); the AR captioner's
                 frozen image VAE: one encoder forward per image, counted by FlopCounterMode

  (the AR captioner: a row is one image, T = its latent tokens + ``data.caption_tokens``; its
  prefix projection counts as matmul weights). A multimodal prior's rows (``data.pairs``) hold a
  varying number of images and caption tokens: the harness reads the first 200 rows of the run's
  own training stream and counts the Text VAE on their text positions and the image encoder
  once per image, on average (``text_positions_per_row``, ``images_per_row``).

  times ``batch_size · max_steps`` for the run (6 = forward 2 + backward 4 per weight and
  position; attention's n² term is left out for every family alike: at L = 128 it is ≤ 2 %).

The ``matched steps`` column is, for every config, the ``max_steps`` that gives it the first
config's training FLOPs (``--set max_steps=…`` for ``cola-mm train``). "Matched" in issue
19's sense: non-embedding parameters within ±5 % (``within_5_percent`` in the table, against the
first config) and equal FLOPs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cola_mm.training.config import TrainConfig, load_train_config


def _unique_params(modules: list[nn.Module]) -> int:
    seen: set[int] = set()
    total = 0
    for m in modules:
        for p in m.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                total += p.numel()
    return total


def _embedding_params(model: nn.Module) -> int:
    return _unique_params([m for m in model.modules() if isinstance(m, nn.Embedding)])


def family_of(stage: str) -> str:
    return {"ar": "ar", "masked-diffusion": "masked_diffusion", "prior": "cola_mm",
            "ar-captioner": "ar_captioner"}.get(stage, stage)


def _multimodal_row_contents(stage, n: int) -> tuple[float, float]:
    """(Text VAE positions, images) per training row, averaged over the first ``n`` rows of the
    run's own training stream (text windows: L tokens; packed samples: their caption tokens)."""
    from itertools import islice

    text, images = 0, 0
    rows = list(islice(iter(stage.train_dataset(0, 1)), n))
    for row in rows:
        text += row["window"].numel() if row["window"] is not None else 0
        text += sum(ids.numel() for _, ids in row["captions"])
        images += len(row["images"])
    return text / max(len(rows), 1), images / max(len(rows), 1)


def count(cfg: TrainConfig, rows_sampled: int = 200) -> dict[str, Any]:
    """Parameters and training FLOPs of one run config (see the module docstring)."""
    from cola_mm.training.loop import build_stage

    torch.manual_seed(0)
    stage = build_stage(cfg)
    L = cfg.data.seq_len
    out: dict[str, Any] = {"stage": cfg.stage, "family": family_of(cfg.stage), "run_dir": cfg.run_dir, "seq_len": L,
                           "batch_size": cfg.batch_size, "max_steps": cfg.max_steps}
    if cfg.stage in ("ar", "masked-diffusion"):
        non_emb, emb, matmul = _lm_counts(stage.module.lm)
        out.update(non_embedding=non_emb, embedding=emb, other=0, tokens_per_row=L, n_matmul=matmul)
        out["flops_per_row"] = 6 * out["n_matmul"] * L
    elif cfg.stage == "prior":
        dit, vae = stage.module.dit, stage.module.vae
        dit_total = _unique_params([dit])
        dit_emb = _embedding_params(dit)  # the segment-type table (4 rows)
        enc = _unique_params([vae.encoder, vae.to_moments, vae.mean_norm])
        vae_total = _unique_params([vae]) - _embedding_params(vae)
        frozen = stage.loss_config.freeze_vae
        text_positions, images = float(L), 0.0
        if getattr(stage, "multimodal", False):  # rows of the three jobs: count them on the data itself
            text_positions, images = _multimodal_row_contents(stage, rows_sampled)
            out.update(rows_sampled=rows_sampled, text_positions_per_row=text_positions, images_per_row=images)
        c_vae = (2 * enc * text_positions if frozen else 6 * vae_total * text_positions + 8 * enc * text_positions)
        if images:
            c_vae += images * image_encoder_flops(stage.image_vae)
        out.update(non_embedding=dit_total - dit_emb, embedding=dit_emb, other=_unique_params([vae]),
                   other_what="Text VAE (all weights)", vae_frozen=frozen, tokens_per_row=2 * L,
                   n_matmul=dit_total - dit_emb, vae_flops_per_row=c_vae)
        out["flops_per_row"] = 6 * out["n_matmul"] * 2 * L + c_vae
        if getattr(stage, "image_vae", None) is not None:
            out.update(other=out["other"] + _unique_params([stage.image_vae]),
                       other_what="Text VAE and image VAE (all weights)")
    elif cfg.stage == "ar-captioner":
        non_emb, emb, matmul = _lm_counts(stage.module.lm)
        prefix = _unique_params([stage.module.prefix])
        T = stage.image_vae.config.grid ** 2 + cfg.data.caption_tokens  # the prefix and the longest caption
        enc = image_encoder_flops(stage.image_vae)
        out.update(non_embedding=non_emb + prefix, embedding=emb, other=_unique_params([stage.image_vae]),
                   other_what="image VAE (frozen)", tokens_per_row=T, n_matmul=matmul + prefix,
                   vae_flops_per_row=enc)
        out["flops_per_row"] = 6 * out["n_matmul"] * T + enc
    else:
        raise ValueError(f"stage {cfg.stage!r}: the matching harness counts the text families "
                         f"(prior, ar, masked-diffusion) and the AR captioner")
    out["total"] = out["non_embedding"] + out["embedding"]
    out["training_flops"] = out["flops_per_row"] * cfg.batch_size * cfg.max_steps
    return out


def image_encoder_flops(image_vae) -> int:
    """FLOPs of one forward of the image VAE's encoder on one image (counted by torch's
    FlopCounterMode, so convolutions count exactly; the frozen encoder runs once per image)."""
    from torch.utils.flop_counter import FlopCounterMode

    size = image_vae.config.image_size
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        image_vae.encode(torch.zeros(1, 3, size, size))
    return int(counter.get_total_flops())


def _lm_counts(lm: nn.Module) -> tuple[int, int, int]:
    """(non-embedding, embedding, matmul) parameters of an LM; a tied output layer counts as matmul
    weights (it is a matmul at every position) though its weights are the embedding table's."""
    emb = _embedding_params(lm)
    total = _unique_params([lm])
    out_layer = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    tied_output = emb if (out_layer is None or out_layer.weight is _tables(lm)) else 0
    return total - emb, emb, total - emb + tied_output


def _tables(lm: nn.Module):
    emb = lm.get_input_embeddings() if hasattr(lm, "get_input_embeddings") else lm.embed
    return emb.weight


def compare(configs: list[tuple[str, TrainConfig]]) -> list[dict[str, Any]]:
    """:func:`count` per config, with ``ratio_non_embedding``, ``within_5_percent``, ``flops_ratio``
    and ``matched_max_steps`` against the first."""
    rows = []
    for name, cfg in configs:
        rows.append({"config": name, **count(cfg)})
    ref = rows[0]
    for r in rows:
        r["ratio_non_embedding"] = r["non_embedding"] / ref["non_embedding"]
        r["within_5_percent"] = abs(r["ratio_non_embedding"] - 1) <= 0.05
        r["flops_ratio"] = r["training_flops"] / ref["training_flops"]
        r["matched_max_steps"] = round(ref["training_flops"] / (r["flops_per_row"] * r["batch_size"]))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'config':<34}{'family':<18}{'non-emb':>10}{'emb':>9}{'other':>9}{'±5%':>5}"
            f"{'GFLOP/row':>11}{'steps':>7}{'PFLOP':>8}{'×first':>8}{'matched steps':>15}")
    lines = [head]
    for r in rows:
        lines.append(f"{r['config']:<34}{r['family']:<18}{r['non_embedding'] / 1e6:>9.2f}M{r['embedding'] / 1e6:>8.2f}M"
                     f"{r['other'] / 1e6:>8.2f}M{'yes' if r['within_5_percent'] else 'NO':>5}"
                     f"{r['flops_per_row'] / 1e9:>11.2f}{r['max_steps']:>7}{r['training_flops'] / 1e15:>8.3f}"
                     f"{r['flops_ratio']:>8.2f}{r['matched_max_steps']:>15}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cola_mm.training.matching", description=__doc__.split("\n\n")[0])
    parser.add_argument("configs", nargs="+", help="run configs (the first is the reference)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override applied to every config (as `cola-mm train --set`)")
    parser.add_argument("--json", help="write the rows as JSON here")
    args = parser.parse_args(argv)
    from cola_mm.core.config import ConfigError

    try:
        configs = [(Path(c).stem, load_train_config(c, args.set)) for c in args.configs]
        rows = compare(configs)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        print(f"error: {str(err).splitlines()[0]}", file=sys.stderr)
        return 2
    print(table(rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
