"""The held-out labeled images of a run: keys, files, labels and what scoring them needs.

:func:`held_out_images` reads a run's ``split.json`` ``test`` images (or given image keys) from its
project, in project order, with their labels in frame pixels, their view and the frame pixels per
training pixel. The posterior calibration (:func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`),
the ArviZ export (:mod:`dgp_pyro.export.inference_data`) and ``dgp-pyro compare`` score on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dgp_pyro.data.dataset import image_size
from dgp_pyro.errors import DGPError
from dgp_pyro.run.folder import Run


@dataclass
class HeldOutImages:
    """Labeled images of a run's project, with what the export needs about each.

    Attributes:
        keys: image keys (as in the label files), in project order.
        paths: the image files.
        labels: ``(T, K, 2)`` frame pixels, NaN = missing.
        views: the view name of each image (folders layout) or ``None``.
        keypoint_views: the view of each network keypoint (suffix layout) or ``None``.
        factor: ``(T, 2)`` frame pixels per training pixel, per axis.
        frames: ``(T,)`` the labeled frame of each image (the views of one synchronous frame
            share it; :attr:`~dgp_pyro.data.project.NetworkSamples.frame_index`).
    """

    keys: list[str]
    paths: list[Path]
    labels: np.ndarray
    views: list[str] | None
    keypoint_views: list[str] | None
    factor: np.ndarray
    frames: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


def resize_factors(paths: Sequence[str | Path], size: Sequence[int]) -> np.ndarray:
    """``(N, 2)`` frame pixels per training pixel of each image, per axis (``size = (W, H)``)."""
    train = np.asarray(size, dtype=np.float64)
    return np.array([np.asarray(image_size(p), dtype=np.float64) / train for p in paths]).reshape(-1, 2)


def held_out_images(run: Run, images: Sequence[str] | None = None) -> HeldOutImages:
    """The run's held-out labeled images (default ``split.json``'s ``test``) or the given keys.

    Images are put in the project's order, so two runs with the same held-out set give the same
    label order (needed by ``az.compare``).
    """
    project = run.project()
    samples = project.network_samples()
    wanted = list(run.split["test"]) if images is None else [str(key) for key in images]
    index_of = {key: i for i, key in enumerate(samples.image_keys)}
    missing = [key for key in wanted if key not in index_of]
    if missing:
        raise DGPError(
            f"images not in the run's project: {', '.join(missing[:3])}"
            + (f" and {len(missing) - 3} more" if len(missing) > 3 else ""),
            run.path / "split.json" if images is None else project.root,
        )
    rows = sorted({index_of[key] for key in wanted})
    paths = [Path(samples.image_paths[i]) for i in rows]
    factor = resize_factors(paths, run.size)
    views = keypoint_views = None
    if len(project.views) > 1:
        if project.view_layout == "folders":
            views = [project.views[int(samples.view_index[i])] for i in rows]
        elif project.view_layout == "suffix":
            keypoint_views = [
                next(
                    (
                        v
                        for v in project.views
                        if name.endswith(f"_{v}") and name[: -len(v) - 1] in project.bodyparts
                    ),
                    "",
                )
                for name in run.config.keypoints
            ]
    return HeldOutImages(
        keys=[samples.image_keys[i] for i in rows],
        paths=paths,
        labels=np.asarray(samples.labels[rows], dtype=np.float64).reshape(
            len(rows), len(run.config.keypoints), 2
        ),
        views=views,
        keypoint_views=keypoint_views,
        factor=factor,
        frames=np.asarray(samples.frame_index[rows], dtype=np.int64),
    )
