"""Plots of the posterior: trajectories, frames with uncertainty ellipses, 3D skeletons, coverage.

Every function takes plain NumPy arrays and returns a :class:`matplotlib.figure.Figure`. The
figures are built with the object-oriented API on an Agg canvas: nothing here imports
``matplotlib.pyplot``, opens a window or registers a figure with pyplot, so plotting needs no
display and leaves no global state behind. Show a figure in a notebook by making it the last
expression of a cell, or write it with :func:`save_figure`.

Conventions (those of the whole package): pixel coordinates have x to the right and y down,
with the origin at the centre of the top-left pixel, so images are drawn with their origin at the
upper left (as ``imshow`` does by default) and point ``(x, y)`` lands on pixel column ``x``,
row ``y``; time is the first axis; NaN marks a missing value and is skipped (a gap in a line,
no marker, no ellipse), never an error.

Credible levels are fractions in ``(0, 1)`` (``0.9`` is the 90 % interval). The uncertainty
ellipse at level ``p`` of a 2D Gaussian with covariance ``S`` is the set
``{d : d^T S^-1 d <= chi2.ppf(p, 2)}``; its axes lie along the eigenvectors of ``S`` and its
full axis lengths are ``2 * sqrt(chi2.ppf(p, 2) * eigenvalue)`` (:func:`credible_ellipse`).
For 2 degrees of freedom ``chi2.ppf(p, 2) = -2 log(1 - p)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist

import numpy as np
from jaxtyping import Bool, Float
from matplotlib import colormaps
from matplotlib import patheffects as pe
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Ellipse, Patch
from matplotlib.ticker import PercentFormatter

from dgp_pyro.atomic import atomic_path
from dgp_pyro.errors import DGPError

__all__ = [
    "credible_ellipse",
    "keypoint_colors",
    "plot_comparison",
    "plot_contact_sheet",
    "plot_coverage",
    "plot_frame",
    "plot_skeleton_3d",
    "plot_trajectories",
    "save_figure",
]

Skeleton = Sequence[tuple[int, int]] | Sequence[tuple[str, str]]

#: Line colours of the model variants in :func:`plot_coverage` and :func:`plot_comparison`.
_VARIANT_CMAP = "tab10"
_TRUTH_STYLE = {"color": "black", "linestyle": (0, (4, 2)), "linewidth": 1.1}
_RAW_STYLE = {"color": "0.62", "linewidth": 0.6}
_LABELED_STYLE = {"color": "0.3", "linewidth": 0.8, "alpha": 0.5}
#: Keypoint colours (RGB): tab10, Dark2 less its grey, Set1 less its yellow and grey.
_PALETTE = np.concatenate(
    [
        np.asarray(colormaps["tab10"].colors)[:, :3],
        np.asarray(colormaps["Dark2"].colors)[:7, :3],
        np.asarray(colormaps["Set1"].colors)[[0, 1, 2, 3, 4, 6, 7], :3],
    ]
)
#: Outline that keeps lines and markers visible on any background.
_HALO = [pe.withStroke(linewidth=2.6, foreground="black", alpha=0.7)]


# ------------------------------------------------------------------------------------ helpers


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure with constrained layout on its own Agg canvas (not registered with pyplot)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _root_figure(ax: Axes) -> Figure:
    fig = ax.figure
    return getattr(fig, "figure", fig) or fig  # a SubFigure's .figure is the root figure


def keypoint_colors(n: int) -> Float[np.ndarray, "n 4"]:
    """``n`` distinct RGBA colours, one per keypoint, the same in every plot and in videos.

    ``tab10``, then (from the 11th keypoint) ``Dark2`` and ``Set1`` without their greys and
    Set1's yellow (all dark enough to read on white and on an image), 24 colours in all; more
    keypoints than that get evenly spaced ``turbo`` colours instead.
    """
    if n <= len(_PALETTE):
        return np.concatenate([_PALETTE[:n], np.ones((n, 1))], axis=1)
    return np.asarray(colormaps["turbo"](np.linspace(0.05, 0.95, n)))


def _variant_colors(n: int) -> list[tuple[float, float, float, float]]:
    cmap = colormaps[_VARIANT_CMAP]
    return [cmap(i % cmap.N) for i in range(n)]


def _mix_white(color, weight: float) -> tuple[float, float, float]:
    """``weight`` of ``color`` on white (opaque, so overlapping bands keep their exact shade)."""
    rgb = np.asarray(to_rgba(color)[:3])
    return tuple(weight * rgb + (1 - weight))


def _level_label(level: float) -> str:
    return f"{100 * level:.4g} %"


def _check_level(level: float) -> float:
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"credible level must be a fraction in (0, 1), got {level} (0.9 is 90 %)")
    return level


def _chi2_2dof(level: float) -> float:
    """``chi2.ppf(level, 2)``: for 2 degrees of freedom, ``-2 log(1 - level)``."""
    return -2.0 * math.log1p(-_check_level(level))


def credible_ellipse(cov: Float[np.ndarray, "2 2"], level: float = 0.9) -> tuple[float, float, float] | None:
    """The ``level`` region of a 2D Gaussian with covariance ``cov`` as ``(width, height, angle)``.

    ``width`` is the full length of the axis along the direction ``angle`` (degrees, from +x
    towards +y, so clockwise on an image whose y points down) and ``height`` the full length of
    the perpendicular axis: ``2 * sqrt(chi2.ppf(level, 2) * eigenvalue)``, largest eigenvalue
    first (matplotlib's :class:`~matplotlib.patches.Ellipse` convention). None when ``cov`` has
    a NaN or infinity. The covariance is symmetrised and negative eigenvalues (round-off) are
    clipped to 0.
    """
    cov = np.asarray(cov, dtype=float)
    if cov.shape != (2, 2):
        raise ValueError(f"covariance must be 2x2, got {cov.shape}")
    if not np.all(np.isfinite(cov)):
        return None
    values, vectors = np.linalg.eigh(0.5 * (cov + cov.T))  # ascending
    values = np.clip(values, 0.0, None)
    q = _chi2_2dof(level)
    major = vectors[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    return 2 * math.sqrt(q * values[1]), 2 * math.sqrt(q * values[0]), angle


def _bones(skeleton: Skeleton, keypoint_names: Sequence[str]) -> list[tuple[int, int]]:
    """The skeleton as keypoint index pairs; accepts index pairs or name pairs."""
    index = {name: i for i, name in enumerate(keypoint_names)}
    out = []
    for bone in skeleton:
        if len(bone) != 2:
            raise ValueError(f"a bone is a pair of keypoints, got {bone!r}")
        pair = []
        for end in bone:
            if isinstance(end, str):
                if end not in index:
                    raise DGPError(
                        f"skeleton keypoint {end!r} is not one of the keypoints",
                        hint=f"keypoints are {', '.join(keypoint_names)}",
                    )
                pair.append(index[end])
            else:
                i = int(end)
                if not 0 <= i < len(keypoint_names):
                    raise DGPError(
                        f"skeleton keypoint index {i} is out of range (0..{len(keypoint_names) - 1})"
                    )
                pair.append(i)
        out.append((pair[0], pair[1]))
    return out


def _as_points(array, name: str, dims: int, ndim: int = 2) -> np.ndarray:
    """``array`` as float with ``ndim`` axes, the last of size ``dims`` (``(..., K, dims)``)."""
    out = np.asarray(array, dtype=float)
    if out.ndim != ndim or out.shape[-1] != dims:
        want = f"(T, K, {dims})" if ndim == 3 else f"(K, {dims})"
        raise ValueError(f"{name} must have shape {want}, got {out.shape}")
    return out


def _check_names(keypoint_names: Sequence[str], k: int, what: str) -> list[str]:
    names = [str(n) for n in keypoint_names]
    if len(names) != k:
        raise ValueError(f"{len(names)} keypoint names for {k} keypoints in {what}")
    return names


def _draw_labeled_frames(ax: Axes, labeled: np.ndarray | None, lo: float, hi: float) -> None:
    """One vertical line per labeled frame in ``[lo, hi]`` (a single LineCollection)."""
    if labeled is None:
        return
    shown = labeled[(labeled >= lo) & (labeled <= hi)]
    if shown.size:
        ax.vlines(
            shown,
            0,
            1,
            transform=ax.get_xaxis_transform(),
            zorder=2.5,
            gid="labeled_frames",
            **_LABELED_STYLE,
        )


def _legend_columns(n: int) -> int:
    """Columns of a legend under a figure: one row up to 4 entries, else two rows."""
    return n if n <= 4 else math.ceil(n / 2)


def _labeled_handle() -> Line2D:
    """Legend entry of the labeled-frame lines: a short vertical bar."""
    style = {**_LABELED_STYLE, "alpha": 0.8}
    return Line2D(
        [],
        [],
        linestyle="none",
        marker="|",
        markersize=12,
        markeredgewidth=style.pop("linewidth"),
        markeredgecolor=style.pop("color"),
        label="labeled frame",
        **style,
    )


def _labeled_array(labeled_frames) -> np.ndarray | None:
    if labeled_frames is None:
        return None
    out = np.unique(np.asarray(labeled_frames, dtype=float).ravel())
    return out[np.isfinite(out)]


def _keypoint_legend_handles(names: Sequence[str], colors: np.ndarray, marker: str = "o") -> list[Line2D]:
    return [
        Line2D(
            [],
            [],
            linestyle="none",
            marker=marker,
            markersize=7,
            markerfacecolor=c,
            markeredgecolor="white",
            markeredgewidth=0.6,
            label=name,
        )
        for name, c in zip(names, colors, strict=True)
    ]


def _show_image(ax: Axes, image) -> tuple[int, int] | None:
    """Draw ``image`` with pixel centres on integer coordinates; return (H, W) or None."""
    if image is None:
        return None
    image = np.asarray(image)
    if image.ndim == 2:
        ax.imshow(image, cmap="gray", interpolation="nearest")
    elif image.ndim == 3 and image.shape[2] in (3, 4):
        ax.imshow(image, interpolation="nearest")
    else:
        raise ValueError(f"image must be (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    h, w = image.shape[:2]
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    return h, w


def _draw_pose_2d(
    ax: Axes,
    points: np.ndarray,
    bones: list[tuple[int, int]],
    colors: np.ndarray,
    visible: np.ndarray | None = None,
    markersize: float = 7.0,
    bone_width: float = 1.4,
) -> None:
    """Skeleton (white with a dark halo) and keypoint markers; hidden keypoints hollow."""
    for i, j in bones:
        seg = points[[i, j]]
        if np.all(np.isfinite(seg)):
            ax.plot(
                seg[:, 0],
                seg[:, 1],
                color="white",
                linewidth=bone_width,
                alpha=0.9,
                solid_capstyle="round",
                path_effects=[pe.withStroke(linewidth=bone_width + 1.4, foreground="black", alpha=0.45)],
                zorder=2,
                gid="bone",
            )
    for k, (x, y) in enumerate(points):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        hidden = visible is not None and not bool(visible[k])
        ax.plot(
            [x],
            [y],
            linestyle="none",
            marker="o",
            markersize=markersize,
            markerfacecolor="none" if hidden else colors[k],
            markeredgecolor=colors[k] if hidden else "white",
            markeredgewidth=1.8 if hidden else 0.7,
            zorder=5,
            gid="hidden" if hidden else "keypoint",
        )


# ------------------------------------------------------------------------------- trajectories


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
    mean = _as_points(mean, "mean", 2, ndim=3)
    t, k = mean.shape[:2]
    names = _check_names(keypoint_names, k, "mean")
    if set(lower) != set(upper):
        raise ValueError(f"lower and upper have different levels: {sorted(lower)} vs {sorted(upper)}")
    levels = sorted((_check_level(lv) for lv in lower), reverse=True)  # widest first
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
    labeled = _labeled_array(labeled_frames)
    colors = keypoint_colors(k)
    # Narrowest band: 55 % of the keypoint colour on white, widest 22 %.
    shades = np.linspace(0.55, 0.22, len(levels)) if len(levels) > 1 else [0.4] * len(levels)
    weights = dict(zip(sorted(levels), shades, strict=True))

    fig = _new_figure((10.0, 0.6 + 1.35 * 2 * len(chosen)))
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
                    color=_mix_white(color, weights[lv]),
                    linewidth=0,
                    zorder=1 + 0.01 * (1 - lv),
                    gid=f"band_{lv:g}",
                )
            if "raw" in overlays:
                ax.plot(x, overlays["raw"][:, kk, c], zorder=2, gid="raw", **_RAW_STYLE)
            _draw_labeled_frames(ax, labeled, x_lo, x_hi)
            ax.plot(x, mean[:, kk, c], color=color, linewidth=1.3, zorder=3, gid="mean")
            if "truth" in overlays:
                ax.plot(x, overlays["truth"][:, kk, c], zorder=2.8, gid="truth", **_TRUTH_STYLE)
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
        Patch(color=_mix_white(grey, weights[lv]), label=f"{_level_label(lv)} credible interval")
        for lv in sorted(levels)
    ]
    if "truth" in overlays:
        handles.append(Line2D([], [], label="ground truth", **_TRUTH_STYLE))
    if "raw" in overlays:
        handles.append(Line2D([], [], label="network estimate", **_RAW_STYLE))
    if labeled is not None:
        handles.append(_labeled_handle())
    fig.legend(
        handles=handles,
        loc="outside lower center",
        ncols=_legend_columns(len(handles)),
        frameon=False,
        fontsize=9,
    )
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------------- frames


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
    mean = _as_points(mean, "mean", 2)
    k = mean.shape[0]
    names = _check_names(keypoint_names, k, "mean")
    level = _check_level(level)
    if cov is not None:
        cov = np.asarray(cov, dtype=float)
        if cov.shape != (k, 2, 2):
            raise ValueError(f"cov must have shape ({k}, 2, 2), got {cov.shape}")
    if truth is not None:
        truth = _as_points(truth, "truth", 2)
        if truth.shape != mean.shape:
            raise ValueError(f"truth has shape {truth.shape}, mean has {mean.shape}")
    bones = _bones(skeleton, names)
    colors = keypoint_colors(k)

    if ax is None:
        shape = None if image is None else np.asarray(image).shape[:2]
        aspect = 0.75 if shape is None else shape[0] / max(shape[1], 1)
        width = 6.5
        fig = _new_figure((width + (2.0 if legend else 0.0), min(max(width * aspect, 2.5), 12) + 0.5))
        ax = fig.add_subplot()
    else:
        fig = _root_figure(ax)
    size = _show_image(ax, image)

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
    _draw_pose_2d(ax, mean, bones, colors)
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
                    path_effects=_HALO,
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
        handles = _keypoint_legend_handles(names, colors)
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
                    label=f"{_level_label(level)} region",
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


# ---------------------------------------------------------------------------------------- 3D


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
    points = _as_points(points, "points", 3)
    k = points.shape[0]
    names = _check_names(keypoint_names, k, "points")
    if std is not None:
        std = np.asarray(std, dtype=float)
        if std.shape != points.shape:
            raise ValueError(f"std has shape {std.shape}, points has {points.shape}")
    if truth is not None:
        truth = _as_points(truth, "truth", 3)
        if truth.shape != points.shape:
            raise ValueError(f"truth has shape {truth.shape}, points has {points.shape}")
    z = NormalDist().inv_cdf(0.5 + _check_level(level) / 2)
    bones = _bones(skeleton, names)
    colors = keypoint_colors(k)

    fig = _new_figure((8.5, 5.6))
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
    handles = _keypoint_legend_handles(names, colors)
    if std is not None:
        handles.append(
            Line2D([], [], color="0.3", linewidth=1.6, label=f"{_level_label(level)} interval per axis")
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


# ----------------------------------------------------------------------------------- coverage


def plot_coverage(
    levels: Float[np.ndarray, " L"],
    coverage: Mapping[str, Float[np.ndarray, " L"]],
    title: str | None = None,
    n: Mapping[str, int] | None = None,
) -> Figure:
    """Calibration curve: nominal credible level against the empirical coverage of each variant.

    A calibrated posterior lies on the dashed diagonal; above it the intervals are too wide
    (under-confident), below it too narrow (over-confident). With ``n`` (the number of
    held-out points behind each variant's coverage), the shaded band is where a calibrated
    model's coverage falls 95 % of the time: ``p +/- 1.96 sqrt(p (1 - p) / n)``. One grey band
    when all variants have the same ``n``, else one band per variant in its colour.

    Args:
        levels: ``(L,)`` nominal levels, fractions in ``[0, 1]``.
        coverage: variant name -> ``(L,)`` fraction of truths inside the interval at each level.
        title: axes title.
        n: variant name -> number of points its coverage is computed from (optional).
    """
    levels = np.asarray(levels, dtype=float).ravel()
    if np.any((levels < 0) | (levels > 1)):
        raise ValueError("levels must be fractions in [0, 1] (0.9 is 90 %)")
    curves = {}
    for name, cov in coverage.items():
        cov = np.asarray(cov, dtype=float).ravel()
        if cov.shape != levels.shape:
            raise ValueError(f"coverage of {name!r} has {cov.size} values for {levels.size} levels")
        curves[str(name)] = cov
    n = {} if n is None else {str(key): int(v) for key, v in n.items()}
    colors = dict(zip(curves, _variant_colors(len(curves)), strict=True))

    fig = _new_figure((5.6, 5.4))
    ax = fig.add_subplot()
    grid = np.linspace(0, 1, 201)
    sizes = {name: n[name] for name in curves if name in n and n[name] > 0}
    if sizes:
        one = len(set(sizes.values())) == 1
        for name, size in sorted(sizes.items(), key=lambda item: item[1]):  # widest band first
            half = 1.96 * np.sqrt(grid * (1 - grid) / size)
            color = "0.5" if one else colors[name]
            label = f"95 % binomial band (n = {size})" if one else f"95 % band, {name} (n = {size})"
            ax.fill_between(
                grid,
                np.clip(grid - half, 0, 1),
                np.clip(grid + half, 0, 1),
                color=color,
                alpha=0.22 if one else 0.16,
                linewidth=0,
                zorder=1,
                label=label,
                gid="binomial_band",
            )
            if one:
                break
    ax.plot(
        [0, 1],
        [0, 1],
        color="0.3",
        linestyle=(0, (4, 3)),
        linewidth=1.0,
        zorder=2,
        label="calibrated",
        gid="diagonal",
    )
    for name, cov in curves.items():
        ax.plot(
            levels,
            cov,
            color=colors[name],
            marker="o",
            markersize=4,
            linewidth=1.6,
            zorder=3,
            label=name,
            gid="coverage",
        )
    ax.text(
        0.03,
        0.97,
        "under-confident\n(intervals too wide)",
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=8,
        color="0.45",
    )
    ax.text(
        0.97,
        0.03,
        "over-confident\n(intervals too narrow)",
        transform=ax.transAxes,
        va="bottom",
        ha="right",
        fontsize=8,
        color="0.45",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlabel("nominal credible level")
    ax.set_ylabel("empirical coverage")
    ax.grid(color="0.92", linewidth=0.6, zorder=0)
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, 0.88), fontsize=8, frameon=False)
    ax.set_title(title or "Coverage of the credible intervals", fontsize=11)
    return fig


# --------------------------------------------------------------------------------- comparison


def plot_comparison(
    frame_index: Sequence[int] | np.ndarray,
    estimates: Mapping[str, Float[np.ndarray, "T 2"]],
    bands: Mapping[str, tuple[Float[np.ndarray, "T 2"], Float[np.ndarray, "T 2"]]] | None = None,
    truth: Float[np.ndarray, "T 2"] | None = None,
    labeled_frames: Sequence[int] | np.ndarray | None = None,
    keypoint_name: str = "",
    title: str | None = None,
    band_level: float | None = None,
) -> Figure:
    """Several variants' estimates of one keypoint on the same frames, x and y side by side.

    One column per coordinate (``fig.axes[0]`` is x, ``fig.axes[1]`` is y); each variant is a
    line in its own colour, with its ``(lower, upper)`` band shaded in that colour when
    ``bands`` has it; ground truth dashed black; labeled frames as thin vertical lines.
    ``band_level`` (e.g. 0.9) names the bands' credible level in the legend.
    """
    x = np.asarray(frame_index, dtype=float).ravel()
    t = x.size
    series = {}
    for name, est in estimates.items():
        est = np.asarray(est, dtype=float)
        if est.shape != (t, 2):
            raise ValueError(f"estimate {name!r} has shape {est.shape}, expected ({t}, 2)")
        series[str(name)] = est
    band_arrays = {}
    for name, pair in (bands or {}).items():
        lo, hi = (np.asarray(a, dtype=float) for a in pair)
        if lo.shape != (t, 2) or hi.shape != (t, 2):
            raise ValueError(f"band {name!r} has shapes {lo.shape}/{hi.shape}, expected ({t}, 2)")
        band_arrays[str(name)] = (lo, hi)
    if truth is not None:
        truth = np.asarray(truth, dtype=float)
        if truth.shape != (t, 2):
            raise ValueError(f"truth has shape {truth.shape}, expected ({t}, 2)")
    labeled = _labeled_array(labeled_frames)
    order = list(series) + [b for b in band_arrays if b not in series]
    colors = dict(zip(order, _variant_colors(len(order)), strict=True))

    fig = _new_figure((12.0, 3.8))
    axes = fig.subplots(1, 2, sharex=True)
    x_lo, x_hi = (float(np.nanmin(x)), float(np.nanmax(x))) if t else (0.0, 1.0)
    for c, ax in enumerate(axes):
        for name, (lo, hi) in band_arrays.items():
            ax.fill_between(
                x, lo[:, c], hi[:, c], color=colors[name], alpha=0.18, linewidth=0, zorder=1, gid="band"
            )
        _draw_labeled_frames(ax, labeled, x_lo, x_hi)
        for name, est in series.items():
            ax.plot(x, est[:, c], color=colors[name], linewidth=1.2, alpha=0.9, zorder=3, gid="estimate")
        if truth is not None:
            ax.plot(x, truth[:, c], zorder=4, gid="truth", **_TRUTH_STYLE)
        coord = "xy"[c]
        ax.set_title(f"{keypoint_name} {coord}".strip(), fontsize=10, loc="left")
        ax.set_xlabel("frame")
        ax.set_ylabel(f"{coord} (px)")
        ax.grid(axis="y", color="0.92", linewidth=0.6, zorder=0)
        ax.tick_params(labelsize=8)
    axes[0].set_xlim(x_lo, x_hi if x_hi > x_lo else x_lo + 1)
    handles: list = []
    for name in colors:
        if name in series:
            handles.append(Line2D([], [], color=colors[name], linewidth=1.3, label=name))
        if name in band_arrays:
            what = "interval" if band_level is None else f"{_level_label(_check_level(band_level))} interval"
            handles.append(Patch(color=colors[name], alpha=0.18, label=f"{name} {what}"))
    if truth is not None:
        handles.append(Line2D([], [], label="ground truth", **_TRUTH_STYLE))
    if labeled is not None:
        handles.append(_labeled_handle())
    if handles:
        fig.legend(
            handles=handles,
            loc="outside lower center",
            ncols=_legend_columns(len(handles)),
            frameon=False,
            fontsize=9,
        )
    if title:
        fig.suptitle(title)
    return fig


# ------------------------------------------------------------------------------ contact sheet


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
    pts = [_as_points(p, f"points[{i}]", 2) for i, p in enumerate(points)]
    k = pts[0].shape[0]
    if any(p.shape[0] != k for p in pts):
        raise ValueError("every frame needs the same number of keypoints")
    names = _check_names(keypoint_names, k, "points")
    bones = _bones(skeleton, names)
    colors = keypoint_colors(k)
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    cols = min(columns, n)
    rows = math.ceil(n / cols)
    h, w = np.asarray(images[0]).shape[:2]
    panel = 3.2 if cols > 2 else 4.5
    fig = _new_figure((panel * cols, panel * h / max(w, 1) * rows + 0.25 * rows + 0.9))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            fig.delaxes(ax)
            continue
        _show_image(ax, images[i])
        vis = None if visible is None else np.asarray(visible[i], dtype=bool).ravel()
        if vis is not None and vis.shape != (k,):
            raise ValueError(f"visible[{i}] has {vis.size} entries for {k} keypoints")
        _draw_pose_2d(ax, pts[i], bones, colors, visible=vis, markersize=5.5, bone_width=1.1)
        ax.set_xticks([])
        ax.set_yticks([])
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    handles = _keypoint_legend_handles(names, colors)
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


# -------------------------------------------------------------------------------------- saving


def save_figure(fig: Figure, path: str | Path, dpi: float = 150) -> Path:
    """Write ``fig`` to ``path`` atomically and close it; return the path written.

    The format comes from the suffix (``.png``, ``.pdf``, ``.svg``, ...); a path without a
    suffix matplotlib knows gets ``.png`` appended. The figure is written under a temporary name
    and renamed, so an interrupted save leaves no half-written image. Afterwards the figure is
    closed (removed from pyplot if pyplot manages it) and should not be used again.
    """
    path = Path(path)
    formats = fig.canvas.get_supported_filetypes()
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in formats:
        path = path.with_name(path.name + ".png")
        fmt = "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, facecolor="white")
    if getattr(fig.canvas, "manager", None) is not None:
        import matplotlib.pyplot as plt  # only reached for figures pyplot already manages

        plt.close(fig)
    else:
        fig.clear()
    return path
