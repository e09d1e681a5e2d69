"""Stage-1 loss of the image VAE: L1 + L2 reconstruction, an edge term, and β·KL.

    rec  = |x̂ − x|₁ + |x̂ − x|₂²                       (means over pixels)
    edge = |∇x̂ − ∇x|₁                                 (finite differences along H and W)
    KL   = KL(N(mean, e^logvar) ‖ N(0, I))            (mean over latent elements)
    L    = rec + λ_edge·edge + β·KL

No adversarial or perceptual (LPIPS) term: both need downloaded networks. The edge term
penalises blurred boundaries directly, which is what an L2-trained autoencoder gets wrong on
the flat-coloured renders of the bundled sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cola_mm.config import Config, check


@dataclass(frozen=True)
class ImageVAELossConfig(Config):
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    edge_weight: float = 0.5  # λ_edge
    beta: float = 1e-4  # KL weight (per latent element)

    def __post_init__(self):
        for name in ("l1_weight", "l2_weight", "edge_weight", "beta"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0")


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Finite differences of (b, c, H, W) along H and along W."""
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak = 1 after mapping to [0, 1]): (b,)."""
    mse = ((x_hat.clamp(-1, 1) - x) / 2).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def image_vae_loss(vae, x: torch.Tensor, cfg: ImageVAELossConfig,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    mean, logvar = vae.encode(x)
    z = vae.sample(mean, logvar, generator)
    x_hat = vae.decode(z).float()
    diff = x_hat - x
    l1, l2 = diff.abs().mean(), diff.pow(2).mean()
    (gh, gw), (th, tw) = image_gradients(x_hat), image_gradients(x)
    edge = 0.5 * ((gh - th).abs().mean() + (gw - tw).abs().mean())
    kl = 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).mean()
    loss = cfg.l1_weight * l1 + cfg.l2_weight * l2 + cfg.edge_weight * edge + cfg.beta * kl
    with torch.no_grad():
        p = psnr(x_hat, x).mean()
    return loss, {"l1": l1.item(), "l2": l2.item(), "edge": edge.item(), "kl": kl.item(), "psnr": p.item()}
