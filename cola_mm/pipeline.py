"""The inference pipeline: one folder, one object, the generation jobs.

    pipe = ColaPipeline.from_pretrained("runs/prior_small/model")
    pipe.generate_text("To be, or not to be", max_new_tokens=48, steps=16, cfg_scale=3.0, seed=0)
    for delta in pipe.stream_text("Now is the winter"):  # text appears block by block
        print(delta, end="")

A pipeline folder holds ``pipeline.json`` (this file's :class:`PipelineConfig`), ``text_vae/``,
``dit/`` and ``tokenizer/``. Text continuation (Cola DLM §3.3): the prompt ``<bos> text`` is
encoded by the Text VAE (posterior mean), normalised at the prior boundary, cached as clean
context; the prior generates 16-latent blocks (:mod:`cola_mm.prior.sampler`), and after each block
the Text VAE decoder — with its own key/value cache, per sample — turns the new latents into
tokens; a sample stops at ``<eos>`` or at ``max_new_tokens``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from cola_mm.core.components import CheckpointError
from cola_mm.core.config import Config, ConfigError, check
from cola_mm.core.layers import KVCache
from cola_mm.core.sequence import SEGMENT_TYPES
from cola_mm.prior.dit import DiT
from cola_mm.prior.sampler import BlockSampler, SamplerConfig, iter_blocks
from cola_mm.vae_text.model import TextVAE
from cola_mm.vae_text.tokenizer import load_tokenizer, save_tokenizer

PIPELINE_FILE = "pipeline.json"
PIPELINE_VERSION = 1


@dataclass(frozen=True)
class PipelineConfig(Config):
    block_size: int = 16  # latents per generated block (the DiT's)
    max_prompt_tokens: int = 112  # longer prompts keep their last tokens (with a notice)
    trained_context: int = 128  # latents per training row; longer generations slide a window this long
    default_steps: int = 16  # ODE steps per block
    default_cfg_scale: float = 1.0  # classifier-free guidance for text
    solver: str = "euler"
    time_shift: float = 1.0
    caption_tokens: int = 32  # a text prompt of text→image / a caption: <bos> … <eos> <pad>… (tokens)
    default_image_cfg_scale: float = 3.0  # guidance for text → image
    # guidance for image → text: 3 lifts shapes captions 63 % → 96 % (configs/demo_caption.yaml, docs/experiments.md)
    default_caption_cfg_scale: float = 3.0
    jobs: tuple[str, ...] = ("text_to_text",)  # the jobs the prior was trained on

    def __post_init__(self):
        check(self.block_size >= 1, "block_size must be >= 1")
        check(self.max_prompt_tokens >= 2, "max_prompt_tokens must be >= 2 (<bos> + one token)")
        check(self.caption_tokens >= 3, "caption_tokens must be >= 3")


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


class TextDecoder:
    """Turns generated text blocks into text, per sample: the Text VAE decoder with its own
    key/value cache, ``<eos>`` stopping, a token budget, and multi-byte-safe text deltas."""

    def __init__(self, pipe: "ColaPipeline", n: int, max_new_tokens: int, skip_first: Sequence[int] = (),
                 drop_bos: bool = False):
        self.vae, self.tokenizer = pipe.text_vae, pipe.tokenizer
        self.caches = [KVCache() for _ in range(n)]
        self.tokens: list[list[int]] = [[] for _ in range(n)]
        self.shown = [""] * n  # text already returned per sample
        self.finished = [False] * n
        self.max_new_tokens = max_new_tokens
        self.skip_first = list(skip_first) or [0] * n  # leading tokens of the first block to skip (prompt tail)
        self.drop_bos = drop_bos  # generated text starts with <bos> (captions)
        self.blocks_seen = 0
        bs = self.vae.config.block_size  # the decoder's sliding window: the context it was trained on
        self.window = pipe.config.trained_context // bs * bs

    def prefill(self, i: int, latents: torch.Tensor) -> None:
        """Run sample ``i``'s clean prompt latents (n, c) (prior space) through the decoder cache."""
        self.vae.decode(self.vae.from_prior(latents[None]), self.caches[i], update_cache=True, window=self.window)

    def add_block(self, z: torch.Tensor) -> list[str]:
        """Decode one block (b, B, c) for every sample; returns the new text of each."""
        eos, bos = self.tokenizer.eos_token_id, self.tokenizer.bos_token_id
        out = []
        for i in range(z.shape[0]):
            logits = self.vae.decode(self.vae.from_prior(z[i:i + 1]), self.caches[i], update_cache=True,
                                     window=self.window)[0]
            tokens = logits.argmax(-1).tolist()
            if self.blocks_seen == 0:
                tokens = tokens[self.skip_first[i]:]
                if self.drop_bos and tokens and tokens[0] == bos:
                    tokens = tokens[1:]
            for tok in tokens:
                if self.finished[i]:
                    break
                if tok == eos:
                    self.finished[i] = True
                else:
                    self.tokens[i].append(tok)
                    self.finished[i] = len(self.tokens[i]) >= self.max_new_tokens
            # decode everything so far: byte-level BPE splits characters across tokens, so a
            # block boundary may fall inside one; hold back a trailing replacement character
            text = self.tokenizer.decode(self.tokens[i], skip_special_tokens=True)
            if not self.finished[i]:
                text = text.rstrip("\ufffd")
            out.append(text[len(self.shown[i]):])
            self.shown[i] = text if len(text) > len(self.shown[i]) else self.shown[i]
        self.blocks_seen += 1
        return out

    @property
    def done(self) -> bool:
        return all(self.finished)


class ColaPipeline:
    def __init__(self, text_vae: TextVAE, dit: DiT, tokenizer, config: PipelineConfig, image_vae=None):
        if len(tokenizer) != text_vae.config.vocab_size:
            raise CheckpointError(f"tokenizer has {len(tokenizer)} tokens but the Text VAE was trained "
                                  f"with {text_vae.config.vocab_size}")
        if config.block_size != dit.config.block_size:
            raise CheckpointError(f"pipeline.json block_size {config.block_size} != the DiT's "
                                  f"{dit.config.block_size}")
        if dit.config.d_latent != text_vae.config.d_latent:
            raise CheckpointError(f"DiT latent dim {dit.config.d_latent} != Text VAE latent dim "
                                  f"{text_vae.config.d_latent}")
        if image_vae is not None and image_vae.config.token_dim != dit.config.d_latent:
            raise CheckpointError(f"image VAE tokens have {image_vae.config.token_dim} channels, the DiT "
                                  f"{dit.config.d_latent}")
        self.text_vae = text_vae.eval()
        self.dit = dit.eval()
        self.image_vae = image_vae.eval() if image_vae is not None else None
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
        from cola_mm.data.shards import DataError

        try:
            tok = load_tokenizer(path / "tokenizer")
        except DataError as err:
            raise CheckpointError(str(err)) from None
        image_vae = None
        if (path / "image_vae").is_dir():
            from cola_mm.vae_image.model import ImageVAE

            image_vae = ImageVAE.from_pretrained(path / "image_vae", device)
        return cls(vae, dit, tok, config, image_vae)

    def save_pretrained(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> None:
        """Write the pipeline folder. ``dtype`` (e.g. ``torch.float16``) stores the weights in
        that precision — half the size; ``from_pretrained`` always loads them as float32."""
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
        path = Path(path)

        def cast(module: torch.nn.Module):
            return None if dtype is None else {k: v.to(dtype) for k, v in module.state_dict().items()}

        self.text_vae.save_pretrained(path / "text_vae", cast(self.text_vae))
        self.dit.save_pretrained(path / "dit", cast(self.dit))
        save_tokenizer(self.tokenizer, path / "tokenizer")
        if self.image_vae is not None:
            self.image_vae.save_pretrained(path / "image_vae", dtype=dtype)
        save_pipeline_config(self.config, path)

    def describe(self) -> dict[str, str]:
        out = {"Text VAE": f"{self.text_vae.num_params() / 1e6:.1f}M params, d_latent={self.text_vae.config.d_latent}",
               "DiT prior": f"{self.dit.num_params() / 1e6:.1f}M params, block {self.dit.config.block_size}",
               "tokenizer": f"{len(self.tokenizer)} tokens"}
        if self.image_vae is not None:
            c = self.image_vae.config
            out["image VAE"] = (f"{self.image_vae.num_params() / 1e6:.2f}M params, {c.image_size} px → "
                                f"{c.n_tokens} tokens of {c.token_dim}")
        out["jobs"] = ", ".join(self.config.jobs)
        return out

    def _sampler_config(self, steps, cfg_scale, solver) -> SamplerConfig:
        return SamplerConfig(steps=steps or self.config.default_steps, cfg_scale=cfg_scale,
                             solver=solver or self.config.solver, time_shift=self.config.time_shift,
                             window=self.config.trained_context)

    def _need_images(self) -> None:
        if self.image_vae is None:
            raise CheckpointError("this pipeline has no image VAE: it was trained for text only")

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
        cfg = self._sampler_config(steps, self.config.default_cfg_scale if cfg_scale is None else cfg_scale, solver)
        device, B, vae = self.device, self.dit.config.block_size, self.text_vae
        ids = [self._prompt_ids(p) for p in prompts]
        prefixes = []
        for seq in ids:
            mean, _ = vae.encode(torch.tensor([seq], device=device))
            prefixes.append(vae.to_prior(mean[0]))  # (P, c)
        lengths = [len(s) for s in ids]
        max_blocks = max(math.ceil((n + max_new_tokens) / B) - n // B for n in lengths)
        decoder = TextDecoder(self, len(prompts), max_new_tokens, skip_first=[n % B for n in lengths])
        for i, (p, n) in enumerate(zip(prefixes, lengths)):  # decoder caches hold the prompt's whole blocks
            if n // B:
                decoder.prefill(i, p[:(n // B) * B])
        self.last_tokens = decoder.tokens  # the generated token ids per prompt (filled as blocks finish)
        generators = [torch.Generator(device=device).manual_seed(seed + i) for i in range(len(prompts))]
        for z in iter_blocks(self.dit, prefixes, max_blocks, cfg, generators, SEGMENT_TYPES["text"]):
            yield decoder.add_block(z)
            if decoder.done:
                break

    def generate_text(self, prompts: str | Sequence[str], max_new_tokens: int = 64, steps: int | None = None,
                      cfg_scale: float | None = None, seed: int = 0, solver: str | None = None) -> str | list[str]:
        single = isinstance(prompts, str)
        n = 1 if single else len(prompts)
        texts = [""] * n
        for deltas in self.stream_text(prompts, max_new_tokens, steps, cfg_scale, seed, solver):
            texts = [t + d for t, d in zip(texts, deltas)]
        return texts[0] if single else texts

    # ---- text → image
    def _caption_context(self, prompt: str) -> tuple[list[int], torch.Tensor]:
        """A text prompt as the caption segment the prior was trained on: ids and latents (P, c)."""
        from cola_mm.core.sequence import caption_ids

        if not isinstance(prompt, str):
            raise ValueError(f"a prompt must be a string, got {type(prompt).__name__}")
        ids, n_kept = caption_ids(self.tokenizer, prompt, self.config.caption_tokens, self.dit.config.block_size)
        if n_kept == self.config.caption_tokens:  # <bos> + limit + <eos>: the prompt may have been cut
            n = len(self.tokenizer.encode(prompt, add_special_tokens=False))
            if n > n_kept - 2:
                self.notices.append(f"prompt truncated to its first {n_kept - 2} tokens (of {n})")
        mean, _ = self.text_vae.encode(torch.tensor([ids], device=self.device))
        return ids, self.text_vae.to_prior(mean[0])

    @torch.no_grad()
    def generate_image_tokens(self, prompts: Sequence[str], steps: int | None = None, cfg_scale: float | None = None,
                              seed: int = 0, solver: str | None = None,
                              on_step: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Prior tokens (b, n, c) of one image per prompt; image ``i`` uses seed ``seed + i``."""
        from cola_mm.core.sequence import layout_row, text_to_image

        self._need_images()
        scale = self.config.default_image_cfg_scale if cfg_scale is None else cfg_scale
        cfg = self._sampler_config(steps, scale, solver)
        g = self.image_vae.config.grid
        contexts, rows = [], []
        cache: dict[str, tuple] = {}
        for p in prompts:
            if p not in cache:
                ids, latents = self._caption_context(p)
                cache[p] = (latents, layout_row([text_to_image(len(ids), (g, g))]))
            contexts.append(cache[p][0])
            rows.append(cache[p][1])
        b, P = len(prompts), max(c.shape[0] for c in contexts)  # prompts of different lengths: right-pad
        ctx = torch.zeros(b, P, contexts[0].shape[1], device=self.device)
        for i, c in enumerate(contexts):
            ctx[i, :c.shape[0]] = c
        pos = torch.zeros(b, P, 3, dtype=torch.long, device=self.device)
        seg = torch.zeros(b, P, dtype=torch.long, device=self.device)
        blk = torch.zeros(b, P, dtype=torch.long, device=self.device)
        valid = torch.zeros(b, P, dtype=torch.bool, device=self.device)
        img_pos, img_seg = [], []
        for i, (c, row) in enumerate(zip(contexts, rows)):
            n = c.shape[0]
            pos[i, :n], seg[i, :n], blk[i, :n], valid[i, :n] = row.positions[:n], row.segments[:n], \
                row.block_ids[:n], True
            img_pos.append(row.positions[n:])
            img_seg.append(row.segments[n:])
        sampler = BlockSampler(self.dit, cfg)
        sampler.on_step = on_step
        sampler.start(ctx, pos, seg, blk, valid)
        generators = [torch.Generator(device=self.device).manual_seed(seed + i) for i in range(b)]
        return sampler.denoise(torch.stack(img_pos).to(self.device), torch.stack(img_seg).to(self.device), generators)

    def generate_image(self, prompt: str | Sequence[str], steps: int | None = None, cfg_scale: float | None = None,
                       seed: int = 0, n: int = 1, solver: str | None = None,
                       on_step: Callable[[int, int, torch.Tensor], None] | None = None) -> list:
        """``n`` images (PIL, RGB) per prompt; image ``i`` of the flat list uses seed ``seed + i``."""
        from cola_mm.core.images import tensor_to_image

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("no prompt given")
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.notices = []
        flat = [p for p in prompts for _ in range(n)]
        tokens = self.generate_image_tokens(flat, steps, cfg_scale, seed, solver, on_step)
        return [tensor_to_image(x) for x in self.image_vae.tokens_to_images(tokens).float().cpu()]

    def decode_image_tokens(self, tokens: torch.Tensor) -> list:
        """Prior tokens (b, n, c) → PIL images (e.g. a denoising trajectory's intermediate states)."""
        from cola_mm.core.images import tensor_to_image

        self._need_images()
        return [tensor_to_image(x) for x in self.image_vae.tokens_to_images(tokens).float().cpu()]

    # ---- image → text
    @torch.no_grad()
    def caption(self, images: Sequence, steps: int | None = None, cfg_scale: float | None = None, seed: int = 0,
                solver: str | None = None, max_tokens: int | None = None,
                on_step: Callable[[int, int, torch.Tensor], None] | None = None) -> list[str]:
        """One caption per image (paths, bytes, file objects or PIL images of any mode/size —
        :func:`cola_mm.core.images.load_image`); caption ``i`` uses seed ``seed + i``."""
        from cola_mm.core.images import image_to_tensor, load_image
        from cola_mm.core.sequence import image_to_text, layout_row

        self._need_images()
        if isinstance(images, (str, os.PathLike, bytes)) or hasattr(images, "convert") or hasattr(images, "read"):
            images = [images]
        images = list(images)
        if not images:
            raise ValueError("no image given")
        self.notices = []
        c = self.image_vae.config
        pixels = torch.stack([image_to_tensor(load_image(im, c.image_size)) for im in images]).to(self.device)
        context = self.image_vae.images_to_tokens(pixels).float()  # posterior means (b, n, c)
        b, n = context.shape[:2]
        T = self.config.caption_tokens if max_tokens is None else min(max_tokens + 2, self.config.caption_tokens)
        B = self.dit.config.block_size
        n_text = -(-T // B) * B
        row = layout_row([image_to_text((c.grid, c.grid), n_text)], text_block=B)
        dev = self.device
        sampler = BlockSampler(self.dit, self._sampler_config(
            steps, self.config.default_caption_cfg_scale if cfg_scale is None else cfg_scale, solver))
        sampler.on_step = on_step
        sampler.start(context, row.positions[:n].expand(b, -1, -1).to(dev), row.segments[:n].expand(b, -1).to(dev),
                      row.block_ids[:n].expand(b, -1).to(dev), torch.ones(b, n, dtype=torch.bool, device=dev))
        decoder = TextDecoder(self, b, T - 2, drop_bos=True)
        generators = [torch.Generator(device=dev).manual_seed(seed + i) for i in range(b)]
        for j in range(n_text // B):
            sl = slice(n + j * B, n + (j + 1) * B)
            z = sampler.denoise(row.positions[sl].expand(b, -1, -1).to(dev), row.segments[sl].expand(b, -1).to(dev),
                                generators)
            decoder.add_block(z)
            if decoder.done:
                break
        self.last_tokens = decoder.tokens
        return list(decoder.shown)
