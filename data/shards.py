"""Writing WebDataset shards in the img2dataset convention, and the per-dataset manifest.

A shard is a plain POSIX tar named ``000000.tar``, ``000001.tar`` … whose members are grouped
into samples by key: ``{key}.txt`` (UTF-8 text or caption), ``{key}.png`` / ``{key}.jpg``
(image) and ``{key}.json`` (metadata). This is what img2dataset writes and what
``webdataset.WebDataset`` reads, so shards made here load with plain webdataset and real
LAION/CC3M/COCO shards load with :mod:`cola_mm.data.loader` unchanged.

A dataset root holds one folder per split and a ``manifest.json``::

    DIR/manifest.json            {"dataset": ..., "generator_version": ..., "splits": {...}}
    DIR/train/000000.tar …
    DIR/val/000000.tar …

Writes are atomic per shard (written to ``.tmp`` then renamed), so a crash never leaves a
half-written shard that looks complete.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import time
from pathlib import Path
from typing import Any, Mapping

MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1


class DataError(ValueError):
    """Bad data input (missing path, empty corpus, no shards…): reported as a one-line error."""


def encode_field(ext: str, value: Any) -> bytes:
    """Serialise one sample field for the tar member ``{key}.{ext}``."""
    if isinstance(value, bytes):
        return value
    if ext in ("txt", "text", "caption"):
        return str(value).encode("utf-8")
    if ext == "json":
        return json.dumps(value, ensure_ascii=False, sort_keys=True).encode("utf-8")
    if ext in ("png", "jpg", "jpeg", "webp"):
        # a PIL image
        buf = io.BytesIO()
        fmt = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}[ext]
        kwargs = {"quality": 95} if fmt == "JPEG" else {}
        value.save(buf, format=fmt, **kwargs)
        return buf.getvalue()
    raise TypeError(f"don't know how to encode field .{ext} of type {type(value).__name__}")


class ShardWriter:
    """Write samples into ``out_dir/NNNNNN.tar`` shards of at most ``max_count`` samples.

    Usage::

        with ShardWriter("shapes/train", max_count=1000) as w:
            w.write("000000042", {"png": image, "txt": caption, "json": meta})

    ``mtime`` is fixed so the same samples give byte-identical shards.
    """

    def __init__(self, out_dir: str | os.PathLike, max_count: int = 1000, start_index: int = 0):
        if max_count < 1:
            raise DataError(f"max_count must be >= 1, got {max_count}")
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.max_count = max_count
        self.shard_index = start_index
        self.count = 0  # samples written in total
        self.shards: list[str] = []
        self._tar: tarfile.TarFile | None = None
        self._tmp_path: Path | None = None
        self._in_shard = 0

    def _open(self) -> None:
        name = f"{self.shard_index:06d}.tar"
        self._tmp_path = self.out_dir / (name + ".tmp")
        self._tar = tarfile.open(self._tmp_path, "w", format=tarfile.USTAR_FORMAT)
        self._in_shard = 0

    def _close_shard(self) -> None:
        if self._tar is None:
            return
        self._tar.close()
        final = self.out_dir / f"{self.shard_index:06d}.tar"
        os.replace(self._tmp_path, final)
        self.shards.append(final.name)
        self._tar = None
        self.shard_index += 1

    def write(self, key: str, fields: Mapping[str, Any]) -> None:
        if "." in key or "/" in key or not key:
            raise ValueError(f"sample key must be non-empty without '.' or '/': {key!r}")
        if self._tar is None:
            self._open()
        for ext, value in fields.items():
            data = encode_field(ext, value)
            info = tarfile.TarInfo(f"{key}.{ext}")
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o644
            self._tar.addfile(info, io.BytesIO(data))
        self.count += 1
        self._in_shard += 1
        if self._in_shard >= self.max_count:
            self._close_shard()

    def close(self) -> list[str]:
        self._close_shard()
        return self.shards

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # don't leave a partial shard behind
            if self._tar is not None:
                self._tar.close()
                self._tmp_path.unlink(missing_ok=True)
                self._tar = None


def prepare_split_dir(split_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Make sure ``split_dir`` can receive fresh shards; refuse to clobber existing ones."""
    split_dir = Path(split_dir)
    existing = sorted(split_dir.glob("*.tar")) if split_dir.is_dir() else []
    if existing and not overwrite:
        raise DataError(
            f"{split_dir} already holds {len(existing)} shard(s); pass --overwrite to replace them"
        )
    for p in existing:
        p.unlink()
    for p in split_dir.glob("*.tar.tmp") if split_dir.is_dir() else []:
        p.unlink()
    split_dir.mkdir(parents=True, exist_ok=True)
    return split_dir


def read_manifest(root: str | os.PathLike) -> dict:
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        return {}
    return json.loads(path.read_text())


def check_dataset(root: str | os.PathLike, dataset: str) -> None:
    """Refuse a root whose manifest belongs to another dataset (checked before writing anything)."""
    found = read_manifest(root).get("dataset")
    if found not in (None, dataset):
        raise DataError(f"{root} holds dataset {found!r}, not {dataset!r}")


def check_generator_args(root: str | os.PathLike, dataset: str, size: int, seed: int, shard_size: int,
                         min_size: int) -> None:
    """The arguments every image-dataset generator takes, checked before anything is written."""
    checks = [
        (isinstance(size, int) and size >= min_size, f"size must be an integer >= {min_size}, got {size!r}"),
        (isinstance(seed, int) and seed >= 0, f"seed must be an integer >= 0, got {seed!r}"),
        (isinstance(shard_size, int) and shard_size >= 1, f"shard_size must be an integer >= 1, got {shard_size!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise DataError(message)
    check_dataset(root, dataset)


def update_manifest(root: str | os.PathLike, dataset: str, generator_version: str,
                    split: str, split_info: Mapping[str, Any], **extra: Any) -> dict:
    """Merge one split's entry (count, shards, seed …) into ``root/manifest.json`` atomically."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    check_dataset(root, dataset)
    manifest = read_manifest(root)
    if manifest.get("generator_version") not in (None, generator_version):
        manifest.pop("splits", None)  # made by another generator: those splits are stale
    manifest.update({"manifest_version": MANIFEST_VERSION, "dataset": dataset,
                     "generator_version": generator_version})
    manifest.update(extra)
    splits = manifest.setdefault("splits", {})
    splits[split] = {**split_info, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_manifest(root, manifest)
    return manifest


def write_manifest(root: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    """Write ``root/manifest.json`` atomically (a temporary file renamed over it)."""
    tmp = Path(root) / (MANIFEST_NAME + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, Path(root) / MANIFEST_NAME)
