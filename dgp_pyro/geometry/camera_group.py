"""Several calibrated cameras (:class:`CameraGroup`): the Anipose calibration file, views, triangulation.

An Anipose calibration TOML holds one table per camera (``[cam_0]``, ``[cam_1]``, ...) with
``name``, ``size = [width, height]``, ``matrix`` (3 x 3 nested lists), ``distortions`` (5
numbers), ``rotation`` (3 Rodrigues numbers) and ``translation`` (3 numbers), and an optional
``[metadata]`` table. :meth:`CameraGroup.from_toml` reads it, :meth:`CameraGroup.to_toml`
writes the same layout back.

It is written with ``tomli_w`` (floats in their shortest round-trip form, so reading back gives
the same numbers). The group projects with :class:`~dgp_pyro.geometry.camera.Camera`, and
triangulates with :func:`~dgp_pyro.geometry.triangulation.triangulate_torch` in float64.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomli_w
import torch
from jaxtyping import Float
from torch import Tensor

from dgp_pyro.atomic import atomic_path
from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.camera import Camera
from dgp_pyro.geometry.triangulation import triangulate_torch

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["CameraGroup", "TOML_KEYS"]


#: Keys every camera table of an Anipose calibration file must have.
TOML_KEYS = ("name", "size", "matrix", "distortions", "rotation", "translation")


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

        One table ``[cam_<i>]`` per camera, in order, then ``[metadata]`` if there is any, written
        by ``tomli_w``: floats in their shortest round-trip form (``repr``), so :meth:`from_toml`
        reads back exactly the same numbers.
        """
        tables: dict[str, Any] = {f"cam_{i}": cam.to_dict() for i, cam in enumerate(self.cameras)}
        if self.metadata:
            tables["metadata"] = self.metadata
        text = tomli_w.dumps(tables)
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
        :func:`~dgp_pyro.geometry.triangulation.triangulate_torch`). ``dtype`` defaults to torch's
        default dtype.
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
        """Confidence-weighted DLT triangulation (the math: :func:`~.triangulation.triangulate_torch`).

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
