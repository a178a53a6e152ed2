r"""The files of a 3D posterior: the 3D table and every view's DeepLabCut prediction file.

Files (:func:`write_posterior3d`)
---------------------------------

``<stem>_3d.csv`` and ``<stem>_3d.h5`` (HDF5 key ``points_3d``, pandas ``table`` format): one
row per frame, a first column ``frame`` (the video frame number), then for every keypoint
``<kp>`` (in the run's keypoint order) the columns

=============================  ===================================================================
``<kp>_x``, ``_y``, ``_z``     posterior mean, world units of the calibration
``<kp>_x_std`` ... ``_z_std``  marginal posterior standard deviations
``<kp>_x_lo90``, ``_x_hi90``   equal-tailed credible interval bounds per level (``lo50``, ``hi95``, ...)
                               for x, then y, then z
``<kp>_ncams``                 views whose heatmap took part (effective weight above 0.1)
``<kp>_score``                 the highest heatmap peak probability over the views
=============================  ===================================================================

(``<kp>_x, _y, _z, _ncams, _score`` as in Anipose's tables). :func:`read_points3d` reads it back.

Per view, a DeepLabCut prediction file ``<video stem>_<scorer>.h5`` / ``.csv``
(:func:`~dgp_pyro.posterior.predict.write_prediction_files`) of the reprojected posterior: ``x``,
``y``, ``likelihood`` (the view's own heatmap peak probability: whether *this view* saw the
keypoint), ``x_std``, ``y_std`` and the interval columns ``x_lo90``, ``x_hi90``, ...

Suffix layout (one video holds every view): the view files are ``<video stem>_<view>_<scorer>``
with the keypoints that view has (named by body part), and ``<video stem>_<scorer>`` holds
every channel of the video under the project's column names (``nose_top``, ``nose_bot``, ...),
the layout of the labels and of a 2D run's predictions.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from dgp_pyro.atomic import atomic_path
from dgp_pyro.data.sessions import session_videos
from dgp_pyro.errors import DGPError
from dgp_pyro.posterior.marginals import DEFAULT_LEVELS, Posterior3D, level_tag
from dgp_pyro.posterior.posterior3d import PosteriorModel3D, session_posterior3d
from dgp_pyro.posterior.predict import prediction_stem, summaries_to_table, write_prediction_files
from dgp_pyro.run.folder import Run

__all__ = [
    "H5_KEY_3D",
    "NCAMS_WEIGHT",
    "points3d_frame",
    "predict_run3d",
    "read_points3d",
    "write_posterior3d",
]

H5_KEY_3D = "points_3d"
#: A view counts in ``ncams`` where its effective weight (confidence x robust weight) exceeds this.
NCAMS_WEIGHT = 0.1


def points3d_frame(posterior: Posterior3D) -> pd.DataFrame:
    """The 3D table of the module docstring as a DataFrame (index ``frame``)."""
    columns: dict[str, np.ndarray] = {}
    std = posterior.std
    ncams = (posterior.view_weight > NCAMS_WEIGHT).sum(1)
    score = np.nanmax(np.where(np.isfinite(posterior.confidence), posterior.confidence, -np.inf), axis=1)
    score = np.where(np.isfinite(score), score, np.nan)
    for j, name in enumerate(posterior.keypoints):
        for a, axis in enumerate("xyz"):
            columns[f"{name}_{axis}"] = posterior.mean[:, j, a]
        for a, axis in enumerate("xyz"):
            columns[f"{name}_{axis}_std"] = std[:, j, a]
        for level in sorted(posterior.lower):
            tag = level_tag(level)
            for a, axis in enumerate("xyz"):
                columns[f"{name}_{axis}_lo{tag}"] = posterior.lower[level][:, j, a]
                columns[f"{name}_{axis}_hi{tag}"] = posterior.upper[level][:, j, a]
        columns[f"{name}_ncams"] = ncams[:, j].astype(np.int64)
        columns[f"{name}_score"] = score[:, j]
    frame = pd.DataFrame(
        columns, index=pd.Index(np.asarray(posterior.frame_index, dtype=np.int64), name="frame")
    )
    return frame


def read_points3d(path: str | Path, keypoints: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read a 3D table: ``{"frame": (T,), "mean": (T, J, 3), "std": (T, J, 3), "keypoints": [...]}``."""
    path = Path(path)
    if not path.is_file():
        raise DGPError("3D table not found", path)
    frame = pd.read_hdf(path, key=H5_KEY_3D) if path.suffix == ".h5" else pd.read_csv(path, index_col="frame")
    if keypoints is None:
        keypoints = [c[: -len("_x_std")] for c in frame.columns if c.endswith("_x_std")]
    mean = np.stack([frame[[f"{k}_{a}" for a in "xyz"]].to_numpy(float) for k in keypoints], axis=1)
    std = np.stack([frame[[f"{k}_{a}_std" for a in "xyz"]].to_numpy(float) for k in keypoints], axis=1)
    return {"frame": frame.index.to_numpy(), "mean": mean, "std": std, "keypoints": list(keypoints)}


def write_posterior3d(
    posterior: Posterior3D,
    out_dir: str | Path,
    stem: str,
    scorer: str,
    videos: Sequence[str | Path] | None = None,
    formats: Sequence[str] = ("h5", "csv"),
) -> list[Path]:
    """Write ``<stem>_3d.{h5,csv}`` and the views' DeepLabCut files (module docstring); return the paths.

    ``videos``: each view's video (one per view, in view order), naming its file
    ``<video stem>_<scorer>``; default ``<stem>_<view>_<scorer>``. Views that share a video (the
    suffix layout) get ``<video stem>_<view>_<scorer>`` with the keypoints they have, and the
    video's own ``<video stem>_<scorer>`` (default ``<stem>_<scorer>``) holds every channel of
    the network under its name (``nose_top``, ...).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = points3d_frame(posterior)
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}_3d.{fmt}"
        with atomic_path(path) as tmp:
            if fmt == "csv":
                frame.to_csv(tmp)
            elif fmt == "h5":
                frame.to_hdf(tmp, key=H5_KEY_3D, mode="w", format="table" if len(frame) else "fixed")
            else:
                raise ValueError(f"unknown format {fmt!r}")
        paths.append(path)
    channels = posterior.view_channels
    for v, view in enumerate(posterior.views):
        keep = [j for j, k in enumerate(channels.channel[v]) if k >= 0]
        summaries, extras = posterior.select_2d([(v, j) for j in keep])
        table = summaries_to_table(summaries, [posterior.keypoints[j] for j in keep], scorer, extras=extras)
        shared = len(channels.views_of_image(channels.image[v])) > 1
        if videos is None:
            name = f"{stem}_{view}_{scorer}"
        elif shared:
            name = f"{Path(videos[v]).stem}_{view}_{scorer}"
        else:
            name = prediction_stem(videos[v], scorer)
        paths.extend(write_prediction_files(table, out_dir, name, formats))
    for image in range(channels.num_images):
        views = channels.views_of_image(image)
        if len(views) < 2:
            continue
        summaries, extras = posterior.select_2d(channels.image_pairs(image))
        table = summaries_to_table(summaries, channels.channels, scorer, extras=extras)
        name = f"{stem}_{scorer}" if videos is None else prediction_stem(videos[views[0]], scorer)
        paths.extend(write_prediction_files(table, out_dir, name, formats))
    return paths


def predict_run3d(
    run: Run,
    out_dir: str | Path | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    network: torch.nn.Module | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, list[Path]]:
    """Posterior files of every session of the run's project (default into ``RUN/predictions``)."""
    out_dir = run.predictions_dir if out_dir is None else Path(out_dir)
    project = run.project()
    model = PosteriorModel3D.from_run(run)
    network = run.network() if network is None else network
    written = {}
    for session in session_videos(project):
        posterior = session_posterior3d(
            run, session.name, levels, network, batch_size=batch_size, progress=progress, model=model
        )
        written[session.name] = write_posterior3d(
            posterior, out_dir, f"{session.name}_{run.scorer}", run.scorer, videos=session.videos
        )
    return written
