"""Stage ``vae-image``: what the generic training loop needs to train the image VAE (stage 1).

Data: the images of image shards (``data.train``, weighted; captions are not needed), made
RGB ``image_size``² (:mod:`cola_mm.data.pairs`). Validation reports PSNR on ``data.val``. Export::

    components/image_vae/   diffusers AutoencoderKL folder + cola_mm.json (latent shift/scale from data)

Config::

    stage: vae-image
    model: {preset: small}            # cola_mm.vae_image.model.PRESETS + ImageVAEConfig overrides
    loss: {edge_weight: 0.5, beta: 1.0e-4}
    data: {train: [{shards: datasets/shapes/train}, {shards: datasets/digits/train}]}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cola_mm.core.config import ConfigError
from cola_mm.data.pairs import ImagePairs
from cola_mm.data.windows import Source
from cola_mm.training.config import TrainConfig
from cola_mm.training.stage import first_batches, shift_scale
from cola_mm.vae_image.losses import ImageVAELossConfig, image_vae_loss, psnr
from cola_mm.vae_image.model import PRESETS, ImageVAE, ImageVAEConfig

COMPONENT = "image_vae"


def model_config(section: dict[str, Any]) -> ImageVAEConfig:
    section = dict(section)
    name = section.pop("preset", "small")
    if name not in PRESETS:
        raise ConfigError(f"model.preset: unknown ImageVAE preset {name!r}; choose from {sorted(PRESETS)}")
    return ImageVAEConfig.from_dict({**PRESETS[name], **section}, where="model")


class ImageVAETrainModule(nn.Module):
    def __init__(self, vae: ImageVAE, loss_cfg: ImageVAELossConfig):
        super().__init__()
        self.vae = vae
        self.loss_cfg = loss_cfg

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return image_vae_loss(self.vae, pixels, self.loss_cfg)


def collate_pixels(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {"pixels": torch.stack([it["pixels"] for it in items])}  # (b, 3, S, S)


class ImageVAEStage:
    name = "vae-image"
    collate = staticmethod(collate_pixels)

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.model_config = model_config(cfg.model)
        self.loss_config = ImageVAELossConfig.from_dict(cfg.loss, where="loss")
        self.module = ImageVAETrainModule(ImageVAE(self.model_config), self.loss_config)

    def _pairs(self, sources, rank: int, world: int, epochs: int | None, shuffle: int) -> ImagePairs:
        return ImagePairs([Source(s.shards, s.weight) for s in sources], self.model_config.image_size,
                          seed=self.cfg.seed, shuffle_buffer=shuffle, epochs=epochs, require_text=False,
                          rank=rank, world_size=world)

    def train_dataset(self, rank: int, world: int) -> ImagePairs:
        return self._pairs(self.cfg.data.train, rank, world, None, self.cfg.data.shuffle_buffer)

    def val_batches(self, n: int, sources=None) -> list[dict[str, torch.Tensor]]:
        sources = sources if sources is not None else self.cfg.data.val
        if not sources:
            return []
        return first_batches(self._pairs(sources, 0, 1, 1, 0), self.cfg.batch_size, n, collate_pixels)

    @staticmethod
    def count_samples(batch) -> int:
        return batch["pixels"].shape[0]

    @staticmethod
    def count_tokens(batch) -> int:  # pixels are not tokens; report images
        return batch["pixels"].shape[0]

    @torch.no_grad()
    def validate(self, module: ImageVAETrainModule, batches, device) -> dict[str, float]:
        total, n, psnrs = 0.0, 0, []
        gen = torch.Generator(device=device).manual_seed(0)
        for batch in batches:
            x = batch["pixels"].to(device)
            loss, _ = image_vae_loss(module.vae, x, self.loss_config, gen)
            total += loss.item() * x.shape[0]
            n += x.shape[0]
            mean, _ = module.vae.encode(x)
            psnrs.append(psnr(module.vae.decode(mean).float(), x))
        return {"loss": total / max(n, 1), "psnr": torch.cat(psnrs).mean().item()}

    def save_components(self, state_dict: dict[str, torch.Tensor], out: Path) -> None:
        vae = ImageVAE(self.model_config)
        vae.load_state_dict({k[len("vae."):]: v for k, v in state_dict.items() if k.startswith("vae.")})
        batches = self.val_batches(4) or self.val_batches(4, self.cfg.data.train)
        shift, scale = latent_statistics(vae, batches)
        vae.with_latent_stats(shift, scale).save_pretrained(out / COMPONENT)


@torch.no_grad()
def latent_statistics(vae: ImageVAE, batches) -> tuple[float, float]:
    """(shift, scale) so that (z − shift)·scale has zero mean and unit variance over the data."""
    vae.eval()
    gen = torch.Generator().manual_seed(0)
    return shift_scale([vae.sample(*vae.encode(b["pixels"]), gen).flatten() for b in batches], "the image encoder")
