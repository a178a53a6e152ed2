r"""Gaussian chains: a Gaussian over :math:`T` frames with a block-tridiagonal precision in time.

This is the numerical core of the structured guide and of the whole-video posterior. Each
frame's state :math:`y_t \in \mathbb{R}^D` stacks the keypoints of the frame
(:math:`D = J d`, :math:`d = 2` or :math:`3`). The Gaussian is given in information form,

.. math::

    \log q(y) = -\tfrac12 y^\top \Lambda y + h^\top y - \tfrac12 h^\top \Lambda^{-1} h
        + \tfrac12 \log\det\Lambda - \tfrac{TD}{2}\log 2\pi ,
    \qquad
    \Lambda = \begin{pmatrix}
        A_1 & B_1 & & \\
        B_1^\top & A_2 & \ddots & \\
        & \ddots & \ddots & B_{T-1} \\
        & & B_{T-1}^\top & A_T
    \end{pmatrix},

so :math:`y \sim \mathcal{N}(\Lambda^{-1} h, \Lambda^{-1})`. Nothing here forms the dense
:math:`TD \times TD` matrix: every routine is :math:`O(T D^3)` work and :math:`O(T D^2)`
memory, and none loops over frames in Python.

This module holds the routines on a chain given as ``(A, B, h)``: marginals
(:func:`chain_posterior`), exact reparameterised samples (:func:`chain_sample`), the log density
(:func:`chain_log_prob`) and the entropy (:func:`chain_entropy`). The rest of the chain maths:

- :mod:`dgp_pyro.ops.cyclic_reduction`: the factorisation (block cyclic reduction, selected
  inversion), with its equations;
- :mod:`dgp_pyro.ops.chain_factor`: factorising a whole chain, in chunks on threads when long;
- :mod:`dgp_pyro.ops.block_tridiagonal`: the same Gaussian as a Pyro distribution;
- :mod:`dgp_pyro.ops.keypoint_chain`: the Deep Graph Pose chain (precision builder and the
  whole-video smoother).

Symbols:

=========================  ====================================================================
:math:`T`                  number of frames in the chain
:math:`J, d, D`            keypoints, coordinates per keypoint (2 or 3), state size :math:`D = Jd`
:math:`y_t`                the stacked keypoints of frame :math:`t`, shape ``(D,)``
:math:`A_t`                diagonal precision block of frame :math:`t`, ``(T, D, D)``
:math:`B_t`                off-diagonal precision block coupling :math:`t` and :math:`t+1`, ``(T-1, D, D)``
:math:`h_t`                information vector of frame :math:`t`, ``(T, D)``
:math:`\Lambda`            the block-tridiagonal precision, :math:`TD \times TD` (never formed)
:math:`\mu, \Sigma`        mean :math:`\Lambda^{-1} h` and covariance :math:`\Lambda^{-1}`
=========================  ====================================================================

All routines take leading batch dimensions (``A (..., T, D, D)``, ``B (..., T-1, D, D)`` or
``(..., T-1, D)``, ``h (..., T, D)``), are differentiable with torch autograd, and run in the
dtype of their inputs (use float64 for long videos).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from jaxtyping import Float
from torch import Tensor

from dgp_pyro.ops.chain_factor import _FactorBase, _factorize
from dgp_pyro.ops.cyclic_reduction import _is_diagonal_offdiag

__all__ = [
    "ChainMarginals",
    "chain_entropy",
    "chain_log_prob",
    "chain_posterior",
    "chain_sample",
]

_LOG_2PI = math.log(2.0 * math.pi)


class ChainMarginals(NamedTuple):
    """What :func:`chain_posterior` returns (leading batch dimensions omitted below)."""

    #: marginal means :math:`\mu_t`, ``(T, D)``
    mean: Tensor
    #: marginal covariances, the diagonal blocks of :math:`\Lambda^{-1}`, ``(T, D, D)``
    cov: Tensor
    #: lag-one cross covariances :math:`\mathrm{Cov}(y_t, y_{t+1})`, ``(T-1, D, D)``
    cross_cov: Tensor | None
    #: :math:`\log\det\Lambda`, ``()``
    log_det: Tensor


def chain_posterior(
    A: Float[Tensor, "... T D D"],
    B: Float[Tensor, "... Tm1 D D"] | Float[Tensor, "... Tm1 D"],
    h: Float[Tensor, "... T D"],
    cross: bool = True,
    diagonal_B: bool | None = None,
) -> ChainMarginals:
    r"""Marginals of :math:`\mathcal{N}(\Lambda^{-1}h, \Lambda^{-1})` for a block-tridiagonal :math:`\Lambda`.

    Args:
        A: diagonal blocks of the precision, ``(..., T, D, D)``, symmetric.
        B: off-diagonal blocks, ``B[t]`` couples frame ``t`` (rows) to ``t+1`` (columns):
            ``(..., T-1, D, D)``, or their diagonals ``(..., T-1, D)`` (cheaper).
        h: information vector, ``(..., T, D)``.
        cross: also return the lag-one cross covariances (``None`` otherwise).
        diagonal_B: whether ``B`` holds diagonals; inferred from the shapes when ``None``.

    Returns:
        :class:`ChainMarginals` ``(mean (..., T, D), cov (..., T, D, D),
        cross_cov (..., T-1, D, D) or None, log_det (...))``.
    """
    factor = _factorize(A, B, h, diagonal_B, keep_root=False)
    cov, cross_cov = factor.marginals(cross=cross)
    return ChainMarginals(factor.mean, cov, cross_cov, factor.log_det)


def chain_sample(
    A: Float[Tensor, "... T D D"],
    B: Float[Tensor, "... Tm1 D D"] | Float[Tensor, "... Tm1 D"],
    h: Float[Tensor, "... T D"],
    num_samples: int = 1,
    generator: torch.Generator | None = None,
    noise: Float[Tensor, "S ... T D"] | None = None,
    diagonal_B: bool | None = None,
) -> Float[Tensor, "S ... T D"]:
    r"""Exact reparameterised draws :math:`y = \mu + L^{-\top}\epsilon`, differentiable in A, B, h.

    Args:
        A, B, h: the chain in information form (see :func:`chain_posterior`).
        num_samples: number of draws ``S`` (ignored when ``noise`` is given).
        generator: torch generator for the standard normal noise.
        noise: the standard normal noise itself, ``(S, ..., T, D)`` (any leading dimensions);
            the same noise gives the same draws, so gradients can be compared.
        diagonal_B: see :func:`chain_posterior`.

    Returns:
        draws with the shape of ``noise``, or ``(S, *batch, T, D)``.
    """
    factor = _factorize(A, B, h, diagonal_B, keep_root=True)
    if noise is None:
        shape = (num_samples, *factor.batch_shape, factor.T, factor.D)
        noise = torch.randn(shape, generator=generator, dtype=A.dtype, device=A.device)
    return factor.mean + factor.deviation(noise)


def _quadratic_form(A: Tensor, B: Tensor, diagonal: bool, batch_shape: torch.Size, delta: Tensor) -> Tensor:
    """``delta^T Lambda delta`` for ``delta (*extra, *batch, T, D)`` -> ``(*extra, *batch)``."""
    T, D = A.shape[-3], A.shape[-1]
    nb = len(batch_shape)
    if delta.dim() < nb + 2:
        delta = delta.reshape((1,) * (nb + 2 - delta.dim()) + delta.shape)
    extra = delta.shape[: delta.dim() - nb - 2]
    batch = torch.broadcast_shapes(delta.shape[len(extra) : -2], batch_shape)
    x = delta.expand(*extra, *batch, T, D).reshape(-1, *batch, T, D).movedim(0, -1)  # (*batch, T, D, K)
    quad = (x * (A @ x)).sum((-3, -2))
    if T > 1:
        if diagonal:
            bx = B.unsqueeze(-1) * x[..., 1:, :, :]
        else:
            bx = B @ x[..., 1:, :, :]
        quad = quad + 2.0 * (x[..., :-1, :, :] * bx).sum((-3, -2))
    quad = quad.expand(*batch, quad.shape[-1])
    return quad.movedim(-1, 0).reshape(*extra, *batch)


def chain_log_prob(
    A: Float[Tensor, "... T D D"],
    B: Float[Tensor, "... Tm1 D D"] | Float[Tensor, "... Tm1 D"],
    h: Float[Tensor, "... T D"],
    y: Float[Tensor, "*sample ... T D"],
    diagonal_B: bool | None = None,
) -> Float[Tensor, "*sample ..."]:
    r"""Log density of ``y`` under :math:`\mathcal{N}(\Lambda^{-1}h, \Lambda^{-1})`, batched over samples."""
    diagonal = _is_diagonal_offdiag(A, B, diagonal_B)
    factor = _factorize(A, B, h, diagonal, keep_root=False)
    return _log_prob_from_factor(factor, A, B, diagonal, y)


def _log_prob_from_factor(factor: _FactorBase, A: Tensor, B: Tensor, diagonal: bool, y: Tensor) -> Tensor:
    quad = _quadratic_form(A, B, diagonal, factor.batch_shape, y - factor.mean)
    return 0.5 * factor.log_det - 0.5 * factor.T * factor.D * _LOG_2PI - 0.5 * quad


def chain_entropy(
    A: Float[Tensor, "... T D D"],
    B: Float[Tensor, "... Tm1 D D"] | Float[Tensor, "... Tm1 D"],
    h: Float[Tensor, "... T D"],
    diagonal_B: bool | None = None,
) -> Float[Tensor, "..."]:
    r"""Differential entropy :math:`\tfrac{TD}{2}(1 + \log 2\pi) - \tfrac12\log\det\Lambda`."""
    factor = _factorize(A, B, h, diagonal_B, keep_root=False)
    return 0.5 * factor.T * factor.D * (1.0 + _LOG_2PI) - 0.5 * factor.log_det
