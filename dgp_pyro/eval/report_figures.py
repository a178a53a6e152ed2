"""The demo report's figures: trajectories, a frame, the 3D skeleton, the models side by side, coverage.

:func:`report_figures` draws them (:mod:`dgp_pyro.viz`) from the posteriors of
:func:`~dgp_pyro.eval.project_posteriors.project_posteriors` and saves them as PNG files next to
the report; the coverage curve needs ground truth (:func:`read_truth`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import norm

from dgp_pyro.data.project import Project
from dgp_pyro.data.video import VideoReader
from dgp_pyro.posterior.marginals import KeypointPosterior
from dgp_pyro.viz import (
    plot_comparison,
    plot_coverage,
    plot_frame,
    plot_skeleton_3d,
    plot_trajectories,
    save_figure,
)

__all__ = ["coverage_curve", "read_truth", "report_figures"]


def read_truth(project: Project) -> dict[str, np.ndarray]:
    """The project's ground truth: ``points_2d``, ``points_3d``, ``visible``, ``labeled_frames``."""
    with np.load(project.ground_truth) as data:
        return {key: data[key] for key in ("points_2d", "points_3d", "visible", "labeled_frames")}


def report_figures(
    project: Project, posteriors: dict[str, dict], points3d: dict[str, dict], out: Path
) -> dict[str, str]:
    """Trajectories, a frame, the 3D skeleton, the models side by side, coverage (with ground truth)."""
    truth = read_truth(project) if project.ground_truth is not None else None
    first_key = sorted(next(iter(posteriors.values())))[0]
    session, view = first_key.split("/")
    v = project.views.index(view)
    names = list(project.bodyparts)
    first = next(iter(posteriors.values()))[first_key]
    frames = slice(0, min(300, len(first.mean)))
    labeled = None if truth is None else truth["labeled_frames"]
    true_2d = None if truth is None else truth["points_2d"][:, v]
    # the first keypoints this view has (a mirror view may lack some)
    seen = [j for j in range(len(names)) if np.isfinite(first.mean[:, j]).any()]
    shown = [names[j] for j in (seen[:2] + seen[-1:])]
    plots = {}
    for model, per_video in posteriors.items():
        posterior = per_video[first_key]
        figure = plot_trajectories(
            posterior.mean[frames],
            {lv: posterior.lower[lv][frames] for lv in (0.5, 0.9)},
            {lv: posterior.upper[lv][frames] for lv in (0.5, 0.9)},
            names,
            keypoints=shown,
            labeled_frames=labeled,
            truth=None if true_2d is None else true_2d[frames],
            title=f"{model}: trajectories in {view} with 50 % and 90 % credible bands",
        )
        plots[f"trajectories_{model}"] = save_figure(figure, out / f"trajectories_{model}.png").name
    candidates = np.setdiff1d(np.arange(frames.stop), [] if labeled is None else labeled)
    frame = int(candidates[min(frames.stop // 2, len(candidates) - 1)])
    with VideoReader(project.sessions[session][view]) as reader:
        image = reader.read(frame)
    model = list(posteriors)[-1]
    posterior = posteriors[model][first_key]
    figure = plot_frame(
        image,
        posterior.mean[frame],
        posterior.cov[frame],
        names,
        skeleton=project.skeleton,
        truth=None if true_2d is None else true_2d[frame],
        title=f"{model}, {view} frame {frame}: 90 % ellipses" + ("" if truth is None else " (truth as x)"),
    )
    plots["frame"] = save_figure(figure, out / "frame.png").name
    with_std = [m for m, sessions in points3d.items() if sessions and sessions[session][1] is not None]
    if with_std:
        mean, std = points3d[with_std[-1]][session]
        figure = plot_skeleton_3d(
            mean[frame],
            std[frame],
            names,
            project.skeleton,
            truth=None if truth is None else truth["points_3d"][frame],
            title=f"{with_std[-1]}, frame {frame}: 3D posterior with 90 % bars"
            + ("" if truth is None else " (truth hollow)"),
            units="mm" if truth is not None else "",
        )
        plots["skeleton_3d"] = save_figure(figure, out / "skeleton_3d.png").name
    j = names.index(shown[0])
    estimates = {m: p[first_key].mean[frames, j] for m, p in posteriors.items()}
    bands = {
        m: (p[first_key].lower[0.9][frames, j], p[first_key].upper[0.9][frames, j])
        for m, p in posteriors.items()
    }
    figure = plot_comparison(
        np.arange(frames.stop),
        estimates,
        bands=bands,
        truth=None if true_2d is None else true_2d[frames, j],
        labeled_frames=labeled,
        keypoint_name=names[j],
        band_level=0.9,
    )
    plots["comparison"] = save_figure(figure, out / "comparison.png").name
    if truth is not None:
        levels = np.linspace(0.05, 0.95, 19)
        coverage = {m: coverage_curve(project, p, levels) for m, p in posteriors.items()}
        plots["coverage"] = save_figure(plot_coverage(levels, coverage), out / "coverage.png").name
    return plots


def coverage_curve(
    project: Project, posteriors: dict[str, KeypointPosterior], levels: np.ndarray
) -> np.ndarray:
    """Share of true coordinates inside the equal-tailed interval at each level, over every view's video."""
    truth = read_truth(project)
    inside, count = np.zeros(len(levels)), 0
    for key, posterior in posteriors.items():
        v = project.views.index(key.split("/")[1])
        z = np.abs(truth["points_2d"][:, v] - posterior.mean) / posterior.std
        z = z[np.isfinite(z)]
        inside += (z[None, :] <= norm.ppf(0.5 + levels[:, None] / 2)).sum(1)
        count += z.size
    return inside / max(count, 1)
