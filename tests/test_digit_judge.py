"""The digit judge independent of the probe: an SVC fitted on the train scans only, reading the
held-out test scans (rendered as the datasets render them) at >= 95 %."""

from __future__ import annotations

from PIL import Image
from sklearn.datasets import load_digits

from cola_mm.data import digits
from cola_mm.evaluation.digit_judge import DigitJudge, evaluate_digit_judge, ink_grid


def test_reads_held_out_scans_and_was_fitted_on_train_only():
    judge = DigitJudge()
    source = load_digits()
    assert judge.train_count == len(digits.split_indices("train", len(source.target))) == 1347
    test = list(digits.split_indices("test", len(source.target)))
    images = [digits.render_digit(source.images[i], 64) for i in test]
    accuracy = evaluate_digit_judge(images, source.target[test], judge)
    assert accuracy >= 0.95, accuracy
    assert judge.predict([]) == []


def test_ink_grid_inverts_the_render():
    source = load_digits()
    grid = ink_grid(digits.render_digit(source.images[0], 64))
    assert grid.shape == (8, 8) and grid.min() >= 0 and grid.max() <= 16
    blank = ink_grid(Image.new("RGB", (64, 64), digits.BACKGROUND))
    assert blank.max() == 0
