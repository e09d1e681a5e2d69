"""Evaluation of trained components on held-out data (``cola-mm eval`` calls into this file).

Text VAE (DESIGN.md "Evaluation"): one pass over held-out text shards, cut into the same packed
``<bos> text <eos>`` windows the training stage uses (:class:`cola_mm.data.windows.TokenWindows`, no
shuffling), measuring

- ``acc_mean``     token reconstruction accuracy, decoding the posterior mean z = μ(x);
- ``acc_sample``   the same from a sampled z ~ q(z|x) (seeded, so reproducible);
- ``kl_per_token`` KL(q(z|x) ‖ N(0, I)) per token, summed over latent dims, in nats;
- ``active_dims``  latent dims whose posterior mean varies over tokens (Var > 0.01, Burda et
  al. 2016), out of ``d_latent``: the posterior-collapse detector;
- ``tokens``       number of tokens evaluated.

Run::

    cola-mm eval --ckpt runs/vae_text/model --data datasets/text/val
    python -c "from cola_mm.evaluation.text_vae import evaluate_text_vae as e, format_report as f; \\
               print(f(e('runs/vae_text/model', 'datasets/text/val')))"
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm import tqdm

from cola_mm.core.components import CONFIG_NAME, CheckpointError
from cola_mm.data.shards import DataError
from cola_mm.data.windows import Source, TokenWindows, collate_windows
from cola_mm.vae_text.losses import reconstruction_metrics
from cola_mm.vae_text.model import TextVAE
from cola_mm.vae_text.tokenizer import load_tokenizer

TEXT_VAE_DIR = "text_vae"  # component folders inside a model folder (see cola_mm/training/stages/text_vae.py)
TOKENIZER_DIR = "tokenizer"
ACTIVE_DIM_THRESHOLD = 0.01  # Var over tokens of a posterior-mean dim above which it is "active"

PathLike = str | os.PathLike


def _resolve(ckpt: PathLike) -> tuple[Path, Path | None]:
    """(text_vae folder, tokenizer folder or None) of a model folder or a text_vae folder."""
    ckpt = Path(ckpt).expanduser()
    if not ckpt.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {ckpt}")
    if (ckpt / TEXT_VAE_DIR).is_dir():
        return ckpt / TEXT_VAE_DIR, ckpt / TOKENIZER_DIR
    if (ckpt / CONFIG_NAME).is_file():
        return ckpt, None
    hint = next((f"; did you mean {ckpt / sub}?" for sub in ("model", "components")
                 if (ckpt / sub / TEXT_VAE_DIR).is_dir()), "")
    raise CheckpointError(f"{ckpt} is neither a model folder (no {TEXT_VAE_DIR}/) nor a "
                          f"{TEXT_VAE_DIR} folder (no {CONFIG_NAME}){hint}")


def load_text_vae(ckpt: PathLike, tokenizer: Any = None) -> tuple[TextVAE, Any]:
    """Load a Text VAE and its tokenizer, checking that they belong together.

    ``ckpt`` is a model folder (``text_vae/`` and ``tokenizer/`` inside) or a ``text_vae``
    folder itself, in which case ``tokenizer`` (a folder or a loaded tokenizer) is required.
    A given ``tokenizer`` overrides the model folder's. Every failure is a
    :class:`CheckpointError` with one line.
    """
    vae_dir, tok_dir = _resolve(ckpt)
    if tokenizer is None:
        if tok_dir is None:
            raise CheckpointError(f"{vae_dir} is a {TEXT_VAE_DIR} folder with no tokenizer beside it; "
                                  f"pass the tokenizer it was trained with")
        if not tok_dir.is_dir():
            raise CheckpointError(f"tokenizer folder not found: {tok_dir}")
        tokenizer = tok_dir
    if isinstance(tokenizer, (str, os.PathLike)):
        try:
            tokenizer = load_tokenizer(tokenizer)
        except DataError as err:
            raise CheckpointError(str(err)) from None
    vae = TextVAE.from_pretrained(vae_dir)
    if len(tokenizer) != vae.config.vocab_size:
        raise CheckpointError(f"tokenizer has {len(tokenizer)} tokens but the checkpoint {vae_dir} "
                              f"was trained with {vae.config.vocab_size}")
    return vae.eval(), tokenizer


@torch.no_grad()
def evaluate_text_vae(ckpt: PathLike, shards: PathLike | Sequence[PathLike], tokenizer: Any = None,
                      seq_len: int = 128, batch_size: int = 16, max_batches: int | None = None,
                      seed: int = 0, progress: bool = True, device: str | torch.device = "cpu"
                      ) -> dict[str, float]:
    """Reconstruction metrics of a Text VAE over one pass of held-out ``shards`` (any
    :func:`cola_mm.data.loader.list_shards` pattern). Deterministic for a given ``seed`` (the sampled z
    does not depend on ``batch_size`` either: one generator draws the noise in window order).

    Returns ``{acc_mean, acc_sample, kl_per_token, active_dims, d_latent, tokens}``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_batches is not None and max_batches < 1:
        raise ValueError(f"max_batches must be >= 1, got {max_batches}")
    vae, tokenizer = load_text_vae(ckpt, tokenizer)
    vae.to(device)
    spec = str(shards) if isinstance(shards, (str, os.PathLike)) else [str(s) for s in shards]
    windows = TokenWindows([Source(spec)], tokenizer, seq_len, seed=seed, shuffle_buffer=0,
                           epochs=1, rank=0, world_size=1)
    gen = torch.Generator(device=device).manual_seed(seed)
    c = vae.config.d_latent
    tokens = correct_mean = correct_sample = 0
    kl_sum = 0.0
    # running moments of the posterior means per dim (float64), for the active-dims count
    m_sum = torch.zeros(c, dtype=torch.float64)
    m_sq = torch.zeros(c, dtype=torch.float64)

    stream = iter(windows)
    bar = tqdm(total=max_batches, desc="eval text_vae", unit="batch", disable=not progress)
    n_batches = 0
    while max_batches is None or n_batches < max_batches:
        items = [w for _, w in zip(range(batch_size), stream)]
        if not items:
            break
        ids = collate_windows(items)["ids"].to(device)  # (b, n)
        valid = torch.ones_like(ids, dtype=torch.bool)  # packed windows have no padding
        out = reconstruction_metrics(vae, ids, valid, gen)
        tokens += int(out["tokens"])
        correct_mean += int(out["correct_mean"])
        correct_sample += int(out["correct_sample"])
        kl_sum += float(out["kl_sum"])
        means = out["means"].double().cpu()  # (tokens, c)
        m_sum += means.sum(0)
        m_sq += means.pow(2).sum(0)
        n_batches += 1
        bar.update(1)
        bar.set_postfix(acc=f"{correct_mean / tokens:.3f}")
    bar.close()
    if tokens == 0:
        raise DataError(f"no full window of {seq_len} tokens in {spec}; use a smaller seq_len")
    # unbiased variance, as torch.var in cola_mm.vae_text.losses.active_dims
    var = (m_sq - m_sum.pow(2) / tokens) / max(tokens - 1, 1)
    return {"acc_mean": correct_mean / tokens,
            "acc_sample": correct_sample / tokens,
            "kl_per_token": kl_sum / tokens,
            "active_dims": int((var > ACTIVE_DIM_THRESHOLD).sum()),
            "d_latent": c,
            "tokens": tokens}


_LABELS = {  # key: (label, format)
    "acc_mean": ("token accuracy, z = posterior mean", "{:.4f}"),
    "acc_sample": ("token accuracy, z ~ posterior", "{:.4f}"),
    "kl_per_token": ("KL per token (nats)", "{:.3f}"),
    "active_dims": ("active latent dims", "{}"),
    "tokens": ("tokens evaluated", "{:,}"),
}


def format_report(results: dict[str, Any]) -> str:
    """A small aligned two-column table of :func:`evaluate_text_vae` results (keys it does not
    know are listed after the known ones)."""
    keys = [k for k in _LABELS if k in results] + [k for k in results if k not in _LABELS and k != "d_latent"]
    rows = []
    for key in keys:
        value = results[key]
        label, fmt = _LABELS.get(key, (key, "{:.4g}" if isinstance(value, float) else "{}"))
        text = fmt.format(value)
        if key == "active_dims" and "d_latent" in results:
            text += f" / {results['d_latent']}"
        rows.append((label, text))
    width = max((len(label) for label, _ in rows), default=0)
    vwidth = max((len(text) for _, text in rows), default=0)
    return "\n".join(f"{label:<{width}}  {text:>{vwidth}}" for label, text in rows)
