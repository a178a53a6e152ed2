"""Trajectories of the posterior: x and y of each keypoint over time, with credible bands.

See :mod:`~dgp_pyro.viz.plot_parts` for the conventions shared by every plot (pixel coordinates,
time first, NaN skipped, credible levels as fractions); figures are built without pyplot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from jaxtyping import Float
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from dgp_pyro.errors import DGPError
from dgp_pyro.viz.plot_parts import (
    RAW_STYLE,
    TRUTH_STYLE,
    as_points,
    check_level,
    check_names,
    draw_labeled_frames,
    keypoint_colors,
    labeled_array,
    labeled_handle,
    legend_columns,
    level_label,
    mix_white,
    new_figure,
)

__all__ = ["plot_trajectories"]


def plot_trajectories(
    mean: Float[np.ndarray, "T K 2"],
    lower: Mapping[float, Float[np.ndarray, "T K 2"]],
    upper: Mapping[float, Float[np.ndarray, "T K 2"]],
    keypoint_names: Sequence[str],
    keypoints: Sequence[str] | None = None,
    labeled_frames: Sequence[int] | np.ndarray | None = None,
    truth: Float[np.ndarray, "T K 2"] | None = None,
    raw: Float[np.ndarray, "T K 2"] | None = None,
    frame_index: Sequence[int] | np.ndarray | None = None,
    title: str | None = None,
) -> Figure:
    """Posterior trajectories over time with credible bands, one row per keypoint and coordinate.

    Rows go keypoint by keypoint, ``x`` then ``y`` (axes ``2 i`` and ``2 i + 1`` of
    ``fig.axes`` for the ``i``-th chosen keypoint), sharing the time axis. Each row has the
    posterior mean (a line in the keypoint's colour), a shaded band per credible level (the keys
    of ``lower``/``upper``; narrower bands darker, drawn over the wider ones), and a thin vertical
    line at every labeled frame in view, as in the Deep Graph Pose paper's comparison with
    DeepLabCut, so the reader sees the bands tighten at labels and widen between them.

    Args:
        mean: ``(T, K, 2)`` posterior means in pixels.
        lower, upper: credible level -> ``(T, K, 2)`` lower and upper bounds; same levels in both.
        keypoint_names: the ``K`` names.
        keypoints: names of the keypoints to show, in that order (default all).
        labeled_frames: frame indices (in the units of ``frame_index``) that have labels; only
            those within the plotted range are drawn.
        truth: ``(T, K, 2)`` ground truth, drawn dashed black.
        raw: ``(T, K, 2)`` raw network estimate (e.g. the soft-argmax), drawn thin grey.
        frame_index: ``(T,)`` frame number of each row (default ``0 .. T-1``).
        title: figure title.
    """
    mean = as_points(mean, "mean", 2, ndim=3)
    t, k = mean.shape[:2]
    names = check_names(keypoint_names, k, "mean")
    if set(lower) != set(upper):
        raise ValueError(f"lower and upper have different levels: {sorted(lower)} vs {sorted(upper)}")
    levels = sorted((check_level(lv) for lv in lower), reverse=True)  # widest first
    bands = {}
    for lv in levels:
        lo, hi = np.asarray(lower[lv], dtype=float), np.asarray(upper[lv], dtype=float)
        if lo.shape != mean.shape or hi.shape != mean.shape:
            raise ValueError(f"bounds at level {lv} have shapes {lo.shape}/{hi.shape}, mean has {mean.shape}")
        bands[lv] = (lo, hi)
    overlays = {}
    for name, arr in (("truth", truth), ("raw", raw)):
        if arr is not None:
            arr = np.asarray(arr, dtype=float)
            if arr.shape != mean.shape:
                raise ValueError(f"{name} has shape {arr.shape}, mean has {mean.shape}")
            overlays[name] = arr
    x = np.arange(t) if frame_index is None else np.asarray(frame_index, dtype=float).ravel()
    if x.shape != (t,):
        raise ValueError(f"frame_index has {x.size} entries for {t} frames")
    chosen = names if keypoints is None else list(keypoints)
    for name in chosen:
        if name not in names:
            raise DGPError(f"no keypoint named {name!r}", hint=f"keypoints are {', '.join(names)}")
    if not chosen:
        raise ValueError("no keypoints to plot")
    labeled = labeled_array(labeled_frames)
    colors = keypoint_colors(k)
    # Narrowest band: 55 % of the keypoint colour on white, widest 22 %.
    shades = np.linspace(0.55, 0.22, len(levels)) if len(levels) > 1 else [0.4] * len(levels)
    weights = dict(zip(sorted(levels), shades, strict=True))

    fig = new_figure((10.0, 0.6 + 1.35 * 2 * len(chosen)))
    axes = fig.subplots(2 * len(chosen), 1, sharex=True, squeeze=False)[:, 0]
    x_lo, x_hi = (float(np.nanmin(x)), float(np.nanmax(x))) if t else (0.0, 1.0)
    for row, name in enumerate(chosen):
        kk = names.index(name)
        color = colors[kk]
        for c, coord in enumerate("xy"):
            ax = axes[2 * row + c]
            for lv in levels:
                lo, hi = bands[lv]
                ax.fill_between(
                    x,
                    lo[:, kk, c],
                    hi[:, kk, c],
                    color=mix_white(color, weights[lv]),
                    linewidth=0,
                    zorder=1 + 0.01 * (1 - lv),
                    gid=f"band_{lv:g}",
                )
            if "raw" in overlays:
                ax.plot(x, overlays["raw"][:, kk, c], zorder=2, gid="raw", **RAW_STYLE)
            draw_labeled_frames(ax, labeled, x_lo, x_hi)
            ax.plot(x, mean[:, kk, c], color=color, linewidth=1.3, zorder=3, gid="mean")
            if "truth" in overlays:
                ax.plot(x, overlays["truth"][:, kk, c], zorder=2.8, gid="truth", **TRUTH_STYLE)
            ax.set_ylabel(f"{coord} (px)")
            ax.grid(axis="y", color="0.92", linewidth=0.6, zorder=0)
            ax.tick_params(labelsize=8)
            if c == 0:
                ax.set_title(name, loc="left", fontsize=10, color=color, fontweight="bold", pad=3)
    axes[-1].set_xlabel("frame")
    axes[-1].set_xlim(x_lo, x_hi if x_hi > x_lo else x_lo + 1)

    grey = "0.3"
    handles: list = [Line2D([], [], color=grey, linewidth=1.3, label="posterior mean")]
    handles += [
        Patch(color=mix_white(grey, weights[lv]), label=f"{level_label(lv)} credible interval")
        for lv in sorted(levels)
    ]
    if "truth" in overlays:
        handles.append(Line2D([], [], label="ground truth", **TRUTH_STYLE))
    if "raw" in overlays:
        handles.append(Line2D([], [], label="network estimate", **RAW_STYLE))
    if labeled is not None:
        handles.append(labeled_handle())
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=legend_columns(len(handles)),
        frameon=False,
        fontsize=9,
    )
    if title:
        fig.suptitle(title)
    return fig
