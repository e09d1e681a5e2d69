"""An AR model (stage ``ar``) for evaluation: loading and a ``generate_text`` with the pipeline's
signature, so text benches can treat the AR baseline like any pipeline (same prompts, same
seeds, same metrics).

Seeding follows the prior's sampler: every prompt continued at seed s starts from the same
random state (``torch.manual_seed(s)``, on a forked RNG so the caller's state is untouched), so
the continuations of different prompts at one seed are comparable the way the prior's are.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


from cola_mm.core.components import CheckpointError, read_json


class ARFolderError(CheckpointError):
    """A folder that does not hold an AR model and its tokenizer."""


def load_ar(folder: str | os.PathLike):
    """(LlamaForCausalLM in eval mode, tokenizer) from an ``ar`` run's model folder (``ar/`` +
    ``tokenizer/``), or from an ``ar/`` folder whose ``tokenizer/`` lies beside it."""
    from transformers import LlamaForCausalLM

    from cola_mm.core.families import check_tokenizer, expect_family
    from cola_mm.vae_text.tokenizer import load_tokenizer

    folder = Path(folder)
    expect_family(folder, "ar")
    model_dir = folder / "ar" if (folder / "ar").is_dir() else folder
    tok_dir = folder / "tokenizer" if (folder / "tokenizer").is_dir() else model_dir.parent / "tokenizer"
    if not (model_dir / "config.json").is_file() or not tok_dir.is_dir():
        raise ARFolderError(f"{folder}: expected an AR model folder (ar/config.json and tokenizer/, "
                            f"from `cola-mm train` with stage: ar)")
    tokenizer = load_tokenizer(tok_dir)
    vocab = read_json(model_dir / "config.json").get("vocab_size")  # checked before the weights load
    check_tokenizer(vocab, None, tokenizer, str(model_dir), str(tok_dir))
    return LlamaForCausalLM.from_pretrained(model_dir).eval(), tokenizer


class ARGenerator:
    """``generate_text`` for an AR model: sampled at temperature 1 with no top-k/top-p (the
    prior's sampler has no truncation either). ``steps`` and ``cfg_scale`` are accepted and
    ignored, so it drops into code written for :class:`cola_mm.pipeline.ColaPipeline`."""

    family = "ar"

    def __init__(self, lm, tokenizer):
        self.lm = lm
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "ARGenerator":
        return cls(*load_ar(folder))

    @torch.no_grad()
    def generate_text(self, prompt: str, max_new_tokens: int = 48, steps: int | None = None,
                      cfg_scale: float | None = None, seed: int = 0) -> str:
        tok = self.tokenizer
        device = next(self.lm.parameters()).device
        ids = torch.tensor([[tok.bos_token_id] + tok.encode(prompt, add_special_tokens=False)], device=device)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)  # seeds CUDA too: its state is forked above and restored after
            gen = self.lm.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                   do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        return tok.decode(gen[0, ids.shape[1]:].tolist(), skip_special_tokens=True)

    @torch.no_grad()
    def generate_texts(self, prompts: list[str], max_new_tokens: int = 48, seed: int = 0) -> tuple[list[str], int]:
        """Continue several prompts in one batch (left-padded; the KV cache of ``generate``):
        (texts, tokens generated before each text's ``<eos>``, summed)."""
        tok = self.tokenizer
        device = next(self.lm.parameters()).device
        rows = [[tok.bos_token_id] + tok.encode(p, add_special_tokens=False) for p in prompts]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long, device=device)
        attn = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, width - len(r):] = torch.tensor(r)
            attn[i, width - len(r):] = 1
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            gen = self.lm.generate(ids, attention_mask=attn, max_new_tokens=max_new_tokens, do_sample=True, top_k=0,
                                   top_p=1.0, temperature=1.0, pad_token_id=tok.pad_token_id,
                                   eos_token_id=tok.eos_token_id)[:, width:].tolist()
        gen = [g[:g.index(tok.eos_token_id)] if tok.eos_token_id in g else g for g in gen]
        return [tok.decode(g, skip_special_tokens=True) for g in gen], sum(map(len, gen))
