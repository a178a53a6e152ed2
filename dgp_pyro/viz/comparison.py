"""Plots that compare model variants: calibration (coverage) curves and one keypoint's estimates.

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
from matplotlib.ticker import PercentFormatter

from dgp_pyro.viz.plot_parts import (
    TRUTH_STYLE,
    check_level,
    draw_labeled_frames,
    labeled_array,
    labeled_handle,
    legend_columns,
    level_label,
    new_figure,
    variant_colors,
)

__all__ = ["plot_comparison", "plot_coverage"]


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
    colors = dict(zip(curves, variant_colors(len(curves)), strict=True))

    fig = new_figure((5.6, 5.4))
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
    labeled = labeled_array(labeled_frames)
    order = list(series) + [b for b in band_arrays if b not in series]
    colors = dict(zip(order, variant_colors(len(order)), strict=True))

    fig = new_figure((12.0, 3.8))
    axes = fig.subplots(1, 2, sharex=True)
    x_lo, x_hi = (float(np.nanmin(x)), float(np.nanmax(x))) if t else (0.0, 1.0)
    for c, ax in enumerate(axes):
        for name, (lo, hi) in band_arrays.items():
            ax.fill_between(
                x, lo[:, c], hi[:, c], color=colors[name], alpha=0.18, linewidth=0, zorder=1, gid="band"
            )
        draw_labeled_frames(ax, labeled, x_lo, x_hi)
        for name, est in series.items():
            ax.plot(x, est[:, c], color=colors[name], linewidth=1.2, alpha=0.9, zorder=3, gid="estimate")
        if truth is not None:
            ax.plot(x, truth[:, c], zorder=4, gid="truth", **TRUTH_STYLE)
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
            what = "interval" if band_level is None else f"{level_label(check_level(band_level))} interval"
            handles.append(Patch(color=colors[name], alpha=0.18, label=f"{name} {what}"))
    if truth is not None:
        handles.append(Line2D([], [], label="ground truth", **TRUTH_STYLE))
    if labeled is not None:
        handles.append(labeled_handle())
    if handles:
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
