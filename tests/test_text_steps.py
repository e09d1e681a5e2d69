"""A text-only step count (``pipeline.json`` ``text_steps``): text continuation samples with it by
default, images and captions keep ``default_steps``; 0 (and folders without it) means
``default_steps``; ``cola-mm export --text-steps`` sets it."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from cola_mm.core.config import ConfigError
from cola_mm.pipeline import ColaPipeline, PipelineConfig, job_steps

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "checkpoints" / "demo"
PROMPT = "ROMEO. But soft, what light"


def test_job_steps_reads_text_steps_for_text_only():
    plain = PipelineConfig(default_steps=16)
    assert plain.text_steps == 0  # a folder without it
    assert [job_steps(plain, j) for j in ("text", "image", "caption")] == [16, 16, 16]
    text8 = PipelineConfig(default_steps=16, text_steps=8)
    assert [job_steps(text8, j) for j in ("text", "image", "caption")] == [8, 16, 16]
    with pytest.raises(ConfigError, match="text_steps"):
        PipelineConfig(text_steps=-1)
    with pytest.raises(ConfigError, match="default_steps"):
        PipelineConfig(default_steps=0)


def test_continuation_samples_with_text_steps_by_default():
    pipe = ColaPipeline.from_pretrained(DEMO)
    two = pipe.generate_text(PROMPT, 8, steps=2, seed=0)
    sixteen = pipe.generate_text(PROMPT, 8, steps=16, seed=0)
    assert two != sixteen  # the step count shows in the text, so the next check can tell them apart
    pipe.config = dataclasses.replace(pipe.config, default_steps=16, text_steps=2)
    assert pipe.generate_text(PROMPT, 8, seed=0) == two
    assert pipe.generate_text(PROMPT, 8, steps=16, seed=0) == sixteen  # an explicit count still wins


def test_export_sets_text_steps(tmp_path):
    out = tmp_path / "fast_text"
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "export", str(DEMO), str(out), "--text-steps", "8"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    saved = json.loads((out / "pipeline.json").read_text())
    assert saved["text_steps"] == 8
    assert saved["default_steps"] == json.loads((DEMO / "pipeline.json").read_text())["default_steps"]
    bad = subprocess.run([sys.executable, "-m", "cola_mm.cli", "export", str(DEMO), str(tmp_path / "x"),
                          "--text-steps", "-1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "text-steps" in bad.stderr
