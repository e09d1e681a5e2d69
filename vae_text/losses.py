"""Stage-1 loss of the Text VAE (Cola DLM §3.1) and its metrics.

    L = CE(unmasked positions) + β·KL(q(z|x) ‖ N(0, I)) + λ_mask·CE(masked positions)

A fraction ``mask_ratio`` of the encoder's input tokens is replaced by ``<mask>`` (BERT-style);
the decoder, reading only latents, must still reconstruct the original tokens everywhere. The
cross-entropy at the masked positions is the masking loss; it stops the latent from collapsing
into a token lookup table ("semantic collapse"). One forward pass gives both terms.

Legend: ``b`` batch, ``n`` tokens, ``c`` latent dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cola_mm.core.config import Config, check
from cola_mm.vae_text.model import TextVAE


@dataclass(frozen=True)
class TextVAELossConfig(Config):
    beta: float = 1e-3  # KL weight
    mask_ratio: float = 0.15  # fraction of encoder inputs replaced by <mask>
    mask_weight: float = 0.1  # λ_mask: weight of the CE at masked positions (1.0 slows recon 2x+, see bench/sweep_vae_text.sh)
    free_bits: float = 0.0  # per-dim KL floor (nats) below which KL is not penalised

    def __post_init__(self):
        check(self.beta >= 0, f"beta must be >= 0, got {self.beta}")
        check(0 <= self.mask_ratio < 1, f"mask_ratio must be in [0, 1), got {self.mask_ratio}")
        check(self.mask_weight >= 0, f"mask_weight must be >= 0, got {self.mask_weight}")
        check(self.free_bits >= 0, f"free_bits must be >= 0, got {self.free_bits}")


def kl_per_token(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, e^logvar) ‖ N(0, I)) per latent dim: (b, n, c)."""
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar)


def random_token_mask(valid: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A bool (b, n) mask choosing ~``ratio`` of the valid positions."""
    if ratio <= 0:
        return torch.zeros_like(valid)
    draw = torch.rand(valid.shape, generator=generator, device=valid.device)
    return (draw < ratio) & valid


def text_vae_loss(model: TextVAE, ids: torch.Tensor, valid: torch.Tensor, cfg: TextVAELossConfig,
                  mask_id: int) -> tuple[torch.Tensor, dict[str, float]]:
    """ids (b, n) long; valid (b, n) bool (False at padding). Returns (loss, logs)."""
    masked = random_token_mask(valid, cfg.mask_ratio)
    inputs = torch.where(masked, torch.full_like(ids, mask_id), ids)
    mean, logvar = model.encode(inputs)
    z = model.sample(mean, logvar)
    logits = model.decode(z)
    ce = F.cross_entropy(logits.float().flatten(0, 1), ids.flatten(), reduction="none").view_as(ids)

    plain = valid & ~masked
    recon = (ce * plain).sum() / plain.sum().clamp(min=1)
    mask_loss = (ce * masked).sum() / masked.sum().clamp(min=1)
    kl_dims = kl_per_token(mean.float(), logvar.float())  # (b, n, c)
    kl = (kl_dims.sum(-1) * valid).sum() / valid.sum().clamp(min=1)
    kl_term = kl
    if cfg.free_bits > 0:
        kl_term = (kl_dims.clamp(min=cfg.free_bits).sum(-1) * valid).sum() / valid.sum().clamp(min=1)
    loss = recon + cfg.beta * kl_term + (cfg.mask_weight * mask_loss if cfg.mask_ratio > 0 else 0.0)

    with torch.no_grad():
        acc = ((logits.argmax(-1) == ids) & plain).sum() / plain.sum().clamp(min=1)
    logs = {"recon": recon.item(), "kl": kl.item(), "mask_ce": mask_loss.item(), "acc": acc.item()}
    return loss, logs


@torch.no_grad()
def reconstruction_metrics(model: TextVAE, ids: torch.Tensor, valid: torch.Tensor,
                           generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Token accuracy from the posterior mean and from a sampled z, KL per token, and the
    per-dim posterior means (for counting active dims). Sums, so batches can be accumulated."""
    mean, logvar = model.encode(ids)
    acc_mean = (model.decode(mean).argmax(-1) == ids) & valid
    acc_sample = (model.decode(model.sample(mean, logvar, generator)).argmax(-1) == ids) & valid
    kl = kl_per_token(mean.float(), logvar.float()).sum(-1) * valid
    return {"tokens": valid.sum(), "correct_mean": acc_mean.sum(), "correct_sample": acc_sample.sum(),
            "kl_sum": kl.sum(), "means": mean[valid].float()}


def active_dims(means: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent dims whose posterior mean varies across tokens (Var > threshold),
    the usual test for posterior collapse (Burda et al. 2016)."""
    return int((means.var(dim=0) > threshold).sum())
