"""Camera helpers of the synthetic renderer: pose, projection, focal length and the ray of every pixel.

They use the public :class:`~dgp_pyro.geometry.camera.Camera` API only (``world_to_camera``,
``project``, ``size``), so any object with those methods renders.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

__all__ = ["camera_pose", "camera_size", "focal_length", "pixel_rays", "project_points"]


def camera_pose(camera) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre C (3,) and rotation R (3, 3), with ``world_to_camera(p) = R p + t``."""
    t = np.asarray(camera.world_to_camera(np.zeros((1, 3))), dtype=np.float64).reshape(3)
    R = np.asarray(camera.world_to_camera(np.eye(3)), dtype=np.float64).reshape(3, 3).T - t[:, None]
    C = -R.T @ t
    return C, R


def project_points(camera, points: np.ndarray) -> np.ndarray:
    return np.asarray(camera.project(np.asarray(points, dtype=np.float64)), dtype=np.float64)


def camera_size(camera) -> tuple[int, int]:
    """(W, H) of a camera's images."""
    size = getattr(camera, "size", None)
    if size is None:
        size = (camera.width, camera.height)
    return int(size[0]), int(size[1])


def pixel_rays(camera, iterations: int = 12) -> Float[np.ndarray, "H W 3"]:
    """Unit world directions of the rays through every pixel centre, lens distortion included.

    The undistortion inverts ``camera.project`` by Gauss-Newton on the normalised image
    coordinates, so rays and projections agree to well under a hundredth of a pixel.
    """
    W, H = camera_size(camera)
    C, R = camera_pose(camera)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    target = np.stack([xs, ys], axis=-1).reshape(-1, 2)

    def proj(q: np.ndarray) -> np.ndarray:
        cam = np.concatenate([q, np.ones((len(q), 1))], axis=1)
        return project_points(camera, C[None] + cam @ R)

    p0 = proj(np.zeros((1, 2)))[0]
    eps = 1e-3
    f = (proj(np.array([[eps, 0.0]]))[0, 0] - p0[0]) / eps, (proj(np.array([[0.0, eps]]))[0, 1] - p0[1]) / eps
    q = (target - p0) / np.array(f)
    h = 1e-6
    for _ in range(iterations):
        r = proj(q) - target
        jx = (proj(q + [h, 0.0]) - proj(q)) / h
        jy = (proj(q + [0.0, h]) - proj(q)) / h
        det = jx[:, 0] * jy[:, 1] - jx[:, 1] * jy[:, 0]
        dx = (jy[:, 1] * r[:, 0] - jy[:, 0] * r[:, 1]) / det
        dy = (-jx[:, 1] * r[:, 0] + jx[:, 0] * r[:, 1]) / det
        q = q - np.stack([dx, dy], axis=-1)
        if np.abs(r).max() < 1e-7:
            break
    cam = np.concatenate([q, np.ones((len(q), 1))], axis=1)
    d = cam @ R
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return d.reshape(H, W, 3)


def focal_length(camera) -> float:
    C, R = camera_pose(camera)
    p0 = project_points(camera, (C + R[2] * 1000.0)[None])[0]
    p1 = project_points(camera, (C + R[2] * 1000.0 + R[0] * 1.0)[None])[0]
    return float(np.linalg.norm(p1 - p0) * 1000.0)
