r"""Where the gross errors come from: each held-out keypoint's error, and what its heatmap says.

``dgp-pyro evaluate RUN --errors DIR`` writes, for the run's held-out labeled images:

- ``errors.csv``: one row per labeled keypoint: its label and prediction (frame pixels), the
  error, the heatmap's peak and its error, the *label ratio* (the heatmap's highest value
  within :data:`LABEL_RADIUS_CELLS` cells of the label over its highest value anywhere, both
  above the map's median; 0 for a map with no peak), and the kind of error;
- ``error_histograms.png``: the error distribution of every keypoint, the gross-error line marked;
- ``worst/NN_<image>_<keypoint>.png``: the worst keypoints, each on its image with its heatmap.

A keypoint more than ``threshold`` pixels (default :data:`GROSS_ERROR_PX`) from its label is a
gross error of one kind, tested in this order:

``swap``
    the prediction lies on another keypoint's label (closer than half its own error and than
    the threshold): left/right or head/tail confusion;
``posterior``
    the heatmap's peak is within the threshold of the label: the network found it and the
    decoding or the posterior (a potential, an interval fit) moved it away;
``other_mode``
    the peak is elsewhere but the heatmap has a second mode at the label (label ratio at least
    :data:`OTHER_MODE_RATIO`): the network saw it and ranked it second, which a temporal or
    skeletal prior can fix;
``missed``
    the heatmap has little mass at the label: a confident wrong peak, or the part unseen.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from dgp_pyro.atomic import atomic_path
from dgp_pyro.data.dataset import read_image
from dgp_pyro.nets.heatmaps import heatmap_grid
from dgp_pyro.viz.error_gallery import plot_error_case, plot_error_histograms

__all__ = ["ERROR_KINDS", "GROSS_ERROR_PX", "classify_errors", "heatmap_evidence", "write_error_analysis"]

#: Errors above this many pixels are gross (the DeepLabCut benchmark's ``over_20px``).
GROSS_ERROR_PX = 20.0
#: A heatmap whose value near the label is at least this share of its peak has a mode there.
OTHER_MODE_RATIO = 0.3
#: A heatmap whose peak rises less than this above its median has no mode at all.
MIN_PEAK_HEIGHT = 0.1
#: The neighbourhood of the label searched for that mode, in heatmap cells.
LABEL_RADIUS_CELLS = 1.5
#: The kinds of error, in the order they are tested (``ok``: not gross).
ERROR_KINDS = ("ok", "swap", "posterior", "other_mode", "missed")


def heatmap_evidence(
    heatmaps: Float[np.ndarray, "n k h w"],
    labels: Float[np.ndarray, "n k 2"],
    factor: Float[np.ndarray, "n 2"],
    stride: int,
) -> tuple[Float[np.ndarray, "n k 2"], Float[np.ndarray, "n k"]]:
    """Each heatmap's peak (frame pixels) and its label ratio (NaN where the label is missing).

    ``factor`` is frame pixels per training pixel of each image; ``labels`` are frame pixels.
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    best = flat.argmax(-1)
    xs, ys = (axis.numpy() for axis in heatmap_grid(h, w, stride, dtype=torch.float64))
    train_peak = np.stack([xs[best % w], ys[best // w]], -1)
    peak = (train_peak + 0.5) * factor[:, None, :] - 0.5
    # the label in heatmap cells (the grid's centres are linear in the cell index), and the
    # cells within the radius of it
    label_cells = ((labels + 0.5) / factor[:, None, :] - 0.5 - xs[0]) / stride
    ys, xs = np.mgrid[0:h, 0:w]
    d2 = (xs[None, None] - label_cells[..., 0, None, None]) ** 2 + (
        ys[None, None] - label_cells[..., 1, None, None]
    ) ** 2
    near = np.where(d2 <= LABEL_RADIUS_CELLS**2, heatmaps, -np.inf).reshape(n, k, -1).max(-1)
    # heights above the map's background (its median), so a flat map has no mode anywhere
    background = np.median(flat, axis=-1)
    height = flat.max(-1) - background
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.maximum(near - background, 0.0) / np.maximum(height, 1e-12)
    ratio = np.where(np.isfinite(near) & (height >= MIN_PEAK_HEIGHT), ratio, 0.0)
    ratio = np.where(np.isfinite(labels).all(-1), ratio, np.nan)
    return peak, ratio


def classify_errors(
    predictions: Float[np.ndarray, "n k 2"],
    labels: Float[np.ndarray, "n k 2"],
    peaks: Float[np.ndarray, "n k 2"],
    label_ratio: Float[np.ndarray, "n k"],
    threshold: float = GROSS_ERROR_PX,
) -> tuple[np.ndarray, np.ndarray]:
    """The kind of each keypoint's error (:data:`ERROR_KINDS`, ``""`` where it is unlabeled) and,
    for swaps, the index of the keypoint whose label the prediction took (else -1)."""
    n, k, _ = labels.shape
    error = np.linalg.norm(predictions - labels, axis=-1)
    peak_error = np.linalg.norm(peaks - labels, axis=-1)
    # distance of each prediction to every other keypoint's label in the same image
    to_other = np.linalg.norm(predictions[:, :, None, :] - labels[:, None, :, :], axis=-1)
    to_other[:, np.arange(k), np.arange(k)] = np.inf
    to_other = np.where(np.isfinite(to_other), to_other, np.inf)
    nearest = to_other.argmin(-1)
    nearest_distance = to_other.min(-1)
    kind = np.full((n, k), "", dtype=object)
    swapped_with = np.full((n, k), -1, dtype=np.int64)
    labeled = np.isfinite(error)
    gross = labeled & (error > threshold)
    kind[labeled & ~gross] = "ok"
    swap = gross & (nearest_distance < np.minimum(threshold, error / 2))
    kind[swap] = "swap"
    swapped_with[swap] = nearest[swap]
    rest = gross & ~swap
    posterior = rest & (peak_error <= threshold)
    kind[posterior] = "posterior"
    rest &= ~posterior
    other_mode = rest & (np.nan_to_num(label_ratio) >= OTHER_MODE_RATIO)
    kind[other_mode] = "other_mode"
    kind[rest & ~other_mode] = "missed"
    return kind, swapped_with


def write_error_analysis(
    out_dir: str | Path,
    image_keys: list[str],
    image_paths: list[Path],
    keypoints: list[str],
    predictions: Float[np.ndarray, "n k 2"],
    labels: Float[np.ndarray, "n k 2"],
    heatmaps: Float[np.ndarray, "n k h w"],
    factor: Float[np.ndarray, "n 2"],
    stride: int,
    worst: int = 12,
    threshold: float = GROSS_ERROR_PX,
) -> dict[str, Any]:
    """Write ``errors.csv``, the histograms and the ``worst`` cases (module doc); return a summary:
    ``{"errors_dir", "gross_threshold_px", "n_gross", "error_kinds": {kind: count},
    "gross_per_keypoint": {name: share of its labeled points}, "swaps": {"a->b": count}}``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    peaks, ratio = heatmap_evidence(heatmaps, labels, factor, stride)
    kind, swapped_with = classify_errors(predictions, labels, peaks, ratio, threshold)
    error = np.linalg.norm(predictions - labels, axis=-1)
    peak_error = np.linalg.norm(peaks - labels, axis=-1)
    with atomic_path(out / "errors.csv") as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(
            ["image", "keypoint", "x_label", "y_label", "x_pred", "y_pred", "error_px",
             "x_peak", "y_peak", "peak_error_px", "label_ratio", "kind", "swapped_with"]
        )  # fmt: skip
        for i, key in enumerate(image_keys):
            for j, name in enumerate(keypoints):
                if not kind[i, j]:
                    continue
                writer.writerow(
                    [key, name, *_r(labels[i, j]), *_r(predictions[i, j]), _r(error[i, j]),
                     *_r(peaks[i, j]), _r(peak_error[i, j]), _r(ratio[i, j], 3), kind[i, j],
                     keypoints[swapped_with[i, j]] if swapped_with[i, j] >= 0 else ""]
                )  # fmt: skip
    plot_error_histograms(
        {name: error[:, j][np.isfinite(error[:, j])] for j, name in enumerate(keypoints)},
        threshold,
        out / "error_histograms.png",
    )
    order = np.argsort(np.where(np.isfinite(error), error, -np.inf), axis=None)[::-1]
    worst_dir = out / "worst"
    for old in worst_dir.glob("*.png") if worst_dir.is_dir() else []:
        old.unlink()  # a gallery of another run's worst cases would mislead
    for rank, flat in enumerate(order[: max(0, worst)]):
        i, j = np.unravel_index(flat, error.shape)
        if not np.isfinite(error[i, j]):
            break
        stem = Path(image_keys[i]).stem.replace("/", "_")
        title = f"{image_keys[i]}  {keypoints[j]}: {error[i, j]:.1f} px, {kind[i, j]}"
        if swapped_with[i, j] >= 0:
            title += f" (on {keypoints[swapped_with[i, j]]})"
        plot_error_case(
            read_image(image_paths[i]),
            heatmaps[i, j],
            factor[i],
            stride,
            labels[i],
            j,
            predictions[i, j],
            peaks[i, j],
            title,
            worst_dir / f"{rank + 1:02d}_{stem}_{keypoints[j]}.png",
        )
    labeled = kind != ""
    gross = labeled & (kind != "ok")
    swaps: dict[str, int] = {}
    for i, j in zip(*np.nonzero(kind == "swap"), strict=True):
        pair = f"{keypoints[j]}->{keypoints[swapped_with[i, j]]}"
        swaps[pair] = swaps.get(pair, 0) + 1
    return {
        "errors_dir": str(out),
        "gross_threshold_px": float(threshold),
        "n_gross": int(gross.sum()),
        "error_kinds": {name: int((kind == name).sum()) for name in ERROR_KINDS},
        "gross_per_keypoint": {
            name: float(gross[:, j].sum() / max(1, labeled[:, j].sum())) for j, name in enumerate(keypoints)
        },
        "swaps": swaps,
    }


def _r(value, digits: int = 2):
    values = np.atleast_1d(np.asarray(value, dtype=np.float64))
    out = ["" if not np.isfinite(v) else round(float(v), digits) for v in values]
    return out if np.ndim(value) else out[0]
