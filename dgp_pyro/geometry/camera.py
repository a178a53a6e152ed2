"""One calibrated camera (:class:`Camera`): the OpenCV pinhole model with lens distortion, in NumPy.

Conventions (those of Anipose and OpenCV, without depending on OpenCV):

- A world point ``X`` goes to camera coordinates by ``X_c = R X + t``, with ``R`` the rotation
  given by the Rodrigues vector ``rvec`` (axis times angle) and ``t = tvec``. The camera looks
  along its ``+z`` axis, ``x`` points right in the image and ``y`` points down.
- Normalized (undistorted) image coordinates are ``x = X_c / Z_c``, ``y = Y_c / Z_c``.
- Lens distortion (OpenCV order ``k1 k2 p1 p2 k3``), with ``r^2 = x^2 + y^2``::

      radial = 1 + k1 r^2 + k2 r^4 + k3 r^6
      x_d = x radial + 2 p1 x y + p2 (r^2 + 2 x^2)
      y_d = y radial + p1 (r^2 + 2 y^2) + 2 p2 x y

- Pixels: ``[u, v, 1]^T = K [x_d, y_d, 1]^T`` with ``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]``;
  ``u`` to the right, ``v`` down, origin at the centre of the top-left pixel (OpenCV and
  DeepLabCut).

:meth:`Camera.project` is the NumPy reference of the projection; the batched, differentiable
torch version is :func:`~dgp_pyro.geometry.projection.project_torch`.
:meth:`Camera.undistort_points` calls :func:`~dgp_pyro.geometry.projection.undistort_points_torch`
in float64 on the CPU, so both give the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from scipy.spatial.transform import Rotation

from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.projection import undistort_points_torch

__all__ = ["Camera"]


@dataclass(eq=False)
class Camera:
    """One calibrated camera (OpenCV pinhole model with radial and tangential distortion).

    Attributes:
        name: camera name, as the ``name`` key of the Anipose file.
        size: ``(width, height)`` of the image in pixels, as Anipose writes it.
        matrix: ``(3, 3)`` intrinsic matrix ``K``.
        dist: ``(5,)`` distortion ``k1 k2 p1 p2 k3``; shorter input is padded with zeros.
        rvec: ``(3,)`` Rodrigues vector of the world-to-camera rotation.
        tvec: ``(3,)`` world-to-camera translation.

    The constructor validates and converts every field (float64 arrays, integer size) and
    raises :class:`DGPError` for a singular or non-finite camera matrix, wrong shapes, or more
    than 5 distortion coefficients.
    """

    name: str
    size: tuple[int, int]
    matrix: Float[np.ndarray, "3 3"]
    dist: Float[np.ndarray, "5"] = field(default_factory=lambda: np.zeros(5))
    rvec: Float[np.ndarray, "3"] = field(default_factory=lambda: np.zeros(3))
    tvec: Float[np.ndarray, "3"] = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        self.name = str(self.name)
        who = f"camera {self.name!r}"
        self.size = _as_size(self.size, who)
        self.matrix = _as_array(self.matrix, (3, 3), f"{who}: matrix")
        dist = _as_array(self.dist, None, f"{who}: distortions").ravel()
        if dist.size > 5:
            raise DGPError(
                f"{who}: {dist.size} distortion coefficients, expected at most 5",
                hint="only the OpenCV model k1 k2 p1 p2 k3 is supported",
            )
        self.dist = np.concatenate([dist, np.zeros(5 - dist.size)])
        self.rvec = _as_array(self.rvec, (3,), f"{who}: rotation")
        self.tvec = _as_array(self.tvec, (3,), f"{who}: translation")
        k = self.matrix
        if not np.allclose(k[2], [0.0, 0.0, 1.0], rtol=0, atol=1e-9) or abs(k[1, 0]) > 1e-9:
            raise DGPError(
                f"{who}: the camera matrix is not of the form [[fx, s, cx], [0, fy, cy], [0, 0, 1]]",
                hint=f"got {k.tolist()}",
            )
        if not (k[0, 0] > 0 and k[1, 1] > 0):
            raise DGPError(
                f"{who}: the camera matrix has focal lengths fx={k[0, 0]:g}, fy={k[1, 1]:g}; both "
                "must be positive",
                hint="the calibration is broken; recalibrate",
            )
        # det K = fx fy: relative to the image scale, a tiny det means a singular camera.
        scale = max(self.size) ** 2
        if abs(np.linalg.det(k)) < 1e-12 * scale:
            raise DGPError(f"{who}: the camera matrix is singular", hint="recalibrate this camera")

    def __eq__(self, other: object) -> bool:
        """Exact equality of every field (bitwise equal floats)."""
        if not isinstance(other, Camera):
            return NotImplemented
        return (
            self.name == other.name
            and self.size == other.size
            and all(
                np.array_equal(getattr(self, a), getattr(other, a))
                for a in ("matrix", "dist", "rvec", "tvec")
            )
        )

    __hash__ = None  # type: ignore[assignment]

    # -- geometry ---------------------------------------------------------------------------

    def rotation_matrix(self) -> Float[np.ndarray, "3 3"]:
        """The world-to-camera rotation ``R = exp([rvec]_x)`` (Rodrigues' formula)."""
        return Rotation.from_rotvec(self.rvec).as_matrix()

    def world_to_camera(self, points: Float[np.ndarray, "... 3"]) -> Float[np.ndarray, "... 3"]:
        """Camera coordinates ``X_c = R X + t`` of world points."""
        points = np.asarray(points, dtype=np.float64)
        return points @ self.rotation_matrix().T + self.tvec

    def center(self) -> Float[np.ndarray, "3"]:
        """The camera centre in world coordinates, ``C = -R^T t``."""
        return -self.rotation_matrix().T @ self.tvec

    def projection_matrix(self) -> Float[np.ndarray, "3 4"]:
        """``[R | t]``: maps homogeneous world points to normalized image coordinates."""
        return np.concatenate([self.rotation_matrix(), self.tvec[:, None]], axis=1)

    def distort(self, normalized: Float[np.ndarray, "... 2"]) -> Float[np.ndarray, "... 2"]:
        """Apply the lens distortion to normalized coordinates ``(x, y) -> (x_d, y_d)``."""
        normalized = np.asarray(normalized, dtype=np.float64)
        x, y = normalized[..., 0], normalized[..., 1]
        k1, k2, p1, p2, k3 = self.dist
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
        xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        return np.stack([xd, yd], axis=-1)

    def project(self, points: Float[np.ndarray, "... 3"]) -> Float[np.ndarray, "... 2"]:
        """Pixel coordinates of world points (pinhole, then distortion, then ``K``).

        ``u = fx x_d + s y_d + cx``, ``v = fy y_d + cy``. Like ``cv2.projectPoints``, points
        behind the camera are projected too (through the centre); a point on the camera plane
        ``Z_c = 0`` gives inf or NaN. NaN points give NaN pixels.
        """
        pc = self.world_to_camera(points)
        with np.errstate(divide="ignore", invalid="ignore"):
            normalized = pc[..., :2] / pc[..., 2:3]
        d = self.distort(normalized)
        k = self.matrix
        u = k[0, 0] * d[..., 0] + k[0, 1] * d[..., 1] + k[0, 2]
        v = k[1, 1] * d[..., 1] + k[1, 2]
        return np.stack([u, v], axis=-1)

    def undistort_points(self, pixels: Float[np.ndarray, "... 2"]) -> Float[np.ndarray, "... 2"]:
        """Normalized undistorted coordinates ``(X_c/Z_c, Y_c/Z_c)`` of pixels.

        The inverse of :meth:`project` up to depth, like ``cv2.undistortPoints`` without ``P``:
        ``(x_d, y_d) = K^{-1} (u, v, 1)``, then Newton's method (with step halving) solves
        ``distort(x, y) = (x_d, y_d)`` from ``(x, y) = (x_d, y_d)`` until the residual is below
        1e-12. A pixel outside the region where the distortion can be inverted gives NaN, as
        does a NaN pixel.
        """
        pixels = np.array(pixels, dtype=np.float64)  # a writable copy for torch
        out = undistort_points_torch(
            torch.from_numpy(pixels)[None],
            torch.from_numpy(self.matrix)[None],
            torch.from_numpy(self.dist)[None],
        )
        return out[0].numpy()

    def check_in_front(self, points: Float[np.ndarray, "... 3"]) -> Bool[np.ndarray, "..."]:
        """Whether each world point is in front of the camera (``Z_c > 0``)."""
        return self.world_to_camera(points)[..., 2] > 0

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def look_at(
        cls,
        name: str,
        size: tuple[int, int],
        focal_px: float,
        position: Float[np.ndarray, "3"],
        target: Float[np.ndarray, "3"],
        up: Float[np.ndarray, "3"] = (0.0, 0.0, 1.0),
        dist: Float[np.ndarray, "5"] | None = None,
    ) -> Camera:
        """A camera at ``position`` looking at ``target``, for synthetic rigs.

        The camera axes in world coordinates: ``z = (target - position) / |.|`` (forward),
        ``x = z x up / |.|`` (image right), ``y = z x x`` (image down, so ``up`` points up in
        the image). ``R`` has rows ``x, y, z`` and ``t = -R position``. The principal point is
        the image centre ``((w - 1) / 2, (h - 1) / 2)`` and ``fx = fy = focal_px``.
        """
        position = np.asarray(position, dtype=np.float64)
        forward = np.asarray(target, dtype=np.float64) - position
        norm = np.linalg.norm(forward)
        if not norm > 0:
            raise DGPError(f"camera {name!r}: position and target coincide", hint="move the target")
        z = forward / norm
        x = np.cross(z, np.asarray(up, dtype=np.float64))
        if np.linalg.norm(x) < 1e-9:
            raise DGPError(
                f"camera {name!r}: the viewing direction is parallel to 'up'",
                hint="pass another up vector",
            )
        x /= np.linalg.norm(x)
        y = np.cross(z, x)
        rot = np.stack([x, y, z])
        w, h = _as_size(size, f"camera {name!r}")
        matrix = np.array([[focal_px, 0.0, (w - 1) / 2.0], [0.0, focal_px, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
        return cls(
            name=name,
            size=(w, h),
            matrix=matrix,
            dist=np.zeros(5) if dist is None else dist,
            rvec=Rotation.from_matrix(rot).as_rotvec(),
            tvec=-rot @ position,
        )

    def to_dict(self) -> dict[str, Any]:
        """The Anipose table of this camera (plain Python numbers)."""
        return {
            "name": self.name,
            "size": [int(self.size[0]), int(self.size[1])],
            "matrix": self.matrix.tolist(),
            "distortions": self.dist.tolist(),
            "rotation": self.rvec.tolist(),
            "translation": self.tvec.tolist(),
        }


# --------------------------------------------------------------------------------------------


def _as_array(value: Any, shape: tuple[int, ...] | None, what: str) -> np.ndarray:
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DGPError(f"{what} is not an array of numbers ({exc})") from None
    if shape is not None and arr.shape != shape:
        raise DGPError(f"{what} has shape {arr.shape}, expected {shape}")
    if shape is None and arr.ndim > 1:
        raise DGPError(f"{what} has shape {arr.shape}, expected a list of numbers")
    if not np.isfinite(arr).all():
        raise DGPError(f"{what} has non-finite values: {arr.tolist()}", hint="recalibrate this camera")
    return arr


def _as_size(value: Any, who: str) -> tuple[int, int]:
    try:
        w, h = (float(v) for v in value)
    except (TypeError, ValueError):
        raise DGPError(f"{who}: size must be [width, height], got {value!r}") from None
    if not (math.isfinite(w) and math.isfinite(h) and w == int(w) and h == int(h) and w > 0 and h > 0):
        raise DGPError(f"{who}: size must be two positive integers [width, height], got {value!r}")
    return int(w), int(h)
