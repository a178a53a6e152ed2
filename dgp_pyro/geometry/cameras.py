"""Calibrated cameras: Anipose calibration files, OpenCV camera model, DLT triangulation.

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

An Anipose calibration TOML holds one table per camera (``[cam_0]``, ``[cam_1]``, ...) with
``name``, ``size = [width, height]``, ``matrix`` (3 x 3 nested lists), ``distortions`` (5
numbers), ``rotation`` (3 Rodrigues numbers) and ``translation`` (3 numbers), and an optional
``[metadata]`` table. :meth:`CameraGroup.from_toml` reads it, :meth:`CameraGroup.to_toml`
writes the same layout back.

Projection exists twice: in NumPy (:meth:`Camera.project`, the reference) and in torch
(:func:`project_torch`, batched over views and differentiable, for the 3D model).
Undistortion and triangulation have one implementation, in torch, that the NumPy methods call
in float64 on the CPU, so both give the same numbers.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float
from scipy.spatial.transform import Rotation
from torch import Tensor

from dgp_pyro.atomic import atomic_path
from dgp_pyro.errors import DGPError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "Camera",
    "CameraGroup",
    "project_torch",
    "rodrigues_torch",
    "triangulate_torch",
    "undistort_points_torch",
]

#: Keys every camera table of an Anipose calibration file must have.
TOML_KEYS = ("name", "size", "matrix", "distortions", "rotation", "translation")
#: Undistortion stops when the distortion residual is below this (normalized image units).
UNDISTORT_TOL = 1e-12
#: A point whose residual is still above this after the iterations lies where the distortion
#: model cannot be inverted (beyond the fold of a strongly negative ``k1``): it becomes NaN.
UNDISTORT_FAIL = 1e-8
UNDISTORT_MAX_ITER = 50


# --------------------------------------------------------------------------------------------
# Camera


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
# Camera group


@dataclass(eq=False)
class CameraGroup:
    """Several calibrated cameras, in a fixed order (the order of views in arrays).

    Attributes:
        cameras: the cameras; their names must be unique.
        metadata: the ``[metadata]`` table of the Anipose file, kept as is.
        path: the file this group was read from, if any (for error messages).
    """

    cameras: list[Camera]
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    def __post_init__(self) -> None:
        self.cameras = list(self.cameras)
        if not self.cameras:
            raise DGPError("the calibration has no cameras", self.path)
        names = [c.name for c in self.cameras]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DGPError(f"camera names are not unique: {', '.join(dupes)}", self.path)

    def __len__(self) -> int:
        return len(self.cameras)

    def __eq__(self, other: object) -> bool:
        """Same cameras (exactly) in the same order and the same metadata; ``path`` is ignored."""
        if not isinstance(other, CameraGroup):
            return NotImplemented
        return self.cameras == other.cameras and self.metadata == other.metadata

    __hash__ = None  # type: ignore[assignment]

    @property
    def names(self) -> list[str]:
        """Camera names, in order."""
        return [c.name for c in self.cameras]

    # -- files ------------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, path: str | Path) -> CameraGroup:
        """Read an Anipose calibration file.

        Every table except ``[metadata]`` is a camera. Tables named ``cam_<n>`` come first, in
        the order of ``n`` (numeric, so ``cam_10`` follows ``cam_9``), then any others in file
        order. ``distortions`` with fewer than 5 numbers are padded with zeros; fisheye cameras
        (``fisheye = true``) are refused.
        """
        path = Path(path)
        if not path.is_file():
            raise DGPError("calibration file not found", path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise DGPError(f"cannot read the calibration ({exc.strerror or exc})", path) from exc
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise DGPError(
                f"not a valid TOML file ({exc})", path, hint="is this an Anipose calibration?"
            ) from exc
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            raise DGPError("[metadata] is not a table", path)
        keys = [k for k in data if k != "metadata"]
        for key in keys:
            if not isinstance(data[key], dict):
                raise DGPError(
                    f"unexpected top-level key {key!r}: an Anipose calibration holds one table per camera",
                    path,
                    hint="expected [cam_0], [cam_1], ...",
                )
        if not keys:
            raise DGPError("the calibration has no cameras", path, hint="expected [cam_0], [cam_1], ...")

        def order(key: str) -> tuple[int, int]:
            suffix = key[4:] if key.startswith("cam_") else ""
            return (0, int(suffix)) if suffix.isdigit() else (1, keys.index(key))

        cameras = []
        for key in sorted(keys, key=order):
            table = data[key]
            missing = [k for k in TOML_KEYS if k not in table]
            if missing:
                raise DGPError(
                    f"[{key}] lacks {', '.join(missing)}",
                    path,
                    hint=f"each camera needs {', '.join(TOML_KEYS)}",
                )
            if table.get("fisheye", False):
                raise DGPError(f"[{key}] is a fisheye camera, which is not supported", path,
                               hint="calibrate with the standard (non-fisheye) OpenCV model")
            try:
                cameras.append(
                    Camera(
                        name=table["name"],
                        size=table["size"],
                        matrix=table["matrix"],
                        dist=table["distortions"],
                        rvec=table["rotation"],
                        tvec=table["translation"],
                    )
                )
            except DGPError as exc:
                raise DGPError(f"[{key}] {exc.problem}", path, hint=exc.hint) from None
        try:
            return cls(cameras, metadata=metadata, path=path)
        except DGPError as exc:
            raise DGPError(exc.problem, path, hint=exc.hint) from None

    def to_toml(self, path: str | Path) -> None:
        """Write an Anipose calibration file, atomically.

        Floats are written with ``repr`` (shortest round-trip form), so :meth:`from_toml` reads
        back exactly the same numbers.
        """
        lines = []
        for i, cam in enumerate(self.cameras):
            d = cam.to_dict()
            lines.append(f"[cam_{i}]")
            lines.append(f"name = {_toml_string(d['name'])}")
            lines.append(f"size = [{d['size'][0]}, {d['size'][1]}]")
            lines.append("matrix = [" + ", ".join(_toml_floats(row) for row in d["matrix"]) + "]")
            for key in ("distortions", "rotation", "translation"):
                lines.append(f"{key} = {_toml_floats(d[key])}")
            lines.append("")
        text = "\n".join(lines)
        if self.metadata:
            import tomli_w

            text += "\n" + tomli_w.dumps({"metadata": self.metadata})
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")

    # -- selection --------------------------------------------------------------------------

    def subset(self, names: list[str]) -> CameraGroup:
        """The cameras called ``names``, in that order."""
        by_name = {c.name: c for c in self.cameras}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise DGPError(
                f"no camera called {', '.join(map(repr, unknown))} in the calibration",
                self.path,
                hint=f"cameras are {', '.join(self.names)}",
            )
        return CameraGroup([by_name[n] for n in names], metadata=dict(self.metadata), path=self.path)

    def match_views(self, views: list[str], path: str | Path | None = None) -> CameraGroup:
        """Reorder the cameras to the project's view order; every view needs one camera.

        Raises :class:`DGPError` (naming ``path``, default the calibration file) when the
        counts or names differ, saying which views lack a camera and which cameras are extra.
        """
        path = self.path if path is None else path
        names = self.names
        missing = [v for v in views if v not in names]
        extra = [n for n in names if n not in views]
        if missing or extra or len(views) != len(names):
            parts = [f"the project has {len(views)} views, the calibration {len(names)} cameras"]
            if missing:
                parts.append(f"no camera for view(s) {', '.join(map(repr, missing))}")
            if extra:
                parts.append(f"camera(s) {', '.join(map(repr, extra))} match no view")
            raise DGPError(
                "; ".join(parts),
                path,
                hint=f"camera names ({', '.join(names)}) must equal the view names ({', '.join(views)})",
            )
        return self.subset(list(views))

    # -- geometry ---------------------------------------------------------------------------

    def project(self, points: Float[np.ndarray, "... 3"]) -> Float[np.ndarray, "views ... 2"]:
        """Pixel coordinates of world points in every camera."""
        return np.stack([c.project(points) for c in self.cameras])

    def centers(self) -> Float[np.ndarray, "views 3"]:
        """Camera centres in world coordinates."""
        return np.stack([c.center() for c in self.cameras])

    def torch_params(
        self, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> dict[str, Tensor]:
        """``matrix (V,3,3)``, ``dist (V,5)``, ``rvec (V,3)``, ``tvec (V,3)`` as tensors.

        Pass them on with ``project_torch(points, **group.torch_params())`` (or
        :func:`triangulate_torch`). ``dtype`` defaults to torch's default dtype.
        """
        dtype = torch.get_default_dtype() if dtype is None else dtype

        def stack(attr: str) -> Tensor:
            values = np.stack([getattr(c, attr) for c in self.cameras])
            return torch.as_tensor(values, dtype=dtype, device=device)

        return {key: stack(key) for key in ("matrix", "dist", "rvec", "tvec")}

    def triangulate(
        self,
        points_2d: Float[np.ndarray, "views ... 2"],
        confidence: Float[np.ndarray, "views ..."] | None = None,
    ) -> Float[np.ndarray, "... 3"]:
        """Confidence-weighted DLT triangulation (see :func:`triangulate_torch` for the math).

        Args:
            points_2d: pixels in every view, ``(V, N, 2)`` or any ``(V, ..., 2)``; NaN = unseen.
            confidence: weight of each observation, ``(V, N)``; 0 or NaN drops it.

        Returns:
            ``(N, 3)`` world points; NaN where fewer than 2 views are usable.
        """
        points_2d = np.array(points_2d, dtype=np.float64)  # a writable copy for torch
        if points_2d.ndim < 2 or points_2d.shape[0] != len(self) or points_2d.shape[-1] != 2:
            raise ValueError(f"points_2d must be ({len(self)}, ..., 2), got {points_2d.shape}")
        conf = None
        if confidence is not None:
            conf = np.broadcast_to(np.asarray(confidence, dtype=np.float64), points_2d.shape[:-1])
            conf = torch.from_numpy(np.array(conf))  # a writable copy for torch
        params = self.torch_params(dtype=torch.float64)
        with torch.no_grad():
            out = triangulate_torch(torch.from_numpy(points_2d), confidence=conf, **params)
        return out.numpy()

    def reprojection_error(
        self, points_3d: Float[np.ndarray, "... 3"], points_2d: Float[np.ndarray, "views ... 2"]
    ) -> Float[np.ndarray, "views ..."]:
        """Pixel distance between the projections of ``points_3d`` and ``points_2d`` (NaN-aware)."""
        diff = self.project(points_3d) - np.asarray(points_2d, dtype=np.float64)
        return np.sqrt((diff**2).sum(-1))

    def check_geometry(
        self, points_3d: Float[np.ndarray, "... 3"] | None = None, min_angle_deg: float = 1e-4
    ) -> None:
        """Raise :class:`DGPError` where triangulation is ill-posed.

        Always: fewer than 2 cameras, or all camera centres at one point (every view sees the
        same rays). With ``points_3d``: a (finite) point whose rays from all camera centres
        are parallel, i.e. the centres and the point lie on one line, so depth along that
        line is unobservable. The largest angle between two rays to the point must reach
        ``min_angle_deg``.
        """
        if len(self) < 2:
            raise DGPError(
                f"triangulation needs at least 2 cameras, the calibration has {len(self)}", self.path
            )
        centers = self.centers()
        spread = np.max(np.linalg.norm(centers - centers.mean(0), axis=1))
        scale = max(1.0, float(np.max(np.linalg.norm(centers, axis=1))))
        if spread < 1e-9 * scale:
            raise DGPError(
                "all camera centres coincide, so triangulation is ill-posed",
                self.path,
                hint="the cameras need distinct positions (a baseline); check the translations",
            )
        if points_3d is None:
            return
        pts = np.asarray(points_3d, dtype=np.float64).reshape(-1, 3)
        pts = pts[np.isfinite(pts).all(1)]
        if not len(pts):
            return
        rays = pts[None] - centers[:, None]  # (V, N, 3)
        rays /= np.maximum(np.linalg.norm(rays, axis=-1, keepdims=True), 1e-300)
        # Largest angle between two rays to each point, via the largest |cross product|.
        sines = np.linalg.norm(np.cross(rays[:, None], rays[None, :]), axis=-1)  # (V, V, N)
        cosines = np.einsum("anc,bnc->abn", rays, rays)
        angles = np.arctan2(sines, np.abs(cosines)).reshape(-1, len(pts)).max(0)  # angle between lines
        bad = np.flatnonzero(angles < np.deg2rad(min_angle_deg))
        if len(bad):
            raise DGPError(
                f"triangulation is ill-posed for {len(bad)} of {len(pts)} points (first: "
                f"{pts[bad[0]].tolist()}): the camera centres and the point are collinear",
                self.path,
                hint="the views must see the points from different directions",
            )


# --------------------------------------------------------------------------------------------
# torch: batched and differentiable


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

    The same model as :meth:`Camera.project`: ``X_c = R(rvec) X + t``, ``x = X_c/Z_c``,
    ``y = Y_c/Z_c``, OpenCV distortion, then ``K``.
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


# --------------------------------------------------------------------------------------------
# helpers


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


def _toml_string(text: str) -> str:
    import tomli_w

    return tomli_w.dumps({"x": text})[len("x = "):].strip()


def _toml_floats(values: list[float]) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"
