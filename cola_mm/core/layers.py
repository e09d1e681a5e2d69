"""Transformer building blocks shared by the Text VAE and the DiT prior.

RMSNorm, SwiGLU feed-forward, rotary position embedding (RoPE) on explicit position ids, and
multi-head attention over a boolean mask with an optional key/value cache — the pieces of a
LLaMA-style block (Touvron et al. 2023), as Cola DLM uses for its VAE and prior.

Attention takes either a dense boolean mask (``scaled_dot_product_attention``; every device) or
a flex-attention ``BlockMask`` (:func:`cola_mm.prior.masks.flex_block_mask`): ``flex_attention``,
compiled on CUDA, where fully masked tiles are skipped instead of computed — the GPU training
path for the long 2L layouts. On CPU flex runs eagerly and only without gradients (a PyTorch
limit), which is enough to test it against the dense path.

Legend: ``b`` batch, ``n`` query positions, ``m`` key positions, ``h`` heads, ``e`` head
width, ``d`` model width.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6, affine: bool = True):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps).to(x.dtype)
        return x * self.weight if self.weight is not None else x


def swiglu_hidden(dim: int, ratio: float = 8 / 3, multiple: int = 32) -> int:
    """Hidden width of a SwiGLU MLP with ~``ratio``·dim units, rounded up to ``multiple``."""
    return multiple * math.ceil(ratio * dim / multiple)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w_gate = nn.Linear(dim, hidden, bias=False)
        self.w_up = nn.Linear(dim, hidden, bias=False)
        self.w_down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


def rope_angles(positions: torch.Tensor, head_dim: int, theta: float = 10000.0
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables for integer ``positions`` → each (b, 1, n, head_dim/2).

    ``positions`` is (b, n) for 1-D RoPE, or (b, n, A) for multi-axis RoPE: frequency ``i``
    rotates by axis ``i mod A`` (interleaved, so every axis gets high and low frequencies).
    A text latent at position p has (p, p, p), which gives exactly the 1-D angles; an image
    patch at row r, column c of a segment starting at s has (s, s + r, s + c)."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    if positions.dim() == 3:
        axis = torch.arange(inv_freq.shape[0], device=positions.device) % positions.shape[-1]
        angles = positions.float()[..., axis] * inv_freq  # (b, n, e/2)
    else:
        angles = positions.float()[..., None] * inv_freq  # (b, n, e/2)
    return angles.cos()[:, None], angles.sin()[:, None]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of ``x`` (b, h, n, e) by the position angles."""
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)  # (b, h, n, e/2, 2)
    return out.flatten(-2).to(x.dtype)


@dataclass
class KVCache:
    """Keys/values of finished positions, per layer; ``append`` returns the full k, v.

    ``dropped`` counts the oldest positions removed by :meth:`drop` (a sliding window): the
    cache then holds positions ``dropped … dropped+length-1``."""

    keys: list[torch.Tensor | None] = field(default_factory=list)
    values: list[torch.Tensor | None] = field(default_factory=list)
    dropped: int = 0

    def layer(self, i: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if i >= len(self.keys):
            return None, None
        return self.keys[i], self.values[i]

    def store(self, i: int, k: torch.Tensor, v: torch.Tensor) -> None:
        while len(self.keys) <= i:
            self.keys.append(None)
            self.values.append(None)
        self.keys[i], self.values[i] = k, v

    @property
    def length(self) -> int:
        return 0 if not self.keys or self.keys[0] is None else self.keys[0].shape[2]

    @property
    def position(self) -> int:
        """The absolute position of the next key: every position ever cached."""
        return self.dropped + self.length

    def drop(self, n: int) -> None:
        """Forget the ``n`` oldest positions of every layer."""
        n = min(n, self.length)
        if n > 0:
            self.keys = [None if k is None else k[:, :, n:] for k in self.keys]
            self.values = [None if v is None else v[:, :, n:] for v in self.values]
            self.dropped += n


def is_block_mask(mask) -> bool:
    return mask is not None and type(mask).__name__ == "BlockMask"


_compiled_flex = None


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask) -> torch.Tensor:
    """``flex_attention`` (compiled once on CUDA, eager elsewhere) over a BlockMask."""
    global _compiled_flex
    from torch.nn.attention import flex_attention as fa

    if q.is_cuda:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(fa.flex_attention, dynamic=False)
        return _compiled_flex(q, k, v, block_mask=block_mask)
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad):
        raise RuntimeError("flex attention trains on CUDA only (PyTorch has no CPU backward for it); "
                           "use attention 'sdpa' on CPU")
    with warnings.catch_warnings():  # eager flex warns that it is the slow reference path: it is meant
        warnings.simplefilter("ignore")
        return fa.flex_attention(q, k, v, block_mask=block_mask)


class Attention(nn.Module):
    def __init__(self, dim: int, n_heads: int):
        super().__init__()
        if dim % n_heads:
            raise ValueError(f"width {dim} is not divisible by {n_heads} heads")
        self.n_heads = n_heads
        self.head_dim = dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
                mask: torch.Tensor | None, cache: KVCache | None = None, layer: int = 0,
                update_cache: bool = False) -> torch.Tensor:
        """``x`` (b, n, d); ``mask`` (b|1, n, m) bool, True = may attend, over [cached | new]
        keys. With ``cache``, the cached keys/values of earlier positions are prepended; with
        ``update_cache`` the new ones are appended to it."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = apply_rope(q, *rope), apply_rope(k, *rope)  # (b, h, n, e)
        if cache is not None:
            past_k, past_v = cache.layer(layer)
            if past_k is not None:
                k, v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
            if update_cache:
                cache.store(layer, k, v)
        if is_block_mask(mask):
            out = flex_attention(q, k, v, mask)
        else:
            attn_mask = None if mask is None else mask[:, None]  # (b, 1, n, m)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)); x + mlp(norm(x))."""

    def __init__(self, dim: int, n_heads: int, mlp_hidden: int):
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = Attention(dim, n_heads)
        self.mlp_norm = RMSNorm(dim)
        self.mlp = SwiGLU(dim, mlp_hidden)

    def forward(self, x, rope, mask, cache=None, layer=0, update_cache=False):
        x = x + self.attn(self.attn_norm(x), rope, mask, cache, layer, update_cache)
        return x + self.mlp(self.mlp_norm(x))
