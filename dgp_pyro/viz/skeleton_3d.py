"""3D poses of the multi-view posterior: keypoints, skeleton and per-axis credible error bars.

See :mod:`~dgp_pyro.viz.plot_parts` for the conventions shared by every plot (pixel coordinates,
time first, NaN skipped, credible levels as fractions); figures are built without pyplot.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist

import numpy as np
from jaxtyping import Float
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dgp_pyro.viz.plot_parts import (
    Skeleton,
    as_points,
    bone_pairs,
    check_level,
    check_names,
    keypoint_colors,
    keypoint_legend_handles,
    level_label,
    new_figure,
)

__all__ = ["plot_skeleton_3d"]


def plot_skeleton_3d(
    points: Float[np.ndarray, "K 3"],
    std: Float[np.ndarray, "K 3"] | None,
    keypoint_names: Sequence[str],
    skeleton: Skeleton,
    truth: Float[np.ndarray, "K 3"] | None = None,
    title: str | None = None,
    level: float = 0.9,
    units: str = "",
    elev: float = 20.0,
    azim: float = -60.0,
) -> Figure:
    """A 3D pose with per-keypoint error bars, at equal scale on all three axes.

    Each keypoint with a ``std`` gets three error bars, along x, y and z, covering its
    marginal central ``level`` interval: ``mean +/- z * std`` with ``z`` the standard normal
    quantile at ``(1 + level) / 2`` (1.645 for 90 %). One unit is the same length on every axis
    (the box is shaped by the data, each side at least 30 % of the longest so a flat pose keeps a
    visible depth). NaN keypoints are skipped.

    Args:
        points: ``(K, 3)`` posterior means.
        std: ``(K, 3)`` posterior standard deviations per axis, or None.
        keypoint_names: the ``K`` names (the legend).
        skeleton: bones as keypoint index pairs or name pairs.
        truth: ``(K, 3)`` ground truth: hollow black circles and a dashed grey skeleton.
        title: axes title.
        level: credible level of the error bars.
        units: unit of the coordinates for the axis labels (e.g. ``"mm"``).
        elev, azim: the viewing angles (degrees), as in ``Axes3D.view_init``.
    """
    points = as_points(points, "points", 3)
    k = points.shape[0]
    names = check_names(keypoint_names, k, "points")
    if std is not None:
        std = np.asarray(std, dtype=float)
        if std.shape != points.shape:
            raise ValueError(f"std has shape {std.shape}, points has {points.shape}")
    if truth is not None:
        truth = as_points(truth, "truth", 3)
        if truth.shape != points.shape:
            raise ValueError(f"truth has shape {truth.shape}, points has {points.shape}")
    z = NormalDist().inv_cdf(0.5 + check_level(level) / 2)
    bones = bone_pairs(skeleton, names)
    colors = keypoint_colors(k)

    fig = new_figure((8.5, 5.6))
    ax = fig.add_subplot(projection="3d")
    finite = np.all(np.isfinite(points), axis=1)
    for i, j in bones:
        if finite[i] and finite[j]:
            seg = points[[i, j]]
            ax.plot(seg[:, 0], seg[:, 1], seg[:, 2], color="0.35", linewidth=2.0, zorder=1, gid="bone")
    if truth is not None:
        tfin = np.all(np.isfinite(truth), axis=1)
        for i, j in bones:
            if tfin[i] and tfin[j]:
                seg = truth[[i, j]]
                ax.plot(
                    seg[:, 0],
                    seg[:, 1],
                    seg[:, 2],
                    color="0.55",
                    linewidth=1.0,
                    linestyle=(0, (4, 2)),
                    gid="truth_bone",
                )
        if tfin.any():
            ax.scatter(
                *truth[tfin].T,
                s=40,
                facecolors="none",
                edgecolors="black",
                linewidths=1.0,
                depthshade=False,
                gid="truth",
            )
    extent = [points[finite]] + ([truth[np.all(np.isfinite(truth), axis=1)]] if truth is not None else [])
    for kk in np.flatnonzero(finite):
        p = points[kk]
        if std is not None:
            for axis in range(3):
                s = std[kk, axis]
                if not np.isfinite(s):
                    continue
                seg = np.repeat(p[None], 2, axis=0)
                seg[0, axis] -= z * s
                seg[1, axis] += z * s
                extent.append(seg)
                ax.plot(
                    seg[:, 0],
                    seg[:, 1],
                    seg[:, 2],
                    color=colors[kk],
                    linewidth=1.6,
                    alpha=0.85,
                    gid="errorbar",
                )
    if finite.any():
        ax.scatter(
            *points[finite].T,
            s=36,
            c=colors[finite],
            edgecolors="white",
            linewidths=0.6,
            depthshade=False,
            gid="keypoints",
        )

    allpts = np.concatenate(extent) if extent else np.zeros((0, 3))
    if allpts.size:
        lo, hi = allpts.min(0), allpts.max(0)
        centre, span = (lo + hi) / 2, (hi - lo) * 1.08
        span = np.maximum(span, max(float(span.max()), 1e-9) * 0.3)
        ax.set_xlim(centre[0] - span[0] / 2, centre[0] + span[0] / 2)
        ax.set_ylim(centre[1] - span[1] / 2, centre[1] + span[1] / 2)
        ax.set_zlim(centre[2] - span[2] / 2, centre[2] + span[2] / 2)
        ax.set_box_aspect(tuple(span / span.max()), zoom=1.05)
    unit = f" ({units})" if units else ""
    ax.set_xlabel(f"x{unit}")
    ax.set_ylabel(f"y{unit}")
    ax.set_zlabel(f"z{unit}")
    ax.tick_params(labelsize=7)
    ax.view_init(elev=elev, azim=azim)
    if title:
        ax.set_title(title)
    handles = keypoint_legend_handles(names, colors)
    if std is not None:
        handles.append(
            Line2D([], [], color="0.3", linewidth=1.6, label=f"{level_label(level)} interval per axis")
        )
    if truth is not None:
        handles.append(
            Line2D(
                [],
                [],
                linestyle=(0, (4, 2)),
                color="0.55",
                marker="o",
                markerfacecolor="none",
                markeredgecolor="black",
                label="ground truth",
            )
        )
    fig.legend(handles=handles, loc="outside right upper", frameon=False, fontsize=8)
    return fig
