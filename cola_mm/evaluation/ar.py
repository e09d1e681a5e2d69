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


def check_sampling(temperature: float, top_p: float) -> None:
    """One-line errors for sampling settings outside what :class:`ARGenerator` accepts."""
    if not 0 <= temperature <= 2:
        raise ValueError(f"temperature must be in [0, 2] (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = no truncation), got {top_p}")


def check_stored_sampling(temperature: float, top_p: float) -> None:
    """:func:`check_sampling`, and a temperature > 0: what an AR folder can carry as its default."""
    check_sampling(temperature, top_p)
    if temperature == 0:
        raise ValueError("an AR folder's default --text-temperature must be > 0 (greedy decoding is "
                         "temperature=0 per call, not a stored default)")


def sampling_defaults(lm) -> tuple[float, float]:
    """(temperature, top_p) that a model folder carries: its ``generation_config.json`` when that
    says ``do_sample: true`` (written by ``cola-mm export --text-temperature/--text-top-p``),
    else (1, 1), pure sampling, which every AR folder trained before these settings existed means."""
    gc = getattr(lm, "generation_config", None)
    if gc is None or not getattr(gc, "do_sample", False):
        return 1.0, 1.0
    return float(gc.temperature if gc.temperature is not None else 1.0), float(gc.top_p if gc.top_p is not None else 1.0)


def write_sampling_defaults(model_dir: str | os.PathLike, temperature: float, top_p: float) -> None:
    """Store (temperature, top_p) as the sampling defaults of an AR model folder (``ar/``), in its
    ``generation_config.json``, where transformers' own ``generate`` reads them too. No top-k, as
    :class:`ARGenerator` samples. A temperature of 0 (greedy) is not a default a folder can carry
    (transformers' ``do_sample: true`` needs a positive one): pass ``temperature=0`` per call."""
    from transformers import GenerationConfig

    check_stored_sampling(temperature, top_p)
    model_dir = Path(model_dir)
    try:
        gc = GenerationConfig.from_pretrained(model_dir)
    except OSError:  # no generation_config.json yet
        gc = GenerationConfig()
    gc.do_sample, gc.temperature, gc.top_p, gc.top_k = True, float(temperature), float(top_p), 0
    gc.save_pretrained(model_dir)


class ARGenerator:
    """``generate_text`` for an AR model. It samples at the folder's default temperature and top-p
    (:func:`sampling_defaults`: 1 and 1, i.e. the full softmax, unless ``cola-mm export`` stored
    others), never with top-k; ``temperature=`` / ``top_p=`` per call override them, and
    ``temperature=0`` is greedy. ``steps`` and ``cfg_scale`` are accepted and ignored, so it drops
    into code written for :class:`cola_mm.pipeline.ColaPipeline`."""

    family = "ar"

    def __init__(self, lm, tokenizer, temperature: float | None = None, top_p: float | None = None):
        self.lm = lm
        self.tokenizer = tokenizer
        default_t, default_p = sampling_defaults(lm)
        self.temperature = default_t if temperature is None else float(temperature)
        self.top_p = default_p if top_p is None else float(top_p)
        check_sampling(self.temperature, self.top_p)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, **sampling) -> "ARGenerator":
        return cls(*load_ar(folder), **sampling)

    @property
    def sampling(self) -> dict[str, float]:
        """The defaults this generator samples with (what an evaluation report records)."""
        return {"temperature": self.temperature, "top_p": self.top_p}

    def _generate(self, ids, attention_mask, max_new_tokens: int, seed: int, temperature: float | None,
                  top_p: float | None):
        temperature = self.temperature if temperature is None else float(temperature)
        top_p = self.top_p if top_p is None else float(top_p)
        check_sampling(temperature, top_p)
        tok = self.tokenizer
        if temperature == 0:
            mode = {"do_sample": False}
        else:
            mode = {"do_sample": True, "temperature": temperature, "top_p": top_p}
        device = ids.device
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)  # seeds CUDA too: its state is forked above and restored after
            return self.lm.generate(ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens, top_k=0,
                                    pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, **mode)

    @torch.no_grad()
    def generate_text(self, prompt: str, max_new_tokens: int = 48, steps: int | None = None,
                      cfg_scale: float | None = None, seed: int = 0, temperature: float | None = None,
                      top_p: float | None = None) -> str:
        tok = self.tokenizer
        device = next(self.lm.parameters()).device
        ids = torch.tensor([[tok.bos_token_id] + tok.encode(prompt, add_special_tokens=False)], device=device)
        gen = self._generate(ids, torch.ones_like(ids), max_new_tokens, seed, temperature, top_p)
        return tok.decode(gen[0, ids.shape[1]:].tolist(), skip_special_tokens=True)

    @torch.no_grad()
    def generate_texts(self, prompts: list[str], max_new_tokens: int = 48, seed: int = 0,
                       temperature: float | None = None, top_p: float | None = None) -> tuple[list[str], int]:
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
        gen = self._generate(ids, attn, max_new_tokens, seed, temperature, top_p)[:, width:].tolist()
        gen = [g[:g.index(tok.eos_token_id)] if tok.eos_token_id in g else g for g in gen]
        return [tok.decode(g, skip_special_tokens=True) for g in gen], sum(map(len, gen))
