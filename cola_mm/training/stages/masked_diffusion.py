"""Stage ``masked-diffusion``: the LLaDA-style masked diffusion baseline on the same token windows
as the text stages (:class:`~cola_mm.training.stage.TextWindowStage`).

The model, its loss and its sampler are in :mod:`cola_mm.baselines.masked_diffusion`. The run
config's ``model`` section is ``{preset: small, …}`` with any
:class:`~cola_mm.baselines.masked_diffusion.MaskedDiffusionConfig` key overriding the preset
(``vocab_size`` and ``mask_token_id`` come from the tokenizer; ``max_len`` from ``data.seq_len``)
and ``sample_block_size`` (16), the block of the semi-autoregressive sampler written into the
exported config. There are no loss options.

Exported components::

    components/mdm/        config.json + model.safetensors (MaskedDiffusionLM.from_pretrained)
    components/tokenizer/  the tokenizer the model was trained with

Validation reports the loss (the bound above, on fixed held-out windows with a fixed masking
draw, so validations are comparable along a run) as ``loss``, and ``nll_bound_ppl`` = exp(loss).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from cola_mm.baselines.masked_diffusion import (COMPONENT, PRESETS, MaskedDiffusionConfig, MaskedDiffusionLM,
                                                mask_tokens, masked_diffusion_loss)
from cola_mm.core.components import save_component
from cola_mm.core.config import ConfigError
from cola_mm.training.config import TrainConfig
from cola_mm.training.stage import TextWindowStage
from cola_mm.vae_text.tokenizer import load_tokenizer, save_tokenizer

OWN_KEYS = ("preset", "sample_block_size")


def model_config(section: dict, tokenizer, seq_len: int) -> tuple[MaskedDiffusionConfig, int]:
    """``{preset: small, n_layers: 9, sample_block_size: 16}`` → (config, sampler block size)."""
    section = dict(section)
    name = section.pop("preset", "small")
    block = section.pop("sample_block_size", 16)
    if name not in PRESETS:
        raise ConfigError(f"model.preset: unknown masked-diffusion preset {name!r}; choose from {sorted(PRESETS)}")
    if not isinstance(block, int) or isinstance(block, bool) or block < 1:
        raise ConfigError(f"model.sample_block_size must be an integer >= 1, got {block!r}")
    vocab = len(tokenizer)
    if "vocab_size" in section and section["vocab_size"] != vocab:
        raise ConfigError(f"model.vocab_size={section['vocab_size']} does not match the tokenizer's "
                          f"vocabulary ({vocab} tokens)")
    if tokenizer.mask_token_id is None:
        raise ConfigError("the tokenizer has no <mask> token, which masked diffusion needs")
    fields = set(MaskedDiffusionConfig.__dataclass_fields__)
    unknown = sorted(k for k in section if k not in fields)
    if unknown:
        raise ConfigError(f"model: unknown key {unknown[0]!r} for the masked-diffusion stage; valid keys: "
                          f"{', '.join(OWN_KEYS + tuple(sorted(fields - {'vocab_size', 'mask_token_id'})))}")
    values = {"max_len": seq_len, **PRESETS[name], **section, "vocab_size": vocab,
              "mask_token_id": tokenizer.mask_token_id}
    config = MaskedDiffusionConfig.from_dict(values, where="model")
    if config.max_len < seq_len:
        raise ConfigError(f"model.max_len ({config.max_len}) is shorter than data.seq_len ({seq_len})")
    return config, block


class MaskedDiffusionTrainModule(nn.Module):
    """``forward(ids) -> (loss, logs)``: one masking draw per row, the loss inside forward."""

    def __init__(self, lm: MaskedDiffusionLM):
        super().__init__()
        self.lm = lm

    def forward(self, ids: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        x_t, masked, p = mask_tokens(ids, self.lm.config.mask_token_id, generator)
        loss = masked_diffusion_loss(self.lm(x_t), ids, masked, p)
        return loss, {"masked_frac": masked.float().mean().item()}


class MaskedDiffusionStage(TextWindowStage):
    name = "masked-diffusion"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.tokenizer = load_tokenizer(cfg.data.tokenizer)
        if cfg.loss:
            raise ConfigError(f"loss: the masked-diffusion stage has no loss options (LLaDA's 1/t-weighted "
                              f"cross-entropy); remove {sorted(cfg.loss)}")
        self.model_config, self.sample_block_size = model_config(cfg.model, self.tokenizer, cfg.data.seq_len)
        self.module = MaskedDiffusionTrainModule(MaskedDiffusionLM(self.model_config))

    @torch.no_grad()
    def validate(self, module: MaskedDiffusionTrainModule, batches, device) -> dict[str, float]:
        """The loss over the batches with one fixed masking draw (seeded by the batch index)."""
        total, rows = 0.0, 0
        for i, batch in enumerate(batches):
            ids = batch["ids"].to(device)
            generator = torch.Generator(device=device).manual_seed(1000 + i)
            loss, _ = module(ids, generator)
            total, rows = total + loss.item() * ids.shape[0], rows + ids.shape[0]
        loss = total / max(rows, 1)
        return {"loss": loss, "nll_bound_ppl": math.exp(min(loss, 50.0))}

    def save_components(self, state_dict: dict[str, torch.Tensor], out: Path) -> None:
        weights = {k[len("lm."):]: v for k, v in state_dict.items() if k.startswith("lm.")}
        save_component(out / COMPONENT, MaskedDiffusionLM.KIND, self.model_config, weights,
                       extra={"sample_block_size": self.sample_block_size})
        save_tokenizer(self.tokenizer, out / "tokenizer")
