"""The text tokenizer: a lossless byte-level BPE, saved and loaded as a Hugging Face tokenizer.

The Text VAE maps every token to one latent (Cola DLM, DESIGN.md "Text VAE"), so the tokenizer
fixes the sequence length the whole system works with. We use GPT-2's recipe, trained on our
corpus with HF ``tokenizers``: a ByteLevel pre-tokenizer (``add_prefix_space=False``) and
decoder, all 256 bytes in the initial alphabet, no normaliser. Every UTF-8 string therefore
round-trips exactly: ``tok.decode(tok.encode(x)) == x`` (emoji, CJK, control characters,
``"\\r\\n"``, leading spaces, the empty string). Encoding adds no special tokens; callers put
``<bos>``/``<eos>`` where they need them.

Special tokens, ids 0..4 in this order: :data:`SPECIAL_TOKENS` = ``<pad> <bos> <eos> <mask>
<unk>`` (``<mask>`` is the BERT-style masking token of the VAE's stage-1 loss).

A trained tokenizer is a folder written by ``PreTrainedTokenizerFast.save_pretrained``
(``tokenizer.json`` + ``tokenizer_config.json``) that ``transformers.AutoTokenizer`` loads
offline. :func:`load_tokenizer` also takes any other HF tokenizer folder (e.g. GPT-2's).
``load_tokenizer(path, light=True)`` (what :class:`~cola_mm.pipeline.ColaPipeline` uses) reads a
folder of ours with the ``tokenizers`` library alone, as a :class:`TextTokenizer`: the same ids
and text without importing transformers, which takes about 1.5 s of every app or CLI start.

Run::

    cola-mm tokenizer train --data runs/data/text --vocab-size 8192 --out runs/tokenizer
    python -c "from cola_mm.vae_text.tokenizer import train_tokenizer_from_shards as t; \\
               t(['runs/data/text'], 8192, 'runs/tokenizer')"
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from cola_mm.data.shards import DataError

# transformers is imported where it is used (``PreTrainedTokenizerFast`` below is a name in
# annotations only): a pipeline that loads its tokenizer light never imports it

PAD, BOS, EOS, MASK, UNK = "<pad>", "<bos>", "<eos>", "<mask>", "<unk>"
SPECIAL_TOKENS = [PAD, BOS, EOS, MASK, UNK]  # ids 0..4 in a tokenizer we train
# the attributes load_tokenizer guarantees, with the token added when a tokenizer lacks one
REQUIRED_SPECIALS = {"pad_token": PAD, "bos_token": BOS, "eos_token": EOS, "mask_token": MASK}
N_BYTES = 256  # the byte alphabet every vocabulary starts from
MIN_VOCAB_SIZE = N_BYTES + len(SPECIAL_TOKENS)
DEFAULT_VOCAB_SIZE = 8192
CONFIG_FILES = ("tokenizer_config.json", "config.json")
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer.model", "vocab.txt")
# the class name written to tokenizer_config.json: loadable by transformers 4.x and 5.x alike
TOKENIZER_CLASS = "PreTrainedTokenizerFast"


class TextTokenizer:
    """One of our tokenizer folders on the ``tokenizers`` library alone: the part of
    ``PreTrainedTokenizerFast``'s interface that generation and evaluation use, with the same
    ids and text (``tests/test_tokenizer.py`` compares the two). Made by
    ``load_tokenizer(path, light=True)``; ``save_pretrained`` copies the folder it was read from."""

    clean_up_tokenization_spaces = False

    def __init__(self, folder: Path, backend: Tokenizer, specials: dict[str, str]):
        self.folder, self.backend = folder, backend
        backend.no_truncation()
        backend.no_padding()
        for attr, token in specials.items():  # pad_token, bos_token, …, and their ids
            setattr(self, attr, token)
            setattr(self, f"{attr}_id", backend.token_to_id(token))

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        ids = [ids] if isinstance(ids, int) else [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def batch_decode(self, rows, skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(row, skip_special_tokens) for row in rows]

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def vocab_size(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=False)

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def convert_tokens_to_ids(self, tokens):
        if isinstance(tokens, str):
            found = self.backend.token_to_id(tokens)
            return self.unk_token_id if found is None else found
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def save_pretrained(self, out: str | os.PathLike) -> None:
        import shutil

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        if out.resolve() == self.folder.resolve():
            return
        for f in sorted(self.folder.iterdir()):
            if f.is_file():
                shutil.copyfile(f, out / f.name)

    def __repr__(self) -> str:
        return f"TextTokenizer({str(self.folder)!r}, {len(self)} tokens)"


# the tokenizer_config.json keys a folder of ours holds (transformers 4.x and 5.x); a folder with
# others, or other special tokens, loads through transformers
_LIGHT_CONFIG_KEYS = {"backend", "bos_token", "clean_up_tokenization_spaces", "eos_token", "is_local",
                      "local_files_only", "mask_token", "model_max_length", "pad_token", "tokenizer_class",
                      "unk_token", "added_tokens_decoder", "extra_special_tokens"}


def _load_light(path: Path) -> TextTokenizer | None:
    """A :class:`TextTokenizer` when ``path`` is a folder of ours (tokenizer.json, our class and
    our five special tokens, each in the vocabulary), else None."""
    try:
        config = json.loads((path / "tokenizer_config.json").read_text())
        backend = Tokenizer.from_file(str(path / "tokenizer.json"))
    except Exception:  # noqa: BLE001 — missing or unreadable: the full loader reports it
        return None
    specials = {**REQUIRED_SPECIALS, "unk_token": UNK}
    added = config.get("added_tokens_decoder") or {}
    if (config.get("tokenizer_class") != TOKENIZER_CLASS or config.get("clean_up_tokenization_spaces")
            or not set(config) <= _LIGHT_CONFIG_KEYS or config.get("extra_special_tokens")
            or any(config.get(attr) != token or backend.token_to_id(token) is None for attr, token in specials.items())
            or any(backend.token_to_id(t.get("content")) != int(i) for i, t in added.items())):
        return None
    return TextTokenizer(path, backend, specials)


def _wrap(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token=PAD, bos_token=BOS, eos_token=EOS,
        mask_token=MASK, unk_token=UNK,
        clean_up_tokenization_spaces=False,  # " ." must stay " ." for a lossless decode
    )


def save_tokenizer(tok: PreTrainedTokenizerFast, out: str | os.PathLike) -> Path:
    """``save_pretrained(out)``, with a tokenizer class every transformers version knows."""
    out = Path(out)
    tok.save_pretrained(out)
    if isinstance(tok, TextTokenizer):  # a copy of a folder of ours: its class is already ours
        return out
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = TOKENIZER_CLASS
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    return out


def train_tokenizer(texts: Iterable[str], vocab_size: int = DEFAULT_VOCAB_SIZE,
                    out: str | os.PathLike | None = None, min_frequency: int = 2,
                    progress: bool = True) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and (if ``out``) save it as an HF tokenizer folder.

    The vocabulary holds the 5 specials (ids 0..4), the 256 bytes and up to
    ``vocab_size - 261`` merges (fewer when the corpus has fewer pairs seen ``min_frequency``
    times).
    """
    if vocab_size < MIN_VOCAB_SIZE:
        raise DataError(f"vocab_size must be >= {MIN_VOCAB_SIZE} ({N_BYTES} bytes + "
                        f"{len(SPECIAL_TOKENS)} special tokens), got {vocab_size}")
    n_texts = 0

    def counted() -> Iterator[str]:
        nonlocal n_texts
        for text in texts:
            if text:
                n_texts += 1
                yield text

    tokenizer = Tokenizer(models.BPE(unk_token=UNK))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=progress)
    tokenizer.train_from_iterator(counted(), trainer=trainer)
    if n_texts == 0:
        raise DataError("cannot train a tokenizer on an empty corpus (no non-empty texts)")
    tok = _wrap(tokenizer)
    if out is not None:
        save_tokenizer(tok, out)
    return tok


def _shard_specs(data: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Shard specs for :func:`cola_mm.data.loader.list_shards`; a dataset root (split folders, no tars
    of its own) stands for its ``train*`` split folders."""
    parts = str(data).split("::") if isinstance(data, (str, os.PathLike)) else [str(p) for p in data]
    specs: list[str] = []
    for part in parts:
        path = Path(part).expanduser()
        if path.is_dir() and not any(path.glob("*.tar")):
            train = sorted(d for d in path.iterdir()
                           if d.is_dir() and d.name.startswith("train") and any(d.glob("*.tar")))
            if train:
                specs.extend(str(d) for d in train)
                continue
        specs.append(part)
    return specs


def iter_shard_texts(dirs_or_patterns: str | os.PathLike | Sequence[str | os.PathLike]
                     ) -> Iterator[str]:
    """The ``txt`` field of every sample of the given shards, in order.

    Each entry is a dataset root (its ``train*`` splits are used), a folder of ``.tar``, a glob
    or brace pattern, or a tar (see :func:`cola_mm.data.loader.list_shards`).
    """
    from cola_mm.data.loader import iter_texts, list_shards  # torch-heavy; only when reading shards

    yield from iter_texts(list_shards(_shard_specs(dirs_or_patterns)))


def train_tokenizer_from_shards(data: str | os.PathLike | Sequence[str | os.PathLike],
                                vocab_size: int = DEFAULT_VOCAB_SIZE,
                                out: str | os.PathLike | None = None,
                                progress: bool = True) -> PreTrainedTokenizerFast:
    """Train on the texts of dataset dirs/shards (``cola-mm tokenizer train --data DIR…``)."""
    return train_tokenizer(iter_shard_texts(data), vocab_size=vocab_size, out=out,
                           progress=progress)


def load_tokenizer(path: str | os.PathLike, light: bool = False) -> PreTrainedTokenizerFast | TextTokenizer:
    """Load our tokenizer folder or any HF (fast) tokenizer folder, offline.

    ``light``: a folder of ours loads as a :class:`TextTokenizer` (no transformers import);
    any other folder loads as below.

    A foreign tokenizer missing ``<pad>``, ``<bos>``, ``<eos>`` or ``<mask>`` (GPT-2 has no pad
    and no mask) gets the missing ones **added as new tokens at the end of its vocabulary**, so
    ``tok.pad_token_id`` etc. are always set; size embeddings with ``len(tok)``, not
    ``tok.vocab_size``. Decoding never cleans up spaces, so decoding stays lossless.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"tokenizer folder does not exist: {path}")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise DataError(f"{path} holds no tokenizer files (expected one of {', '.join(TOKENIZER_FILES)})")
    if light and (tok := _load_light(path)) is not None:
        return tok
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        if any((path / f).is_file() for f in CONFIG_FILES):
            tok = AutoTokenizer.from_pretrained(str(path), use_fast=True, local_files_only=True)
        elif (path / "tokenizer.json").is_file():
            tok = PreTrainedTokenizerFast(tokenizer_file=str(path / "tokenizer.json"))
        else:
            raise DataError(f"{path} has tokenizer files but no tokenizer_config.json or "
                            f"tokenizer.json to tell how to load them")
    except Exception as err:  # noqa: BLE001 — the tokenizers library raises a bare Exception for a corrupt file
        if isinstance(err, DataError):
            raise
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"cannot load the tokenizer in {path}: {first_line}") from err
    if not isinstance(tok, PreTrainedTokenizerFast):
        raise DataError(f"{path} holds a slow ({type(tok).__name__}) tokenizer; a fast "
                        f"(tokenizers-backed) one is required")
    missing = {attr: token for attr, token in REQUIRED_SPECIALS.items()
               if getattr(tok, attr) is None}
    if missing:
        tok.add_special_tokens(missing)
    tok.clean_up_tokenization_spaces = False
    return tok
