"""One training loop for every stage (``cola-mm train``).

A stage (``vae-text`` …, see :data:`cola_mm.training.stages.STAGES` and the contract in
:mod:`cola_mm.training.stage`) supplies a ``module`` whose ``forward(**batch)``
returns ``(loss, logs)``, a resumable training dataset, validation batches and a way to save
its components. This loop owns everything else: the ``accelerate`` Accelerator (one process,
several gloo/NCCL processes, or DeepSpeed ZeRO-2/3 through accelerate's plugin), AdamW with
linear warm-up + cosine decay, gradient clipping and accumulation, bf16 autocast on GPU
(fp32 on CPU), optional EMA, a tqdm bar, JSONL metrics (+ TensorBoard when installed),
periodic validation, a loss-curve PNG, atomic checkpoints every N steps with exact resume,
and a clean stop on a NaN/inf loss.

    cola-mm train --config configs/vae_text_small.yaml [--set optim.lr=1e-3 …] [--resume]
    ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2 -m cola_mm.cli train …
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import resource
import shutil
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from cola_mm.core.components import share_as_usual
from cola_mm.core.config import ConfigError
from cola_mm.training import checkpoint as ckpt
from cola_mm.training.config import TrainConfig
from cola_mm.training.stage import Stage

METRICS_FILE = "metrics.jsonl"
KILL_ENV = "COLA_MM_KILL_AT_STEP"  # test hook: SIGKILL this process after that step
KILL_IN_CHECKPOINT_ENV = "COLA_MM_KILL_IN_CHECKPOINT"  # test hook: SIGKILL the main process mid-write of that step's checkpoint


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


# --------------------------------------------------------------------------- building blocks


def build_stage(cfg: TrainConfig) -> Stage:
    from cola_mm.training.stages import STAGES  # every stage's model code: imported when a run starts

    if cfg.stage not in STAGES:
        raise ConfigError(f"unknown stage {cfg.stage!r}; valid stages: {', '.join(STAGES)}")
    return STAGES[cfg.stage](cfg)


def cpu_has_bf16_matmul() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AMX tiles or AVX-512 BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def mixed_precision(cfg: TrainConfig, on_cpu: bool) -> str:
    """accelerate's ``mixed_precision`` for ``cfg.precision``: "bf16" (autocast) or "no" (fp32)."""
    if cfg.precision == "fastest":
        return "bf16" if not on_cpu or cpu_has_bf16_matmul() else "no"
    return {"auto": "no" if on_cpu else "bf16", "fp32": "no", "bf16": "bf16"}[cfg.precision]


def precision_hint(cfg: TrainConfig, on_cpu: bool) -> str | None:
    """A one-line hint where the precision asked for is not the fast one on this CPU: ``auto``
    (fp32) on a CPU that has bf16 matrix units, or ``bf16`` on one that has none (where autocast
    emulates bf16 and runs several times slower than fp32). fp32 stays ``auto``'s CPU choice, so
    that earlier CPU runs repeat bit for bit; ``fastest`` picks by the CPU and says nothing."""
    if not on_cpu or cfg.precision not in ("auto", "bf16"):
        return None
    units = cpu_has_bf16_matmul()
    if cfg.precision == "auto" and units:
        return ("this CPU has bf16 matrix units: --set precision=bf16 (or fastest) trained the demo prior "
                "1.8x faster with the same losses (docs/training.md, 'Training on a CPU')")
    if cfg.precision == "bf16" and not units:
        return ("warning: this CPU has no bf16 matrix units (AMX, AVX-512 BF16), so bf16 autocast is emulated: "
                "it trained the demo prior 23x slower than fp32 on such a CPU; --set precision=fp32 "
                "(or fastest) trains faster here (docs/training.md, 'Training on a CPU')")
    return None


def make_accelerator(cfg: TrainConfig):
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    on_cpu = not torch.cuda.is_available() or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true")
    precision = mixed_precision(cfg, on_cpu)
    plugin = None
    if cfg.deepspeed and not any(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK")):
        # one plain process (no launcher): give DeepSpeed a world of one on loopback, or it goes
        # looking for MPI
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    if cfg.deepspeed:
        ds = json.loads(Path(cfg.deepspeed).read_text())
        world = int(os.environ.get("WORLD_SIZE", 1))
        ds["train_micro_batch_size_per_gpu"] = cfg.batch_size
        ds["gradient_accumulation_steps"] = cfg.optim.grad_accum
        ds["train_batch_size"] = cfg.batch_size * cfg.optim.grad_accum * world
        ds["gradient_clipping"] = cfg.optim.grad_clip
        plugin = DeepSpeedPlugin(hf_ds_config=ds)
    multi = int(os.environ.get("WORLD_SIZE", 1)) > 1
    handlers = [InitProcessGroupKwargs(backend="gloo")] if on_cpu and (multi or cfg.deepspeed) else []
    log_with = "tensorboard" if importlib.util.find_spec("tensorboard") else None
    return Accelerator(mixed_precision=precision, gradient_accumulation_steps=cfg.optim.grad_accum,
                       deepspeed_plugin=plugin, kwargs_handlers=handlers, log_with=log_with,
                       project_dir=cfg.run_dir)


def param_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (linear/embedding weights), none on norms and biases."""
    decay = [p for p in module.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in module.parameters() if p.requires_grad and p.ndim < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """LR multiplier: linear warm-up over ``warmup`` steps, cosine to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a module's floating-point parameters (fp32 copies).

    With ``step`` (the number of this update, from 1), the decay warms up as ``min(decay,
    (step − 1) / step)``: the average is the plain mean of the weights so far until that reaches
    ``decay`` (step 1 / (1 − decay)), so nothing of the initial weights is left in it. A constant
    decay from the start keeps ``decay**steps`` of the initial, untrained weights: 12 % after
    2,100 steps at 0.999, which spoilt a GPU run's images (docs/experiments.md §12)."""

    def __init__(self, module: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in module.state_dict().items()
                       if v.is_floating_point()}

    def decay_at(self, step: int | None) -> float:
        return self.decay if step is None else min(self.decay, (step - 1) / step)

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int | None = None) -> None:
        decay = self.decay_at(step)
        for k, v in module.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach().float(), 1 - decay)

    def state_dict(self, like: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k: self.shadow[k].to(v.dtype) if k in self.shadow else v for k, v in like.items()}


class MetricsLog:
    """``metrics.jsonl``: one JSON line per logged step; truncated to the resumed step."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def truncate(self, step: int) -> None:
        if self.enabled and self.path.is_file():
            keep = [line for line in self.path.read_text().splitlines()
                    if line.strip() and json.loads(line)["step"] <= step]
            self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    def read(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


def plot_loss_curve(records: list[dict], out: Path) -> None:
    """Training loss (and validation metrics when present) against step, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    if not train:
        return
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1.2)
    if val:
        ax.plot([r["step"] for r in val], [r["val_loss"] for r in val], "o-", label="val loss", ms=3)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(out.parent.name)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out)


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


# --------------------------------------------------------------------------- the loop


def train(cfg: TrainConfig, resume: bool | str = False, progress: bool = True) -> Path:
    """Run (or resume) a training run; returns the folder of the final components.

    ``resume="auto"`` continues from the latest complete checkpoint when there is one and
    starts fresh otherwise (recipes that may be interrupted and run again)."""
    from accelerate.utils import set_seed
    from torchdata.stateful_dataloader import StatefulDataLoader

    run_dir = Path(cfg.run_dir)
    existing = ckpt.latest_complete(run_dir)
    if resume == "auto":
        resume = existing is not None
    if existing is not None and not resume:
        raise ConfigError(f"{run_dir} already holds checkpoint {existing.name}; pass --resume to "
                          f"continue it or choose another run_dir (nothing was overwritten)")
    if resume and existing is None:
        raise ConfigError(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}")
    if resume:
        check_same_model(run_dir, existing, cfg)

    accelerator = make_accelerator(cfg)
    main = accelerator.is_main_process
    hint = precision_hint(cfg, accelerator.device.type == "cpu")
    if hint:
        accelerator.print(hint)
    zero3 = cfg.deepspeed is not None and accelerator.state.deepspeed_plugin.zero_stage == 3
    if zero3 and cfg.ema_decay > 0:
        raise ConfigError("ema_decay is not supported with ZeRO-3 (partitioned weights); use ZeRO-2")
    set_seed(cfg.seed)  # same initial weights on every process
    stage = build_stage(cfg)
    module = stage.module
    groups = stage.param_groups(cfg.optim) if hasattr(stage, "param_groups") else \
        param_groups(module, cfg.optim.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, eps=cfg.optim.eps)
    model, optimizer = accelerator.prepare(module, optimizer)
    set_seed(cfg.seed + accelerator.process_index)  # same init above; independent noise per process
    # built after prepare, so the fp32 shadow lives on the model's device
    ema = EMA(accelerator.unwrap_model(model), cfg.ema_decay) if cfg.ema_decay > 0 else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, cfg.optim.warmup_steps, cfg.max_steps, cfg.optim.min_lr_ratio))
    dataset = stage.train_dataset(accelerator.process_index, accelerator.num_processes)
    # its own generator: creating a loader iterator must not draw from the global RNG that
    # accelerate restores on resume
    loader = StatefulDataLoader(dataset, batch_size=cfg.batch_size, num_workers=cfg.data.num_workers,
                                collate_fn=stage.collate, generator=torch.Generator().manual_seed(cfg.seed))
    metrics = MetricsLog(run_dir / METRICS_FILE, enabled=main)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))

    step = 0
    if resume:
        state = ckpt.read_trainer_state(existing)
        saved = state.get("num_processes", accelerator.num_processes)
        if saved != accelerator.num_processes:
            raise ConfigError(f"{existing} was written by {saved} process(es), this run has "
                              f"{accelerator.num_processes}: resume with the same number (each process resumes "
                              f"its own shard position{' and ZeRO partition' if cfg.deepspeed else ''})")
        accelerator.load_state(str(existing / "state"))
        loader.load_state_dict(json.loads((existing / f"loader_rank{accelerator.process_index}.json").read_text()))
        scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            from safetensors.torch import load_file
            ema.shadow = load_file(str(existing / "ema.safetensors"), device=str(accelerator.device))
        step = state["step"]
        metrics.truncate(step)
        accelerator.print(f"resumed from {existing} at step {step}")

    if accelerator.log_with:
        accelerator.init_trackers("tb", config={"stage": cfg.stage, "max_steps": cfg.max_steps})
    val_batches = stage.val_batches(cfg.val_batches)
    kill_at = int(os.environ.get(KILL_ENV, 0))
    bar = tqdm(total=cfg.max_steps, initial=step, desc=f"train {cfg.stage}", unit="step",
               disable=not (main and progress), dynamic_ncols=True)
    model.train()
    data = iter(loader)
    window = {"t": time.perf_counter(), "samples": 0, "tokens": 0}
    while step < cfg.max_steps:
        logs = defaultdict(float)
        for _ in range(cfg.optim.grad_accum):
            batch = _to_device(next(data), accelerator.device)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss, parts = model(**batch)
                _check_finite(accelerator, loss, step, run_dir)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.optim.grad_clip > 0:
                    norm = accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
                    if norm is not None:
                        logs["grad_norm"] += float(norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            logs["loss"] += loss.item() / cfg.optim.grad_accum
            for k, v in parts.items():
                logs[k] += v / cfg.optim.grad_accum
            window["samples"] += stage.count_samples(batch) * accelerator.num_processes
            window["tokens"] += stage.count_tokens(batch) * accelerator.num_processes
        scheduler.step()
        step += 1
        if ema is not None:
            ema.update(accelerator.unwrap_model(model), step)
        bar.update(1)

        if step % cfg.log_every == 0 or step == cfg.max_steps:
            record = _reduce_logs(accelerator, logs)
            elapsed = time.perf_counter() - window["t"]
            record.update(step=step, lr=scheduler.get_last_lr()[0],
                          samples_per_s=window["samples"] / elapsed, tokens_per_s=window["tokens"] / elapsed,
                          peak_mem_mb=peak_memory_mb())
            window = {"t": time.perf_counter(), "samples": 0, "tokens": 0}
            metrics.write(record)
            if accelerator.log_with:
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
            bar.set_postfix(loss=f"{record['loss']:.4f}", samples_s=f"{record['samples_per_s']:.1f}",
                            tok_s=f"{record['tokens_per_s']:.0f}")
        if (cfg.val_every and step % cfg.val_every == 0) or step == cfg.max_steps:
            if val_batches:
                model.eval()
                with torch.random.fork_rng(devices=_rng_devices(accelerator)):  # validation must not shift training RNG
                    val = stage.validate(accelerator.unwrap_model(model), val_batches, accelerator.device)
                model.train()
                metrics.write({"step": step, **{f"val_{k}": v for k, v in val.items()}})
                accelerator.print(f"step {step}: " + ", ".join(f"val_{k}={v:.4g}" for k, v in val.items()))
        if step % cfg.ckpt_every == 0 or step == cfg.max_steps:
            path = _save_checkpoint(accelerator, cfg, stage, model, ema, loader, scheduler, step)
            if main:
                plot_loss_curve(metrics.read(), run_dir / "loss_curve.png")
                if step == cfg.max_steps:
                    _export_model(path / "components", run_dir / "model")
        if kill_at and step == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    bar.close()
    accelerator.wait_for_everyone()
    if accelerator.log_with:
        accelerator.end_training()
    return run_dir / "model"


def _rng_devices(accelerator) -> list:
    """Devices whose RNG ``fork_rng`` must save and restore (the GPU's too, when on one)."""
    return [accelerator.device] if accelerator.device.type == "cuda" else []


def _check_finite(accelerator, loss: torch.Tensor, step: int, run_dir: Path) -> None:
    bad = torch.tensor(0.0 if torch.isfinite(loss.detach()).all() else 1.0, device=accelerator.device)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.item() > 0:
        last = ckpt.latest_complete(run_dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        raise TrainingDiverged(f"loss is NaN/inf at step {step + 1}; stopped ({kept}). "
                               f"Lower optim.lr or raise optim.warmup_steps.")


def _reduce_logs(accelerator, logs: dict[str, float]) -> dict[str, float]:
    keys = sorted(logs)
    values = torch.tensor([logs[k] for k in keys], dtype=torch.float64, device=accelerator.device)
    if accelerator.num_processes > 1:
        values = accelerator.reduce(values, reduction="mean")
    return dict(zip(keys, values.tolist()))


def check_same_model(run_dir: Path, existing: Path, cfg: TrainConfig) -> None:
    """Resume only the model a run was trained with: a checkpoint of another stage (another model
    family) or another model section is a one-line error naming both (before any state loads)."""
    saved_stage = ckpt.read_trainer_state(existing).get("stage")
    if saved_stage is not None and saved_stage != cfg.stage:
        raise ConfigError(f"{existing} is a checkpoint of stage {saved_stage!r}, this config trains stage "
                          f"{cfg.stage!r}: resume it with a {saved_stage} config or choose another run_dir")
    saved_file = run_dir / "config.json"
    if saved_file.is_file():
        try:
            saved_model = json.loads(saved_file.read_text()).get("model")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            return
        if saved_model is not None and saved_model != cfg.to_dict().get("model"):
            raise ConfigError(f"{run_dir} was trained with model {json.dumps(saved_model, sort_keys=True)}, this "
                              f"config has model {json.dumps(cfg.to_dict().get('model'), sort_keys=True)}: "
                              f"resume with the same model section or choose another run_dir")


def _save_checkpoint(accelerator, cfg, stage, model, ema, loader, scheduler, step: int) -> Path:
    main = accelerator.is_main_process
    tmp = ckpt.checkpoint_dir(cfg.run_dir, step).with_suffix(".tmp")
    if main:
        ckpt.begin(cfg.run_dir, step)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp / "state"))
    if main and os.environ.get(KILL_IN_CHECKPOINT_ENV) == str(step):
        os.kill(os.getpid(), signal.SIGKILL)  # test hook: the state is half written, nothing committed
    (tmp / f"loader_rank{accelerator.process_index}.json").write_text(json.dumps(loader.state_dict()))
    full = accelerator.get_state_dict(model)  # gathers partitioned (ZeRO-3) weights; every rank
    problem = ""
    if main:
        weights = ema.state_dict(full) if ema is not None else full
        bad = [k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        try:
            if bad:
                raise FloatingPointError(f"non-finite weights ({bad[0]} …)")
            with torch.random.fork_rng(devices=_rng_devices(accelerator)):  # the export copy must not shift RNG
                stage.save_components(weights, tmp / "components")
        except FloatingPointError as err:
            problem = str(err)
        if ema is not None and not problem:
            from safetensors.torch import save_file
            save_file({k: v.contiguous() for k, v in ema.shadow.items()}, str(tmp / "ema.safetensors"))
    failed = torch.tensor(1.0 if problem else 0.0, device=accelerator.device)
    if accelerator.num_processes > 1:
        failed = accelerator.reduce(failed, reduction="sum")
    if failed.item() > 0:  # a diverged model is never committed as a checkpoint
        last = ckpt.latest_complete(cfg.run_dir)
        kept = f"the last good checkpoint is {last}" if last else "no checkpoint was written yet"
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingDiverged(f"the model diverged by step {step} ({problem or 'on another process'}); "
                               f"stopped ({kept}). Lower optim.lr or raise optim.warmup_steps.")
    accelerator.wait_for_everyone()
    final = tmp.with_suffix("")
    if main:
        ckpt.commit(tmp, {"step": step, "scheduler": scheduler.state_dict(), "stage": cfg.stage,
                          "num_processes": accelerator.num_processes}, cfg.keep_last)
    accelerator.wait_for_everyone()
    return final


def _export_model(components: Path, out: Path) -> None:
    """Copy the final components to ``run_dir/model`` (atomically) for ``--ckpt``."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(components, tmp)
    share_as_usual(tmp, recursive=True)  # weights written 0o600 (safetensors, transformers) become readable
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
