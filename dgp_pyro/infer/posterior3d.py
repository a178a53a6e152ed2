r"""Whole-session 3D posteriors of a trained run, and their files.

After training, the posterior over every frame of a session is the 3D guide run over the whole
sequence: every view's video streams through the network (:func:`~dgp_pyro.infer.predict.predict_video`,
frame pixels), the per-frame 3D pseudo-observations come from the robust, confidence-weighted,
linearised triangulation of the views' soft-argmax summaries
(:func:`~dgp_pyro.model.dgp3d.triangulation_observations`, with the run's learned corrections),
and the exact Gaussian chain smoother combines them with the 3D temporal and skeletal
potentials in :math:`O(T)` (:func:`~dgp_pyro.infer.gaussian_chain.smooth_keypoints`). For
``dgp3d_bones`` the linearised bone terms couple the keypoints of a frame and the chain is
solved with :class:`~dgp_pyro.infer.gaussian_chain.BlockTridiagonalGaussian`. For a
``supervised`` run (no potentials) the posterior of each frame is its own pseudo-observation:
robust triangulation with a linearised uncertainty.

Per frame and keypoint: the 3D mean, the 3 x 3 marginal covariance, its standard deviations
and equal-tailed credible intervals (marginal Gaussians) at the chosen levels; per view: the
reprojected mean :math:`\pi_v(\mu)` and spread :math:`J_v \Sigma J_v^\top` (the projection
linearised at the mean), with intervals.

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
(:func:`~dgp_pyro.infer.predict.write_prediction_files`) of the reprojected posterior: ``x``,
``y``, ``likelihood`` (the view's own heatmap peak probability: whether *this view* saw the
keypoint), ``x_std``, ``y_std`` and the interval columns ``x_lo90``, ``x_hi90``, ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from dgp_pyro.atomic import atomic_path
from dgp_pyro.data.cameras import CameraGroup
from dgp_pyro.errors import DGPError
from dgp_pyro.infer.dgp3d_train import (
    check_frame_sizes,
    load_calibration,
    model_settings3d,
    session_videos,
    synchronous_videos,
)
from dgp_pyro.infer.gaussian_chain import smooth_keypoints
from dgp_pyro.infer.posterior import (
    DEFAULT_LEVELS,
    KeypointPosterior,
    interval_coverage,
    level_tag,
    variance_scale,
)
from dgp_pyro.infer.predict import (
    NetworkSummaries,
    predict_video,
    prediction_stem,
    summaries_to_table,
    write_prediction_files,
)
from dgp_pyro.model.dgp3d import (
    GuideCorrection3D,
    Model3DSettings,
    PotentialWeights3D,
    ViewCameras,
    corrected_observations,
    guide3d_from_observations,
    potential_arguments3d,
    triangulation_observations,
)
from dgp_pyro.model.potentials import PRIOR_RIDGE
from dgp_pyro.run import Run

__all__ = [
    "Posterior3D",
    "PosteriorModel3D",
    "session_posterior3d",
    "videos_posterior3d",
    "image_posteriors3d",
    "predict_run3d",
    "write_posterior3d",
    "read_points3d",
    "interval_coverage3d",
    "H5_KEY_3D",
]

H5_KEY_3D = "points_3d"
#: Frames per chunk of the pseudo-observations (bounds memory for long videos).
CHUNK_FRAMES = 2048
#: A view counts in ``ncams`` where its effective weight (confidence x robust weight) exceeds this.
NCAMS_WEIGHT = 0.1


@dataclass
class Posterior3D:
    """The 3D posterior of a session, and its reprojection into every view.

    Attributes:
        keypoints: J names; views: V names.
        frame_index: ``(T,)`` video frame numbers.
        mean: ``(T, J, 3)`` posterior mean (world units); cov ``(T, J, 3, 3)`` marginal covariance.
        lower, upper: ``{level: (T, J, 3)}`` equal-tailed credible interval bounds.
        mean_2d: ``(T, V, J, 2)`` reprojected mean (frame pixels); cov_2d ``(T, V, J, 2, 2)``.
        lower_2d, upper_2d: ``{level: (T, V, J, 2)}``.
        confidence: ``(T, V, J)`` each view's heatmap peak probability.
        view_weight: ``(T, V, J)`` each view's effective weight in the pseudo-observation.
    """

    keypoints: list[str]
    views: list[str]
    frame_index: np.ndarray
    mean: Float[np.ndarray, "t j 3"]
    cov: Float[np.ndarray, "t j 3 3"]
    mean_2d: Float[np.ndarray, "t v j 2"]
    cov_2d: Float[np.ndarray, "t v j 2 2"]
    confidence: Float[np.ndarray, "t v j"]
    view_weight: Float[np.ndarray, "t v j"]
    lower: dict[float, np.ndarray] = field(default_factory=dict)
    upper: dict[float, np.ndarray] = field(default_factory=dict)
    lower_2d: dict[float, np.ndarray] = field(default_factory=dict)
    upper_2d: dict[float, np.ndarray] = field(default_factory=dict)

    @property
    def std(self) -> Float[np.ndarray, "t j 3"]:
        return np.sqrt(np.clip(np.diagonal(self.cov, axis1=-2, axis2=-1), 0, None))

    @property
    def std_2d(self) -> Float[np.ndarray, "t v j 2"]:
        return np.sqrt(np.clip(np.diagonal(self.cov_2d, axis1=-2, axis2=-1), 0, None))

    def view_summaries(self, view: int) -> NetworkSummaries:
        """The reprojected posterior of view ``view`` as 2D summaries (frame pixels)."""
        return NetworkSummaries(
            self.mean_2d[:, view], self.cov_2d[:, view], self.confidence[:, view], self.frame_index
        )

    def view_posterior(self, view: int) -> KeypointPosterior:
        """The reprojected posterior of view ``view`` as a 2D :class:`KeypointPosterior` (frame pixels)."""
        return KeypointPosterior(
            mean=self.mean_2d[:, view],
            cov=self.cov_2d[:, view],
            confidence=self.confidence[:, view],
            frame_index=self.frame_index,
            lower={level: bound[:, view] for level, bound in self.lower_2d.items()},
            upper={level: bound[:, view] for level, bound in self.upper_2d.items()},
        )

    def view_interval_columns(self, view: int) -> dict[str, np.ndarray]:
        """``x_lo90``, ``x_hi90``, ``y_lo90``, ... of view ``view``, for prediction files."""
        columns = {}
        for level in sorted(self.lower_2d):
            tag = level_tag(level)
            for axis, name in enumerate("xy"):
                columns[f"{name}_lo{tag}"] = self.lower_2d[level][:, view, :, axis]
                columns[f"{name}_hi{tag}"] = self.upper_2d[level][:, view, :, axis]
        return columns


def _intervals(mean: np.ndarray, std: np.ndarray, levels: Sequence[float]) -> tuple[dict, dict]:
    lower, upper = {}, {}
    for level in levels:
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"credible levels must be in (0, 1); got {level}")
        z = NormalDist().inv_cdf(0.5 + float(level) / 2.0)
        lower[level], upper[level] = mean - z * std, mean + z * std
    return lower, upper


@dataclass
class PosteriorModel3D:
    """What turns every view's heatmap summaries into the 3D posterior: settings, fitted guide, cameras.

    ``cameras`` are in the pixels of the summaries (frame pixels for :func:`predict_video`).
    """

    settings: Model3DSettings
    weights: PotentialWeights3D
    correction: GuideCorrection3D
    cameras: ViewCameras
    keypoints: list[str]
    views: list[str]
    #: the calibration the cameras came from (to check the videos' frame sizes), if known
    group: CameraGroup | None = None
    #: factor on the posterior variances, fitted on held-out labels (posterior.calibrate_posterior)
    variance_scale: float = 1.0

    @classmethod
    def from_run(
        cls, run: Run, group: CameraGroup | None = None, calibrated: bool = True
    ) -> PosteriorModel3D:
        """The posterior model of a 3D run (or of a ``supervised`` run: no potentials).

        ``group``: the calibration (default: the run's project's, matched to its views);
        ``calibrated``: with the run's fitted variance scale, if any.
        """
        config = run.config
        settings = model_settings3d(config)
        if group is None:
            project = run.project()
            group = load_calibration(project, config.model_options.get("calibration"))
            views = list(project.views)
        else:
            views = list(group.names)
        J = len(config.keypoints)
        weights = PotentialWeights3D(torch.ones(J), torch.ones(len(settings.edges)))
        correction = GuideCorrection3D(J)
        state = run.checkpoint()
        if "potential_weights" in state and "bone_length" in state["potential_weights"]:
            weights.load_state_dict(state["potential_weights"])
            correction.load_state_dict(state["guide_correction"])
        elif settings.uses_windows:
            raise DGPError(
                f"the checkpoint of this {config.model} run holds no 3D potential weights",
                run.last_checkpoint,
                hint="was it trained by train_dgp3d?",
            )
        cameras = ViewCameras.from_group(group)
        scale = variance_scale(run, calibrated)
        return cls(settings, weights, correction, cameras, list(config.keypoints), views, group, scale)

    @torch.no_grad()
    def posterior(
        self,
        mean: Float[np.ndarray, "t v j 2"],
        cov: Float[np.ndarray, "t v j 2 2"],
        confidence: Float[np.ndarray, "t v j"],
        frame_index: np.ndarray | None = None,
        levels: Sequence[float] = DEFAULT_LEVELS,
    ) -> Posterior3D:
        """The posterior over consecutive synchronous frames from every view's summaries.

        Args:
            mean, cov, confidence: the network's soft-argmax summaries ``(T, V, J, ...)`` (frames
                first, unlike :meth:`~dgp_pyro.data.cameras.CameraGroup.triangulate`) in the
                cameras' pixels, as :func:`~dgp_pyro.infer.predict.predict_video` gives them
                (not a 2D posterior: its spreads are already smoothed and recalibrated).
            frame_index: ``(T,)`` frame numbers (default ``0..T-1``).
            levels: credible levels.
        """
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float64))
        cov_t = torch.as_tensor(np.asarray(cov, dtype=np.float64))
        conf_t = torch.as_tensor(np.asarray(confidence, dtype=np.float64))
        T = mean_t.shape[0]
        if mean_t.shape[1] != len(self.cameras):
            raise DGPError(f"summaries of {mean_t.shape[1]} views for {len(self.cameras)} cameras")
        parts = [
            triangulation_observations(
                self.cameras,
                mean_t[f : f + CHUNK_FRAMES],
                cov_t[f : f + CHUNK_FRAMES],
                conf_t[f : f + CHUNK_FRAMES],
                robust=self.settings.robust,
                iterations=self.settings.gauss_newton,
            )
            for f in range(0, T, CHUNK_FRAMES)
        ]
        obs = type(parts[0])(*(torch.cat(list(x), dim=0) for x in zip(*parts, strict=True)))
        if self.settings.bones:
            q = guide3d_from_observations(self.settings, self.weights, self.correction, obs)
            post_mean = q.mean
            J = post_mean.shape[-2]
            full = q.marginal_covariance.reshape(T, J, 3, J, 3)
            idx = torch.arange(J)
            post_cov = full[:, idx, :, idx, :].permute(1, 0, 2, 3)  # (T, J, 3, 3)
        else:
            obs_mean, obs_precision = corrected_observations(self.correction, obs)
            smoothed = smooth_keypoints(
                obs_mean,
                obs_precision,
                *potential_arguments3d(self.settings, self.weights),
                levels=(),
                ridge=PRIOR_RIDGE,
                obs_mask=obs.observed,
            )
            post_mean, post_cov = smoothed["mean"], smoothed["cov"]
        post_cov = 0.5 * (post_cov + post_cov.mT) * self.variance_scale
        uv, jac = self.cameras.project_jacobian(post_mean)  # (V, T, J, 2), (V, T, J, 2, 3)
        cov_2d = jac @ post_cov[None] @ jac.mT
        mean_np, cov_np = post_mean.numpy(), post_cov.numpy()
        mean_2d = uv.movedim(0, 1).numpy()
        cov_2d = cov_2d.movedim(0, 1).numpy()
        std = np.sqrt(np.clip(np.diagonal(cov_np, axis1=-2, axis2=-1), 0, None))
        std_2d = np.sqrt(np.clip(np.diagonal(cov_2d, axis1=-2, axis2=-1), 0, None))
        lower, upper = _intervals(mean_np, std, levels)
        lower_2d, upper_2d = _intervals(mean_2d, std_2d, levels)
        V = len(self.cameras)
        return Posterior3D(
            keypoints=list(self.keypoints),
            views=list(self.views),
            frame_index=np.arange(T, dtype=np.int64) if frame_index is None else np.asarray(frame_index),
            mean=mean_np,
            cov=cov_np,
            mean_2d=mean_2d,
            cov_2d=cov_2d,
            confidence=conf_t.numpy(),
            view_weight=obs.view_weight[..., :V, :].numpy(),
            lower=lower,
            upper=upper,
            lower_2d=lower_2d,
            upper_2d=upper_2d,
        )


def session_posterior3d(
    run: Run,
    session: str | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    network: torch.nn.Module | None = None,
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
    model: PosteriorModel3D | None = None,
) -> Posterior3D:
    """The 3D posterior over frames ``start .. stop - 1`` of one session (default: the first).

    Raises:
        DGPError: an unknown session, videos of different lengths in it, a calibration that
            does not match the views.
    """
    project = run.project()
    sessions = {s.name: s for s in session_videos(project)}
    name = sorted(sessions)[0] if session is None else session
    if name not in sessions:
        raise DGPError(
            f"no session {name!r}", project.root / "videos", hint=f"sessions: {', '.join(sorted(sessions))}"
        )
    return videos_posterior3d(
        run, sessions[name].videos, levels, network, start, stop, batch_size, progress, model
    )


def videos_posterior3d(
    run: Run,
    videos: Sequence[str | Path],
    levels: Sequence[float] = DEFAULT_LEVELS,
    network: torch.nn.Module | None = None,
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
    model: PosteriorModel3D | None = None,
) -> Posterior3D:
    """The 3D posterior of synchronous videos, one per view in the run's view order.

    Raises:
        DGPError: a video count that does not match the cameras, videos of different lengths,
            a frame size other than the calibration's.
    """
    model = PosteriorModel3D.from_run(run) if model is None else model
    videos = [Path(v) for v in videos]
    if len(videos) != len(model.views):
        raise DGPError(
            f"{len(videos)} videos for {len(model.views)} calibrated views ({', '.join(model.views)})",
            videos[0] if videos else None,
            hint="give one video per view, in that order",
        )
    session = synchronous_videos(videos[0].stem, videos, [v.name for v in videos])
    if model.group is not None:
        check_frame_sizes(model.group, [session])
    network = run.network() if network is None else network
    views = [
        predict_video(
            network, video, run.size, batch_size=batch_size, start=start, stop=stop, progress=progress
        )
        for video in videos
    ]
    stack = lambda attr: np.stack([getattr(s, attr) for s in views], axis=1)  # noqa: E731
    return model.posterior(stack("mean"), stack("cov"), stack("confidence"), views[0].frame_index, levels)


def image_posteriors3d(
    run: Run,
    image_keys: Sequence[str],
    levels: Sequence[float] = DEFAULT_LEVELS,
    network: torch.nn.Module | None = None,
    context: int = 16,
    calibrated: bool = True,
) -> KeypointPosterior:
    """The reprojected 2D posterior at labeled images of a 3D run (one row per image).

    Each image is a frame of one view of a session (DeepLabCut naming); its posterior is that
    view's reprojection of the 3D posterior of the frame given ``context`` synchronous frames
    on each side in every view. Rows are in frame pixels, like
    :func:`~dgp_pyro.infer.posterior.image_posteriors` of a 2D run.

    Raises:
        DGPError: an image that is not a frame of one of the project's session videos.
    """
    from dgp_pyro.data.windows import video_frame_of_image

    project = run.project()
    sessions = session_videos(project)
    where = {video: (session, v) for session in sessions for v, video in enumerate(session.videos)}
    model = PosteriorModel3D.from_run(run, calibrated=calibrated)
    network = run.network() if network is None else network
    windows: dict[tuple[str, int], tuple[Posterior3D, int]] = {}
    parts = []
    for key in image_keys:
        found = video_frame_of_image(key, list(where))
        if found is None or found[1] >= where[found[0]][0].n_frames:
            raise DGPError(
                f"labeled image {key!r} is not a frame of a session video",
                project.root,
                hint="a 3D run scores labeled images in their session's posterior (DeepLabCut naming)",
            )
        video, frame = found
        session, view = where[video]
        if (session.name, frame) not in windows:
            start, stop = max(0, frame - context), min(session.n_frames, frame + context + 1)
            posterior = videos_posterior3d(run, session.videos, levels, network, start, stop, model=model)
            windows[(session.name, frame)] = (posterior, frame - start)
        posterior, row = windows[(session.name, frame)]
        parts.append((posterior, row, view))
    return KeypointPosterior(
        mean=np.stack([p.mean_2d[r, v] for p, r, v in parts]).reshape(-1, len(run.config.keypoints), 2),
        cov=np.stack([p.cov_2d[r, v] for p, r, v in parts]).reshape(-1, len(run.config.keypoints), 2, 2),
        confidence=np.stack([p.confidence[r, v] for p, r, v in parts]).reshape(-1, len(run.config.keypoints)),
        frame_index=np.arange(len(parts)),
        lower={lv: np.stack([p.lower_2d[lv][r, v] for p, r, v in parts]) for lv in levels} if parts else {},
        upper={lv: np.stack([p.upper_2d[lv][r, v] for p, r, v in parts]) for lv in levels} if parts else {},
    )


# --------------------------------------------------------------------------- files


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
    """Write ``<stem>_3d.{h5,csv}`` and one DeepLabCut file per view (module docstring); return the paths.

    ``videos``: each view's video, naming its file ``<video stem>_<scorer>``; default
    ``<stem>_<view>_<scorer>``.
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
    for v, view in enumerate(posterior.views):
        table = summaries_to_table(
            posterior.view_summaries(v),
            posterior.keypoints,
            scorer,
            extras=posterior.view_interval_columns(v),
        )
        name = prediction_stem(videos[v], scorer) if videos is not None else f"{stem}_{view}_{scorer}"
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


def interval_coverage3d(posterior: Posterior3D, truth: Float[np.ndarray, "t j 3"]) -> dict[str, float]:
    """Share of true coordinates inside each 3D credible interval (x, y, z counted separately)."""
    return interval_coverage(posterior, truth)  # the 2D rule holds for any coordinate count
