"""Text VAE of Cola DLM (§3.1): one continuous latent per token, block-causal encoder/decoder.

    ids (b, n) ─embed─▶ encoder (block-causal transformer) ─▶ (mean, logvar) (b, n, d_latent)
    z = mean + σ·ε ─▶ decoder (block-causal transformer) ─▶ logits (b, n, vocab)

- The decoder reads **only latents** (no teacher-forced tokens) and predicts every token of a
  block in parallel; a LayerNorm (no affine) on the mean keeps the latent scale fixed.
- Attention in both is block-causal with a small VAE block (``block_size``, default 4), so text
  can be encoded and decoded incrementally: :meth:`TextVAE.encode_stream` and
  :meth:`TextVAE.decode_stream` run one block at a time with a key/value cache and give the
  same result as the full pass.
- At the prior boundary latents are normalised as ``(z − latent_shift)·latent_scale``; both
  numbers live in the config and are set from data statistics after training.

Legend: ``b`` batch, ``n`` tokens (= latents), ``d`` model width, ``c`` latent dim.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from cola_mm.core.components import PretrainedMixin
from cola_mm.core.config import Config, check
from cola_mm.core.layers import Block, KVCache, RMSNorm, rope_angles, swiglu_hidden
from cola_mm.prior.masks import block_causal_mask

KIND = "TextVAE"


@dataclass(frozen=True)
class TextVAEConfig(Config):
    vocab_size: int = 8192  # tokenizer vocabulary (must match the tokenizer)
    d_model: int = 256  # transformer width of encoder and decoder
    n_heads: int = 4  # attention heads
    enc_layers: int = 4  # encoder depth
    dec_layers: int = 4  # decoder depth
    d_latent: int = 16  # latent channels per token (paper: 16–128)
    block_size: int = 4  # VAE attention block (tokens); block-causal across blocks
    mlp_ratio: float = 8 / 3  # SwiGLU hidden width / d_model
    rope_theta: float = 10000.0  # RoPE base
    init_logvar: float = -5.0  # initial posterior log-variance: σ≈0.08, a clean signal from step 1
    latent_shift: float = 0.0  # prior boundary: (z - shift) * scale
    latent_scale: float = 1.0

    def __post_init__(self):
        check(self.vocab_size >= 8, f"vocab_size must be >= 8, got {self.vocab_size}")
        check(self.d_model > 0 and self.n_heads > 0 and self.d_model % self.n_heads == 0,
              f"d_model ({self.d_model}) must be a positive multiple of n_heads ({self.n_heads})")
        check((self.d_model // self.n_heads) % 2 == 0,
              f"n_heads ({self.n_heads}) must split d_model ({self.d_model}) into an even head width (RoPE)")
        check(self.enc_layers >= 1 and self.dec_layers >= 1, "enc_layers and dec_layers must be >= 1")
        check(1 <= self.d_latent <= 1024, f"d_latent must be in 1..1024, got {self.d_latent}")
        check(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")
        check(self.latent_scale > 0, f"latent_scale must be > 0, got {self.latent_scale}")


PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=32, n_heads=2, enc_layers=1, dec_layers=1),  # tests
    "small": dict(d_model=256, n_heads=4, enc_layers=3, dec_layers=3),  # CPU demo
    "base": dict(d_model=768, n_heads=12, enc_layers=8, dec_layers=8),  # GPU
}


def preset(name: str, **overrides) -> TextVAEConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown TextVAE preset {name!r}; choose from {sorted(PRESETS)}")
    return TextVAEConfig(**{**PRESETS[name], **overrides})


class Stack(nn.Module):
    """A block-causal transformer stack over positions ``offset … offset+n-1``."""

    def __init__(self, config: TextVAEConfig, depth: int):
        super().__init__()
        hidden = swiglu_hidden(config.d_model, config.mlp_ratio)
        self.blocks = nn.ModuleList(Block(config.d_model, config.n_heads, hidden) for _ in range(depth))
        self.norm = RMSNorm(config.d_model)
        self.block_size = config.block_size
        self.head_dim = config.d_model // config.n_heads
        self.theta = config.rope_theta

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, update_cache: bool = False,
                window: int = 0) -> torch.Tensor:
        """``window`` (tokens, a multiple of ``block_size``; 0 = none): each query sees at most
        that many keys (cola_mm.prior.masks); with a cache, keys no later query can see are dropped."""
        b, n, _ = x.shape
        offset = cache.position if cache is not None else 0  # absolute position of x[:, 0]
        if cache is not None and window:
            first_kept = max(0, (offset // self.block_size - window // self.block_size + 1) * self.block_size)
            cache.drop(first_kept - cache.dropped)
        k_offset = cache.dropped if cache is not None else 0
        positions = torch.arange(offset, offset + n, device=x.device).expand(b, n)
        rope = rope_angles(positions, self.head_dim, self.theta)
        mask = block_causal_mask(n, self.block_size, q_offset=offset, k_offset=k_offset, device=x.device,
                                 window=window)[None]  # (1, n, m)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, mask, cache, i, update_cache)
        return self.norm(x)


class TextVAE(PretrainedMixin, nn.Module):
    KIND = KIND
    CONFIG_CLASS = TextVAEConfig

    def __init__(self, config: TextVAEConfig):
        super().__init__()
        self.config = config
        c, d = config.d_latent, config.d_model
        self.embed = nn.Embedding(config.vocab_size, d)
        self.encoder = Stack(config, config.enc_layers)
        self.to_moments = nn.Linear(d, 2 * c)
        self.mean_norm = nn.LayerNorm(c, elementwise_affine=False)
        self.from_latent = nn.Linear(c, d)
        self.decoder = Stack(config, config.dec_layers)
        self.lm_head = nn.Linear(d, config.vocab_size, bias=False)
        self.apply(self._init)
        with torch.no_grad():  # start with a chosen posterior noise level
            self.to_moments.bias[c:].fill_(config.init_logvar)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    # ---- the two halves
    def encode(self, ids: torch.Tensor, cache: KVCache | None = None, update_cache: bool = False,
               window: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (b, n) → mean, logvar (b, n, c). ``window``: see :class:`Stack` (0 = full context)."""
        h = self.encoder(self.embed(ids), cache, update_cache, window)
        mean, logvar = self.to_moments(h).chunk(2, dim=-1)
        return self.mean_norm(mean), logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor, cache: KVCache | None = None, update_cache: bool = False,
               window: int = 0) -> torch.Tensor:
        """z (b, n, c) → logits (b, n, vocab). Reads only latents. ``window``: see :class:`Stack`."""
        return self.lm_head(self.decoder(self.from_latent(z), cache, update_cache, window))

    @staticmethod
    def sample(mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + (0.5 * logvar).exp() * noise

    def forward(self, ids: torch.Tensor, sample: bool = True) -> dict[str, torch.Tensor]:
        mean, logvar = self.encode(ids)
        z = self.sample(mean, logvar) if sample else mean
        return {"logits": self.decode(z), "mean": mean, "logvar": logvar, "z": z}

    # ---- streaming: one VAE block at a time, same result as the full pass
    def encode_stream(self, ids: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Yield (mean, logvar) per block of ``block_size`` tokens, reusing cached keys/values."""
        cache = KVCache()
        for start in range(0, ids.shape[1], self.config.block_size):
            yield self.encode(ids[:, start:start + self.config.block_size], cache, update_cache=True)

    def decode_stream(self, z: torch.Tensor) -> Iterator[torch.Tensor]:
        """Yield logits per block of latents, reusing cached keys/values of earlier blocks."""
        cache = KVCache()
        for start in range(0, z.shape[1], self.config.block_size):
            yield self.decode(z[:, start:start + self.config.block_size], cache, update_cache=True)

    # ---- the prior boundary
    def to_prior(self, z: torch.Tensor) -> torch.Tensor:
        return (z - self.config.latent_shift) * self.config.latent_scale

    def from_prior(self, u: torch.Tensor) -> torch.Tensor:
        return u / self.config.latent_scale + self.config.latent_shift

    def with_latent_stats(self, shift: float, scale: float) -> "TextVAE":
        self.config = dataclasses.replace(self.config, latent_shift=float(shift), latent_scale=float(scale))
        return self
