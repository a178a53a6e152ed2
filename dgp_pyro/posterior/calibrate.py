"""Recalibrate a run's posterior on its held-out labels after training.

:func:`calibrate_posterior` fits the factors that every later posterior of the run reads
(:mod:`dgp_pyro.posterior.calibration_file`) and writes them to ``RUN/posterior_calibration.json``;
:func:`~dgp_pyro.posterior.fit.fit_run` calls it at the end of training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float

from dgp_pyro.atomic import atomic_write_json
from dgp_pyro.data.sessions import load_calibration, triangulate_labels
from dgp_pyro.model.registry import is_3d
from dgp_pyro.posterior.calibration_file import POSTERIOR_CALIBRATION
from dgp_pyro.posterior.held_out import held_out_images
from dgp_pyro.posterior.interval_fit import (
    coverage_curve,
    fit_interval_scales,
    fit_variance_scale,
    leave_one_out_coverage,
)
from dgp_pyro.posterior.labeled3d import labeled_posteriors3d
from dgp_pyro.posterior.marginals import DEFAULT_LEVELS
from dgp_pyro.posterior.posterior2d import image_posteriors
from dgp_pyro.run.folder import Run

__all__ = ["calibrate_posterior"]


def calibrate_posterior(run: Run, levels: Sequence[float] = DEFAULT_LEVELS) -> dict | None:
    """Fit the run's posterior variance scale on its held-out labels; write and return it.

    Heatmap spreads are not calibrated errors: the soft-argmax covariance is the width of the
    heatmap's bump, and a smoother treats frames as independent although a network's errors
    persist for many frames. So after training, the posterior intervals at the held-out labeled
    frames (in their video context, exactly as ``predict`` computes them) are matched to those
    labels by one factor on all variances (:func:`~dgp_pyro.posterior.interval_fit.fit_variance_scale`,
    what the reported standard deviations and covariances carry) and by one factor per level on
    the interval widths (split conformal, :func:`~dgp_pyro.posterior.interval_fit.fit_interval_scales`,
    since heavy-tailed errors need wider 95 % intervals than one Gaussian scale gives; other
    levels interpolate), written to ``RUN/posterior_calibration.json`` and used by every later
    posterior of the run. Means are unchanged. Returns ``None`` (and writes nothing) without held-out labels.
    A 3D run's 3D posterior gets a variance scale and interval factors of its own
    (``variance_scale_3d``, ``interval_scales_3d``), fitted in 3D on the held-out labels
    triangulated (:func:`_calibrate_3d`); the ones above serve its reprojected 2D intervals.
    """
    held = held_out_images(run)
    if not len(held) or not np.isfinite(held.labels).any():
        return None
    in_3d = {}
    if is_3d(run.config.model):
        posterior, frames, mean_3d, std_3d = labeled_posteriors3d(run, held.keys, levels, calibrated=False)
        in_3d = _calibrate_3d(run, frames, mean_3d, std_3d, levels)
    else:
        posterior = image_posteriors(run, held.paths, held.keys, levels, calibrated=False)
    scale, n = fit_variance_scale(posterior.mean, posterior.std, held.labels, levels)
    scales, _ = fit_interval_scales(posterior.mean, posterior.std, held.labels, levels)
    _, before, _ = coverage_curve(posterior, held.labels, levels)
    _, after, _ = coverage_curve((posterior.mean, posterior.std * np.sqrt(scale)), held.labels, levels)
    # the views of one frame leave together: their errors share the frame's causes
    out_of_sample, standard_error, _ = leave_one_out_coverage(
        posterior.mean, posterior.std, held.labels, levels, groups=held.frames
    )
    info = {
        "variance_scale": scale,
        "interval_scales": {str(level): k for level, k in scales.items()},
        "n_coordinates": n,
        "n_images": len(held),
        "n_frames": len(np.unique(held.frames)),
        "levels": [float(lv) for lv in levels],
        "coverage_before": [float(c) for c in before],
        "coverage_after": [float(c) for c in after],
        # what new frames can expect: each held-out frame scored by intervals fitted on the others,
        # and how sure that is (few frames that disagree: large)
        "coverage_leave_one_out": {str(level): c for level, c in out_of_sample.items()},
        "coverage_leave_one_out_se": {str(level): se for level, se in standard_error.items()},
        **in_3d,
    }
    atomic_write_json(run.path / POSTERIOR_CALIBRATION, info)
    return info


def _calibrate_3d(
    run: Run,
    frames: np.ndarray,
    mean: Float[np.ndarray, "f j 3"],
    std: Float[np.ndarray, "f j 3"],
    levels: Sequence[float],
) -> dict:
    """:func:`calibrate_posterior`'s fit for the 3D posterior (``mean``, uncalibrated ``std`` at the
    held-out labeled ``frames``) of a 3D run; empty without a keypoint labeled in two views.

    The 3D intervals are fitted in 3D, on the held-out labels triangulated (the keypoints labeled
    in two views or more of a held-out frame) against the 3D posterior at those frames; fitting
    them through the reprojected 2D intervals instead left the 50 % intervals 0.02 to 0.03 too
    wide on the synthetic rig (``calibration_sampling`` of bench_dgp3d_accuracy), since the
    reprojection's error shape is not the 3D one. Triangulated labels carry the labeling noise,
    small against the posterior's spread for careful labels.
    """
    project = run.project()
    group = load_calibration(project, run.config.model_options.get("calibration"))
    truth = triangulate_labels(project, group, frames)  # NaN where fewer than two views are labeled
    scale, n = fit_variance_scale(mean, std, truth, levels)
    if n == 0:
        return {}
    scales, _ = fit_interval_scales(mean, std, truth, levels)
    out_of_sample, standard_error, _ = leave_one_out_coverage(mean, std, truth, levels)
    return {
        "variance_scale_3d": scale,
        "interval_scales_3d": {str(level): k for level, k in scales.items()},
        "n_coordinates_3d": n,
        "coverage_leave_one_out_3d": {str(level): c for level, c in out_of_sample.items()},
        "coverage_leave_one_out_3d_se": {str(level): se for level, se in standard_error.items()},
    }
