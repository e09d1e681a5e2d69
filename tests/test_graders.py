"""Strict graders: a caption is right only if it is, as a whole, one sentence of the caption
grammar that says exactly the scene. Each wrong caption below must fail; each right one pass."""

from __future__ import annotations

import random

import pytest

from cola_mm.data import digits, shapes

ONE = {"objects": [{"shape": "circle", "color": "red", "size": "small", "cell": "top left",
                    "bbox": [2.0, 2.0, 14.8, 14.8]}], "relation": None}
TWO = {"objects": [{"shape": "square", "color": "blue", "size": "large", "cell": "left"},
                   {"shape": "cross", "color": "green", "size": "small", "cell": "right"}], "relation": "left of"}


@pytest.mark.parametrize("caption", [
    "a small red circle in the top left",
    "A small red circle in the top left.",
    "  a   SMALL red circle in the top left  ",
    "there is a tiny red disc at the upper-left corner",
    "top left: a little red circle",
    "a red circle in the top left, small in size",
    "the circle in the top left is small and red",
])
def test_right_one_object_captions_pass(caption):
    assert shapes.grade_caption(caption, ONE)["all"], caption


@pytest.mark.parametrize("caption, why", [
    ("a large red circle in the top left", "wrong size"),
    ("a red circle in the top left", "no size"),
    ("a small red circle", "no position"),
    ("a small red circle in the top left corner and a big blue sky", "trailing words"),
    ("a small red circle in the top left lol lol", "trailing word salad"),
    ("a small red circle in the top left in the center", "two positions"),
    ("a small red circle a small red circle in the top left", "object named twice"),
    ("a small red circle in the top left, a small red circle in the top left", "the caption twice"),
    ("a small blue circle in the top left", "wrong colour"),
    ("a small red square in the top left", "wrong shape"),
    ("a small red circle in the top right", "wrong cell"),
    ("an small red circle in the top left", "wrong article"),
    ("small red circle in the top left", "missing article"),
    ("a small red red circle in the top left", "two colours"),
    ("a small red circle to the left of a small red circle", "two objects for one"),
    ("a small red circle in the top left..", "two full stops"),
    ("", "empty"),
])
def test_wrong_one_object_captions_fail(caption, why):
    assert not shapes.grade_caption(caption, ONE)["all"], why


@pytest.mark.parametrize("caption", [
    "a large blue square to the left of a small green cross",
    "a small green cross to the right of a large blue square",  # the same scene, other order
    "there is a big blue box left of a tiny green plus sign",
])
def test_right_two_object_captions_pass(caption):
    assert shapes.grade_caption(caption, TWO)["all"], caption


@pytest.mark.parametrize("caption, why", [
    ("a large blue square to the right of a small green cross", "wrong relation"),
    ("a large blue square above a small green cross", "a relation that does not hold"),
    ("a large blue square to the left of a large green cross", "wrong size of the second"),
    ("a blue square to the left of a small green cross", "no size"),
    ("a large blue square to the left of a small green cross to the left of a red circle", "three objects"),
    ("a large blue square", "one object for two"),
    ("a large blue square in the left", "one object with a cell for two"),
    ("a large green square to the left of a small blue cross", "colours swapped"),
])
def test_wrong_two_object_captions_fail(caption, why):
    assert not shapes.grade_caption(caption, TWO)["all"], why


def test_every_training_caption_passes_and_every_other_scene_fails():
    rng = random.Random(0)
    for i in range(300):
        _, caption, meta = shapes.generate_sample(5, "train", i, max_objects=2)
        assert shapes.grade_caption(caption, meta)["all"], caption
        _, _, other = shapes.generate_sample(5, "train", i + 1000, max_objects=2)
        same = [{k: o[k] for k in ("shape", "color", "size")} for o in other["objects"]] == \
            [{k: o[k] for k in ("shape", "color", "size")} for o in meta["objects"]]
        if not same:
            assert not shapes.grade_caption(caption, other)["all"], (caption, other)
        assert rng  # deterministic


@pytest.mark.parametrize("caption, label", [
    ("a handwritten 7", 7), ("A handwritten seven.", 7), ("an 8 drawn by hand", 8), ("the digit 0", 0),
    ("number 3, written by hand", 3),
])
def test_right_digit_captions_pass(caption, label):
    assert digits.grade_caption(caption, {"label": label})["all"]


@pytest.mark.parametrize("caption, why", [
    ("7", "a bare digit is not the grammar"),
    ("lol 7 lol", "any text holding one digit"),
    ("a handwritten 7 and more", "trailing words"),
    ("the digit 7 7", "the digit twice"),
    ("a handwritten 1", "wrong digit"),
    ("a 8 drawn by hand", "wrong article"),
    ("a handwritten 17", "two digits"),
    ("a handwritten", "no digit"),
])
def test_wrong_digit_captions_fail(caption, why):
    assert not digits.grade_caption(caption, {"label": 7 if "8" not in caption else 8})["all"], why
