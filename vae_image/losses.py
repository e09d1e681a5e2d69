"""Stage-1 loss of the image VAE: L1 + L2 reconstruction, an edge term, and β·KL.

    rec  = |x̂ − x|₁ + |x̂ − x|₂²                       (means over pixels)
    edge = |∇x̂ − ∇x|₁                                 (finite differences along H and W)
    KL   = KL(N(mean, e^logvar) ‖ N(0, I))            (mean over latent elements)
    L    = rec + λ_edge·edge + β·KL

With ``latent_noise`` σ_max > 0 the decoder reconstructs from z + σ·s·ε, σ ~ U(0, σ_max) per
image and s the batch's latent standard deviation (detached, so the encoder cannot outgrow the
noise by scaling up). The prior's samples are never exact latents; this trains a decoder that
still draws the right object from a slightly wrong latent, and an encoder that spreads what
matters (the shape of a small object) over directions large enough to survive it.

No adversarial or perceptual (LPIPS) term: both need downloaded networks. The edge term
penalises blurred boundaries directly, which is what an L2-trained autoencoder gets wrong on
the flat-coloured renders of the bundled sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cola_mm.core.config import Config, check


@dataclass(frozen=True)
class ImageVAELossConfig(Config):
    l1_weight: float = 1.0
    l2_weight: float = 1.0
    edge_weight: float = 0.5  # λ_edge
    beta: float = 1e-4  # KL weight (per latent element)
    latent_noise: float = 0.0  # σ_max of the decoder's latent noise, in units of the latents' std

    def __post_init__(self):
        for name in ("l1_weight", "l2_weight", "edge_weight", "beta", "latent_noise"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0")


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Finite differences of (b, c, H, W) along H and along W."""
    return x[..., 1:, :] - x[..., :-1, :], x[..., :, 1:] - x[..., :, :-1]


def psnr(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images in [-1, 1] (peak = 1 after mapping to [0, 1]): (b,)."""
    mse = ((x_hat.clamp(-1, 1) - x) / 2).pow(2).flatten(1).mean(1)
    return -10 * torch.log10(mse.clamp_min(1e-10))


def add_latent_noise(z: torch.Tensor, sigma_max: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """z + σ·std(z)·ε with σ ~ U(0, sigma_max) per image; std over the whole batch, detached."""
    sigma = sigma_max * torch.rand(z.shape[0], *([1] * (z.dim() - 1)), generator=generator, device=z.device,
                                   dtype=z.dtype)
    eps = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return z + sigma * z.detach().std() * eps


def image_vae_loss(vae, x: torch.Tensor, cfg: ImageVAELossConfig,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    mean, logvar = vae.encode(x)
    z = vae.sample(mean, logvar, generator)
    if cfg.latent_noise > 0:
        z = add_latent_noise(z, cfg.latent_noise, generator)
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
