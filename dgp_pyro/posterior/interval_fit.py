r"""Calibration of Gaussian keypoint posteriors: empirical coverage of credible intervals.

For every coordinate (x and y counted separately) with a true value, the equal-tailed
interval at level :math:`p` of a Gaussian marginal :math:`N(m, s^2)` is
:math:`m \pm z_{(1+p)/2}\, s`; its coverage is the share of true values inside. A calibrated
posterior covers a fraction :math:`p` of them at every level, up to binomial error
:math:`\sqrt{p(1-p)/n}`.

The binomial error treats the :math:`n` coordinates as independent. x and y of one point, and
the keypoints of one image, are not quite, so the real uncertainty of a coverage is somewhat
larger and :func:`calibration_note` errs on the side of flagging.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from jaxtyping import Float
from scipy.stats import norm

from dgp_pyro.posterior.marginals import KeypointPosterior

__all__ = [
    "DEFAULT_CURVE_LEVELS",
    "coverage_curve",
    "calibration_note",
    "fit_interval_scales",
    "fit_variance_scale",
    "interpolate_interval_scales",
    "interval_widening",
    "leave_one_out_coverage",
    "LOO_SE_WARNING",
]

#: A leave-one-frame-out coverage with a standard error above this is too unsure to trust: the
#: held-out frames disagree and are too few (about 0.08 at 50 % with four frames of a 3-camera
#: synthetic project, measured by bench_dgp3d_accuracy's ``calibration_sampling``).
LOO_SE_WARNING = 0.05

#: Levels of a calibration curve by default: 5 %, 10 %, ..., 95 %.
DEFAULT_CURVE_LEVELS = np.linspace(0.05, 0.95, 19)


def _normalised_errors(mean: np.ndarray, std: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """:math:`|t - m| / s` of the coordinates that can be scored (truth, mean and a positive finite std)."""
    mean, std, truth = (np.asarray(a, dtype=np.float64) for a in (mean, std, truth))
    ok = np.isfinite(truth) & np.isfinite(mean) & np.isfinite(std) & (std > 0)
    return np.abs(truth[ok] - mean[ok]) / std[ok]


def coverage_curve(
    posterior: KeypointPosterior | tuple[np.ndarray, np.ndarray],
    truth: Float[np.ndarray, "... 2"],
    levels: Sequence[float] | np.ndarray = DEFAULT_CURVE_LEVELS,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Coverage of equal-tailed Gaussian credible intervals at each level.

    Args:
        posterior: a :class:`~dgp_pyro.posterior.marginals.KeypointPosterior` (its marginal
            mean and standard deviation are used) or a tuple ``(mean, std)`` of arrays shaped
            like ``truth``.
        truth: true coordinates, e.g. ``(T, K, 2)``; NaN = no truth.
        levels: nominal levels, each strictly between 0 and 1.

    Returns:
        ``(levels (L,), coverage (L,), n)``: ``n`` is the number of coordinates scored (truth,
        mean and a positive finite std all present); coverage is NaN when ``n == 0``.
    """
    if isinstance(posterior, tuple):
        mean, std = posterior
    else:
        mean, std = posterior.mean, posterior.std
    mean = np.asarray(mean, dtype=np.float64)
    std = np.asarray(std, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if mean.shape != truth.shape or std.shape != truth.shape:
        raise ValueError(f"mean {mean.shape}, std {std.shape} and truth {truth.shape} must have one shape")
    levels = np.asarray(levels, dtype=np.float64).ravel()
    if np.any(~((levels > 0) & (levels < 1))):
        raise ValueError("levels must lie strictly between 0 and 1 (0.9 is 90 %)")
    z = _normalised_errors(mean, std, truth)
    n = int(z.size)
    if n == 0:
        return levels, np.full(levels.shape, np.nan), 0
    half = norm.ppf(0.5 + levels / 2.0)
    coverage = (z[None, :] <= half[:, None]).mean(axis=1)
    return levels, coverage, n


def fit_variance_scale(
    mean: Float[np.ndarray, "... 2"],
    std: Float[np.ndarray, "... 2"],
    truth: Float[np.ndarray, "... 2"],
    levels: Sequence[float] = (0.5, 0.9, 0.95),
) -> tuple[float, int]:
    r"""The factor :math:`c` on posterior variances that best calibrates intervals on held-out truth.

    Recalibration on a validation set (as temperature scaling is for classifiers): the
    intervals :math:`m \pm z_{(1+p)/2} \sqrt{c}\, s` should cover a share :math:`p` of the
    held-out coordinates at each level; :math:`c` minimises
    :math:`\sum_p (\mathrm{coverage}_p(c) - p)^2` over a fine grid of :math:`\log c` (the middle
    of the best interval of :math:`c`, since coverage is a step function of :math:`c`). A least-
    squares match of the coverages rather than a likelihood fit, because keypoint errors are
    heavy-tailed: a variance fitted by maximum likelihood follows the few large errors and
    leaves the 50 % interval far too wide.

    Returns:
        ``(c, n)``: ``c = 1`` when no coordinate has a truth (``n = 0``).
    """
    z = _normalised_errors(mean, std, truth)
    n = int(z.size)
    if n == 0:
        return 1.0, 0
    levels = np.asarray(levels, dtype=np.float64)
    half = norm.ppf(0.5 + levels / 2.0)
    log_c = np.linspace(-8.0, 8.0, 3201)
    root_c = np.exp(0.5 * log_c)
    # coverage[c, level] = share of z <= half * sqrt(c)
    sorted_z = np.sort(z)
    coverage = np.searchsorted(sorted_z, half[None, :] * root_c[:, None], side="right") / n
    loss = ((coverage - levels[None, :]) ** 2).sum(axis=1)
    best = np.flatnonzero(loss <= loss.min() + 1e-12)
    return float(np.exp(0.5 * (log_c[best[0]] + log_c[best[-1]]))), n


def fit_interval_scales(
    mean: Float[np.ndarray, "... 2"],
    std: Float[np.ndarray, "... 2"],
    truth: Float[np.ndarray, "... 2"],
    levels: Sequence[float] = (0.5, 0.9, 0.95),
) -> tuple[dict[float, float], int]:
    r"""Per-level interval widths from held-out truth (split conformal), as factors on :math:`s`.

    With :math:`z_i = |t_i - m_i| / s_i` on :math:`n` held-out coordinates, the interval at
    level :math:`p` becomes :math:`m \pm k_p\, z_{(1+p)/2}\, s` with
    :math:`k_p z_{(1+p)/2}` the :math:`\lceil (n+1) p \rceil`-th smallest :math:`z`: split
    conformal prediction, which covers a new coordinate exchangeable with the held-out ones
    with probability at least :math:`p` (and less than :math:`p + 1/(n+1)`), whatever the
    shape of the errors. Keypoint errors are heavy-tailed, so one factor on the variance
    (:func:`fit_variance_scale`) cannot be right at 50 % and at 95 % at once; a factor per level
    can. A level that needs more coordinates than there are (:math:`\lceil (n+1) p \rceil > n`)
    is left out, and so is every level when no coordinate has a truth.

    Returns:
        ``({level: k_p}, n)``.
    """
    z = np.sort(_normalised_errors(mean, std, truth))
    n = int(z.size)
    scales = {}
    for level in levels:
        rank = int(np.ceil((n + 1) * float(level)))
        if 1 <= rank <= n and z[rank - 1] > 0:
            scales[float(level)] = float(z[rank - 1] / norm.ppf(0.5 + float(level) / 2.0))
    return scales, n


def interpolate_interval_scales(
    scales: dict[float, float], levels: Sequence[float], default: float
) -> dict[float, float]:
    """:math:`k_p` at any ``levels``: linear in :math:`p` between fitted levels, constant past them.

    ``default`` (the square root of the fitted variance scale, or 1) where nothing was fitted.
    """
    if not scales:
        return {float(level): float(default) for level in levels}
    known = sorted(scales)
    values = [scales[level] for level in known]
    return {float(level): float(np.interp(float(level), known, values)) for level in levels}


def interval_widening(
    interval_scales: dict[float, float], variance_scale: float, levels: Sequence[float]
) -> dict[float, float]:
    r""":math:`k_p` per level: how much wider than the smoother's Gaussian each interval is.

    The fitted per-level factors, interpolated; :math:`\sqrt{c}` of the variance scale where
    none was fitted.
    """
    return interpolate_interval_scales(interval_scales, levels, np.sqrt(variance_scale))


def leave_one_out_coverage(
    mean: Float[np.ndarray, "n ... 2"],
    std: Float[np.ndarray, "n ... 2"],
    truth: Float[np.ndarray, "n ... 2"],
    levels: Sequence[float] = (0.5, 0.9, 0.95),
    groups: Sequence[int] | np.ndarray | None = None,
) -> tuple[dict[float, float], dict[float, float], int]:
    r"""Out-of-sample coverage of the recalibrated intervals, leaving one frame out at a time.

    Recalibration fits the interval widths to the held-out labels, so their coverage after it
    is right by construction and says nothing about new frames. Here every group :math:`g`
    of images (``groups``, one label per image along the first axis: the frame, so that the
    views of one synchronous frame leave together; default one group per image) gets the
    intervals of the whole procedure fitted on the other groups only
    (:func:`fit_variance_scale`, :func:`fit_interval_scales`, then
    :func:`interpolate_interval_scales` as the posterior does): half-width
    :math:`k^{(-g)}_p z_{(1+p)/2} s`, with ``std`` the uncalibrated posterior standard deviation.
    The share of its true coordinates inside, pooled over groups, estimates what frames like
    the held-out ones will get. (Keypoints of one frame share their errors' causes, hence one
    frame at a time rather than one coordinate.)

    Its standard error is the cluster-robust one over the :math:`G` groups, with
    :math:`k_g` of the :math:`n_g` coordinates of group :math:`g` inside and :math:`\hat c`
    the pooled coverage:

    .. math:: \mathrm{se} = \frac{1}{\sum_g n_g}\sqrt{\frac{G}{G-1}\sum_g (k_g - \hat c\, n_g)^2}

    It is large when the frames disagree (a hard frame and an easy one), which is what makes a
    coverage fitted on few frames uncertain; a user with a large one should hold out more frames.

    Returns:
        ``({level: coverage}, {level: standard error}, n)``: ``n`` coordinates with a truth; no
        levels when fewer than two groups have one.
    """
    mean, std, truth = (np.asarray(a, dtype=np.float64) for a in (mean, std, truth))
    group_of = np.arange(len(mean)) if groups is None else np.asarray(groups)
    if group_of.shape != (len(mean),):
        raise ValueError(f"groups has shape {group_of.shape}, expected one label per image ({len(mean)},)")
    labels = np.unique(group_of)
    per_group = [
        _normalised_errors(mean[group_of == g], std[group_of == g], truth[group_of == g]) for g in labels
    ]
    n = sum(z.size for z in per_group)
    scored = [i for i, z in enumerate(per_group) if z.size]
    if len(scored) < 2:
        return {}, {}, n
    levels = [float(level) for level in levels]
    inside = {level: np.zeros(len(scored)) for level in levels}
    counts = np.array([per_group[i].size for i in scored], dtype=np.float64)
    for row, i in enumerate(scored):
        rest = group_of != labels[i]
        scale, _ = fit_variance_scale(mean[rest], std[rest], truth[rest], levels)
        fitted, _ = fit_interval_scales(mean[rest], std[rest], truth[rest], levels)
        widening = interpolate_interval_scales(fitted, levels, np.sqrt(scale))
        for level in levels:
            inside[level][row] = (per_group[i] <= widening[level] * norm.ppf(0.5 + level / 2.0)).sum()
    G = len(scored)
    coverage, standard_error = {}, {}
    for level, k in inside.items():
        pooled = float(k.sum() / counts.sum())
        coverage[level] = pooled
        standard_error[level] = float(
            np.sqrt(G / (G - 1) * ((k - pooled * counts) ** 2).sum()) / counts.sum()
        )
    return coverage, standard_error, n


def calibration_note(
    levels: Sequence[float] | np.ndarray,
    coverage: Sequence[float] | np.ndarray,
    n: int,
    z: float | None = None,
) -> str:
    """One line: over-confident, under-confident, calibrated (or mixed), from a coverage curve.

    A level is off when its coverage differs from nominal by more than ``z`` binomial standard
    errors :math:`\\sqrt{p(1-p)/n}`. ``z`` defaults to the two-sided Bonferroni bound for a 5 %
    family-wise error over the levels (about 3.0 for 19 levels, 2.4 for 3), so a calibrated
    posterior is called calibrated 95 % of the time.

    Returns:
        a sentence starting with ``"over-confident"``, ``"under-confident"``, ``"mixed"``,
        ``"calibrated"`` or ``"no truth"``.
    """
    levels = np.asarray(levels, dtype=np.float64).ravel()
    coverage = np.asarray(coverage, dtype=np.float64).ravel()
    if levels.shape != coverage.shape:
        raise ValueError(f"{levels.size} levels but {coverage.size} coverages")
    if n <= 0 or levels.size == 0 or not np.isfinite(coverage).any():
        return "no truth: no coordinates to assess calibration on"
    if z is None:
        z = float(norm.ppf(1.0 - 0.05 / (2.0 * levels.size)))
    se = np.sqrt(levels * (1.0 - levels) / n)
    dev = (coverage - levels) / se
    below = np.isfinite(dev) & (dev < -z)
    above = np.isfinite(dev) & (dev > z)

    def example(mask: np.ndarray) -> str:
        i = int(np.argmax(np.abs(np.where(mask, dev, 0.0))))
        return (
            f"{levels[i] * 100:g}% intervals cover {coverage[i] * 100:.1f}% "
            f"(expected {levels[i] * 100:g}% +/- {z * se[i] * 100:.1f}%)"
        )

    count = f"of {levels.size} levels, n={n} coordinates"
    if below.any() and above.any():
        return (
            f"mixed: coverage below nominal at {below.sum()} and above at {above.sum()} {count}; "
            f"e.g. {example(below)} and {example(above)}"
        )
    if below.any():
        return (
            f"over-confident: coverage below nominal beyond binomial error at {below.sum()} {count}; "
            f"e.g. {example(below)}; the intervals are too narrow"
        )
    if above.any():
        return (
            f"under-confident: coverage above nominal beyond binomial error at {above.sum()} {count}; "
            f"e.g. {example(above)}; the intervals are too wide"
        )
    return f"calibrated: coverage within {z:.2g} binomial standard errors of nominal at every level ({count})"
