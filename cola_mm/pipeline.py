"""The inference pipeline: one folder, one object, the generation jobs.

    pipe = ColaPipeline.from_pretrained("runs/prior_small/model")
    pipe.generate_text("To be, or not to be", max_new_tokens=48, steps=16, cfg_scale=3.0, seed=0)
    for delta in pipe.stream_text("Now is the winter"):  # text appears block by block
        print(delta, end="")

A pipeline folder holds ``pipeline.json`` (this file's :class:`PipelineConfig`), ``text_vae/``,
``dit/`` and ``tokenizer/``. Text continuation (Cola DLM §3.3): the prompt ``<bos> text`` is
encoded by the Text VAE (posterior mean), normalised at the prior boundary, cached as clean
context; the prior generates 16-latent blocks (:mod:`prior.sampler`), and after each block
the Text VAE decoder — with its own key/value cache, per sample — turns the new latents into
tokens; a sample stops at ``<eos>`` or at ``max_new_tokens``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch

from cola_mm.components import CheckpointError
from cola_mm.config import Config, ConfigError, check
from cola_mm.layers import KVCache
from prior.dit import DiT, SEGMENT_TYPES
from prior.sampler import SamplerConfig, iter_blocks
from vae_text.model import TextVAE
from vae_text.tokenizer import load_tokenizer, save_tokenizer

PIPELINE_FILE = "pipeline.json"
PIPELINE_VERSION = 1


@dataclass(frozen=True)
class PipelineConfig(Config):
    block_size: int = 16  # latents per generated block (the DiT's)
    max_prompt_tokens: int = 112  # longer prompts keep their last tokens (with a notice)
    trained_context: int = 128  # sequence length the prior was trained on (RoPE range seen)
    default_steps: int = 16  # ODE steps per block
    default_cfg_scale: float = 1.0  # classifier-free guidance for text
    solver: str = "euler"
    time_shift: float = 1.0

    def __post_init__(self):
        check(self.block_size >= 1, "block_size must be >= 1")
        check(self.max_prompt_tokens >= 2, "max_prompt_tokens must be >= 2 (<bos> + one token)")


def save_pipeline_config(config: PipelineConfig, folder: str | os.PathLike) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"_class": "ColaPipeline", "_format_version": PIPELINE_VERSION, **config.to_dict()}
    tmp = folder / (PIPELINE_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, folder / PIPELINE_FILE)


def load_pipeline_config(folder: str | os.PathLike) -> PipelineConfig:
    path = Path(folder) / PIPELINE_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a pipeline folder (no {PIPELINE_FILE})")
    raw = json.loads(path.read_text())
    raw.pop("_class", None)
    if raw.pop("_format_version", 0) > PIPELINE_VERSION:
        raise CheckpointError(f"{path} was written by a newer cola-mm")
    try:
        return PipelineConfig.from_dict(raw, where=str(path))
    except ConfigError as err:
        raise CheckpointError(str(err)) from None


class ColaPipeline:
    def __init__(self, text_vae: TextVAE, dit: DiT, tokenizer, config: PipelineConfig):
        if len(tokenizer) != text_vae.config.vocab_size:
            raise CheckpointError(f"tokenizer has {len(tokenizer)} tokens but the Text VAE was trained "
                                  f"with {text_vae.config.vocab_size}")
        if config.block_size != dit.config.block_size:
            raise CheckpointError(f"pipeline.json block_size {config.block_size} != the DiT's "
                                  f"{dit.config.block_size}")
        if dit.config.d_latent != text_vae.config.d_latent:
            raise CheckpointError(f"DiT latent dim {dit.config.d_latent} != Text VAE latent dim "
                                  f"{text_vae.config.d_latent}")
        self.text_vae = text_vae.eval()
        self.dit = dit.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.notices: list[str] = []  # what the last call changed about its input (truncation…)
        self.last_tokens: list[list[int]] = []  # token ids the last call generated, per prompt

    @property
    def device(self) -> torch.device:
        return next(self.dit.parameters()).device

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "ColaPipeline":
        path = Path(path)
        if not path.is_dir():
            raise CheckpointError(f"pipeline folder not found: {path}")
        config = load_pipeline_config(path)
        vae = TextVAE.from_pretrained(path / "text_vae", device)
        dit = DiT.from_pretrained(path / "dit", device)
        from data.shards import DataError

        try:
            tok = load_tokenizer(path / "tokenizer")
        except DataError as err:
            raise CheckpointError(str(err)) from None
        return cls(vae, dit, tok, config)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = Path(path)
        self.text_vae.save_pretrained(path / "text_vae")
        self.dit.save_pretrained(path / "dit")
        save_tokenizer(self.tokenizer, path / "tokenizer")
        save_pipeline_config(self.config, path)

    def describe(self) -> dict[str, str]:
        return {"Text VAE": f"{self.text_vae.num_params() / 1e6:.1f}M params, d_latent={self.text_vae.config.d_latent}",
                "DiT prior": f"{self.dit.num_params() / 1e6:.1f}M params, block {self.dit.config.block_size}",
                "tokenizer": f"{len(self.tokenizer)} tokens"}

    # ---- text continuation
    def _prompt_ids(self, prompt: str) -> list[int]:
        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be a string, got {type(prompt).__name__}")
        ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        limit = self.config.max_prompt_tokens - 1
        if len(ids) > limit:
            self.notices.append(f"prompt truncated to its last {limit} tokens (of {len(ids)})")
            ids = ids[-limit:]
        return [self.tokenizer.bos_token_id] + ids

    @torch.no_grad()
    def stream_text(self, prompts: str | Sequence[str], max_new_tokens: int = 64, steps: int | None = None,
                    cfg_scale: float | None = None, seed: int = 0, solver: str | None = None
                    ) -> Iterator[list[str]]:
        """Yield, after every generated block, the new text of each prompt (a list of deltas)."""
        single = isinstance(prompts, str)
        prompts = [prompts] if single else list(prompts)
        if not prompts:
            raise ValueError("no prompt given")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.notices = []
        cfg = SamplerConfig(steps=steps or self.config.default_steps,
                            cfg_scale=self.config.default_cfg_scale if cfg_scale is None else cfg_scale,
                            solver=solver or self.config.solver, time_shift=self.config.time_shift)
        device, B, vae = self.device, self.dit.config.block_size, self.text_vae
        ids = [self._prompt_ids(p) for p in prompts]
        prefixes = []
        for seq in ids:
            mean, _ = vae.encode(torch.tensor([seq], device=device))
            prefixes.append(vae.to_prior(mean[0]))  # (P, c)
        lengths = [len(s) for s in ids]
        max_blocks = max(math.ceil((n + max_new_tokens) / B) - n // B for n in lengths)
        # per-sample decoder caches, prefilled with the prompt's whole blocks
        caches = []
        for p, n in zip(prefixes, lengths):
            cache = KVCache()
            whole = (n // B) * B
            if whole:
                vae.decode(vae.from_prior(p[None, :whole]), cache, update_cache=True)
            caches.append(cache)
        generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(len(prompts))]
        eos = self.tokenizer.eos_token_id
        new_tokens: list[list[int]] = [[] for _ in prompts]
        self.last_tokens = new_tokens  # the generated token ids per prompt (filled as blocks finish)
        shown = [""] * len(prompts)  # text already yielded per sample
        finished = [False] * len(prompts)
        deltas: list[list[str]] = []

        def on_block(j: int, z: torch.Tensor) -> torch.Tensor:
            out = []
            for i in range(len(prompts)):
                logits = vae.decode(vae.from_prior(z[i:i + 1]), caches[i], update_cache=True)[0]
                tokens = logits.argmax(-1).tolist()
                if j == 0:  # the first block may start with the pinned prompt tail
                    tokens = tokens[lengths[i] % B:]
                for tok in tokens:
                    if finished[i]:
                        break
                    if tok == eos:
                        finished[i] = True
                    else:
                        new_tokens[i].append(tok)
                        finished[i] = len(new_tokens[i]) >= max_new_tokens
                # decode everything so far: byte-level BPE splits characters across tokens, so a
                # block boundary may fall inside one; hold back a trailing replacement character
                text = self.tokenizer.decode(new_tokens[i], skip_special_tokens=True)
                if not finished[i]:
                    text = text.rstrip("\ufffd")
                out.append(text[len(shown[i]):])
                shown[i] = text if len(text) > len(shown[i]) else shown[i]
            deltas.append(out)
            return torch.tensor(finished)

        blocks = iter_blocks(self.dit, prefixes, max_blocks, cfg, generators, SEGMENT_TYPES["text"])
        for j, z in enumerate(blocks):
            done = on_block(j, z)
            yield deltas[-1]
            if bool(done.all()):
                break

    def generate_text(self, prompts: str | Sequence[str], max_new_tokens: int = 64, steps: int | None = None,
                      cfg_scale: float | None = None, seed: int = 0, solver: str | None = None) -> str | list[str]:
        single = isinstance(prompts, str)
        n = 1 if single else len(prompts)
        texts = [""] * n
        for deltas in self.stream_text(prompts, max_new_tokens, steps, cfg_scale, seed, solver):
            texts = [t + d for t, d in zip(texts, deltas)]
        return texts[0] if single else texts
