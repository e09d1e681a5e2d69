"""Digit judge: an sklearn SVC that the project's image judge (:mod:`cola_mm.evaluation.probe`) did not train.

Issue 17 asks that generated digits be read by a classifier independent of the CNN probe. This
one works on sklearn's own 8×8 representation:

    image ─L─▶ box-downsample to (8 + 2·PAD_CELLS)² ─drop the padding─▶ 8×8 ─invert, ×16─▶ ink 0..16

(:func:`ink_grid`; it inverts :func:`cola_mm.data.digits.render_digit`: background 245 → 0,
ink 25 → 16). The SVC (RBF, C=10, γ=0.001) is fitted *at load time* on the ``train`` indices
of :func:`sklearn.datasets.load_digits` only (:func:`cola_mm.data.digits.split_indices`), each
scan rendered at 64 px and read back through :func:`ink_grid` (so train and test grids pass the
same round trip) and also shifted by one cell up, down, left and right (5× the data: generated
digits are not centred exactly). Nothing is pickled; fitting is deterministic (~2 s, one core).

Its accuracy on the 300 held-out ``digits/test`` scans rendered at 64 px is checked (≥ 95 %) by
``tests/test_digit_judge.py``.

Wiring: the probe's ``predict`` fills ``"digit"`` from this judge for the images its CNN reads
as digits, so ``digits.judge_image`` grades generated digits by this SVC, not by the CNN.

    from cola_mm.evaluation.digit_judge import DigitJudge
    DigitJudge.shared().predict([image])   # → [7]
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image

from cola_mm.data import digits

SHIFTS = ((0, 0), (0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx) cell shifts added to the training grids
SVC_C = 10.0
SVC_GAMMA = 0.001
GRID = 8  # sklearn's digits are 8×8
RENDER_SIZE = 64


def ink_grid(image: Image.Image) -> np.ndarray:
    """A digit image → sklearn's (8, 8) ink grid, float 0..16 (0 = background)."""
    side = GRID + 2 * digits.PAD_CELLS
    gray = np.asarray(image.convert("L").resize((side, side), Image.Resampling.BOX), np.float32)
    pad = digits.PAD_CELLS
    gray = gray[pad:side - pad, pad:side - pad]
    background, ink = float(digits.BACKGROUND[0]), float(digits.INK[0])
    return np.clip((background - gray) / (background - ink), 0.0, 1.0) * digits.SOURCE_MAX


def _shift(grids: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Shift (n, 8, 8) grids by whole cells, filling with background."""
    padded = np.pad(grids, ((0, 0), (1, 1), (1, 1)))
    return padded[:, 1 + dy:1 + dy + GRID, 1 + dx:1 + dx + GRID]


class DigitJudge:
    """An RBF SVC on ink grids, fitted on the digits train scans at construction."""

    _shared: "DigitJudge | None" = None

    def __init__(self):
        from sklearn.datasets import load_digits
        from sklearn.svm import SVC

        source = load_digits()
        train = list(digits.split_indices("train", len(source.target)))
        grids = np.stack([ink_grid(digits.render_digit(source.images[i], RENDER_SIZE)) for i in train])
        x = np.concatenate([_shift(grids, dy, dx).reshape(len(grids), -1) for dy, dx in SHIFTS])
        y = np.tile(source.target[train], len(SHIFTS))
        self.classifier = SVC(C=SVC_C, gamma=SVC_GAMMA).fit(x, y)
        self.train_count = len(train)

    @classmethod
    def shared(cls) -> "DigitJudge":
        """One judge per process (fitted on first use)."""
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def predict(self, images: Sequence[Image.Image]) -> list[int]:
        """The digit (0..9) of each image."""
        if not len(images):
            return []
        x = np.stack([ink_grid(im).ravel() for im in images])
        return [int(v) for v in self.classifier.predict(x)]


def evaluate_digit_judge(images: Sequence[Image.Image], labels: Sequence[int],
                         judge: DigitJudge | None = None) -> float:
    """Share of ``images`` the judge reads as their ``labels``."""
    judge = judge or DigitJudge.shared()
    preds = judge.predict(images)
    return sum(p == int(t) for p, t in zip(preds, labels)) / len(preds) if preds else float("nan")
