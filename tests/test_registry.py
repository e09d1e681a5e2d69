"""The dataset registry: each bundled dataset declares its builder, canonical caption, caption
grader and image judge in one place, and the CLI, the canonical captions and the evaluations
read them from there (no dataset named anywhere else)."""

from __future__ import annotations

import random

import pytest

from cola_mm.data import captions, digits, registry, shapes
from cola_mm.data.shards import DataError


def test_the_bundled_datasets_are_registered_with_what_they_declare(tmp_path):
    found = registry.datasets()
    assert list(found) == ["shapes", "digits", "text", "icons"]
    # icons: optional (`data all` builds it where the font is installed; not in the tokenizer's
    # corpus), judged by the icon judge
    icons = found["icons"]
    assert not icons.in_all and icons.build_missing is not None and icons.has_images and icons.judge == "icons" and icons.grade_caption
    assert all(d.judge == "probe" for d in found.values() if d.has_images and d.name != "icons")
    assert all(found[n].in_all for n in ("shapes", "digits", "text"))
    for name in ("shapes", "digits"):
        d = found[name]
        assert d.has_images and d.image_splits and d.caption_splits and d.canonical_caption and d.grade_caption
    assert not found["text"].has_images and found["text"].canonical_caption is None
    no_icons = tmp_path  # a dataset root without icons: the optional dataset is left out
    assert registry.image_eval_splits("text_to_image", no_icons) == ("shapes/test", "shapes/novel", "shapes/two",
                                                                     "shapes/heldout-phrasing", "digits/test",
                                                                     "digits/heldout-phrasing")
    assert registry.image_eval_splits("image_to_text", no_icons) == ("shapes/test", "shapes/novel", "shapes/two",
                                                                     "digits/test")
    (tmp_path / "icons").mkdir()
    assert registry.image_eval_splits("image_to_text", tmp_path)[-3:] == ("icons/test", "icons/novel", "icons/two")
    assert registry.of_split("digits/test") is found["digits"]
    assert registry.of_sample({"dataset": "shapes"}) is found["shapes"]
    with pytest.raises(DataError, match="unknown dataset 'photos'; registered datasets: shapes, digits, text, icons"):
        registry.get("photos")
    with pytest.raises(DataError, match="no ground-truth json"):
        registry.of_sample(None)


def test_canonical_captions_are_graded_right_by_their_own_dataset():
    for i in range(40):
        _, _, meta = shapes.generate_sample(0, "val", i, max_objects=2)
        text = captions.canonical_caption(meta)
        assert registry.of_sample(meta).grade_caption(text, meta)["all"], text
    meta = {"dataset": "digits", "label": 7}
    assert captions.canonical_caption(meta) == "a handwritten 7"
    assert registry.of_sample(meta).grade_caption("a handwritten 7", meta)["all"]
    assert not registry.of_sample(meta).grade_caption("a handwritten 1", meta)["all"]
    with pytest.raises(DataError, match="no canonical caption for dataset 'text'"):
        captions.canonical_caption({"dataset": "text"})


def test_judges_read_the_json_of_their_dataset():
    _, _, meta = shapes.generate_sample(0, "test", 0)
    obj = meta["objects"][0]
    seen = {"shape": obj["shape"], "color": obj["color"], "cell": obj["cell"], "size": obj["size"]}
    right = {"count": 1, "objects": [seen], **seen}
    assert shapes.DATASET.judge_image(right, meta)["all"]
    wrong = {**seen, "color": "not a colour"}
    assert not shapes.DATASET.judge_image({"count": 1, "objects": [wrong], **wrong}, meta)["all"]
    assert not shapes.DATASET.judge_image({"count": 2, "objects": [seen, wrong], **seen}, meta)["all"]
    assert digits.DATASET.judge_image({"digit": 3}, {"label": 3}) == {"all": True}
    assert digits.DATASET.judge_image({"digit": 4}, {"label": 3}) == {"all": False}


def _fake_dataset(built: list) -> registry.Dataset:
    def add_arguments(p):
        p.add_argument("--colour", default="teal")

    return registry.Dataset(
        name="fake", help="a dataset added by one module", description="fake",
        add_arguments=add_arguments, build=lambda args: built.append(args.colour),
        build_missing=lambda root, args: built.append(str(root)),
        image_splits=("test",), caption_splits=("test",), canonical_caption=lambda meta: "a fake",
        grade_caption=lambda text, meta: {"all": text == "a fake"}, judge_image=lambda pred, meta: {"all": True})


def test_a_new_dataset_needs_only_its_module_and_a_registry_entry(monkeypatch, tmp_path):
    """Registering one Dataset gives it a CLI subcommand, a place in `data all`, canonical
    captions and default evaluation splits, with no other file touched."""
    from cola_mm import cli

    built: list = []
    fake = _fake_dataset(built)
    real = registry.datasets()
    monkeypatch.setattr(registry, "datasets", lambda: {**real, "fake": fake})
    args = cli.build_parser().parse_args(["data", "fake", "--out", str(tmp_path), "--colour", "red"])
    args.func(args)
    assert built == ["red"]
    assert captions.canonical_caption({"dataset": "fake"}) == "a fake"
    assert "fake/test" in registry.image_eval_splits("text_to_image")
    # `data all` asks every registered dataset to build what is missing under ROOT/NAME
    monkeypatch.setattr(registry, "datasets", lambda: {"fake": fake})
    (tmp_path / "tokenizer").mkdir()
    (tmp_path / "tokenizer" / "tokenizer.json").write_text("{}")  # already trained: skipped
    args = cli.build_parser().parse_args(["data", "all", "--out", str(tmp_path)])
    args.func(args)
    assert built[-1] == str(tmp_path / "fake")


def test_caption_evaluation_grades_with_the_registered_grader(monkeypatch, tmp_path):
    """evaluate_captions asks the split's dataset for its grader and groups."""
    from cola_mm.evaluation import images as ev

    fake = _fake_dataset([])
    real = registry.datasets()
    monkeypatch.setattr(registry, "datasets", lambda: {**real, "fake": fake})
    samples = [{"image": None, "txt": "x", "json": {"dataset": "fake"}} for _ in range(3)]
    monkeypatch.setattr(ev, "read_samples", lambda *a, **k: samples)

    class Pipe:
        def caption(self, images, **kw):
            return ["a fake", "a fake", "wrong"][:len(images)]

    results, _ = ev.evaluate_captions(Pipe(), tmp_path, splits=("fake/test",), progress=False)
    assert results["fake_test_all_acc"] == pytest.approx(2 / 3)
    assert results["fake_test_n"] == 3


def test_make_caption_variety_is_graded_by_the_shapes_grader():
    rng = random.Random(0)
    for i in range(30):
        _, _, meta = shapes.generate_sample(1, "val", i, max_objects=2)
        text = shapes.make_caption({k: meta[k] for k in ("objects", "relation") if k in meta}, rng)
        assert shapes.grade_caption(text, meta)["all"], text
