r"""The potentials of Deep Graph Pose, one class each, with the equation each one adds.

The joint density over the latent keypoints :math:`y` of a window of frames given the video is

.. math::

    p(y \mid x, \beta) = \frac{1}{Z} \exp\Big( - \sum_{t,j} \phi_n(y_{tj}, x_t)
        - \sum_{t,j} \phi_t(y_{tj}, y_{t+1,j}) - \sum_{t,(i,j) \in E} \phi_s(y_{ti}, y_{tj}) \Big)

Symbols:

=================  ==========================================================
:math:`y_{tj}`     keypoint :math:`j` in frame :math:`t` (pixels of the network input), shape ``(T, J, d)``
:math:`w_t^j`      temporal weight of keypoint :math:`j` (1 / pixels squared)
:math:`w_s^{ij}`   skeletal weight of edge :math:`(i, j)` (or one per axis, :math:`w_{s,a}^{ij}`)
:math:`o^{ij}`     mean offset :math:`y_i - y_j` of edge :math:`(i, j)` (zero in the original model)
:math:`E`          skeleton edges
:math:`h(x_t)`     heatmap logits of frame :math:`t`
:math:`\mu, \Sigma`  soft-argmax mean and covariance of a heatmap
=================  ==========================================================

The temporal and skeletal potentials are quadratic, so together they are a Gaussian Markov
random field whose precision is block tridiagonal in time; :func:`keypoint_prior` turns them
into that Gaussian (with a tiny ridge that makes it proper, so its normaliser exists and the
weights can be learned). :class:`PotentialWeights` holds the weights, fixed or learned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor, nn

from dgp_pyro.nets import heatmap_potential
from dgp_pyro.nets.heatmaps import SoftArgmax
from dgp_pyro.ops.block_tridiagonal import BlockTridiagonalGaussian
from dgp_pyro.ops.keypoint_chain import build_chain_precision

#: Ridge added to the prior precision: it only pins the otherwise free global translation
#: (a prior standard deviation of about 30 000 pixels around the origin), so it never competes
#: with the data: even a keypoint whose heatmap is nearly flat (spread ~100 px) moves by less
#: than 0.01 px. Float64 handles the resulting condition number easily.
PRIOR_RIDGE = 1e-9


@dataclass
class TemporalPotential:
    r"""Gaussian random walk per keypoint: :math:`\phi_t = \tfrac12 w_t^j \|y_{t+1,j} - y_{t,j}\|^2`."""

    weight: Float[Tensor, " keypoints"]

    def energy(self, y: Float[Tensor, "... time keypoints dim"]) -> Float[Tensor, "..."]:
        step = y[..., 1:, :, :] - y[..., :-1, :, :]
        return 0.5 * (self.weight[:, None] * step.pow(2)).sum(dim=(-3, -2, -1))


@dataclass
class SkeletalPotential:
    r"""Quadratic soft constraint on each edge: :math:`\phi_s = \tfrac12 w_s^{ij} \|y_{t,i} - y_{t,j}\|^2`.

    With ``offset`` (a skeleton learned from the labels, :mod:`dgp_pyro.model.learned_skeleton`)
    each edge holds its mean offset, axis by axis:
    :math:`\phi_s = \tfrac12 \sum_a w_{s,a}^{ij} (y_{t,i,a} - y_{t,j,a} - o^{ij}_a)^2`.
    """

    edges: list[tuple[int, int]]
    weight: Float[Tensor, " edges"] | Float[Tensor, "edges dim"]
    offset: Float[Tensor, "edges dim"] | None = None

    def energy(self, y: Float[Tensor, "... time keypoints dim"]) -> Float[Tensor, "..."]:
        if not self.edges:
            return y.new_zeros(y.shape[:-3])
        first = torch.tensor([i for i, _ in self.edges], device=y.device)
        second = torch.tensor([j for _, j in self.edges], device=y.device)
        limb = y[..., first, :] - y[..., second, :]
        if self.offset is None:
            return 0.5 * (self.weight[:, None] * limb.pow(2)).sum(dim=(-3, -2, -1))
        return 0.5 * (self.weight * (limb - self.offset).pow(2)).sum(dim=(-3, -2, -1))


@dataclass
class NeuralPotential:
    r"""How well the heatmaps agree with keypoints at :math:`y`.

    *Heatmap form* (trains the network): :math:`\phi_n(y, x) = \mathrm{BCE}(\sigma(h(x)), g_y)`
    summed over the heatmap, :math:`g_y` a Gaussian bump of width ``sigma`` centred at :math:`y`.

    *Gaussian form* (builds the guide and the whole-video posterior):
    :math:`\phi_n \approx \tfrac12 (y - \mu)^\top \Sigma^{-1} (y - \mu)` with :math:`\mu, \Sigma`
    the soft-argmax mean and spread of the heatmap.
    """

    stride: int
    sigma: float

    def energy(
        self, logits: Float[Tensor, "frames keypoints h w"], y: Float[Tensor, "... frames keypoints 2"]
    ) -> Float[Tensor, "... frames keypoints"]:
        return heatmap_potential(logits, y, self.stride, self.sigma)

    @staticmethod
    def gaussian_form(summary: SoftArgmax) -> tuple[Tensor, Tensor]:
        """Mean ``(..., K, 2)`` and precision ``(..., K, 2, 2)`` of the Gaussian form."""
        return summary.mean, torch.linalg.inv(summary.cov)


class PotentialWeights(nn.Module):
    """The temporal and skeletal weights, fixed or learned (kept positive through their logs).

    ``skeletal`` is ``(E,)`` for the original skeletal potential; a learned skeleton has a weight
    per edge and axis ``(E, d)`` and mean offsets ``skeletal_offset (E, d)`` (a buffer, never fitted).
    """

    def __init__(
        self, temporal: Tensor, skeletal: Tensor, learn: bool = False, skeletal_offset: Tensor | None = None
    ):
        super().__init__()
        if skeletal_offset is not None:
            offset = torch.as_tensor(skeletal_offset, dtype=torch.float64)
            if offset.shape != torch.as_tensor(skeletal).shape or offset.dim() != 2:
                raise ValueError(
                    f"skeletal offsets {tuple(offset.shape)} need skeletal weights of the same (E, d) shape, "
                    f"got {tuple(torch.as_tensor(skeletal).shape)}"
                )
            self.register_buffer("offset", offset.clone())
        self.learn = learn
        log_temporal = torch.as_tensor(temporal, dtype=torch.float64).clamp_min(1e-12).log()
        log_skeletal = torch.as_tensor(skeletal, dtype=torch.float64).clamp_min(1e-12).log()
        if learn:
            self.log_temporal = nn.Parameter(log_temporal)
            self.log_skeletal = nn.Parameter(log_skeletal)
        else:
            self.register_buffer("log_temporal", log_temporal)
            self.register_buffer("log_skeletal", log_skeletal)

    def temporal(self) -> Tensor:
        return self.log_temporal.exp()

    def skeletal(self) -> Tensor:
        return self.log_skeletal.exp()

    def skeletal_offset(self) -> Tensor | None:
        """The learned skeleton's mean offsets ``(E, d)``; ``None`` for the original potential."""
        return getattr(self, "offset", None)


def default_skeletal_weights(
    labels: Float[np.ndarray, "frames keypoints dim"], edges: list[tuple[int, int]], strength: float = 1.0
) -> np.ndarray:
    """``strength`` over the mean squared limb length of each edge in the labeled frames.

    An edge never labeled at both ends gets the median weight of the others (or ``strength``
    over the median squared limb length of all edges, if none is measurable).
    """
    weights = np.full(len(edges), np.nan)
    for k, (i, j) in enumerate(edges):
        squared = np.sum((labels[:, i] - labels[:, j]) ** 2, axis=-1)
        squared = squared[np.isfinite(squared)]
        if squared.size:
            weights[k] = strength / max(float(np.mean(squared)), 1e-6)
    if np.isnan(weights).all():
        return np.full(len(edges), strength / 100.0)
    weights[np.isnan(weights)] = np.nanmedian(weights)
    return weights


def default_temporal_weights(
    trajectory: Float[np.ndarray, "time keypoints dim"],
    confidence: Float[np.ndarray, "time keypoints"] | None = None,
    strength: float = 1.0,
    min_confidence: float = 0.5,
) -> np.ndarray:
    r"""``strength`` over a robust mean squared frame-to-frame step of each keypoint.

    The step size comes from the network's own soft-argmax trajectory over video frames (the
    labeled frames are rarely consecutive), using only steps between two confident frames and
    a median-based estimate (the squared median absolute step divided by its Gaussian value
    :math:`\chi^2_d` median), so a few jumps of a wrong detection do not inflate it.
    """
    step = trajectory[1:] - trajectory[:-1]
    squared = np.sum(step**2, axis=-1)
    if confidence is not None:
        ok = (confidence[1:] >= min_confidence) & (confidence[:-1] >= min_confidence)
        squared = np.where(ok, squared, np.nan)
    dim = trajectory.shape[-1]
    # median of a chi-square with d dof, times the per-axis variance, is the median squared step
    chi2_median = {1: 0.4549, 2: 1.3863, 3: 2.3660}[dim]
    weights = np.empty(trajectory.shape[1])
    for j in range(trajectory.shape[1]):
        values = squared[:, j][np.isfinite(squared[:, j])]
        per_axis_variance = np.median(values) / chi2_median if values.size >= 5 else np.nan
        weights[j] = strength / max(per_axis_variance, 1e-2) if np.isfinite(per_axis_variance) else np.nan
    if np.isnan(weights).all():
        return np.full(trajectory.shape[1], strength)
    weights[np.isnan(weights)] = np.nanmedian(weights)
    return weights


def keypoint_prior(
    num_frames: int,
    num_keypoints: int,
    dim: int,
    temporal_weight: Float[Tensor, " keypoints"],
    edges: list[tuple[int, int]],
    skeletal_weight: Float[Tensor, " edges"] | Float[Tensor, "edges dim"],
    skeletal_offset: Float[Tensor, "edges dim"] | None = None,
) -> BlockTridiagonalGaussian:
    """The Gaussian Markov random field of the temporal and skeletal potentials over a window.

    A zero temporal weight or an empty edge list switches that potential off (the ``temporal``
    and ``skeletal`` variants). The result is a proper Gaussian: a tiny ridge pins the global
    translation, so its normaliser exists and the weights can be learned.
    """
    dtype, device = temporal_weight.dtype, temporal_weight.device
    no_observation = torch.zeros(num_frames, num_keypoints, dim, dtype=dtype, device=device)
    no_precision = torch.zeros(num_frames, num_keypoints, dim, dim, dtype=dtype, device=device)
    A, B, h = build_chain_precision(
        no_observation,
        no_precision,
        temporal_weight,
        edges,
        skeletal_weight,
        skeletal_offset,
        ridge=PRIOR_RIDGE,
        diagonal_offdiag=True,
    )
    return BlockTridiagonalGaussian(A, B, h, keypoint_dim=dim, diagonal_B=True)
