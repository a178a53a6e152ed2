"""Camera estimation on a loaded project: the image size of each view, then the bundle adjustment.

:func:`estimate_project_cameras` reads what
:func:`~dgp_pyro.geometry.camera_estimation.estimate_cameras` needs from a
:class:`~dgp_pyro.data.project.Project` (labels, views, body parts, frame keys, and each view's
image size from its labeled images or, failing those, its videos); the estimation itself is
pure geometry.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from dgp_pyro.data.dataset import split_frames
from dgp_pyro.data.project import Project
from dgp_pyro.data.video import video_info
from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.camera_estimation import CameraEstimate, estimate_cameras

__all__ = ["estimate_project_cameras", "project_image_sizes"]


def estimate_project_cameras(
    project: Project,
    model: str = "auto",
    holdout_fraction: float = 0.2,
    seed: int = 0,
    holdout_file: str | Path | None = None,
    **kwargs: Any,
) -> CameraEstimate:
    """:func:`estimate_cameras` on a loaded :class:`~dgp_pyro.data.project.Project`.

    The image size of each view is read from the project's first image of that view (the whole
    image in the suffix layout, where one image holds every view). ``holdout_file``: a split
    ``{"test": [image keys], "train": [...]}`` as ``dgp-pyro train --holdout FILE`` reads it
    (:func:`~dgp_pyro.data.dataset.split_frames`): its test frames are the held-out ones and,
    with ``train`` given, only its train frames fit, so cameras estimated for a run never see
    the frames the run is scored on (``holdout_fraction`` is then unused). Extra keyword
    arguments go to :func:`estimate_cameras`.
    """
    sizes = project_image_sizes(project)
    labels = np.array(project.labels, dtype=np.float64)
    heldout = None
    if holdout_file is not None:
        samples = project.network_samples()
        split = split_frames(samples.image_keys, samples.frame_index, samples.labels, holdout_file, seed)
        frame_of = dict(zip(samples.image_keys, samples.frame_index.tolist(), strict=True))
        heldout = sorted({frame_of[key] for key in split["test"]})
        unused = np.ones(len(labels), dtype=bool)
        unused[heldout + [frame_of[key] for key in split["train"]]] = False
        labels[unused] = np.nan
    return estimate_cameras(
        labels,
        list(project.views),
        sizes,
        model=model,
        holdout_fraction=holdout_fraction,
        seed=seed,
        source=project.root if holdout_file is None else Path(holdout_file),
        bodyparts=list(project.bodyparts),
        frame_keys=list(project.frame_keys),
        heldout_frames=heldout,
        **kwargs,
    )


def project_image_sizes(project: Project) -> list[tuple[int, int]]:
    """``(width, height)`` of each view of a project, from its first readable image."""
    sizes = []
    for v, view in enumerate(project.views):
        size = None
        for row in project.image_paths:
            path = row[v]
            if path is None or not Path(path).is_file():
                continue
            try:
                with Image.open(path) as image:
                    size = (int(image.size[0]), int(image.size[1]))
            except (OSError, UnidentifiedImageError):
                continue
            break
        if size is None:
            size = _video_size(project, view)
        if size is None:
            raise DGPError(
                f"no readable image or video for view {view!r}, so its image size is unknown",
                project.root,
                hint="camera estimation puts the principal point at the image centre; add the labeled images",
            )
        sizes.append(size)
    return sizes


def _video_size(project: Project, view: str) -> tuple[int, int] | None:
    for videos in project.sessions.values():
        path = videos.get(view)
        if path is not None and Path(path).is_file():
            try:
                info = video_info(path)
            except DGPError:
                continue
            return int(info["width"]), int(info["height"])
    return None
