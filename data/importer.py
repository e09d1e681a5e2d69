"""``cola-mm data import``: real image–caption data into img2dataset-format shards.

Three sources:

- ``folder``: a folder of images and a captions file, JSON lines or CSV, one row per image. The
  image is named by ``file`` / ``image`` / ``path`` / ``file_name`` (relative to the folder), the
  caption by ``caption`` / ``text`` / ``txt``. Every other column is kept in the sample's json.
- ``coco``: a COCO-style captions json (``images`` with ``id`` and ``file_name``, ``annotations``
  with ``image_id`` and ``caption``) and its image folder. There is one sample per image: the
  first caption is the ``txt``, and every caption is in the json (``captions``). The image
  record's fields (``id``, ``width``, ``coco_url`` …) are kept there too.
- ``hf``: a Hugging Face ``datasets`` folder written by ``save_to_disk``, with an image column
  (``Image`` feature, or bytes / a path) and a caption column.

Each image is decoded through :func:`cola_mm.core.images.open_image`, so the size and pixel
limits and the EXIF orientation apply. It is converted to RGB, its shorter side is resized to
``size`` and it is centre-cropped to ``size``×``size``, then stored as ``jpg`` (or ``png`` with
``--format png``). The json keeps the source, the original size and the row's metadata.

- **Skips are counted.** An unreadable or missing image, or an empty caption, is skipped and
  counted by reason, and the counts go into the manifest.
- **Resumable.** ``out/<split>/import_progress.json`` records, after every finished shard, how
  many source rows that shard and the ones before it cover. Running the same command again
  continues after the last finished shard. A different source or different settings in the same
  split are refused, unless ``--overwrite`` is given.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from PIL import Image
from tqdm import tqdm

from cola_mm.core.images import ImageInputError, open_image, to_rgb
from cola_mm.data.shards import DataError, ShardWriter, prepare_split_dir, update_manifest

GENERATOR_VERSION = "import-1"
PROGRESS_FILE = "import_progress.json"
IMAGE_KEYS = ("file", "image", "path", "file_name", "filename")
CAPTION_KEYS = ("caption", "text", "txt")


@dataclass
class Source:
    """The rows of a checked source (its files were found and parsed) and how many there are."""

    rows: Iterator["Row"]
    total: int

    def __iter__(self) -> Iterator["Row"]:
        return self.rows


@dataclass
class Row:
    """One source record: where its image comes from, its caption, metadata to keep."""

    image: Any  # a path, bytes, or a PIL image
    caption: Any
    meta: dict
    source: str  # a name for messages and the json


# --------------------------------------------------------------------------- sources


def _pick(row: dict, keys: tuple[str, ...], what: str, where: str) -> str:
    for k in keys:
        if k in row and row[k] not in (None, ""):
            return k
    raise DataError(f"{where}: no {what} column (one of {', '.join(keys)}); columns: {sorted(row)}")


def _need(path: Path, what: str, folder: bool = False) -> None:
    if not (path.is_dir() if folder else path.is_file()):
        raise DataError(f"{what} not found: {path}")


def folder_rows(images: str | os.PathLike, captions: str | os.PathLike) -> Source:
    images, captions = Path(images), Path(captions)
    _need(images, "image folder", folder=True)
    _need(captions, "captions file")
    if captions.suffix.lower() == ".csv":
        with captions.open(newline="", encoding="utf-8") as f:
            records = list(csv.DictReader(f))
    else:
        records = []
        for n, line in enumerate(captions.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DataError(f"{captions}:{n}: not valid JSON ({err.msg})") from None
                if not isinstance(record, dict):
                    raise DataError(f"{captions}:{n}: each line must be a JSON object")
                records.append(record)
    if not records:
        raise DataError(f"{captions} holds no rows")
    image_key = _pick(records[0], IMAGE_KEYS, "image file", str(captions))
    caption_key = _pick(records[0], CAPTION_KEYS, "caption", str(captions))

    def rows() -> Iterator[Row]:
        for record in records:
            name = str(record.get(image_key) or "")
            meta = {k: v for k, v in record.items() if k not in (image_key, caption_key)}
            yield Row(images / name, record.get(caption_key), meta, name)

    return Source(rows(), len(records))


def coco_rows(annotations: str | os.PathLike, images: str | os.PathLike) -> Source:
    annotations, images = Path(annotations), Path(images)
    _need(annotations, "COCO captions file")
    _need(images, "image folder", folder=True)
    try:
        coco = json.loads(annotations.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{annotations}: not valid JSON ({err})") from None
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list) \
            or not isinstance(coco.get("annotations"), list):
        raise DataError(f"{annotations}: not a COCO captions file (needs 'images' and 'annotations' lists)")
    captions: dict[Any, list[str]] = {}
    for ann in coco["annotations"]:
        if isinstance(ann, dict) and "image_id" in ann:
            captions.setdefault(ann["image_id"], []).append(ann.get("caption"))
    records = [r for r in coco["images"] if isinstance(r, dict)]

    def rows() -> Iterator[Row]:
        for record in records:
            caps = [c for c in captions.get(record.get("id"), []) if isinstance(c, str) and c.strip()]
            name = str(record.get("file_name") or "")
            meta = {**{k: v for k, v in record.items() if k != "file_name"}, "captions": caps}
            yield Row(images / name, caps[0] if caps else None, meta, name)

    return Source(rows(), len(records))


def hf_rows(folder: str | os.PathLike, image_column: str | None = None,
            caption_column: str | None = None) -> Source:
    folder = Path(folder)
    _need(folder, "datasets folder", folder=True)
    try:
        import datasets
    except ImportError:
        raise DataError("reading a Hugging Face datasets folder needs the `datasets` package: "
                        "pip install datasets") from None
    try:
        ds = datasets.load_from_disk(str(folder))
    except (FileNotFoundError, ValueError, OSError) as err:
        raise DataError(f"{folder}: not a datasets folder written by save_to_disk ({str(err).splitlines()[0]})") \
            from None
    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"{folder} holds splits {sorted(ds)}: import one of them, e.g. {folder / sorted(ds)[0]}")
    columns = list(ds.column_names)
    image_column = image_column or next((c for c in ("image", "img", *IMAGE_KEYS) if c in columns), None)
    caption_column = caption_column or next((c for c in (*CAPTION_KEYS, "sentence", "label") if c in columns), None)
    for name, what in ((image_column, "image"), (caption_column, "caption")):
        if name is None or name not in columns:
            raise DataError(f"{folder}: no {what} column {name!r}; columns: {columns} "
                            f"(choose with --{what}-column)")
    # decode=False: raw bytes/paths, so a broken image is a counted skip, not an exception here
    if isinstance(ds.features[image_column], datasets.Image):
        ds = ds.cast_column(image_column, datasets.Image(decode=False))

    def rows() -> Iterator[Row]:
        for i, record in enumerate(ds):
            value = record[image_column]
            if isinstance(value, dict):  # an Image feature: {"bytes": …, "path": …}
                value = value.get("bytes") or value.get("path")
            meta = {k: v for k, v in record.items() if k not in (image_column, caption_column)
                    and isinstance(v, (str, int, float, bool, type(None)))}
            yield Row(value, record[caption_column], {"row": i, **meta}, f"row {i}")

    return Source(rows(), len(ds))


# --------------------------------------------------------------------------- writing


def centre_square(img: Image.Image, size: int) -> Image.Image:
    """RGB, shorter side resized to ``size``, centre-cropped to ``size``×``size``."""
    img = to_rgb(img)
    w, h = img.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.LANCZOS, reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def _settings_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def import_rows(rows: Source | Iterator[Row], total: int | None, out: str | os.PathLike, split: str, settings: dict,
                size: int = 64, shard_size: int = 1000, fmt: str = "jpg", overwrite: bool = False,
                limit: int | None = None, progress: bool = True) -> dict:
    """Write ``rows`` as shards into ``out/split``; returns the manifest entry of the split."""
    if not isinstance(size, int) or size < 8:
        raise DataError(f"size must be an integer >= 8, got {size!r}")
    if not isinstance(shard_size, int) or shard_size < 1:
        raise DataError(f"shard_size must be an integer >= 1, got {shard_size!r}")
    if fmt not in ("jpg", "png", "webp"):
        raise DataError(f"format must be jpg, png or webp, got {fmt!r}")
    if total is None and isinstance(rows, Source):
        total = rows.total
    out = Path(out)
    split_dir = out / split
    progress_file = split_dir / PROGRESS_FILE
    key = _settings_hash({**settings, "size": size, "shard_size": shard_size, "format": fmt, "limit": limit})
    state = {"settings": key, "rows_done": 0, "shards": [], "written": 0, "skipped": {}}
    if progress_file.is_file() and not overwrite:
        saved = json.loads(progress_file.read_text())
        if saved.get("settings") != key:
            raise DataError(f"{split_dir} holds an import with other settings or another source; "
                            f"pass --overwrite to replace it")
        state = saved
        for stray in split_dir.glob("*.tar"):  # shards after the last recorded one are incomplete runs
            if stray.name not in state["shards"]:
                stray.unlink()
    else:
        prepare_split_dir(split_dir, overwrite)
        progress_file.unlink(missing_ok=True)
    if state.get("complete"):
        return state["entry"]
    skipped = Counter(state["skipped"])
    done = state["rows_done"]
    writer = ShardWriter(split_dir, max_count=shard_size, start_index=len(state["shards"]))
    written = state["written"]

    def checkpoint() -> None:
        """Record the finished shards and how many source rows they cover (atomically)."""
        state.update(rows_done=done, shards=state["shards"] + writer.shards, written=written,
                     skipped=dict(skipped))
        writer.shards.clear()
        tmp = progress_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(tmp, progress_file)

    n_rows = total if limit is None else min(total if total is not None else limit, limit)
    with tqdm(total=n_rows, initial=done, unit="img", desc=f"import {split}", disable=not progress) as bar, \
            writer:  # an exception drops the shard being written; the progress file keeps the rest
        for index, row in enumerate(rows):
            if limit is not None and index >= limit:
                break
            if index < done:
                continue
            bar.update()
            done += 1
            caption = row.caption.strip() if isinstance(row.caption, str) else ""
            if not caption:
                skipped["empty_caption"] += 1
                continue
            try:
                source = row.image if isinstance(row.image, (bytes, Image.Image)) else Path(str(row.image))
                if isinstance(source, Path) and not source.is_file():
                    skipped["missing_image"] += 1
                    continue
                img = source if isinstance(source, Image.Image) else open_image(source)
                original = img.size
                img = centre_square(img, size)
            except (ImageInputError, OSError, ValueError, TypeError) as err:
                skipped["unreadable_image"] += 1
                bar.write(f"skipped {row.source}: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
                continue
            meta = {"source": row.source, "original_width": original[0], "original_height": original[1],
                    **{k: v for k, v in row.meta.items() if k != "source"}}
            before = len(writer.shards)
            writer.write(f"{written:09d}", {fmt: img, "txt": caption, "json": meta})
            written += 1
            if len(writer.shards) > before:  # a shard was finished: record how far the source was read
                checkpoint()
    checkpoint()
    entry = {"count": written, "shards": state["shards"], "size": size, "format": fmt,
             "source_rows": done, "skipped": dict(skipped), "source": settings}
    state.update(complete=True, entry=entry)
    progress_file.write_text(json.dumps(state, indent=2) + "\n")
    update_manifest(out, "imported", GENERATOR_VERSION, split, entry)
    return entry
