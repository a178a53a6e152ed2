"""Figures of the error analysis (:mod:`dgp_pyro.eval.error_analysis`): per-keypoint error
histograms, and one worst case on its image with the heatmap that produced it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from jaxtyping import Float

from dgp_pyro.viz.plot_parts import new_figure, save_figure, show_image

__all__ = ["plot_error_case", "plot_error_histograms"]


def plot_error_histograms(errors: dict[str, np.ndarray], threshold: float, path: str | Path) -> Path:
    """One histogram of pixel errors per keypoint (log-spaced bins), the gross threshold dashed."""
    names = list(errors)
    cols = min(4, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / cols))
    fig = new_figure((3.2 * cols, 2.4 * rows))
    finite = [e for e in errors.values() if e.size]
    top = max([float(e.max()) for e in finite] + [threshold * 2])
    bins = np.geomspace(0.25, max(top, 1.0) * 1.05, 30)
    for n, name in enumerate(names):
        ax = fig.add_subplot(rows, cols, n + 1)
        values = np.clip(errors[name], bins[0], None)
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.8)
        ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=1)
        gross = float((errors[name] > threshold).mean()) if errors[name].size else 0.0
        median = float(np.median(errors[name])) if errors[name].size else float("nan")
        ax.set_xscale("log")
        ax.set_title(f"{name}: median {median:.1f} px, {gross:.0%} > {threshold:g}", fontsize=8)
        ax.tick_params(labelsize=7)
        if n % cols == 0:
            ax.set_ylabel("keypoints", fontsize=8)
        if n >= len(names) - cols:
            ax.set_xlabel("error (px)", fontsize=8)
    return save_figure(fig, path)


def plot_error_case(
    image: np.ndarray,
    heatmap: Float[np.ndarray, "h w"],
    factor: Float[np.ndarray, "2"],
    stride: int,
    labels: Float[np.ndarray, "k 2"],
    keypoint: int,
    prediction: Float[np.ndarray, "2"],
    peak: Float[np.ndarray, "2"],
    title: str,
    path: str | Path,
) -> Path:
    """The image with the keypoint's heatmap over it: its label (green circle), the prediction
    (red cross), the heatmap's peak (yellow plus) and the other keypoints' labels (white dots)."""
    h, w = heatmap.shape
    fig = new_figure((6.0, 6.0 * image.shape[0] / max(1, image.shape[1]) + 0.6))
    ax = fig.add_subplot(1, 1, 1)
    show_image(ax, image)
    # heatmap cells span stride training pixels: their edges in frame pixels
    left, top = -0.5, -0.5
    right, bottom = w * stride * factor[0] - 0.5, h * stride * factor[1] - 0.5
    ax.imshow(
        heatmap,
        extent=(left, right, bottom, top),
        cmap="magma",
        alpha=0.45,
        vmin=0,
        vmax=max(1e-6, heatmap.max()),
    )
    others = np.delete(labels, keypoint, axis=0)
    others = others[np.isfinite(others).all(-1)]
    ax.plot(others[:, 0], others[:, 1], "o", color="white", markersize=3, linestyle="none")
    ax.plot(
        *labels[keypoint],
        "o",
        markerfacecolor="none",
        markeredgecolor="lime",
        markersize=12,
        markeredgewidth=2,
        label="label",
    )
    ax.plot(*prediction, "x", color="red", markersize=10, markeredgewidth=2, label="prediction")
    ax.plot(*peak, "+", color="yellow", markersize=12, markeredgewidth=2, label="heatmap peak")
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.legend(loc="lower right", fontsize=7, framealpha=0.6)
    ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return save_figure(fig, path)
