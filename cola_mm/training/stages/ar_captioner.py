"""Stage ``ar-captioner``: the AR captioning specialist (:mod:`cola_mm.baselines.ar_captioner`).

Run config::

    stage: ar-captioner
    model: {image_vae: checkpoints/demo, preset: small, num_hidden_layers: 9}   # + any LlamaConfig key
    data:
      pairs: [{shards: datasets/shapes/train}]      # image–caption shards, as the prior's data.pairs
      val_pairs: [{shards: datasets/shapes/val}]
      tokenizer: checkpoints/demo/tokenizer
      caption_tokens: 32
      caption_targets: canonical                     # or original (the shard's txt)

The image VAE (a pipeline folder holding ``image_vae/``, or an ``image_vae`` folder) is frozen:
each image is encoded to its posterior and a sample of it is the prefix, as the prior's training
does. The loss is the next-token cross-entropy of the caption after ``<bos>``; validation reports
``loss`` and ``ppl`` over the caption tokens of fixed held-out pairs.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from cola_mm.baselines.ar_captioner import (COMPONENT, ARCaptionerPrefix, PrefixConfig, caption_batch,
                                            captioner_loss)
from cola_mm.core.config import ConfigError
from cola_mm.training.config import TrainConfig
from cola_mm.training.stage import first_batches
from cola_mm.training.stages.ar import build_model, export_lm, llama_config
from cola_mm.vae_text.tokenizer import load_tokenizer, save_tokenizer


def _image_vae_folder(path: str) -> Path:
    p = Path(path)
    return p / "image_vae" if (p / "image_vae").is_dir() else p


class ARCaptionerModule(nn.Module):
    """``forward(pixels | latents, ids, mask) -> (loss, logs)``."""

    def __init__(self, lm, prefix: ARCaptionerPrefix, image_vae):
        super().__init__()
        self.lm = lm
        self.prefix = prefix
        self.image_vae = image_vae.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.image_vae.eval()
        return self

    def image_tokens(self, pixels=None, latents=None, sample: bool = True) -> torch.Tensor:
        """The prefix: a posterior sample (training) or its mean (``sample=False``, validation)."""
        with torch.no_grad():
            if latents is not None:  # a latent cache: the VAE's encoder is not run
                z = self.image_vae.sample(latents[:, 0], latents[:, 1]) if sample else latents[:, 0]
                return self.image_vae.to_tokens(z).float()
            return self.image_vae.images_to_tokens(pixels, sample=sample).float()

    def forward(self, ids, mask, pixels=None, latents=None):
        nll, n = captioner_loss(self.lm, self.prefix, self.image_tokens(pixels, latents), ids, mask)
        loss = nll / max(n, 1)
        return loss, {"nll": loss.item()}


class ARCaptionerStage:
    name = "ar-captioner"

    def __init__(self, cfg: TrainConfig):
        from cola_mm.vae_image.model import ImageVAE

        self.cfg = cfg
        if cfg.loss:
            raise ConfigError(f"loss: the ar-captioner stage has no loss options; remove {sorted(cfg.loss)}")
        section = dict(cfg.model)
        if "image_vae" not in section:
            raise ConfigError("model.image_vae: the frozen image VAE whose latents the captioner reads (a pipeline "
                              "folder such as checkpoints/demo, or an image_vae folder) is required")
        self.image_vae_dir = _image_vae_folder(section.pop("image_vae"))
        if not cfg.data.pairs or cfg.data.train or cfg.data.val:
            raise ConfigError("data.pairs: the ar-captioner stage trains on image–caption shards (data.pairs, "
                              "data.val_pairs); it reads no text windows (data.train, data.val)")
        self.tokenizer = load_tokenizer(cfg.data.tokenizer)
        self.image_vae = ImageVAE.from_pretrained(self.image_vae_dir)
        n_tokens = self.image_vae.config.grid ** 2
        self.model_config = llama_config(section, self.tokenizer, n_tokens + cfg.data.caption_tokens)
        self.prefix_config = PrefixConfig(token_dim=self.image_vae.config.token_dim,
                                          hidden_size=self.model_config.hidden_size,
                                          max_caption_tokens=cfg.data.caption_tokens)
        self.module = ARCaptionerModule(build_model(self.model_config), ARCaptionerPrefix(self.prefix_config),
                                        self.image_vae)

    # ---- data
    def _pairs(self, sources, rank: int, world: int, epochs, shuffle: int):
        from cola_mm.data.pairs import ImagePairs, PairSource

        return ImagePairs([PairSource(s.shards, s.weight, s.warp_degrees, s.warp_scale) for s in sources],
                          self.image_vae.config.image_size, seed=self.cfg.seed, shuffle_buffer=shuffle,
                          epochs=epochs, rank=rank, world_size=world,
                          latent_fingerprint=self.image_vae.fingerprint())

    def train_dataset(self, rank: int, world: int):
        return self._pairs(self.cfg.data.pairs, rank, world, None, self.cfg.data.shuffle_buffer)

    def val_batches(self, n: int):
        if not self.cfg.data.val_pairs:
            return []
        return first_batches(self._pairs(self.cfg.data.val_pairs, 0, 1, 1, 0), self.cfg.batch_size, n, self.collate)

    def collate(self, items: list[dict]) -> dict:
        from cola_mm.data.captions import canonical_caption

        texts = [canonical_caption(it["json"]) if self.cfg.data.caption_targets == "canonical" else it["txt"]
                 for it in items]
        ids, mask = caption_batch(self.tokenizer, texts, self.cfg.data.caption_tokens)
        batch = {"ids": ids, "mask": mask}
        if all("latent" in it for it in items):
            batch["latents"] = torch.stack([it["latent"] for it in items])
        else:
            batch["pixels"] = torch.stack([it["pixels"] for it in items])
        return batch

    @staticmethod
    def count_samples(batch) -> int:
        return batch["ids"].shape[0]

    @staticmethod
    def count_tokens(batch) -> int:
        return int(batch["mask"].sum())

    @torch.no_grad()
    def validate(self, module: ARCaptionerModule, batches, device) -> dict[str, float]:
        total, count = 0.0, 0
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items()}
            tokens = module.image_tokens(batch.get("pixels"), batch.get("latents"), sample=False)  # deterministic
            nll, n = captioner_loss(module.lm, module.prefix, tokens, batch["ids"], batch["mask"])
            total, count = total + nll.item(), count + n
        loss = total / max(count, 1)
        return {"loss": loss, "ppl": math.exp(min(loss, 50.0))}

    def save_components(self, state_dict: dict[str, torch.Tensor], out: Path) -> None:
        prefix = {k[len("prefix."):]: v for k, v in state_dict.items() if k.startswith("prefix.")}
        ARCaptionerPrefix(self.prefix_config).save_pretrained(out / COMPONENT, prefix)  # first: it writes its folder anew
        export_lm(self.model_config, state_dict, out / COMPONENT / "lm")
        self.image_vae.save_pretrained(out / "image_vae")
        save_tokenizer(self.tokenizer, out / "tokenizer")
