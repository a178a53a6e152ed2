r"""Heatmaps that can be wrong: the Gaussian form mixed with a uniform outlier.

A network sometimes puts a confident peak on the wrong blob for a frame or two (the other paw,
the tail for the head). Under the Gaussian form of the neural potential such a peak is a tight
observation, and the posterior follows it. Here each heatmap observation :math:`\mu_{tj}` (the
soft-argmax mean, precision :math:`P_{tj} = \Sigma_{tj}^{-1}` after the guide's correction) is
an inlier or an outlier,

.. math::
    p(\mu_{tj} \mid y_{tj}) = (1 - \pi)\, \mathcal{N}(\mu_{tj} \mid y_{tj}, \Sigma_{tj})
    + \pi\, p_A(\mu_{tj}),

with :math:`\pi` the outlier probability and :math:`p_A` "anywhere in the image": the Gaussian
of the uniform distribution's mean and spread, centre :math:`c_A`, precision
:math:`\Lambda_A = \mathrm{diag}(12 / W^2, 12 / H^2)` for a :math:`W \times H` image, seen through
the heatmap's spread, :math:`p_A(\mu) = \mathcal{N}(\mu \mid c_A, \Lambda_A^{-1} + \Sigma)`.
The guide stays a Gaussian chain: each heatmap's precision is multiplied by its inlier
responsibility :math:`r_{tj}`, the probability that it is an inlier given every *other*
observation and the temporal and skeletal potentials,

.. math::
    r_{tj} = \frac{(1 - \pi)\, \mathcal{N}(\mu_{tj} \mid m^{\setminus}_{tj},
        C^{\setminus}_{tj} + \Sigma_{tj})}
    {(1 - \pi)\, \mathcal{N}(\mu_{tj} \mid m^{\setminus}_{tj}, C^{\setminus}_{tj} + \Sigma_{tj})
        + \pi\, p_A(\mu_{tj})},

where :math:`(m^{\setminus}, C^{\setminus})` is the cavity marginal of :math:`y_{tj}`: the
smoothed marginal :math:`(m, C)` with this observation's own term removed and the image's
spread put in its place, :math:`\Lambda^{\setminus} = C^{-1} - r P + \Lambda_A`,
:math:`\Lambda^{\setminus} m^{\setminus} = C^{-1} m - r P \mu + \Lambda_A c_A`. The cavity is
what makes a confident wrong peak lose: it cannot vote for itself (mean-field responsibilities,
computed from the marginal that already includes the peak, keep it once it has pulled the
posterior over). A keypoint that no potential constrains has the image as its cavity, so both
hypotheses explain its peak equally and :math:`r = 1 - \pi`: the prior's odds, no verdict.
Responsibilities and smoothing alternate from :math:`r = 1` (each pass is one :math:`O(T)`
smoothing), each pass moving the responsibilities half-way to their new values,
:math:`r \leftarrow \tfrac12 r + \tfrac12 r^{\text{new}}`, until no responsibility moves by
more than :data:`TOLERANCE` (at most ``iterations`` passes). The half steps are what make the
passes converge: two confident heatmaps that disagree across a strong potential (the two views
of a mirrored paw, one of them on the other paw) each judge the other, and undamped updates
flip both between inlier and outlier on every pass, so the posterior depended on whether the
number of passes was odd or even. Damping is the usual cure for such oscillations of
expectation propagation's fixed-point updates; the fixed points are the same. Measured on the
DeepLabCut benchmark's mirror split with a learned skeleton (two seeds' ``dgp`` networks,
held-out mean error): 7.73 / 8.29 px with 4 undamped passes, 7.52 / 7.73 with 5, and
7.49 / 7.90 damped, unchanged from 24 passes on (7.41 / 7.79 after 8: not yet converged).

**A second mode** (:func:`mode_responsibilities`). A look-alike part often gives the heatmap
two peaks, the stronger on the wrong part (the far paw found on the near one), and the Gaussian
form keeps only the stronger. Given the heatmap's second mode (:func:`~dgp_pyro.nets.heatmaps.
second_mode`: mean :math:`\mu'`, spread :math:`\Sigma'`, peak height :math:`c'`), the inlier
splits between the two modes in proportion to their peak heights,
:math:`(1 - \pi)\,[\omega\, \mathcal{N}(\mu \mid y, \Sigma) + (1 - \omega)\,
\mathcal{N}(\mu' \mid y, \Sigma')]` with :math:`\omega = c / (c + c')`, and each mode gets its
own responsibility :math:`r, r'` from the same cavity (both modes' terms removed; the passes
smooth with both, precision :math:`r P + r' P'`). The guide's observation is then the mode with
the larger responsibility, with precision :math:`(r + r')` times its own: a blend of the two
would sit between two blobs.
Where the skeleton or the neighbouring frames say the keypoint is at the second peak, that
peak takes over; where nothing constrains the keypoint, the stronger peak keeps it. A second
mode lower than :data:`~dgp_pyro.nets.heatmaps.MIN_SECOND_PEAK` (a tail of the first bump) is
not used. This is the 2D counterpart of the 3D views' vote (:mod:`dgp_pyro.model.view_modes`).
The second modes act wherever a posterior is computed (prediction, calibration, evaluation,
:mod:`dgp_pyro.posterior.posterior2d`) and in the training windows' guide. Retrained with them in
the guide too, seeds 0 and 2 gave 6.68 and 6.91 px.
Measured on the DeepLabCut benchmark's mirror split (three seeds' ``dgp`` runs with the skeleton
learned from the labels, each trained with one mode and predicted with one and with two;
held-out mean error): 7.40 -> 6.90, 7.90 -> 6.82 and 7.59 -> 6.92 px (``supervised``: 10.04,
9.00, 8.92 px); blending the two modes by their responsibilities instead of keeping one gave
6.88, 6.92 and 7.00 px.

Symbols: :math:`t` frame, :math:`j` keypoint, :math:`\mu, \Sigma` heatmap mean and spread,
:math:`P` its precision, :math:`\pi` outlier probability, :math:`W, H` image size,
:math:`r` inlier responsibility, :math:`(m, C)` smoothed marginal, :math:`\setminus` cavity.

Labels are trusted: only the heatmaps get responsibilities.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from dgp_pyro.nets.heatmaps import MIN_SECOND_PEAK
from dgp_pyro.ops.keypoint_chain import smooth_keypoints

__all__ = [
    "DAMPING",
    "DEFAULT_OUTLIER_ITERATIONS",
    "TOLERANCE",
    "inlier_responsibilities",
    "mode_responsibilities",
    "second_mode_share",
]

#: At most this many alternations of responsibilities and smoothing (the damped updates settle
#: within about 20 on real video; each is one smoothing pass).
DEFAULT_OUTLIER_ITERATIONS = 30
#: Share of the way each pass moves the responsibilities towards their new values.
DAMPING = 0.5
#: The passes stop once no responsibility moves by more than this.
TOLERANCE = 1e-3
#: The smallest responsibility: an outlier's heatmap keeps this share of its precision.
MIN_INLIER = 1e-4


def second_mode_share(
    confidence: Float[Tensor, "..."],
    second_confidence: Float[Tensor, "..."],
    min_second: float = MIN_SECOND_PEAK,
) -> Float[Tensor, "..."]:
    r"""The second mode's share :math:`1 - \omega = c' / (c + c')` of the inlier; 0 below ``min_second``."""
    second = torch.nan_to_num(second_confidence.to(torch.float64), nan=0.0)
    second = torch.where(second >= min_second, second, torch.zeros_like(second))
    total = confidence.to(torch.float64) + second
    return torch.where(total > 0, second / total.clamp_min(1e-300), torch.zeros_like(total))


def inlier_responsibilities(
    heatmap_mean: Float[Tensor, "... T J 2"],
    heatmap_precision: Float[Tensor, "... T J 2 2"],
    extra_precision: Float[Tensor, "... T J 2 2"] | None,
    extra_information: Float[Tensor, "... T J 2"] | None,
    potential_args: tuple,
    outlier_prob: float,
    image_size: tuple[int, int],
    ridge: float,
    iterations: int = DEFAULT_OUTLIER_ITERATIONS,
) -> Float[Tensor, "... T J"]:
    """The inlier responsibilities :math:`r_{tj}` of one-mode heatmaps (:func:`mode_responsibilities`)."""
    return mode_responsibilities(
        heatmap_mean,
        heatmap_precision,
        extra_precision,
        extra_information,
        potential_args,
        outlier_prob,
        image_size,
        ridge,
        iterations,
    )[..., 0]


@torch.no_grad()
def mode_responsibilities(
    heatmap_mean: Float[Tensor, "... T J 2"],
    heatmap_precision: Float[Tensor, "... T J 2 2"],
    extra_precision: Float[Tensor, "... T J 2 2"] | None,
    extra_information: Float[Tensor, "... T J 2"] | None,
    potential_args: tuple,
    outlier_prob: float,
    image_size: tuple[int, int],
    ridge: float,
    iterations: int = DEFAULT_OUTLIER_ITERATIONS,
    second_mean: Float[Tensor, "... T J 2"] | None = None,
    second_precision: Float[Tensor, "... T J 2 2"] | None = None,
    second_share: Float[Tensor, "... T J"] | None = None,
) -> Float[Tensor, "... T J 2"]:
    r"""The responsibilities :math:`(r_{tj}, r'_{tj})` of each heatmap's two modes (module docstring).

    Args:
        heatmap_mean, heatmap_precision: the (corrected) Gaussian form of each heatmap.
        extra_precision, extra_information: trusted observations of the same keypoints (the
            labels): precision :math:`L` and information :math:`L y^{\mathrm{label}}`; ``None``: none.
        potential_args: the temporal weights, skeleton edges and skeletal weights
            (:func:`~dgp_pyro.model.structured_guide.potential_arguments`).
        outlier_prob: :math:`\pi` in ``(0, 1)``.
        image_size: ``(W, H)`` of the image the coordinates are in.
        ridge: the prior ridge of the smoother.
        iterations: alternations of responsibilities and smoothing.
        second_mean, second_precision, second_share: each heatmap's second mode (corrected as
            the first) and its share :math:`1 - \omega` of the inlier
            (:func:`second_mode_share`; 0 where there is none). ``None``: one mode, so
            :math:`r' = 0` and :math:`r` is the inlier responsibility.

    Returns:
        ``(..., T, J, 2)``: :math:`r` and :math:`r'`, with :math:`r + r' \le 1` (the rest is the
        outlier's) and :math:`r \ge` :data:`MIN_INLIER`.
    """
    dtype = torch.float64
    mean = heatmap_mean.to(dtype)
    precision = heatmap_precision.to(dtype)
    if second_share is None:
        share = torch.zeros(mean.shape[:-1], dtype=dtype, device=mean.device)
        mean2, precision2 = mean, precision
    else:  # an unusable second mode stands in as the first, with no share
        share = second_share.to(dtype)
        usable = (
            (share > 0) & torch.isfinite(second_mean).all(-1) & torch.isfinite(second_precision).all((-1, -2))
        )
        share = torch.where(usable, share, torch.zeros_like(share))
        mean2 = torch.where(usable[..., None], second_mean.to(dtype), mean)
        precision2 = torch.where(usable[..., None, None], second_precision.to(dtype), precision)
    information = (precision @ mean[..., None])[..., 0]
    information2 = (precision2 @ mean2[..., None])[..., 0]
    width, height = float(image_size[0]), float(image_size[1])
    like = {"dtype": dtype, "device": mean.device}
    image_precision = torch.diag(torch.tensor([12.0 / width**2, 12.0 / height**2], **like))
    image_information = image_precision @ torch.tensor([(width - 1) / 2, (height - 1) / 2], **like)
    image_cov = torch.linalg.inv(image_precision)
    image_centre = image_cov @ image_information
    log_inlier_prior = math.log1p(-outlier_prob)
    log_first_weight = torch.log1p(-share)
    log_second_weight = torch.where(share > 0, torch.log(share.clamp_min(1e-300)), -torch.inf)
    heatmap_cov, second_cov = torch.linalg.inv(precision), torch.linalg.inv(precision2)
    log_outlier = math.log(outlier_prob) + _log_normal(mean, image_centre, image_cov + heatmap_cov)
    first = torch.ones(mean.shape[:-1], **like)
    second = torch.zeros_like(first)
    for _ in range(iterations):
        weighted = first[..., None, None] * precision + second[..., None, None] * precision2
        weighted_information = first[..., None] * information + second[..., None] * information2
        total, total_information = weighted, weighted_information
        if extra_precision is not None:
            total = total + extra_precision.to(dtype)
            total_information = total_information + extra_information.to(dtype)
        obs_mean = torch.linalg.solve(total, total_information[..., None])[..., 0]
        smoothed = smooth_keypoints(obs_mean, total, *potential_args, levels=(), ridge=ridge)
        posterior_precision = torch.linalg.inv(smoothed["cov"])
        posterior_information = (posterior_precision @ smoothed["mean"][..., None])[..., 0]
        cavity_precision = posterior_precision - weighted + image_precision
        cavity_precision = 0.5 * (cavity_precision + cavity_precision.mT)
        cavity_information = posterior_information - weighted_information + image_information
        cavity_mean = torch.linalg.solve(cavity_precision, cavity_information[..., None])[..., 0]
        cavity_cov = torch.linalg.inv(cavity_precision)
        log_first = (
            log_inlier_prior + log_first_weight + _log_normal(mean, cavity_mean, cavity_cov + heatmap_cov)
        )
        log_second = (
            log_inlier_prior + log_second_weight + _log_normal(mean2, cavity_mean, cavity_cov + second_cov)
        )
        log_total = torch.logsumexp(torch.stack([log_first, log_second, log_outlier]), 0)
        # at least a trace of the heatmap stays, so the chain never loses a keypoint altogether
        new_first = torch.exp(log_first - log_total).clamp_min(MIN_INLIER)
        new_second = torch.exp(log_second - log_total)
        step_first, step_second = DAMPING * (new_first - first), DAMPING * (new_second - second)
        first, second = first + step_first, second + step_second
        if max(float(step_first.abs().max()), float(step_second.abs().max())) <= TOLERANCE * DAMPING:
            break
    return torch.stack([first, second], -1)


def _log_normal(x: Tensor, mean: Tensor, cov: Tensor) -> Tensor:
    residual = x - mean
    mahalanobis = (residual[..., None, :] @ torch.linalg.solve(cov, residual[..., None]))[..., 0, 0]
    return -0.5 * mahalanobis - 0.5 * torch.logdet(2 * math.pi * cov)
