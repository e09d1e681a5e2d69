"""The icon judge: its training renders share nothing with the built splits, its grading refuses
wrong answers, and a (tiny) trained judge saves, loads and predicts the same."""

from __future__ import annotations

import hashlib

import pytest

from cola_mm.data import icons as world
from cola_mm.evaluation import icon_judge as ij


@pytest.fixture(scope="module")
def font():
    return str(world.find_font())


def test_training_renders_are_not_eval_images(font, tmp_path):
    found = world.list_icons(font)
    for split in ("test", "novel", "two"):
        world.build_icons(tmp_path, split, 60, progress=False)
    from cola_mm.data.loader import ShardDataset

    held_out = {hashlib.sha256(s["image"].tobytes()).hexdigest()
                for split in ("test", "novel", "two") for s in ShardDataset(tmp_path / split, required=("image",))}
    renders = [world.render_scene(ij.judge_scene(ij.TRAIN_NAMESPACE, 0, i, found), 64, font) for i in range(300)]
    assert not {hashlib.sha256(r.tobytes()).hexdigest() for r in renders} & held_out
    counts = [len(ij.judge_scene(ij.TRAIN_NAMESPACE, 0, i, found)["objects"]) for i in range(300)]
    assert set(counts) == {0, 1, 2}


def test_grading_refuses_wrong_answers():
    truth = {"objects": [{"icon": "rocket", "cell": "top left", "size": "large"},
                         {"icon": "doughnut", "cell": "center", "size": "small"}], "background": "pink"}
    right = {"count": 2, "background": "pink",
             "objects": [{"cell": "top left", "icon": "rocket", "size": "large", "top": ["rocket", "cookie"]},
                         {"cell": "center", "icon": "doughnut", "size": "small", "top": ["doughnut"]}]}
    assert ij.judge_image(right, truth)["all"]

    def changed(**kw):
        p = {**right, "objects": [dict(o) for o in right["objects"]]}
        for k, v in kw.items():
            if k in ("count", "background"):
                p[k] = v
            else:
                p["objects"][0][k] = v
        return p

    for wrong in (changed(icon="cookie"), changed(size="small"), changed(cell="top"), changed(background="black"),
                  changed(count=1), {**right, "objects": right["objects"][:1]}):
        assert not ij.judge_image(wrong, truth)["all"], wrong
    second = changed(icon="cookie")
    second["objects"][0]["top"] = ["cookie", "rocket"]
    assert not ij.judge_image(second, truth)["icon"] and ij.judge_image(second, truth, top_k=5)["icon"]


def test_tiny_judge_trains_saves_and_predicts(font, tmp_path):
    judge = ij.train_judge(tmp_path / "j", steps=2, batch_size=4, progress=False)
    loaded = ij.IconJudge.from_pretrained(tmp_path / "j")
    found = world.list_icons(font)
    images = [world.render_scene(ij.judge_scene(ij.EVAL_NAMESPACE, 0, i, found), 64, font) for i in range(3)]
    a, b = judge.predict(images), loaded.predict(images)
    assert a == b and len(a) == 3
    assert set(a[0]) == {"count", "background", "objects"} and a[0]["count"] in (0, 1, 2)
    assert len(loaded.config.icons) == len(found)


def test_vae_round_trip_is_what_the_judge_grades_through_a_vae(font):
    """--image-vae grades images after the VAE's round trip: an identity VAE gives back the same
    pixels, a VAE that loses everything gives grey images, not the originals."""
    import types

    import torch

    found = world.list_icons(font)
    images = [world.render_scene(ij.judge_scene(ij.EVAL_NAMESPACE, 0, i, found), 64, font) for i in range(3)]

    def vae(decode):
        return types.SimpleNamespace(config=types.SimpleNamespace(image_size=64),
                                     encode=lambda x: (x, torch.zeros_like(x)), decode=decode)

    same = ij.vae_round_trip(vae(lambda z: z), images, batch_size=2)
    assert [im.tobytes() for im in same] == [im.convert("RGB").tobytes() for im in images]
    lost = ij.vae_round_trip(vae(torch.zeros_like), images)
    assert all(im.getextrema() == ((128, 128),) * 3 for im in lost)
    with pytest.raises(SystemExit):
        ij.main(["eval", "--judge", "nowhere", "--image-vae", "x"])


def test_eval_splits_must_exist(tmp_path, capsys):
    (tmp_path / "val").mkdir()
    for argv in (["--splits", "val,nope"], ["--splits", ","]):
        with pytest.raises(SystemExit):
            ij.main(["eval", "--judge", "nowhere", "--data", str(tmp_path), *argv])
        assert "--splits: no split folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ij.main(["eval", "--judge", "nowhere", "--splits", "val"])


def test_vae_steps_bench_finds_every_checkpoint_in_step_order(tmp_path):
    """bench/bench_icon_vae_steps.py grades each checkpoint of a run and its final model, labelled
    by step (the final one by the run's last logged step), plus extra folders; none is an error."""
    import json

    from conftest import bench_module

    bench = bench_module("bench_icon_vae_steps")
    run = tmp_path / "run"
    for step in (2000, 10000, 3000):
        ckpt = run / "checkpoints" / f"step_{step:06d}"
        (ckpt / "components" / "image_vae").mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")  # complete, as the training loop commits it
    (run / "checkpoints" / "step_004000.tmp" / "components" / "image_vae").mkdir(parents=True)  # unfinished
    (run / "model" / "image_vae").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in (
        {"step": 20, "loss": 1.0}, {"step": 12000, "val_psnr": 30.0})) + "\n")
    extra = tmp_path / "copies" / "step_001000" / "image_vae"
    found = bench.find_vaes(run, [str(extra)])
    assert [s for s, _ in found] == [1000, 2000, 3000, 10000, 12000]
    assert found[0][1] == extra and found[-1][1] == run / "model" / "image_vae"
    assert found[1][1] == run / "checkpoints" / "step_002000" / "components" / "image_vae"
    with pytest.raises(SystemExit, match="no image VAE"):
        bench.main(["--run", str(tmp_path / "empty"), "--judge", "j", "--data", "d", "--json", str(tmp_path / "o.json")])
