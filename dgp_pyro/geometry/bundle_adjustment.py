"""The bundle adjustment of camera estimation: robust sparse least squares over cameras and points.

Step 3 of the method in :mod:`~dgp_pyro.geometry.camera_estimation`
(``scipy.optimize.least_squares``, trust-region reflective, the analytic sparse Jacobian of
:func:`~dgp_pyro.geometry.camera_rig.project_rig`, ``soft_l1`` loss), with the similarity gauge
held by soft residuals.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from scipy.optimize import least_squares

from dgp_pyro.geometry.camera_rig import WORLD_RMS, Observations, Rig, project_rig

__all__ = ["bundle_adjust"]


#: Weights of the gauge residuals (first camera's rotation, centroid, RMS spread).
_GAUGE_ROTATION_WEIGHT = 1e3
_GAUGE_WEIGHT = 1.0


def bundle_adjust(
    obs: Observations, rig: Rig, perspective: bool, robust: float, max_nfev: int = 200
) -> Rig:
    """Robust least squares over cameras and points; ``kappa`` is fixed unless ``perspective``.

    The gauge is held by soft residuals (first camera's rotation 0, centroid 0, RMS radius
    ``WORLD_RMS``) which the data cannot oppose, so they only remove the null directions.
    """
    n_views, n_points, m = obs.n_views, obs.n_points, len(obs.cam)
    n_cam = 7 if perspective else 6
    n_x = n_views * n_cam
    n_params = n_x + 3 * n_points
    max_r = float(np.sqrt((rig.points**2).sum(1)).max())
    kappa_max = 1.0 / (1.1 * max_r)

    def pack(r: Rig) -> np.ndarray:
        cams = [r.rvec, r.txy, r.logs[:, None]] + ([r.kappa[:, None]] if perspective else [])
        return np.concatenate([np.concatenate(cams, axis=1).ravel(), r.points.ravel()])

    def unpack(p: np.ndarray) -> Rig:
        c = p[:n_x].reshape(n_views, n_cam)
        kappa = c[:, 6].copy() if perspective else rig.kappa.copy()  # fixed when affine
        return Rig(c[:, :3].copy(), c[:, 3:5].copy(), c[:, 5].copy(), kappa, p[n_x:].reshape(n_points, 3))

    # Sparsity pattern (fixed): data rows, then 3 + 3 + 1 gauge rows.
    rows_data = np.repeat(np.arange(2 * m), n_cam + 3)
    cam_cols = obs.cam[:, None] * n_cam + np.arange(n_cam)  # (M, n_cam)
    x_cols = n_x + 3 * obs.pt[:, None] + np.arange(3)  # (M, 3)
    cols_m = np.concatenate([cam_cols, x_cols], axis=1)  # (M, n_cam + 3)
    cols_data = np.repeat(cols_m, 2, axis=0).ravel()
    g0 = 2 * m
    rows_g = np.concatenate([
        g0 + np.arange(3),
        np.repeat(g0 + 3 + np.arange(3), n_points),
        np.full(3 * n_points, g0 + 6),
    ])
    cols_g = np.concatenate([
        np.arange(3),
        (n_x + 3 * np.arange(n_points)[None, :] + np.arange(3)[:, None]).ravel(),
        n_x + np.arange(3 * n_points),
    ])
    rows_all = np.concatenate([rows_data, rows_g])
    cols_all = np.concatenate([cols_data, cols_g])
    shape = (2 * m + 7, n_params)

    def fun(p: np.ndarray) -> np.ndarray:
        r = unpack(p)
        res = (project_rig(obs, r) - obs.uv).ravel()
        mean = r.points.mean(0)
        rms = math.sqrt(float((r.points**2).sum(1).mean()))
        gauge = np.concatenate([
            _GAUGE_ROTATION_WEIGHT * r.rvec[0], _GAUGE_WEIGHT * mean, [_GAUGE_WEIGHT * (rms - WORLD_RMS)]
        ])
        return np.concatenate([res, gauge])

    def jac(p: np.ndarray) -> sp.csr_matrix:
        r = unpack(p)
        _, d_cam, d_x = project_rig(obs, r, jac=True)
        d_cam = d_cam[:, :, :n_cam]
        vals_data = np.concatenate([d_cam, d_x], axis=2).ravel()  # (M, 2, n_cam + 3)
        rms = max(math.sqrt(float((r.points**2).sum(1).mean())), 1e-300)
        vals_g = np.concatenate([
            np.full(3, _GAUGE_ROTATION_WEIGHT),
            np.full(3 * n_points, _GAUGE_WEIGHT / n_points),
            _GAUGE_WEIGHT * r.points.ravel() / (n_points * rms),
        ])
        return sp.csr_matrix(
            (np.concatenate([vals_data, vals_g]), (rows_all, cols_all)), shape=shape
        )

    p0 = pack(rig)
    lb = np.full(n_params, -np.inf)
    ub = np.full(n_params, np.inf)
    if perspective:
        idx = np.arange(n_views) * n_cam + 6
        lb[idx], ub[idx] = -kappa_max, kappa_max
        p0[idx] = np.clip(p0[idx], 0.99 * lb[idx], 0.99 * ub[idx])
    result = least_squares(
        fun, p0, jac=jac, bounds=(lb, ub), method="trf", loss="soft_l1", f_scale=robust,
        x_scale="jac", tr_solver="lsmr", max_nfev=max_nfev, xtol=1e-8, ftol=1e-8, gtol=1e-8,
    )
    out = unpack(result.x)
    out.cost = float(result.cost)
    return out
