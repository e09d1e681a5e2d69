"""The CLIP judge (cola_mm/evaluation/clip.py): config, training, retrieval, CLIPScore, local open_clip."""

from __future__ import annotations

import json
import random

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from cola_mm.core.components import CheckpointError
from cola_mm.core.config import ConfigError, load_yaml
from cola_mm.data.shapes import COLORS, build_shapes, render_scene, sample_scene
from cola_mm.data.shards import DataError, ShardWriter
from cola_mm.evaluation.clip import (REPORT_NAME, ClipConfig, ClipEncoder, ClipTrainConfig, SmallClip, _chance,
                                     clip_score, clip_scores, load_open_clip, retrieval_accuracy, train_clip)
from conftest import REPO

TINY = ClipConfig(embed_dim=32, patch_size=16, vision_width=32, vision_layers=1, vision_head_width=16,
                  context_length=8, text_width=32, text_layers=1, text_heads=2)


def colour_samples(n: int, seed: int) -> list[dict]:
    """One-object scenes captioned by their colour word alone: retrieval must beat chance on these."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        scene = sample_scene(rng, "train", 64, max_objects=1)
        color = scene["objects"][0]["color"]
        out.append({"image": render_scene(scene, 64), "txt": color, "json": {"dataset": "colour-words"}})
    return out


def write_split(folder, samples):
    with ShardWriter(folder, max_count=1000) as w:
        for i, s in enumerate(samples):
            w.write(f"{i:09d}", {"png": s["image"], "txt": s["txt"], "json": s["json"]})


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("colours")
    write_split(root / "shapes" / "train", colour_samples(256, seed=1))
    write_split(root / "shapes" / "test", colour_samples(60, seed=2))
    cfg = ClipTrainConfig(model=TINY, steps=150, batch_size=32, lr=1e-3, eval_splits=("shapes/test",), eval_limit=60)
    out = train_clip(root, root / "clip", progress=False, config=cfg)
    return out, json.loads((out / REPORT_NAME).read_text())


def test_config_file_holds_the_defaults():
    assert ClipTrainConfig.from_dict(load_yaml(REPO / "configs" / "clip_small.yaml")) == ClipTrainConfig()
    assert ClipTrainConfig.from_dict(ClipTrainConfig().to_dict()) == ClipTrainConfig()
    with pytest.raises(ConfigError, match="patch_size"):
        ClipConfig(patch_size=7)
    with pytest.raises(ConfigError, match="unknown key"):
        ClipTrainConfig.from_dict({"model": {"depth": 3}})
    with pytest.raises(ConfigError, match="mix"):
        ClipTrainConfig(mix="some")
    for bad in ((), ("text",), ("shapes", "shapes"), ("flowers",)):  # text has no images
        with pytest.raises(ConfigError, match="datasets must name distinct image datasets"):
            ClipTrainConfig(datasets=bad)
    icons = ClipTrainConfig.from_dict(load_yaml(REPO / "configs" / "clip_icons.yaml"))
    assert icons.datasets == ("shapes", "digits", "icons") and icons.model == ClipConfig()
    assert {"icons/test", "icons/novel", "icons/two"} <= set(icons.eval_splits) <= set(ClipTrainConfig().eval_splits)


def test_training_learns_colour_words(colour_run):
    out, report = colour_run
    curve = [loss for _, loss in report["loss_curve"]]
    assert curve[-1] < 0.8 * curve[0], curve
    r = report["results"]["shapes/test"]["retrieval"]
    assert r["n"] == 60 and r["contents"] == len({s["txt"] for s in colour_samples(60, seed=2)})
    assert r["chance_top1"] == pytest.approx(1 / 60)
    # content = the colour word: a random ranking hits it ~1/7 of the time; the trained CLIP must do far better
    assert r["i2t_content_top1"] > 2 * r["content_chance_top1"], r
    assert r["t2i_content_top1"] > 2 * r["content_chance_top1"], r
    scores = report["results"]["shapes/test"]["clip_score"]
    assert scores["matching"] > scores["shuffled"]
    assert report["train_sets"] == {"shapes": 256} and report["num_params"] == SmallClip(TINY).num_params()


def test_clip_score_matching_beats_shuffled_and_round_trip(colour_run):
    out, _ = colour_run
    model = SmallClip.from_pretrained(out)
    held = colour_samples(40, seed=3)
    images, prompts = [s["image"] for s in held], [s["txt"] for s in held]
    mismatched = [next(c for c in COLORS if c != p) for p in prompts]  # every prompt a wrong colour
    assert clip_score(model, images, prompts) > clip_score(model, images, mismatched)
    per_pair = clip_scores(model, images, prompts)
    assert per_pair.shape == (40,) and bool(((per_pair >= 0) & (per_pair <= 2.5)).all())
    again = SmallClip.from_pretrained(out)
    assert torch.equal(model.encode_images(images), again.encode_images(images))
    assert torch.equal(model.encode_texts(prompts), again.encode_texts(prompts))
    with pytest.raises(ValueError, match="prompts"):
        clip_score(model, images, prompts[:-1])


class OneHot(ClipEncoder):
    """A perfect judge of colour, to check the bookkeeping of retrieval_accuracy."""

    names = list(COLORS)

    def encode_images(self, images):
        return torch.eye(len(self.names))[[self.names.index(im.info["colour"]) for im in images]]

    def encode_texts(self, texts):
        return torch.eye(len(self.names))[[self.names.index(t) for t in texts]]


def test_retrieval_bookkeeping_and_chance():
    assert _chance(["a", "a", "b", "c"], 1) == pytest.approx((2 + 2 + 1 + 1) / 16)
    assert _chance(["a", "b"], 5) == 1.0
    samples = colour_samples(30, seed=4)
    for s in samples:
        s["image"].info["colour"] = s["txt"]
    r = retrieval_accuracy(OneHot(), samples)
    assert r["i2t_content_top1"] == r["t2i_content_top1"] == 1.0
    assert r["chance_top5"] == pytest.approx(5 / 30)
    assert 0 < r["content_chance_top1"] < r["content_chance_top5"] <= 1


def test_trains_on_the_bundled_layout(tmp_path):
    build_shapes(tmp_path / "shapes", "train", 48, max_objects=2, progress=False)
    build_shapes(tmp_path / "shapes", "test", 24, progress=False)
    write_split(tmp_path / "icons" / "train", colour_samples(16, seed=5))  # built, but not in the default datasets
    cfg = ClipTrainConfig(model=TINY, steps=3, batch_size=8, eval_limit=24)  # no digits here: trained without
    report = json.loads((train_clip(tmp_path, tmp_path / "clip", progress=False, config=cfg) / REPORT_NAME).read_text())
    assert list(report["results"]) == ["shapes/test"] and report["train_sets"] == {"shapes": 48}
    with_icons = cfg.replace(datasets=("shapes", "digits", "icons"))
    report = json.loads((train_clip(tmp_path, tmp_path / "clip3", progress=False, config=with_icons)
                         / REPORT_NAME).read_text())
    assert report["train_sets"] == {"shapes": 48, "icons": 16} and report["batch_shares"] == {"shapes": 4, "icons": 4}
    with pytest.raises(DataError, match="no train split of digits"):
        train_clip(tmp_path, tmp_path / "clip4", progress=False, config=cfg.replace(datasets=("digits",)))
    r = report["results"]["shapes/test"]["retrieval"]
    assert r["n"] == 24 and r["contents"] >= 2  # content = canonical captions from the shapes json
    assert report["config"]["steps"] == 3 and report["open_clip_version"] == open_clip.__version__


def register_tiny_open_clip(folder, arch: str, embed_dim: int = 32) -> str:
    """Register a tiny open_clip architecture ``arch`` (its JSON written to ``folder``): a user's
    own open_clip model, built locally, nothing downloaded."""
    spec = {"embed_dim": embed_dim,
            "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    (folder / f"{arch}.json").write_text(json.dumps(spec))
    open_clip.add_model_config(folder / f"{arch}.json")
    return arch


def test_users_open_clip_from_a_local_checkpoint(tmp_path):
    arch = register_tiny_open_clip(tmp_path, "cola-tiny-clip-test")
    torch.manual_seed(0)
    reference = open_clip.create_model(arch)  # randomly initialised: nothing is downloaded
    torch.save(reference.state_dict(), tmp_path / "ckpt.pt")
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(tmp_path / "ckpt.safetensors"))
    held = colour_samples(6, seed=5)
    images, prompts = [s["image"] for s in held], [s["txt"] for s in held]
    for name in ("ckpt.pt", "ckpt.safetensors"):
        model = load_open_clip(arch, tmp_path / name)
        loaded = model.model.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in reference.state_dict().items())
        assert model.encode_images(images).shape == (6, 32) and model.encode_texts(prompts).shape == (6, 32)
        assert 0.0 <= clip_score(model, images, prompts) <= 2.5
    with pytest.raises(CheckpointError, match="not found"):
        load_open_clip(arch, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="unknown open_clip arch"):
        load_open_clip("no-such-arch", tmp_path / "ckpt.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot load"):
        load_open_clip(arch, tmp_path / "bad.pt")
