"""The rig of camera estimation: kappa-parametrised cameras and 3D points, and what acts on them.

Used by :mod:`~dgp_pyro.geometry.camera_estimation` (whose module docstring gives the method):
the parameters (:class:`Rig`) and observations (:class:`Observations`), the projection with its
analytic Jacobian (:func:`project_rig`), the similarity gauge (:func:`normalise`), the mirror
twins that give the same pixels (:func:`necker`, :func:`cheirality`), and the conversion to
Anipose pinhole cameras (:func:`affine_distance`, :func:`to_camera_group`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from dgp_pyro.geometry.camera import Camera
from dgp_pyro.geometry.camera_group import CameraGroup

__all__ = [
    "Observations",
    "Rig",
    "affine_distance",
    "cheirality",
    "necker",
    "needs_mirror",
    "normalise",
    "project_rig",
    "residuals_px",
    "to_camera_group",
]


#: RMS distance of the fitted points from the world origin (the scale of the gauge).
WORLD_RMS = 100.0
#: The affine model's pinhole stand-in stays within this many pixels of the affine projection.
AFFINE_MAX_DEVIATION_PX = 0.1
#: ... and is at least this many times the RMS radius of the points away.
AFFINE_MIN_DISTANCE = 1000.0


@dataclass
class Observations:
    """The labels the rig is fitted to: observation ``m`` is point ``pt[m]`` seen in view ``cam[m]``."""

    pt: np.ndarray  # (M,) point index
    cam: np.ndarray  # (M,) view index
    uv: np.ndarray | None  # (M, 2) pixels
    n_points: int
    n_views: int
    centres: np.ndarray  # (V, 2) principal points


@dataclass
class Rig:
    """Cameras ``(R_v, t_xy, s_v = exp(logs_v), kappa_v)`` and 3D points (see the estimation method)."""

    rvec: np.ndarray  # (V, 3)
    txy: np.ndarray  # (V, 2) world units
    logs: np.ndarray  # (V,) log pixels per world unit
    kappa: np.ndarray  # (V,) inverse distance, 0 = affine
    points: np.ndarray  # (P, 3)
    cost: float = math.inf

    def copy(self) -> Rig:
        return Rig(self.rvec.copy(), self.txy.copy(), self.logs.copy(), self.kappa.copy(),
                   self.points.copy(), self.cost)


def _skew(w: np.ndarray) -> np.ndarray:
    return np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])


def _rotation_derivatives(rvec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``R(rvec)`` and ``dR / d rvec_i`` (Gallego and Yezzi, J. Math. Imaging Vis. 2015)."""
    rot = Rotation.from_rotvec(rvec).as_matrix()
    theta2 = float(rvec @ rvec)
    eye = np.eye(3)
    if theta2 < 1e-16:
        d = np.stack([_skew(eye[i]) @ rot for i in range(3)])
    else:
        wx = _skew(rvec)
        d = np.stack(
            [(rvec[i] * wx + _skew(np.cross(rvec, (eye - rot)[:, i]))) @ rot / theta2 for i in range(3)]
        )
    return rot, d


def project_rig(obs: Observations, rig: Rig, jac: bool = False):
    """Pixels of every observation, and optionally the Jacobian blocks."""
    rots, drots = zip(*(_rotation_derivatives(r) for r in rig.rvec), strict=True)
    rots, drots = np.stack(rots), np.stack(drots)  # (V,3,3), (V,3,3,3)
    rv = rots[obs.cam]
    x = rig.points[obs.pt]
    y = np.einsum("mij,mj->mi", rv, x)
    num = y[:, :2] + rig.txy[obs.cam]
    kappa = rig.kappa[obs.cam]
    den = 1.0 + kappa * y[:, 2]
    s = np.exp(rig.logs[obs.cam])
    q = num / den[:, None]
    proj = s[:, None] * q + obs.centres[obs.cam]
    if not jac:
        return proj
    m = len(obs.cam)
    g = (s / den)[:, None, None]
    dy = np.zeros((m, 2, 3))
    dy[:, 0, 0] = 1.0
    dy[:, 1, 1] = 1.0
    dy[:, :, 2] = -kappa[:, None] * q
    dy = g * dy  # d proj / d Y
    d_x = dy @ rv
    dr = np.einsum("mab,mibc,mc->mai", dy, drots[obs.cam], x)  # (M, 2, 3)
    d_t = np.zeros((m, 2, 2))
    d_t[:, 0, 0] = g[:, 0, 0]
    d_t[:, 1, 1] = g[:, 0, 0]
    d_logs = s[:, None] * q
    d_kappa = -s[:, None] * q * (y[:, 2] / den)[:, None]
    d_cam = np.concatenate([dr, d_t, d_logs[..., None], d_kappa[..., None]], axis=2)  # (M, 2, 7)
    return proj, d_cam, d_x


def residuals_px(obs: Observations, rig: Rig) -> np.ndarray:
    return project_rig(obs, rig) - obs.uv


def needs_mirror(kappa: np.ndarray) -> bool:
    """Whether more cameras see the scene from behind than in front (ties: the first camera)."""
    ahead, behind = int((kappa > 0).sum()), int((kappa < 0).sum())
    return behind > ahead or (behind == ahead and kappa[0] < 0)


def necker(rig: Rig) -> Rig:
    """The depth-reversed twin of an affine rig: mirrored points (``z -> -z``), same images.

    ``R -> F R F`` with ``F = diag(1, 1, -1)`` keeps the rotation proper and the first camera at
    the identity; the first two rows of ``R X`` are unchanged, the depth row changes sign, which
    only matters through ``kappa`` (tiny for the affine model's distant cameras).
    """
    flip = np.diag([1.0, 1.0, -1.0])
    out = rig.copy()
    out.points = rig.points @ flip
    for v in range(len(rig.rvec)):
        r = flip @ Rotation.from_rotvec(rig.rvec[v]).as_matrix() @ flip
        out.rvec[v] = Rotation.from_matrix(r).as_rotvec()
    return out


def cheirality(rig: Rig) -> Rig:
    """Of a perspective rig and its mirror twin, the one with the scene in front of most cameras.

    Mirroring the world (``X -> -X``) and turning each camera half a turn about its axis
    (``R -> diag(-1, -1, 1) R``) while negating ``kappa`` gives exactly the same pixels, so the
    fit cannot tell the two apart; the real rig is the one where the points lie in front of the
    cameras. A mirror view is behind in both, so ties (one direct view and one mirror view) go
    to the twin where the first camera is in front, i.e. the first view is taken as direct.
    """
    if not needs_mirror(rig.kappa):
        return rig
    flip = np.diag([-1.0, -1.0, 1.0])
    out = rig.copy()
    out.points = -rig.points
    out.kappa = -rig.kappa
    for v in range(len(rig.rvec)):
        out.rvec[v] = Rotation.from_matrix(flip @ Rotation.from_rotvec(rig.rvec[v]).as_matrix()).as_rotvec()
    return out


def normalise(rig: Rig) -> Rig:
    """Exact gauge: centroid at the origin, RMS radius ``WORLD_RMS``, images unchanged.

    With ``X = X'/lam + mu``: ``t' = lam (R mu + t)`` in pinhole terms, i.e.
    ``t_xy' = lam (R mu + t)_xy``, ``kappa' = kappa / (lam (1 + kappa (R mu)_z))`` and
    ``s' = s / (lam (1 + kappa (R mu)_z))``.
    """
    out = rig.copy()
    mu = rig.points.mean(0)
    rms = math.sqrt(float(((rig.points - mu) ** 2).sum(1).mean()))
    lam = WORLD_RMS / max(rms, 1e-300)
    out.points = lam * (rig.points - mu)
    for v in range(len(rig.rvec)):
        rmu = Rotation.from_rotvec(rig.rvec[v]).as_matrix() @ mu
        g = 1.0 + rig.kappa[v] * rmu[2]
        out.txy[v] = lam * (rmu[:2] + rig.txy[v]) / g
        out.kappa[v] = rig.kappa[v] / (lam * g)
        out.logs[v] = rig.logs[v] - math.log(lam * g)
    return out


def affine_distance(rig: Rig) -> float:
    """The distance ``D`` of the affine model's pinhole cameras (see the module doc).

    The smallest number of the form 1, 2 or 5 times a power of 10 that keeps the perspective
    deviation ``s |Y_xy + t_xy| |Y_z| / D`` of every fitted point within
    ``AFFINE_MAX_DEVIATION_PX``, and at least ``AFFINE_MIN_DISTANCE`` times the RMS radius.
    """
    worst = 0.0
    for v in range(len(rig.rvec)):
        y = rig.points @ Rotation.from_rotvec(rig.rvec[v]).as_matrix().T
        num = np.linalg.norm(y[:, :2] + rig.txy[v], axis=1)
        worst = max(worst, float((math.exp(rig.logs[v]) * num * np.abs(y[:, 2])).max()))
    need = max(worst / AFFINE_MAX_DEVIATION_PX, AFFINE_MIN_DISTANCE * WORLD_RMS)
    decade = 10.0 ** math.floor(math.log10(need))
    return next(k * decade for k in (1.0, 2.0, 5.0, 10.0) if k * decade >= need)


def to_camera_group(rig: Rig, names: list[str], sizes: list[tuple[int, int]], model: str) -> CameraGroup:
    """Pinhole cameras of a normalised rig: ``f = s / |kappa|``, ``t_z = 1 / kappa``.

    The affine model's rig has ``kappa = 1 / D`` (about: the gauge moves it slightly), so it
    needs no special case. The world is the rig's frame, turned so that the first camera has
    ``R = I`` also when it had to be turned half a turn (scene behind it).
    """
    n_views = len(names)
    flip = np.diag([-1.0, -1.0, 1.0])
    params = []
    for v in range(n_views):
        rot = Rotation.from_rotvec(rig.rvec[v]).as_matrix()
        txy, s, kappa = rig.txy[v], math.exp(rig.logs[v]), rig.kappa[v]
        if kappa == 0.0:  # exactly affine (never in practice): a very distant camera
            kappa = 1.0 / affine_distance(rig)
        if kappa > 0:
            f, tvec = s / kappa, np.array([txy[0], txy[1], 1.0 / kappa])
        else:  # scene behind the camera (mirror): turn half a turn about the optical axis
            rot = flip @ rot
            f, tvec = s / -kappa, np.array([-txy[0], -txy[1], 1.0 / kappa])
        params.append((rot, f, tvec))
    world = params[0][0]  # X' = R_0 X makes the first camera's rotation the identity
    cams = []
    for v, (rot, f, tvec) in enumerate(params):
        w, h = sizes[v]
        matrix = np.array([[f, 0.0, (w - 1) / 2.0], [0.0, f, (h - 1) / 2.0], [0.0, 0.0, 1.0]])
        rvec = np.zeros(3) if v == 0 else Rotation.from_matrix(rot @ world.T).as_rotvec()
        cams.append(Camera(names[v], (w, h), matrix, rvec=rvec, tvec=tvec))
    group = CameraGroup(cams)
    if model == "affine":
        group.metadata["affine_distance"] = float(np.mean([c.tvec[2] for c in cams]))
    return group
