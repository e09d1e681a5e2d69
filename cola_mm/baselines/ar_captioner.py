"""A single-job specialist: an AR captioner reading image VAE latents as a prefix (issue 19).

The image is encoded by the frozen image VAE of the unified model (the same latents the prior
reads); its n latent tokens are projected to the LM's width and put before the caption, and a
LLaMA-style decoder (``transformers.LlamaForCausalLM``) writes the caption token by token::

    [ W·z_1 … W·z_n | <bos> w_1 … w_k <eos> ]      next-token loss on w_1 … <eos> only

It answers "does one unified prior caption as well as a model that only captions?" at the same
size and training FLOPs (:mod:`cola_mm.training.matching`).

Folder (``cola-mm train`` with stage ``ar-captioner``)::

    ar_captioner/lm/                 LlamaForCausalLM.from_pretrained(…)
    ar_captioner/config.json         + model.safetensors: the prefix projection (``ARCaptionerPrefix``)
    image_vae/  tokenizer/           the frozen image VAE and the tokenizer it was trained with
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from cola_mm.core.components import CheckpointError, PretrainedMixin
from cola_mm.core.config import Config, check
from cola_mm.core.families import check_tokenizer, expect_family

COMPONENT = "ar_captioner"
FAMILY = "ar_captioner"


@dataclass(frozen=True)
class PrefixConfig(Config):
    token_dim: int  # channels of an image latent token (the image VAE's token_dim)
    hidden_size: int  # the LM's width
    max_caption_tokens: int = 32  # <bos> … <eos> at most, as the prior's caption segment

    def __post_init__(self):
        check(self.token_dim >= 1 and self.hidden_size >= 1, "token_dim and hidden_size must be >= 1")
        check(self.max_caption_tokens >= 3, f"max_caption_tokens must be >= 3, got {self.max_caption_tokens}")


class ARCaptionerPrefix(PretrainedMixin, nn.Module):
    """Image latent tokens (b, n, c) → LM input embeddings (b, n, d) (positions: the LM's RoPE)."""

    KIND = "ARCaptionerPrefix"
    CONFIG_CLASS = PrefixConfig

    def __init__(self, config: PrefixConfig):
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.token_dim, config.hidden_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.proj(tokens)


def caption_batch(tokenizer, texts: Sequence[str], max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``<bos> text <eos>`` ids padded to the longest (cut to ``max_tokens``) and their mask (b, T)."""
    rows = [[tokenizer.bos_token_id, *tokenizer.encode(t, add_special_tokens=False)[:max_tokens - 2],
             tokenizer.eos_token_id] for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = True
    return ids, mask


def captioner_loss(lm, prefix: ARCaptionerPrefix, image_tokens: torch.Tensor, ids: torch.Tensor,
                   mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(summed next-token NLL of the caption tokens after ``<bos>``, their count)."""
    embeds = torch.cat([prefix(image_tokens.to(prefix.proj.weight.dtype)), lm.get_input_embeddings()(ids)], dim=1)
    b, n = image_tokens.shape[:2]
    attn = torch.cat([torch.ones(b, n, dtype=torch.long, device=ids.device), mask.long()], dim=1)
    logits = lm(inputs_embeds=embeds, attention_mask=attn).logits[:, n:-1].float()  # predicts ids[:, 1:]
    targets = ids[:, 1:]
    keep = mask[:, 1:]
    nll = nn.functional.cross_entropy(logits[keep], targets[keep], reduction="sum")
    return nll, int(keep.sum())


class ARCaptioner:
    """``caption(images, …)`` like :meth:`cola_mm.pipeline.ColaPipeline.caption` (``steps`` and
    ``cfg_scale`` accepted and ignored), sampled at temperature 1 with no truncation (the prior's
    sampler has none either), seeded per call like the AR generator."""

    family = FAMILY

    def __init__(self, lm, prefix: ARCaptionerPrefix, image_vae, tokenizer):
        self.lm = lm.eval()
        self.prefix = prefix.eval()
        self.image_vae = image_vae.eval()
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "ARCaptioner":
        from transformers import LlamaForCausalLM

        from cola_mm.core.components import read_json
        from cola_mm.vae_image.model import ImageVAE
        from cola_mm.vae_text.tokenizer import load_tokenizer

        folder = Path(folder)
        expect_family(folder, FAMILY)
        if not (folder / COMPONENT / "lm" / "config.json").is_file() or not (folder / "image_vae").is_dir():
            raise CheckpointError(f"{folder}: expected an AR captioner folder ({COMPONENT}/lm/, {COMPONENT}/config.json, "
                                  f"image_vae/, tokenizer/ from `cola-mm train` with stage: ar-captioner)")
        tokenizer = load_tokenizer(folder / "tokenizer")
        check_tokenizer(read_json(folder / COMPONENT / "lm" / "config.json").get("vocab_size"), None, tokenizer,
                        str(folder / COMPONENT / "lm"), str(folder / "tokenizer"))
        image_vae = ImageVAE.from_pretrained(folder / "image_vae")
        prefix = ARCaptionerPrefix.from_pretrained(folder / COMPONENT)
        if prefix.config.token_dim != image_vae.config.token_dim:
            raise CheckpointError(f"{folder}: the prefix reads {prefix.config.token_dim}-channel tokens, the image VAE "
                                  f"gives {image_vae.config.token_dim}")
        return cls(LlamaForCausalLM.from_pretrained(folder / COMPONENT / "lm"), prefix, image_vae, tokenizer)

    @torch.no_grad()
    def caption(self, images: Sequence, steps: int | None = None, cfg_scale: float | None = None, seed: int = 0,
                max_tokens: int | None = None, **_) -> list[str]:
        from cola_mm.core.images import image_to_tensor, load_image

        tok = self.tokenizer
        device = next(self.lm.parameters()).device
        if isinstance(images, (str, os.PathLike, bytes)) or hasattr(images, "convert"):
            images = [images]
        size = self.image_vae.config.image_size
        pixels = torch.stack([image_to_tensor(load_image(im, size)) for im in images]).to(device)
        tokens = self.image_vae.images_to_tokens(pixels).float()  # posterior means, as the prior's captions
        b, n = tokens.shape[:2]
        bos = torch.full((b, 1), tok.bos_token_id, dtype=torch.long, device=device)
        embeds = torch.cat([self.prefix(tokens), self.lm.get_input_embeddings()(bos)], dim=1)
        limit = (max_tokens or self.prefix.config.max_caption_tokens) - 2
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            out = self.lm.generate(inputs_embeds=embeds, attention_mask=torch.ones(b, n + 1, dtype=torch.long,
                                                                                   device=device),
                                   max_new_tokens=limit + 1, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                                   pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id).tolist()
        out = [o[:o.index(tok.eos_token_id)] if tok.eos_token_id in o else o for o in out]
        return [tok.decode(o, skip_special_tokens=True).strip() for o in out]
