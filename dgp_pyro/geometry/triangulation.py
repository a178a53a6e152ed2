"""Confidence-weighted DLT triangulation (:func:`triangulate_torch`), batched and differentiable.

Ours, because no library we could use has it (checked against OpenCV 5.1 and aniposelib 0.8):
OpenCV's ``cv2.triangulatePoints`` takes two views and no weights; aniposelib's DLT
(``triangulate_simple``, behind ``CameraGroup.triangulate``) stacks the rows of every valid view
with equal weight (a 0/1 mask), and its scores only weight the reprojection residuals of the
nonlinear ``triangulate_optim``; neither runs on torch tensors with gradients. Here each view's
two DLT rows are scaled by the confidence of its 2D point, views with NaN points or zero
confidence drop out per point, and the whole batch goes through one ``torch.linalg.svd``, so the
3D model (differentiably) and :meth:`~dgp_pyro.geometry.camera_group.CameraGroup.triangulate`
(in float64) share it.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from dgp_pyro.geometry.projection import rodrigues_torch, undistort_points_torch

__all__ = ["triangulate_torch"]


def triangulate_torch(
    points_2d: Float[Tensor, "views ... 2"],
    matrix: Float[Tensor, "views 3 3"],
    dist: Float[Tensor, "views 5"],
    rvec: Float[Tensor, "views 3"],
    tvec: Float[Tensor, "views 3"],
    confidence: Float[Tensor, "views ..."] | None = None,
) -> Float[Tensor, "... 3"]:
    """Confidence-weighted DLT triangulation, batched and differentiable.

    Each view ``v`` with undistorted normalized point ``(x, y)`` (see
    :func:`undistort_points_torch`) and ``P = [R | t]`` gives two linear equations in the
    homogeneous point ``X``::

        w_v (x P_3 - P_1) X = 0,    w_v (y P_3 - P_2) X = 0

    (``P_i`` the rows of ``P``, ``w_v`` the confidence). ``X`` is the right singular vector
    of the smallest singular value of the stacked ``2V x 4`` matrix, i.e. it minimises the
    confidence-weighted algebraic error ``sum_v w_v^2 |.|^2`` with ``|X| = 1``. For
    conditioning, world coordinates are first centred on the mean camera centre ``c`` and
    scaled by the rig's RMS spread ``s`` (``X = s X' + c``), and mapped back after.

    A view is dropped where its point is NaN, its confidence is 0 or NaN, or undistortion
    fails. Points with fewer than 2 usable views give NaN (with zero, not NaN, gradients).

    No library has this confidence weighting (see the module docstring), so it is ours.
    """
    n_views = points_2d.shape[0]
    batch = points_2d.shape[1:-1]
    norm = undistort_points_torch(points_2d, matrix, dist).reshape(n_views, -1, 2)  # (V, N, 2)
    if confidence is None:
        weight = torch.ones_like(norm[..., 0])
    else:
        weight = confidence.to(norm.dtype).reshape(n_views, -1)
    finite = torch.isfinite(norm).all(-1) & torch.isfinite(weight) & (weight > 0)
    weight = torch.where(finite, weight, torch.zeros_like(weight))
    norm = torch.where(finite[..., None], norm, torch.zeros_like(norm))
    usable = finite.sum(0) >= 2  # (N,)

    rot = rodrigues_torch(rvec)  # (V, 3, 3)
    centers = -(rot.transpose(1, 2) @ tvec[..., None])[..., 0]  # (V, 3)
    c = centers.mean(0)
    s = torch.sqrt(torch.clamp(((centers - c) ** 2).sum(-1).mean(), min=1e-24))  # smooth, unlike a max
    # P X = R (s X' + c) + t  ->  proportional to [R | (R c + t) / s] X'_h.
    p = torch.cat([rot, ((rot @ c) + tvec)[..., None] / s], dim=-1)  # (V, 3, 4)
    rows_x = norm[..., 0, None] * p[:, None, 2] - p[:, None, 0]  # (V, N, 4)
    rows_y = norm[..., 1, None] * p[:, None, 2] - p[:, None, 1]
    a = torch.stack([rows_x, rows_y], dim=1) * weight[:, None, :, None]  # (V, 2, N, 4)
    a = a.permute(2, 0, 1, 3).reshape(-1, 2 * n_views, 4)  # (N, 2V, 4)
    # Unusable points get a harmless well-conditioned system (distinct singular values, so
    # the SVD backward stays finite) and NaN output.
    dummy = torch.zeros(2 * n_views, 4, dtype=a.dtype, device=a.device)
    k = min(4, 2 * n_views)
    dummy[torch.arange(k), torch.arange(k)] = torch.arange(1, k + 1, dtype=a.dtype, device=a.device)
    a = torch.where(usable[:, None, None], a, dummy)
    if a.shape[0] == 0:
        return torch.zeros(*batch, 3, dtype=a.dtype, device=a.device)
    if 2 * n_views < 4:  # a single view: nothing is usable
        return torch.full((*batch, 3), math.nan, dtype=a.dtype, device=a.device)
    _, _, vh = torch.linalg.svd(a, full_matrices=False)
    h = vh[:, -1, :]  # (N, 4)
    w = h[:, 3:]
    ok = usable & (w[:, 0].abs() > 1e-12 * h.norm(dim=-1))
    w = torch.where(ok[:, None], w, torch.ones_like(w))
    points = s * h[:, :3] / w + c
    points = torch.where(ok[:, None], points, torch.full_like(points, math.nan))
    return points.reshape(*batch, 3)
