"""Shared fixtures: a tiny corpus, tiny shards of every dataset and a tiny tokenizer (built once)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]

WORDS = ("the quick brown fox jumps over a lazy dog and cat sat on mat while king queen "
         "speak of love war death night day my lord good sir what say you").split()


def write_corpus(folder: Path, books: int = 4, paragraphs: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(books):
        text = "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(40)) + "." for _ in range(paragraphs))
        (folder / f"book{i}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory) -> Path:
    """datasets/{text,shapes,digits,tokenizer} at toy scale (vocab 400)."""
    from cola_mm.cli import main

    root = tmp_path_factory.mktemp("datasets")
    corpus = write_corpus(root / "corpus")
    assert main(["data", "all", "--out", str(root), "--shapes-count", "200", "--text-source",
                 str(corpus), "--vocab-size", "400", "--doc-chars", "400"]) == 0
    return root
