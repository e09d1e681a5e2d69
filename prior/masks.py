"""Attention masks as pure functions: dense boolean masks (SDPA, CPU) and flex-attention
``mask_mod``s (GPU) built from the same rule, so the two can be tested against each other.

Block-causal attention (Cola DLM §3, as in block diffusion, Arriola et al. 2025): positions are
grouped into consecutive blocks of ``block_size``; a query in block ``i`` may attend to every
key in blocks ``<= i``. Inside a block attention is bidirectional, across blocks causal. The
Text VAE uses it with a small block (4), the prior with the text block (16).

Convention: ``True`` = may attend. Dense masks are ``(n_q, n_k)`` bool tensors.
"""

from __future__ import annotations

import torch


def block_causal_rule(q_idx, kv_idx, block_size: int):
    """The rule on absolute positions (works on ints and on tensors)."""
    return (kv_idx // block_size) <= (q_idx // block_size)


def block_causal_mask(n_q: int, block_size: int, q_offset: int = 0, n_k: int | None = None,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """Dense block-causal mask for queries at positions ``q_offset … q_offset+n_q-1`` over
    keys at ``0 … n_k-1`` (default ``n_k = q_offset + n_q``: a cache of earlier positions
    followed by the queries themselves). Returns (n_q, n_k) bool."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    n_k = q_offset + n_q if n_k is None else n_k
    q = torch.arange(q_offset, q_offset + n_q, device=device)[:, None]
    k = torch.arange(n_k, device=device)[None, :]
    return block_causal_rule(q, k, block_size)


def block_causal_mask_mod(block_size: int, q_offset: int = 0):
    """The same mask as a ``torch.nn.attention.flex_attention`` ``mask_mod``."""

    def mask_mod(b, h, q_idx, kv_idx):
        return block_causal_rule(q_idx + q_offset, kv_idx, block_size)

    return mask_mod


def flex_block_mask(mask_mod, n_q: int, n_k: int, device: str = "cuda"):
    """Compile a ``mask_mod`` into a flex-attention BlockMask (GPU path)."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=n_q, KV_LEN=n_k, device=device)


def dense_from_mask_mod(mask_mod, n_q: int, n_k: int) -> torch.Tensor:
    """Evaluate a ``mask_mod`` on every (q, k) pair: the reference for equivalence tests."""
    q = torch.arange(n_q)[:, None].expand(n_q, n_k)
    k = torch.arange(n_k)[None, :].expand(n_q, n_k)
    zero = torch.zeros((), dtype=torch.long)
    return mask_mod(zero, zero, q, k).bool()
