"""Keypoint metrics on hand-made arrays."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dgp_pyro.eval.metrics import format_table, keypoint_errors, mean_pose_baseline, summarize_errors

NAN = math.nan


def test_keypoint_errors_distances_and_missing():
    truth = np.array([[[0.0, 0.0], [10.0, 10.0]], [[NAN, NAN], [1.0, 1.0]]])
    pred = np.array([[[3.0, 4.0], [10.0, 10.0]], [[5.0, 5.0], [NAN, 2.0]]])
    dist = keypoint_errors(pred, truth)
    assert dist.shape == (2, 2)
    assert dist[0, 0] == pytest.approx(5.0)
    assert dist[0, 1] == 0.0
    assert math.isnan(dist[1, 0])  # truth missing
    assert math.isnan(dist[1, 1])  # prediction missing


def test_keypoint_errors_shape_mismatch():
    with pytest.raises(ValueError):
        keypoint_errors(np.zeros((2, 3, 2)), np.zeros((2, 2, 2)))


def test_summarize_errors_values():
    # distances: a = [1, 3, 7], b = [20, NaN, 4]
    dist = np.array([[1.0, 20.0], [3.0, NAN], [7.0, 4.0]])
    summary = summarize_errors(dist, ["a", "b"], pck_thresholds=(5, 10))
    d = np.array([1.0, 3.0, 7.0, 20.0, 4.0])
    assert summary["n"] == 5
    assert summary["rmse_px"] == pytest.approx(np.sqrt(np.mean(d**2)))
    assert summary["median_px"] == pytest.approx(4.0)
    assert summary["mean_px"] == pytest.approx(d.mean())
    assert summary["pck_5px"] == pytest.approx(3 / 5)
    assert summary["pck_10px"] == pytest.approx(4 / 5)
    a = summary["per_keypoint"]["a"]
    assert a["n"] == 3 and a["median_px"] == 3.0 and a["pck_5px"] == pytest.approx(2 / 3)
    b = summary["per_keypoint"]["b"]
    assert b["n"] == 2 and b["rmse_px"] == pytest.approx(np.sqrt((400 + 16) / 2))
    json.dumps(summary)  # JSON-able


def test_summarize_errors_counts_missing_predictions():
    truth = np.array([[[0.0, 0.0], [1.0, 1.0]]])
    pred = np.array([[[0.0, 0.0], [NAN, NAN]]])
    dist = keypoint_errors(pred, truth)
    summary = summarize_errors(dist, ["a", "b"], truth_present=np.isfinite(truth).all(-1))
    assert summary["n"] == 1 and summary["n_missing_pred"] == 1


def test_summarize_errors_empty_is_null():
    summary = summarize_errors(np.full((2, 1), NAN), ["a"])
    assert summary["n"] == 0 and summary["rmse_px"] is None and summary["pck_5px"] is None
    assert summary["per_keypoint"]["a"]["median_px"] is None
    json.dumps(summary)


def test_summarize_errors_checks_names():
    with pytest.raises(ValueError):
        summarize_errors(np.zeros((2, 3)), ["a", "b"])


def test_mean_pose_baseline():
    train = np.array([[[0.0, 0.0], [NAN, NAN]], [[2.0, 4.0], [1.0, 1.0]]])
    pred = mean_pose_baseline(train, 3)
    assert pred.shape == (3, 2, 2)
    np.testing.assert_allclose(pred[0], [[1.0, 2.0], [1.0, 1.0]])


def test_format_table_lists_keypoints():
    summary = summarize_errors(np.array([[1.0, 2.0]]), ["nose", "tail"])
    text = format_table(summary, title="t")
    lines = text.splitlines()
    assert lines[0] == "t" and "rmse_px" in lines[1] and "pck_5px" in lines[1]
    assert any(line.startswith("nose") for line in lines) and any(line.startswith("all") for line in lines)
