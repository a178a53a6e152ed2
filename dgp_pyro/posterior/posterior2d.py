r"""2D keypoint posteriors of a trained run: over whole videos, windows of them, or labeled images.

After training, the posterior over every frame of a video is the structured guide run over
the whole sequence (:func:`~dgp_pyro.model.dgp.guide_observations`, then the exact Gaussian
chain smoother :func:`~dgp_pyro.ops.keypoint_chain.smooth_keypoints`): the network streams
the video in batches and leaves a Gaussian summary per frame and keypoint, and the smoother
combines them with the temporal and skeletal potentials in :math:`O(T)` time and memory.

For the ``supervised`` variant the potentials are off and the posterior of each keypoint is
the Gaussian form of its heatmap (soft-argmax mean and spread): the intervals that model can
honestly give, so calibration is compared on equal terms.

Coordinates: the run's model works in training pixels (frames resized to the training size);
this module converts the network summaries into them and the posterior back into each frame's
own pixels, :math:`x_0 = (x + \tfrac12) f - \tfrac12` per axis with :math:`f` the resize factor.

The posterior's container is :class:`~dgp_pyro.posterior.marginals.KeypointPosterior`; its
recalibration on held-out labels, :func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dgp_pyro.data.dataset import image_size
from dgp_pyro.data.video import video_info
from dgp_pyro.data.windows import video_frame_of_image
from dgp_pyro.model.dgp import (
    ModelSettings,
    SecondModes,
    guide_observations,
)
from dgp_pyro.model.options import DEFAULT_OPTIONS, model_settings
from dgp_pyro.model.potentials import PRIOR_RIDGE, PotentialWeights
from dgp_pyro.model.registry import is_3d
from dgp_pyro.model.structured_guide import GuideCorrection, potential_arguments
from dgp_pyro.ops.keypoint_chain import smooth_keypoints
from dgp_pyro.posterior.calibration_file import interval_scales, variance_scale
from dgp_pyro.posterior.interval_fit import interval_widening
from dgp_pyro.posterior.labeled3d import image_posteriors3d
from dgp_pyro.posterior.marginals import DEFAULT_LEVELS, KeypointPosterior, check_finite_posterior
from dgp_pyro.posterior.predict import NetworkSummaries, predict_images, predict_video
from dgp_pyro.run.folder import Run

__all__ = ["PosteriorModel", "image_posteriors", "video_posterior"]


@dataclass
class PosteriorModel:
    """What turns heatmap summaries into a posterior: the model settings and the fitted guide."""

    settings: ModelSettings
    weights: PotentialWeights
    correction: GuideCorrection
    size: tuple[int, int]
    #: factor on the posterior variances, fitted on held-out labels
    #: (:func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`)
    variance_scale: float = 1.0
    #: per-level factors on the interval half-widths, fitted likewise (empty: ``sqrt(variance_scale)``)
    interval_scales: dict[float, float] = field(default_factory=dict)

    @classmethod
    def from_run(cls, run: Run, calibrated: bool = True) -> PosteriorModel:
        """The run's posterior model; ``calibrated``: with its fitted variance scale, if any."""
        config = run.config
        options = {**DEFAULT_OPTIONS, **config.model_options}
        settings = model_settings(config, options)
        keypoints = len(config.keypoints)
        state = run.checkpoint()
        saved = state.get("potential_weights", {})
        if "offset" in saved:  # a learned skeleton: per-axis weights and mean offsets
            weights = PotentialWeights(
                torch.ones(keypoints), torch.ones_like(saved["log_skeletal"]), skeletal_offset=saved["offset"]
            )
        else:
            weights = PotentialWeights(torch.ones(keypoints), torch.ones(len(settings.edges)))
        correction = GuideCorrection(keypoints)
        if "potential_weights" in state:
            weights.load_state_dict(state["potential_weights"])
            correction.load_state_dict(state["guide_correction"])
        return cls(
            settings,
            weights,
            correction,
            tuple(config.size),
            variance_scale(run, calibrated),
            interval_scales(run, calibrated),
        )

    @torch.no_grad()
    def posterior(
        self,
        summaries: NetworkSummaries,
        frame_size: tuple[int, int],
        levels: Sequence[float] = DEFAULT_LEVELS,
    ) -> KeypointPosterior:
        """The posterior over consecutive frames given their network summaries (frame pixels).

        Rows of ``summaries`` must be consecutive frames of one video (for the temporal
        potential); for unrelated images use a variant without it or one row at a time. Where
        ``summaries.second`` holds the heatmaps' second modes, a robust model lets each heatmap's
        two modes share it (:mod:`dgp_pyro.model.outliers`).
        """
        factor = np.array([frame_size[0] / self.size[0], frame_size[1] / self.size[1]])

        def training_pixels(s: NetworkSummaries) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.from_numpy((s.mean + 0.5) / factor - 0.5), torch.from_numpy(
                s.cov / (factor[:, None] * factor[None, :])
            )

        mean, cov = training_pixels(summaries)
        second = None
        if summaries.second is not None and self.settings.robust:
            second_mean, second_cov = training_pixels(summaries.second)
            second = SecondModes(
                second_mean,
                second_cov,
                torch.from_numpy(summaries.second.confidence),
                torch.from_numpy(summaries.confidence),
            )
        obs_mean, obs_precision = guide_observations(
            self.settings, self.weights, self.correction, mean, cov, second=second
        )
        smoothed = smooth_keypoints(
            obs_mean,
            obs_precision,
            *potential_arguments(self.settings, self.weights),
            levels=tuple(levels),
            ridge=PRIOR_RIDGE,
        )
        scale = factor[:, None] * factor[None, :]
        mean = smoothed["mean"].numpy()
        # intervals are mean +/- z std: widen the deviation
        widen = interval_widening(self.interval_scales, self.variance_scale, levels)

        def bound(value: torch.Tensor, level: float) -> np.ndarray:
            return (mean + (value.numpy() - mean) * widen[float(level)] + 0.5) * factor - 0.5

        return KeypointPosterior(
            mean=(mean + 0.5) * factor - 0.5,
            cov=smoothed["cov"].numpy() * scale * self.variance_scale,
            confidence=summaries.confidence,
            frame_index=summaries.frame_index,
            lower={lv: bound(v, lv) for lv, v in smoothed["lower"].items()},
            upper={lv: bound(v, lv) for lv, v in smoothed["upper"].items()},
        )


def video_posterior(
    run: Run,
    video: str | Path,
    levels: Sequence[float] = DEFAULT_LEVELS,
    network: torch.nn.Module | None = None,
    start: int = 0,
    stop: int | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> KeypointPosterior:
    """The posterior over frames ``start .. stop - 1`` of a video (default: all), streamed."""
    network = run.network() if network is None else network
    model = PosteriorModel.from_run(run)
    summaries = predict_video(
        network,
        video,
        run.size,
        batch_size=batch_size,
        start=start,
        stop=stop,
        progress=progress,
        second_mode=model.settings.robust,
    )
    info = video_info(video)
    posterior = model.posterior(summaries, (info["width"], info["height"]), levels)
    check_finite_posterior(posterior, run, video)
    return posterior


def image_posteriors(
    run: Run,
    image_paths: Sequence[str | Path],
    image_keys: Sequence[str],
    levels: Sequence[float] = DEFAULT_LEVELS,
    network: torch.nn.Module | None = None,
    context: int = 16,
    calibrated: bool = True,
) -> KeypointPosterior:
    """Posteriors at labeled images: in their video context where it exists, else image by image.

    A labeled image that was extracted from one of the project's videos (DeepLabCut naming,
    :func:`~dgp_pyro.data.windows.video_frame_of_image`) gets the posterior of its frame given
    ``context`` frames on each side, so the temporal potential is used at test time as in the
    product; an image without a video gets the single-frame posterior (skeleton only). A 3D run
    gives the reprojection of its 3D posterior (:func:`~dgp_pyro.posterior.labeled3d.image_posteriors3d`).
    """
    network = run.network() if network is None else network
    if is_3d(run.config.model):
        return image_posteriors3d(run, image_keys, levels, network, context, calibrated)
    model = PosteriorModel.from_run(run, calibrated)
    videos = run.project().videos()
    single = predict_images(network, image_paths, run.size, second_mode=model.settings.robust)
    parts = []
    for row, (path, key) in enumerate(zip(image_paths, image_keys, strict=True)):
        found = video_frame_of_image(key, videos) if model.settings.temporal else None
        if found is not None:
            video, frame = found
            info = video_info(video)
            if frame < info["n_frames"]:
                start, stop = max(0, frame - context), min(info["n_frames"], frame + context + 1)
                summaries = predict_video(
                    network, video, run.size, start=start, stop=stop, second_mode=model.settings.robust
                )
                window = model.posterior(summaries, (info["width"], info["height"]), levels)
                parts.append(window.select(np.array([frame - start])))
                continue
        parts.append(model.posterior(single.select([row]), image_size(path), levels))
    posterior = KeypointPosterior(
        mean=np.concatenate([p.mean for p in parts]),
        cov=np.concatenate([p.cov for p in parts]),
        confidence=np.concatenate([p.confidence for p in parts]),
        frame_index=np.arange(len(parts)),
        lower={lv: np.concatenate([p.lower[lv] for p in parts]) for lv in levels},
        upper={lv: np.concatenate([p.upper[lv] for p in parts]) for lv in levels},
    )
    check_finite_posterior(posterior, run, run.path)
    return posterior
