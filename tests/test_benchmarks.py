"""The benchmarks' own statistics, on problems with a known answer (the scripts themselves run
for minutes to hours and are not part of the suite)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_calibration_sampling_recovers_nominal_coverage_and_its_spread():
    """Errors twice the posterior's spread, frames with a shared difficulty: recalibrated on n
    random frames, the coverage is nominal in the median, spreads less with more frames, and the
    reported leave-one-frame-out standard error is the size of that spread."""
    bench = _load("bench_dgp3d_accuracy")
    rng = np.random.default_rng(0)
    T, J = 400, 6
    std = rng.uniform(1.0, 2.0, size=(T, J, 3))
    difficulty = np.exp(0.3 * rng.normal(size=(T, 1, 1)))
    truth = rng.normal(size=(T, J, 3))
    mean = truth + 2.0 * difficulty * std * rng.standard_normal((T, J, 3))
    labeled = rng.random((T, J)) < 0.8
    out = bench.calibration_sampling(mean, std, truth, labeled, np.arange(T), sizes=(4, 20), draws=60, seed=1)
    for n in ("4", "20"):
        for level, nominal in (("50", 0.5), ("90", 0.9), ("95", 0.95)):
            assert abs(out[n]["median"][level] - nominal) < 0.03, (n, level, out[n])
        assert out[n]["q05"]["50"] < out[n]["median"]["50"] < out[n]["q95"]["50"]
        spread, reported = out[n]["spread_50"], out[n]["loo_se_median_50"]
        assert 0.6 * spread < reported < 1.7 * spread, (n, spread, reported)
    assert out["20"]["spread_50"] < 0.7 * out["4"]["spread_50"]
    assert out["20"]["share_within_0.05"] > out["4"]["share_within_0.05"]


def test_score_threshold_from_labels_separates_labeled_from_hidden():
    bench = _load("bench_dgp3d_accuracy")
    rng = np.random.default_rng(0)
    labeled = rng.random((200, 8)) < 0.7
    confidence = np.where(
        labeled, rng.uniform(0.3, 0.9, labeled.shape), rng.uniform(0.0, 0.25, labeled.shape)
    )
    threshold = bench.score_threshold_from_labels(confidence, labeled)
    assert confidence[~labeled].max() < threshold <= confidence[labeled].min()  # in the gap
    # nothing hidden: keep 95 % of the labeled keypoints
    everything = np.ones_like(labeled)
    assert bench.score_threshold_from_labels(confidence, everything) == np.quantile(confidence, 0.05)


def test_error_bounds_undo_swaps_and_zero_hidden_errors_exactly():
    """A prediction that is the truth plus noise, with some left/right pairs swapped and the
    hidden keypoints far off: undoing the swaps gives the noise-only RMSE, and zeroing the
    hidden keypoints' errors gives the visible ones' squared error over every keypoint."""
    bench = _load("bench_dgp_accuracy")
    names = ["snout", "paw_left", "paw_right", "ear_left", "ear_right"]
    pairs = bench.left_right_pairs(names)
    assert pairs == [(1, 2), (3, 4)]
    rng = np.random.default_rng(0)
    T = 300
    points = rng.normal(scale=20.0, size=(T, 5, 2))
    pred = points + rng.normal(scale=0.5, size=points.shape)
    noise_only = np.sqrt(np.mean(np.sum((pred - points) ** 2, -1)))
    swapped = pred.copy()
    flip = rng.random(T) < 0.3
    swapped[flip, 1], swapped[flip, 2] = pred[flip, 2], pred[flip, 1]
    out = bench.error_bounds(swapped, points, np.ones((T, 5), bool), pairs)
    assert out["rmse_px"] > 5 * noise_only
    assert np.isclose(out["rmse_swaps_undone_px"], noise_only)
    assert out["rmse_hidden_exact_px"] == out["rmse_px"] and out["hidden_share_of_squared_error"] == 0.0

    visible = rng.random((T, 5)) < 0.7
    off = np.where(visible[..., None], pred, pred + 30.0)
    out = bench.error_bounds(off, points, visible, pairs)
    squared = np.sum((pred - points) ** 2, -1)
    assert np.isclose(out["rmse_hidden_exact_px"], np.sqrt(np.where(visible, squared, 0.0).mean()))
    assert out["hidden_share_of_squared_error"] > 0.99
