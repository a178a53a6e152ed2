"""Frames with keypoints, skeleton and uncertainty ellipses: one frame, or a contact sheet of many.

See :mod:`~dgp_pyro.viz.plot_parts` for the conventions shared by every plot (pixel coordinates,
time first, NaN skipped, credible levels as fractions); figures are built without pyplot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from jaxtyping import Bool, Float
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Patch

from dgp_pyro.viz.plot_parts import (
    HALO,
    Skeleton,
    as_points,
    bone_pairs,
    check_level,
    check_names,
    credible_ellipse,
    draw_pose_2d,
    keypoint_colors,
    keypoint_legend_handles,
    level_label,
    new_figure,
    root_figure,
    show_image,
)

__all__ = ["plot_contact_sheet", "plot_frame"]


def plot_frame(
    image: np.ndarray | None,
    mean: Float[np.ndarray, "K 2"],
    cov: Float[np.ndarray, "K 2 2"] | None,
    keypoint_names: Sequence[str],
    skeleton: Skeleton = (),
    level: float = 0.9,
    truth: Float[np.ndarray, "K 2"] | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    legend: bool = True,
) -> Figure:
    """One frame with the posterior keypoints, the skeleton and each keypoint's credible ellipse.

    The ellipse of keypoint ``k`` is the ``level`` region of ``N(mean[k], cov[k])``
    (:func:`credible_ellipse`), outlined in the keypoint's colour. Keypoints with a NaN mean are
    skipped, as are ellipses with a NaN covariance and bones with a missing end.

    Args:
        image: ``(H, W, 3)`` uint8 RGB (or ``(H, W)`` grey); None draws on a blank canvas.
        mean: ``(K, 2)`` posterior means in pixels.
        cov: ``(K, 2, 2)`` posterior covariances in pixels squared, or None for no ellipses.
        keypoint_names: the ``K`` names (the legend).
        skeleton: bones as keypoint index pairs or name pairs.
        level: credible level of the ellipses.
        truth: ``(K, 2)`` ground truth, drawn as crosses in the keypoint's colour.
        ax: draw into this axes (its figure is returned) instead of a new figure.
        title: axes title.
        legend: add the legend of keypoint colours (outside, on the right).
    """
    mean = as_points(mean, "mean", 2)
    k = mean.shape[0]
    names = check_names(keypoint_names, k, "mean")
    level = check_level(level)
    if cov is not None:
        cov = np.asarray(cov, dtype=float)
        if cov.shape != (k, 2, 2):
            raise ValueError(f"cov must have shape ({k}, 2, 2), got {cov.shape}")
    if truth is not None:
        truth = as_points(truth, "truth", 2)
        if truth.shape != mean.shape:
            raise ValueError(f"truth has shape {truth.shape}, mean has {mean.shape}")
    bones = bone_pairs(skeleton, names)
    colors = keypoint_colors(k)

    if ax is None:
        shape = None if image is None else np.asarray(image).shape[:2]
        aspect = 0.75 if shape is None else shape[0] / max(shape[1], 1)
        width = 6.5
        fig = new_figure((width + (2.0 if legend else 0.0), min(max(width * aspect, 2.5), 12) + 0.5))
        ax = fig.add_subplot()
    else:
        fig = root_figure(ax)
    size = show_image(ax, image)

    if cov is not None:
        for kk in range(k):
            if not np.all(np.isfinite(mean[kk])):
                continue
            ell = credible_ellipse(cov[kk], level)
            if ell is None:
                continue
            w, h, angle = ell
            ax.add_patch(
                Ellipse(
                    tuple(mean[kk]),
                    w,
                    h,
                    angle=angle,
                    facecolor=(*colors[kk][:3], 0.18),
                    edgecolor=colors[kk],
                    linewidth=1.4,
                    zorder=3,
                    gid="ellipse",
                )
            )
    draw_pose_2d(ax, mean, bones, colors)
    if truth is not None:
        for kk, (x, y) in enumerate(truth):
            if np.isfinite(x) and np.isfinite(y):
                ax.plot(
                    [x],
                    [y],
                    linestyle="none",
                    marker="x",
                    markersize=7,
                    markeredgewidth=1.8,
                    color=colors[kk],
                    path_effects=HALO,
                    zorder=4,
                    gid="truth",
                )

    if size is None:  # no image: fit the points, y down
        pts = np.concatenate([mean, truth]) if truth is not None else mean
        finite = pts[np.all(np.isfinite(pts), axis=1)]
        if finite.size:
            lo, hi = finite.min(0), finite.max(0)
            pad = max(10.0, 0.1 * float(np.max(hi - lo)))
            ax.set_xlim(lo[0] - pad, hi[0] + pad)
            ax.set_ylim(hi[1] + pad, lo[1] - pad)
        else:
            ax.invert_yaxis()
        ax.set_aspect("equal")
    ax.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=10)
    if legend:
        handles = keypoint_legend_handles(names, colors)
        if truth is not None:
            handles.append(
                Line2D(
                    [],
                    [],
                    linestyle="none",
                    marker="x",
                    markersize=7,
                    markeredgewidth=1.8,
                    color="0.3",
                    label="ground truth",
                )
            )
        if cov is not None:
            handles.append(
                Patch(
                    facecolor=(0.3, 0.3, 0.3, 0.18),
                    edgecolor="0.3",
                    linewidth=1.2,
                    label=f"{level_label(level)} region",
                )
            )
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.02, 1.0),
            borderaxespad=0.0,
            frameon=False,
            fontsize=8,
            ncols=1 if len(handles) <= 22 else 2,
        )
    return fig


def plot_contact_sheet(
    images: Sequence[np.ndarray],
    points: Sequence[Float[np.ndarray, "K 2"]],
    skeleton: Skeleton,
    keypoint_names: Sequence[str],
    titles: Sequence[str] | None = None,
    columns: int = 4,
    visible: Sequence[Bool[np.ndarray, " K"]] | None = None,
) -> Figure:
    """A grid of frames with their keypoints and skeleton; hidden keypoints as hollow markers.

    ``fig.axes`` has one axes per image, in order, row by row (``columns`` per row). A keypoint
    is drawn filled when ``visible[i][k]`` is true (or ``visible`` is None), hollow otherwise;
    NaN keypoints are not drawn.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no images for the contact sheet")
    if len(points) != n:
        raise ValueError(f"{len(points)} point sets for {n} images")
    if titles is not None and len(titles) != n:
        raise ValueError(f"{len(titles)} titles for {n} images")
    if visible is not None and len(visible) != n:
        raise ValueError(f"{len(visible)} visibility masks for {n} images")
    pts = [as_points(p, f"points[{i}]", 2) for i, p in enumerate(points)]
    k = pts[0].shape[0]
    if any(p.shape[0] != k for p in pts):
        raise ValueError("every frame needs the same number of keypoints")
    names = check_names(keypoint_names, k, "points")
    bones = bone_pairs(skeleton, names)
    colors = keypoint_colors(k)
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    h, w = np.asarray(images[0]).shape[:2]
    panel = 3.2 if cols > 2 else 4.5
    fig = new_figure((panel * cols, panel * h / max(w, 1) * rows + 0.25 * rows + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            fig.delaxes(ax)
            continue
        show_image(ax, images[i])
        vis = None if visible is None else np.asarray(visible[i], dtype=bool).ravel()
        if vis is not None and vis.shape != (k,):
            raise ValueError(f"visible[{i}] has {vis.size} entries for {k} keypoints")
        draw_pose_2d(ax, pts[i], bones, colors, visible=vis, markersize=5.5, bone_width=1.1)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    handles = keypoint_legend_handles(names, colors)
    if visible is not None:
        handles.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markersize=7,
                markerfacecolor="none",
                markeredgecolor="0.3",
                markeredgewidth=1.8,
                label="hidden",
            )
        )
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=min(len(handles), max(4, 2 * cols)),
        frameon=False,
        fontsize=8,
    )
    return fig
