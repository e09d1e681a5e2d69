"""Block-causal Diffusion Transformer prior (Cola DLM §3.2; DiT, Peebles & Xie 2023).

The network maps noisy latents, their per-latent flow time ``t`` and their segment type to a
velocity. It knows nothing of noise schedules or sampling: :mod:`cola_mm.prior.flow` and
:mod:`cola_mm.prior.sampler` hold those. Which latents see which is decided entirely by the boolean
``mask`` it is given (:mod:`cola_mm.prior.masks`), so the same network runs the 2L training layout and
the KV-cached block sampler.

    h = W_in·x + E_seg[segment]                                  (b, n, d)
    c = MLP(sinusoid(t))                                         per-token condition (b, n, d)
    block: h += g1·Attn(RMSNorm(h)·(1+s1) + b1);  h += g2·SwiGLU(RMSNorm(h)·(1+s2) + b2)
           (s, b, g) = Linear(SiLU(c)), zero-initialised  ("adaLN-Zero")
    v = W_out·(RMSNorm(h)·(1+s) + b)                              (b, n, c_latent)

RoPE positions are explicit (``positions`` (b, n)), so packed or offset sequences work.

Legend: ``b`` batch, ``n`` latents (queries), ``m`` keys, ``d`` width, ``c`` latent channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from cola_mm.core.components import PretrainedMixin
from cola_mm.core.config import Config, check
from cola_mm.core.layers import Attention, KVCache, RMSNorm, SwiGLU, rope_angles, swiglu_hidden

KIND = "DiT"


@dataclass(frozen=True)
class DiTConfig(Config):
    d_latent: int = 16  # channels of an input/output latent (the VAE's latent dim)
    d_model: int = 384  # transformer width
    n_heads: int = 6  # attention heads
    n_layers: int = 6  # depth
    mlp_ratio: float = 8 / 3  # SwiGLU hidden width / d_model
    n_segment_types: int = 4  # learned embeddings for segment/modality types
    freq_dim: int = 256  # sinusoidal timestep features
    time_scale: float = 1000.0  # t in [0, 1] is multiplied by this before the sinusoid
    rope_theta: float = 10000.0  # RoPE base
    block_size: int = 16  # text block (latents): the prior's generation unit
    attention: str = "sdpa"  # the 2L training forward: sdpa (dense mask, any device) | flex (CUDA)
    # learned absolute positions beside RoPE (0 = RoPE only): a latent's position in its sample
    # (clipped to position_embed − 1) and an image patch's row and column (docs/experiments.md §22)
    position_embed: int = 0

    def __post_init__(self):
        check(self.d_latent >= 1, f"d_latent must be >= 1, got {self.d_latent}")
        check(self.d_model >= 1 and self.n_heads >= 1, f"d_model ({self.d_model}) and n_heads ({self.n_heads}) "
                                                        f"must be >= 1")
        check(self.d_model % self.n_heads == 0 and (self.d_model // self.n_heads) % 2 == 0,
              f"n_heads ({self.n_heads}) must split d_model ({self.d_model}) into an even head width")
        check(self.n_layers >= 1, "n_layers must be >= 1")
        check(self.n_segment_types >= 1, "n_segment_types must be >= 1")
        check(self.freq_dim % 2 == 0, "freq_dim must be even")
        check(self.block_size >= 1, f"block_size must be >= 1, got {self.block_size}")
        check(self.attention in ("sdpa", "flex"), f"attention must be sdpa or flex, got {self.attention!r}")
        check(self.position_embed >= 0, f"position_embed must be >= 0, got {self.position_embed}")


PRESETS: dict[str, dict] = {
    "tiny": dict(d_model=32, n_heads=2, n_layers=2, freq_dim=32),  # tests
    "small": dict(d_model=256, n_heads=4, n_layers=6),  # CPU demo
    "base": dict(d_model=768, n_heads=12, n_layers=12),  # GPU
}


def preset(name: str, **overrides) -> DiTConfig:
    if name not in PRESETS:
        raise ValueError(f"unknown DiT preset {name!r}; choose from {sorted(PRESETS)}")
    return DiTConfig(**{**PRESETS[name], **overrides})


def timestep_features(t: torch.Tensor, dim: int, scale: float, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of ``t`` (b, n) → (b, n, dim), as in DiT/ADM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * scale)[..., None] * freqs  # (b, n, half)
    return torch.cat([args.cos(), args.sin()], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class DiTBlock(nn.Module):
    def __init__(self, dim: int, n_heads: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = RMSNorm(dim, affine=False)
        self.attn = Attention(dim, n_heads)
        self.norm2 = RMSNorm(dim, affine=False)
        self.mlp = SwiGLU(dim, mlp_hidden)
        self.ada = nn.Linear(dim, 6 * dim)  # zero-initialised: every block starts as identity

    def forward(self, x, c, rope, mask, cache=None, layer=0, update_cache=False):
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(nn.functional.silu(c)).chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), rope, mask, cache, layer, update_cache)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class DiT(PretrainedMixin, nn.Module):
    KIND = KIND
    CONFIG_CLASS = DiTConfig

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.proj_in = nn.Linear(config.d_latent, d)
        self.segment_embed = nn.Embedding(config.n_segment_types, d)
        if config.position_embed:  # position in the sample, image row, image column
            self.position_tables = nn.ModuleList(nn.Embedding(config.position_embed, d) for _ in range(3))
        self.time_mlp = nn.Sequential(nn.Linear(config.freq_dim, d), nn.SiLU(), nn.Linear(d, d))
        hidden = swiglu_hidden(d, config.mlp_ratio)
        self.blocks = nn.ModuleList(DiTBlock(d, config.n_heads, hidden) for _ in range(config.n_layers))
        self.norm_out = RMSNorm(d, affine=False)
        self.ada_out = nn.Linear(d, 2 * d)
        self.proj_out = nn.Linear(d, config.d_latent)
        self._init()

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.normal_(self.segment_embed.weight, std=0.02)
        if self.config.position_embed:  # zero: a new table leaves a trained model's function unchanged
            for table in self.position_tables:
                nn.init.zeros_(table.weight)
        for m in [b.ada for b in self.blocks] + [self.ada_out, self.proj_out]:
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def absolute_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """The learned absolute-position features (b, n, d) of RoPE ``positions`` (b, n) or (b, n, 3):
        an image patch (s, s + i, s + j) gets tables[0][s] + tables[1][i] + tables[2][j], a text
        latent (p, p, p) tables[0][p] + tables[1][0] + tables[2][0]; indices clipped to the tables."""
        p = positions if positions.dim() == 3 else positions[..., None].expand(*positions.shape, 3)
        top = self.config.position_embed - 1
        index = (p[..., 0], p[..., 1] - p[..., 0], p[..., 2] - p[..., 0])
        return sum(table(i.clamp(0, top)) for table, i in zip(self.position_tables, index))

    def forward(self, x: torch.Tensor, t: torch.Tensor, positions: torch.Tensor, segments: torch.Tensor,
                mask: torch.Tensor | None, cache: KVCache | None = None, update_cache: bool = False) -> torch.Tensor:
        """x (b, n, c) latents, t (b, n) flow times (0 = clean), positions (b, n) RoPE ids,
        segments (b, n) segment types, mask (b|1, n, m) bool over [cached | new] keys.
        Returns the velocity (b, n, c)."""
        dtype = self.proj_in.weight.dtype  # inputs follow the weights (bf16 under DeepSpeed)
        h = self.proj_in(x.to(dtype)) + self.segment_embed(segments)  # (b, n, d)
        if self.config.position_embed:
            h = h + self.absolute_positions(positions)
        c = self.time_mlp(timestep_features(t, self.config.freq_dim, self.config.time_scale).to(dtype))  # (b, n, d)
        rope = rope_angles(positions, self.config.d_model // self.config.n_heads, self.config.rope_theta)
        for i, block in enumerate(self.blocks):
            h = block(h, c, rope, mask, cache, i, update_cache)
        shift, scale = self.ada_out(nn.functional.silu(c)).chunk(2, dim=-1)
        return self.proj_out(modulate(self.norm_out(h), shift, scale))
