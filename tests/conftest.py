"""Shared fixtures: a tiny corpus, tiny shards of every dataset and a tiny tokenizer (built once)."""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]

# Fuzzing budgets (tests/test_fuzz.py): "ci" (the default) keeps the suite within its time limit
# and is derandomized (the same cases every run); `--hypothesis-profile fuzz` runs 30x more,
# from random seeds.
settings.register_profile("ci", max_examples=10, deadline=None, derandomize=True, database=None)
settings.register_profile("fuzz", max_examples=300, deadline=None, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
FUZZ_COUNTS: Counter = Counter()


def fuzz_budget(n: int) -> int:
    """``n`` cases under the ci profile, 30 n under fuzz (read when the test module is imported,
    after pytest has loaded the profile)."""
    return n * max(1, settings.default.max_examples // 10)


def count_case(surface: str) -> None:
    FUZZ_COUNTS[surface] += 1


def pytest_sessionfinish(session, exitstatus):
    out = os.environ.get("COLA_MM_FUZZ_COUNTS")
    if out and FUZZ_COUNTS:
        failed = session.testsfailed
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps({"max_examples": settings.default.max_examples, "cases": dict(FUZZ_COUNTS),
                                         "tests_failed": failed}, indent=2) + "\n")

WORDS = ("the quick brown fox jumps over a lazy dog and cat sat on mat while king queen "
         "speak of love war death night day my lord good sir what say you").split()


def bench_module(name: str):
    """A script of ``bench/`` (``bench/{name}.py``, not a package) imported as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def write_corpus(folder: Path, books: int = 4, paragraphs: int = 60, seed: int = 0) -> Path:
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(books):
        text = "\n\n".join(" ".join(rng.choice(WORDS) for _ in range(40)) + "." for _ in range(paragraphs))
        (folder / f"book{i}.txt").write_text(text, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def tiny_datasets(tmp_path_factory) -> Path:
    """datasets/{text,shapes,digits,tokenizer} at toy scale (vocab 400); the optional icons left out."""
    from cola_mm.cli import main

    root = tmp_path_factory.mktemp("datasets")
    corpus = write_corpus(root / "corpus")
    assert main(["data", "all", "--out", str(root), "--shapes-count", "200", "--text-source",
                 str(corpus), "--vocab-size", "400", "--doc-chars", "400", "--without", "icons"]) == 0
    return root


def _base(run_dir, **over):
    cfg = {"run_dir": str(run_dir), "optim": {"lr": 0.003, "warmup_steps": 2}, "batch_size": 4, "max_steps": 4,
           "log_every": 2, "val_batches": 1, "ckpt_every": 4}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="session")
def tiny_mm_pipeline(tiny_datasets, tmp_path_factory):
    """A pipeline folder of all three jobs: tiny image VAE, Text VAE and DiT, a few steps each."""
    from cola_mm.training.loop import train
    from cola_mm.training.config import TrainConfig

    d = tiny_datasets
    root = tmp_path_factory.mktemp("mm")
    img = train(TrainConfig.from_dict(_base(
        root / "img", stage="vae-image", model={"preset": "tiny"},
        data={"train": [{"shards": str(d / "shapes" / "train")}, {"shards": str(d / "digits" / "train")}],
              "val": [{"shards": str(d / "shapes" / "val")}], "shuffle_buffer": 10})), progress=False)
    txt = train(TrainConfig.from_dict(_base(
        root / "txt", stage="vae-text", model={"preset": "tiny"},
        data={"train": [{"shards": str(d / "text" / "train")}], "tokenizer": str(d / "tokenizer"), "seq_len": 32,
              "shuffle_buffer": 10})), progress=False)
    out = train(TrainConfig.from_dict(_base(
        root / "prior", stage="prior", model={"vae": str(txt), "image_vae": str(img), "dit": {"preset": "tiny"}},
        loss={"cond_dropout": 0.2},
        data={"train": [{"shards": str(d / "text" / "train")}],
              "pairs": [{"shards": str(d / "shapes" / "train")}, {"shards": str(d / "digits" / "train")}],
              "val": [{"shards": str(d / "text" / "val")}], "val_pairs": [{"shards": str(d / "shapes" / "val")}],
              "jobs": {"text_to_text": 1, "text_to_image": 1, "image_to_text": 1},
              "tokenizer": str(d / "tokenizer"), "seq_len": 64, "shuffle_buffer": 10})), progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_baselines(tiny_datasets, tmp_path_factory) -> dict[str, Path]:
    """{"ar": folder, "masked_diffusion": folder}: the two text baselines, tiny, a few steps each."""
    from cola_mm.training.config import TrainConfig
    from cola_mm.training.loop import train

    d = tiny_datasets
    root = tmp_path_factory.mktemp("baselines")
    data = {"train": [{"shards": str(d / "text" / "train")}], "val": [{"shards": str(d / "text" / "val")}],
            "tokenizer": str(d / "tokenizer"), "seq_len": 64, "shuffle_buffer": 10}
    return {family: train(TrainConfig.from_dict(_base(root / family, stage=stage, model={"preset": "tiny"},
                                                      data=data)), progress=False)
            for family, stage in (("ar", "ar"), ("masked_diffusion", "masked-diffusion"))}
