"""The image judge (issue 17): configs, image conversion, augmentation, the judging rules on
hand-made predictions, training canvases disjoint from every evaluation render (hashed), and a
judge trained here on real renders that passes right images and fails each wrong one (empty,
an extra object, wrong size, cell or colour, wrong relation)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from PIL import Image

from cola_mm.core.config import ConfigError
from cola_mm.data.digits import judge_digit
from cola_mm.data.digits import judge_image as judge_digit_image
from cola_mm.data.overlap import image_digest
from cola_mm.data.shapes import (ALL_PAIRS, BACKGROUND, MIN_GAP_PX, NOVEL_PAIRS, _make_object, _separated,
                                 cell_of, generate_sample, judge_image, judge_object, render_scene, true_relations)
from cola_mm.data.shards import DataError
from cola_mm.evaluation.probe import (CELL_HEADS, HEAD_ORDER, IGNORE, KINDS, MAX_COUNT, AugmentConfig, Probe,
                                      ProbeBatches, ProbeConfig, augment, eval_canvases, evaluate_probe,
                                      image_to_tensor, num_targets, probe_loss, probe_scene, scene_targets,
                                      train_probe)

# A judge small enough to train in a test: the real arch and 64 px, fewer classes (2 shapes ×
# 2 colours × 2 sizes × 3 cells); 120 steps of 24 reach 100 % on its own canvases (~50 s, 1 core).
SMALL = ProbeConfig(shapes=("circle", "square"), colors=("red", "blue"), cells=("top left", "center", "bottom right"))
EVAL_SPLITS = ("val", "test", "novel", "two", "heldout-phrasing")


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
        return train_probe(tiny_datasets, out, steps=120, batch_size=24, config=SMALL, lr=3e-3,
                           digits_fraction=0.1, progress=False, eval_limit=24, eval_canvases_count=24)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def judge(trained) -> Probe:
    return Probe.from_pretrained(trained).eval()


def scene(*objects: tuple[str, str, str, str], seed: int = 0, relation: str | None = None) -> dict:
    """A real scene from (color, shape, size, cell) tuples, placed as the generator places them."""
    rng = random.Random(f"test-probe/{seed}")
    made = [_make_object(rng, (color, shape), size, cell, 64) for color, shape, size, cell in objects]
    return {"objects": made, "relation": relation}


def prompt(*objects: tuple[str, str, str, str], relation: str | None = None) -> dict:
    """The json of a prompt stating these objects (two-object prompts state no cells)."""
    one = len(objects) == 1
    return {"objects": [{"color": c, "shape": s, "size": z, "cell": cell if one else None}
                        for c, s, z, cell in objects], "relation": relation}


# --- configs, tensors, augmentation ----------------------------------------------------------

def test_config_validates_and_round_trips():
    cfg = ProbeConfig()
    assert ProbeConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.classes()["kind"] == KINDS and list(cfg.classes()) == list(HEAD_ORDER)
    assert cfg.classes()["count"] == (0, 1, 2, 3) and set(cfg.pairs()) == set(ALL_PAIRS)
    with pytest.raises(ConfigError, match="image_size"):
        ProbeConfig(image_size=8)
    with pytest.raises(ConfigError, match="colors"):
        ProbeConfig(colors=("red", "red"))
    with pytest.raises(ConfigError, match="cells"):
        ProbeConfig(cells=("somewhere",))
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


def test_training_canvases_cover_every_pair_and_count_and_are_pure():
    scenes = [probe_scene(0, i) for i in range(1500)]
    pairs = {(o["color"], o["shape"]) for s in scenes for o in s["objects"]}
    assert pairs == set(ALL_PAIRS) and set(NOVEL_PAIRS) <= pairs  # the judge must know novel pairs
    assert {len(s["objects"]) for s in scenes} == {0, 1, 2, 3}
    assert {o["size"] for s in scenes for o in s["objects"]} == {"small", "large"}
    for s in scenes[:300]:
        cells = [o["cell"] for o in s["objects"]]
        assert len(set(cells)) == len(cells)
        for o in s["objects"]:
            assert cell_of(o["bbox"], 64) == o["cell"]
        for i, a in enumerate(s["objects"]):
            for b in s["objects"][i + 1:]:
                assert _separated(a["bbox"], b["bbox"], MIN_GAP_PX)
    assert probe_scene(0, 7) == probe_scene(0, 7) and probe_scene(0, 7) != probe_scene(1, 7)


def test_training_renders_are_disjoint_from_every_eval_render(tiny_datasets):
    """Hash the first 1500 training canvases against the built eval splits and against the first
    300 samples of each eval split as the full build makes them (seed 0), and the judge's own
    evaluation canvases: nothing shared."""
    from cola_mm.data.loader import ShardDataset

    scenes = [probe_scene(0, i) for i in range(1500)]
    train = {image_digest(render_scene(s, 64)) for s in scenes}
    assert len(train) == sum(bool(s["objects"]) for s in scenes) + 1  # no two alike (empty canvases aside)
    train.discard(image_digest(render_scene({"objects": []}, 64)))
    evaluation: set[str] = set()
    for split in EVAL_SPLITS:
        built = [s["image"] for s in ShardDataset(tiny_datasets / "shapes" / split, required=("image",), epochs=1)]
        assert built, split
        evaluation |= {image_digest(im) for im in built}
        evaluation |= {image_digest(generate_sample(0, split, i, 64, max_objects=2)[0]) for i in range(300)}
    for n in (2, 3):
        evaluation |= {image_digest(render_scene(s, 64)) for s in eval_canvases(n, 100)}
    assert len(evaluation) > 1500
    assert not train & evaluation
    index = next(i for i, s in enumerate(scenes) if s["objects"])
    assert image_digest(render_scene(probe_scene(0, index), 64)) in train  # the hash does see a repeat


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


def test_scene_targets_layout():
    cfg = ProbeConfig()
    s = scene(("red", "circle", "small", "top left"), ("blue", "square", "large", "bottom right"))
    row = scene_targets(s, cfg)
    assert len(row) == num_targets(cfg) == 2 + 9 * len(CELL_HEADS)
    assert row[:2] == [KINDS.index("shapes"), 2]
    cells = [row[2 + 4 * i: 6 + 4 * i] for i in range(9)]
    assert cells[0] == [1, cfg.shapes.index("circle"), cfg.colors.index("red"), cfg.sizes.index("small")]
    assert cells[8] == [1, cfg.shapes.index("square"), cfg.colors.index("blue"), cfg.sizes.index("large")]
    assert all(c == [0, IGNORE, IGNORE, IGNORE] for c in cells[1:8])
    many = scene(("red", "circle", "small", "top left"), ("red", "circle", "small", "center"),
                 ("red", "circle", "small", "bottom right"), ("red", "circle", "small", "top right"))
    assert scene_targets(many, cfg)[1] == MAX_COUNT  # 3 means 3 or more


def test_batches_follow_the_target_layout(tiny_datasets):
    batches = ProbeBatches(tiny_datasets, SMALL, batch_size=8, digits_fraction=0.25, seed=0)
    x, y = next(batches)
    assert x.shape == (8, 3, 64, 64) and x.dtype == torch.uint8 and y.shape == (8, num_targets(SMALL))
    assert y[:6, 0].eq(KINDS.index("shapes")).all() and y[6:, 0].eq(KINDS.index("digits")).all()
    assert y[6:, 1:].eq(IGNORE).all() and ((y[:6, 1] >= 0) & (y[:6, 1] <= MAX_COUNT)).all()
    assert batches.index == 6
    assert (next(batches)[0][:6] != x[:6]).any()  # fresh canvases every batch


# --- judging rules on hand-made predictions --------------------------------------------------

RED_CIRCLE = {"cell": "top left", "shape": "circle", "color": "red", "size": "small"}


def reading(*objects: dict, count: int | None = None) -> dict:
    return {"kind": "shapes", "count": len(objects) if count is None else count, "objects": list(objects),
            "digit": None}


def test_judge_one_object_needs_the_count_and_every_attribute_size_included():
    want = prompt(("red", "circle", "small", "top left"))
    assert judge_image(reading(RED_CIRCLE), want) == {"shape": True, "color": True, "size": True, "cell": True,
                                                      "count": True, "all": True}
    for key, other in (("shape", "square"), ("color", "blue"), ("size", "large"), ("cell", "center")):
        grade = judge_image(reading({**RED_CIRCLE, key: other}), want)
        assert grade[key] is False and grade["all"] is False and grade["count"] is True
        assert all(v for k, v in grade.items() if k not in (key, "all"))
    empty = judge_image(reading(), want)
    assert not empty["all"] and not empty["count"] and not empty["shape"]
    extra = judge_image(reading(RED_CIRCLE, {**RED_CIRCLE, "cell": "bottom"}), want)  # two triangles for one
    assert not extra["all"] and not extra["count"] and extra["shape"] and extra["cell"]
    disagree = judge_image(reading(RED_CIRCLE, count=2), want)  # the count head says 2
    assert not disagree["all"] and not disagree["count"]
    assert not judge_image(reading(RED_CIRCLE, count=0), want)["all"]


def test_judge_object_grades_one_object():
    want = {"shape": "circle", "color": "red", "cell": "top left", "size": "small"}
    assert judge_object(RED_CIRCLE, want)["all"]
    assert not judge_object({**RED_CIRCLE, "size": "large"}, want)["all"]
    assert not judge_object(None, want)["all"]
    no_size = judge_object(RED_CIRCLE, {k: v for k, v in want.items() if k != "size"})
    assert "size" not in no_size and no_size["all"]


def test_judge_two_objects_as_a_set_with_the_relation():
    want = prompt(("red", "circle", "small", None), ("blue", "square", "large", None), relation="left of")
    a = {"cell": "left", "shape": "circle", "color": "red", "size": "small"}
    b = {"cell": "right", "shape": "square", "color": "blue", "size": "large"}
    right = judge_image(reading(b, a), want)  # order of the reading does not matter
    assert right["all"] and right["objects"] and right["relation"] and right["count"]
    swapped = judge_image(reading({**a, "cell": "right"}, {**b, "cell": "left"}), want)
    assert not swapped["all"] and swapped["objects"] and not swapped["relation"]
    for key, other in (("color", "green"), ("size", "large"), ("shape", "cross")):
        grade = judge_image(reading({**a, key: other}, b), want)
        assert not grade["all"] and not grade["objects"] and not grade[key], key
    assert not judge_image(reading(a), want)["all"]  # one of two
    third = {"cell": "center", "shape": "cross", "color": "black", "size": "small"}
    grade = judge_image(reading(a, b, third), want)
    assert not grade["all"] and not grade["count"] and grade["objects"] and grade["relation"]
    assert not judge_image(reading(a, b, count=3), want)["all"]
    same = prompt(("red", "circle", "small", None), ("red", "circle", "small", None), relation="above")
    top, bottom = {**a, "cell": "top"}, {**a, "cell": "bottom"}
    assert judge_image(reading(bottom, top), same)["all"]  # identical objects: either assignment
    assert true_relations("top", "bottom") == ["above"]


def test_judge_digit():
    assert judge_digit({"digit": 7}, 7) is True
    assert judge_digit({"digit": 7}, 1) is False
    assert judge_digit({"digit": None}, 0) is False
    assert judge_digit_image({"digit": 3}, {"label": 3}) == {"all": True}


# --- a trained judge on real renders ---------------------------------------------------------

def test_train_writes_probe_and_report(trained):
    assert (trained / "config.json").is_file() and (trained / "model.safetensors").is_file()
    report = json.loads((trained / "report.json").read_text())
    metrics = report["metrics"]
    for prefix in ("shapes_test", "shapes_novel", "shapes_two", "shapes_test_blur1", "shapes_test_blur2",
                   "shapes_test_noise0.05", "shapes_test_noise0.1"):
        assert metrics[f"{prefix}_n"] > 0, prefix
        for key in ("all", "count", "shape", "color", "size", "kind"):
            assert 0.0 <= metrics[f"{prefix}_{key}"] <= 1.0, (prefix, key)
    assert 0.0 <= metrics["shapes_two_relation"] <= 1.0 and 0.0 <= metrics["shapes_test_cell"] <= 1.0
    for n in (0, 2, 3):
        assert metrics[f"canvas{n}_n"] == 24 and 0.0 <= metrics[f"canvas{n}_all"] <= metrics[f"canvas{n}_count"]
    assert metrics["digits_test_n"] == 24 and metrics["digits_test_classifier"] >= 0.9
    assert report["steps"] == 120 and report["config"] == SMALL.to_dict()
    assert report["blur_sigmas_px"] == [1.0, 2.0] and report["noise_stds"] == [0.05, 0.1]
    # the judge reads its own kind of canvases (held-out namespace) right
    assert metrics["canvas0_all"] >= 0.95 and metrics["canvas2_all"] >= 0.8 and metrics["canvas3_count"] >= 0.8


RIGHT = [("red", "circle", "small", "top left"), ("blue", "square", "large", "center"),
         ("red", "square", "large", "bottom right"), ("blue", "circle", "small", "center")]


def test_the_judge_passes_right_renders(judge):
    images = [render_scene(scene(obj, seed=i), 64) for i, obj in enumerate(RIGHT)]
    for obj, pred in zip(RIGHT, judge.predict(images)):
        assert judge_image(pred, prompt(obj))["all"], (obj, pred)


def test_the_judge_fails_each_wrong_image(judge):
    """Real renders (render_scene) that are wrong for the prompt in one way each."""
    want = ("red", "circle", "small", "top left")
    wrong = {
        "empty canvas": scene(),
        "an extra object": scene(want, ("blue", "square", "small", "bottom right")),
        "wrong size": scene(("red", "circle", "large", "top left")),
        "wrong cell": scene(("red", "circle", "small", "center")),
        "wrong colour": scene(("blue", "circle", "small", "top left")),
        "wrong shape": scene(("red", "square", "small", "top left")),
    }
    preds = judge.predict([render_scene(s, 64) for s in wrong.values()])
    for (why, _), pred in zip(wrong.items(), preds):
        assert not judge_image(pred, prompt(want))["all"], (why, pred)
    assert preds[0]["count"] == 0 and preds[0]["objects"] == []
    assert preds[1]["count"] == 2 and len(preds[1]["objects"]) == 2


def test_the_judge_grades_two_object_renders(judge):
    a, b = ("red", "circle", "small", "top left"), ("blue", "square", "large", "bottom right")
    image = render_scene(scene(a, b), 64)
    (pred,) = judge.predict([image])
    assert judge_image(pred, prompt(a, b, relation="left of"))["all"], pred
    assert judge_image(pred, prompt(b, a, relation="below"))["all"], pred
    assert not judge_image(pred, prompt(a, b, relation="right of"))["all"]  # relation wrong
    assert not judge_image(pred, prompt(a, ("red", "square", "large", None), relation="left of"))["all"]
    (alone,) = judge.predict([render_scene(scene(a), 64)])
    assert not judge_image(alone, prompt(a, b, relation="left of"))["all"]  # one of two


def test_save_load_round_trip_gives_identical_logits(trained, tmp_path):
    probe = Probe.from_pretrained(trained).eval()
    assert probe.config == SMALL
    x = torch.rand(3, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        logits = probe(x)
    assert list(logits) == list(HEAD_ORDER)
    classes = SMALL.classes()
    for name in ("kind", "count"):
        assert logits[name].shape == (3, len(classes[name]))
    for name in CELL_HEADS:
        assert logits[name].shape == (3, len(SMALL.cells), len(classes[name]))
    probe.save_pretrained(tmp_path / "again")
    again = Probe.from_pretrained(tmp_path / "again").eval()
    with torch.no_grad():
        for name, value in again(x).items():
            torch.testing.assert_close(value, logits[name], rtol=0, atol=0)


def test_predict_returns_valid_labels_keeps_mode_and_reads_digits_with_the_classifier(trained, tiny_datasets):
    from cola_mm.data.loader import ShardDataset

    probe = Probe.from_pretrained(trained).train()
    images = [generate_sample(0, "test", i, size=64, max_objects=1)[0] for i in range(5)]
    preds = probe.predict(images)
    assert probe.training  # predict ran in eval mode and restored the mode
    assert len(preds) == 5
    for pred in preds:
        assert set(pred) == {"kind", "count", "objects", "digit"} and pred["kind"] == "shapes"
        assert pred["digit"] is None and pred["count"] in (0, 1, 2, 3)
        for obj in pred["objects"]:
            assert obj["cell"] in SMALL.cells and obj["shape"] in SMALL.shapes
            assert obj["color"] in SMALL.colors and obj["size"] in SMALL.sizes
    assert probe.predict(images) == preds  # eval mode: deterministic, batch-independent
    assert probe.predict(images[:2]) == preds[:2]
    assert probe.predict([]) == []
    digits = list(ShardDataset(tiny_datasets / "digits" / "test", required=("image", "json"), epochs=1))[:10]
    read = probe.predict([s["image"] for s in digits])
    assert all(p["kind"] == "digits" and isinstance(p["digit"], int) for p in read)
    assert sum(judge_digit(p, s["json"]["label"]) for p, s in zip(read, digits)) >= 8  # the SVC's reading


def test_evaluate_probe_loads_a_folder_and_needs_data(trained, tiny_datasets, tmp_path):
    metrics = evaluate_probe(trained, tiny_datasets, limit=24, canvases=24)  # a folder instead of a Probe
    assert metrics == json.loads((trained / "report.json").read_text())["metrics"]
    with pytest.raises(DataError, match="no shapes/test"):
        evaluate_probe(Probe.from_pretrained(trained), tmp_path)


def test_probe_overfits_a_fixed_batch(tiny_datasets):
    """The heads must be able to learn: on one fixed batch the loss falls by a large factor."""
    torch.manual_seed(0)
    cfg = ProbeConfig(image_size=32)
    probe = Probe(cfg)
    x, y = next(ProbeBatches(tiny_datasets, cfg, batch_size=16, digits_fraction=0.25, seed=0))
    x = x.float() / 127.5 - 1.0
    opt = torch.optim.AdamW(probe.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss, _ = probe_loss(probe, x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 50, losses
    with torch.no_grad():  # train mode (batch statistics): every head fits the batch
        logits = probe(x)
    assert logits["kind"].argmax(-1).eq(y[:, 0]).all()
    shapes = y[:, 0] == KINDS.index("shapes")
    assert logits["count"][shapes].argmax(-1).eq(y[shapes, 1]).all()
    cells = y[:, 2:].reshape(len(y), len(cfg.cells), len(CELL_HEADS))
    for i, name in enumerate(CELL_HEADS):
        rows = cells[..., i] != IGNORE
        assert logits[name][rows].argmax(-1).eq(cells[..., i][rows]).all(), name
