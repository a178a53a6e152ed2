r"""Which mode of each view's heatmap to triangulate: the views vote on a left/right swap.

A network trained on few labels often puts its strongest peak on a look-alike part in one view
(the far paw, hidden behind the body in a side view, is found on the near paw). The Gaussian
form of that heatmap (:func:`~dgp_pyro.nets.heatmaps.soft_argmax`) keeps only that peak, and the
robust triangulation (:mod:`dgp_pyro.model.pseudo_observations3d`) can then only ignore one of
the views that disagree; with two views it cannot tell which. The heatmap's second mode
(:func:`~dgp_pyro.nets.heatmaps.second_mode`) is usually the right part. :func:`select_view_modes`
treats each heatmap as the mixture of its two modes, weighted by their peak heights :math:`c`,
and per frame and keypoint picks among

- the first modes of every view (kept whenever the views agree), and
- each single view switched to its second mode,

the combination whose views all agree, i.e. every view's reprojection of the robustly
triangulated point lies within ``agree_px`` pixels of the mode it used, with the largest
:math:`\sum_v \log c_v` (the likeliest combination of peaks). Where no combination agrees the
first modes are kept, and the robust weights deal with the disagreement as before. Only views
that see the keypoint take part; a second mode lower than ``min_second`` (a tail of the first
bump, not a peak) is never used.

Symbols: :math:`V` views, :math:`J` keypoints, :math:`c_v` the peak height of the mode view
:math:`v` uses, :math:`\pi_v` its projection.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from dgp_pyro.model.pseudo_observations3d import DEFAULT_ROBUST, triangulation_observations
from dgp_pyro.model.views3d import ViewCameras
from dgp_pyro.nets.heatmaps import MIN_SECOND_PEAK

__all__ = ["select_view_modes"]


@torch.no_grad()
def select_view_modes(
    cameras: ViewCameras,
    mean: Float[Tensor, "... views keypoints 2"],
    cov: Float[Tensor, "... views keypoints 2 2"],
    confidence: Float[Tensor, "... views keypoints"],
    second_mean: Float[Tensor, "... views keypoints 2"],
    second_cov: Float[Tensor, "... views keypoints 2 2"],
    second_confidence: Float[Tensor, "... views keypoints"],
    agree_px: float,
    min_second: float = MIN_SECOND_PEAK,
    robust: float | None = DEFAULT_ROBUST,
    iterations: int = 3,
) -> tuple[Tensor, Tensor, Tensor, Float[Tensor, "... views keypoints"]]:
    """Per frame and keypoint, the modes the views agree on (see the module docstring).

    Args:
        cameras: the V cameras, in the summaries' pixels.
        mean, cov, confidence: each view's first mode (NaN / 0 where a view does not see it).
        second_mean, second_cov, second_confidence: each view's second mode.
        agree_px: how far (pixels) a view's mode may be from the reprojection and still agree.
        min_second: the lowest peak height of a second mode that may be used.
        robust, iterations: the robust triangulation's ``k`` and Gauss-Newton steps
            (:func:`triangulation_observations`), as the posterior triangulates.

    Returns:
        ``(mean, cov, confidence, switched)``: the summaries to triangulate, float64, and a
        boolean mask of the (view, keypoint) summaries now on their second mode.
    """
    dtype = torch.float64
    mean, cov, confidence = (x.to(dtype) for x in (mean, cov, confidence))
    second_mean, second_cov, second_confidence = (
        x.to(dtype) for x in (second_mean, second_cov, second_confidence)
    )
    V = mean.shape[-3]
    sees = torch.isfinite(mean).all(-1) & (confidence > 0)  # (..., V, J)
    usable = sees & torch.isfinite(second_mean).all(-1) & (second_confidence >= min_second)
    # Candidate c = 0: every first mode; c = 1 + v: view v on its second mode.
    candidates = [(mean, cov, confidence)]
    for v in range(V):
        on = torch.zeros(V, 1, dtype=torch.bool, device=mean.device)
        on[v] = True
        candidates.append(
            (
                torch.where(on[..., None], second_mean, mean),
                torch.where(on[..., None, None], second_cov, cov),
                torch.where(on, second_confidence, confidence),
            )
        )
    means, covs, confs = (
        torch.stack(parts) for parts in zip(*candidates, strict=True)
    )  # (C, ..., V, J, ...)
    observations = triangulation_observations(
        cameras, means, covs, confs, robust=robust, iterations=iterations
    )
    point = observations.point  # (C, ..., J, 3)
    safe = torch.where(torch.isfinite(point), point, torch.zeros_like(point))
    reprojected = (
        cameras.to(dtype=dtype, device=mean.device).project(safe).movedim(0, -3)
    )  # (C, ..., V, J, 2)
    distance = (reprojected - means).norm(dim=-1)
    agree = torch.where(sees, distance <= agree_px, torch.ones_like(sees)).all(-2)  # (C, ..., J)
    agree &= torch.isfinite(point).all(-1) & (sees.sum(-2) >= 2)
    log_peak = torch.where(sees, confs.clamp_min(1e-12).log(), torch.zeros_like(confs)).sum(-2)  # (C, ..., J)
    # a switch needs a usable second mode in that view; the first modes are kept when they agree
    allowed = torch.stack([torch.ones_like(usable[..., 0, :])] + [usable[..., v, :] for v in range(V)])
    score = torch.where(agree & allowed, log_peak, torch.full_like(log_peak, -float("inf")))
    best = score.argmax(0)  # (..., J)
    best = torch.where(agree[0] | torch.isinf(score.amax(0)), torch.zeros_like(best), best)
    switched = best[..., None, :] == torch.arange(1, V + 1, device=mean.device)[:, None]  # (..., V, J)
    return (
        torch.where(switched[..., None], second_mean, mean),
        torch.where(switched[..., None, None], second_cov, cov),
        torch.where(switched, second_confidence, confidence),
        switched,
    )
