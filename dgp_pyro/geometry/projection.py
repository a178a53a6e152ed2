"""Projection, Rodrigues rotations and undistortion in torch: batched over views and differentiable.

The same camera model as :class:`~dgp_pyro.geometry.camera.Camera` (see its module for the
conventions): ``X_c = R(rvec) X + t``, ``x = X_c/Z_c``, ``y = Y_c/Z_c``, OpenCV distortion
``k1 k2 p1 p2 k3``, then ``K``. Camera parameters are stacked over V views (``matrix (V,3,3)``,
``dist (V,5)``, ``rvec (V,3)``, ``tvec (V,3)``, as
:meth:`~dgp_pyro.geometry.camera_group.CameraGroup.torch_params` gives them). The 3D model
projects with these; the NumPy :class:`~dgp_pyro.geometry.camera.Camera` undistorts with them.
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["project_torch", "rodrigues_torch", "undistort_points_torch"]


#: Undistortion stops when the distortion residual is below this (normalized image units).
UNDISTORT_TOL = 1e-12
#: A point whose residual is still above this after the iterations lies where the distortion
#: model cannot be inverted (beyond the fold of a strongly negative ``k1``): it becomes NaN.
UNDISTORT_FAIL = 1e-8
UNDISTORT_MAX_ITER = 50


def rodrigues_torch(rvec: Float[Tensor, "... 3"]) -> Float[Tensor, "... 3 3"]:
    """Rotation matrices from Rodrigues vectors, differentiable everywhere.

    ``R = I + a [r]_x + b [r]_x^2`` with ``theta = |r|``, ``a = sin(theta) / theta`` and
    ``b = (1 - cos theta) / theta^2 = 2 sin^2(theta/2) / theta^2``. Below ``theta^2 = 1e-6``,
    ``a`` and ``b`` come from their Taylor series, so ``theta = 0`` has exact values and
    finite gradients (no ``0/0``).
    """
    theta2 = (rvec * rvec).sum(-1)
    small = theta2 < 1e-6
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta2), theta2))
    a = torch.where(small, 1.0 - theta2 / 6.0 + theta2**2 / 120.0, torch.sin(theta) / theta)
    b = torch.where(
        small, 0.5 - theta2 / 24.0 + theta2**2 / 720.0, 2.0 * torch.sin(theta / 2.0) ** 2 / theta**2
    )
    zero = torch.zeros_like(rvec[..., 0])
    rx, ry, rz = rvec.unbind(-1)
    skew = torch.stack([zero, -rz, ry, rz, zero, -rx, -ry, rx, zero], dim=-1).reshape(*rvec.shape, 3)
    eye = torch.eye(3, dtype=rvec.dtype, device=rvec.device)
    return eye + a[..., None, None] * skew + b[..., None, None] * (skew @ skew)


def _distort_torch(
    x: Tensor, y: Tensor, dist: Float[Tensor, "views 5"], view_dims: int
) -> tuple[Tensor, Tensor]:
    """The OpenCV distortion of normalized coordinates ``x, y`` of shape ``(V, ...)``."""
    shape = (dist.shape[0],) + (1,) * view_dims
    k1, k2, p1, p2, k3 = (dist[:, i].reshape(shape) for i in range(5))
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return xd, yd


def project_torch(
    points: Float[Tensor, "... 3"],
    matrix: Float[Tensor, "views 3 3"],
    dist: Float[Tensor, "views 5"],
    rvec: Float[Tensor, "views 3"],
    tvec: Float[Tensor, "views 3"],
) -> Float[Tensor, "views ... 2"]:
    """Pixel coordinates of world points in V cameras, differentiable in every argument.

    The same model as :meth:`~dgp_pyro.geometry.camera.Camera.project`: ``X_c = R(rvec) X + t``,
    ``x = X_c/Z_c``, ``y = Y_c/Z_c``, OpenCV distortion, then ``K``.
    """
    rot = rodrigues_torch(rvec)  # (V, 3, 3)
    batch = points.shape[:-1]
    flat = points.reshape(-1, 3)
    pc = torch.einsum("vij,mj->vmi", rot, flat) + tvec[:, None, :]  # (V, M, 3)
    x = pc[..., 0] / pc[..., 2]
    y = pc[..., 1] / pc[..., 2]
    xd, yd = _distort_torch(x, y, dist, 1)
    fx, s, cx = matrix[:, 0, 0, None], matrix[:, 0, 1, None], matrix[:, 0, 2, None]
    fy, cy = matrix[:, 1, 1, None], matrix[:, 1, 2, None]
    u = fx * xd + s * yd + cx
    v = fy * yd + cy
    return torch.stack([u, v], dim=-1).reshape(rot.shape[0], *batch, 2)


def _distortion_residual(
    x: Tensor, y: Tensor, xd: Tensor, yd: Tensor, dist: Tensor, view_dims: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Residual ``distort(x, y) - (xd, yd)`` and its (symmetric) Jacobian ``[[a, b], [b, c]]``.

    With ``rho = radial(r^2)`` and ``rho' = k1 + 2 k2 r^2 + 3 k3 r^4``::

        d x_d / dx = rho + 2 x^2 rho' + 2 p1 y + 6 p2 x
        d x_d / dy = d y_d / dx = 2 x y rho' + 2 p1 x + 2 p2 y
        d y_d / dy = rho + 2 y^2 rho' + 6 p1 y + 2 p2 x
    """
    shape = (dist.shape[0],) + (1,) * view_dims
    k1, k2, p1, p2, k3 = (dist[:, i].reshape(shape) for i in range(5))
    r2 = x * x + y * y
    radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    dradial = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)
    fx = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x) - xd
    fy = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y - yd
    a = radial + 2.0 * x * x * dradial + 2.0 * p1 * y + 6.0 * p2 * x
    b = 2.0 * x * y * dradial + 2.0 * p1 * x + 2.0 * p2 * y
    c = radial + 2.0 * y * y * dradial + 6.0 * p1 * y + 2.0 * p2 * x
    return fx, fy, a, b, c


def _newton_step(fx: Tensor, fy: Tensor, a: Tensor, b: Tensor, c: Tensor) -> tuple[Tensor, Tensor]:
    """``-J^{-1} F`` for the symmetric 2 x 2 Jacobian ``J = [[a, b], [b, c]]``."""
    det = a * c - b * b
    tiny = torch.finfo(det.dtype).tiny
    det = torch.where(det.abs() > tiny, det, torch.full_like(det, tiny))
    return -(c * fx - b * fy) / det, -(a * fy - b * fx) / det


def undistort_points_torch(
    pixels: Float[Tensor, "views ... 2"],
    matrix: Float[Tensor, "views 3 3"],
    dist: Float[Tensor, "views 5"],
) -> Float[Tensor, "views ... 2"]:
    """Normalized undistorted coordinates of pixels in V cameras (inverse of the distortion).

    ``y_d = (v - cy) / fy``, ``x_d = (u - cx - s y_d) / fx``; then Newton's method with step
    halving solves ``distort(x, y) = (x_d, y_d)`` starting at ``(x_d, y_d)``, without
    gradients, until the residual is below 1e-12 (float64; ``8 eps`` in float32), at most 50
    iterations. One more Newton step with gradients from the (detached) solution gives exact
    first-order gradients by the implicit function theorem, ``dx = -J^{-1} dF``, at the cost
    of one step. Points that do not converge (outside the invertible region) or whose radial
    factor is not positive become NaN.
    """
    view_dims = pixels.dim() - 2
    shape = (matrix.shape[0],) + (1,) * view_dims
    fx_, s_, cx_ = (matrix[:, 0, j].reshape(shape) for j in range(3))
    fy_, cy_ = matrix[:, 1, 1].reshape(shape), matrix[:, 1, 2].reshape(shape)
    yd = (pixels[..., 1] - cy_) / fy_
    xd = (pixels[..., 0] - cx_ - s_ * yd) / fx_
    with torch.no_grad():
        dist0, xd0, yd0 = dist.detach(), xd.detach(), yd.detach()
        x, y = xd0.clone(), yd0.clone()
        fx, fy, a, b, c = _distortion_residual(x, y, xd0, yd0, dist0, view_dims)
        res = torch.maximum(fx.abs(), fy.abs())
        # 1e-12 in float64; a few ulps in float32, where 1e-12 cannot be reached.
        eps = torch.finfo(pixels.dtype).eps
        magnitude = torch.clamp(torch.maximum(xd0.abs(), yd0.abs()), min=1.0)
        tol = max(UNDISTORT_TOL, 8 * eps) * magnitude
        for _ in range(UNDISTORT_MAX_ITER):
            active = res > tol  # NaN compares False: NaN points stay inactive
            if not bool(active.any()):
                break
            dx, dy = _newton_step(fx, fy, a, b, c)
            step = torch.ones_like(x)
            for _ in range(30):  # halve the step until the residual decreases
                xn, yn = x + step * dx, y + step * dy
                fxn, fyn, an, bn, cn = _distortion_residual(xn, yn, xd0, yd0, dist0, view_dims)
                resn = torch.maximum(fxn.abs(), fyn.abs())
                ok = resn < res
                if bool((ok | ~active).all()):
                    break
                step = torch.where(ok | ~active, step, step / 2.0)
            upd = active & ok
            x, y = torch.where(upd, xn, x), torch.where(upd, yn, y)
            fx, fy = torch.where(upd, fxn, fx), torch.where(upd, fyn, fy)
            a, b, c = torch.where(upd, an, a), torch.where(upd, bn, b), torch.where(upd, cn, c)
            res = torch.where(upd, resn, res)
            if not bool(upd.any()):
                break
        k1, k2, k3 = (dist0[:, i].reshape(shape) for i in (0, 1, 4))
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        failed = ~(res <= max(UNDISTORT_FAIL, 100 * eps) * magnitude)
        failed = failed | ~(radial > 0)
    if torch.is_grad_enabled() and (pixels.requires_grad or matrix.requires_grad or dist.requires_grad):
        x0 = torch.where(failed, torch.zeros_like(x), x)
        y0 = torch.where(failed, torch.zeros_like(y), y)
        fx, fy, a, b, c = _distortion_residual(x0, y0, xd, yd, dist, view_dims)
        dx, dy = _newton_step(fx, fy, a.detach(), b.detach(), c.detach())
        x, y = x0 + dx, y0 + dy
    nan = torch.full_like(x, math.nan)
    return torch.stack([torch.where(failed, nan, x), torch.where(failed, nan, y)], dim=-1)
