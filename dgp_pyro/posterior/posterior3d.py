r"""Whole-session 3D posteriors of a trained run, and their files.

After training, the posterior over every frame of a session is the 3D guide run over the whole
sequence: every video of the session streams through the network once (one per view, or the
one video holding every view in the suffix layout; :func:`~dgp_pyro.posterior.predict.predict_video`,
frame pixels), :class:`~dgp_pyro.model.dgp3d.ViewChannels` splits its channels into the views,
the per-frame 3D pseudo-observations come from the robust, confidence-weighted,
linearised triangulation of the views' soft-argmax summaries
(:func:`~dgp_pyro.model.dgp3d.triangulation_observations`, with the run's learned corrections),
and the exact Gaussian chain smoother combines them with the 3D temporal and skeletal
potentials in :math:`O(T)` (:func:`~dgp_pyro.ops.gaussian_chain.smooth_keypoints`). For
``dgp3d_bones`` the linearised bone terms couple the keypoints of a frame and the chain is
solved with :class:`~dgp_pyro.ops.gaussian_chain.BlockTridiagonalGaussian`. For a
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
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float

from dgp_pyro.atomic import atomic_path
from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.cameras import CameraGroup
from dgp_pyro.model.dgp3d import (
    GuideCorrection3D,
    Model3DSettings,
    PotentialWeights3D,
    ViewCameras,
    ViewChannels,
    corrected_observations,
    guide3d_from_observations,
    potential_arguments3d,
    triangulation_observations,
)
from dgp_pyro.model.potentials import PRIOR_RIDGE
from dgp_pyro.ops.gaussian_chain import smooth_keypoints
from dgp_pyro.posterior.posterior2d import (
    DEFAULT_LEVELS,
    KeypointPosterior,
    calibration3d,
    check_finite_posterior,
    interval_coverage,
    interval_scales,
    interval_widening,
    level_tag,
    variance_scale,
)
from dgp_pyro.posterior.predict import (
    NetworkSummaries,
    predict_video,
    prediction_stem,
    summaries_to_table,
    write_prediction_files,
)
from dgp_pyro.run import Run
from dgp_pyro.train.dgp3d import (
    check_frame_sizes,
    load_calibration,
    model_settings3d,
    session_videos,
    synchronous_videos,
)

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
        confidence: ``(T, V, J)`` each view's heatmap peak probability (0 where a view has no
            heatmap of the keypoint).
        view_weight: ``(T, V, J)`` each view's effective weight in the pseudo-observation.
        channels: where each view's heatmaps were in the network's output (None: one image
            per view, every keypoint in every view).
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
    channels: ViewChannels | None = None

    @property
    def view_channels(self) -> ViewChannels:
        """:attr:`channels`, or one image per view with every keypoint."""
        if self.channels is not None:
            return self.channels
        return ViewChannels.per_camera(list(self.views), list(self.keypoints))

    def select_2d(self, pairs: Sequence[tuple[int, int]]) -> tuple[NetworkSummaries, dict[str, np.ndarray]]:
        """The reprojected posterior at ``(view, keypoint)`` pairs as 2D columns (frame pixels).

        Returns the summaries (mean, covariance, confidence) and the interval columns
        ``x_lo90``, ``x_hi90``, ... of a prediction file whose keypoints are the pairs.
        """
        v = np.array([p[0] for p in pairs], dtype=np.int64)
        j = np.array([p[1] for p in pairs], dtype=np.int64)
        summaries = NetworkSummaries(
            self.mean_2d[:, v, j], self.cov_2d[:, v, j], self.confidence[:, v, j], self.frame_index
        )
        columns = {}
        for level in sorted(self.lower_2d):
            tag = level_tag(level)
            for axis, name in enumerate("xy"):
                columns[f"{name}_lo{tag}"] = self.lower_2d[level][:, v, j, axis]
                columns[f"{name}_hi{tag}"] = self.upper_2d[level][:, v, j, axis]
        return summaries, columns

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


def _intervals(
    mean: np.ndarray, std: np.ndarray, levels: Sequence[float], widening: dict[float, float]
) -> tuple[dict, dict]:
    # std: the smoother's (before recalibration); widening[level]: k_p of calibrate_posterior
    lower, upper = {}, {}
    for level in levels:
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"credible levels must be in (0, 1); got {level}")
        half = NormalDist().inv_cdf(0.5 + float(level) / 2.0) * widening[float(level)] * std
        lower[level], upper[level] = mean - half, mean + half
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
    #: where each view's heatmaps are in the network's output (None: one image per view)
    channels: ViewChannels | None = None
    #: per-level factors on the interval half-widths (posterior.calibrate_posterior; fitted on
    #: the reprojected 2D intervals against the held-out labels)
    interval_scales: dict[float, float] = field(default_factory=dict)
    #: the same two for the 3D posterior, fitted on the held-out labels triangulated (keypoints
    #: labeled in two views or more); None: the 2D ones serve (runs calibrated before them, or
    #: without such labels)
    variance_scale_3d: float | None = None
    interval_scales_3d: dict[float, float] | None = None

    def __post_init__(self) -> None:
        if self.channels is None:
            self.channels = ViewChannels.per_camera(list(self.views), list(self.keypoints))

    @classmethod
    def from_run(
        cls, run: Run, group: CameraGroup | None = None, calibrated: bool = True
    ) -> PosteriorModel3D:
        """The posterior model of a 3D run (or of a ``supervised`` run: no potentials).

        ``group``: the calibration (default: the run's project's, matched to its views);
        ``calibrated``: with the run's fitted variance scale, if any. The keypoints are the
        project's 3D keypoints (its body parts; the channels of a suffix-layout network are
        their views).
        """
        config = run.config
        project = run.project()
        channels = ViewChannels.from_project(project)
        settings = model_settings3d(config, channels=channels)
        if group is None:
            group = load_calibration(project, config.model_options.get("calibration"))
            views = list(project.views)
        else:
            views = list(group.names)
            if channels.identity:
                channels = ViewChannels.per_camera(views, channels.keypoints)
            else:
                group = group.match_views(list(channels.views))
                views = list(channels.views)
        J = len(channels.keypoints)
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
        in_3d = calibration3d(run, calibrated)
        return cls(
            settings,
            weights,
            correction,
            cameras,
            list(channels.keypoints),
            views,
            group,
            scale,
            channels,
            interval_scales(run, calibrated),
            None if in_3d is None else in_3d[0],
            None if in_3d is None else in_3d[1],
        )

    def image_videos(self, videos: Sequence[str | Path]) -> list[Path]:
        """A session's videos, one per image of a synchronous frame (:meth:`ViewChannels.image_sources`).

        Takes either those (one per view in the folders layout, the one video holding every view
        in the suffix layout) or a per-view list such as :attr:`SessionVideos.videos`.

        Raises:
            DGPError: a video count that fits neither.
        """
        videos = [Path(v) for v in videos]
        channels = self.channels
        if len(videos) == channels.num_images:
            return videos
        if len(videos) == len(self.views) and channels.per_view(channels.image_sources(videos)) == videos:
            return channels.image_sources(videos)
        what = (
            f"one video per view ({', '.join(self.views)})"
            if channels.num_images == len(self.views)
            else f"{channels.num_images} video(s) per session, each holding views "
            + "; ".join(
                ", ".join(self.views[v] for v in channels.views_of_image(i))
                for i in range(channels.num_images)
            )
        )
        raise DGPError(
            f"{len(videos)} videos for a {len(self.views)}-view run: give {what}",
            videos[0] if videos else None,
            hint="give the videos of one session, in that order",
        )

    def summaries_of(
        self, per_image: Sequence[NetworkSummaries]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-view ``mean (T, V, J, 2)``, ``cov``, ``confidence`` from each image's network summaries."""

        def stack(attr: str) -> torch.Tensor:
            return torch.as_tensor(np.stack([getattr(s, attr) for s in per_image], axis=1))

        mean, cov, confidence = self.channels.summaries(stack("mean"), stack("cov"), stack("confidence"))
        return mean.numpy(), cov.numpy(), confidence.numpy()

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
                first, unlike :meth:`~dgp_pyro.geometry.cameras.CameraGroup.triangulate`) in the
                cameras' pixels, as :func:`~dgp_pyro.posterior.predict.predict_video` gives them
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
        post_cov = 0.5 * (post_cov + post_cov.mT)  # the smoother's, before recalibration
        uv, jac = self.cameras.project_jacobian(post_mean)  # (V, T, J, 2), (V, T, J, 2, 3)
        cov_2d = (jac @ post_cov[None] @ jac.mT).movedim(0, 1).numpy()
        mean_np, cov_np = post_mean.numpy(), post_cov.numpy()
        mean_2d = uv.movedim(0, 1).numpy()
        # the intervals widen the smoother's spread; the covariances carry the variance scale
        std = np.sqrt(np.clip(np.diagonal(cov_np, axis1=-2, axis2=-1), 0, None))
        std_2d = np.sqrt(np.clip(np.diagonal(cov_2d, axis1=-2, axis2=-1), 0, None))
        widening = interval_widening(self.interval_scales, self.variance_scale, levels)
        scale_3d = self.variance_scale if self.variance_scale_3d is None else self.variance_scale_3d
        widening_3d = (
            widening
            if self.interval_scales_3d is None
            else interval_widening(self.interval_scales_3d, scale_3d, levels)
        )
        lower, upper = _intervals(mean_np, std, levels, widening_3d)
        lower_2d, upper_2d = _intervals(mean_2d, std_2d, levels, widening)
        cov_np, cov_2d = cov_np * scale_3d, cov_2d * self.variance_scale
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
            channels=self.channels,
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
    """The 3D posterior of one session's synchronous videos.

    ``videos``: one per view in the run's view order (folders layout), or the one video holding
    every view (suffix layout); a per-view list naming that video once per view works too
    (:meth:`PosteriorModel3D.image_videos`). Each video goes through the network once.

    Raises:
        DGPError: a video count that does not match the cameras, videos of different lengths,
            a frame size other than the calibration's.
    """
    model = PosteriorModel3D.from_run(run) if model is None else model
    videos = model.image_videos(videos)
    per_view = model.channels.per_view(videos)
    session = synchronous_videos(videos[0].stem, per_view, list(model.views))
    if model.group is not None:
        check_frame_sizes(model.group, [session])
    network = run.network() if network is None else network
    per_image = [
        predict_video(
            network, video, run.size, batch_size=batch_size, start=start, stop=stop, progress=progress
        )
        for video in videos
    ]
    mean, cov, confidence = model.summaries_of(per_image)
    posterior = model.posterior(mean, cov, confidence, per_image[0].frame_index, levels)
    check_finite_posterior(posterior, run, videos[0])
    return posterior


def image_posteriors3d(
    run: Run,
    image_keys: Sequence[str],
    levels: Sequence[float] = DEFAULT_LEVELS,
    network: torch.nn.Module | None = None,
    context: int = 16,
    calibrated: bool = True,
) -> KeypointPosterior:
    """The reprojected 2D posterior at labeled images of a 3D run (one row per image).

    A labeled image is one image of a synchronous frame (one view's image in the folders layout,
    the image holding every view in the suffix layout); its row holds the network's channels
    (``run.config.keypoints``), each the reprojection of the 3D posterior into that channel's
    view. An image that is a frame of a session video (DeepLabCut naming) gets the posterior of
    its frame given ``context`` synchronous frames on each side, as ``predict`` computes it; any
    other labeled image (e.g. a mirror project's ``labeled-data/img07.png``) gets the
    single-frame posterior of its labeled frame from every view's image of that frame (no
    temporal context, the skeleton only). Rows are in frame pixels, like
    :func:`~dgp_pyro.posterior.posterior2d.image_posteriors` of a 2D run.

    Raises:
        DGPError: a key that is neither a frame of a session video nor a labeled image of the
            project, or a labeled image whose size is not its camera's.
    """
    return labeled_posteriors3d(run, image_keys, levels, network, context, calibrated)[0]


def labeled_posteriors3d(
    run: Run,
    image_keys: Sequence[str],
    levels: Sequence[float] = DEFAULT_LEVELS,
    network: torch.nn.Module | None = None,
    context: int = 16,
    calibrated: bool = True,
) -> tuple[KeypointPosterior, np.ndarray, Float[np.ndarray, "f j 3"], Float[np.ndarray, "f j 3"]]:
    """:func:`image_posteriors3d`'s 2D rows, and the 3D posterior at the same frames.

    Returns:
        ``(2D posterior per image, frames (F,), mean (F, J, 3), std (F, J, 3))``: the 3D rows
        are one per labeled frame of the project (``project.labels``' first axis) that any key
        is an image of, in increasing order; a key that is a video frame but no labeled image
        has a 2D row only.
    """
    channels, sources = _posteriors_at_images(run, image_keys, levels, network, context, calibrated)
    parts = [(posterior, row, channels.image_pairs(image)) for posterior, row, image, _ in sources]

    def gather(values, tail: tuple[int, ...]) -> np.ndarray:
        if not parts:
            return np.zeros((0, len(channels.channels), *tail))
        return np.stack([values(p)[r, [v for v, _ in pairs], [j for _, j in pairs]] for p, r, pairs in parts])

    reprojected = KeypointPosterior(
        mean=gather(lambda p: p.mean_2d, (2,)),
        cov=gather(lambda p: p.cov_2d, (2, 2)),
        confidence=gather(lambda p: p.confidence, ()),
        frame_index=np.arange(len(parts)),
        lower={lv: gather(lambda p, lv=lv: p.lower_2d[lv], (2,)) for lv in levels} if parts else {},
        upper={lv: gather(lambda p, lv=lv: p.upper_2d[lv], (2,)) for lv in levels} if parts else {},
    )
    at_frame: dict[int, tuple[Posterior3D, int]] = {}
    for posterior, row, _, frame in sources:
        if frame is not None:
            at_frame.setdefault(frame, (posterior, row))
    frames = sorted(at_frame)
    J = len(channels.keypoints)
    mean = np.stack([at_frame[f][0].mean[at_frame[f][1]] for f in frames]) if frames else np.zeros((0, J, 3))
    std = np.stack([at_frame[f][0].std[at_frame[f][1]] for f in frames]) if frames else np.zeros((0, J, 3))
    return reprojected, np.asarray(frames, dtype=np.int64), mean, std


def _posteriors_at_images(
    run: Run,
    image_keys: Sequence[str],
    levels: Sequence[float],
    network: torch.nn.Module | None,
    context: int,
    calibrated: bool,
) -> tuple[ViewChannels, list[tuple[Posterior3D, int, int, int | None]]]:
    """Per key: ``(3D posterior, its row, the key's image of the frame, the project's labeled frame)``.

    The labeled frame is None for a video frame that is not a labeled image of the project.
    See :func:`image_posteriors3d`.
    """
    from dgp_pyro.data.windows import video_frame_of_image

    project = run.project()
    model = PosteriorModel3D.from_run(run, calibrated=calibrated)
    channels = model.channels
    network = run.network() if network is None else network
    sessions = session_videos(project) if project.sessions else []
    where = {
        video: (session, image)
        for session in sessions
        for image, video in enumerate(channels.image_sources(session.videos))
    }
    samples = project.network_samples()
    index_of = {key: i for i, key in enumerate(samples.image_keys)}
    windows: dict[tuple[str, int], tuple[Posterior3D, int]] = {}
    rows: list[tuple[tuple[str, int] | int, int, int | None]] = []  # (window or frame, image, frame)
    single_frames: list[int] = []
    for key in image_keys:
        labeled = int(samples.frame_index[index_of[key]]) if key in index_of else None
        found = video_frame_of_image(key, list(where))
        if found is not None and found[1] < where[found[0]][0].n_frames:
            video, frame = found
            session, image = where[video]
            if (session.name, frame) not in windows:
                start, stop = max(0, frame - context), min(session.n_frames, frame + context + 1)
                posterior = videos_posterior3d(run, session.videos, levels, network, start, stop, model=model)
                windows[(session.name, frame)] = (posterior, frame - start)
            rows.append(((session.name, frame), image, labeled))
            continue
        if labeled is None:
            raise DGPError(
                f"image {key!r} is neither a frame of a session video nor a labeled image of the project",
                project.root,
                hint="a 3D run scores the project's labeled images",
            )
        if labeled not in single_frames:
            single_frames.append(labeled)
        rows.append((labeled, channels.image[int(samples.view_index[index_of[key]])], labeled))
    singles = _labeled_frame_posteriors(run, project, model, network, single_frames, levels)
    sources = []
    for source, image, labeled in rows:
        posterior, row = windows[source] if isinstance(source, tuple) else (singles[source], 0)
        sources.append((posterior, row, image, labeled))
    return channels, sources


def _labeled_frame_posteriors(
    run: Run,
    project,
    model: PosteriorModel3D,
    network: torch.nn.Module,
    frames: Sequence[int],
    levels: Sequence[float],
) -> dict[int, Posterior3D]:
    """The single-frame 3D posterior of labeled frames ``frames`` from every view's labeled image.

    All images go through the network in one batch; a view without an image of the frame
    (folders layout) observes nothing.
    """
    from dgp_pyro.data.dataset import image_size
    from dgp_pyro.posterior.predict import predict_images

    channels = model.channels
    wanted = []  # (frame, image, path)
    for frame in frames:
        for image, path in enumerate(channels.image_sources(project.image_paths[frame])):
            if path is None:
                continue
            size = tuple(image_size(path))
            for v in channels.views_of_image(image):
                camera = model.group.cameras[v] if model.group is not None else None
                if camera is not None and tuple(camera.size) != size:
                    raise DGPError(
                        f"image {Path(path).name} is {size[0]}x{size[1]} but camera {camera.name!r} was "
                        f"calibrated at {camera.size[0]}x{camera.size[1]}",
                        path,
                        hint="use the calibration made for these images (same resolution and crop)",
                    )
            wanted.append((frame, image, path))
    predicted = predict_images(network, [path for _, _, path in wanted], run.size)
    row_of = {(frame, image): r for r, (frame, image, _) in enumerate(wanted)}
    K = len(channels.channels)
    out = {}
    for frame in frames:
        per_image = []
        for image in range(channels.num_images):
            r = row_of.get((frame, image))
            if r is None:
                per_image.append(NetworkSummaries.empty(1, K))
            else:
                per_image.append(
                    NetworkSummaries(
                        predicted.mean[[r]], predicted.cov[[r]], predicted.confidence[[r]], np.array([frame])
                    )
                )
        mean, cov, confidence = model.summaries_of(per_image)
        confidence = np.nan_to_num(confidence, nan=0.0)
        out[frame] = model.posterior(mean, cov, confidence, np.array([frame]), levels)
    return out


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


def interval_coverage3d(posterior: Posterior3D, truth: Float[np.ndarray, "t j 3"]) -> dict[str, float]:
    """Share of true coordinates inside each 3D credible interval (x, y, z counted separately)."""
    return interval_coverage(posterior, truth)  # the 2D rule holds for any coordinate count
