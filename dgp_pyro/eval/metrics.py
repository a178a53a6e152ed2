"""Keypoint accuracy metrics: per-point pixel errors, RMSE, median error and PCK.

Every function takes NaN as "missing": a point whose truth (or prediction) is NaN is left out
of every statistic and counted in no denominator. A prediction that is NaN where the truth is
present counts as missing too (``n_missing_pred`` says how many), never as an error of 0 or
infinity, so a method cannot look better by declining to answer without it showing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from jaxtyping import Float

#: The PCK thresholds reported by default, in pixels.
DEFAULT_PCK_THRESHOLDS = (5.0, 10.0)


def keypoint_errors(
    pred: Float[np.ndarray, "n keypoints 2"], truth: Float[np.ndarray, "n keypoints 2"]
) -> Float[np.ndarray, "n keypoints"]:
    """Euclidean distance between predicted and true points, NaN where either is missing.

    Args:
        pred: predicted points, pixels, ``(..., K, 2)``.
        truth: true points, same shape; NaN marks a missing truth.

    Returns:
        distances ``(..., K)``, NaN where the truth or the prediction is missing.
    """
    pred = np.asarray(pred, dtype=float)
    truth = np.asarray(truth, dtype=float)
    if pred.shape != truth.shape or pred.shape[-1] != 2:
        raise ValueError(f"pred {pred.shape} and truth {truth.shape} must both be (..., K, 2)")
    missing = np.isnan(truth).any(axis=-1) | np.isnan(pred).any(axis=-1)
    dist = np.sqrt(((pred - truth) ** 2).sum(axis=-1))
    dist[missing] = np.nan
    return dist


def _pck_key(threshold: float) -> str:
    return f"pck_{threshold:g}px"


def _stats(dist: np.ndarray, pck_thresholds: Sequence[float]) -> dict[str, Any]:
    d = dist[np.isfinite(dist)]
    out: dict[str, Any] = {"n": int(d.size)}
    if d.size == 0:
        out.update({"rmse_px": None, "mean_px": None, "median_px": None})
        out.update({_pck_key(t): None for t in pck_thresholds})
        return out
    out["rmse_px"] = float(np.sqrt(np.mean(d**2)))
    out["mean_px"] = float(np.mean(d))
    out["median_px"] = float(np.median(d))
    for t in pck_thresholds:
        out[_pck_key(t)] = float(np.mean(d <= t))
    return out


def summarize_errors(
    dist: Float[np.ndarray, "n keypoints"],
    keypoint_names: Sequence[str],
    pck_thresholds: Sequence[float] = DEFAULT_PCK_THRESHOLDS,
    truth_present: np.ndarray | None = None,
) -> dict[str, Any]:
    """RMSE, mean, median and PCK over all points and per keypoint.

    Args:
        dist: distances from :func:`keypoint_errors`, ``(N, K)``; NaN = not scored.
        keypoint_names: the K keypoint names, in column order.
        pck_thresholds: pixel radii for the PCK (share of points within the radius).
        truth_present: optional ``(N, K)`` mask of points whose truth exists; where given,
            ``n_missing_pred`` counts the present truths whose distance is NaN (no prediction).

    Returns:
        ``{"rmse_px", "mean_px", "median_px", "pck_5px", "pck_10px", "n", "per_keypoint":
        {name: {same keys}}}``; a statistic with no points to score is ``None`` (JSON ``null``).
    """
    dist = np.asarray(dist, dtype=float)
    if dist.ndim != 2 or dist.shape[1] != len(keypoint_names):
        raise ValueError(f"dist {dist.shape} must be (N, {len(keypoint_names)})")
    out = _stats(dist, pck_thresholds)
    if truth_present is not None:
        out["n_missing_pred"] = int((np.asarray(truth_present, bool) & ~np.isfinite(dist)).sum())
    out["per_keypoint"] = {name: _stats(dist[:, k], pck_thresholds) for k, name in enumerate(keypoint_names)}
    return out


def mean_pose_baseline(
    train_points: Float[np.ndarray, "n keypoints 2"], n: int
) -> Float[np.ndarray, "n keypoints 2"]:
    """The trivial predictor: every frame gets each keypoint's mean over the training labels.

    The RMSE of this prediction gives the scale of a problem (how much the animal moves): a
    network is only useful where its RMSE is clearly below it.
    """
    mean = np.nanmean(np.asarray(train_points, dtype=float), axis=0)
    return np.broadcast_to(mean, (n, *mean.shape)).copy()


def format_table(summary: dict[str, Any], title: str = "") -> str:
    """A readable table of a :func:`summarize_errors` result, one row per keypoint plus 'all'."""
    pck_keys = [key for key in summary if key.startswith("pck_")]
    header = ["keypoint", "n", "rmse_px", "median_px", *pck_keys]
    rows = [["all", *(summary.get(key) for key in header[1:])]]
    for name, stats in summary.get("per_keypoint", {}).items():
        rows.append([name, *(stats.get(key) for key in header[1:])])

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if value <= 1.0 else f"{value:.2f}"
        return str(value)

    text_rows = [header] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in text_rows) for i in range(len(header))]
    lines = [title] if title else []
    for i, row in enumerate(text_rows):
        pairs = enumerate(zip(row, widths, strict=True))
        cells = (c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in pairs)
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)
