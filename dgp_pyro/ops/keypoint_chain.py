r"""The Deep Graph Pose chain: its block-tridiagonal precision, and the whole-video smoother.

**The model it comes from.** The Gaussian form of the Deep Graph Pose posterior (heatmap
soft-argmax summaries and labels as pseudo-observations, the temporal random walk and the
quadratic skeletal potential) is

.. math::

    \log p(y) = -\tfrac12 \sum_{t=1}^{T-1} \sum_j w_t^j \|y_{t+1,j} - y_{t,j}\|^2
        - \tfrac12 \sum_t \sum_{(i,j) \in E} \sum_a w_{s,a}^{ij} (y_{t,i,a} - y_{t,j,a} - o^{ij}_a)^2
        - \tfrac12 \sum_{t,j} (y_{tj} - m_{tj})^\top P_{tj} (y_{tj} - m_{tj})
        - \tfrac12 \varepsilon \|y\|^2 + \mathrm{const},

whose precision is block tridiagonal with (:func:`build_chain_precision`)

.. math::

    A_t = \operatorname{blockdiag}_j(P_{tj}) + L_s \otimes I_d
        + \operatorname{diag}\big((w_{t-1} + w_t) \otimes 1_d\big) + \varepsilon I_D, \qquad
    B_t = -\operatorname{diag}(w_t \otimes 1_d), \qquad
    h_t = \big(P_{tj} m_{tj}\big)_{j} + \Big(\sum_{(i,j) \in E} w_s^{ij} \odot o^{ij}\,(e_i - e_j)\Big),

with :math:`w_0 = w_T = 0` (the first and last frames have one temporal neighbour) and
:math:`L_s \otimes I_d` standing for the per-axis weighted graph Laplacian of the skeleton,
:math:`\sum_a \big(\sum_{(i,j) \in E} w_{s,a}^{ij} (e_i - e_j)(e_i - e_j)^\top\big) \otimes e_a e_a^\top`.
The original Deep Graph Pose potential has one weight per edge for every axis and no offset
(:math:`o = 0`); a skeleton learned from the labels
(:func:`~dgp_pyro.model.learned_skeleton.learned_skeleton`) has a mean offset and a weight per
axis, so a limb that keeps its direction (the two mirror views of a paw share their x) is held
along that axis only. The ridge :math:`\varepsilon` (default :math:`10^{-6}`, a prior
standard deviation of 1000 pixels around the origin) keeps the Gaussian proper when a keypoint
is never observed, so its normaliser exists. Its pull towards the origin, relative to an
observation of precision :math:`P`, is :math:`\varepsilon / P`: negligible for any useful
observation (1 % only for one with a standard deviation of 100 pixels).

**The smoother** (:func:`smooth_keypoints`) gives the exact per-frame marginals of that
Gaussian for a whole video: block cyclic reduction (:mod:`dgp_pyro.ops.cyclic_reduction`) in
chunks (:mod:`dgp_pyro.ops.chain_factor`), with each group's blocks built on the fly so the
:math:`(T, D, D)` precision never exists. Where the model decouples (no skeleton: independent
keypoints; axis-aligned observation precisions: independent coordinates), it solves the smaller
chains as a batch, exactly. No library we use provides this smoother, which is why it is ours:
Pyro's ``GaussianHMM`` samples, scores and filters a linear-Gaussian chain but gives no
per-frame smoothed marginals, and the NumPy Kalman/RTS smoothers step through the frames in a
Python loop and are not differentiable.

Symbols (besides those of :mod:`dgp_pyro.ops.gaussian_chain`):

=========================  ====================================================================
:math:`m_{tj}, P_{tj}`     pseudo-observation mean and precision (:math:`d \times d`, PSD, zero where missing)
:math:`w_t^j`              temporal weight of keypoint :math:`j` (1 / pixels squared)
:math:`w_s^{ij}`           skeletal weight of edge :math:`(i, j)`, :math:`E` the skeleton edges
:math:`w_{s,a}^{ij}`       its weight on axis :math:`a` (a learned skeleton; else :math:`w_s^{ij}` on each)
:math:`o^{ij}`             mean offset :math:`y_i - y_j` of edge :math:`(i, j)` (zero: the original potential)
:math:`L_s`                weighted Laplacian of the skeleton graph, :math:`J \times J`
:math:`\varepsilon`        ridge (``ridge``), :math:`10^{-6}` by default
=========================  ====================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from dgp_pyro.ops.chain_factor import _ChainSource, _factorize_source

__all__ = ["build_chain_precision", "smooth_keypoints"]


def _skeleton_incidence(J: int, edges: Sequence[tuple[int, int]], dtype: torch.dtype, device) -> Tensor:
    """``(E, J)``: +1 at each edge's first keypoint, -1 at its second."""
    first = [int(i) for i, _ in edges]
    second = [int(j) for _, j in edges]
    if any(not 0 <= k < J for k in first + second) or any(i == j for i, j in zip(first, second, strict=True)):
        raise ValueError(f"skeleton edges {list(edges)} must join two different keypoints in 0..{J - 1}")
    incidence = torch.zeros(len(edges), J, dtype=dtype, device=device)
    if edges:
        rows = torch.arange(len(edges), device=device)
        incidence[rows, torch.tensor(first, device=device)] = 1.0
        incidence[rows, torch.tensor(second, device=device)] = -1.0
    return incidence


@dataclass
class _KeypointInputs:
    """Checked inputs of the Deep Graph Pose chain: missing observations have zero precision."""

    mean: Tensor  # (..., T, J, d), zero where missing
    precision: Tensor  # (..., T, J, d, d), zero where missing
    step_weight: Tensor  # (..., T-1, J)
    edges: list[tuple[int, int]]
    skeletal_weight: Tensor  # (..., E, d), one weight per axis
    skeletal_offset: Tensor | None = None  # (..., E, d) mean offsets y_i - y_j; None: zero


def _keypoint_inputs(
    obs_mean, obs_precision, temporal_weight, skeleton_edges, skeletal_weight, obs_mask, skeletal_offset=None
) -> _KeypointInputs:
    obs_mean = torch.as_tensor(obs_mean)
    if not obs_mean.is_floating_point():
        obs_mean = obs_mean.to(torch.get_default_dtype())
    dtype, device = obs_mean.dtype, obs_mean.device
    obs_precision = torch.as_tensor(obs_precision, dtype=dtype, device=device)
    if obs_mean.dim() < 3:
        raise ValueError(f"obs_mean must be (..., T, J, d); got {tuple(obs_mean.shape)}")
    T, J, d = obs_mean.shape[-3:]
    if tuple(obs_precision.shape[-4:]) != (T, J, d, d):
        raise ValueError(f"obs_precision must be (..., {T}, {J}, {d}, {d}); got {tuple(obs_precision.shape)}")
    observed = torch.isfinite(obs_mean).all(-1) & torch.isfinite(obs_precision).all(-1).all(-1)
    if obs_mask is not None:
        observed = observed & torch.as_tensor(obs_mask, dtype=torch.bool, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)
    precision = torch.where(observed[..., None, None], obs_precision, zero)
    mean = torch.where(observed[..., None], obs_mean, zero)

    temporal_weight = torch.as_tensor(temporal_weight, dtype=dtype, device=device)
    if temporal_weight.dim() == 0 or temporal_weight.shape[-1] != J:
        raise ValueError(
            f"temporal_weight must be (J,) or (T-1, J) with J={J}; got {tuple(temporal_weight.shape)}"
        )
    if bool((temporal_weight.detach() < 0).any()):
        raise ValueError("temporal weights must be non-negative")
    if temporal_weight.dim() >= 2 and temporal_weight.shape[-2] == T - 1:
        step_weight = temporal_weight
    else:
        step_weight = temporal_weight.unsqueeze(-2).expand(*temporal_weight.shape[:-1], T - 1, J)
    edges = [(int(i), int(j)) for i, j in skeleton_edges]
    skeletal_weight = torch.as_tensor(skeletal_weight, dtype=dtype, device=device)
    if skeletal_weight.dim() == 0:
        skeletal_weight = skeletal_weight.expand(len(edges))
    if skeletal_offset is None:  # the original potential: one weight per edge, for every axis
        if skeletal_weight.shape[-1] != len(edges):
            shape = tuple(skeletal_weight.shape)
            raise ValueError(f"{len(edges)} skeleton edges but skeletal_weight is {shape}")
        skeletal_weight = skeletal_weight.unsqueeze(-1).expand(*skeletal_weight.shape, d)
    else:  # a learned skeleton: a weight and a mean offset per edge and axis
        skeletal_offset = torch.as_tensor(skeletal_offset, dtype=dtype, device=device)
        for name, value in (("skeletal_weight", skeletal_weight), ("skeletal_offset", skeletal_offset)):
            if value.dim() < 2 or tuple(value.shape[-2:]) != (len(edges), d):
                raise ValueError(
                    f"with skeletal offsets, {name} must be (..., E={len(edges)}, d={d}); "
                    f"got {tuple(value.shape)}"
                )
    if bool((skeletal_weight.detach() < 0).any()):
        raise ValueError("skeletal weights must be non-negative")
    return _KeypointInputs(mean, precision, step_weight, edges, skeletal_weight, skeletal_offset)


class _KeypointSource(_ChainSource):
    """The Deep Graph Pose chain, built range by range from its pieces (the whole ``A`` is never formed)."""

    def __init__(self, inputs: _KeypointInputs, ridge: float):
        precision, mean, step_weight = inputs.precision, inputs.mean, inputs.step_weight
        dtype, device = precision.dtype, precision.device
        T, J, d = mean.shape[-3:]
        D = J * d
        # each frame's diagonal gets the temporal weights of its steps
        pad = step_weight.new_zeros(*step_weight.shape[:-2], 1, J)
        degree = torch.cat([pad, step_weight], dim=-2) + torch.cat([step_weight, pad], dim=-2)  # (..., T, J)
        incidence = _skeleton_incidence(J, inputs.edges, dtype, device)
        weight = inputs.skeletal_weight  # (..., E, d)
        # the weighted graph Laplacian of the skeleton, one per axis: (..., J, J, d)
        laplacian = torch.einsum("ei,...ea,ej->...ija", incidence, weight, incidence)
        eye_d = torch.eye(d, dtype=dtype, device=device)
        self.skeletal = torch.einsum("...ija,ab->...iajb", laplacian, eye_d).reshape(
            *laplacian.shape[:-3], D, D
        )
        self.precision, self.degree, self.ridge = precision, degree, float(ridge)
        self.step_diag = -step_weight.repeat_interleave(d, dim=-1)  # (..., T-1, D)
        self.info = (precision @ mean.unsqueeze(-1)).squeeze(-1).flatten(-2)  # (..., T, D)
        if inputs.skeletal_offset is not None and inputs.edges:
            # what the mean offsets add to every frame's information vector: (..., 1, J d)
            offset = torch.einsum("ej,...ea->...ja", incidence, weight * inputs.skeletal_offset)
            self.info = self.info + offset.flatten(-2).unsqueeze(-2)
        self.T, self.J, self.d, self.D, self.diagonal = T, J, d, D, True
        j, a, b = torch.meshgrid(*(torch.arange(k, device=device) for k in (J, d, d)), indexing="ij")
        self._block_index = ((j * d + a) * D + j * d + b).reshape(-1)  # (J d d,) in (J, d, d) order
        self.dtype, self.device = dtype, device
        self.batch_shape = torch.broadcast_shapes(
            precision.shape[:-4], degree.shape[:-2], self.skeletal.shape[:-2], self.info.shape[:-2]
        )

    def _blocks(self, precision: Tensor, degree: Tensor) -> Tensor:
        J, d, D = self.J, self.d, self.D
        n = precision.shape[-4]
        batch = torch.broadcast_shapes(precision.shape[:-4], degree.shape[:-2], self.skeletal.shape[:-2])
        A = self.skeletal.unsqueeze(-3).expand(*batch, n, D, D).clone(memory_format=torch.contiguous_format)
        A.diagonal(dim1=-2, dim2=-1).add_(degree.repeat_interleave(d, dim=-1) + self.ridge)
        # the d x d blocks on the diagonal of each frame's block: flat positions in the D x D block
        flat = A.view(-1, D * D)
        flat.index_add_(1, self._block_index, precision.expand(*batch, n, J, d, d).reshape(flat.shape[0], -1))
        return A

    def _frames(self, f0, f1):
        A = self._blocks(self.precision[..., f0:f1, :, :, :], self.degree[..., f0:f1, :])
        return A, self.step_diag[..., f0 : f1 - 1, :], self.info[..., f0:f1, :]

    def _every(self, step):
        return self._blocks(self.precision[..., ::step, :, :, :], self.degree[..., ::step, :]), self.info[
            ..., ::step, :
        ]


def build_chain_precision(
    obs_mean: Float[Tensor, "... T J d"],
    obs_precision: Float[Tensor, "... T J d d"],
    temporal_weight: Float[Tensor, "... J"] | Float[Tensor, "... Tm1 J"],
    skeleton_edges: Sequence[tuple[int, int]],
    skeletal_weight: Float[Tensor, "... E"] | Float[Tensor, "... E d"] | float,
    skeletal_offset: Float[Tensor, "... E d"] | None = None,
    ridge: float = 1e-6,
    obs_mask: Bool[Tensor, "... T J"] | None = None,
    diagonal_offdiag: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""The block-tridiagonal precision ``(A, B, h)`` of the Gaussian-form Deep Graph Pose posterior.

    See the module docstring for the equations. Differentiable in every tensor argument.

    Args:
        obs_mean: pseudo-observation means :math:`m_{tj}`, ``(..., T, J, d)``; NaN means missing.
        obs_precision: their precisions :math:`P_{tj}`, ``(..., T, J, d, d)``, symmetric PSD.
        temporal_weight: :math:`w_t^j`, ``(J,)``, or per step ``(T-1, J)``; zero switches it off.
        skeleton_edges: edges ``(i, j)`` between keypoint indices.
        skeletal_weight: :math:`w_s^{ij}`, ``(E,)`` or a scalar for every edge; with
            ``skeletal_offset``, one per edge and axis, ``(E, d)``.
        skeletal_offset: :math:`o^{ij}`, the mean offset ``y_i - y_j`` of each edge, ``(E, d)``;
            ``None``: zero (the original potential).
        ridge: :math:`\varepsilon`, added to every diagonal element (keeps the Gaussian proper).
        obs_mask: ``(..., T, J)`` boolean, True where observed (a non-finite mean or precision
            counts as missing too). Missing observations get zero precision.
        diagonal_offdiag: return ``B`` as its diagonals ``(..., T-1, D)`` (the fast form)
            instead of dense blocks ``(..., T-1, D, D)``.

    Returns:
        ``A (..., T, D, D)``, ``B (..., T-1, D, D)`` (or ``(..., T-1, D)``), ``h (..., T, D)``
        with ``D = J d``, keypoint-major (``y_t = (y_{t,0,x}, y_{t,0,y}, y_{t,1,x}, ...)``).
    """
    inputs = _keypoint_inputs(
        obs_mean, obs_precision, temporal_weight, skeleton_edges, skeletal_weight, obs_mask, skeletal_offset
    )
    source = _KeypointSource(inputs, ridge)
    A, B, h = source.frames(0, source.T)
    batch = source.batch_shape
    A = A.expand(*batch, *A.shape[-3:])
    B = B.expand(*batch, *B.shape[-2:])
    h = h.expand(*batch, *h.shape[-2:])
    return A, (B if diagonal_offdiag else torch.diag_embed(B)), h


def smooth_keypoints(
    obs_mean: Float[Tensor, "T J d"],
    obs_precision: Float[Tensor, "T J d d"],
    temporal_weight: Float[Tensor, " J"],
    skeleton_edges: Sequence[tuple[int, int]],
    skeletal_weight: Float[Tensor, " E"] | Float[Tensor, "E d"] | float,
    skeletal_offset: Float[Tensor, "E d"] | None = None,
    levels: Sequence[float] = (0.5, 0.9, 0.95),
    ridge: float = 1e-6,
    obs_mask: Bool[Tensor, "T J"] | None = None,
    workers: int | None = None,
) -> dict:
    r"""Whole-video posterior of the Gaussian-form model: per-keypoint marginals and credible intervals.

    Exact marginals of the Gaussian of :func:`build_chain_precision`, by block cyclic reduction
    in chunks streamed through the cache: :math:`O(T)` time, :math:`O(T D^2)` memory (about four
    ``(T, D, D)`` arrays at the peak, 1.6 GB for 100 000 frames of 12 keypoints in 2D; the
    precision itself is never formed), no loop over frames. Where the model decouples (no
    skeleton, or axis-aligned observation precisions) the smaller independent chains are solved
    instead, exactly. Float64 is recommended for long videos. Inputs may be NumPy arrays; outputs
    are tensors, differentiable when the inputs require gradients. No library we use gives these
    per-frame smoothed marginals (Pyro's ``GaussianHMM`` samples and filters but does not
    smooth), which is why this smoother is ours; see the module docstring.

    Args:
        obs_mean, obs_precision, temporal_weight, skeleton_edges, skeletal_weight, skeletal_offset,
            ridge, obs_mask: as in :func:`build_chain_precision` (leading batch dimensions allowed).
        levels: credible levels of the equal-tailed intervals (marginal Gaussians).
        workers: threads for long videos (groups of chunks run side by side); default
            ``torch.get_num_threads()``.

    Returns:
        ``{"mean": (T, J, d), "std": (T, J, d), "cov": (T, J, d, d), "log_det": (),
        "lower": {level: (T, J, d)}, "upper": {level: (T, J, d)}}``.
    """
    inputs = _keypoint_inputs(
        obs_mean, obs_precision, temporal_weight, skeleton_edges, skeletal_weight, obs_mask, skeletal_offset
    )
    mean, blocks, log_det = _smooth_decoupled(inputs, ridge, workers)
    blocks = 0.5 * (blocks + blocks.mT)
    std = blocks.diagonal(dim1=-2, dim2=-1).clamp_min(0.0).sqrt()
    lower, upper = {}, {}
    for level in levels:
        if not 0.0 < float(level) < 1.0:
            raise ValueError(f"credible levels must be in (0, 1); got {level}")
        z = NormalDist().inv_cdf(0.5 + float(level) / 2.0)
        lower[level] = mean - z * std
        upper[level] = mean + z * std
    return {
        "mean": mean,
        "std": std,
        "cov": blocks,
        "log_det": log_det,
        "lower": lower,
        "upper": upper,
    }


def _smooth(inputs: _KeypointInputs, ridge: float, workers: int | None) -> tuple[Tensor, Tensor, Tensor]:
    """Means ``(..., T, J, d)``, per-keypoint covariances ``(..., T, J, d, d)`` and log det of one chain."""
    source = _KeypointSource(inputs, ridge)
    factor = _factorize_source(source, keep_root=False, workers=workers)
    blocks, _ = factor.marginals(cross=False, block=source.d)
    return factor.mean.unflatten(-1, (source.J, source.d)), blocks, factor.log_det


def _smooth_decoupled(
    inputs: _KeypointInputs, ridge: float, workers: int | None
) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`_smooth`, split into independent smaller chains where the model decouples (exact).

    Without a skeleton the keypoints are independent chains of size ``d``; with axis-aligned
    observation precisions (zero off-diagonals) the coordinates are independent chains of size
    ``J``. Each split runs as a batch dimension, which cuts the work by the cube of the split.
    Weights or precisions that require gradients are never split away.
    """
    mean, precision, step = inputs.mean, inputs.precision, inputs.step_weight
    T, J, d = mean.shape[-3:]
    skeletal = inputs.skeletal_weight
    no_skeleton = J > 1 and (not inputs.edges or (not skeletal.requires_grad and bool((skeletal == 0).all())))
    off_diagonal = precision - torch.diag_embed(precision.diagonal(dim1=-2, dim2=-1))
    axis_aligned = d > 1 and not precision.requires_grad and bool((off_diagonal == 0).all())
    if not (no_skeleton or axis_aligned):
        return _smooth(inputs, ridge, workers)
    if axis_aligned:  # coordinates -> a batch dim before time: chains of J keypoints x 1 coordinate
        variance = precision.diagonal(dim1=-2, dim2=-1)  # (..., T, J, d) of precisions
        offset = inputs.skeletal_offset
        split = _KeypointInputs(
            mean.movedim(-1, -3).unsqueeze(-1),
            variance.movedim(-1, -3)[..., None, None],
            step.unsqueeze(-3),
            inputs.edges,
            skeletal.movedim(-1, -2).unsqueeze(-1),  # (..., d, E, 1): each coordinate's own weights
            None if offset is None else offset.movedim(-1, -2).unsqueeze(-1),
        )
        m, blocks, log_det = _smooth_decoupled(
            split, ridge, workers
        )  # (..., d, T, J, 1), (..., d, T, J, 1, 1)
        var = blocks[..., 0, 0].movedim(-3, -1)  # (..., T, J, d)
        return m[..., 0].movedim(-3, -1), torch.diag_embed(var), log_det.sum(-1)
    # no skeleton: keypoints -> a batch dim before time: chains of 1 keypoint x d coordinates
    split = _KeypointInputs(
        mean.movedim(-2, -3).unsqueeze(-2),
        precision.movedim(-3, -4).unsqueeze(-3),
        step.movedim(-1, -2).unsqueeze(-1),
        [],
        skeletal.new_zeros(*skeletal.shape[:-2], 1, 0, d),
    )
    m, blocks, log_det = _smooth(split, ridge, workers)  # (..., J, T, 1, d), (..., J, T, 1, d, d)
    return m[..., 0, :].movedim(-3, -2), blocks[..., 0, :, :].movedim(-4, -3), log_det.sum(-1)
