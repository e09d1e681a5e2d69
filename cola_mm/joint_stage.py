"""Stage ``prior``: joint training of the Text VAE and the block-causal DiT (Cola DLM §3.4).

Starting from a stage-1 Text VAE, VAE and prior train together:

    L = λ_vae·(recon + β·KL + λ_mask·mask) + λ_fm·L_flow + λ_ref·KL(q_φ(z|x) ‖ q_ref(z|x))

where q_ref is a frozen copy of the stage-1 encoder (it keeps the latent space from drifting
while the flow loss shapes it). The flow loss is computed on posterior samples of the clean
text, normalised at the prior boundary, in the 2L layout (:mod:`prior.training`). Options for
the paper's ablations: ``freeze_vae`` (a frozen VAE saturates) and ``vae_lr_ratio`` (the same
learning rate for VAE and DiT scaled best).

Config::

    stage: prior
    model: {vae: runs/vae_text_small/model, dit: {preset: small}}
    loss: {vae_weight: 1.0, flow_weight: 1.0, ref_weight: 0.1, time_loc: 1.0, freeze_vae: false}

Exported components: ``text_vae/``, ``dit/``, ``tokenizer/`` and ``pipeline.json`` — the
folder :class:`cola_mm.pipeline.ColaPipeline` loads.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cola_mm.config import Config, ConfigError, check
from cola_mm.train_config import TrainConfig
from data.windows import TextWindowStage
from prior.dit import DiT, DiTConfig, PRESETS as DIT_PRESETS, SEGMENT_TYPES
from prior.masks import block_ids_for
from prior.training import flow_matching_loss
from vae_text.losses import TextVAELossConfig, text_vae_loss
from vae_text.model import TextVAE
from vae_text.tokenizer import load_tokenizer, save_tokenizer


@dataclass(frozen=True)
class JointLossConfig(Config):
    vae_weight: float = 1.0  # λ_vae: weight of the VAE loss
    flow_weight: float = 1.0  # λ_fm: weight of the flow-matching loss
    ref_weight: float = 0.1  # λ_ref: KL to the frozen stage-1 encoder
    beta: float = 1e-3  # VAE KL weight
    mask_ratio: float = 0.15  # VAE masking ratio
    mask_weight: float = 0.1  # λ_mask (as stage 1's default)
    time_loc: float = 1.0  # t ~ sigmoid(loc + scale·N(0,1)); ≈1.0 at d=16, 1.7 at 64, 2.3 at 128
    time_scale: float = 1.0
    freeze_vae: bool = False  # train the prior only (the paper's "frozen VAE" ablation)
    vae_lr_ratio: float = 1.0  # VAE learning rate / DiT learning rate

    def __post_init__(self):
        for name in ("vae_weight", "flow_weight", "ref_weight", "vae_lr_ratio"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0")
        check(self.time_scale > 0, "time_scale must be > 0")

    def vae_loss_config(self) -> TextVAELossConfig:
        return TextVAELossConfig(beta=self.beta, mask_ratio=self.mask_ratio, mask_weight=self.mask_weight)


def gaussian_kl(mean: torch.Tensor, logvar: torch.Tensor, ref_mean: torch.Tensor, ref_logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, e^logvar) ‖ N(ref_mean, e^ref_logvar)) per dim."""
    return 0.5 * (ref_logvar - logvar + (logvar.exp() + (mean - ref_mean).pow(2)) / ref_logvar.exp() - 1)


class JointTrainModule(nn.Module):
    def __init__(self, vae: TextVAE, dit: DiT, loss_cfg: JointLossConfig, mask_id: int):
        super().__init__()
        self.vae = vae
        self.dit = dit
        self.ref = copy.deepcopy(vae).requires_grad_(False).eval()
        self.loss_cfg = loss_cfg
        self.mask_id = mask_id
        if loss_cfg.freeze_vae:
            self.vae.requires_grad_(False)
        elif loss_cfg.vae_weight == 0:  # no reconstruction loss: the decoder gets no gradient
            for part in (self.vae.from_latent, self.vae.decoder, self.vae.lm_head):
                part.requires_grad_(False)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.loss_cfg
        b, L = ids.shape
        valid = torch.ones_like(ids, dtype=torch.bool)
        logs: dict[str, float] = {}
        loss = torch.zeros((), device=ids.device)
        train_vae = not cfg.freeze_vae
        if train_vae and cfg.vae_weight > 0:
            vae_loss, vae_logs = text_vae_loss(self.vae, ids, valid, cfg.vae_loss_config(), self.mask_id)
            loss = loss + cfg.vae_weight * vae_loss
            logs.update({f"vae_{k}": v for k, v in vae_logs.items()})
        with torch.set_grad_enabled(train_vae and torch.is_grad_enabled()):
            mean, logvar = self.vae.encode(ids)
            z0 = self.vae.to_prior(self.vae.sample(mean, logvar))  # (b, L, c)
        positions = torch.arange(L, device=ids.device).expand(b, L)
        segments = torch.full((b, L), SEGMENT_TYPES["text"], dtype=torch.long, device=ids.device)
        blocks = block_ids_for(L, self.dit.config.block_size, device=ids.device)
        flow, flow_logs = flow_matching_loss(self.dit, z0, blocks, positions, segments,
                                             time_loc=cfg.time_loc, time_scale=cfg.time_scale)
        loss = loss + cfg.flow_weight * flow
        logs.update(flow_logs)
        if train_vae and cfg.ref_weight > 0:
            with torch.no_grad():
                ref_mean, ref_logvar = self.ref.encode(ids)
            ref_kl = gaussian_kl(mean.float(), logvar.float(), ref_mean.float(), ref_logvar.float()).sum(-1).mean()
            loss = loss + cfg.ref_weight * ref_kl
            logs["ref_kl"] = ref_kl.item()
        return loss, logs


class JointStage(TextWindowStage):
    name = "prior"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        section = dict(cfg.model)
        unknown = set(section) - {"vae", "dit"}
        if unknown or "vae" not in section:
            raise ConfigError(f"model: needs 'vae' (a stage-1 model folder) and optionally 'dit'; "
                              f"got {sorted(section)}")
        vae_dir = Path(section["vae"])
        vae_path = vae_dir / "text_vae" if (vae_dir / "text_vae").is_dir() else vae_dir
        self.vae = TextVAE.from_pretrained(vae_path)
        tok_path = cfg.data.tokenizer
        self.tokenizer = load_tokenizer(tok_path)
        if len(self.tokenizer) != self.vae.config.vocab_size:
            raise ConfigError(f"tokenizer {tok_path} has {len(self.tokenizer)} tokens but the VAE in "
                              f"{vae_path} was trained with {self.vae.config.vocab_size}")
        dit_section = dict(section.get("dit", {}))
        name = dit_section.pop("preset", "small")
        if name not in DIT_PRESETS:
            raise ConfigError(f"model.dit.preset: unknown DiT preset {name!r}; choose from {sorted(DIT_PRESETS)}")
        self.dit_config = DiTConfig.from_dict({**DIT_PRESETS[name], **dit_section,
                                               "d_latent": self.vae.config.d_latent}, where="model.dit")
        if self.dit_config.block_size % self.vae.config.block_size:
            raise ConfigError(f"model.dit.block_size ({self.dit_config.block_size}) must be a multiple of the "
                              f"Text VAE block ({self.vae.config.block_size})")
        if cfg.data.seq_len % self.dit_config.block_size:
            raise ConfigError(f"data.seq_len ({cfg.data.seq_len}) must be a multiple of the DiT block "
                              f"size ({self.dit_config.block_size})")
        self.loss_config = JointLossConfig.from_dict(cfg.loss, where="loss")
        self.module = JointTrainModule(self.vae, DiT(self.dit_config), self.loss_config,
                                       self.tokenizer.mask_token_id)

    def param_groups(self, optim) -> list[dict[str, Any]]:
        """DiT at the base learning rate, the VAE at ``vae_lr_ratio`` times it."""
        groups = []
        for part, ratio in ((self.module.dit, 1.0), (self.module.vae, self.loss_config.vae_lr_ratio)):
            params = [p for p in part.parameters() if p.requires_grad]
            decay = [p for p in params if p.ndim >= 2]
            no_decay = [p for p in params if p.ndim < 2]
            for ps, wd in ((decay, optim.weight_decay), (no_decay, 0.0)):
                if ps:
                    groups.append({"params": ps, "weight_decay": wd, "lr": optim.lr * ratio})
        return groups

    @torch.no_grad()
    def validate(self, module: JointTrainModule, batches, device) -> dict[str, float]:
        totals: dict[str, float] = {}
        devices = [device] if torch.device(device).type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the same noise every validation, RNG untouched
            torch.manual_seed(0)
            for batch in batches:
                loss, logs = module(batch["ids"].to(device))
                for k, v in {"loss": loss.item(), **logs}.items():
                    totals[k] = totals.get(k, 0.0) + v / len(batches)
        return totals

    # ---- export
    def save_components(self, state_dict: dict[str, torch.Tensor], out: Path) -> None:
        from cola_mm.pipeline import PipelineConfig, save_pipeline_config

        # the latent shift/scale stay those of stage 1: the prior was trained on exactly that
        # normalisation, so re-measuring it here would shift the prior's inputs
        vae = TextVAE(self.vae.config)
        vae.load_state_dict({k[len("vae."):]: v for k, v in state_dict.items() if k.startswith("vae.")})
        dit = DiT(self.dit_config)
        dit.load_state_dict({k[len("dit."):]: v for k, v in state_dict.items() if k.startswith("dit.")})
        vae.save_pretrained(out / "text_vae")
        dit.save_pretrained(out / "dit")
        save_tokenizer(self.tokenizer, out / "tokenizer")
        B = self.dit_config.block_size
        save_pipeline_config(PipelineConfig(block_size=B, max_prompt_tokens=max(B, self.cfg.data.seq_len - B),
                                            trained_context=self.cfg.data.seq_len), out)
