r"""Whole-session 3D posteriors of a trained run, and their files.

After training, the posterior over every frame of a session is the 3D guide run over the whole
sequence: every video of the session streams through the network once (one per view, or the
one video holding every view in the suffix layout; :func:`~dgp_pyro.posterior.predict.predict_video`,
frame pixels), :class:`~dgp_pyro.model.views3d.ViewChannels` splits its channels into the views,
the per-frame 3D pseudo-observations come from the robust, confidence-weighted,
linearised triangulation of the views' soft-argmax summaries
(:func:`~dgp_pyro.model.pseudo_observations3d.triangulation_observations`, with the run's
learned corrections),
and the exact Gaussian chain smoother combines them with the 3D temporal and skeletal
potentials in :math:`O(T)` (:func:`~dgp_pyro.ops.keypoint_chain.smooth_keypoints`). For
``dgp3d_bones`` the linearised bone terms couple the keypoints of a frame and the chain is
solved with :class:`~dgp_pyro.ops.block_tridiagonal.BlockTridiagonalGaussian`. For a
``supervised`` run (no potentials) the posterior of each frame is its own pseudo-observation:
robust triangulation with a linearised uncertainty.

Per frame and keypoint: the 3D mean, the 3 x 3 marginal covariance, its standard deviations
and equal-tailed credible intervals (marginal Gaussians) at the chosen levels; per view: the
reprojected mean :math:`\pi_v(\mu)` and spread :math:`J_v \Sigma J_v^\top` (the projection
linearised at the mean), with intervals.

The files are written by :mod:`dgp_pyro.posterior.files3d`; the posteriors at a project's labeled
images (to score and calibrate a 3D run) come from :mod:`dgp_pyro.posterior.labeled3d`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float

from dgp_pyro.data.sessions import check_frame_sizes, load_calibration, session_videos, synchronous_videos
from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.camera_group import CameraGroup
from dgp_pyro.model.dgp3d import (
    Model3DSettings,
    PotentialWeights3D,
    corrected_observations,
    guide3d_from_observations,
)
from dgp_pyro.model.options import model_settings3d
from dgp_pyro.model.potentials import PRIOR_RIDGE
from dgp_pyro.model.pseudo_observations3d import triangulation_observations
from dgp_pyro.model.structured_guide import GuideCorrection3D
from dgp_pyro.model.structured_guide import potential_arguments as potential_arguments3d
from dgp_pyro.model.view_modes import select_view_modes
from dgp_pyro.model.views3d import ViewCameras, ViewChannels
from dgp_pyro.ops.keypoint_chain import smooth_keypoints
from dgp_pyro.posterior.calibration_file import calibration3d, interval_scales, variance_scale
from dgp_pyro.posterior.interval_fit import interval_widening
from dgp_pyro.posterior.marginals import (
    DEFAULT_LEVELS,
    Posterior3D,
    check_finite_posterior,
    gaussian_intervals,
)
from dgp_pyro.posterior.predict import NetworkSummaries, predict_video
from dgp_pyro.run.folder import Run

__all__ = ["CHUNK_FRAMES", "PosteriorModel3D", "session_posterior3d", "videos_posterior3d"]

#: Frames per chunk of the pseudo-observations (bounds memory for long videos).
CHUNK_FRAMES = 2048
#: How far a view's heatmap mode may be from the others' triangulated point and still agree, in
#: target widths (``sigma``): the views' reprojections of one part sit within the cameras' and
#: the network's errors (a few pixels), a look-alike part is tens of pixels off
#: (:func:`~dgp_pyro.model.view_modes.select_view_modes`).
AGREE_SIGMAS = 2.0


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
    #: how far (pixels of the summaries) a view's heatmap mode may be from the triangulated
    #: point's reprojection and still agree (:func:`~dgp_pyro.model.view_modes.select_view_modes`);
    #: None: every view's first mode is triangulated
    agree_px: float | None = None

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
        # AGREE_SIGMAS target widths, in the cameras' pixels (the coarsest view's)
        frame_per_training = max(max(c.size[0] / run.size[0], c.size[1] / run.size[1]) for c in group.cameras)
        agree_px = AGREE_SIGMAS * settings.heatmap_sigma * frame_per_training
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
            agree_px,
        )

    def image_videos(self, videos: Sequence[str | Path]) -> list[Path]:
        """A session's videos, one per image of a synchronous frame (:meth:`ViewChannels.image_sources`).

        Takes either those (one per view in the folders layout, the one video holding every view
        in the suffix layout) or a per-view list such as :attr:`~dgp_pyro.data.sessions.SessionVideos.videos`.

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

    def second_modes_of(
        self, per_image: Sequence[NetworkSummaries]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """:meth:`summaries_of` the heatmaps' second modes (None unless every image has them)."""
        if any(s.second is None for s in per_image):
            return None
        mean, cov, confidence = self.summaries_of([s.second for s in per_image])
        return mean, cov, np.nan_to_num(confidence, nan=0.0)

    @torch.no_grad()
    def posterior(
        self,
        mean: Float[np.ndarray, "t v j 2"],
        cov: Float[np.ndarray, "t v j 2 2"],
        confidence: Float[np.ndarray, "t v j"],
        frame_index: np.ndarray | None = None,
        levels: Sequence[float] = DEFAULT_LEVELS,
        second: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    ) -> Posterior3D:
        """The posterior over consecutive synchronous frames from every view's summaries.

        Args:
            mean, cov, confidence: the network's soft-argmax summaries ``(T, V, J, ...)`` (frames
                first, unlike :meth:`~dgp_pyro.geometry.camera_group.CameraGroup.triangulate`) in the
                cameras' pixels, as :func:`~dgp_pyro.posterior.predict.predict_video` gives them
                (not a 2D posterior: its spreads are already smoothed and recalibrated).
            frame_index: ``(T,)`` frame numbers (default ``0..T-1``).
            levels: credible levels.
            second: the same summaries of the heatmaps' second modes (:meth:`second_modes_of`):
                where the views agree on a second mode and not on the first, it is triangulated
                instead (:func:`~dgp_pyro.model.view_modes.select_view_modes`, with ``agree_px``).
        """
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float64))
        cov_t = torch.as_tensor(np.asarray(cov, dtype=np.float64))
        conf_t = torch.as_tensor(np.asarray(confidence, dtype=np.float64))
        T = mean_t.shape[0]
        if mean_t.shape[1] != len(self.cameras):
            raise DGPError(f"summaries of {mean_t.shape[1]} views for {len(self.cameras)} cameras")
        vote = second is not None and self.agree_px is not None
        alternative = [torch.as_tensor(np.asarray(x, dtype=np.float64)) for x in second] if vote else []
        chosen, parts = [], []
        for f in range(0, T, CHUNK_FRAMES):
            chunk = tuple(x[f : f + CHUNK_FRAMES] for x in (mean_t, cov_t, conf_t))
            if vote:
                chunk = select_view_modes(
                    self.cameras,
                    *chunk,
                    *(x[f : f + CHUNK_FRAMES] for x in alternative),
                    agree_px=self.agree_px,
                    robust=self.settings.robust,
                    iterations=self.settings.gauss_newton,
                )[:3]
            chosen.append(chunk)
            parts.append(
                triangulation_observations(
                    self.cameras, *chunk, robust=self.settings.robust, iterations=self.settings.gauss_newton
                )
            )
        mean_t, cov_t, conf_t = (torch.cat(list(x)) for x in zip(*chosen, strict=True))
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
        lower, upper = gaussian_intervals(mean_np, std, levels, widening_3d)
        lower_2d, upper_2d = gaussian_intervals(mean_2d, std_2d, levels, widening)
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
            network,
            video,
            run.size,
            batch_size=batch_size,
            start=start,
            stop=stop,
            progress=progress,
            second_mode=model.agree_px is not None,
        )
        for video in videos
    ]
    mean, cov, confidence = model.summaries_of(per_image)
    second = model.second_modes_of(per_image)
    posterior = model.posterior(mean, cov, confidence, per_image[0].frame_index, levels, second)
    check_finite_posterior(posterior, run, videos[0])
    return posterior
