"""The run config of ``cola-mm train``: YAML → these frozen dataclasses (+ ``--set`` overrides).

    stage: vae-text                # which stage supplies the model and the loss
    run_dir: runs/vae_text_small   # checkpoints, metrics.jsonl, loss_curve.png
    model: {preset: small}         # the stage's model preset + overrides
    loss: {beta: 0.001}            # the stage's loss config
    data:
      train: [{shards: datasets/text/train, weight: 3}, {shards: datasets/shapes/train, weight: 1}]
      val:   [{shards: datasets/text/val}]
      tokenizer: datasets/tokenizer
      seq_len: 128
    optim: {lr: 0.001, warmup_steps: 100}
    batch_size: 32
    max_steps: 3000

The model and loss sections are plain mappings here; the stage turns them into its own typed
configs, so their keys are checked there (with the list of valid keys on error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cola_mm.core.config import Config, apply_overrides, check, load_yaml

PRECISIONS = ("auto", "fp32", "bf16", "fastest")


@dataclass(frozen=True)
class SourceConfig(Config):
    shards: str  # directory, glob, brace pattern or '::'-joined list of shards
    weight: float = 1.0  # relative mixing weight
    # data.pairs only: each training image rotated by ~U(±warp_degrees) and zoomed by ~U(1 ± warp_scale);
    # for images whose caption does not name a position or size (digits), never for shapes
    warp_degrees: float = 0.0
    warp_scale: float = 0.0

    def __post_init__(self):
        check(self.weight > 0, f"source weight must be > 0, got {self.weight}")
        check(0 <= self.warp_degrees <= 45, f"warp_degrees must be in [0, 45], got {self.warp_degrees}")
        check(0 <= self.warp_scale < 0.5, f"warp_scale must be in [0, 0.5), got {self.warp_scale}")

    @property
    def warps(self) -> bool:
        return self.warp_degrees > 0 or self.warp_scale > 0


@dataclass(frozen=True)
class DataConfig(Config):
    train: tuple[SourceConfig, ...] = ()  # training mixture (text windows); may be empty when data.pairs is given
    val: tuple[SourceConfig, ...] = ()  # held-out data for periodic validation
    tokenizer: str = "datasets/tokenizer"  # tokenizer folder (ours or any HF tokenizer)
    seq_len: int = 128  # tokens per training window
    shuffle_buffer: int = 1000  # samples in each source's shuffle buffer
    num_workers: int = 0  # DataLoader workers per process
    # multimodal prior (stage prior with an image VAE): image–caption shards and job mix
    pairs: tuple[SourceConfig, ...] = ()  # image–caption shards for text_to_image / image_to_text
    val_pairs: tuple[SourceConfig, ...] = ()  # held-out image–caption shards
    jobs: dict = field(default_factory=dict)  # {text_to_text: 1, text_to_image: 1, image_to_text: 1} ratios
    caption_tokens: int = 32  # a caption segment's most tokens (<bos> … <eos> <pad>…)
    # caption text per role: "original" (the shard's txt) or "canonical" (one phrasing per image,
    # rebuilt from the shard's ground-truth json; bundled shapes/digits only, see data/captions.py)
    caption_prompts: str = "original"  # text→image prompts
    caption_targets: str = "original"  # image→text targets

    def __post_init__(self):
        check(len(self.train) > 0 or len(self.pairs) > 0, "data.train (or, for image jobs, data.pairs) needs at "
                                                           "least one source")
        check(self.seq_len >= 2, f"data.seq_len must be >= 2, got {self.seq_len}")
        check(self.num_workers >= 0, "data.num_workers must be >= 0")
        check(self.caption_tokens >= 3, "data.caption_tokens must be >= 3")
        check(not any(s.warps for s in self.train + self.val + self.val_pairs),
              "warp_degrees / warp_scale augment training images: set them on data.pairs sources only")
        for name in ("caption_prompts", "caption_targets"):
            check(getattr(self, name) in ("original", "canonical"),
                  f"data.{name} must be 'original' or 'canonical', got {getattr(self, name)!r}")


@dataclass(frozen=True)
class OptimConfig(Config):
    lr: float = 3e-4  # peak learning rate (AdamW)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.01  # applied to matrices only, not norms/biases
    warmup_steps: int = 100  # linear warm-up, then cosine decay to min_lr_ratio·lr
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # max global grad norm (0 = off)
    grad_accum: int = 1  # micro-batches per optimiser step

    def __post_init__(self):
        check(self.lr > 0, f"optim.lr must be > 0, got {self.lr}")
        check(self.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
        check(0 <= self.min_lr_ratio <= 1, "optim.min_lr_ratio must be in [0, 1]")
        check(self.grad_clip >= 0, "optim.grad_clip must be >= 0")
        check(self.grad_accum >= 1, "optim.grad_accum must be >= 1")


@dataclass(frozen=True)
class TrainConfig(Config):
    stage: str  # vae-text | vae-image | prior
    data: DataConfig
    run_dir: str = "runs/default"  # where checkpoints and logs go
    seed: int = 0
    batch_size: int = 16  # sequences per process per micro-batch
    max_steps: int = 1000  # optimiser steps
    log_every: int = 10  # steps between metric lines
    val_every: int = 0  # steps between validations (0 = only at the end)
    val_batches: int = 8  # batches per validation
    ckpt_every: int = 500  # steps between checkpoints (and one at the end)
    keep_last: int = 3  # complete checkpoints kept
    ema_decay: float = 0.0  # EMA of weights (0 = off); components are saved from the EMA
    precision: str = "auto"  # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fastest (bf16 where it is fast: a GPU or a CPU with bf16 matrix units; else fp32)
    deepspeed: str | None = None  # DeepSpeed JSON config (configs/deepspeed/zero2.json …)
    model: dict = field(default_factory=dict)  # the stage's model: {preset: …, **overrides}
    loss: dict = field(default_factory=dict)  # the stage's loss config
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self):
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        check(self.log_every >= 1 and self.ckpt_every >= 1, "log_every and ckpt_every must be >= 1")
        check(self.val_every >= 0 and self.val_batches >= 1, "val_every >= 0, val_batches >= 1")
        check(self.keep_last >= 1, "keep_last must be >= 1")
        check(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        check(self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        check(self.deepspeed is None or Path(self.deepspeed).is_file(),
              f"DeepSpeed config not found: {self.deepspeed}")


def load_train_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    raw = apply_overrides(load_yaml(path), overrides or [])
    return TrainConfig.from_dict(raw, where=Path(path).name)
