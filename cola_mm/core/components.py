"""Saving and loading one model component as ``config.json`` + ``model.safetensors``.

This is the transformers/diffusers ``save_pretrained`` convention: a folder per component, a
JSON config that names the component class and a format version, and the weights as
safetensors. Loading never unpickles (training resume does: see `--resume`). Every failure (missing folder or file, corrupt weights,
a config of another class, weights that do not fit the config) is a :class:`CheckpointError`
with one clear line.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cola_mm.core.config import Config, ConfigError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
C = TypeVar("C", bound=Config)


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded or written: reported to the user as one line."""


def _umask() -> int:
    """The process's umask, read without changing it where Linux allows (``os.umask`` sets it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_as_usual(folder: str | os.PathLike, folder_too: bool = True, recursive: bool = False) -> None:
    """Give the files in ``folder`` (and with ``folder_too`` the folder itself) the permissions of
    an ordinary new file and folder (0o666 / 0o777 less the umask); ``recursive``: subfolders
    too. safetensors writes weights 0o600 and ``tempfile.mkdtemp`` folders are 0o700, so a saved
    model would otherwise be unreadable to another user (a service account serving it, a
    container with another UID)."""
    mask = _umask()
    folder = Path(folder)
    for child in folder.iterdir():
        if child.is_symlink():
            continue
        if child.is_file():
            child.chmod(0o666 & ~mask)
        elif recursive and child.is_dir():
            share_as_usual(child, True, True)
    if folder_too:
        folder.chmod(0o777 & ~mask)


def save_component(path: str | os.PathLike, kind: str, config: Config,
                   state_dict: Mapping[str, torch.Tensor], extra: Mapping[str, Any] | None = None) -> Path:
    """Write ``path/config.json`` and ``path/model.safetensors`` atomically (a temporary
    folder beside ``path`` renamed into place, so an existing component is never half-replaced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        meta = {"_class": kind, "_format_version": FORMAT_VERSION, **(extra or {}), **config.to_dict()}
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt", "class": kind})
        share_as_usual(tmp)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_component_config(path: str | os.PathLike, kind: str, config_cls: type[C]) -> tuple[C, dict]:
    """The config of the component at ``path`` and the extra (underscore-free, non-config) keys."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder not found: {path}")
    cfg_file = path / CONFIG_NAME
    if not cfg_file.is_file():
        raise CheckpointError(f"{path} has no {CONFIG_NAME}: not a {kind} checkpoint")
    raw = read_json(cfg_file)
    found = raw.pop("_class", None)
    if found != kind:
        raise CheckpointError(f"{path} holds a {found or 'unknown'} component, expected {kind}")
    version = raw.pop("_format_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise CheckpointError(f"{cfg_file}: _format_version must be an integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} was written by a newer cola-mm (format {version})")
    fields = set(config_cls.__dataclass_fields__)
    extra = {k: raw.pop(k) for k in list(raw) if k not in fields}
    try:
        config = config_cls.from_dict(raw, where=f"{cfg_file}")
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    return config, extra


def read_json(path: str | os.PathLike) -> dict:
    """A JSON object from ``path``, or a one-line :class:`CheckpointError`."""
    path = Path(path)
    try:
        raw = json.loads(path.read_bytes().decode("utf-8"))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is not valid JSON ({err.msg})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not valid JSON (not UTF-8 text)") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read ({err.strerror or err})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(raw).__name__}")
    return raw


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{Path(path)} has no {WEIGHTS_NAME}")
    try:
        return load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights} is corrupt or not a safetensors file ({err})") from None


def load_into(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], where: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error on any mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        raise CheckpointError(f"{where}: weights do not match the model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    for k, v in state_dict.items():
        if own[k].shape != v.shape:
            raise CheckpointError(f"{where}: weight {k} has shape {tuple(v.shape)}, "
                                  f"the config needs {tuple(own[k].shape)}")
        if own[k].is_floating_point() != v.is_floating_point() or (v.is_floating_point() and not
                                                                   torch.isfinite(v).all()):
            what = f"dtype {v.dtype}" if own[k].is_floating_point() != v.is_floating_point() else "non-finite values"
            raise CheckpointError(f"{where}: weight {k} has {what} (the model needs finite {own[k].dtype})")
    module.load_state_dict(state_dict, strict=True)


class PretrainedMixin:
    """``save_pretrained`` / ``from_pretrained`` for an ``nn.Module`` built from its own config.

    The class sets ``KIND`` (the name written into config.json) and ``CONFIG_CLASS``; the
    instance has ``self.config``.
    """

    KIND: str
    CONFIG_CLASS: type[Config]

    def save_pretrained(self, path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor] | None = None) -> None:
        save_component(path, self.KIND, self.config, state_dict if state_dict is not None else self.state_dict())

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, map_location: str | torch.device = "cpu"):
        config, _ = read_component_config(path, cls.KIND, cls.CONFIG_CLASS)
        model = cls(config)
        load_into(model, load_weights(path), str(path))
        return model.to(map_location)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
