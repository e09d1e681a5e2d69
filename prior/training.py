"""The flow-matching training step of the block-causal prior in the 2L layout.

One forward pass trains every block (block diffusion's trick, Cola DLM §3.2): the sequence
of L clean latents ``z0`` is laid out as [clean copy | noisy copy]; each block b of the noisy
copy is at its own time t_b and attends to itself and to the clean blocks before it
(:func:`cola_mm.prior.masks.two_copy_mask`); the clean copy is block-causal with t = 0. The loss is
the velocity MSE on the noisy copy (:func:`cola_mm.prior.flow.flow_loss`).

The mask is dense (SDPA) or, with ``DiTConfig.attention = "flex"`` (CUDA), a flex-attention
BlockMask from the same rule, which skips the ~3/4 of the 2L×2L tiles that are masked out.

Legend: ``b`` batch, ``L`` latents per sequence, ``c`` channels, ``k`` blocks.
"""

from __future__ import annotations

import torch

from cola_mm.prior.dit import DiT
from cola_mm.prior.flow import expand_block_times, flow_loss, interpolate, sample_block_times
from cola_mm.prior.masks import (flex_block_mask, packed_two_copy_mask, packed_two_copy_mask_mod, two_copy_mask,
                         two_copy_mask_mod)


def two_copy_forward(model: DiT, z0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor,
                     positions: torch.Tensor, segments: torch.Tensor, block_ids: torch.Tensor) -> torch.Tensor:
    """Velocity for the noisy copy. z0, z_t (b, L, c); t (b, L); positions, segments (b, L);
    block_ids (L,). Returns (b, L, c)."""
    L = z0.shape[1]
    x = torch.cat([z0, z_t], dim=1)  # (b, 2L, c)
    times = torch.cat([torch.zeros_like(t), t], dim=1)
    if model.config.attention == "flex":
        mask = flex_block_mask(two_copy_mask_mod(block_ids), 2 * L, 2 * L, z0.device)
    else:
        mask = two_copy_mask(block_ids)[None]  # (1, 2L, 2L)
    v = model(x, times, torch.cat([positions, positions], 1), torch.cat([segments, segments], 1), mask)
    return v[:, L:]


def flow_matching_loss(model: DiT, z0: torch.Tensor, block_ids: torch.Tensor, positions: torch.Tensor,
                       segments: torch.Tensor, weight: torch.Tensor | None = None, time_loc: float = 1.0,
                       time_scale: float = 1.0, generator: torch.Generator | None = None
                       ) -> tuple[torch.Tensor, dict[str, float]]:
    """Draw one t per block, noise, and regress the velocity on every noisy block at once."""
    b = z0.shape[0]
    n_blocks = int(block_ids.max()) + 1
    t_blocks = sample_block_times(b, n_blocks, time_loc, time_scale, generator, z0.device)  # (b, k)
    t = expand_block_times(t_blocks, block_ids.to(z0.device))  # (b, L)
    noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    z_t = interpolate(z0, noise, t)
    v = two_copy_forward(model, z0, z_t, t, positions, segments, block_ids)
    loss = flow_loss(v, z0, noise, weight)
    return loss, {"flow": loss.item(), "t_mean": t_blocks.mean().item()}


def packed_two_copy_forward(model: DiT, z0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor,
                            positions: torch.Tensor, segments: torch.Tensor, block_ids: torch.Tensor,
                            sample_ids: torch.Tensor) -> torch.Tensor:
    """The 2L forward over packed rows: block_ids, sample_ids, segments (b, L); positions
    (b, L, A). Returns the velocity of the noisy copy (b, L, c)."""
    L = z0.shape[1]
    x = torch.cat([z0, z_t], dim=1)
    times = torch.cat([torch.zeros_like(t), t], dim=1)
    if model.config.attention == "flex":
        mask = flex_block_mask(packed_two_copy_mask_mod(block_ids, sample_ids), 2 * L, 2 * L, z0.device,
                               batch=z0.shape[0])
    else:
        mask = packed_two_copy_mask(block_ids, sample_ids)  # (b, 2L, 2L)
    v = model(x, times, torch.cat([positions, positions], 1), torch.cat([segments, segments], 1), mask)
    return v[:, L:]


def packed_flow_matching_loss(model: DiT, z0: torch.Tensor, layout: dict[str, torch.Tensor],
                              time_loc: torch.Tensor | float = 1.0, time_scale: torch.Tensor | float = 1.0,
                              generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Flow loss over packed rows (:func:`cola_mm.core.sequence.stack_layouts`): one standard normal
    per block, t = sigmoid(loc + scale·u) with loc/scale per latent (b, L) (per modality), the
    loss weighted by ``layout["loss_weight"]``."""
    b = z0.shape[0]
    blocks = layout["block_ids"]
    u = torch.randn(b, int(blocks.max()) + 1, generator=generator, device=z0.device)
    t = torch.sigmoid(time_loc + time_scale * expand_block_times(u, blocks))  # (b, L), constant per block
    noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    z_t = interpolate(z0, noise, t)
    v = packed_two_copy_forward(model, z0, z_t, t, layout["positions"], layout["segments"], blocks,
                                layout["sample_ids"])
    weight = layout["loss_weight"]
    loss = flow_loss(v, z0, noise, weight)
    logs = {"flow": loss.item(), "t_mean": (t * weight).sum().item() / max(weight.sum().item(), 1.0)}
    image = layout["is_image"] & (weight > 0)
    text = ~layout["is_image"] & (weight > 0)
    for name, sel in (("flow_image", image), ("flow_text", text)):
        if sel.any():
            logs[name] = flow_loss(v, z0, noise, sel.float()).item()
    return loss, logs
