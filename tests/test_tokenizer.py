"""The byte-level BPE tokenizer: lossless round trips, special ids, HF save/load, foreign
tokenizers, training from shards and clear errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from cola_mm.data.shards import DataError, ShardWriter
from cola_mm.vae_text.tokenizer import (SPECIAL_TOKENS, iter_shard_texts, load_tokenizer,
                                train_tokenizer, train_tokenizer_from_shards)

CORPUS = [
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate.",
    "To be, or not to be, that is the question:\r\nWhether 'tis nobler in the mind to suffer",
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Numbers 0123456789 and code: def f(x): return x ** 2\n\tindented",
    "日本語のテキスト、中文文本。 مرحبا بالعالم 😀🎉",
] * 8

NASTY = [
    "",
    " ",
    "    ",
    "\t\t",
    "\r\n",
    "a\r\nb\rc\n",
    "  leading and trailing spaces  ",
    "".join(chr(c) for c in range(0x20)),  # every C0 control character, \x00 included
    "\x7f\x80\x9f\u00a0\u200b\u2028\u2029\ufeff",
    "Emoji 😀 👍🏽 🇫🇷 👩‍👩‍👧‍👦 🏳️‍🌈",  # skin tone, flag, ZWJ sequences
    "中文 日本語 한국어 ภาษาไทย",
    "العربية مرحبا (RTL) עברית",
    "combining: e\u0301 a\u0308 \U0001d54f",
    "don't . , ' s  double  spaces , before punctuation .",
    "<mask> <pad> literal specials <bos><eos>",
    "Thou art more lovely and more temperate.",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[PreTrainedTokenizerFast, Path]:
    out = tmp_path_factory.mktemp("tok") / "bpe"
    return train_tokenizer(CORPUS, vocab_size=400, out=out, progress=False), out


def test_special_token_ids(trained):
    tok, _ = trained
    assert tok.convert_tokens_to_ids(SPECIAL_TOKENS) == [0, 1, 2, 3, 4]
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.mask_token_id,
            tok.unk_token_id) == (0, 1, 2, 3, 4)
    assert 256 + 5 < len(tok) <= 400  # bytes + specials + some merges
    assert tok.encode("") == []
    assert tok.encode("temperate") != []  # no special tokens are added by encode
    assert 1 not in tok.encode("temperate") and 2 not in tok.encode("temperate")


@pytest.mark.parametrize("text", NASTY)
def test_round_trip_is_lossless(trained, text):
    tok, _ = trained
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    assert tok.unk_token_id not in ids


def test_merges_were_learned(trained):
    tok, _ = trained
    text = "Thou art more lovely and more temperate."
    assert len(tok.encode(text)) < len(text.encode("utf-8")) / 2


def test_autotokenizer_loads_saved_folder_offline(trained):
    tok, out = trained
    assert (out / "tokenizer.json").is_file() and (out / "tokenizer_config.json").is_file()
    auto = AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    assert auto.mask_token_id == 3 and auto.pad_token_id == 0
    for text in NASTY + CORPUS[:5]:
        assert auto.encode(text) == tok.encode(text)
        assert auto.decode(auto.encode(text)) == text
    again = load_tokenizer(out)
    assert again.get_vocab() == tok.get_vocab()


def test_tokenizer_json_alone_loads(trained, tmp_path):
    _, out = trained
    shutil.copy(out / "tokenizer.json", tmp_path / "tokenizer.json")
    tok = load_tokenizer(tmp_path)
    assert tok.mask_token_id == 3 and tok.pad_token_id == 0 and tok.eos_token_id == 2
    assert tok.decode(tok.encode(NASTY[9])) == NASTY[9]


def _gpt2_style_folder(path: Path) -> Path:
    """A GPT-2 layout built from scratch: vocab.json + merges.txt + configs, one special
    ``<|endoftext|>`` serving as bos/eos/unk, and no pad or mask token."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=350, min_frequency=2,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    path.mkdir()
    bpe.save_model(str(path))
    (path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024,
         "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}))
    (path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return path


def test_foreign_tokenizer_gets_missing_specials(tmp_path):
    folder = _gpt2_style_folder(tmp_path / "gpt2")
    original = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    size = len(original)
    assert original.pad_token is None and original.mask_token is None
    tok = load_tokenizer(folder)
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert tok.bos_token == tok.eos_token == "<|endoftext|>"  # kept, not replaced
    assert tok.pad_token == "<pad>" and tok.mask_token == "<mask>"
    assert {tok.pad_token_id, tok.mask_token_id} == {size, size + 1} and len(tok) == size + 2
    text = "Shall I compare thee to a summer's day? 😀"
    assert tok.encode(text) == original.encode(text)
    assert tok.decode(tok.encode(text)) == text


def test_load_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_tokenizer(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "README.md").write_text("no tokenizer here")
    with pytest.raises(DataError, match="no tokenizer files"):
        load_tokenizer(tmp_path / "empty")


def test_train_errors():
    with pytest.raises(DataError, match="vocab_size must be >= 261"):
        train_tokenizer(CORPUS, vocab_size=260, progress=False)
    with pytest.raises(DataError, match="empty corpus"):
        train_tokenizer([], vocab_size=300, progress=False)
    with pytest.raises(DataError, match="empty corpus"):
        train_tokenizer(["", ""], vocab_size=300, progress=False)


def test_train_from_shards(tmp_path):
    root = tmp_path / "text"
    for split, n in (("train", 30), ("val", 5)):
        with ShardWriter(root / split, max_count=8) as w:
            for i in range(n):
                w.write(f"{i:06d}", {"txt": f"{split} document {i}: " + CORPUS[i % 5],
                                     "json": {"i": i}})
    texts = list(iter_shard_texts(root))  # a dataset root means its train split
    assert len(texts) == 30 and texts[3].startswith("train document 3: ")
    assert len(list(iter_shard_texts([root / "val"]))) == 5
    assert len(list(iter_shard_texts(str(root / "train" / "00000[01].tar")))) == 16
    tok = train_tokenizer_from_shards([root], vocab_size=300, out=tmp_path / "tok", progress=False)
    assert load_tokenizer(tmp_path / "tok").get_vocab() == tok.get_vocab()
    with pytest.raises(DataError):
        train_tokenizer_from_shards([tmp_path / "nothing"], vocab_size=300, progress=False)


# --------------------------------------------------------------------------- light loading


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("folder", ["trained", "bundled"])
def test_light_tokenizer_gives_the_same_ids_and_text_as_transformers(trained, folder):
    """``load_tokenizer(path, light=True)`` (the pipeline's) must be indistinguishable from the
    transformers tokenizer on everything generation and evaluation call."""
    from cola_mm.vae_text.tokenizer import TextTokenizer

    path = trained[1] if folder == "trained" else REPO / "checkpoints" / "demo" / "tokenizer"
    full, light = load_tokenizer(path), load_tokenizer(path, light=True)
    assert isinstance(light, TextTokenizer) and isinstance(full, PreTrainedTokenizerFast)
    assert len(light) == len(full) and light.vocab_size == full.vocab_size
    assert light.get_vocab() == full.get_vocab()
    for attr in ("pad", "bos", "eos", "mask", "unk"):
        assert getattr(light, f"{attr}_token") == getattr(full, f"{attr}_token")
        assert getattr(light, f"{attr}_token_id") == getattr(full, f"{attr}_token_id")
    assert light.convert_tokens_to_ids(["<eos>", "no such token"]) == full.convert_tokens_to_ids(["<eos>", "no such token"])
    plays = (REPO / "README.md").read_text()[:4000]
    for text in [*NASTY, *CORPUS[:5], plays]:
        for specials in (False, True):
            ids = light.encode(text, add_special_tokens=specials)
            assert ids == full.encode(text, add_special_tokens=specials), text
        for skip in (False, True):
            assert light.decode(ids, skip_special_tokens=skip) == full.decode(ids, skip_special_tokens=skip), text
    import torch

    rows = torch.randint(0, len(full), (20, 24), generator=torch.Generator().manual_seed(0))
    rows[:, ::5] = torch.arange(5).repeat(4)[:20, None]  # special tokens among the others
    for row in rows:
        for skip in (False, True):
            assert light.decode(row, skip_special_tokens=skip) == full.decode(row.tolist(), skip_special_tokens=skip)
    assert light.decode(7) == full.decode(7)
    assert light.batch_decode(rows[:3], skip_special_tokens=True) == full.batch_decode(rows[:3], skip_special_tokens=True)


def test_light_loading_falls_back_for_other_folders_and_saves_a_full_copy(trained, tmp_path):
    from cola_mm.vae_text.tokenizer import TextTokenizer, save_tokenizer

    gpt2 = _gpt2_style_folder(tmp_path / "gpt2")
    tok = load_tokenizer(gpt2, light=True)  # not ours (no pad, no mask): transformers, with them added
    assert isinstance(tok, PreTrainedTokenizerFast) and tok.mask_token == "<mask>"
    other = tmp_path / "other"
    shutil.copytree(trained[1], other)
    config = json.loads((other / "tokenizer_config.json").read_text())
    (other / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "<eos>"}))
    assert isinstance(load_tokenizer(other, light=True), PreTrainedTokenizerFast)  # other specials
    light = load_tokenizer(trained[1], light=True)
    assert isinstance(light, TextTokenizer)
    save_tokenizer(light, tmp_path / "copy")
    again = load_tokenizer(tmp_path / "copy")  # the full loader reads the copy
    assert isinstance(again, PreTrainedTokenizerFast) and len(again) == len(light)
    assert again.encode(NASTY[9]) == light.encode(NASTY[9])
    save_tokenizer(light, trained[1])  # onto its own folder: nothing to do
    assert isinstance(load_tokenizer(trained[1], light=True), TextTokenizer)


def test_loading_a_pipeline_does_not_import_transformers():
    """transformers costs about 1.5 s of every app and CLI start; generation never needs it."""
    import subprocess
    import sys

    code = ("import sys; from cola_mm.pipeline import ColaPipeline; "
            f"p = ColaPipeline.from_pretrained({str(REPO / 'checkpoints' / 'demo')!r}); "
            "p.generate_text('ROMEO.', 4, steps=1); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('transformers', 'diffusers')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
