r"""Heatmap targets, the heatmap loss (the heatmap form of :math:`\phi_n`) and soft-argmax.

Coordinates
-----------
Keypoints are in image pixels: :math:`x` to the right, :math:`y` down, origin at the centre of
the top-left pixel (DeepLabCut's convention). Heatmap cell :math:`(i, j)` (row, column) at
output stride :math:`s` covers image pixels :math:`s j \ldots s j + s - 1` horizontally, so its
centre is at

.. math::

    g_{ij} = \big(s j + \tfrac{s - 1}{2},\; s i + \tfrac{s - 1}{2}\big).

:func:`heatmap_grid` is the one place this is written; every function here uses it.

Functions
---------
- :func:`gaussian_targets`: :math:`t_{ij}(y) = \exp(-\|g_{ij} - y\|^2 / 2\sigma^2)`.
- :func:`heatmap_potential`: :math:`\phi_n(y) = \sum_{ij} \mathrm{BCE}(\sigma(h_{ij}), t_{ij}(y))`,
  differentiable in :math:`y` and in the logits :math:`h`, batched over samples of :math:`y`.
- :func:`heatmap_loss`: the same, averaged over the labeled keypoints (training on labels);
  optionally the maps of absent (hidden) keypoints are trained towards zero.
- :func:`offset_loss`: Huber loss of location-refinement offsets near each label.
- :func:`soft_argmax`: mean :math:`\mu`, covariance :math:`\Sigma` and confidence of each
  heatmap, the Gaussian form :math:`\phi_n \approx \tfrac12 (y-\mu)^\top \Sigma^{-1} (y-\mu)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

#: :math:`c_0` of :func:`soft_argmax`: a peak below it gets an inflated covariance.
PEAK_THRESHOLD = 0.6
#: :math:`p` of :func:`soft_argmax`: the covariance grows as :math:`(c_0 / c)^p` below :math:`c_0`.
INFLATION_POWER = 8.0
#: Lowest peak height of a :func:`second_mode` that the posteriors may use: below it the "mode" may
#: be a tail of the first bump (a unit bump's tail just outside the hidden window is about 3e-4)
#: or the background. Chosen for the 3D views' vote (:mod:`dgp_pyro.model.view_modes`) on
#: ``bench_vs_deeplabcut``'s mirror-mouse-example held-out frames (dgp3d, 20 labels): mean error
#: 8.21 / 7.93 / 7.34 / 7.83 px at 0.1 / 0.05 / 0.02 / 0.01, 0.02 best in both halves of those
#: frames (the right second modes of swapped top-view paws peak at 0.02-0.1); the 2D posterior's
#: two-mode heatmaps (:mod:`dgp_pyro.model.outliers`) use it unchanged.
MIN_SECOND_PEAK = 0.02

# ----------------------------------------------------------------------------------------------
# grid and targets


def heatmap_grid(
    h: int, w: int, stride: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> tuple[Float[Tensor, " w"], Float[Tensor, " h"]]:
    r"""Image-pixel centres of the heatmap cells.

    ``xs[j]`` :math:`= s j + \frac{s-1}{2}` (column :math:`j`), ``ys[i]`` :math:`= s i + \frac{s-1}{2}`
    (row :math:`i`), in ``dtype`` (default: torch's default dtype) on ``device``.
    """
    dtype = dtype or torch.get_default_dtype()
    offset = (stride - 1) / 2.0
    xs = torch.arange(w, device=device, dtype=dtype) * stride + offset
    ys = torch.arange(h, device=device, dtype=dtype) * stride + offset
    return xs, ys


def _axis_bumps(
    y: Float[Tensor, "... 2"], xs: Float[Tensor, " w"], ys: Float[Tensor, " h"], sigma: float
) -> tuple[Float[Tensor, "... w"], Float[Tensor, "... h"]]:
    # The 2D Gaussian is separable: t_ij = gy_i * gx_j, which keeps every cost O(h + w) per point.
    scale = -0.5 / float(sigma) ** 2
    gx = torch.exp(scale * (xs - y[..., 0:1]) ** 2)
    gy = torch.exp(scale * (ys - y[..., 1:2]) ** 2)
    return gx, gy


def gaussian_targets(
    keypoints: Float[Tensor, "batch keypoints 2"], heatmap_size: tuple[int, int], stride: int, sigma: float
) -> Float[Tensor, "batch keypoints h w"]:
    r"""Gaussian bumps :math:`t_{ij} = \exp\!\big(-\|g_{ij} - y\|^2 / 2\sigma^2\big)`, ``sigma`` in pixels.

    A NaN keypoint (missing label) gives an all-zero map. Peak value 1 when :math:`y` falls on
    a cell centre.
    """
    h, w = heatmap_size
    xs, ys = heatmap_grid(h, w, stride, keypoints.device, keypoints.dtype)
    valid = torch.isfinite(keypoints).all(dim=-1)
    safe = torch.where(valid[..., None], keypoints, torch.zeros_like(keypoints))
    gx, gy = _axis_bumps(safe, xs, ys, sigma)
    maps = gy[..., :, None] * gx[..., None, :]
    return maps * valid[..., None, None].to(maps.dtype)


# ----------------------------------------------------------------------------------------------
# heatmap form of the neural potential, and the training losses


def heatmap_potential(
    logits: Float[Tensor, "batch keypoints h w"],
    y: Float[Tensor, "... batch keypoints 2"],
    stride: int,
    sigma: float,
) -> Float[Tensor, "... batch keypoints"]:
    r"""The neural potential in heatmap form: binary cross-entropy of the heatmap against a bump at :math:`y`.

    .. math::

        \phi_n(y) = \sum_{ij} \Big[ -t_{ij}(y) \log \sigma(h_{ij})
            - (1 - t_{ij}(y)) \log\big(1 - \sigma(h_{ij})\big) \Big]
          = \sum_{ij} \operatorname{softplus}(h_{ij}) - \sum_{ij} t_{ij}(y)\, h_{ij},

    with :math:`t_{ij}(y)` the bump of :func:`gaussian_targets`. The second form is what is
    computed: the first sum does not depend on :math:`y`, and the bump is separable, so the
    cross term is :math:`g_y(y)^\top H\, g_x(y)`, costing :math:`O(h w)` per keypoint for any
    number of samples of :math:`y` (no ``(samples, h, w)`` tensor is formed).

    Args:
        logits: heatmap logits :math:`h`, any leading batch shape ``(*batch, h, w)``.
        y: keypoint locations in image pixels, ``(*samples, *batch, 2)``; leading sample
            dimensions (e.g. Monte Carlo samples) broadcast over the same heatmaps.
        stride: the heatmap's output stride.
        sigma: bump width in image pixels.

    Returns:
        :math:`\phi_n`, shape ``(*samples, *batch)``; differentiable in ``y`` and ``logits``.
    """
    batch_shape = logits.shape[:-2]
    h, w = logits.shape[-2:]
    sample_shape = y.shape[: y.ndim - 1 - len(batch_shape)]
    y = torch.broadcast_to(y, (*sample_shape, *batch_shape, 2))
    # (*samples, *batch, 2) -> (*batch, S, 2): samples become matrix rows, batch stays batch.
    y_rows = y.reshape(-1, *batch_shape, 2).movedim(0, -2)
    xs, ys = heatmap_grid(h, w, stride, logits.device, logits.dtype)
    gx, gy = _axis_bumps(y_rows.to(logits.dtype), xs, ys, sigma)  # (*batch, S, w), (*batch, S, h)
    cross = (torch.matmul(gy, logits) * gx).sum(dim=-1)  # (*batch, S)
    background = F.softplus(logits).sum(dim=(-2, -1))  # (*batch,)
    phi = background[..., None] - cross
    return phi.movedim(-1, 0).reshape((*sample_shape, *batch_shape))


def labeled_mask(
    keypoints: Float[Tensor, "batch keypoints 2"], mask: Bool[Tensor, "batch keypoints"] | None = None
) -> Bool[Tensor, "batch keypoints"]:
    """Keypoints that count as labeled: finite coordinates and ``mask`` true (when given)."""
    valid = torch.isfinite(keypoints).all(dim=-1)
    return valid if mask is None else valid & mask.to(torch.bool)


def heatmap_loss(
    logits: Float[Tensor, "batch keypoints h w"],
    keypoints: Float[Tensor, "batch keypoints 2"],
    stride: int,
    sigma: float,
    mask: Bool[Tensor, "batch keypoints"] | None = None,
    absent_weight: float = 0.0,
) -> Float[Tensor, ""]:
    r"""DeepLabCut's heatmap loss: BCE against Gaussian bumps, summed over each map, averaged over labels.

    .. math::

        L = \frac{1}{|\mathcal{L}|} \Big[\sum_{(b,k) \in \mathcal{L}} \phi_n(y_{bk};\, h_{bk})
            + w_a \sum_{(b,k) \in \mathcal{A}} \sum_{ij} \operatorname{softplus}(h_{bkij})\Big]

    with :math:`\mathcal{L}` the labeled keypoints (finite and ``mask`` true) and
    :math:`\phi_n` of :func:`heatmap_potential`. :math:`\mathcal{A}` are the *absent* keypoints:
    missing in an image that has at least one label, i.e. hidden or outside the image (an image
    with no label at all is unlabeled, not empty). With ``absent_weight`` :math:`w_a > 0` their
    maps are trained towards zero (BCE against an empty target), as DeepLabCut does, so the
    network's confidence says when a keypoint cannot be seen; with 0 they contribute nothing.
    Missing labels are replaced by a finite dummy before any arithmetic, so their gradients
    through the bump are exactly zero (never NaN). With no label at all the loss is 0.
    """
    valid = labeled_mask(keypoints, mask)
    safe = torch.where(valid[..., None], keypoints, torch.zeros_like(keypoints))
    phi = heatmap_potential(logits, safe, stride, sigma)
    total = torch.where(valid, phi, torch.zeros_like(phi)).sum()
    if absent_weight > 0:
        absent = ~valid & valid.any(dim=-1, keepdim=True)
        empty = F.softplus(logits).sum(dim=(-2, -1))  # BCE of each map against an all-zero target
        total = total + absent_weight * torch.where(absent, empty, torch.zeros_like(empty)).sum()
    return total / valid.sum().clamp(min=1).to(total.dtype)


def offset_loss(
    offsets: Float[Tensor, "batch keypoints 2 h w"],
    keypoints: Float[Tensor, "batch keypoints 2"],
    stride: int,
    radius: float | None = None,
    mask: Bool[Tensor, "batch keypoints"] | None = None,
) -> Float[Tensor, ""]:
    r"""Huber loss of location-refinement offsets (DeepLabCut's *locref* loss).

    For each labeled keypoint :math:`y` and each cell within ``radius`` pixels of it (default
    :math:`1.5 s`), the target offset is :math:`y - g_{ij}`; the loss is the Huber loss of
    :math:`(o_{ij} - (y - g_{ij})) / s` (in cells, so it does not scale with the stride), summed
    over those cells and averaged over the labeled keypoints.
    """
    h, w = offsets.shape[-2:]
    radius = 1.5 * stride if radius is None else float(radius)
    xs, ys = heatmap_grid(h, w, stride, offsets.device, offsets.dtype)
    valid = labeled_mask(keypoints, mask)
    safe = torch.where(valid[..., None], keypoints, torch.zeros_like(keypoints))
    dx = safe[..., 0, None, None] - xs  # (B, K, 1, w)
    dy = safe[..., 1, None, None] - ys[:, None]  # (B, K, h, 1)
    dx, dy = torch.broadcast_tensors(dx, dy)
    near = (dx**2 + dy**2 <= radius**2) & valid[..., None, None]
    target = torch.stack([dx, dy], dim=-3)
    per_cell = F.huber_loss(offsets / stride, target / stride, reduction="none", delta=1.0).sum(dim=-3)
    total = torch.where(near, per_cell, torch.zeros_like(per_cell)).sum()
    return total / valid.sum().clamp(min=1).to(total.dtype)


# ----------------------------------------------------------------------------------------------
# soft-argmax: the Gaussian form


@dataclass
class SoftArgmax:
    r"""Gaussian summary of heatmaps: :math:`\phi_n \approx \frac12 (y - \mu)^\top \Sigma^{-1} (y - \mu)`.

    Attributes:
        mean: :math:`\mu`, pixels, ``(*batch, 2)`` as ``(x, y)``.
        cov: :math:`\Sigma`, pixels squared, ``(*batch, 2, 2)``, symmetric positive definite.
        confidence: :math:`\max_{ij} \sigma(h_{ij})` in ``[0, 1]``, DeepLabCut's *likelihood*.
    """

    mean: Float[Tensor, "batch keypoints 2"]
    cov: Float[Tensor, "batch keypoints 2 2"]
    confidence: Float[Tensor, "batch keypoints"]

    @property
    def precision(self) -> Float[Tensor, "batch keypoints 2 2"]:
        r""":math:`\Sigma^{-1}` (closed-form 2x2 inverse)."""
        return _inv2(self.cov)


def _sym2(a: Tensor, b: Tensor, c: Tensor) -> Tensor:
    """Stack ``[[a, b], [b, c]]`` into ``(..., 2, 2)``."""
    return torch.stack([torch.stack([a, b], -1), torch.stack([b, c], -1)], -2)


def _inv2(m: Tensor) -> Tensor:
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 1, 1]
    det = a * c - b * b
    return _sym2(c / det, -b / det, a / det)


def _clamp_eigenvalues(m: Tensor, low: Tensor | float, high: Tensor | float | None = None) -> Tensor:
    r"""Clamp the eigenvalues of symmetric 2x2 matrices into ``[low, high]``, keeping eigenvectors.

    Closed form: :math:`\lambda_\pm = m \pm r`, :math:`r = \sqrt{((a-c)/2)^2 + b^2}`, and the
    spectral projectors :math:`P_+ = (M - \lambda_- I) / 2r`, :math:`P_- = I - P_+`; a tiny
    term under the root keeps gradients finite for isotropic matrices (where ``eigh``'s are not).
    """
    a, b, c = m[..., 0, 0], m[..., 0, 1], m[..., 1, 1]
    mid = 0.5 * (a + c)
    half = 0.5 * (a - c)
    r = torch.sqrt(half * half + b * b + 1e-12 * mid * mid + 1e-30)
    lo_val, hi_val = mid - r, mid + r
    lo_new = lo_val.clamp(min=low) if high is None else torch.clamp(lo_val, min=low, max=high)
    hi_new = hi_val.clamp(min=low) if high is None else torch.clamp(hi_val, min=low, max=high)
    # M' = M + (lo_new - lo) P_- + (hi_new - hi) P_+, with P_+ = [[half + r, b], [b, r - half]] / 2r
    dlo, dhi = lo_new - lo_val, hi_new - hi_val
    p_a = (half + r) / (2 * r)
    p_b = b / (2 * r)
    p_c = (r - half) / (2 * r)
    return _sym2(a + dlo * (1 - p_a) + dhi * p_a, b + (dhi - dlo) * p_b, c + dlo * (1 - p_c) + dhi * p_c)


def _fit_window_gaussian(
    weights: Float[Tensor, "n cells"],
    inside: Bool[Tensor, "n cells"],
    u: Float[Tensor, " cells"],
    v: Float[Tensor, " cells"],
    lo: Float[Tensor, "n 2"],
    hi: Float[Tensor, "n 2"],
    iterations: int,
    window: int,
) -> tuple[Float[Tensor, "n 2"], Float[Tensor, "n 2 2"]]:
    r"""The Gaussian whose restriction to the window's cells best fits the weights (cell units).

    Maximum likelihood of a discretised Gaussian truncated to the window's cells,
    :math:`q_\theta(c) \propto \exp(\theta^\top T(c))` with :math:`T = (u, v, u^2, uv, v^2)`:
    minimising :math:`A(\theta) - \theta^\top \bar T` (:math:`A` the log-normaliser over the
    window, :math:`\bar T` the observed moments) is convex, its optimum matches the model's
    window moments to the observed ones, and Newton's method (gradient
    :math:`E_q[T] - \bar T`, Hessian :math:`\operatorname{Cov}_q[T]`) converges in a few steps.
    A fit whose precision leaves ``[1/(2r+1)^2, 16]`` cells^-2 or whose mean leaves
    ``[lo, hi]`` is not identified by the window (flat or bimodal window, a one-cell peak, a
    bump mostly off the map) and falls back to the plain window moments (plus the quantisation
    variance of 1/12 cell^2).
    """
    dtype, device = weights.dtype, weights.device
    stats = torch.stack([u, v, u * u, u * v, v * v])  # (5, cells), shared by all maps
    outer = (stats[:, None] * stats[None, :]).reshape(25, -1)  # (25, cells)
    p = weights / weights.sum(dim=-1, keepdim=True)
    t_obs = p @ stats.T  # (n, 5)
    lam_low, lam_high = 1.0 / (2 * window + 1) ** 2, 16.0
    eye2 = torch.eye(2, dtype=dtype, device=device)
    ridge = 1e-6 * torch.eye(5, dtype=dtype, device=device)

    # Start from the observed moments, widened by the cell quantisation (1/12 cell^2).
    m = t_obs[:, :2]
    cov = _sym2(t_obs[:, 2] - m[:, 0] ** 2, t_obs[:, 3] - m[:, 0] * m[:, 1], t_obs[:, 4] - m[:, 1] ** 2)
    cov = cov + eye2 / 12
    lam = _clamp_eigenvalues(_inv2(_clamp_eigenvalues(cov, 1.0 / lam_high)), lam_low, lam_high)
    eta = (lam @ m[..., None])[..., 0]
    theta = torch.stack([eta[:, 0], eta[:, 1], -0.5 * lam[:, 0, 0], -lam[:, 0, 1], -0.5 * lam[:, 1, 1]], -1)
    # The model lives on the finite window, so it is defined for any theta (no projection is
    # needed between steps); the clamp only keeps a diverging, unidentified fit finite.
    for _ in range(iterations):
        q = torch.softmax((theta @ stats).masked_fill(~inside, -math.inf), dim=-1)
        t_mod = q @ stats.T
        hess = (q @ outer.T).reshape(-1, 5, 5) - t_mod[:, :, None] * t_mod[:, None, :]
        scale = hess.diagonal(dim1=-2, dim2=-1).sum(-1)[:, None, None] + 1e-6
        step = torch.linalg.solve(hess + scale * ridge, t_mod - t_obs)
        theta = (theta - step).clamp(-1e4, 1e4)
    raw = _sym2(-2 * theta[:, 2], -theta[:, 3], -2 * theta[:, 4])
    a, b, c = raw[:, 0, 0], raw[:, 0, 1], raw[:, 1, 1]
    mid, r = 0.5 * (a + c), torch.sqrt(0.25 * (a - c) ** 2 + b * b)
    # Not identified by the window: a precision below its floor (flat or bimodal window) or
    # above its cap (a peak sharper than a quarter cell: the grid cannot place it), or a mean
    # off the image or two cells from the moments (a bump mostly off the map). The plain
    # window moments are kept there.
    identified = (mid - r > lam_low) & (mid + r < lam_high)
    precision = torch.where(identified[:, None, None], raw, lam)  # never invert a singular one
    mu = (_inv2(precision) @ theta[:, :2, None])[..., 0]
    failed = ~identified | (mu <= lo).any(-1) | (mu >= hi).any(-1) | ~torch.isfinite(mu).all(-1)
    mu = torch.where(failed[:, None], m, mu)
    sigma = torch.where(failed[:, None, None], cov, _inv2(precision))
    return mu, sigma


def soft_argmax(
    logits: Float[Tensor, "batch keypoints h w"],
    stride: int,
    temperature: float = 1.0,
    min_std: float | None = None,
    peak_threshold: float = PEAK_THRESHOLD,
    *,
    window: int = 3,
    iterations: int = 6,
    max_inflation: float = 100.0,
    inflation_power: float = INFLATION_POWER,
    offsets: Float[Tensor, "batch keypoints 2 h w"] | None = None,
) -> SoftArgmax:
    r"""Mean, covariance and confidence of each heatmap: the Gaussian form of :math:`\phi_n`.

    .. math::

        \phi_n(y) \approx \tfrac12 (y - \mu)^\top \Sigma^{-1} (y - \mu)

    **Spatial distribution.** The network is trained so that :math:`\sigma(h_{ij}) \approx
    t_{ij}(y)`, a Gaussian bump around the keypoint (:func:`heatmap_loss`), so the spatial
    distribution summarised here is the background-subtracted probability map in a window:

    .. math::

        p_{ij} \propto \big[\sigma(h_{ij} / T) - \operatorname{median}_{kl}\, \sigma(h_{kl} / T)\big]_+
            \ \text{ for } |i - i^*| \le r,\ |j - j^*| \le r, \qquad 0 \text{ elsewhere},

    with :math:`(i^*, j^*)` the argmax, :math:`r` = ``window`` cells and :math:`T` =
    ``temperature``. That is the spatial softmax of :math:`\log \sigma(h / T)` (not of
    :math:`h / T`) restricted to a window: the softmax of raw logits is not the bump (the
    logits of a bump, :math:`\operatorname{logit} t`, are much sharper at the peak than in the
    tails, on an arbitrary scale), and over the whole map every background cell pulls the mean
    toward the centre of the map. The window removes far-away mass (and weaker second peaks);
    subtracting the median, the background level, removes the floor inside the window.

    **Truncation-corrected moments.** Plain moments of :math:`p` are biased where the window is
    cut by the edge of the map (several pixels for a keypoint within two cells of the border),
    and the window shrinks the variance. So :math:`(\mu, \Sigma)` is the Gaussian whose
    restriction to the same cells best fits :math:`p` (maximum likelihood, equivalently whose
    window moments equal the observed ones), found by a few Newton steps in its natural
    parameters, starting from the plain moments. For a Gaussian bump this recovers the centre
    and covariance to well under 0.1 px anywhere on the map except where the bump is mostly off
    it (a narrow bump centred in the outer half cell), where the fit is not identified and the
    plain window moments are kept.

    **Floor and inflation.** The eigenvalues of :math:`\Sigma` are floored at
    :math:`\sigma_{\min}^2` (``min_std``, default :math:`s/2`), so a one-cell peak does not
    claim zero uncertainty, and :math:`\Sigma` is inflated where the peak is low:

    .. math::

        \Sigma \leftarrow \Sigma \cdot \operatorname{clip}\big((c_0 / c)^{p},\; 1,\; \kappa\big),
        \qquad c = \max_{ij} \sigma(h_{ij}),

    with :math:`c_0` = ``peak_threshold``, :math:`p` = ``inflation_power`` and :math:`\kappa` =
    ``max_inflation``: the Gaussian form trusts an occluded keypoint's weak peak less. The peak
    height of a network trained on few labels is a poor probability, but a good ranking: the
    detections whose peak is well below the labeled frames' (about 0.8) are the ones that are far
    off (occluded, or a look-alike part), so the inflation is steep (:data:`INFLATION_POWER`).

    **Offsets.** With location-refinement ``offsets`` (pixels, from each cell centre to the
    keypoint) the mean is :math:`\sum_{ij} p_{ij} (g_{ij} + o_{ij})`: every cell votes for the
    keypoint itself, so no truncation correction is needed. :math:`\Sigma` stays the heatmap's.

    Args:
        logits: heatmap logits, ``(*batch, h, w)``.
        stride: the heatmap's output stride.
        temperature: :math:`T`, divides the logits before the sigmoid (above 1 flattens).
        min_std: floor of the standard deviation in pixels (default ``stride / 2``).
        peak_threshold: :math:`c_0`: peaks below it get an inflated covariance.
        inflation_power: :math:`p`, how steeply the covariance grows as the peak falls.
        window: half-width :math:`r` of the window around the argmax, in cells.
        iterations: Newton steps of the truncation correction (0: plain window moments).
        max_inflation: :math:`\kappa`, the cap of the inflation factor.
        offsets: optional ``(*batch, 2, h, w)`` refinement offsets in pixels.

    Returns:
        :class:`SoftArgmax` with ``mean (*batch, 2)``, ``cov (*batch, 2, 2)`` and
        ``confidence (*batch,)``; differentiable in ``logits`` (and ``offsets``).
    """
    batch_shape = logits.shape[:-2]
    h, w = logits.shape[-2:]
    flat = logits.reshape(-1, h * w)
    n = flat.shape[0]
    device, dtype = flat.device, flat.dtype

    _, peak = flat.detach().max(dim=-1)
    confidence = torch.sigmoid(flat.amax(dim=-1))
    # Background level: the median of a regular subsample of at most ~64 cells (a coarse,
    # robust statistic; a full-map median costs more than everything else here). The sigmoid
    # is monotone, so it commutes with the median. No gradient through this nuisance estimate.
    step = max(1, math.ceil(math.sqrt(h * w / 64)))
    sample = flat.detach().view(n, h, w)[:, ::step, ::step].reshape(n, -1)
    background = torch.sigmoid(sample.median(dim=-1).values / temperature)
    pi, pj = torch.div(peak, w, rounding_mode="floor"), peak % w

    # Only the (2r+1)^2 cells of the window take part: gather them, mask those off the map.
    offs = torch.arange(-window, window + 1, device=device)
    v = offs.repeat_interleave(2 * window + 1).to(dtype)  # row offset of each window cell
    u = offs.repeat(2 * window + 1).to(dtype)  # column offset
    rows = pi[:, None] + v.long()
    cols = pj[:, None] + u.long()
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    index = rows.clamp(0, h - 1) * w + cols.clamp(0, w - 1)
    prob = torch.sigmoid(flat.gather(1, index) / temperature)
    # A tiny floor keeps a flat map (all weights zero) well defined: uniform over the window.
    excess = (prob - background[:, None]).clamp(min=0) + 1e-12
    weights = torch.where(inside, excess, torch.zeros_like(excess))

    # The keypoint is on the image, within half a cell of the outer cell centres (cell units
    # relative to the argmax cell); a truncation correction never needs two cells.
    p = weights / weights.sum(dim=-1, keepdim=True)
    m = torch.stack([p @ u, p @ v], -1)
    lo = torch.maximum(m - 2.0, torch.stack([-pj, -pi], -1).to(dtype) - 0.5)
    hi = torch.minimum(m + 2.0, torch.stack([w - 1 - pj, h - 1 - pi], -1).to(dtype) + 0.5)
    mu_c, sigma_c = _fit_window_gaussian(weights, inside, u, v, lo, hi, iterations, window)

    centre = torch.stack([pj, pi], -1).to(dtype) * stride + (stride - 1) / 2.0
    if offsets is None:
        mu = centre + stride * mu_c
    else:
        o = offsets.reshape(n, 2, h * w)
        ox = o[:, 0].gather(1, index)
        oy = o[:, 1].gather(1, index)
        mu = centre + torch.stack([(p * (stride * u + ox)).sum(-1), (p * (stride * v + oy)).sum(-1)], -1)

    floor = (stride / 2.0 if min_std is None else float(min_std)) ** 2
    cov = _clamp_eigenvalues(sigma_c * stride**2, floor)
    ratio = (peak_threshold / confidence.clamp(min=1e-12)).clamp(min=1.0)
    inflation = ratio.pow(inflation_power).clamp(max=max_inflation)
    cov = cov * inflation[:, None, None]
    return SoftArgmax(
        mean=mu.reshape(*batch_shape, 2),
        cov=cov.reshape(*batch_shape, 2, 2),
        confidence=confidence.reshape(batch_shape),
    )


def second_mode(
    logits: Float[Tensor, "batch keypoints h w"], stride: int, window: int = 3, **kwargs
) -> SoftArgmax:
    r"""The heatmap's best peak away from its first: :func:`soft_argmax` with the first hidden.

    The :math:`(2r + 1)^2` cells around the argmax (:math:`r` = ``window``, the first mode's own
    window) are set to probability 0 and the rest of the map is summarised as by
    :func:`soft_argmax` (same ``stride``, ``window`` and ``kwargs``): its mean sits on the
    strongest other peak, its ``confidence`` is that peak's height, and its covariance is inflated
    like any weak peak's. A look-alike part (the other paw) is usually this mode when the first
    is on the wrong one; a map with one bump gives a tail cell of it with a confidence near 0.
    """
    h, w = logits.shape[-2:]
    flat = logits.reshape(-1, h * w)
    peak = flat.detach().argmax(dim=-1)
    rows = torch.arange(h, device=logits.device)[None, :, None]
    cols = torch.arange(w, device=logits.device)[None, None, :]
    near = ((rows - torch.div(peak, w, rounding_mode="floor")[:, None, None]).abs() <= window) & (
        (cols - (peak % w)[:, None, None]).abs() <= window
    )
    hidden = flat.reshape(-1, h, w).masked_fill(near, torch.finfo(flat.dtype).min)
    return soft_argmax(hidden.reshape(logits.shape), stride, window=window, **kwargs)
