"""Stage ``prior``: joint training of the Text VAE and the block-causal DiT (Cola DLM §3.4).

Starting from a stage-1 Text VAE, VAE and prior train together:

    L = λ_vae·(recon + β·KL + λ_mask·mask) + λ_fm·L_flow + λ_ref·KL(q_φ(z|x) ‖ q_ref(z|x))

where q_ref is a frozen copy of the stage-1 encoder (it keeps the latent space from drifting
while the flow loss shapes it). The flow loss is computed on posterior samples of the clean
text, normalised at the prior boundary, in the 2L layout (:mod:`cola_mm.prior.training`). Options for
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

from cola_mm.core.config import Config, ConfigError, check
from cola_mm.core.sequence import SEGMENT_TYPES
from cola_mm.prior.dit import DiT, DiTConfig, PRESETS as DIT_PRESETS
from cola_mm.prior.masks import block_ids_for
from cola_mm.prior.training import flow_matching_loss, packed_flow_matching_loss
from cola_mm.training.config import TrainConfig
from cola_mm.training.stage import TextWindowStage, first_batches
from cola_mm.vae_text.losses import TextVAELossConfig, text_vae_loss
from cola_mm.vae_text.model import TextVAE
from cola_mm.vae_text.tokenizer import load_tokenizer, save_tokenizer


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
    position_lr_ratio: float = 1.0  # the DiT's position tables (model.dit.position_embed): lr / DiT lr
    image_time_loc: float = 1.0  # flow-time law of image blocks (text blocks use time_loc/time_scale)
    image_time_scale: float = 1.0
    cond_dropout: float = 0.1  # probability that a conditional sample loses its prompt (for CFG)

    def __post_init__(self):
        for name in ("vae_weight", "flow_weight", "ref_weight", "vae_lr_ratio", "position_lr_ratio"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0")
        check(self.time_scale > 0 and self.image_time_scale > 0, "time_scale and image_time_scale must be > 0")
        check(0 <= self.cond_dropout < 1, f"cond_dropout must be in [0, 1), got {self.cond_dropout}")

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


def scatter_latents(z0: torch.Tensor, values: torch.Tensor, at: torch.Tensor,
                    lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Place segment latents ``values`` (n, T, c) into rows ``z0`` (b, L, c) at ``at`` (n, 2)
    [row, start], the first ``lengths`` (n,) of each (default all T). Out of place (keeps grads)."""
    n, T, _ = values.shape
    ar = torch.arange(T, device=values.device)
    keep = ar[None, :] < (lengths[:, None] if lengths is not None else torch.full((n, 1), T, device=values.device))
    rows = at[:, 0, None].expand(n, T)[keep]
    cols = (at[:, 1, None] + ar[None, :])[keep]
    return z0.index_put((rows, cols), values[keep].to(z0.dtype))


class MultimodalTrainModule(JointTrainModule):
    """The joint stage over packed rows of all three jobs (:mod:`cola_mm.data.multimodal`).

    Text windows and caption segments are encoded by the (trained) Text VAE, images by the
    frozen image VAE (trained in stage ``vae-image``); all are scattered into one normalised
    latent batch (b, L, c) and the prior learns it in the 2L layout with the rows' own blocks,
    samples, 2-D/1-D positions and loss weights. The Text VAE's own loss and the reference KL
    are computed on the text windows."""

    def __init__(self, vae: TextVAE, dit: DiT, loss_cfg: JointLossConfig, mask_id: int, image_vae):
        super().__init__(vae, dit, loss_cfg, mask_id)
        self.image_vae = image_vae.requires_grad_(False).eval()

    def train(self, mode: bool = True):
        super().train(mode)
        self.ref.eval()
        self.image_vae.eval()
        return self

    def forward(self, block_ids, sample_ids, positions, segments, loss_weight, is_image, windows, window_rows,
                captions, caption_at, caption_len, pixels, image_at, latents=None, latent_at=None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.loss_cfg
        b, L = block_ids.shape
        device = block_ids.device
        z0 = torch.zeros(b, L, self.dit.config.d_latent, device=device)
        loss = torch.zeros((), device=device)
        logs: dict[str, float] = {}
        train_vae = not cfg.freeze_vae
        grad = train_vae and torch.is_grad_enabled()
        if windows.shape[0]:
            if train_vae and cfg.vae_weight > 0:
                valid = torch.ones_like(windows, dtype=torch.bool)
                vae_loss, vae_logs = text_vae_loss(self.vae, windows, valid, cfg.vae_loss_config(), self.mask_id)
                loss = loss + cfg.vae_weight * vae_loss
                logs.update({f"vae_{k}": v for k, v in vae_logs.items()})
            with torch.set_grad_enabled(grad):
                mean, logvar = self.vae.encode(windows)
                zw = self.vae.to_prior(self.vae.sample(mean, logvar))
            at = torch.stack([window_rows, torch.zeros_like(window_rows)], 1)
            z0 = scatter_latents(z0, zw, at)
            if train_vae and cfg.ref_weight > 0:
                with torch.no_grad():
                    ref_mean, ref_logvar = self.ref.encode(windows)
                ref_kl = gaussian_kl(mean.float(), logvar.float(), ref_mean.float(), ref_logvar.float()).sum(-1).mean()
                loss = loss + cfg.ref_weight * ref_kl
                logs["ref_kl"] = ref_kl.item()
        if captions.shape[0]:
            with torch.set_grad_enabled(grad):
                mean, logvar = self.vae.encode(captions)
                z0 = scatter_latents(z0, self.vae.to_prior(self.vae.sample(mean, logvar)), caption_at, caption_len)
        if pixels.shape[0]:
            with torch.no_grad():
                z0 = scatter_latents(z0, self.image_vae.images_to_tokens(pixels, sample=True).float(), image_at)
        if latents is not None and latents.shape[0]:  # a latent cache: the VAE's encoder is not run
            z = self.image_vae.sample(latents[:, 0], latents[:, 1])
            z0 = scatter_latents(z0, self.image_vae.to_tokens(z).float(), latent_at)
        layout = {"block_ids": block_ids, "sample_ids": sample_ids, "positions": positions, "segments": segments,
                  "loss_weight": loss_weight, "is_image": is_image}
        loc = torch.where(is_image, cfg.image_time_loc, cfg.time_loc)
        scale = torch.where(is_image, cfg.image_time_scale, cfg.time_scale)
        flow, flow_logs = packed_flow_matching_loss(self.dit, z0, layout, loc, scale)
        logs.update(flow_logs)
        return loss + cfg.flow_weight * flow, logs


class JointStage(TextWindowStage):
    name = "prior"

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        section = dict(cfg.model)
        unknown = set(section) - {"vae", "dit", "image_vae", "init"}
        if unknown or not ("vae" in section or "init" in section):
            raise ConfigError(f"model: needs 'vae' (a stage-1 Text VAE folder) or 'init' (a pipeline folder to "
                              f"continue from), optionally 'image_vae' and 'dit'; got {sorted(section)}")
        init = Path(section["init"]) if "init" in section else None
        vae_dir = Path(section["vae"]) if "vae" in section else init
        vae_path = vae_dir / "text_vae" if (vae_dir / "text_vae").is_dir() else vae_dir
        self.vae = TextVAE.from_pretrained(vae_path)
        self.image_vae = None
        self.image_fingerprint = None
        if "image_vae" in section:
            from cola_mm.vae_image.model import ImageVAE

            self.image_vae = ImageVAE.from_pretrained(section["image_vae"])
            self.image_fingerprint = self.image_vae.fingerprint()
            if self.image_vae.config.token_dim != self.vae.config.d_latent:
                raise ConfigError(f"image VAE tokens have {self.image_vae.config.token_dim} channels (latent "
                                  f"channels × patch²) but the Text VAE's latents {self.vae.config.d_latent}; "
                                  f"set the image VAE's patch_size/latent_channels to match")
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
        dit = DiT(self.dit_config)
        if init is not None:
            init_dit = DiT.from_pretrained(init / "dit")
            # any attention backend; a RoPE-only DiT may gain absolute-position tables (zero: same function)
            grows = init_dit.config.position_embed == 0 < self.dit_config.position_embed
            same = self.dit_config.replace(attention=init_dit.config.attention,
                                           position_embed=0 if grows else self.dit_config.position_embed)
            if init_dit.config != same:
                raise ConfigError(f"model.init: the DiT in {init} has another config than model.dit")
            missing, unexpected = dit.load_state_dict(init_dit.state_dict(), strict=not grows)
            if unexpected or any(not k.startswith("position_tables.") for k in missing):
                raise ConfigError(f"model.init: the DiT in {init} does not fit model.dit "
                                  f"(missing {missing}, unexpected {unexpected})")
        self.multimodal = bool(cfg.data.jobs)
        if self.multimodal:
            from cola_mm.data.multimodal import JOBS, collate_rows

            needs_images = any(cfg.data.jobs.get(j, 0) > 0 for j in JOBS if j != "text_to_text")
            if needs_images and self.image_vae is None:
                raise ConfigError("data.jobs has image jobs: model.image_vae (a vae-image model folder) is needed")
            if needs_images and not cfg.data.pairs:
                raise ConfigError("data.jobs has image jobs: data.pairs (image–caption shards) is needed")
            if cfg.data.caption_tokens % self.dit_config.block_size:
                raise ConfigError(f"data.caption_tokens ({cfg.data.caption_tokens}) must be a multiple of the DiT "
                                  f"block ({self.dit_config.block_size})")
            self.collate = collate_rows
            self.module = MultimodalTrainModule(self.vae, dit, self.loss_config, self.tokenizer.mask_token_id,
                                                self.image_vae)
        else:
            self.module = JointTrainModule(self.vae, dit, self.loss_config, self.tokenizer.mask_token_id)

    # ---- multimodal data (text windows + packed image–caption samples)
    def _rows(self, text_sources, pair_sources, rank: int, world: int, epochs: int | None, shuffle: int):
        from cola_mm.data.multimodal import MultimodalRows
        from cola_mm.data.pairs import ImagePairs, PairSource

        cfg = self.cfg
        windows = self._windows(text_sources, rank, world, epochs, shuffle) if text_sources else None
        pairs = None
        if pair_sources and self.image_vae is not None:
            sources = [PairSource(s.shards, s.weight, s.warp_degrees, s.warp_scale) for s in pair_sources]
            pairs = ImagePairs(sources, self.image_vae.config.image_size,
                               seed=cfg.seed, shuffle_buffer=shuffle, epochs=epochs, rank=rank, world_size=world,
                               latent_fingerprint=self.image_fingerprint)  # latent caches must be this VAE's
        jobs = dict(cfg.data.jobs)
        if windows is None:
            jobs.pop("text_to_text", None)
        if pairs is None:
            jobs = {k: v for k, v in jobs.items() if k == "text_to_text"}
        return MultimodalRows(windows, pairs, self.tokenizer, jobs, cfg.data.seq_len,
                              self.image_vae.config.grid if self.image_vae else 1, self.dit_config.block_size,
                              cfg.data.caption_tokens, self.loss_config.cond_dropout, seed=cfg.seed,
                              caption_prompts=cfg.data.caption_prompts, caption_targets=cfg.data.caption_targets)

    def train_dataset(self, rank: int, world: int):
        if not self.multimodal:
            return super().train_dataset(rank, world)
        return self._rows(self.cfg.data.train, self.cfg.data.pairs, rank, world, None, self.cfg.data.shuffle_buffer)

    def val_batches(self, n: int):
        if not self.multimodal:
            return super().val_batches(n)
        if not (self.cfg.data.val or self.cfg.data.val_pairs):
            return []
        rows = self._rows(self.cfg.data.val, self.cfg.data.val_pairs, 0, 1, 1, 0)
        return first_batches(rows, self.cfg.batch_size, n, self.collate)

    def count_samples(self, batch) -> int:
        return batch["block_ids"].shape[0] if self.multimodal else batch["ids"].shape[0]

    def count_tokens(self, batch) -> int:
        return batch["block_ids"].numel() if self.multimodal else batch["ids"].numel()

    def param_groups(self, optim) -> list[dict[str, Any]]:
        """DiT at the base learning rate, the VAE at ``vae_lr_ratio`` times it, the DiT's position
        tables (if any) at ``position_lr_ratio`` times it."""
        groups = []
        dit = self.module.dit
        tables = list(dit.position_tables.parameters()) if dit.config.position_embed else []
        table_ids = {id(p) for p in tables}
        rest = [p for p in dit.parameters() if id(p) not in table_ids]
        for params, ratio in ((rest, 1.0), (tables, self.loss_config.position_lr_ratio),
                              (self.module.vae.parameters(), self.loss_config.vae_lr_ratio)):
            params = [p for p in params if p.requires_grad]
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
                loss, logs = module(**{k: v.to(device) for k, v in batch.items()})
                for k, v in {"loss": loss.item(), **logs}.items():
                    totals[k] = totals.get(k, 0.0) + v / len(batches)
        return totals

    # ---- export
    def model_card(self, vae: TextVAE, dit: DiT) -> str:
        """A short ``README.md`` for the exported folder: what it holds and what it was trained on
        (the app shows it in its sidebar)."""
        cfg = self.cfg

        def sources(items) -> str:
            total = sum(s.weight for s in items) or 1.0
            def warp(s) -> str:
                return f", warped ±{s.warp_degrees:g}° zoom ±{s.warp_scale:g}" if s.warps else ""

            return ", ".join(f"`{s.shards}` ({s.weight / total:.0%}{warp(s)})" for s in items)

        lines = [f"# Cola-MM pipeline (`{cfg.run_dir}`)", "",
                 f"- Text VAE: {vae.num_params() / 1e6:.1f}M params (d_model {vae.config.d_model}, "
                 f"{vae.config.d_latent} latent channels per token, vocabulary {vae.config.vocab_size})",
                 f"- DiT prior: {dit.num_params() / 1e6:.1f}M params ({dit.config.n_layers} layers, d_model "
                 f"{dit.config.d_model}, blocks of {dit.config.block_size} latents)"]
        if self.image_vae is not None:
            c = self.image_vae.config
            lines.append(f"- image VAE fingerprint {self.image_fingerprint} (latent caches made by "
                         f"`cola-mm data encode` must carry it)")
            lines.append(f"- image VAE: {self.image_vae.num_params() / 1e6:.2f}M params, {c.image_size} px → "
                         f"{c.n_tokens} tokens (frozen in this stage)")
        lines += ["", f"Trained for {cfg.max_steps} steps × {cfg.batch_size} rows of {cfg.data.seq_len} latents "
                  f"(stage `prior`, seed {cfg.seed}), text VAE {'frozen' if self.loss_config.freeze_vae else 'joint'}.",
                  f"- text: {sources(cfg.data.train)}"]
        if cfg.data.pairs:
            lines.append(f"- image–caption pairs: {sources(cfg.data.pairs)}; caption text: prompts "
                         f"{cfg.data.caption_prompts}, targets {cfg.data.caption_targets}")
        if cfg.data.jobs:
            lines.append("- jobs: " + ", ".join(f"{j} {w:g}" for j, w in cfg.data.jobs.items() if w > 0))
        return "\n".join(lines) + "\n"

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
        if self.image_vae is not None:
            self.image_vae.save_pretrained(out / "image_vae")
        (out / "README.md").write_text(self.model_card(vae, dit))
        B = self.dit_config.block_size
        save_pipeline_config(PipelineConfig(block_size=B, max_prompt_tokens=max(B, self.cfg.data.seq_len - B),
                                            trained_context=self.cfg.data.seq_len,
                                            caption_tokens=self.cfg.data.caption_tokens,
                                            jobs=tuple(j for j, w in self.cfg.data.jobs.items() if w > 0)
                                            or ("text_to_text",)), out)
