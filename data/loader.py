"""Streaming, resumable reader for WebDataset / img2dataset shards.

Shards are plain tars whose members ``{key}.{ext}`` are grouped into samples by key (the
basename up to its first dot, as webdataset does). The reader

- takes shards from a directory, a glob, a brace pattern (``data/{000000..000009}.tar``) or
  several of those joined by ``::`` (:func:`list_shards`);
- splits them between nodes (``rank``/``world_size``) and DataLoader workers so that every
  sample is seen exactly once per epoch by exactly one consumer; when there are fewer shards
  than consumers it splits by sample instead;
- shuffles the shard order per epoch and the samples through a shuffle buffer, both from
  ``seed`` and the epoch, so an epoch's order is a pure function of (seed, epoch, consumer);
- decodes ``txt`` (UTF-8), ``json`` and images (png/jpg/jpeg/webp → RGB ``PIL.Image``);
- skips bad samples (corrupt image, truncated or damaged tar, missing field, wrong encoding,
  bad json) with a counted warning, never a crash (:attr:`ShardDataset.stats`); after damage
  inside a tar it reads on from the next valid header;
- keeps its position: ``state_dict()`` → ``{"epoch", "consumed", "shard", "offset", ...}``;
  ``load_state_dict()`` makes the next iteration continue exactly where it stopped (the epoch
  is replayed from its start without decoding and the first ``consumed`` samples dropped).
  With several workers use :class:`torchdata.stateful_dataloader.StatefulDataLoader` (see
  :func:`make_loader`), which collects and restores one such state per worker.

Shapes: samples are dicts ``{"__key__": str, "__url__": str, "txt": str, "json": dict,
"png": PIL.Image, ...}``.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import logging
import os
import random
import re
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import torch
from braceexpand import braceexpand
from PIL import Image

from cola_mm.data.shards import MANIFEST_NAME, DataError

logger = logging.getLogger(__name__)

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp")
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


# --------------------------------------------------------------------------- shard lists


def list_shards(spec: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Expand a shard specification into a sorted list of tar paths.

    ``spec`` is a directory (its ``*.tar``), a glob, a brace pattern, a single tar, or a list
    of those (or a string joining them with ``::``). Raises :class:`DataError` when nothing
    matches, with a hint when a dataset root (holding split folders) was given.
    """
    if isinstance(spec, (str, os.PathLike)):
        parts = [p for p in str(spec).split("::") if p]
    else:
        parts = [str(p) for p in spec]
    if not parts:
        raise DataError("no shard pattern given")
    shards: list[str] = []
    for part in parts:
        found: list[str] = []
        if is_remote(part):  # http(s)://, pipe:, gs:// …: opened by webdataset's gopen; nothing to list
            shards.extend(braceexpand(part))
            continue
        if part.startswith("file:"):
            part = part[len("file:"):]
        for pattern in braceexpand(part):
            path = Path(pattern).expanduser()
            if path.is_dir():
                found.extend(sorted(str(p) for p in path.glob("*.tar")))
                if not found:
                    splits = sorted(p.name for p in path.iterdir() if p.is_dir() and any(p.glob("*.tar")))
                    hint = f"; it has split folders {splits}, e.g. {path / splits[0]}" if splits else ""
                    if (path / MANIFEST_NAME).is_file() and not splits:
                        hint = "; its manifest lists no shards"
                    raise DataError(f"no shards (*.tar) in directory {path}{hint}")
            elif any(ch in pattern for ch in "*?["):
                found.extend(sorted(glob.glob(str(path))))
            elif path.is_file():
                found.append(str(path))
            else:
                raise DataError(f"shard path does not exist: {path}")
        if not found:
            raise DataError(f"no shards match {part!r}")
        shards.extend(found)
    return shards


def is_remote(url: str) -> bool:
    """A URL webdataset's ``gopen`` opens (``http(s)://``, ``pipe:``, ``gs://``, ``s3``-style
    ``pipe:aws …``), rather than a local path (``file:`` and Windows drive letters are local)."""
    m = re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]+):", url)
    return m is not None and m.group(1).lower() != "file"


def dist_info(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world_size) from the arguments, torch.distributed, or the launcher's env."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


# --------------------------------------------------------------------------- raw tar reading


def split_member_name(name: str) -> tuple[str, str] | None:
    """``dir/000123.jpg`` → (``dir/000123``, ``jpg``); ``None`` for names without extension."""
    dirname, base = os.path.split(name)
    if "." not in base or base.startswith("."):
        return None
    key, ext = base.split(".", 1)
    return (os.path.join(dirname, key) if dirname else key), ext.lower()


def iter_raw_samples(url: str, on_error: Callable[[str, str, str], None] | None = None
                     ) -> Iterator[dict[str, Any]]:
    """Yield undecoded samples ``{"__key__", "__url__", ext: bytes}`` of one tar, in order.

    Damage does not end an uncompressed shard: after a broken header or a short member the
    reader looks for the next valid tar header (tar headers sit on 512-byte boundaries and
    carry a checksum) and goes on from there, reporting ``on_error("damaged_tar", url, detail)``.
    When no valid header follows (a truncated file) it reports ``"truncated_tar"``. The sample
    being read when the damage was met is dropped (it may be incomplete); a complete sample
    before it is still yielded.
    """
    if is_remote(url):
        yield from _iter_remote(url, on_error)
        return
    plain = _is_plain_tar(url)  # only an uncompressed tar can be searched for its next header
    offset = 0
    while True:
        current: dict[str, Any] | None = None
        tar = None
        try:
            with open(url, "rb") as f:
                f.seek(offset)
                with tarfile.open(fileobj=f, mode="r|*") as tar:
                    for current, done in _group(tar, url):
                        if done is not None:
                            yield done
            # tarfile ends an archive quietly at a header that fails its checksum: look past it
            end = offset + tar.offset
            resume = _next_tar_header(url, end + 512) if plain else None
            if plain and resume is None and os.path.getsize(url) - end < 512:
                # a whole tar ends with zero blocks; a file cut on a member boundary does not
                if on_error is not None:
                    on_error("truncated_tar", url, f"the file ends at byte {end} without the end-of-archive "
                                                   "blocks: it was cut short")
            elif plain and (resume is not None or _has_data(url, end)):  # (offsets of a .tar.gz are not file bytes)
                if on_error is not None:
                    on_error("damaged_tar", url, f"invalid tar header at byte {end}" +
                             ("; the rest of the shard is lost" if resume is None else f"; resumed at byte {resume}"))
                if resume is not None:
                    if current is not None:  # complete, or missing the damaged member (then counted later)
                        yield current
                    offset = resume
                    continue
        except (tarfile.TarError, OSError, EOFError) as err:
            failed = offset + (tar.offset if tar is not None else 0)
            resume = _next_tar_header(url, failed + 512) if plain else None
            if on_error is not None:
                on_error("truncated_tar" if resume is None else "damaged_tar", url,
                         f"{err} (at byte {failed}" + ("" if resume is None else f"; resumed at byte {resume}") + ")")
            if resume is not None and resume > offset:
                offset = resume
                continue
            current = None  # the sample being read when the tar broke may be incomplete
        if current is not None:
            yield current
        return


def _group(tar: tarfile.TarFile, url: str) -> Iterator[tuple[dict | None, dict | None]]:
    """Group a tar stream's members into samples by key. Yields (the sample being filled, a
    finished sample or None) after each member, so a caller that meets damage knows both."""
    current: dict[str, Any] | None = None
    for member in tar:
        if not member.isfile():
            continue
        parsed = split_member_name(member.name)
        if parsed is None:
            continue
        key, ext = parsed
        if os.path.basename(key).startswith("__"):
            continue
        data = tar.extractfile(member).read()
        if len(data) != member.size:
            raise tarfile.ReadError(f"{member.name}: {len(data)} of {member.size} bytes")
        done = None
        if current is not None and current["__key__"] != key:
            done, current = current, None
        if current is None:
            current = {"__key__": key, "__url__": url}
        current[ext] = data
        yield current, done


def _iter_remote(url: str, on_error: Callable[[str, str, str], None] | None) -> Iterator[dict[str, Any]]:
    """One shard opened by webdataset's ``gopen`` (``curl`` for http(s), a shell for ``pipe:``).
    A stream cannot be searched for the next header: damage ends the shard (counted)."""
    from webdataset.gopen import gopen

    current: dict[str, Any] | None = None
    stream = None
    reason = "unreadable_shard"
    try:
        stream = gopen(url, "rb")
        tail = _TailReader(stream)
        with tarfile.open(fileobj=tail, mode="r|*") as tar:
            reason = "truncated_tar"
            for current, done in _group(tar, url):
                if done is not None:
                    yield done
            end = tar.offset
        tail.drain()
        stream.close()  # a pipe's exit status is checked here (curl -f: 22 for an HTTP error)
        stream = None
        if tail.compressed is False and on_error is not None:  # tarfile stops quietly at a cut or a bad header
            block = tail.at(end, 512)  # the sample being filled is still yielded: the loader checks its fields
            if block is None or len(block) < 512:
                on_error("truncated_tar", url, f"the stream ends at byte {end} without the end-of-archive blocks")
            elif block.count(0) != 512:
                on_error("damaged_tar", url, f"invalid tar header at byte {end}; the rest of the stream is lost")
    except (tarfile.TarError, OSError, EOFError, ValueError) as err:
        detail = " ".join(str(err).split())[:300] or type(err).__name__
        if on_error is not None:
            on_error(reason, url, detail)
        current = None
    finally:
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close()
    if current is not None:
        yield current


COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ", b"\x28\xb5\x2f\xfd")  # gzip, bzip2, xz, zstd


class _TailReader:
    """A read-only stream wrapper that remembers the last bytes read (to look at where tarfile
    stopped) and whether the stream is a plain (uncompressed) tar."""

    KEEP = 1 << 16

    def __init__(self, stream):
        self.stream, self.pos, self.buf = stream, 0, b""
        self.compressed: bool | None = None

    def read(self, n: int = -1) -> bytes:
        data = self.stream.read(n)
        if self.compressed is None and data:
            self.compressed = data.startswith(COMPRESSED_MAGIC)
        self.pos += len(data)
        self.buf = (self.buf + data)[-self.KEEP:]
        return data

    def drain(self, limit: int = 1 << 20) -> None:
        """Read what follows (the end-of-archive padding), up to ``limit`` bytes."""
        while limit > 0 and (data := self.read(min(65536, limit))):
            limit -= len(data)

    def at(self, offset: int, n: int) -> bytes | None:
        """Bytes ``offset`` … ``offset + n`` if still held (None if they were never read or dropped)."""
        start = self.pos - len(self.buf)
        if offset < start or offset >= self.pos:
            return None
        return self.buf[offset - start:offset - start + n]


def _is_plain_tar(url: str) -> bool:
    """Not gzip/bzip2/xz/zstd-compressed (those cannot be resynchronised)."""
    try:
        with open(url, "rb") as f:
            magic = f.read(6)
    except OSError:
        return False
    return not magic.startswith(COMPRESSED_MAGIC)


def _has_data(url: str, start: int, chunk: int = 1 << 20) -> bool:
    """Whether anything but zero bytes (the end-of-archive padding) follows ``start``."""
    try:
        with open(url, "rb") as f:
            f.seek(start)
            while buf := f.read(chunk):
                if buf.count(0) != len(buf):
                    return True
    except OSError:
        return False
    return False


def _next_tar_header(url: str, start: int, chunk: int = 512 * 2048) -> int | None:
    """The offset of the first 512-aligned valid tar header at or after ``start``, if any."""
    pos = -(-start // 512) * 512
    try:
        with open(url, "rb") as f:
            while True:
                f.seek(pos)
                buf = f.read(chunk)
                if len(buf) < 512:
                    return None
                for i in range(0, len(buf) - 511, 512):
                    block = buf[i:i + 512]
                    if block.count(0) == 512:
                        continue
                    try:
                        tarfile.TarInfo.frombuf(block, tarfile.ENCODING, "surrogateescape")
                    except tarfile.HeaderError:
                        continue
                    return pos + i
                pos += len(buf) // 512 * 512
    except OSError:
        return None


# --------------------------------------------------------------------------- decoding


def decode_sample(raw: dict[str, Any], image_mode: str = "RGB") -> dict[str, Any]:
    """Decode the fields of one raw sample; raises ``ValueError(reason)`` for a bad one."""
    out: dict[str, Any] = {}
    for ext, value in raw.items():
        if ext.startswith("__"):
            out[ext] = value
        elif ext in ("txt", "text", "caption"):
            try:
                out["txt"] = value.decode("utf-8")
            except UnicodeDecodeError as err:
                raise ValueError("bad_encoding") from err
        elif ext == "json":
            try:
                out["json"] = json.loads(value.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise ValueError("bad_json") from err
        elif ext in IMAGE_EXTS:
            try:
                with Image.open(io.BytesIO(value)) as img:
                    img.load()
                    out["image"] = img.convert(image_mode)
            except DECODE_ERRORS as err:
                raise ValueError("corrupt_image") from err
        else:
            out[ext] = value  # unknown fields pass through as bytes
    return out


# --------------------------------------------------------------------------- the dataset


class ShardDataset(torch.utils.data.IterableDataset):
    """An iterable, resumable, node- and worker-split view of a set of shards.

    Args:
        shards: anything :func:`list_shards` accepts.
        required: fields every sample must have after decoding (``"txt"``, ``"json"``,
            ``"image"``); samples without them are skipped and counted as ``missing_field``.
        shuffle_buffer: size of the sample shuffle buffer (0 or 1 = no sample shuffling).
        shuffle_shards: shuffle the shard order every epoch.
        seed: base seed of every shuffle.
        epochs: number of passes (``None`` = forever, for training by steps).
        rank, world_size: the node split; default from torch.distributed or RANK/WORLD_SIZE.
        decode: decode fields (False yields raw bytes; used by benchmarks).
        transform: optional function applied to each decoded sample.
        fields: if given, only these raw fields (extensions) are kept and decoded.
    """

    def __init__(self, shards, required: Sequence[str] = ("txt",), shuffle_buffer: int = 0,
                 shuffle_shards: bool = False, seed: int = 0, epochs: int | None = 1,
                 rank: int | None = None, world_size: int | None = None, decode: bool = True,
                 transform: Callable[[dict], Any] | None = None,
                 fields: Sequence[str] | None = None):
        super().__init__()
        self.shards = list_shards(shards)
        self.required = tuple(required)
        self.shuffle_buffer = max(int(shuffle_buffer), 0)
        self.shuffle_shards = shuffle_shards
        self.seed = seed
        self.epochs = epochs
        self.rank, self.world_size = dist_info(rank, world_size)
        if not 0 <= self.rank < self.world_size:
            raise DataError(f"rank {self.rank} outside world size {self.world_size}")
        self.decode = decode
        self.transform = transform
        self.fields = None if fields is None else frozenset(fields)
        self.stats: Counter[str] = Counter()
        self._position = {"epoch": 0, "consumed": 0, "shard": 0, "offset": 0}
        self._resume: dict[str, Any] | None = None
        self._replaying = False

    # ---- position
    def state_dict(self) -> dict[str, Any]:
        """The position of the running iteration: epoch, samples consumed in it, current
        shard (index into this consumer's shard list) and sample offset inside it."""
        return {**self._position, "stats": dict(self.stats), "seed": self.seed,
                "num_shards": len(self.shards)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("num_shards", len(self.shards)) != len(self.shards):
            raise DataError(f"loader state was saved for {state['num_shards']} shards, "
                            f"this dataset has {len(self.shards)}")
        self._resume = dict(state)
        self._position = {k: state[k] for k in ("epoch", "consumed", "shard", "offset")}
        self.stats = Counter(state.get("stats", {}))

    # ---- bad samples
    def _skip(self, reason: str, url: str, detail: str) -> None:
        if self._replaying:  # already counted before the state was saved
            return
        self.stats[reason] += 1
        n = self.stats[reason]
        if n <= 10 or n & (n - 1) == 0:  # the first ten, then at powers of two
            logger.warning("skipped bad sample (%s) in %s: %s [%d %s so far]", reason, url, detail, n, reason)

    # ---- split
    def _consumer(self) -> tuple[int, int]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        return self.rank * num_workers + worker, self.world_size * num_workers

    def _epoch_plan(self, epoch: int, consumer: int, n_consumers: int) -> tuple[list[str], int, int]:
        """(shards this consumer reads in ``epoch``, sample stride, sample phase)."""
        order = list(self.shards)
        if self.shuffle_shards:
            random.Random(f"{self.seed}/shards/{epoch}").shuffle(order)
        if len(order) >= n_consumers:
            return order[consumer::n_consumers], 1, 0
        return order, n_consumers, consumer  # fewer shards than consumers: split by sample

    def _raw_epoch(self, epoch: int, consumer: int, n_consumers: int) -> Iterator[tuple[dict, int, int]]:
        """This consumer's raw samples of one epoch, shuffled; yields (sample, shard, offset)."""
        shards, stride, phase = self._epoch_plan(epoch, consumer, n_consumers)

        def stream():
            for s, url in enumerate(shards):
                for i, raw in enumerate(iter_raw_samples(url, self._skip)):
                    if i % stride == phase:
                        yield raw, s, i + 1

        if self.shuffle_buffer <= 1:
            yield from stream()
            return
        rng = random.Random(f"{self.seed}/buffer/{epoch}/{consumer}")
        buf: list[tuple[dict, int, int]] = []
        for item in stream():
            if len(buf) < self.shuffle_buffer:
                buf.append(item)
                continue
            j = rng.randrange(len(buf))
            out, buf[j] = buf[j], item
            yield out[0], item[1], item[2]  # the reader's position is that of the newest read
        rng.shuffle(buf)
        for out in buf:
            yield out

    def __iter__(self) -> Iterator[dict[str, Any]]:
        consumer, n_consumers = self._consumer()
        resume, self._resume = self._resume, None
        epoch = resume["epoch"] if resume else 0
        skip = resume["consumed"] if resume else 0
        while self.epochs is None or epoch < self.epochs:
            consumed = 0
            self._replaying = skip > 0
            for raw, shard, offset in self._raw_epoch(epoch, consumer, n_consumers):
                consumed += 1
                if consumed <= skip:
                    continue
                self._replaying = False
                self._position = {"epoch": epoch, "consumed": consumed, "shard": shard, "offset": offset}
                sample = self._decode(raw)
                if sample is not None:
                    yield sample
            skip = 0
            epoch += 1
            self._position = {"epoch": epoch, "consumed": 0, "shard": 0, "offset": 0}
            if consumed == 0 and self.epochs is None:
                raise DataError(f"consumer {consumer}/{n_consumers} got no samples from "
                                f"{len(self.shards)} shard(s); cannot loop forever on nothing")

    def _decode(self, raw: dict[str, Any]) -> Any:
        if self.fields is not None:
            raw = {k: v for k, v in raw.items() if k.startswith("__") or k in self.fields}
        if not self.decode:
            return raw
        try:
            sample = decode_sample(raw)
        except ValueError as err:
            self._skip(str(err), raw["__url__"], raw["__key__"])
            return None
        missing = [f for f in self.required if f not in sample]
        if missing:
            self._skip("missing_field", raw["__url__"], f"{raw['__key__']} lacks {missing}")
            return None
        return self.transform(sample) if self.transform is not None else sample


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Batch sample dicts into a dict of lists (images and texts stay Python objects)."""
    keys = samples[0].keys()
    return {k: [s.get(k) for s in samples] for k in keys}


def make_loader(dataset: ShardDataset, batch_size: int, num_workers: int = 0,
                collate_fn: Callable | None = collate_samples, **kwargs):
    """A :class:`StatefulDataLoader` over ``dataset`` whose ``state_dict()`` holds each
    worker's position, so ``load_state_dict`` resumes exactly."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    return StatefulDataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                              collate_fn=collate_fn, **kwargs)


def iter_texts(shards: Iterable[str] | str) -> Iterator[str]:
    """Every ``txt`` field of the given shards in order (one pass, no shuffling)."""
    ds = ShardDataset(shards, required=("txt",), epochs=1, rank=0, world_size=1,
                      fields=("txt", "text", "caption"))
    for sample in ds:
        yield sample["txt"]
