r"""Deep Graph Pose as a Pyro model, and its structured guide.

Generative story of one training step (a batch of labeled images and a batch of windows of
consecutive video frames, all through one shared heatmap network :math:`h_\theta`):

1. **Labeled images.** Each labeled keypoint is explained by the network's heatmap through the
   neural potential at the label, :math:`\exp(-\phi_n(y^{\mathrm{label}}, x))`: the labels are
   exact here (the :math:`\sigma_{\mathrm{label}} \to 0` limit), which is the DeepLabCut
   heatmap loss. Missing labels add nothing. This is all the ``supervised`` variant has.
2. **Windows of video frames** (variants ``temporal``, ``skeletal``, ``dgp``). For each window of
   :math:`T` frames the latent keypoints :math:`y \in \mathbb{R}^{T \times J \times 2}` are drawn
   from the Gaussian Markov random field of the temporal and skeletal potentials,

   .. math:: y \sim \mathcal{N}(0, \Lambda_{\mathrm{prior}}^{-1}), \qquad
       \tfrac12 y^\top \Lambda_{\mathrm{prior}} y = \sum_{t,j} \phi_t + \sum_{t,(i,j)} \phi_s
       + \tfrac{\epsilon}{2} \|y\|^2,

   the heatmaps of every frame score them, ``pyro.factor("neural", -sum phi_n(y, x))``, and any
   labels in the window observe them with a small noise,
   :math:`y^{\mathrm{label}}_{tj} \sim \mathcal{N}(y_{tj}, \sigma_{\mathrm{label}}^2 I)` (masked
   where missing, so partially labeled frames need no special case).

The **structured guide** mirrors step 2: :math:`q(y)` is the exact posterior of the model with
the neural potential replaced by its Gaussian form (soft-argmax mean :math:`\mu` and spread
:math:`\Sigma` of the same heatmaps) - a Kalman smoother - corrected by learned per-keypoint
precision scales :math:`s_j` and offsets :math:`b_j`:

.. math:: q(y) \propto \exp\Big(-\tfrac12 y^\top \Lambda_{\mathrm{prior}} y
    - \tfrac12 \sum_{t,j} (y_{tj} - \mu_{tj} - b_j)^\top s_j \Sigma_{tj}^{-1} (y_{tj} - \mu_{tj} - b_j)
    - \tfrac{1}{2 \sigma_{\mathrm{label}}^2} \sum_{\mathrm{labeled}}
    \|y_{tj} - y^{\mathrm{label}}_{tj}\|^2\Big)

Its precision is block tridiagonal in time, so sampling and its density cost O(T)
(:mod:`dgp_pyro.ops.gaussian_chain`). The network's heatmaps are computed once per step
outside the model and handed to both functions (``logits``), so the network runs once; the
guide reads them detached, and the network learns only through the model's potentials. The
guide's corrections, its chain and its sample site are shared with the 3D model
(:mod:`dgp_pyro.model.structured_guide`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from dgp_pyro.model.outliers import mode_responsibilities, second_mode_share
from dgp_pyro.model.potentials import PRIOR_RIDGE, NeuralPotential, PotentialWeights, keypoint_prior
from dgp_pyro.model.structured_guide import (
    GuideCorrection,
    guide_chain,
    potential_arguments,
    sample_windows,
    window_plate,
)
from dgp_pyro.nets import heatmap_loss, second_mode, soft_argmax
from dgp_pyro.ops.block_tridiagonal import BlockTridiagonalGaussian

#: The 2D model variants, each a set of switches of the same model function.
VARIANTS = {
    "supervised": {"temporal": False, "skeletal": False},
    "temporal": {"temporal": True, "skeletal": False},
    "skeletal": {"temporal": False, "skeletal": True},
    "dgp": {"temporal": True, "skeletal": True},
}


@dataclass(frozen=True)
class SecondModes:
    """Each heatmap's second mode (:func:`~dgp_pyro.nets.heatmaps.second_mode`) beside its first.

    ``mean (..., T, K, 2)`` and ``cov (..., T, K, 2, 2)`` in the same pixels as the first mode's,
    ``confidence (..., T, K)`` its peak height (NaN or 0 where there is none) and
    ``first_confidence`` the first mode's.
    """

    mean: Tensor
    cov: Tensor
    confidence: Tensor
    first_confidence: Tensor


@dataclass
class ModelSettings:
    """What a variant switches on, and the fixed scales of the potentials."""

    variant: str
    stride: int
    heatmap_sigma: float
    edges: list[tuple[int, int]] = field(default_factory=list)
    label_sigma: float = 1.0
    #: weight of the unlabeled windows' (per keypoint and frame) ELBO against the labeled loss
    unlabeled_weight: float = 1.0
    #: weight of the empty-map loss of keypoints absent from a labeled image (:func:`heatmap_loss`)
    absent_weight: float = 0.0
    #: probability that a heatmap is an outlier (0: the plain Gaussian form; see
    #: :mod:`dgp_pyro.model.outliers`); needs ``image_size``
    outlier_prob: float = 0.0
    #: ``(W, H)`` of the training images, the area an outlier lands in
    image_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {sorted(VARIANTS)}")
        if not 0.0 <= self.outlier_prob < 1.0:
            raise ValueError(f"outlier_prob must be in [0, 1), got {self.outlier_prob}")
        if self.outlier_prob > 0 and self.image_size is None:
            raise ValueError("outlier_prob needs the image_size the outliers land in")

    @property
    def temporal(self) -> bool:
        return VARIANTS[self.variant]["temporal"]

    @property
    def skeletal(self) -> bool:
        return VARIANTS[self.variant]["skeletal"] and bool(self.edges)

    @property
    def uses_windows(self) -> bool:
        return self.temporal or self.skeletal

    @property
    def robust(self) -> bool:
        """Whether heatmaps get outlier responsibilities (only where a potential can overrule them)."""
        return self.outlier_prob > 0 and self.uses_windows


@dataclass
class LabeledBatch:
    """Labeled images (the network's logits of them) with their labels."""

    logits: Float[Tensor, "batch keypoints h w"]
    labels: Float[Tensor, "batch keypoints 2"]
    mask: Bool[Tensor, "batch keypoints"]


@dataclass
class WindowBatch:
    """Windows of consecutive frames: the network's logits and any labels inside them."""

    logits: Float[Tensor, "windows time keypoints h w"]
    labels: Float[Tensor, "windows time keypoints 2"]
    mask: Bool[Tensor, "windows time keypoints"]


def _window_prior(settings: ModelSettings, weights: PotentialWeights, time: int, keypoints: int):
    return keypoint_prior(time, keypoints, 2, *potential_arguments(settings, weights))


def _fill_missing(labels: Tensor, mask: Tensor) -> Tensor:
    # NaNs in an observed value leak into gradients through the mask: replace them first.
    return torch.where(mask[..., None], labels, torch.zeros_like(labels))


def labeled_heatmap_factor(labeled: LabeledBatch, stride: int, sigma: float, absent_weight: float) -> None:
    """The labeled images' term of every model: ``pyro.factor`` of minus the heatmap loss.

    The loss is DeepLabCut's (:func:`~dgp_pyro.nets.heatmap_loss`), averaged over the labeled
    keypoints, with the absent keypoints' empty-map term at ``absent_weight``.
    """
    loss = heatmap_loss(
        labeled.logits, labeled.labels, stride, sigma, labeled.mask, absent_weight=absent_weight
    )
    pyro.factor("labeled_heatmaps", -loss)


def dgp_model(
    network: nn.Module,
    settings: ModelSettings,
    weights: PotentialWeights,
    correction: GuideCorrection | None = None,
    labeled: LabeledBatch | None = None,
    windows: WindowBatch | None = None,
) -> None:
    """The Deep Graph Pose model for one training step (see the module docstring).

    ``correction`` belongs to the guide; the model takes it only so both share one signature.
    """
    pyro.module("network", network)
    pyro.module("potential_weights", weights)
    neural = NeuralPotential(settings.stride, settings.heatmap_sigma)
    if labeled is not None:
        labeled_heatmap_factor(labeled, settings.stride, settings.heatmap_sigma, settings.absent_weight)
    if windows is None or not settings.uses_windows:
        return
    num_windows, time, keypoints = windows.mask.shape
    prior = _window_prior(settings, weights, time, keypoints)
    # Per keypoint and frame, so that the windows weigh like the (averaged) labeled loss.
    scale = settings.unlabeled_weight / (time * keypoints)
    with window_plate(num_windows, scale):
        y = pyro.sample("keypoints", prior.expand([num_windows]))  # (windows, time, keypoints, 2)
        flat_logits = windows.logits.flatten(0, 1)
        energy = neural.energy(flat_logits, y.reshape(num_windows * time, keypoints, 2).to(flat_logits.dtype))
        pyro.factor("neural", -energy.reshape(num_windows, time * keypoints).sum(-1).to(y.dtype))
        label_noise = dist.Normal(y, settings.label_sigma).mask(windows.mask[..., None]).to_event(3)
        pyro.sample("labels", label_noise, obs=_fill_missing(windows.labels, windows.mask).to(y.dtype))


def guide_observations(
    settings: ModelSettings,
    weights: PotentialWeights,
    correction: GuideCorrection,
    mean: Float[Tensor, "... frames keypoints 2"],
    cov: Float[Tensor, "... frames keypoints 2 2"],
    labels: Float[Tensor, "... frames keypoints 2"] | None = None,
    mask: Bool[Tensor, "... frames keypoints"] | None = None,
    second: SecondModes | None = None,
) -> tuple[Tensor, Tensor]:
    """The guide's pseudo-observations: corrected Gaussian form of the heatmaps, plus the labels.

    Returns the mean ``(..., T, K, 2)`` and precision ``(..., T, K, 2, 2)`` of one Gaussian
    observation per keypoint and frame (float64). A heatmap and a label of the same keypoint
    are two Gaussian observations of it, so their precisions add. With ``settings.robust`` each
    heatmap's precision is first scaled by its inlier responsibility; with ``second`` (each
    heatmap's second mode) the heatmap is the mode with the larger responsibility, its
    precision scaled by both modes' (:func:`~dgp_pyro.model.outliers.mode_responsibilities`,
    not differentiated).
    """
    dtype = torch.float64
    raw_mean, raw_cov = mean.to(dtype), cov.to(dtype)
    mean, precision = correction.correct(raw_mean, torch.linalg.inv(raw_cov))
    information = (precision @ mean[..., None])[..., 0]
    has_labels = labels is not None and mask is not None and bool(mask.any())
    label_precision = label_information = None
    if has_labels:
        eye = torch.eye(2, dtype=dtype, device=mean.device)
        label_precision = mask.to(dtype)[..., None, None] * eye / settings.label_sigma**2
        label_information = (label_precision @ _fill_missing(labels, mask).to(dtype)[..., None])[..., 0]
    if settings.robust:
        mean2 = precision2 = share = None
        if second is not None:
            share = second_mode_share(second.first_confidence, second.confidence)
            usable = share > 0  # elsewhere the first mode's spread stands in (no share, no NaN)
            cov2 = torch.where(usable[..., None, None], second.cov.to(dtype), raw_cov)
            mean2, precision2 = correction.correct(
                torch.where(usable[..., None], second.mean.to(dtype), raw_mean), torch.linalg.inv(cov2)
            )
        modes = mode_responsibilities(
            mean,
            precision,
            label_precision,
            label_information,
            potential_arguments(settings, weights),
            settings.outlier_prob,
            settings.image_size,
            ridge=PRIOR_RIDGE,
            second_mean=mean2,
            second_precision=precision2,
            second_share=share,
        ).to(precision)
        if second is not None:  # one peak, not a blend that would sit between two blobs
            use_second = modes[..., 1] > modes[..., 0]
            mean = torch.where(use_second[..., None], mean2, mean)
            precision = torch.where(use_second[..., None, None], precision2, precision)
        precision = modes.sum(-1)[..., None, None] * precision
        information = (precision @ mean[..., None])[..., 0]
    if not has_labels:
        return mean, precision
    combined = precision + label_precision
    return torch.linalg.solve(combined, (information + label_information)[..., None])[..., 0], combined


def guide_from_summaries(
    settings: ModelSettings,
    weights: PotentialWeights,
    correction: GuideCorrection,
    mean: Float[Tensor, "... frames keypoints 2"],
    cov: Float[Tensor, "... frames keypoints 2 2"],
    labels: Float[Tensor, "... frames keypoints 2"] | None = None,
    mask: Bool[Tensor, "... frames keypoints"] | None = None,
    second: SecondModes | None = None,
) -> BlockTridiagonalGaussian:
    """q(y) over runs of consecutive frames from heatmap summaries (soft-argmax mean and spread,
    and the second modes where given).

    Leading dimensions are windows (a batch of independent chains).
    """
    obs_mean, obs_precision = guide_observations(
        settings, weights, correction, mean, cov, labels, mask, second=second
    )
    return guide_chain(obs_mean, obs_precision, potential_arguments(settings, weights), keypoint_dim=2)


def dgp_guide(
    network: nn.Module,
    settings: ModelSettings,
    weights: PotentialWeights,
    correction: GuideCorrection,
    labeled: LabeledBatch | None = None,
    windows: WindowBatch | None = None,
) -> None:
    """The structured guide, mirroring :func:`dgp_model` (labeled images have no latent)."""
    if windows is None or not settings.uses_windows:
        return
    pyro.module("guide_correction", correction)
    num_windows, time, keypoints = windows.mask.shape
    logits = windows.logits.detach().flatten(0, 1)
    summary = soft_argmax(logits, settings.stride)
    second = None
    if settings.robust:  # the same two-mode heatmaps as the posterior's
        other = second_mode(logits, settings.stride)
        second = SecondModes(
            other.mean.reshape(num_windows, time, keypoints, 2),
            other.cov.reshape(num_windows, time, keypoints, 2, 2),
            other.confidence.reshape(num_windows, time, keypoints),
            summary.confidence.reshape(num_windows, time, keypoints),
        )
    q = guide_from_summaries(
        settings,
        weights,
        correction,
        summary.mean.reshape(num_windows, time, keypoints, 2),
        summary.cov.reshape(num_windows, time, keypoints, 2, 2),
        windows.labels,
        windows.mask,
        second,
    )
    sample_windows(q, num_windows, settings.unlabeled_weight / (time * keypoints))
