"""The error analysis of held-out keypoints: each kind of gross error on hand-built cases, and the
heatmap evidence (peak, label ratio) on maps with known modes."""

from __future__ import annotations

import numpy as np
import pytest

from dgp_pyro.eval.error_analysis import classify_errors, heatmap_evidence

STRIDE = 4


def _bump(h: int, w: int, cell: tuple[float, float], height: float = 0.9) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return height * np.exp(-((xs - cell[0]) ** 2 + (ys - cell[1]) ** 2) / 2.0)


def test_heatmap_evidence_finds_the_peak_and_a_second_mode():
    h, w = 20, 30
    one = np.stack(
        [_bump(h, w, (5, 5)), _bump(h, w, (5, 5)) + _bump(h, w, (25, 15), 0.45), np.full((h, w), 0.2)]
    )
    factor = np.array([[2.0, 2.0]])  # frame pixels per training pixel
    cell_to_frame = lambda c: (np.asarray(c) * STRIDE + (STRIDE - 1) / 2 + 0.5) * 2.0 - 0.5  # noqa: E731
    labels = np.stack([cell_to_frame((5, 5)), cell_to_frame((25, 15)), cell_to_frame((10, 10))])[None]
    peak, ratio = heatmap_evidence(one[None], labels, factor, STRIDE)
    assert np.allclose(peak[0, 0], cell_to_frame((5, 5))) and np.allclose(peak[0, 1], cell_to_frame((5, 5)))
    assert ratio[0, 0] == pytest.approx(1.0)
    assert ratio[0, 1] == pytest.approx(0.5, abs=0.02)  # the second bump, half as high
    assert ratio[0, 2] == 0.0  # a flat map has no mode
    labels[0, 2] = np.nan
    assert np.isnan(heatmap_evidence(one[None], labels, factor, STRIDE)[1][0, 2])


def test_each_kind_of_gross_error():
    labels = np.array([[[100.0, 100.0], [200.0, 100.0], [100.0, 300.0], [300.0, 300.0], [50.0, 50.0]]])
    pred = labels.copy()
    pred[0, 0] = [199.0, 102.0]  # on keypoint 1's label: a swap
    pred[0, 2] = [100.0, 260.0]  # 40 px off, but the heatmap peaked at the label: the posterior moved it
    pred[0, 3] = [380.0, 300.0]  # 80 px off, the label a second mode
    pred[0, 4] = [150.0, 200.0]  # far off, nothing at the label
    peaks = pred.copy()
    peaks[0, 2] = [101.0, 299.0]
    ratio = np.array([[0.0, 1.0, 0.0, 0.6, 0.05]])
    kind, swapped = classify_errors(pred, labels, peaks, ratio, threshold=20.0)
    assert list(kind[0]) == ["swap", "ok", "posterior", "other_mode", "missed"]
    assert list(swapped[0]) == [1, -1, -1, -1, -1]
    labels[0, 4] = np.nan
    assert classify_errors(pred, labels, peaks, ratio)[0][0, 4] == ""  # unlabeled: not scored
