"""Stage ``vae-text``: what the generic training loop needs to train the Text VAE (stage 1).

The loop calls ``module(**batch) -> (loss, logs)``; this file builds that module from the run
config (model preset + overrides, loss config, tokenizer), the resumable token-window data
(Shakespeare plus shapes/digits captions: one latent space for every text the prior sees),
validation and the component export. Exported components::

    components/text_vae/   config.json + model.safetensors (latent shift/scale set from data)
    components/tokenizer/  the tokenizer the model was trained with
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from cola_mm.core.config import ConfigError
from cola_mm.data.windows import collate_windows
from cola_mm.training.config import TrainConfig
from cola_mm.training.stage import TextWindowStage, shift_scale
from cola_mm.vae_text.losses import (TextVAELossConfig, active_dims, reconstruction_metrics,
                             text_vae_loss)
from cola_mm.vae_text.model import PRESETS, TextVAE, TextVAEConfig
from cola_mm.vae_text.tokenizer import load_tokenizer, save_tokenizer

COMPONENT = "text_vae"


def model_config(section: dict[str, Any], vocab_size: int) -> TextVAEConfig:
    """``{preset: small, d_latent: 32, …}`` → a checked TextVAEConfig for this vocabulary."""
    section = dict(section)
    name = section.pop("preset", "small")
    if name not in PRESETS:
        raise ConfigError(f"model.preset: unknown TextVAE preset {name!r}; choose from {sorted(PRESETS)}")
    if "vocab_size" in section and section["vocab_size"] != vocab_size:
        raise ConfigError(f"model.vocab_size={section['vocab_size']} does not match the tokenizer ({vocab_size})")
    return TextVAEConfig.from_dict({**PRESETS[name], **section, "vocab_size": vocab_size}, where="model")


class TextVAETrainModule(nn.Module):
    """Wraps the VAE so the loss runs inside ``forward`` (DDP/DeepSpeed hooks need that)."""

    def __init__(self, vae: TextVAE, loss_cfg: TextVAELossConfig, mask_id: int):
        super().__init__()
        self.vae = vae
        self.loss_cfg = loss_cfg
        self.mask_id = mask_id

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        valid = torch.ones_like(ids, dtype=torch.bool)  # packed windows have no padding
        return text_vae_loss(self.vae, ids, valid, self.loss_cfg, self.mask_id)


class TextVAEStage(TextWindowStage):
    name = "vae-text"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.data.tokenizer)
        self.model_config = model_config(cfg.model, len(self.tokenizer))
        self.loss_config = TextVAELossConfig.from_dict(cfg.loss, where="loss")
        self.module = TextVAETrainModule(TextVAE(self.model_config), self.loss_config,
                                         self.tokenizer.mask_token_id)

    # ---- validation
    @torch.no_grad()
    def validate(self, module: TextVAETrainModule, batches, device) -> dict[str, float]:
        gen = torch.Generator(device=device).manual_seed(0)
        totals: dict[str, Any] = {}
        losses = []
        for batch in batches:
            ids = batch["ids"].to(device)
            valid = torch.ones_like(ids, dtype=torch.bool)
            out = reconstruction_metrics(module.vae, ids, valid, gen)
            for k, v in out.items():
                totals[k] = torch.cat([totals[k], v]) if k == "means" and k in totals else (
                    totals[k] + v if k in totals else v)
            losses.append(text_vae_loss(module.vae, ids, valid, self.loss_config, module.mask_id)[0].item())
        tokens = totals["tokens"].item()
        return {"loss": sum(losses) / len(losses),
                "acc_mean": totals["correct_mean"].item() / tokens,
                "acc_sample": totals["correct_sample"].item() / tokens,
                "kl_per_token": totals["kl_sum"].item() / tokens,
                "active_dims": float(active_dims(totals["means"]))}

    # ---- export
    def save_components(self, state_dict: dict[str, torch.Tensor], out: Path) -> None:
        """Save the VAE (with latent shift/scale measured on data) and the tokenizer."""
        vae = TextVAE(self.model_config)
        vae.load_state_dict({k[len("vae."):]: v for k, v in state_dict.items() if k.startswith("vae.")})
        shift, scale = latent_statistics(vae, self.val_batches(4) or self._stat_batches())
        vae.with_latent_stats(shift, scale).save_pretrained(out / COMPONENT)
        save_tokenizer(self.tokenizer, out / "tokenizer")

    def _stat_batches(self) -> list[dict[str, torch.Tensor]]:
        windows = iter(self._windows(self.cfg.data.train, 0, 1, 1, 0))
        items = [w for _, w in zip(range(4 * self.cfg.batch_size), windows)]
        return [collate_windows(items)] if items else []


@torch.no_grad()
def latent_statistics(vae: TextVAE, batches) -> tuple[float, float]:
    """(shift, scale) so that (z − shift)·scale has zero mean and unit variance over the data,
    z being posterior samples."""
    vae.eval()
    zs = []
    gen = torch.Generator().manual_seed(0)
    for batch in batches:
        mean, logvar = vae.encode(batch["ids"])
        zs.append(vae.sample(mean, logvar, gen).flatten())
    return shift_scale(zs, "the encoder")

