"""The affine initialisation of camera estimation: Tomasi-Kanade factorisation and metric upgrade.

Step 2 of the method in :mod:`~dgp_pyro.geometry.camera_estimation`: the centred ``2V x P``
measurement matrix is factored to rank 3 (imputing missing entries), and the metric upgrade
``Q = A A^T`` makes every camera scaled orthographic; the result is a :class:`Rig` with
``kappa = 0`` that the bundle adjustment starts from.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.camera_rig import Observations, Rig, normalise

__all__ = ["affine_init"]


#: Degenerate geometry: the third singular value of the centred tracks is below this share of
#: the first, or not clearly above the fourth (noise and perspective).
MIN_RANK3_RATIO = 1e-3
MIN_RANK3_OVER_NOISE = 1.5


def affine_init(obs: Observations, source: Path | None) -> Rig:
    """Tomasi-Kanade factorisation with imputation, metric upgrade, gauge."""
    n_views, n_points = obs.n_views, obs.n_points
    w = np.full((2 * n_views, n_points), np.nan)
    w[2 * obs.cam, obs.pt] = obs.uv[:, 0]
    w[2 * obs.cam + 1, obs.pt] = obs.uv[:, 1]
    missing = ~np.isfinite(w)
    row_mean = np.nanmean(w, axis=1, keepdims=True)
    filled = np.where(missing, row_mean, w)
    scale = max(float(np.nanstd(w)), 1e-12)
    for _ in range(500 if missing.any() else 1):
        b = filled.mean(1, keepdims=True)
        u, sv, vt = np.linalg.svd(filled - b, full_matrices=False)
        approx = (u[:, :3] * sv[:3]) @ vt[:3] + b
        change = np.abs(approx[missing] - filled[missing]).max() if missing.any() else 0.0
        filled = np.where(missing, approx, w)
        if change < 1e-9 * scale:
            break
    b = filled.mean(1, keepdims=True)
    u, sv, vt = np.linalg.svd(filled - b, full_matrices=False)
    s4 = sv[3] if len(sv) > 3 else 0.0
    if len(sv) < 3 or sv[2] < MIN_RANK3_RATIO * sv[0] or sv[2] < MIN_RANK3_OVER_NOISE * s4:
        spread = ", ".join(f"{x / math.sqrt(n_points):.3g}" for x in sv[:4])
        raise DGPError(
            "degenerate geometry: the labeled keypoints shared between views are nearly collinear or "
            "coplanar, or the views see the same projection, so the cameras are ill-determined "
            f"(RMS spread of the tracks along their principal directions: {spread} px)",
            source,
            hint="label frames where the body parts spread in depth (different poses), in views "
            "that look from different directions",
        )
    m = u[:, :3] * np.sqrt(sv[:3])
    s = np.sqrt(sv[:3])[:, None] * vt[:3]  # (3, P)
    q = _metric_upgrade(m, n_views)
    if q is None:
        raise DGPError(
            "degenerate geometry: the labeled keypoints are not consistent with any set of cameras "
            "(the metric upgrade of the affine factorisation failed)",
            source,
            hint="check that the same body part names mean the same point in every view",
        )
    a = np.linalg.cholesky(q)
    m = m @ a
    s = np.linalg.solve(a, s)
    rots, scales = [], []
    for v in range(n_views):
        rows = m[2 * v: 2 * v + 2]
        scale_v = math.sqrt(0.5 * float((rows**2).sum()))
        uu, _, vvt = np.linalg.svd(rows)
        r2 = uu @ vvt[:2]  # nearest orthonormal rows
        rots.append(np.vstack([r2, np.cross(r2[0], r2[1])]))
        scales.append(scale_v)
    r0 = rots[0]
    points = (r0 @ s).T  # world frame: camera 0's axes
    rig = Rig(
        rvec=np.stack([Rotation.from_matrix(r @ r0.T).as_rotvec() for r in rots]),
        txy=np.stack(
            [(b[2 * v: 2 * v + 2, 0] - obs.centres[v]) / scales[v] for v in range(n_views)]
        ),
        logs=np.log(np.array(scales)),
        kappa=np.zeros(n_views),
        points=points,
    )
    rig.rvec[0] = 0.0
    return normalise(rig)


def _q_row(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Coefficients of ``a^T Q b`` in ``(q11, q12, q13, q22, q23, q33)``."""
    return np.array([
        a[0] * b[0], a[0] * b[1] + a[1] * b[0], a[0] * b[2] + a[2] * b[0],
        a[1] * b[1], a[1] * b[2] + a[2] * b[1], a[2] * b[2],
    ])


def _q_matrix(q: np.ndarray) -> np.ndarray:
    return np.array([[q[0], q[1], q[2]], [q[1], q[3], q[4]], [q[2], q[4], q[5]]])


def _metric_upgrade(m: np.ndarray, n_views: int) -> np.ndarray | None:
    """The positive definite ``Q`` making every camera scaled orthographic (see module doc)."""
    rows = []
    for v in range(n_views):
        a, b = m[2 * v], m[2 * v + 1]
        rows.append(_q_row(a, a) - _q_row(b, b))
        rows.append(_q_row(a, b))
    _, sv, vt = np.linalg.svd(np.array(rows))
    if n_views >= 3:
        q = _q_matrix(vt[-1])
        q = q if np.trace(q) > 0 else -q
        evals, evecs = np.linalg.eigh(q)
        if evals[0] > 1e-9 * evals[-1]:
            return q / evals[-1]
    # Two views (or no positive definite null vector): search the pencil of the two smallest.
    n1, n2 = _q_matrix(vt[-1]), _q_matrix(vt[-2])
    best, best_angle = None, -1.0
    for phi in np.linspace(0.0, 2 * np.pi, 1441)[:-1]:
        q = math.cos(phi) * n1 + math.sin(phi) * n2
        evals = np.linalg.eigvalsh(q)
        if not evals[0] > 1e-6 * evals[-1]:
            continue
        angle = _view_angle(m, q, n_views)
        if n_views >= 3:  # fall back: the best-conditioned positive definite member
            angle = evals[0] / evals[-1]
        if angle > best_angle:
            best, best_angle = q / evals[-1], angle
    return best


def _view_angle(m: np.ndarray, q: np.ndarray, n_views: int) -> float:
    """Smallest angle between the viewing directions (as lines) of the upgraded cameras."""
    a = np.linalg.cholesky(q)
    mm = m @ a
    dirs = []
    for v in range(n_views):
        d = np.cross(mm[2 * v], mm[2 * v + 1])
        dirs.append(d / np.linalg.norm(d))
    smallest = math.pi / 2
    for i in range(n_views):
        for j in range(i + 1, n_views):
            smallest = min(smallest, math.acos(min(1.0, abs(float(dirs[i] @ dirs[j])))))
    return smallest
