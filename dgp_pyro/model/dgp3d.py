r"""Multi-view 3D Deep Graph Pose: a Pyro model over world keypoints, and its 3D guide.

The latent keypoints of a window of :math:`T` synchronous frames are world points
:math:`Y \in \mathbb{R}^{T \times J \times 3}` (units of the calibration, millimetres for the
synthetic rig). Every view :math:`v` sees their projection :math:`\pi_v(Y)`, the calibrated
pinhole camera with OpenCV lens distortion in the network's training pixels
(:class:`~dgp_pyro.model.views3d.ViewCameras`); the views' heatmaps are read out of the
network's output by :class:`~dgp_pyro.model.views3d.ViewChannels`.

Generative story of one training step (one network :math:`h_\theta` shared by every view):

1. **Labeled images** of every view: the heatmap loss at the labels, as in the 2D model
   (:func:`~dgp_pyro.model.dgp.dgp_model`), ``pyro.factor("labeled_heatmaps", -loss)``.
2. **Windows** of :math:`T` synchronous frames (every view of the same frames of a session):

   .. math::

       Y \sim \mathcal{N}(0, \Lambda_{\mathrm{prior}}^{-1}), \qquad
       \tfrac12 Y^\top \Lambda_{\mathrm{prior}} Y = \sum_{t,j} \tfrac12 w_t^j \|Y_{t+1,j} - Y_{tj}\|^2
           + \sum_{t,(i,j)} \tfrac12 w_s^{ij} \|Y_{ti} - Y_{tj}\|^2 + \tfrac{\epsilon}{2}\|Y\|^2,

   ``pyro.factor("neural", -sum_{t,v,j} phi_n(pi_v(Y_tj), h(x_tv)))`` with :math:`\phi_n` the
   heatmap form (:func:`~dgp_pyro.nets.heatmap_potential`) of view :math:`v`'s heatmap, and any
   label in any view observes the projection,
   :math:`y^{\mathrm{label}}_{tvj} \sim \mathcal{N}(\pi_v(Y_{tj}), \sigma_{\mathrm{label}}^2 I)`
   (masked where missing). The heatmap form is bounded in :math:`y` (a bump far from the
   heatmap's peak costs a constant) and flat where the heatmap is low, so an occluded view,
   whose heatmap is weak, hardly pulls :math:`Y`.

Variants (:data:`VARIANTS_3D`, the same model function with switches): ``dgp3d`` (temporal and
skeletal), ``dgp3d_temporal``, ``dgp3d_skeletal``, ``dgp3d_bones`` (temporal plus a Gaussian on
each bone's *length*, :math:`\tfrac12 w_b (\|Y_{ti} - Y_{tj}\| - L_b)^2`, instead of on its
vector; a ``pyro.factor`` since it is not quadratic) and ``supervised`` (no potential: what the
whole-video posterior of a supervised run uses).

**The 3D guide** (:func:`dgp3d_guide`) is a Gaussian chain over :math:`Y`
(:class:`~dgp_pyro.ops.block_tridiagonal.BlockTridiagonalGaussian`, :math:`O(T)`), built like
the 2D guide (:mod:`dgp_pyro.model.structured_guide`). Its pseudo-observations are the robust,
confidence-weighted triangulation of every view's heatmap summary, linearised
(:func:`~dgp_pyro.model.pseudo_observations3d.triangulation_observations`, where the steps are
written out); labels in the window enter as more views. These pseudo-observations, corrected by
learned per-keypoint precision scales :math:`s_j` and offsets :math:`b_j` (world units), feed
:func:`~dgp_pyro.ops.keypoint_chain.build_chain_precision` with ``d = 3`` and the 3D weights;
SVI fits the corrections. For ``dgp3d_bones`` the bone terms are linearised (Gauss-Newton,
:math:`\|d\| \approx u^\top d`, :math:`u = d_0 / \|d_0\|`) at the chain mean without them, twice,
which adds :math:`w_b u u^\top` couplings inside each frame. Everything is vectorised over
windows, frames, keypoints and views.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyro
import pyro.distributions as dist
import torch
from jaxtyping import Bool, Float
from torch import Tensor, nn

from dgp_pyro.model.dgp import LabeledBatch, labeled_heatmap_factor
from dgp_pyro.model.potentials import PotentialWeights, keypoint_prior
from dgp_pyro.model.pseudo_observations3d import (
    DEFAULT_ROBUST,
    TriangulatedObservations,
    triangulation_observations,
)
from dgp_pyro.model.structured_guide import (
    GuideCorrection3D,
    guide_chain,
    potential_arguments,
    sample_windows,
    window_plate,
)
from dgp_pyro.model.views3d import ViewCameras
from dgp_pyro.nets import heatmap_potential, soft_argmax
from dgp_pyro.ops.block_tridiagonal import BlockTridiagonalGaussian

__all__ = [
    "VARIANTS_3D",
    "Model3DSettings",
    "ViewWindowBatch",
    "PotentialWeights3D",
    "corrected_observations",
    "guide3d_from_observations",
    "bone_energy",
    "dgp3d_model",
    "dgp3d_guide",
    "window_observations",
]

#: The 3D variants: temporal potential on or off, and the skeleton as bone vectors
#: (the quadratic potential of Deep Graph Pose), bone lengths, or off.
VARIANTS_3D = {
    "dgp3d": {"temporal": True, "skeleton": "vector"},
    "dgp3d_temporal": {"temporal": True, "skeleton": None},
    "dgp3d_skeletal": {"temporal": False, "skeleton": "vector"},
    "dgp3d_bones": {"temporal": True, "skeleton": "length"},
    "supervised": {"temporal": False, "skeleton": None},
}


@dataclass
class Model3DSettings:
    """What a 3D variant switches on, and the fixed scales of its potentials.

    Attributes:
        variant: one of :data:`VARIANTS_3D`.
        stride, heatmap_sigma: the heatmaps' stride and bump width (training pixels).
        edges: skeleton edges (keypoint indices).
        label_sigma: labeling noise, training pixels.
        unlabeled_weight: weight of the windows' ELBO per keypoint, frame and view, against
            the averaged labeled heatmap loss.
        absent_weight: weight of the empty-map loss of keypoints absent from a labeled image.
        robust: :math:`k` of the robust view weights (None: plain confidence weighting).
        gauss_newton: Gauss-Newton iterations of the pseudo-observations.
        bone_iterations: relinearisations of the bone-length terms in the guide.
    """

    variant: str
    stride: int
    heatmap_sigma: float
    edges: list[tuple[int, int]] = field(default_factory=list)
    label_sigma: float = 1.0
    unlabeled_weight: float = 1.0
    absent_weight: float = 0.0
    robust: float | None = DEFAULT_ROBUST
    gauss_newton: int = 3
    bone_iterations: int = 2

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS_3D:
            raise ValueError(f"unknown 3D variant {self.variant!r}; choose one of {sorted(VARIANTS_3D)}")
        self.edges = [(int(i), int(j)) for i, j in self.edges]

    @property
    def temporal(self) -> bool:
        return VARIANTS_3D[self.variant]["temporal"]

    @property
    def skeletal(self) -> bool:
        """The quadratic potential on bone vectors."""
        return VARIANTS_3D[self.variant]["skeleton"] == "vector" and bool(self.edges)

    @property
    def bones(self) -> bool:
        """The Gaussian on bone lengths."""
        return VARIANTS_3D[self.variant]["skeleton"] == "length" and bool(self.edges)

    @property
    def uses_windows(self) -> bool:
        return self.temporal or self.skeletal or self.bones


# ----------------------------------------------------------------------------------------------
# batches, weights, the bone-length potential


@dataclass
class ViewWindowBatch:
    """Windows of synchronous frames of every view: the network's logits and any labels.

    ``logits (W, T, V, J, h, w)`` (per view: :meth:`~dgp_pyro.model.views3d.ViewChannels.select`
    of the network's per-image output), ``labels (W, T, V, J, 2)`` training pixels,
    ``mask (W, T, V, J)``; ``present (V, J)`` (:meth:`~dgp_pyro.model.views3d.ViewChannels.present`,
    None: all) marks the views that have a heatmap of a keypoint at all: the others add no
    neural potential and no pseudo-observation.
    """

    logits: Float[Tensor, "windows time views keypoints h w"]
    labels: Float[Tensor, "windows time views keypoints 2"]
    mask: Bool[Tensor, "windows time views keypoints"]
    present: Bool[Tensor, "views keypoints"] | None = None


class PotentialWeights3D(PotentialWeights):
    """Temporal weights ``(J,)`` (1/world units^2), skeletal weights ``(E,)``, and bone lengths.

    For the ``dgp3d_bones`` variant the skeletal weights are the bone-length precisions
    :math:`w_b` and ``bone_length`` the means :math:`L_b` (a buffer, never learned).
    """

    def __init__(
        self, temporal: Tensor, skeletal: Tensor, bone_length: Tensor | None = None, learn: bool = False
    ):
        super().__init__(temporal, skeletal, learn=learn)
        skeletal = torch.as_tensor(skeletal, dtype=torch.float64)
        length = (
            torch.zeros_like(skeletal)
            if bone_length is None
            else torch.as_tensor(bone_length, dtype=torch.float64)
        )
        self.register_buffer("bone_length", length.clone())


def _incidence(edges: list[tuple[int, int]], J: int, dtype, device) -> Tensor:
    inc = torch.zeros(len(edges), J, dtype=dtype, device=device)
    rows = torch.arange(len(edges), device=device)
    inc[rows, torch.tensor([i for i, _ in edges], device=device)] = 1.0
    inc[rows, torch.tensor([j for _, j in edges], device=device)] = -1.0
    return inc


def bone_energy(
    Y: Float[Tensor, "... time keypoints 3"], edges: list[tuple[int, int]], weight: Tensor, length: Tensor
) -> Float[Tensor, "..."]:
    r""":math:`\sum_{t,b} \tfrac12 w_b (\|Y_{ti} - Y_{tj}\| - L_b)^2` (finite gradients at zero length)."""
    if not edges:
        return Y.new_zeros(Y.shape[:-3])
    first = torch.tensor([i for i, _ in edges], device=Y.device)
    second = torch.tensor([j for _, j in edges], device=Y.device)
    bone = Y[..., first, :] - Y[..., second, :]
    norm = torch.sqrt((bone * bone).sum(-1) + 1e-12)
    return 0.5 * (weight * (norm - length) ** 2).sum(dim=(-2, -1))


# ----------------------------------------------------------------------------------------------
# the guide's Gaussian chain


def corrected_observations(
    correction: GuideCorrection3D, observations: TriangulatedObservations
) -> tuple[Tensor, Tensor]:
    """Pseudo-observation mean ``+ b_j`` and precision ``* exp(s_j)`` (float64)."""
    return correction.correct(observations.mean, observations.precision)


def _add_bone_terms(
    A: Tensor, h: Tensor, at: Tensor, edges: list[tuple[int, int]], weight: Tensor, length: Tensor
) -> tuple[Tensor, Tensor]:
    """Add the Gauss-Newton quadratic of the bone-length terms linearised at ``at (..., T, J, 3)``."""
    J = at.shape[-2]
    inc = _incidence(edges, J, A.dtype, A.device)  # (E, J)
    bone = torch.einsum("ej,...tja->...tea", inc, at)
    norm = bone.norm(dim=-1, keepdim=True)
    u = torch.where(norm > 1e-9, bone / norm.clamp_min(1e-9), torch.zeros_like(bone))  # (..., T, E, 3)
    uu = u[..., :, None] * u[..., None, :]
    block = torch.einsum("ei,ej,e,...teab->...tiajb", inc, inc, weight, uu)
    D = J * 3
    A = A + block.reshape(*block.shape[:-4], D, D)
    h = h + torch.einsum("ei,e,...tea->...tia", inc, weight * length, u).reshape(*u.shape[:-2], D)
    return A, h


def guide3d_from_observations(
    settings: Model3DSettings,
    weights: PotentialWeights,
    correction: GuideCorrection3D,
    observations: TriangulatedObservations,
) -> BlockTridiagonalGaussian:
    """q(Y) over runs of consecutive frames: the corrected pseudo-observations and the potentials.

    Leading dimensions of the observations are independent chains (windows).
    """
    mean, precision = corrected_observations(correction, observations)

    def bone_terms(A: Tensor, B: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        base_A, base_h = A, h
        at = BlockTridiagonalGaussian(
            A.detach(), B.detach(), h.detach(), keypoint_dim=3, diagonal_B=True
        ).mean
        w, length = weights.skeletal(), weights.bone_length.to(A.dtype)
        for it in range(max(1, settings.bone_iterations)):
            A, h = _add_bone_terms(base_A, base_h, at, settings.edges, w, length)
            if it + 1 < settings.bone_iterations:
                at = BlockTridiagonalGaussian(
                    A.detach(), B.detach(), h.detach(), keypoint_dim=3, diagonal_B=True
                ).mean
        return A, h

    return guide_chain(
        mean,
        precision,
        potential_arguments(settings, weights),
        keypoint_dim=3,
        obs_mask=observations.observed,
        refine=bone_terms if settings.bones else None,
    )


# ----------------------------------------------------------------------------------------------
# the model and the guide


def _fill_missing(labels: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask[..., None], labels, torch.zeros_like(labels))


def _window_scale(settings: Model3DSettings, windows: ViewWindowBatch) -> float:
    _, time, views, keypoints = windows.mask.shape
    pairs = views * keypoints if windows.present is None else max(1, int(windows.present.sum()))
    return settings.unlabeled_weight / (time * pairs)


def dgp3d_model(
    network: nn.Module,
    settings: Model3DSettings,
    weights: PotentialWeights,
    correction: GuideCorrection3D | None,
    cameras: ViewCameras,
    labeled: LabeledBatch | None = None,
    windows: ViewWindowBatch | None = None,
) -> None:
    """The multi-view 3D Deep Graph Pose model for one training step (module docstring)."""
    pyro.module("network", network)
    pyro.module("potential_weights", weights)
    if labeled is not None:
        labeled_heatmap_factor(labeled, settings.stride, settings.heatmap_sigma, settings.absent_weight)
    if windows is None or not settings.uses_windows:
        return
    num_windows, time, views, keypoints = windows.mask.shape
    prior = keypoint_prior(time, keypoints, 3, *potential_arguments(settings, weights))
    cams = cameras.to(dtype=torch.float64)
    with window_plate(num_windows, _window_scale(settings, windows)):
        Y = pyro.sample("keypoints", prior.expand([num_windows]))  # (W, T, J, 3)
        if settings.bones:
            energy = bone_energy(Y, settings.edges, weights.skeletal(), weights.bone_length.to(Y.dtype))
            pyro.factor("bones", -energy)
        y2d = cams.project(Y).movedim(0, -3)  # (W, T, V, J, 2)
        logits = windows.logits
        neural = heatmap_potential(logits, y2d.to(logits.dtype), settings.stride, settings.heatmap_sigma)
        if windows.present is not None:
            neural = torch.where(windows.present, neural, torch.zeros_like(neural))
        pyro.factor("neural", -neural.flatten(1).sum(-1).to(Y.dtype))
        noise = dist.Normal(y2d, settings.label_sigma).mask(windows.mask[..., None]).to_event(4)
        pyro.sample("labels", noise, obs=_fill_missing(windows.labels, windows.mask).to(Y.dtype))


def window_observations(
    settings: Model3DSettings, cameras: ViewCameras, windows: ViewWindowBatch
) -> TriangulatedObservations:
    """The 3D pseudo-observations of a window batch (detached heatmaps and labels)."""
    summary = soft_argmax(windows.logits.detach(), settings.stride)
    confidence = summary.confidence
    if windows.present is not None:  # an absent view's (zero) heatmap observes nothing
        confidence = torch.where(windows.present, confidence, torch.zeros_like(confidence))
    return triangulation_observations(
        cameras,
        summary.mean,
        summary.cov,
        confidence,
        windows.labels,
        windows.mask,
        settings.label_sigma,
        settings.robust,
        settings.gauss_newton,
    )


def dgp3d_guide(
    network: nn.Module,
    settings: Model3DSettings,
    weights: PotentialWeights,
    correction: GuideCorrection3D,
    cameras: ViewCameras,
    labeled: LabeledBatch | None = None,
    windows: ViewWindowBatch | None = None,
) -> None:
    """The 3D structured guide, mirroring :func:`dgp3d_model` (labeled images have no latent)."""
    if windows is None or not settings.uses_windows:
        return
    pyro.module("guide_correction", correction)
    observations = window_observations(settings, cameras, windows)
    q = guide3d_from_observations(settings, weights, correction, observations)
    sample_windows(q, windows.mask.shape[0], _window_scale(settings, windows))
