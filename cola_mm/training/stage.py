"""What a training stage supplies to the generic loop (:mod:`cola_mm.training.loop`).

The loop owns devices, the optimiser, accumulation, logging, checkpoints and resume; a stage
owns the model, its loss, its data and what it exports. :class:`Stage` writes down every member
the loop uses, and :data:`cola_mm.training.stages.STAGES` maps a config's ``stage:`` name to
its class.

Shared pieces live here so each stage does not repeat them: :func:`first_batches` (fixed
validation batches), :func:`shift_scale` (the latent normalisation stored in a VAE's config)
and :class:`TextWindowStage` (the data half of a text stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, runtime_checkable

import torch
from torch import nn

from cola_mm.data.windows import Source, TokenWindows, collate_windows

Batch = dict[str, Any]


@runtime_checkable
class Stage(Protocol):
    """The members :func:`cola_mm.training.loop.train` calls, in the order it calls them.

    A stage is built from the run config (``Stage(cfg)``); ``param_groups(optim)`` is optional
    (default: weight decay on matrices, none on norms and biases).
    """

    name: str  # the config's ``stage:`` value
    module: nn.Module  # ``module(**batch) -> (loss, logs)``; the loss runs inside forward (DDP/ZeRO hooks)
    collate: Callable[[list[dict]], Batch]  # dataset items → one batch

    def train_dataset(self, rank: int, world: int) -> torch.utils.data.IterableDataset:
        """Endless, resumable (``state_dict``/``load_state_dict``) training items for one process."""

    def val_batches(self, n: int) -> list[Batch]:
        """The first ``n`` held-out batches, identical on every process ([] when none)."""

    def count_samples(self, batch: Batch) -> int:
        """Samples in a batch (throughput logging)."""

    def count_tokens(self, batch: Batch) -> int:
        """Tokens (or latents, or images) in a batch (throughput logging)."""

    def validate(self, module: nn.Module, batches: list[Batch], device: torch.device) -> dict[str, float]:
        """Held-out figures of the unwrapped module; must include ``loss``."""

    def save_components(self, state_dict: dict[str, torch.Tensor], out: Path) -> None:
        """Write the trained components (``config.json`` + ``model.safetensors`` each) under ``out``."""


def first_batches(items: Iterable[dict], batch_size: int, n: int, collate: Callable[[list[dict]], Batch]) -> list[Batch]:
    """Up to ``n`` batches of ``batch_size`` items from the start of ``items`` (the last may be short)."""
    items = iter(items)
    batches = []
    for _ in range(n):
        chunk = [it for _, it in zip(range(batch_size), items)]
        if not chunk:
            break
        batches.append(collate(chunk))
    return batches


def shift_scale(zs: list[torch.Tensor], source: str) -> tuple[float, float]:
    """(shift, scale) normalising the pooled samples ``zs`` to zero mean, unit variance
    ((0, 1) when there are none); non-finite samples from ``source`` are an error."""
    if not zs:
        return 0.0, 1.0
    z = torch.cat(zs)
    if not torch.isfinite(z).all():
        raise FloatingPointError(f"{source} gives non-finite latents")
    return z.mean().item(), 1.0 / max(z.std().item(), 1e-6)


class TextWindowStage:
    """The data half of a text training stage (``vae-text``, ``prior``): resumable training
    windows split by process, fixed validation batches, and the loop's counters.

    Subclasses set ``self.cfg`` (a run config with ``data``, ``seed``, ``batch_size``) and
    ``self.tokenizer`` before these are used.
    """

    collate = staticmethod(collate_windows)

    def _windows(self, sources, rank: int, world: int, epochs: int | None, shuffle: int) -> TokenWindows:
        return TokenWindows([Source(s.shards, s.weight) for s in sources], self.tokenizer,
                            self.cfg.data.seq_len, seed=self.cfg.seed, shuffle_buffer=shuffle,
                            epochs=epochs, rank=rank, world_size=world)

    def train_dataset(self, rank: int, world: int) -> TokenWindows:
        if not self.cfg.data.train:
            from cola_mm.core.config import ConfigError

            raise ConfigError(f"data.train: stage {self.cfg.stage} trains on text windows; give at least one source")
        return self._windows(self.cfg.data.train, rank, world, None, self.cfg.data.shuffle_buffer)

    def val_batches(self, n: int) -> list[Batch]:
        """The first ``n`` batches of the validation sources (identical on every process)."""
        if not self.cfg.data.val:
            return []
        return first_batches(self._windows(self.cfg.data.val, 0, 1, 1, 0), self.cfg.batch_size, n, collate_windows)

    @staticmethod
    def count_samples(batch) -> int:
        return batch["ids"].shape[0]

    @staticmethod
    def count_tokens(batch) -> int:
        return batch["ids"].numel()
