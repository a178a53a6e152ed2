r"""The V cameras and the V views in the network's output, for the multi-view 3D model.

Every view :math:`v` sees the projection :math:`\pi_v(Y)` of the world keypoints :math:`Y`
(units of the calibration, millimetres for the synthetic rig): the calibrated pinhole camera
with OpenCV lens distortion of the Anipose file
(:func:`~dgp_pyro.geometry.projection.project_torch`), here in the network's *training pixels*:
the resize from frame to training size is folded into the intrinsic matrix
(:class:`ViewCameras`, which also gives the Jacobian of the projection).

**Views in the network's output** (:class:`ViewChannels`): the model and the guide take each
view's heatmaps as ``(..., V, J, h, w)``. With one camera per image that is the network's
output per image; in a mirror (suffix) project one image holds every view and its ``J V``
channels are split into views by an index (each image goes through the network once). A view
that lacks a keypoint adds neither a neural potential nor a pseudo-observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from dgp_pyro.geometry.camera_group import CameraGroup
from dgp_pyro.geometry.projection import rodrigues_torch

__all__ = ["ViewCameras", "ViewChannels"]


@dataclass
class ViewCameras:
    """The V cameras as tensors, in the pixel frame the heatmaps live in.

    ``matrix (V, 3, 3)``, ``dist (V, 5)``, ``rvec (V, 3)``, ``tvec (V, 3)`` as in
    :meth:`~dgp_pyro.geometry.camera_group.CameraGroup.torch_params`. :meth:`from_group` with ``size``
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
    (:class:`~dgp_pyro.model.dgp3d.ViewWindowBatch`) and given zero confidence (:meth:`summaries`).

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
