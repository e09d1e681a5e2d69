"""Training checkpoints: atomic step folders, keep-last-K, and finding the latest complete one.

    run_dir/checkpoints/step_000500/
        state/                     accelerator.save_state: model, optimiser, RNG (per process)
        components/<name>/         config.json + model.safetensors per component (+ tokenizer/)
        loader_rank<r>.json        each process's data-loader position
        trainer_state.json         step, scheduler, format version — written last
        ema.safetensors            EMA weights, when enabled

A checkpoint is written into ``step_XXXXXX.tmp`` and renamed once every process has finished,
so a folder without the ``.tmp`` suffix and with ``trainer_state.json`` is complete. A hard
kill mid-write leaves only a ``.tmp`` folder, which ``--resume`` ignores and the next save
removes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

STEP_RE = re.compile(r"^step_(\d{6,})$")
TRAINER_STATE = "trainer_state.json"
STATE_VERSION = 1


def checkpoint_dir(run_dir: str | os.PathLike, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def is_complete(path: Path) -> bool:
    return STEP_RE.match(path.name) is not None and (path / TRAINER_STATE).is_file()


def list_complete(run_dir: str | os.PathLike) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and is_complete(p)]
    return sorted(found, key=lambda p: int(STEP_RE.match(p.name).group(1)))


def latest_complete(run_dir: str | os.PathLike) -> Path | None:
    done = list_complete(run_dir)
    return done[-1] if done else None


def begin(run_dir: str | os.PathLike, step: int) -> Path:
    """The temporary folder a checkpoint for ``step`` is written into (main process only)."""
    tmp = checkpoint_dir(run_dir, step).with_suffix(".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def commit(tmp: Path, trainer_state: dict[str, Any], keep_last: int) -> Path:
    """Write the trainer state last, rename ``tmp`` into place, drop old checkpoints."""
    (tmp / TRAINER_STATE).write_text(json.dumps({"version": STATE_VERSION, **trainer_state}, indent=2))
    final = tmp.with_suffix("")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in list_complete(final.parent.parent)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in final.parent.glob("*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def read_trainer_state(path: Path) -> dict[str, Any]:
    state = json.loads((path / TRAINER_STATE).read_text())
    if state.get("version", 0) > STATE_VERSION:
        raise ValueError(f"{path} was written by a newer cola-mm (state version {state['version']})")
    return state
