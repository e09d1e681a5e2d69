"""Attention masks as pure functions: dense boolean masks (SDPA, CPU) and flex-attention
``mask_mod``s (GPU) built from the same rule, so the two can be tested against each other.

Block-causal attention (Cola DLM §3, as in block diffusion, Arriola et al. 2025): positions are
grouped into consecutive blocks of ``block_size``; a query in block ``i`` may attend to every
key in blocks ``<= i``. Inside a block attention is bidirectional, across blocks causal. The
Text VAE uses it with a small block (4), the prior with the text block (16).

A sliding window (``window`` positions, a multiple of ``block_size``; 0 = none) bounds how far
back a query looks: a query in block ``i`` sees blocks ``i − window/block_size + 1 … i``, so no
query ever attends to more than ``window`` keys, however long the sequence. Generating past the
length a model was trained on with ``window`` = that length keeps every attention span (and, with
RoPE, every relative offset) inside what training showed.

Convention: ``True`` = may attend. Dense masks are ``(n_q, n_k)`` bool tensors.
"""

from __future__ import annotations

import torch


def block_causal_rule(q_idx, kv_idx, block_size: int, window: int = 0):
    """The rule on absolute positions (works on ints and on tensors)."""
    seen = (kv_idx // block_size) <= (q_idx // block_size)
    if window:
        seen = seen & ((kv_idx // block_size) > (q_idx // block_size) - window // block_size)
    return seen


def check_window(window: int, block_size: int) -> None:
    if window < 0 or window % block_size:
        raise ValueError(f"window must be 0 (none) or a positive multiple of the block size "
                         f"{block_size}, got {window}")


def block_causal_mask(n_q: int, block_size: int, q_offset: int = 0, n_k: int | None = None,
                      device: torch.device | str | None = None, window: int = 0,
                      k_offset: int = 0) -> torch.Tensor:
    """Dense block-causal mask for queries at positions ``q_offset … q_offset+n_q-1`` over
    keys at ``k_offset … k_offset+n_k-1`` (default: every position from ``k_offset`` to the last
    query: a cache of earlier positions followed by the queries themselves; ``k_offset`` > 0 is a
    cache whose oldest keys were dropped). Returns (n_q, n_k) bool."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    check_window(window, block_size)
    n_k = q_offset + n_q - k_offset if n_k is None else n_k
    q = torch.arange(q_offset, q_offset + n_q, device=device)[:, None]
    k = torch.arange(k_offset, k_offset + n_k, device=device)[None, :]
    return block_causal_rule(q, k, block_size, window)


def block_causal_mask_mod(block_size: int, q_offset: int = 0, window: int = 0):
    """The same mask as a ``torch.nn.attention.flex_attention`` ``mask_mod``."""
    check_window(window, block_size)

    def mask_mod(b, h, q_idx, kv_idx):
        return block_causal_rule(q_idx + q_offset, kv_idx, block_size, window)

    return mask_mod


def flex_block_mask(mask_mod, n_q: int, n_k: int, device: str | torch.device = "cuda", batch: int | None = None):
    """Compile a ``mask_mod`` into a flex-attention BlockMask (GPU path); ``batch`` when the
    mask differs per row (packed layouts), None when it is shared."""
    from torch.nn.attention.flex_attention import create_block_mask

    return create_block_mask(mask_mod, B=batch, H=None, Q_LEN=n_q, KV_LEN=n_k, device=device)


def dense_from_mask_mod(mask_mod, n_q: int, n_k: int) -> torch.Tensor:
    """Evaluate a ``mask_mod`` on every (q, k) pair: the reference for equivalence tests."""
    q = torch.arange(n_q)[:, None].expand(n_q, n_k)
    k = torch.arange(n_k)[None, :].expand(n_q, n_k)
    zero = torch.zeros((), dtype=torch.long)
    return mask_mod(zero, zero, q, k).bool()


# --------------------------------------------------------------------------- the 2L training layout
#
# Block diffusion's training trick (Arriola et al. 2025; Cola DLM §3.2): the sequence of L
# latents is laid out twice, [clean copy | noisy copy] (2L positions, the noisy copy with the
# same position ids). With block ids ``blk`` per latent:
#
#   clean q → clean k:  blk[k] <= blk[q]      (block-causal over the clean sequence)
#   noisy q → clean k:  blk[k] <  blk[q]      (the clean history before its own block)
#   noisy q → noisy k:  blk[k] == blk[q]      (its own block, bidirectionally)
#   clean q → noisy k:  never
#
# so one forward pass trains every block, each noisy block seeing exactly what the sampler will
# give it: the clean blocks before it (cached) and itself.


def two_copy_rule(q_noisy, q_block, k_noisy, k_block):
    """The 2L rule on (copy, block) pairs; works on ints and on tensors."""
    clean_to_clean = ~q_noisy & ~k_noisy & (k_block <= q_block)
    noisy_to_clean = q_noisy & ~k_noisy & (k_block < q_block)
    noisy_to_noisy = q_noisy & k_noisy & (k_block == q_block)
    return clean_to_clean | noisy_to_clean | noisy_to_noisy


def two_copy_mask(block_ids: torch.Tensor) -> torch.Tensor:
    """Dense (2L, 2L) bool mask for one sequence with per-latent ``block_ids`` (L,)."""
    L = block_ids.shape[0]
    blk = torch.cat([block_ids, block_ids])
    noisy = torch.arange(2 * L, device=block_ids.device) >= L
    return two_copy_rule(noisy[:, None], blk[:, None], noisy[None, :], blk[None, :])


def two_copy_mask_mod(block_ids: torch.Tensor):
    """The same rule as a flex-attention ``mask_mod`` (``block_ids`` captured, length L)."""
    L = block_ids.shape[0]
    blk = torch.cat([block_ids, block_ids])

    def mask_mod(b, h, q_idx, kv_idx):
        return two_copy_rule(q_idx >= L, blk[q_idx], kv_idx >= L, blk[kv_idx])

    return mask_mod


def block_ids_for(length: int, block_size: int, device=None) -> torch.Tensor:
    """Block id of each of ``length`` latents in blocks of ``block_size``: (L,)."""
    return torch.arange(length, device=device) // block_size


# --------------------------------------------------------------------------- packed rows
#
# A row may hold several samples packed back to back (and padding). ``sample_ids`` (b, L) says
# which sample each latent belongs to; attention never crosses samples. ``block_ids`` (b, L)
# number the blocks of the whole row in order, so the per-sample rules above apply unchanged.


def packed_two_copy_mask(block_ids: torch.Tensor, sample_ids: torch.Tensor) -> torch.Tensor:
    """Dense (b, 2L, 2L) 2L-layout mask for packed rows: the 2L rule within each sample."""
    L = block_ids.shape[1]
    blk = torch.cat([block_ids, block_ids], 1)  # (b, 2L)
    smp = torch.cat([sample_ids, sample_ids], 1)
    noisy = (torch.arange(2 * L, device=block_ids.device) >= L)[None].expand_as(blk)
    rule = two_copy_rule(noisy[:, :, None], blk[:, :, None], noisy[:, None, :], blk[:, None, :])
    return rule & (smp[:, :, None] == smp[:, None, :])


def packed_two_copy_mask_mod(block_ids: torch.Tensor, sample_ids: torch.Tensor):
    """The same as a flex-attention ``mask_mod`` (tensors (b, L) captured)."""
    L = block_ids.shape[1]
    blk = torch.cat([block_ids, block_ids], 1)
    smp = torch.cat([sample_ids, sample_ids], 1)

    def mask_mod(b, h, q_idx, kv_idx):
        same = smp[b, q_idx] == smp[b, kv_idx]
        return same & two_copy_rule(q_idx >= L, blk[b, q_idx], kv_idx >= L, blk[b, kv_idx])

    return mask_mod


def packed_block_causal_mask(block_ids: torch.Tensor, sample_ids: torch.Tensor) -> torch.Tensor:
    """Dense (b, L, L) block-causal mask over clean packed rows (keys in earlier or the same
    block of the same sample)."""
    same = sample_ids[:, :, None] == sample_ids[:, None, :]
    return same & (block_ids[:, None, :] <= block_ids[:, :, None])
