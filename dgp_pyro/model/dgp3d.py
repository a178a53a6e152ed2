r"""Multi-view 3D Deep Graph Pose: a Pyro model over world keypoints, and its 3D guide.

The latent keypoints of a window of :math:`T` synchronous frames are world points
:math:`Y \in \mathbb{R}^{T \times J \times 3}` (units of the calibration, millimetres for the
synthetic rig). Every view :math:`v` sees their projection :math:`\pi_v(Y)`, the calibrated
pinhole camera with OpenCV lens distortion of the Anipose file
(:func:`~dgp_pyro.geometry.cameras.project_torch`, here in the network's *training pixels*: the
resize from frame to training size is folded into the intrinsic matrix, :class:`ViewCameras`).

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
(:class:`~dgp_pyro.ops.gaussian_chain.BlockTridiagonalGaussian`, :math:`O(T)`). Its
pseudo-observations come from the Gaussian form of every view's heatmap (soft-argmax mean
:math:`\mu_v`, spread :math:`\Sigma_v`, peak confidence :math:`c_v`), per frame and keypoint
(:func:`triangulation_observations`):

1. a start point: the confidence-weighted DLT triangulation of all views and of every pair of
   views, keeping the candidate with the lowest robust reprojection cost (so one view whose
   heatmap points elsewhere cannot drag the start);
2. a few Gauss-Newton steps of the robust, confidence-weighted reprojection error
   :math:`\sum_v \omega_v\, c_v\, r_v^\top \Sigma_v^{-1} r_v`, :math:`r_v = \mu_v - \pi_v(X)`,
   with :math:`\omega_v = \exp(-\tfrac12 (d_v^2 / k^2)^2)`, :math:`d_v^2 = r_v^\top \Sigma_v^{-1} r_v`:
   0.97 at one standard deviation, 0.61 at :math:`k` (default 2), 0.08 at 3, vanishing beyond
   :math:`2k` (the redescending shape of the bounded heatmap potential: a bump far from the
   heatmap's peak costs a constant, so a view that disagrees by many sigmas stops pulling);
   labels are not down-weighted. The standard deviations are the heatmap's spread (about
   the target's width, several times a trained network's error), which is why :math:`k` is
   small: with :math:`k = 5` a camera confidently wrong by 40-50 px on the synthetic rig still
   dragged the estimate as far as DLT; with 2 it is ignored from about 30 px, and clean
   accuracy and coverage are unchanged;
3. the projection linearised at the result :math:`X^*` (Jacobian :math:`J_v`, 2 x 3) gives the
   Gaussian pseudo-observation with information
   :math:`\Lambda = \sum_v J_v^\top \omega_v c_v \Sigma_v^{-1} J_v` and mean
   :math:`m = X^* + \Lambda^{-1} \sum_v J_v^\top \omega_v c_v \Sigma_v^{-1} r_v` (one more
   Gauss-Newton step). A view with no confidence gets zero precision; a keypoint seen by one
   view only is linearised on that view's ray (its depth then comes from the potentials).

Labels in the window enter as more views with :math:`\Sigma = \sigma_{\mathrm{label}}^2 I`.
These pseudo-observations, corrected by learned per-keypoint precision scales :math:`s_j` and
offsets :math:`b_j` (world units), feed :func:`~dgp_pyro.ops.gaussian_chain.build_chain_precision`
with ``d = 3`` and the 3D weights; SVI fits the corrections. For ``dgp3d_bones`` the bone
terms are linearised (Gauss-Newton, :math:`\|d\| \approx u^\top d`, :math:`u = d_0 / \|d_0\|`)
at the chain mean without them, twice, which adds :math:`w_b u u^\top` couplings inside each
frame. Everything is vectorised over windows, frames, keypoints and views.

**Views in the network's output** (:class:`ViewChannels`): the model and the guide take each
view's heatmaps as ``(..., V, J, h, w)``. With one camera per image that is the network's
output per image; in a mirror (suffix) project one image holds every view and its ``J V``
channels are split into views by an index (each image goes through the network once). A view
that lacks a keypoint adds neither a neural potential nor a pseudo-observation.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import pyro
import pyro.distributions as dist
import torch
from jaxtyping import Bool, Float
from pyro import poutine
from torch import Tensor, nn

from dgp_pyro.geometry.cameras import CameraGroup, rodrigues_torch, triangulate_torch, undistort_points_torch
from dgp_pyro.model.dgp import LabeledBatch, PotentialWeights, labeled_heatmap_factor
from dgp_pyro.model.potentials import PRIOR_RIDGE, keypoint_prior
from dgp_pyro.nets import heatmap_potential, soft_argmax
from dgp_pyro.ops.gaussian_chain import BlockTridiagonalGaussian, build_chain_precision

__all__ = [
    "VARIANTS_3D",
    "Model3DSettings",
    "ViewCameras",
    "ViewChannels",
    "ViewWindowBatch",
    "PotentialWeights3D",
    "GuideCorrection3D",
    "TriangulatedObservations",
    "triangulation_observations",
    "robust_weight",
    "potential_arguments3d",
    "guide3d_from_observations",
    "bone_energy",
    "dgp3d_model",
    "dgp3d_guide",
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

#: Mahalanobis radius k (standard deviations of a view's heatmap spread) of the robust view
#: weights: 0.61 at k, below 0.01 beyond 1.8 k.
DEFAULT_ROBUST = 2.0


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
# cameras


@dataclass
class ViewCameras:
    """The V cameras as tensors, in the pixel frame the heatmaps live in.

    ``matrix (V, 3, 3)``, ``dist (V, 5)``, ``rvec (V, 3)``, ``tvec (V, 3)`` as in
    :meth:`~dgp_pyro.geometry.cameras.CameraGroup.torch_params`. :meth:`from_group` with ``size``
    folds the resize of each view's frames (``frame_sizes``) to the training size into ``K``:
    a training pixel is :math:`x_t = (x_f + \tfrac12) W / W_0 - \tfrac12`, so
    :math:`f_x' = f_x W / W_0`, :math:`s' = s W / W_0`, :math:`c_x' = (c_x + \tfrac12) W / W_0 - \tfrac12`
    (same for y); the distortion acts before ``K`` and is unchanged.
    """

    matrix: Tensor
    dist: Tensor
    rvec: Tensor
    tvec: Tensor
    names: list[str] = field(default_factory=list)

    @classmethod
    def from_group(
        cls,
        group: CameraGroup,
        frame_sizes: list[tuple[int, int]] | None = None,
        size: tuple[int, int] | None = None,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> ViewCameras:
        params = group.torch_params(dtype=dtype, device=device)
        matrix = params["matrix"].clone()
        if size is not None:
            sizes = frame_sizes if frame_sizes is not None else [cam.size for cam in group.cameras]
            if len(sizes) != len(group):
                raise ValueError(f"{len(sizes)} frame sizes for {len(group)} cameras")
            fx = torch.tensor([size[0] / float(w) for w, _ in sizes], dtype=dtype, device=device)
            fy = torch.tensor([size[1] / float(h) for _, h in sizes], dtype=dtype, device=device)
            matrix[:, 0, :] = matrix[:, 0, :] * fx[:, None]
            matrix[:, 0, 2] = matrix[:, 0, 2] + 0.5 * fx - 0.5
            matrix[:, 1, :] = matrix[:, 1, :] * fy[:, None]
            matrix[:, 1, 2] = matrix[:, 1, 2] + 0.5 * fy - 0.5
        return cls(matrix, params["dist"], params["rvec"], params["tvec"], list(group.names))

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def params(self) -> dict[str, Tensor]:
        return {"matrix": self.matrix, "dist": self.dist, "rvec": self.rvec, "tvec": self.tvec}

    def to(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> ViewCameras:
        def conv(x: Tensor) -> Tensor:
            return x.to(dtype=dtype or x.dtype, device=device or x.device)

        return ViewCameras(
            *(conv(x) for x in (self.matrix, self.dist, self.rvec, self.tvec)), list(self.names)
        )

    def tile(self, times: int) -> ViewCameras:
        """The cameras repeated ``times`` times (for labels as extra pseudo-views)."""
        return ViewCameras(
            *(
                x.repeat(times, *([1] * (x.dim() - 1)))
                for x in (self.matrix, self.dist, self.rvec, self.tvec)
            ),
            list(self.names) * times,
        )

    def project(self, points: Float[Tensor, "... 3"]) -> Float[Tensor, "views ... 2"]:
        """Pixels of world points in every view (differentiable)."""
        return self.project_jacobian(points, jacobian=False)[0]

    def project_jacobian(
        self, points: Float[Tensor, "... 3"], jacobian: bool = True
    ) -> tuple[Float[Tensor, "views ... 2"], Float[Tensor, "views ... 2 3"] | None]:
        r"""Pixels of world points in every view and the Jacobian :math:`\partial \pi_v / \partial X`.

        :math:`J = K_{2\times2}\, D\, N\, R` with :math:`N = \partial(x, y)/\partial X_c`
        (:math:`[[1/z, 0, -x/z], [0, 1/z, -y/z]]`), :math:`D` the (symmetric) Jacobian of the
        OpenCV distortion and :math:`K_{2\times2} = [[f_x, s], [0, f_y]]`.
        """
        rot = rodrigues_torch(self.rvec)  # (V, 3, 3)
        batch = points.shape[:-1]
        flat = points.reshape(-1, 3).to(rot.dtype)
        pc = torch.einsum("vij,mj->vmi", rot, flat) + self.tvec[:, None, :]  # (V, M, 3)
        z = pc[..., 2]
        x, y = pc[..., 0] / z, pc[..., 1] / z
        k1, k2, p1, p2, k3 = (self.dist[:, i, None] for i in range(5))
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        fx, s, cx = self.matrix[:, 0, 0, None], self.matrix[:, 0, 1, None], self.matrix[:, 0, 2, None]
        fy, cy = self.matrix[:, 1, 1, None], self.matrix[:, 1, 2, None]
        uv = torch.stack([fx * xd + s * yd + cx, fy * yd + cy], dim=-1)
        V = rot.shape[0]
        if not jacobian:
            return uv.reshape(V, *batch, 2), None
        dradial = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)
        a = radial + 2.0 * x * x * dradial + 2.0 * p1 * y + 6.0 * p2 * x
        b = 2.0 * x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y
        c = radial + 2.0 * y * y * dradial + 6.0 * p1 * y + 2.0 * p2 * x
        # d(u, v) / d(x, y) = K2 @ D
        m00, m01 = fx * a + s * b, fx * b + s * c
        m10, m11 = fy * b, fy * c
        inv_z = 1.0 / z
        zero = torch.zeros_like(z)
        n = torch.stack(
            [torch.stack([inv_z, zero, -x * inv_z], -1), torch.stack([zero, inv_z, -y * inv_z], -1)], -2
        )  # (V, M, 2, 3)
        m = torch.stack([torch.stack([m00, m01], -1), torch.stack([m10, m11], -1)], -2)  # (V, M, 2, 2)
        jac = m @ n @ rot[:, None]  # (V, M, 2, 3)
        return uv.reshape(V, *batch, 2), jac.reshape(V, *batch, 2, 3)

    def centers(self) -> Float[Tensor, "views 3"]:
        rot = rodrigues_torch(self.rvec)
        return -(rot.transpose(-1, -2) @ self.tvec[..., None])[..., 0]


# ----------------------------------------------------------------------------------------------
# where each view's heatmaps are in the network's output


@dataclass
class ViewChannels:
    r"""Where view :math:`v`'s heatmap of 3D keypoint :math:`j` is in the network's output.

    A synchronous frame is ``I`` images, each mapped by the shared network to ``K`` heatmap
    channels. In the *folders* layout (:meth:`per_camera`) there is one image per view and the
    channels are the keypoints (``I = V``, ``K = J``); in the *suffix* layout (:meth:`suffix`:
    a mirror, one image holds every view) there is one image whose ``K`` channels are the
    ``<keypoint>_<view>`` columns (``I = 1``, ``K`` up to ``J V``). :meth:`select` turns any
    per-image tensor ``(..., I, K, ...)`` (logits, soft-argmax summaries) into the per-view
    ``(..., V, J, ...)`` tensors the model, the guide and the posterior take, so the rest of the
    3D code never sees the layout. A view that lacks a keypoint (the mirror fixture's ``obs`` is
    in the top view only) has channel -1: :attr:`present` is False there, its logits are
    filled with zeros (a potential that does not depend on :math:`y`), masked out of the model
    (:class:`ViewWindowBatch`) and given zero confidence (:meth:`summaries`).

    Attributes:
        views: the V view (camera) names.
        keypoints: the J 3D keypoints (body parts).
        channels: the K output channel names of the network, in order.
        image: ``(V,)`` the image of a synchronous frame that holds view ``v``.
        channel: ``(V, J)`` the channel of view ``v``'s keypoint ``j`` (-1: absent).
    """

    views: list[str]
    keypoints: list[str]
    channels: list[str]
    image: list[int]
    channel: list[list[int]]

    def __post_init__(self) -> None:
        V, J, K = len(self.views), len(self.keypoints), len(self.channels)
        if len(self.image) != V or len(self.channel) != V or any(len(row) != J for row in self.channel):
            raise ValueError(f"image needs {V} entries and channel {V} x {J}")
        if sorted(set(self.image)) != list(range(max(self.image, default=-1) + 1)):
            raise ValueError(f"image indices {self.image} must number the images 0 .. I-1")
        if any(not -1 <= c < K for row in self.channel for c in row):
            raise ValueError(f"channel indices must lie in [-1, {K})")

    @classmethod
    def per_camera(cls, views: list[str], keypoints: list[str]) -> ViewChannels:
        """One image per view whose channels are the keypoints (the folders layout)."""
        J = len(keypoints)
        return cls(
            list(views),
            list(keypoints),
            list(keypoints),
            list(range(len(views))),
            [list(range(J))] * len(views),
        )

    @classmethod
    def suffix(cls, views: list[str], keypoints: list[str], channels: list[str]) -> ViewChannels:
        """One image holding every view, channels named ``<keypoint>_<view>`` (the suffix layout)."""
        index = {name: k for k, name in enumerate(channels)}
        table = [[index.get(f"{kp}_{view}", -1) for kp in keypoints] for view in views]
        used = {c for row in table for c in row if c >= 0}
        orphans = [name for k, name in enumerate(channels) if k not in used]
        if orphans:
            raise ValueError(f"channel(s) {orphans} are no <keypoint>_<view> of {keypoints} x {views}")
        return cls(list(views), list(keypoints), list(channels), [0] * len(views), table)

    @classmethod
    def from_project(cls, project) -> ViewChannels:
        """The channels of a :class:`~dgp_pyro.data.project.Project`'s network (its view layout)."""
        if project.view_layout == "suffix":
            return cls.suffix(list(project.views), list(project.bodyparts), list(project.network_keypoints()))
        return cls.per_camera(list(project.views), list(project.network_keypoints()))

    @property
    def num_images(self) -> int:
        """``I``: images per synchronous frame."""
        return max(self.image) + 1

    @property
    def identity(self) -> bool:
        """One image per view, channel ``j`` = keypoint ``j`` everywhere: :meth:`select` is a no-op."""
        J = len(self.keypoints)
        return self.image == list(range(len(self.views))) and all(
            row == list(range(J)) for row in self.channel
        )

    def present(self, device: torch.device | str | None = None) -> Bool[Tensor, "views keypoints"]:
        """``(V, J)`` whether view ``v`` has a heatmap of keypoint ``j``."""
        return torch.tensor(self.channel, device=device) >= 0

    def keypoint_of(self, channel_name: str) -> int:
        """The 3D keypoint ``j`` a channel (by name) is a view of."""
        k = self.channels.index(channel_name)
        return next(j for row in self.channel for j, c in enumerate(row) if c == k)

    def views_of_image(self, image: int) -> list[int]:
        """The views held by image ``image`` of a synchronous frame."""
        return [v for v, i in enumerate(self.image) if i == image]

    def image_sources(self, per_view: list) -> list:
        """The ``I`` items (videos, image paths) of the images from a per-view list (first view of each)."""
        return [per_view[self.views_of_image(i)[0]] for i in range(self.num_images)]

    def per_view(self, per_image: list) -> list:
        """The ``V`` items of the views from a per-image list."""
        return [per_image[i] for i in self.image]

    def image_pairs(self, image: int) -> list[tuple[int, int]]:
        """``(v, j)`` of each output channel ``k`` of image ``image``, in channel order (-1, -1: none)."""
        pairs = [(-1, -1)] * len(self.channels)
        for v in self.views_of_image(image):
            for j, k in enumerate(self.channel[v]):
                if k >= 0:
                    pairs[k] = (v, j)
        return pairs

    def select(self, x: Tensor, tail: int, fill: float = 0.0) -> Tensor:
        """``(..., I, K, *rest)`` -> ``(..., V, J, *rest)`` (``tail = len(rest)``); absent pairs get ``fill``.

        Differentiable (an index, no copy of the network's work): each image went through the
        network once, and view ``v`` reads its channels.
        """
        if x.dim() < 2 + tail or x.shape[x.dim() - 2 - tail] != self.num_images:
            raise ValueError(
                f"expected (..., {self.num_images} images, {len(self.channels)} channels, ...), "
                f"got {tuple(x.shape)}"
            )
        if self.identity:
            return x
        lead = x.dim() - 2 - tail
        image = torch.tensor(self.image, device=x.device)[:, None]
        channel = torch.tensor(self.channel, device=x.device).clamp(min=0)
        out = x[(slice(None),) * lead + (image, channel)]
        present = self.present(x.device)
        if bool(present.all()):
            return out
        return torch.where(present.reshape(present.shape + (1,) * tail), out, torch.full_like(out, fill))

    def summaries(
        self, mean: Tensor, cov: Tensor, confidence: Tensor
    ) -> tuple[
        Float[Tensor, "... views keypoints 2"],
        Float[Tensor, "... views keypoints 2 2"],
        Float[Tensor, "... views keypoints"],
    ]:
        """Per-image soft-argmax summaries ``(..., I, K, ...)`` as per-view ones ``(..., V, J, ...)``.

        An absent (view, keypoint) gets a NaN mean and covariance and zero confidence: it takes no
        part in any triangulation, and its prediction files say the view never saw it.
        """
        nan = float("nan")
        return self.select(mean, 1, nan), self.select(cov, 2, nan), self.select(confidence, 0, 0.0)


# ----------------------------------------------------------------------------------------------
# batches, weights, corrections


@dataclass
class ViewWindowBatch:
    """Windows of synchronous frames of every view: the network's logits and any labels.

    ``logits (W, T, V, J, h, w)`` (per view: :meth:`ViewChannels.select` of the network's
    per-image output), ``labels (W, T, V, J, 2)`` training pixels, ``mask (W, T, V, J)``;
    ``present (V, J)`` (:meth:`ViewChannels.present`, None: all) marks the views that have a
    heatmap of a keypoint at all: the others add no neural potential and no pseudo-observation.
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


class GuideCorrection3D(nn.Module):
    """Learned corrections of the 3D pseudo-observations: per-keypoint log precision scale and offset."""

    def __init__(self, num_keypoints: int):
        super().__init__()
        self.log_precision_scale = nn.Parameter(torch.zeros(num_keypoints, dtype=torch.float64))
        self.offset = nn.Parameter(torch.zeros(num_keypoints, 3, dtype=torch.float64))


def potential_arguments3d(settings: Model3DSettings, weights: PotentialWeights) -> tuple:
    """``(temporal_weight, edges, skeletal_weight)`` of the quadratic potentials; off means zero.

    The bone-length potential is not quadratic and is not part of these (see :func:`bone_energy`).
    """
    keypoints = weights.log_temporal.shape[-1]
    zeros = weights.log_temporal.new_zeros(keypoints)
    return (
        weights.temporal() if settings.temporal else zeros,
        settings.edges if settings.skeletal else [],
        weights.skeletal() if settings.skeletal else zeros[:0],
    )


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
# pseudo-observations: robust, confidence-weighted triangulation, linearised


class TriangulatedObservations(NamedTuple):
    r"""Gaussian pseudo-observations of the 3D keypoints (see :func:`triangulation_observations`).

    Attributes:
        mean: ``(..., J, 3)`` the Gaussian's mean (zero where nothing observes the keypoint).
        precision: ``(..., J, 3, 3)`` its information :math:`\sum_v J_v^\top \omega_v c_v \Sigma_v^{-1} J_v`.
        point: ``(..., J, 3)`` the linearisation point :math:`X^*` (NaN where nothing observes it).
        view_weight: ``(..., V', J)`` :math:`\omega_v c_v`, the factor of each view's
            :math:`\Sigma_v^{-1}` (``V' = 2V`` with labels: the label pseudo-views follow).
        observed: ``(..., J)`` whether any view or label observes the keypoint.
    """

    mean: Tensor
    precision: Tensor
    point: Tensor
    view_weight: Tensor
    observed: Tensor


def robust_weight(d2: Tensor, k: float | None) -> Tensor:
    r""":math:`\omega = \exp(-\tfrac12 (d^2 / k^2)^2)`: > 0.94 within 3 sigma, 0.61 at k sigma, ~0 past 2k."""
    if k is None:
        return torch.ones_like(d2)
    return torch.exp(-0.5 * (d2 / (k * k)) ** 2)


def _robust_cost(d2: Tensor, k: float | None) -> Tensor:
    # rho(s) with rho'(s) = robust_weight(s), bounded: k^2 sqrt(pi/2) erf(s / (k^2 sqrt 2))
    if k is None:
        return d2
    k2 = k * k
    return k2 * math.sqrt(math.pi / 2.0) * torch.erf(d2 / (k2 * math.sqrt(2.0)))


def _inv2(m: Tensor) -> Tensor:
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    return torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]


def _ray_points(cameras: ViewCameras, pixels: Tensor, target: Tensor) -> Tensor:
    """For each view's pixel ``(V, N, 2)``, the point of its ray nearest ``target (N, 3)``: ``(V, N, 3)``."""
    norm = undistort_points_torch(pixels, cameras.matrix, cameras.dist)  # (V, N, 2)
    rot = rodrigues_torch(cameras.rvec)
    direction = torch.einsum("vji,vnj->vni", rot, torch.cat([norm, torch.ones_like(norm[..., :1])], -1))
    centre = cameras.centers()[:, None, :]
    along = ((target[None] - centre) * direction).sum(-1, keepdim=True) / (direction * direction).sum(
        -1, keepdim=True
    )
    return centre + along.clamp_min(0.0) * direction


def triangulation_observations(
    cameras: ViewCameras,
    mean: Float[Tensor, "... views keypoints 2"],
    cov: Float[Tensor, "... views keypoints 2 2"],
    confidence: Float[Tensor, "... views keypoints"],
    labels: Float[Tensor, "... views keypoints 2"] | None = None,
    label_mask: Bool[Tensor, "... views keypoints"] | None = None,
    label_sigma: float = 1.0,
    robust: float | None = DEFAULT_ROBUST,
    iterations: int = 3,
) -> TriangulatedObservations:
    r"""Gaussian pseudo-observations of 3D keypoints from every view's heatmap summary (and labels).

    See the module docstring (steps 1-3). Each view contributes its soft-argmax mean ``mean``
    with precision :math:`c_v \Sigma_v^{-1}` (``cov``, ``confidence``); a non-finite summary or
    a zero confidence contributes nothing. Labels (masked) are further views with precision
    :math:`I / \sigma_{\mathrm{label}}^2`. Pixels must be those of ``cameras``.
    Computed in float64; no gradient flows through it (it is a data summary).

    Returns:
        :class:`TriangulatedObservations` with batch shape ``mean.shape[:-3]``.
    """
    dtype, device = torch.float64, mean.device
    cameras = cameras.to(dtype=dtype, device=device)
    V = len(cameras)
    if mean.shape[-3] != V:
        raise ValueError(f"mean has {mean.shape[-3]} views, the cameras {V}")
    batch, J = mean.shape[:-3], mean.shape[-2]
    eye2 = torch.eye(2, dtype=dtype, device=device)
    with torch.no_grad():
        m = mean.detach().to(dtype).movedim(-3, 0).reshape(V, -1, 2)
        S = cov.detach().to(dtype).movedim(-4, 0).reshape(V, -1, 2, 2)
        c = confidence.detach().to(dtype).movedim(-2, 0).reshape(V, -1)
        ok = torch.isfinite(m).all(-1) & torch.isfinite(S).all(-1).all(-1) & torch.isfinite(c) & (c > 0)
        m = torch.where(ok[..., None], m, torch.zeros_like(m))
        S = torch.where(ok[..., None, None], S, eye2)
        c = torch.where(ok, c, torch.zeros_like(c))
        s_inv = _inv2(0.5 * (S + S.mT))
        weight = c  # the confidence factor of each (pseudo-)view
        cams = cameras
        n_heatmap = V
        if labels is not None and label_mask is not None:
            lab = labels.detach().to(dtype).movedim(-3, 0).reshape(V, -1, 2)
            lm = label_mask.to(torch.bool).movedim(-2, 0).reshape(V, -1) & torch.isfinite(lab).all(-1)
            m = torch.cat([m, torch.where(lm[..., None], lab, torch.zeros_like(lab))])
            s_inv = torch.cat([s_inv, (eye2 / label_sigma**2).expand(V, lab.shape[1], 2, 2)])
            weight = torch.cat([weight, lm.to(dtype)])
            cams = cameras.tile(2)
        Vt, N = m.shape[0], m.shape[1]
        used = weight > 0  # (Vt, N)
        # labels are trusted: only the heatmap views get the robust weights
        heatmap_view = (torch.arange(Vt, device=device) < n_heatmap)[:, None]
        observed = used.any(0)

        # 1. start: weighted DLT of all views and of every pair of heatmap views; robust choice
        dlt_weight = torch.sqrt(weight * 0.5 * s_inv.diagonal(dim1=-2, dim2=-1).sum(-1))
        masks = [torch.ones(Vt, dtype=dtype, device=device)]
        if robust is not None and V >= 3:
            for a, b in itertools.combinations(range(n_heatmap), 2):
                keep = torch.zeros(Vt, dtype=dtype, device=device)
                keep[[a, b]] = 1.0
                keep[n_heatmap:] = 1.0  # labels always take part
                masks.append(keep)
        K = len(masks)
        cand_w = torch.stack(masks)[:, :, None] * dlt_weight[None]  # (K, Vt, N)
        points_2d = m[None].expand(K, Vt, N, 2).permute(1, 0, 2, 3)  # (Vt, K, N, 2)
        candidates = triangulate_torch(
            points_2d, confidence=cand_w.permute(1, 0, 2), **cams.params()
        )  # (K, N, 3)
        if K > 1:
            finite = torch.isfinite(candidates).all(-1)
            safe = torch.where(finite[..., None], candidates, torch.zeros_like(candidates))
            uv = cams.project(safe)  # (Vt, K, N, 2)
            r = m[:, None] - uv
            d2 = torch.einsum("vkni,vnij,vknj->vkn", r, s_inv, r)
            term = torch.where(
                used[:, None], weight[:, None] * _robust_cost(d2, robust), torch.zeros_like(d2)
            )
            cost = term.nan_to_num(nan=float("inf")).sum(0)
            cost = torch.where(finite, cost, torch.full_like(cost, float("inf")))
            best = cost.argmin(0)  # (N,)
            X = candidates.gather(0, best[None, :, None].expand(1, N, 3))[0]
        else:
            X = candidates[0]
        # A keypoint seen by one (pseudo-)view only: on that view's ray, at the depth of the scene.
        missing = ~torch.isfinite(X).all(-1)
        if bool(missing.any()):
            finite_x = X[~missing]
            scene = finite_x.median(0).values if finite_x.shape[0] else X.new_zeros(3)
            best_view = weight.argmax(0)  # (N,)
            rays = _ray_points(cams, m, scene.expand(N, 3))  # (Vt, N, 3)
            on_ray = rays.gather(0, best_view[None, :, None].expand(1, N, 3))[0]
            on_ray = torch.where(torch.isfinite(on_ray), on_ray, scene.expand(N, 3))
            X = torch.where(missing[:, None], on_ray, X)
        X = torch.where(observed[:, None], X, torch.zeros_like(X))

        # 2. Gauss-Newton with robust weights; 3. the linearised Gaussian at the final point
        eye3 = torch.eye(3, dtype=dtype, device=device)
        for it in range(iterations + 1):
            uv, jac = cams.project_jacobian(X)  # (Vt, N, 2), (Vt, N, 2, 3)
            r = m - uv
            d2 = torch.einsum("vni,vnij,vnj->vn", r, s_inv, r)
            omega = weight * torch.where(heatmap_view, robust_weight(d2, robust), torch.ones_like(d2))
            omega = torch.where(torch.isfinite(omega) & used, omega, torch.zeros_like(omega))
            jac = torch.where(omega[..., None, None] > 0, jac, torch.zeros_like(jac))
            r = torch.where(omega[..., None] > 0, r, torch.zeros_like(r))
            jt_p = jac.mT @ (omega[..., None, None] * s_inv)  # (Vt, N, 3, 2)
            info = (jt_p @ jac).sum(0)  # (N, 3, 3)
            info = 0.5 * (info + info.mT)
            vec = (jt_p @ r[..., None])[..., 0].sum(0)  # (N, 3): J^T P r
            scale = info.diagonal(dim1=-2, dim2=-1).sum(-1) / 3.0
            damp = 1e-9 if it == iterations else 1e-6
            damping = (damp * scale + 1e-12)[:, None, None] * eye3
            step = torch.linalg.solve(info + damping, vec[..., None])[..., 0]
            if it < iterations:
                X = torch.where(torch.isfinite(step).all(-1, keepdim=True), X + step, X)
        obs_mean = X + torch.where(torch.isfinite(step), step, torch.zeros_like(step))
        obs_mean = torch.where(observed[:, None], obs_mean, torch.zeros_like(obs_mean))
        info = torch.where(observed[:, None, None], info, torch.zeros_like(info))
        point = torch.where(observed[:, None], X, torch.full_like(X, float("nan")))

    def unflat(x: Tensor, tail: tuple[int, ...]) -> Tensor:
        return x.reshape(*batch, J, *tail)

    view_weight = omega.reshape(Vt, *batch, J).movedim(0, -2)
    return TriangulatedObservations(
        mean=unflat(obs_mean, (3,)),
        precision=unflat(info, (3, 3)),
        point=unflat(point, (3,)),
        view_weight=view_weight,
        observed=unflat(observed, ()),
    )


# ----------------------------------------------------------------------------------------------
# the guide's Gaussian chain


def corrected_observations(
    correction: GuideCorrection3D, observations: TriangulatedObservations
) -> tuple[Tensor, Tensor]:
    """Pseudo-observation mean ``+ b_j`` and precision ``* exp(s_j)`` (float64)."""
    mean = observations.mean + correction.offset
    precision = observations.precision * correction.log_precision_scale.exp()[:, None, None]
    return mean, precision


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
    A, B, h = build_chain_precision(
        mean,
        precision,
        *potential_arguments3d(settings, weights),
        ridge=PRIOR_RIDGE,
        obs_mask=observations.observed,
        diagonal_offdiag=True,
    )
    if settings.bones:
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
    return BlockTridiagonalGaussian(A, B, h, keypoint_dim=3, diagonal_B=True)


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
    prior = keypoint_prior(time, keypoints, 3, *potential_arguments3d(settings, weights))
    cams = cameras.to(dtype=torch.float64)
    with pyro.plate("windows", num_windows), poutine.scale(scale=_window_scale(settings, windows)):
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
    with pyro.plate("windows", windows.mask.shape[0]), poutine.scale(scale=_window_scale(settings, windows)):
        pyro.sample("keypoints", q)
