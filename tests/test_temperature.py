"""The sampler's noise temperature: each job's starting noise is ``temperature · ε``.

On the bundled checkpoint, at 2 ODE steps: temperature 1 is the old sampler exactly; 0 makes
the output independent of the seed; another value really changes it; the defaults travel in
``pipeline.json`` (``cola-mm export --*-temperature``) and the job commands take ``--temperature``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cola_mm.core.config import ConfigError
from cola_mm.pipeline import ColaPipeline, PipelineConfig
from cola_mm.prior.sampler import SamplerConfig

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "checkpoints" / "demo"
PROMPT = "a large red circle in the top left"


@pytest.fixture(scope="module")
def pipe():
    return ColaPipeline.from_pretrained(DEMO)


def pixels(images) -> np.ndarray:
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def test_sampler_config_checks_the_range():
    for bad in (-0.1, 2.5):
        with pytest.raises(ConfigError, match="temperature"):
            SamplerConfig(temperature=bad)
    assert SamplerConfig().temperature == 1.0


def test_defaults_come_from_pipeline_json_and_zero_ignores_the_seed(pipe):
    assert PipelineConfig().image_temperature == PipelineConfig().text_temperature == 1.0  # a folder without them
    saved = json.loads((DEMO / "pipeline.json").read_text())
    assert pipe.config.image_temperature == saved["image_temperature"]
    default = pixels(pipe.generate_image(PROMPT, steps=2, seed=0, n=2))
    assert np.array_equal(default, pixels(pipe.generate_image(PROMPT, steps=2, seed=0, n=2,
                                                              temperature=pipe.config.image_temperature)))
    one = pixels(pipe.generate_image(PROMPT, steps=2, seed=0, n=2, temperature=1.0))
    half = pixels(pipe.generate_image(PROMPT, steps=2, seed=0, n=2, temperature=0.5))
    assert np.abs(half - one).mean() > 1.0  # the noise really is scaled
    zero = pixels(pipe.generate_image(PROMPT, steps=2, seed=0, n=2, temperature=0.0))
    assert np.array_equal(zero[0], zero[1])  # seeds 0 and 1: one image
    texts = [pipe.generate_text("ROMEO. But soft", 8, steps=2, seed=s, temperature=0.0, lead_blocks=0) for s in (0, 5)]
    assert texts[0] == texts[1]
    assert pipe.generate_text("ROMEO. But soft", 8, steps=2, seed=0) == \
        pipe.generate_text("ROMEO. But soft", 8, steps=2, seed=0, temperature=pipe.config.text_temperature)
    image = REPO / "apps" / "examples" / "digit_3.png"
    captions = pipe.caption([image, image], steps=2, seeds=[0, 9], temperature=0.0)
    assert captions[0] == captions[1]


def test_export_sets_the_defaults_and_the_cli_takes_the_option(pipe, tmp_path):
    out = tmp_path / "cold"
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "export", str(DEMO), str(out), "--image-temperature", "0",
                        "--text-temperature", "0.7", "--text-lead-blocks", "2", "--text-lead-temperature", "0.9"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    saved = json.loads((out / "pipeline.json").read_text())
    assert (saved["image_temperature"], saved["text_temperature"]) == (0.0, 0.7)
    assert (saved["text_lead_blocks"], saved["text_lead_temperature"]) == (2, 0.9)
    assert saved["caption_temperature"] == pipe.config.caption_temperature  # not given: kept from SRC
    # readable by others as any new file is (safetensors writes weights 0o600, mkdtemp folders 0o700)
    mask = os.umask(0o022)
    os.umask(mask)
    for f in [out, *out.rglob("*")]:
        assert f.stat().st_mode & 0o777 == (0o777 if f.is_dir() else 0o666) & ~mask, f
    cold = ColaPipeline.from_pretrained(out)
    got = pixels(cold.generate_image(PROMPT, steps=2, seed=3))
    want = pixels(pipe.generate_image(PROMPT, steps=2, seed=3, temperature=0.0))
    assert np.array_equal(got, want)  # the default from pipeline.json acts as the argument does
    for args in (["generate", "image", "--prompt", "x", "--temperature", "3"],
                 ["generate", "text", "--prompt", "x", "--temperature", "cold"],
                 ["export", str(DEMO), str(tmp_path / "bad"), "--caption-temperature", "-1"]):
        r = subprocess.run([sys.executable, "-m", "cola_mm.cli", *args], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and "temperature" in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
    png = tmp_path / "t.png"
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "generate", "image", "--ckpt", str(DEMO),
                        "--prompt", PROMPT, "--steps", "2", "--temperature", "0", "--out", str(png)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert np.array_equal(pixels([Image.open(png).convert("RGB")])[0], want[0])


def test_the_text_lead_block_comes_from_pipeline_json_and_can_be_turned_off(pipe):
    """The bundle starts its first text block from unscaled noise (text_lead_blocks 1 at
    text_lead_temperature 1; docs/experiments.md §16), the rest at text_temperature."""
    saved = json.loads((DEMO / "pipeline.json").read_text())
    assert (pipe.config.text_lead_blocks, pipe.config.text_lead_temperature) == \
        (saved["text_lead_blocks"], saved["text_lead_temperature"]) == (1, 1.0)
    assert PipelineConfig().text_lead_blocks == 0  # a folder without them: no lead
    prompt, kw = "ROMEO.\n", {"max_new_tokens": 12, "steps": 2}
    default = pipe.generate_text(prompt, seed=0, **kw)
    assert default.strip()  # a continuation to compare (at 2 steps some prompts decode to nothing)
    assert default == pipe.generate_text(prompt, seed=0, lead_blocks=1, **kw)
    assert default != pipe.generate_text(prompt, seed=0, lead_blocks=0, **kw)  # the lead really acts
    # temperature 0 stays seed-independent only without the lead
    assert len({pipe.generate_text(prompt, seed=s, temperature=0.0, **kw) for s in (0, 3, 5)}) > 1
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "generate", "text", "--prompt", prompt, "--max-new-tokens",
                        "12", "--steps", "2", "--lead-blocks", "0", "--temperature", "0"], capture_output=True, text=True,
                       timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr
    want = prompt + pipe.generate_text(prompt, seed=9, temperature=0.0, lead_blocks=0, **kw)
    assert r.stdout.rstrip("\n") == want.rstrip("\n")  # the CLI prints the prompt, then its continuation
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "generate", "text", "--prompt", prompt, "--lead-blocks",
                        "-1"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--lead-blocks" in r.stderr and "Traceback" not in r.stderr


def test_export_sets_the_solver_and_time_shift(pipe, tmp_path):
    """--time-shift and --solver travel in pipeline.json and change what every job samples; a
    shift of 0 or an unknown solver is a one-line error."""
    out = tmp_path / "shifted"
    r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "export", str(DEMO), str(out), "--time-shift", "2",
                        "--solver", "heun"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    saved = json.loads((out / "pipeline.json").read_text())
    assert (saved["time_shift"], saved["solver"]) == (2.0, "heun")
    assert saved["image_temperature"] == pipe.config.image_temperature  # the rest kept from SRC
    shifted = ColaPipeline.from_pretrained(out)
    assert not np.array_equal(pixels(shifted.generate_image(PROMPT, steps=2, seed=3)),
                              pixels(pipe.generate_image(PROMPT, steps=2, seed=3)))
    for bad, word in ((["--time-shift", "0"], "time-shift"), (["--solver", "rk9"], "solver")):
        r = subprocess.run([sys.executable, "-m", "cola_mm.cli", "export", str(DEMO), str(tmp_path / "bad"), *bad],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2 and word in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr
