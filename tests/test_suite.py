"""`cola-mm eval suite`: every job on every checkpoint in one run, mean ± std over seeds, the
Markdown tables, "not available" rows for a checkpoint without an image VAE, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from cola_mm.data.shards import DataError
from cola_mm.evaluation import suite


class FixedJudge:
    """Reads every image as a small red circle in the top left (so the suite's plumbing, not
    the tiny model, decides the figures)."""

    def predict(self, images):
        return [{"count": 1, "objects": [{"shape": "circle", "color": "red", "size": "small", "cell": "top left"}],
                 "shape": "circle", "color": "red", "size": "small", "cell": "top left", "kind": "shapes",
                 "digit": 7} for _ in images]


@pytest.fixture(scope="module")
def text_only(tiny_mm_pipeline, tmp_path_factory):
    """The tiny pipeline without its image VAE (a text-only prior)."""
    out = tmp_path_factory.mktemp("text_only") / "model"
    shutil.copytree(tiny_mm_pipeline, out)
    shutil.rmtree(out / "image_vae")
    cfg = json.loads((out / "pipeline.json").read_text())
    cfg["jobs"] = ["text_to_text"]
    (out / "pipeline.json").write_text(json.dumps(cfg))
    return out


def test_suite_runs_every_job_on_two_checkpoints(tiny_mm_pipeline, text_only, tiny_datasets, tmp_path):
    report = suite.run_suite([tiny_mm_pipeline, text_only], data_root=tiny_datasets, probe_dir=FixedJudge(),
                             seeds=(0, 1), limit=3, steps=2, text_prompts=3, context_windows=2, caption_rows=2,
                             progress=False, grid_examples=2)
    assert len(report["checkpoints"]) == 2
    full, text = report["checkpoints"].values()
    t2i = full["text_to_image"]["summary"]
    assert len(full["text_to_image"]["per_seed"]) == 2 and t2i["shapes_test_all_acc"]["n"] == 2
    assert {"shapes_test_all_acc", "shapes_novel_all_acc", "digits_test_all_acc"} <= set(t2i)
    i2t = full["image_to_text"]["summary"]
    assert {"shapes_test_1obj_all_acc", "shapes_two_2obj_all_acc", "digits_test_all_acc"} <= set(i2t)
    assert all(0 <= v["mean"] <= 1 for k, v in i2t.items() if k.endswith("_acc"))
    assert text["text_to_image"] == suite.NOT_AVAILABLE and text["image_to_text"] == suite.NOT_AVAILABLE
    for entry in (full, text):
        figures = entry["text"]["summary"]
        assert 0 <= figures["corpus_word_rate"]["mean"] <= 1 and figures["corpus_word_rate"]["n"] == 2
        assert "same_seed_difflib" in figures and "text_foreign_gap" in entry["context"]["summary"]
    assert "caption_foreign_gap" in full["context"]["summary"] and "caption_foreign_gap" not in text["context"]["summary"]
    md = tmp_path / "results.md"
    suite.write_markdown(report, md, "cola-mm eval suite --ckpt A --ckpt B", tmp_path / "suite.json")
    page = md.read_text()
    assert "mean ± std" in page and "cola-mm eval suite --ckpt A --ckpt B" in page and report["machine"] in page
    rows = [line for line in page.splitlines() if line.startswith("| shapes_") or line.startswith("| digits_")]
    assert rows and all(line.rstrip(" |").endswith(suite.NOT_AVAILABLE) for line in rows)  # the text-only column
    assert "| shapes_test (n=3) | " in page and " ± " in page


def test_mean_std_and_aggregate():
    assert suite.mean_std([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5))
    assert suite.mean_std([0.5]) == (0.5, 0.0)
    agg = suite.aggregate([{"a": 1.0, "b": 2.0}, {"a": 3.0}])
    assert agg["a"]["mean"] == 2.0 and agg["b"] == {"mean": 2.0, "std": 0.0, "n": 1}


def test_missing_split_and_root_are_one_line_errors(tiny_mm_pipeline, tiny_datasets, tmp_path):
    with pytest.raises(DataError, match="no dataset root"):
        suite.run_suite([tiny_mm_pipeline], data_root=tmp_path / "nope", probe_dir=None, progress=False)
    partial = tmp_path / "partial"
    shutil.copytree(tiny_datasets, partial)
    shutil.rmtree(partial / "shapes" / "two")
    with pytest.raises(DataError, match="missing split .*shapes/two"):
        suite.run_suite([tiny_mm_pipeline], data_root=partial, probe_dir=None, seeds=(0,), limit=2, steps=1,
                        jobs=("images",), progress=False)
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "eval", "suite", "--ckpt", str(tiny_mm_pipeline),
                        "--data", str(partial), "--probe", "none", "--jobs", "images", "--limit", "2",
                        "--seeds", "0", "--json-dir", "", "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "missing split" in r.stderr, r.stderr
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "eval", "suite", "--jobs", "images,typo"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--jobs: unknown ['typo']" in r.stderr, r.stderr
