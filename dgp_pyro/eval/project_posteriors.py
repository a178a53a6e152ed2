"""The demo's posteriors: every view's video of a project, and each session in 3D.

:func:`project_posteriors` computes a run's posterior over every video of its project, writes
each as DeepLabCut files, and returns them per ``session/view`` with the 3D estimate of each
session (a 3D run's own posterior, or a 2D run's means triangulated when there are cameras);
:func:`view_posteriors` splits a frame's image posteriors into its views (the suffix layout).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dgp_pyro.data.sessions import load_calibration, session_videos
from dgp_pyro.model.registry import is_3d
from dgp_pyro.model.views3d import ViewChannels
from dgp_pyro.posterior.files3d import write_posterior3d
from dgp_pyro.posterior.marginals import KeypointPosterior
from dgp_pyro.posterior.posterior3d import videos_posterior3d
from dgp_pyro.posterior.predict import prediction_stem
from dgp_pyro.posterior.predict_run import write_video_prediction
from dgp_pyro.run.folder import Run

__all__ = ["LEVELS", "project_posteriors", "view_posteriors"]

#: Credible levels of the demo's posteriors.
LEVELS = (0.5, 0.9, 0.95)


def project_posteriors(
    run: Run, out_dir: Path, calibration: Path | None
) -> tuple[dict[str, KeypointPosterior], dict[str, tuple]]:
    """Posterior over each view's video, written as DeepLabCut files; keyed by ``session/view``.

    Every entry is the posterior of one view's body parts (the project's ``bodyparts`` order):
    in the suffix layout (one image holds every view) a 2D run's video posterior is split into
    its views' channels, a body part a view lacks being NaN with zero confidence.

    Also the 3D estimate of each session, ``{session: (mean (T, J, 3), std or None)}``: a 3D
    run's posterior, or a 2D run's posterior means triangulated by confidence-weighted DLT
    (no 3D uncertainty), when there are cameras.
    """
    project = run.project()
    network = run.network()
    posteriors, points3d = {}, {}
    if is_3d(run.config.model):
        for session in session_videos(project):
            posterior = videos_posterior3d(run, session.videos, LEVELS, network)
            write_posterior3d(posterior, out_dir, f"{session.name}_{run.scorer}", run.scorer, session.videos)
            for v, view in enumerate(project.views):
                posteriors[f"{session.name}/{view}"] = posterior.view_posterior(v)
            points3d[session.name] = (posterior.mean, posterior.std)
        return posteriors, points3d
    channels = ViewChannels.from_project(project)
    for session, videos in sorted(project.sessions.items()):
        per_image = {}  # image index -> posterior (the suffix layout: one video holds every view)
        for v, view in enumerate(project.views):
            image, video = channels.image[v], videos[view]
            if image not in per_image:
                per_image[image], _, _ = write_video_prediction(
                    run, video, out_dir, prediction_stem(video, run.scorer), LEVELS, network=network
                )
        images = [per_image[i] for i in range(channels.num_images)]
        for view, posterior in zip(project.views, view_posteriors(channels, images), strict=True):
            posteriors[f"{session}/{view}"] = posterior
    if calibration is not None and len(project.views) >= 2:
        group = load_calibration(project, calibration)
        for session in sorted(project.sessions):
            views = [posteriors[f"{session}/{view}"] for view in project.views]
            mean = group.triangulate(
                np.stack([p.mean for p in views]), np.stack([p.confidence for p in views])
            )
            points3d[session] = (mean, None)
    return posteriors, points3d


def view_posteriors(channels: ViewChannels, images: list[KeypointPosterior]) -> list[KeypointPosterior]:
    """Each view's posterior over its body parts from the posteriors of a frame's images.

    :meth:`~dgp_pyro.model.views3d.ViewChannels.select` reads view ``v``'s channels: a body part
    a view lacks gets a NaN mean, covariance and bounds and zero confidence. One image per view
    with the body parts as channels (the folders layout) needs no selection, so videos of
    different lengths stay apart.
    """
    if channels.identity:
        return images

    def select(arrays: list[np.ndarray], tail: int, fill: float) -> np.ndarray:
        return channels.select(torch.from_numpy(np.stack(arrays, axis=1)), tail, fill).numpy()

    first = images[0]
    mean = select([p.mean for p in images], 1, np.nan)
    cov = select([p.cov for p in images], 2, np.nan)
    confidence = select([p.confidence for p in images], 0, 0.0)
    lower = {lv: select([p.lower[lv] for p in images], 1, np.nan) for lv in first.lower}
    upper = {lv: select([p.upper[lv] for p in images], 1, np.nan) for lv in first.upper}
    return [
        KeypointPosterior(
            mean[:, v],
            cov[:, v],
            confidence[:, v],
            first.frame_index,
            {lv: bound[:, v] for lv, bound in lower.items()},
            {lv: bound[:, v] for lv, bound in upper.items()},
        )
        for v in range(len(channels.views))
    ]
