"""A run's posterior recalibration, ``RUN/posterior_calibration.json``: its name and its readers.

:func:`~dgp_pyro.posterior.calibrate.calibrate_posterior` fits it on the run's held-out labels
after training; every later posterior of the run reads it here: the factor on the variances
(:func:`variance_scale`), the per-level factors on the interval widths (:func:`interval_scales`),
a 3D run's own pair for its 3D posterior (:func:`calibration3d`), and the coverage each held-out
frame got from intervals fitted on the others (:func:`out_of_sample_coverage`).
"""

from __future__ import annotations

import json

from dgp_pyro.run.folder import Run

__all__ = [
    "POSTERIOR_CALIBRATION",
    "calibration3d",
    "interval_scales",
    "out_of_sample_coverage",
    "read_calibration",
    "variance_scale",
]

#: The run's posterior recalibration on its held-out labels
#: (:func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`).
POSTERIOR_CALIBRATION = "posterior_calibration.json"


def read_calibration(run: Run, calibrated: bool = True) -> dict:
    """The run's fitted calibration (empty without one, or if not ``calibrated``)."""
    path = run.path / POSTERIOR_CALIBRATION
    return json.loads(path.read_text()) if calibrated and path.is_file() else {}


def variance_scale(run: Run, calibrated: bool = True) -> float:
    """The run's fitted factor on posterior variances (1 without a calibration or if not ``calibrated``)."""
    return float(read_calibration(run, calibrated).get("variance_scale", 1.0))


def interval_scales(run: Run, calibrated: bool = True) -> dict[float, float]:
    """The run's per-level interval factors :math:`k_p` (empty without calibration or not ``calibrated``)."""
    fitted = read_calibration(run, calibrated).get("interval_scales", {})
    return {float(level): float(k) for level, k in fitted.items()}


def calibration3d(run: Run, calibrated: bool = True) -> tuple[float, dict[float, float]] | None:
    """A 3D run's variance scale and per-level interval factors for its 3D posterior, if fitted.

    Fitted by :func:`~dgp_pyro.posterior.calibrate.calibrate_posterior` on the held-out labels
    triangulated; None without (not ``calibrated``, a 2D run, or no held-out keypoint labeled in two views).
    """
    info = read_calibration(run, calibrated)
    if "variance_scale_3d" not in info:
        return None
    scales = {float(level): float(k) for level, k in info.get("interval_scales_3d", {}).items()}
    return float(info["variance_scale_3d"]), scales


def out_of_sample_coverage(run: Run, space: str = "2d") -> dict[float, tuple[float, float | None]]:
    """Coverage per level of the run's recalibrated intervals, leaving one held-out frame out at a time.

    ``{level: (coverage, standard error)}`` from
    :func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`
    (:func:`~dgp_pyro.posterior.interval_fit.leave_one_out_coverage`): of the 2D intervals against the
    held-out labels (``space="2d"``; a 3D run's reprojected ones), or of a 3D run's 3D intervals
    against the held-out labels triangulated (``"3d"``). The standard error is None for runs
    calibrated before it was recorded (they also left one image out, not one frame); empty for
    a run without a calibration.
    """
    info = read_calibration(run, calibrated=True)
    suffix = {"2d": "", "3d": "_3d"}[space]
    fitted = info.get(f"coverage_leave_one_out{suffix}", {})
    errors = info.get(f"coverage_leave_one_out{suffix}_se", {})
    return {
        float(level): (float(c), None if errors.get(level) is None else float(errors[level]))
        for level, c in fitted.items()
    }
