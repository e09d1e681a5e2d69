"""Probe classifier: configs, image conversion, augmentation, judging rules, save/load round
trip, predictions that are valid labels, and a probe that must learn (overfit a fixed batch)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from cola_mm.core.config import ConfigError
from cola_mm.data.digits import judge_digit
from cola_mm.data.shapes import ALL_PAIRS, BACKGROUND, NOVEL_PAIRS, cell_of, generate_sample
from cola_mm.data.shapes import judge_object as judge_shapes
from cola_mm.data.shards import DataError
from cola_mm.evaluation.probe import (HEAD_ORDER, IGNORE, KINDS, AugmentConfig, Probe, ProbeBatches, ProbeConfig,
                                      augment, evaluate_probe, image_to_tensor, probe_loss, random_scene, train_probe)

# resnet10t at 32 px: the real arch family, a 1×1 final map (pooled up to the 2×2 grid), fast.
TINY = ProbeConfig(arch="resnet10t", image_size=32)


@pytest.fixture(autouse=True)
def one_thread():
    """Two OpenMP threads slow down a lot when another process holds the other core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tiny_datasets, tmp_path_factory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # runs before the function-scoped one_thread fixture
    out = tmp_path_factory.mktemp("probe") / "probe"
    try:
        return train_probe(tiny_datasets, out, steps=12, batch_size=16, config=TINY, progress=False,
                           eval_limit=24)
    finally:
        torch.set_num_threads(threads)


def test_config_validates_and_round_trips():
    cfg = ProbeConfig()
    assert ProbeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.classes()["kind"] == KINDS and list(cfg.classes()) == list(HEAD_ORDER)
    with pytest.raises(ConfigError, match="image_size"):
        ProbeConfig(image_size=8)
    with pytest.raises(ConfigError, match="colors"):
        ProbeConfig(colors=("red", "red"))
    with pytest.raises(ConfigError, match="unknown key"):
        ProbeConfig.from_dict({"archh": "resnet10t"})
    with pytest.raises(ConfigError, match="not a timm model"):
        ProbeConfig(arch="no_such_net")
    with pytest.raises(ConfigError, match="shift_px"):
        AugmentConfig(shift_px=9)


def test_image_to_tensor_range_shape_and_resize():
    image, _, _ = generate_sample(0, "test", 0, size=64, max_objects=1)
    x = image_to_tensor(image, 64)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    background = torch.tensor(BACKGROUND) / 127.5 - 1.0
    torch.testing.assert_close(x[:, 0, 0], background)  # a corner is background in 1-object scenes
    big = image.resize((128, 128), Image.Resampling.NEAREST)
    assert image_to_tensor(big, 64).shape == (3, 64, 64)
    assert image_to_tensor(image.convert("L"), 32).shape == (3, 32, 32)


def test_random_scenes_cover_every_pair_including_novel():
    rng = random.Random(0)
    scenes = [random_scene(rng) for _ in range(1500)]
    pairs = {(s["objects"][0]["color"], s["objects"][0]["shape"]) for s in scenes}
    assert pairs == set(ALL_PAIRS) and set(NOVEL_PAIRS) <= pairs
    for s in scenes[:200]:
        (obj,) = s["objects"]
        assert cell_of(obj["bbox"], 64) == obj["cell"]


def test_augment_is_seeded_bounded_and_off_when_zero():
    x = torch.rand(4, 3, 32, 32) * 2 - 1
    cfg = AugmentConfig()
    a = augment(x, cfg, torch.Generator().manual_seed(1))
    b = augment(x, cfg, torch.Generator().manual_seed(1))
    assert a.shape == x.shape and torch.equal(a, b) and not torch.equal(a, x)
    assert a.min() >= -1 and a.max() <= 1
    off = AugmentConfig(blur_sigma=0, noise_std=0, color_offset=0, shift_px=0)
    assert torch.equal(augment(x, off, torch.Generator()), x)
    flat = torch.full((2, 3, 16, 16), 0.5)  # blur and shift keep a uniform image uniform
    blur_shift = AugmentConfig(blur_sigma=2.0, noise_std=0, color_offset=0, shift_px=2)
    torch.testing.assert_close(augment(flat, blur_shift, torch.Generator().manual_seed(0)), flat)


def test_judge_shapes_size_is_reported_but_not_in_all():
    want = {"shape": "circle", "color": "red", "cell": "top left", "size": "small"}
    right = {"kind": "shapes", "shape": "circle", "color": "red", "cell": "top left", "size": "small", "digit": 3}
    assert judge_shapes(right, want) == {"shape": True, "color": True, "cell": True, "size": True, "all": True}
    wrong_size = {**right, "size": "large"}
    assert judge_shapes(wrong_size, want) == {"shape": True, "color": True, "cell": True, "size": False,
                                              "all": True}
    for key, other in (("shape", "square"), ("color", "blue"), ("cell", "center")):
        grade = judge_shapes({**right, key: other}, want)
        assert grade[key] is False and grade["all"] is False
        assert all(v for k, v in grade.items() if k not in (key, "all"))
    no_size = judge_shapes(right, {k: v for k, v in want.items() if k != "size"})
    assert "size" not in no_size and no_size["all"] is True


def test_judge_digit():
    assert judge_digit({"digit": 7}, 7) is True
    assert judge_digit({"digit": 7}, 1) is False
    assert judge_digit({"digit": 0}, 0) is True


def test_targets_follow_head_order(tiny_datasets):
    batches = ProbeBatches(tiny_datasets, TINY, batch_size=8, digits_fraction=0.25, seed=0)
    x, y = next(batches)
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (8, len(HEAD_ORDER))
    kind, digit = HEAD_ORDER.index("kind"), HEAD_ORDER.index("digit")
    assert y[:6, kind].eq(KINDS.index("shapes")).all() and y[:6, digit].eq(IGNORE).all()
    assert y[6:, kind].eq(KINDS.index("digits")).all() and y[6:, 1:digit].eq(IGNORE).all()
    assert ((y[6:, digit] >= 0) & (y[6:, digit] <= 9)).all()


def test_train_writes_probe_and_report(trained):
    assert (trained / "config.json").is_file() and (trained / "model.safetensors").is_file()
    report = json.loads((trained / "report.json").read_text())
    metrics = report["metrics"]
    for split in ("test", "novel"):
        assert metrics[f"shapes_{split}_count"] > 0
        for key in ("all", "shape", "color", "cell", "size", "kind"):
            assert 0.0 <= metrics[f"shapes_{split}_{key}"] <= 1.0
    assert metrics["digits_test_count"] == 24 and 0.0 <= metrics["digits_test"] <= 1.0
    assert report["steps"] == 12 and report["config"] == TINY.to_dict()


def test_save_load_round_trip_gives_identical_logits(trained, tmp_path):
    probe = Probe.from_pretrained(trained).eval()
    assert probe.config == TINY
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        logits = probe(x)
    assert list(logits) == list(HEAD_ORDER)
    assert {k: v.shape[-1] for k, v in logits.items()} == {k: len(v) for k, v in TINY.classes().items()}
    probe.save_pretrained(tmp_path / "again")
    again = Probe.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        for name, value in again(x).items():
            torch.testing.assert_close(value, logits[name], rtol=0, atol=0)


def test_predict_returns_valid_labels_and_keeps_mode(trained):
    probe = Probe.from_pretrained(trained).train()
    images = [generate_sample(0, "test", i, size=64, max_objects=1)[0] for i in range(5)]
    preds = probe.predict(images)
    assert probe.training  # predict ran in eval mode and restored the mode
    assert len(preds) == 5
    classes = TINY.classes()
    for pred in preds:
        assert set(pred) == set(HEAD_ORDER)
        for head, labels in classes.items():
            assert pred[head] in labels
        assert isinstance(pred["digit"], int)
    assert probe.predict(images) == preds  # eval mode: deterministic, batch-independent
    assert probe.predict(images[:2]) == preds[:2]
    assert probe.predict([]) == []


def test_evaluate_probe_loads_a_folder_and_needs_data(trained, tiny_datasets, tmp_path):
    metrics = evaluate_probe(trained, tiny_datasets, limit=24)  # a folder instead of a Probe
    assert metrics == json.loads((trained / "report.json").read_text())["metrics"]
    with pytest.raises(DataError, match="no shapes/test"):
        evaluate_probe(Probe.from_pretrained(trained), tmp_path)


def test_probe_overfits_a_fixed_batch(tiny_datasets):
    """The heads must be able to learn: on one fixed batch the loss falls by a large factor."""
    torch.manual_seed(0)
    probe = Probe(TINY)
    x, y = next(ProbeBatches(tiny_datasets, TINY, batch_size=16, digits_fraction=0.25, seed=0))
    x = x.float() / 127.5 - 1.0
    opt = torch.optim.AdamW(probe.parameters(), lr=2e-3)
    losses = []
    for _ in range(25):
        loss, _ = probe_loss(probe, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 100, losses
    with torch.no_grad():  # train mode (batch statistics): every head fits the batch
        logits = probe(x)
    for i, name in enumerate(HEAD_ORDER):
        rows = y[:, i] != IGNORE
        assert logits[name][rows].argmax(-1).eq(y[rows, i]).all(), name
