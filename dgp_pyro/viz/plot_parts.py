"""What every plot shares: pyplot-free figures, keypoint colours, credible ellipses, drawing pieces.

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

The plots themselves: :mod:`~dgp_pyro.viz.trajectories`, :mod:`~dgp_pyro.viz.frames` (one frame,
a contact sheet), :mod:`~dgp_pyro.viz.skeleton_3d` and :mod:`~dgp_pyro.viz.comparison` (coverage
curves, variants side by side).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Float
from matplotlib import colormaps
from matplotlib import patheffects as pe
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from dgp_pyro.atomic import atomic_path
from dgp_pyro.errors import DGPError

__all__ = ["Skeleton", "bone_pairs", "credible_ellipse", "keypoint_colors", "save_figure"]


Skeleton = Sequence[tuple[int, int]] | Sequence[tuple[str, str]]

#: Line colours of the model variants in :func:`plot_coverage` and :func:`plot_comparison`.
_VARIANT_CMAP = "tab10"
TRUTH_STYLE = {"color": "black", "linestyle": (0, (4, 2)), "linewidth": 1.1}
RAW_STYLE = {"color": "0.62", "linewidth": 0.6}
LABELED_STYLE = {"color": "0.3", "linewidth": 0.8, "alpha": 0.5}
#: Keypoint colours (RGB): tab10, Dark2 less its grey, Set1 less its yellow and grey.
_PALETTE = np.concatenate(
    [
        np.asarray(colormaps["tab10"].colors)[:, :3],
        np.asarray(colormaps["Dark2"].colors)[:7, :3],
        np.asarray(colormaps["Set1"].colors)[[0, 1, 2, 3, 4, 6, 7], :3],
    ]
)
#: Outline that keeps lines and markers visible on any background.
HALO = [pe.withStroke(linewidth=2.6, foreground="black", alpha=0.7)]


# ------------------------------------------------------------------------------------ helpers


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure with constrained layout on its own Agg canvas (not registered with pyplot)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def root_figure(ax: Axes) -> Figure:
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


def variant_colors(n: int) -> list[tuple[float, float, float, float]]:
    cmap = colormaps[_VARIANT_CMAP]
    return [cmap(i % cmap.N) for i in range(n)]


def mix_white(color, weight: float) -> tuple[float, float, float]:
    """``weight`` of ``color`` on white (opaque, so overlapping bands keep their exact shade)."""
    rgb = np.asarray(to_rgba(color)[:3])
    return tuple(weight * rgb + (1 - weight))


def level_label(level: float) -> str:
    return f"{100 * level:.4g} %"


def check_level(level: float) -> float:
    level = float(level)
    if not 0 < level < 1:
        raise ValueError(f"credible level must be a fraction in (0, 1), got {level} (0.9 is 90 %)")
    return level


def chi2_2dof(level: float) -> float:
    """``chi2.ppf(level, 2)``: for 2 degrees of freedom, ``-2 log(1 - level)``."""
    return -2.0 * math.log1p(-check_level(level))


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
    q = chi2_2dof(level)
    major = vectors[:, 1]
    angle = math.degrees(math.atan2(major[1], major[0]))
    return 2 * math.sqrt(q * values[1]), 2 * math.sqrt(q * values[0]), angle


def bone_pairs(skeleton: Skeleton, keypoint_names: Sequence[str]) -> list[tuple[int, int]]:
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


def as_points(array, name: str, dims: int, ndim: int = 2) -> np.ndarray:
    """``array`` as float with ``ndim`` axes, the last of size ``dims`` (``(..., K, dims)``)."""
    out = np.asarray(array, dtype=float)
    if out.ndim != ndim or out.shape[-1] != dims:
        want = f"(T, K, {dims})" if ndim == 3 else f"(K, {dims})"
        raise ValueError(f"{name} must have shape {want}, got {out.shape}")
    return out


def check_names(keypoint_names: Sequence[str], k: int, what: str) -> list[str]:
    names = [str(n) for n in keypoint_names]
    if len(names) != k:
        raise ValueError(f"{len(names)} keypoint names for {k} keypoints in {what}")
    return names


def draw_labeled_frames(ax: Axes, labeled: np.ndarray | None, lo: float, hi: float) -> None:
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
            **LABELED_STYLE,
        )


def legend_columns(n: int) -> int:
    """Columns of a legend under a figure: one row up to 4 entries, else two rows."""
    return n if n <= 4 else math.ceil(n / 2)


def labeled_handle() -> Line2D:
    """Legend entry of the labeled-frame lines: a short vertical bar."""
    style = {**LABELED_STYLE, "alpha": 0.8}
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


def labeled_array(labeled_frames) -> np.ndarray | None:
    if labeled_frames is None:
        return None
    out = np.unique(np.asarray(labeled_frames, dtype=float).ravel())
    return out[np.isfinite(out)]


def keypoint_legend_handles(names: Sequence[str], colors: np.ndarray, marker: str = "o") -> list[Line2D]:
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


def show_image(ax: Axes, image) -> tuple[int, int] | None:
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


def draw_pose_2d(
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
