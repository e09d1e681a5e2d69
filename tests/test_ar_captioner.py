"""The AR captioning specialist (issue 19): trains through the generic loop on image–caption
shards with the frozen image VAE of the unified model, exports and reloads, captions like the
pipeline, is scored by the suite on the caption rows only, and is counted by the matching harness."""

from __future__ import annotations

import json

import pytest
import torch

from cola_mm.core.config import ConfigError
from cola_mm.training.config import TrainConfig


def cap_config(datasets, pipeline, run_dir, **over) -> dict:
    cfg = {"stage": "ar-captioner", "run_dir": str(run_dir),
           "model": {"image_vae": str(pipeline), "preset": "tiny"},
           "data": {"pairs": [{"shards": str(datasets / "shapes" / "train")}],
                    "val_pairs": [{"shards": str(datasets / "shapes" / "val")}],
                    "tokenizer": str(datasets / "tokenizer"), "caption_tokens": 24, "shuffle_buffer": 20,
                    "caption_targets": "canonical"},
           "optim": {"lr": 0.01, "warmup_steps": 2}, "batch_size": 8, "max_steps": 30, "log_every": 1,
           "val_batches": 2, "ckpt_every": 30}
    cfg.update(over)
    return cfg


@pytest.fixture(scope="module")
def captioner(tiny_datasets, tiny_mm_pipeline, tmp_path_factory):
    from cola_mm.training.loop import train

    run = tmp_path_factory.mktemp("cap") / "run"
    out = train(TrainConfig.from_dict(cap_config(tiny_datasets, tiny_mm_pipeline, run)), progress=False)
    return run, out


def test_trains_exports_reloads_and_captions(captioner, tiny_mm_pipeline):
    from cola_mm.baselines.ar_captioner import ARCaptioner
    from cola_mm.core.families import detect_family
    from cola_mm.evaluation.generators import load_text_generator
    from cola_mm.vae_image.model import ImageVAE

    run, out = captioner
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in recs if "loss" in r]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5, losses
    val = [r for r in recs if "val_loss" in r][-1]
    assert val["val_ppl"] == pytest.approx(torch.tensor(val["val_loss"]).exp().item(), rel=1e-6)

    assert detect_family(out) == "ar_captioner"
    cap = load_text_generator(out)
    assert isinstance(cap, ARCaptioner) and not hasattr(cap, "generate_text")
    frozen = ImageVAE.from_pretrained(tiny_mm_pipeline / "image_vae")  # the image VAE is the pipeline's, untouched
    assert all(torch.equal(a, b) for a, b in zip(frozen.state_dict().values(), cap.image_vae.state_dict().values()))
    from PIL import Image

    images = [Image.new("RGB", (64, 64), c) for c in ("red", "blue", "white")]
    state = torch.random.get_rng_state()
    a = cap.caption(images, seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert len(a) == 3 and all(isinstance(t, str) for t in a) and a == cap.caption(images, seed=0)
    assert len(cap.caption(images[0], seed=1)) == 1  # one image, not a list


def test_caption_command_takes_the_captioner_folder(captioner, tmp_path, capsys):
    """`cola-mm caption --ckpt CAPTIONER img…`: one tab-separated line per image, the captioner's own
    seeded captions; the prior's sampler options are a one-line error naming what it takes."""
    from PIL import Image

    from cola_mm.baselines.ar_captioner import ARCaptioner
    from cola_mm.cli import main

    _, out = captioner
    paths = []
    for colour in ("red", "blue"):
        paths.append(tmp_path / f"{colour}.png")
        Image.new("RGB", (64, 64), colour).save(paths[-1])
    assert main(["caption", "--ckpt", str(out), *map(str, paths), "--seed", "3"]) in (0, None)
    want = ARCaptioner.from_pretrained(out).caption([str(p) for p in paths], seed=3)
    assert capsys.readouterr().out.splitlines() == [f"{p}\t{c}" for p, c in zip(paths, want)]
    for extra, flag in ((["--steps", "4"], "--steps"), (["--temperature", "0.5"], "--temperature"),
                        (["--no-rounding"], "--rounding/--no-rounding")):
        assert main(["caption", "--ckpt", str(out), str(paths[0]), *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert err.startswith("cola-mm: error:") and f"{flag} do not apply to it (it takes --seed)" in err, err


def test_the_suite_scores_only_its_caption_rows(captioner, tiny_datasets):
    from cola_mm.evaluation import suite
    from test_suite import FixedJudge

    _, out = captioner
    report = suite.run_suite([out], data_root=tiny_datasets, probe_dir=FixedJudge(), seeds=(0,), limit=3, steps=2,
                             text_prompts=2, context_windows=2, caption_rows=2, progress=False, grid_examples=0)
    entry = next(iter(report["checkpoints"].values()))
    assert entry["family"] == "ar_captioner"
    assert entry["text_to_image"] == suite.NOT_AVAILABLE and entry["text"] == suite.NOT_AVAILABLE
    assert entry["context"] == suite.NOT_AVAILABLE
    assert "shapes_test_1obj_all_acc" in entry["image_to_text"]["summary"]


def test_matching_counts_the_captioner(tiny_datasets, tiny_mm_pipeline, tmp_path):
    from cola_mm.training import matching

    cfg = TrainConfig.from_dict(cap_config(tiny_datasets, tiny_mm_pipeline, tmp_path / "r"))
    r = matching.count(cfg)
    assert r["family"] == "ar_captioner" and r["vae_flops_per_row"] > 0
    assert r["tokens_per_row"] > 24  # the image prefix + the caption
    assert r["flops_per_row"] == 6 * r["n_matmul"] * r["tokens_per_row"] + r["vae_flops_per_row"]


@pytest.mark.parametrize("over, match", [
    ({"model": {"preset": "tiny"}}, "model.image_vae"),
    ({"loss": {"beta": 1}}, "has no loss options"),
    ({"data": {"train": [{"shards": "x"}], "tokenizer": "t"}}, "trains on image–caption shards"),
])
def test_config_errors(tiny_datasets, tiny_mm_pipeline, tmp_path, over, match):
    from cola_mm.training.stages.ar_captioner import ARCaptionerStage

    with pytest.raises(ConfigError, match=match):
        ARCaptionerStage(TrainConfig.from_dict(cap_config(tiny_datasets, tiny_mm_pipeline, tmp_path, **over)))
