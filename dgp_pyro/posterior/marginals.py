"""What a keypoint posterior is: marginal means, covariances and credible intervals per frame.

:class:`KeypointPosterior` holds a 2D posterior (per frame and keypoint, in the frames' own
pixels), :class:`Posterior3D` a 3D one (per frame and keypoint, in world units) with its
reprojection into every view. Both carry equal-tailed credible intervals at the chosen levels
(:data:`DEFAULT_LEVELS`; interval columns are tagged by :func:`level_tag`). What every posterior
shares lives here too: the Gaussian intervals (:func:`gaussian_intervals`), their coverage
(:func:`interval_coverage`) and the check that refuses a non-finite posterior before anything is
written (:func:`check_finite_posterior`). The models that compute them are
:mod:`dgp_pyro.posterior.posterior2d` and :mod:`dgp_pyro.posterior.posterior3d`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist

import numpy as np
from jaxtyping import Float

from dgp_pyro.errors import DGPError
from dgp_pyro.model.views3d import ViewChannels
from dgp_pyro.posterior.predict import NetworkSummaries
from dgp_pyro.run.folder import Run

__all__ = [
    "DEFAULT_LEVELS",
    "KeypointPosterior",
    "Posterior3D",
    "check_finite_posterior",
    "gaussian_intervals",
    "interval_coverage",
    "interval_coverage3d",
    "level_tag",
]

#: Credible levels reported by default.
DEFAULT_LEVELS = (0.5, 0.9, 0.95)


@dataclass
class KeypointPosterior:
    """Marginal posterior per frame and keypoint, in the frames' own pixels.

    Attributes:
        mean: ``(T, K, 2)`` posterior mean.
        cov: ``(T, K, 2, 2)`` marginal covariance.
        confidence: ``(T, K)`` the heatmap's peak probability (DeepLabCut's likelihood).
        lower, upper: ``{level: (T, K, 2)}`` equal-tailed credible interval bounds.
        frame_index: ``(T,)`` frame numbers.
    """

    mean: Float[np.ndarray, "t k 2"]
    cov: Float[np.ndarray, "t k 2 2"]
    confidence: Float[np.ndarray, "t k"]
    frame_index: np.ndarray
    lower: dict[float, np.ndarray] = field(default_factory=dict)
    upper: dict[float, np.ndarray] = field(default_factory=dict)

    @property
    def std(self) -> Float[np.ndarray, "t k 2"]:
        return np.sqrt(np.stack([self.cov[..., 0, 0], self.cov[..., 1, 1]], axis=-1))

    def as_summaries(self) -> NetworkSummaries:
        return NetworkSummaries(self.mean, self.cov, self.confidence, self.frame_index)

    def interval_columns(self) -> dict[str, np.ndarray]:
        """Extra prediction-file columns: ``x_lo90``, ``x_hi90``, ``y_lo90``, ... per level."""
        columns = {}
        for level in sorted(self.lower):
            tag = level_tag(level)
            for axis, name in enumerate("xy"):
                columns[f"{name}_lo{tag}"] = self.lower[level][..., axis]
                columns[f"{name}_hi{tag}"] = self.upper[level][..., axis]
        return columns

    def select(self, rows: np.ndarray) -> KeypointPosterior:
        return KeypointPosterior(
            self.mean[rows],
            self.cov[rows],
            self.confidence[rows],
            self.frame_index[rows],
            {lv: v[rows] for lv, v in self.lower.items()},
            {lv: v[rows] for lv, v in self.upper.items()},
        )


def level_tag(level: float) -> str:
    """``0.9 -> "90"``, ``0.975 -> "97.5"``: the suffix of interval columns."""
    return f"{level * 100:g}"


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


def gaussian_intervals(
    mean: np.ndarray, std: np.ndarray, levels: Sequence[float], widening: dict[float, float]
) -> tuple[dict, dict]:
    """Equal-tailed Gaussian intervals ``(lower, upper)``, ``{level: mean -/+ z_p k_p std}``.

    ``std``: the smoother's (before recalibration); ``widening[level]``: :math:`k_p` of
    :func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`
    (:func:`~dgp_pyro.posterior.interval_fit.interval_widening`).

    Raises:
        ValueError: a level outside (0, 1).
    """
    lower, upper = {}, {}
    for level in levels:
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"credible levels must be in (0, 1); got {level}")
        half = NormalDist().inv_cdf(0.5 + float(level) / 2.0) * widening[float(level)] * std
        lower[level], upper[level] = mean - half, mean + half
    return lower, upper


def check_finite_posterior(posterior: KeypointPosterior | Posterior3D, run: Run, source: str | Path) -> None:
    """Refuse a posterior with NaN or infinite values, so none is ever written to disk.

    Checks the mean, the covariance and the heatmap confidence of every frame. The smoother
    treats a non-finite network output as a missing observation, so a network that gives NaN
    (a damaged checkpoint) would otherwise yield a finite posterior that is the prior alone;
    its confidence, carried through from the heatmaps, still shows it.

    Raises:
        DGPError: naming ``source`` (a video, or the run for labeled images), how many frames
            are affected and the first of them.
    """
    arrays = (posterior.mean, posterior.cov, posterior.confidence)
    rows = len(posterior.frame_index)
    bad = ~np.all([np.isfinite(a.reshape(rows, -1)).all(1) for a in arrays], axis=0)
    if bad.any():
        frames = np.asarray(posterior.frame_index)[bad]
        raise DGPError(
            f"the posterior or the heatmaps it comes from are not finite at {len(frames)} of {rows} "
            f"frames (first: frame {int(frames[0])}), so nothing was written",
            source,
            hint=f"the run's checkpoint may be damaged: retrain, or resume from a snapshot in "
            f"{run.path / 'checkpoints'}",
        )


def interval_coverage(posterior: KeypointPosterior, truth: Float[np.ndarray, "t k 2"]) -> dict[str, float]:
    """Share of true coordinates inside each credible interval (x and y counted separately)."""
    finite = np.isfinite(truth)
    out = {}
    for level in sorted(posterior.lower):
        inside = (truth >= posterior.lower[level]) & (truth <= posterior.upper[level])
        out[f"coverage_{level_tag(level)}"] = float(inside[finite].mean()) if finite.any() else float("nan")
    return out


def interval_coverage3d(posterior: Posterior3D, truth: Float[np.ndarray, "t j 3"]) -> dict[str, float]:
    """Share of true coordinates inside each 3D credible interval (x, y, z counted separately)."""
    return interval_coverage(posterior, truth)  # the 2D rule holds for any coordinate count
