r"""The 3D guide's pseudo-observations: robust, confidence-weighted triangulation, linearised.

The 3D guide (:func:`~dgp_pyro.model.dgp3d.dgp3d_guide`) is a Gaussian chain over the world
keypoints :math:`Y`. Its pseudo-observations come from the Gaussian form of every view's
heatmap (soft-argmax mean :math:`\mu_v`, spread :math:`\Sigma_v`, peak confidence :math:`c_v`),
per frame and keypoint (:func:`triangulation_observations`):

1. a start point: the confidence-weighted DLT triangulation of all views and of every pair of
   views, keeping the candidate with the lowest robust reprojection cost (so one view whose
   heatmap points elsewhere cannot drag the start);
2. a few Gauss-Newton steps of the robust, confidence-weighted reprojection error
   :math:`\sum_v \omega_v\, c_v\, r_v^\top \Sigma_v^{-1} r_v`, :math:`r_v = \mu_v - \pi_v(X)`,
   with :math:`\omega_v = \exp(-\tfrac12 (d_v^2 / k^2)^2)`, :math:`d_v^2 = r_v^\top \Sigma_v^{-1} r_v`:
   0.97 at one standard deviation, 0.61 at :math:`k` (default 2), 0.08 at 3, vanishing beyond
   :math:`2k` (the redescending shape of the bounded heatmap potential: a bump far from the
   heatmap's peak costs a constant, so a view that disagrees by many sigmas stops pulling);
   labels are not down-weighted. The standard deviations are the heatmap's spread (about
   the target's width, several times a trained network's error), which is why :math:`k` is
   small: with :math:`k = 5` a camera confidently wrong by 40-50 px on the synthetic rig still
   dragged the estimate as far as DLT; with 2 it is ignored from about 30 px, and clean
   accuracy and coverage are unchanged;
3. the projection linearised at the result :math:`X^*` (Jacobian :math:`J_v`, 2 x 3) gives the
   Gaussian pseudo-observation with information
   :math:`\Lambda = \sum_v J_v^\top \omega_v c_v \Sigma_v^{-1} J_v` and mean
   :math:`m = X^* + \Lambda^{-1} \sum_v J_v^\top \omega_v c_v \Sigma_v^{-1} r_v` (one more
   Gauss-Newton step). A view with no confidence gets zero precision; a keypoint seen by one
   view only is linearised on that view's ray (its depth then comes from the potentials).

Labels in the window enter as more views with :math:`\Sigma = \sigma_{\mathrm{label}}^2 I`.
Everything is vectorised over windows, frames, keypoints and views.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from dgp_pyro.geometry.projection import rodrigues_torch, undistort_points_torch
from dgp_pyro.geometry.triangulation import triangulate_torch
from dgp_pyro.model.views3d import ViewCameras

__all__ = ["DEFAULT_ROBUST", "TriangulatedObservations", "robust_weight", "triangulation_observations"]

#: Mahalanobis radius k (standard deviations of a view's heatmap spread) of the robust view
#: weights: 0.61 at k, below 0.01 beyond 1.8 k.
DEFAULT_ROBUST = 2.0


class TriangulatedObservations(NamedTuple):
    r"""Gaussian pseudo-observations of the 3D keypoints (see :func:`triangulation_observations`).

    Attributes:
        mean: ``(..., J, 3)`` the Gaussian's mean (zero where nothing observes the keypoint).
        precision: ``(..., J, 3, 3)`` its information :math:`\sum_v J_v^\top \omega_v c_v \Sigma_v^{-1} J_v`.
        point: ``(..., J, 3)`` the linearisation point :math:`X^*` (NaN where nothing observes it).
        view_weight: ``(..., V', J)`` :math:`\omega_v c_v`, the factor of each view's
            :math:`\Sigma_v^{-1}` (``V' = 2V`` with labels: the label pseudo-views follow).
        observed: ``(..., J)`` whether any view or label observes the keypoint.
    """

    mean: Tensor
    precision: Tensor
    point: Tensor
    view_weight: Tensor
    observed: Tensor


def robust_weight(d2: Tensor, k: float | None) -> Tensor:
    r""":math:`\omega = \exp(-\tfrac12 (d^2 / k^2)^2)`: > 0.94 within 3 sigma, 0.61 at k sigma, ~0 past 2k."""
    if k is None:
        return torch.ones_like(d2)
    return torch.exp(-0.5 * (d2 / (k * k)) ** 2)


def _robust_cost(d2: Tensor, k: float | None) -> Tensor:
    # rho(s) with rho'(s) = robust_weight(s), bounded: k^2 sqrt(pi/2) erf(s / (k^2 sqrt 2))
    if k is None:
        return d2
    k2 = k * k
    return k2 * math.sqrt(math.pi / 2.0) * torch.erf(d2 / (k2 * math.sqrt(2.0)))


def _inv2(m: Tensor) -> Tensor:
    a, b, c, d = m[..., 0, 0], m[..., 0, 1], m[..., 1, 0], m[..., 1, 1]
    det = a * d - b * c
    return torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[..., None, None]


def _ray_points(cameras: ViewCameras, pixels: Tensor, target: Tensor) -> Tensor:
    """For each view's pixel ``(V, N, 2)``, the point of its ray nearest ``target (N, 3)``: ``(V, N, 3)``."""
    norm = undistort_points_torch(pixels, cameras.matrix, cameras.dist)  # (V, N, 2)
    rot = rodrigues_torch(cameras.rvec)
    direction = torch.einsum("vji,vnj->vni", rot, torch.cat([norm, torch.ones_like(norm[..., :1])], -1))
    centre = cameras.centers()[:, None, :]
    along = ((target[None] - centre) * direction).sum(-1, keepdim=True) / (direction * direction).sum(
        -1, keepdim=True
    )
    return centre + along.clamp_min(0.0) * direction


def triangulation_observations(
    cameras: ViewCameras,
    mean: Float[Tensor, "... views keypoints 2"],
    cov: Float[Tensor, "... views keypoints 2 2"],
    confidence: Float[Tensor, "... views keypoints"],
    labels: Float[Tensor, "... views keypoints 2"] | None = None,
    label_mask: Bool[Tensor, "... views keypoints"] | None = None,
    label_sigma: float = 1.0,
    robust: float | None = DEFAULT_ROBUST,
    iterations: int = 3,
) -> TriangulatedObservations:
    r"""Gaussian pseudo-observations of 3D keypoints from every view's heatmap summary (and labels).

    See the module docstring (steps 1-3). Each view contributes its soft-argmax mean ``mean``
    with precision :math:`c_v \Sigma_v^{-1}` (``cov``, ``confidence``); a non-finite summary or
    a zero confidence contributes nothing. Labels (masked) are further views with precision
    :math:`I / \sigma_{\mathrm{label}}^2`. Pixels must be those of ``cameras``.
    Computed in float64; no gradient flows through it (it is a data summary).

    Returns:
        :class:`TriangulatedObservations` with batch shape ``mean.shape[:-3]``.
    """
    dtype, device = torch.float64, mean.device
    cameras = cameras.to(dtype=dtype, device=device)
    V = len(cameras)
    if mean.shape[-3] != V:
        raise ValueError(f"mean has {mean.shape[-3]} views, the cameras {V}")
    batch, J = mean.shape[:-3], mean.shape[-2]
    eye2 = torch.eye(2, dtype=dtype, device=device)
    with torch.no_grad():
        m = mean.detach().to(dtype).movedim(-3, 0).reshape(V, -1, 2)
        S = cov.detach().to(dtype).movedim(-4, 0).reshape(V, -1, 2, 2)
        c = confidence.detach().to(dtype).movedim(-2, 0).reshape(V, -1)
        ok = torch.isfinite(m).all(-1) & torch.isfinite(S).all(-1).all(-1) & torch.isfinite(c) & (c > 0)
        m = torch.where(ok[..., None], m, torch.zeros_like(m))
        S = torch.where(ok[..., None, None], S, eye2)
        c = torch.where(ok, c, torch.zeros_like(c))
        s_inv = _inv2(0.5 * (S + S.mT))
        weight = c  # the confidence factor of each (pseudo-)view
        cams = cameras
        n_heatmap = V
        if labels is not None and label_mask is not None:
            lab = labels.detach().to(dtype).movedim(-3, 0).reshape(V, -1, 2)
            lm = label_mask.to(torch.bool).movedim(-2, 0).reshape(V, -1) & torch.isfinite(lab).all(-1)
            m = torch.cat([m, torch.where(lm[..., None], lab, torch.zeros_like(lab))])
            s_inv = torch.cat([s_inv, (eye2 / label_sigma**2).expand(V, lab.shape[1], 2, 2)])
            weight = torch.cat([weight, lm.to(dtype)])
            cams = cameras.tile(2)
        Vt, N = m.shape[0], m.shape[1]
        used = weight > 0  # (Vt, N)
        # labels are trusted: only the heatmap views get the robust weights
        heatmap_view = (torch.arange(Vt, device=device) < n_heatmap)[:, None]
        observed = used.any(0)

        # 1. start: weighted DLT of all views and of every pair of heatmap views; robust choice
        dlt_weight = torch.sqrt(weight * 0.5 * s_inv.diagonal(dim1=-2, dim2=-1).sum(-1))
        masks = [torch.ones(Vt, dtype=dtype, device=device)]
        if robust is not None and V >= 3:
            for a, b in itertools.combinations(range(n_heatmap), 2):
                keep = torch.zeros(Vt, dtype=dtype, device=device)
                keep[[a, b]] = 1.0
                keep[n_heatmap:] = 1.0  # labels always take part
                masks.append(keep)
        K = len(masks)
        cand_w = torch.stack(masks)[:, :, None] * dlt_weight[None]  # (K, Vt, N)
        points_2d = m[None].expand(K, Vt, N, 2).permute(1, 0, 2, 3)  # (Vt, K, N, 2)
        candidates = triangulate_torch(
            points_2d, confidence=cand_w.permute(1, 0, 2), **cams.params()
        )  # (K, N, 3)
        if K > 1:
            finite = torch.isfinite(candidates).all(-1)
            safe = torch.where(finite[..., None], candidates, torch.zeros_like(candidates))
            uv = cams.project(safe)  # (Vt, K, N, 2)
            r = m[:, None] - uv
            d2 = torch.einsum("vkni,vnij,vknj->vkn", r, s_inv, r)
            term = torch.where(
                used[:, None], weight[:, None] * _robust_cost(d2, robust), torch.zeros_like(d2)
            )
            cost = term.nan_to_num(nan=float("inf")).sum(0)
            cost = torch.where(finite, cost, torch.full_like(cost, float("inf")))
            best = cost.argmin(0)  # (N,)
            X = candidates.gather(0, best[None, :, None].expand(1, N, 3))[0]
        else:
            X = candidates[0]
        # A keypoint seen by one (pseudo-)view only: on that view's ray, at the depth of the scene.
        missing = ~torch.isfinite(X).all(-1)
        if bool(missing.any()):
            finite_x = X[~missing]
            scene = finite_x.median(0).values if finite_x.shape[0] else X.new_zeros(3)
            best_view = weight.argmax(0)  # (N,)
            rays = _ray_points(cams, m, scene.expand(N, 3))  # (Vt, N, 3)
            on_ray = rays.gather(0, best_view[None, :, None].expand(1, N, 3))[0]
            on_ray = torch.where(torch.isfinite(on_ray), on_ray, scene.expand(N, 3))
            X = torch.where(missing[:, None], on_ray, X)
        X = torch.where(observed[:, None], X, torch.zeros_like(X))

        # 2. Gauss-Newton with robust weights; 3. the linearised Gaussian at the final point
        eye3 = torch.eye(3, dtype=dtype, device=device)
        for it in range(iterations + 1):
            uv, jac = cams.project_jacobian(X)  # (Vt, N, 2), (Vt, N, 2, 3)
            r = m - uv
            d2 = torch.einsum("vni,vnij,vnj->vn", r, s_inv, r)
            omega = weight * torch.where(heatmap_view, robust_weight(d2, robust), torch.ones_like(d2))
            omega = torch.where(torch.isfinite(omega) & used, omega, torch.zeros_like(omega))
            jac = torch.where(omega[..., None, None] > 0, jac, torch.zeros_like(jac))
            r = torch.where(omega[..., None] > 0, r, torch.zeros_like(r))
            jt_p = jac.mT @ (omega[..., None, None] * s_inv)  # (Vt, N, 3, 2)
            info = (jt_p @ jac).sum(0)  # (N, 3, 3)
            info = 0.5 * (info + info.mT)
            vec = (jt_p @ r[..., None])[..., 0].sum(0)  # (N, 3): J^T P r
            scale = info.diagonal(dim1=-2, dim2=-1).sum(-1) / 3.0
            damp = 1e-9 if it == iterations else 1e-6
            damping = (damp * scale + 1e-12)[:, None, None] * eye3
            step = torch.linalg.solve(info + damping, vec[..., None])[..., 0]
            if it < iterations:
                X = torch.where(torch.isfinite(step).all(-1, keepdim=True), X + step, X)
        obs_mean = X + torch.where(torch.isfinite(step), step, torch.zeros_like(step))
        obs_mean = torch.where(observed[:, None], obs_mean, torch.zeros_like(obs_mean))
        info = torch.where(observed[:, None, None], info, torch.zeros_like(info))
        point = torch.where(observed[:, None], X, torch.full_like(X, float("nan")))

    def unflat(x: Tensor, tail: tuple[int, ...]) -> Tensor:
        return x.reshape(*batch, J, *tail)

    view_weight = omega.reshape(Vt, *batch, J).movedim(0, -2)
    return TriangulatedObservations(
        mean=unflat(obs_mean, (3,)),
        precision=unflat(info, (3, 3)),
        point=unflat(point, (3,)),
        view_weight=view_weight,
        observed=unflat(observed, ()),
    )
