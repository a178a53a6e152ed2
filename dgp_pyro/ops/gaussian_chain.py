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

**The model it comes from.** The Gaussian form of the Deep Graph Pose posterior (heatmap
soft-argmax summaries and labels as pseudo-observations, the temporal random walk and the
quadratic skeletal potential) is

.. math::

    \log p(y) = -\tfrac12 \sum_{t=1}^{T-1} \sum_j w_t^j \|y_{t+1,j} - y_{t,j}\|^2
        - \tfrac12 \sum_t \sum_{(i,j) \in E} w_s^{ij} \|y_{t,i} - y_{t,j}\|^2
        - \tfrac12 \sum_{t,j} (y_{tj} - m_{tj})^\top P_{tj} (y_{tj} - m_{tj})
        - \tfrac12 \varepsilon \|y\|^2 + \mathrm{const},

whose precision is block tridiagonal with (:func:`build_chain_precision`)

.. math::

    A_t = \operatorname{blockdiag}_j(P_{tj}) + L_s \otimes I_d
        + \operatorname{diag}\big((w_{t-1} + w_t) \otimes 1_d\big) + \varepsilon I_D, \qquad
    B_t = -\operatorname{diag}(w_t \otimes 1_d), \qquad
    h_t = \big(P_{tj} m_{tj}\big)_{j},

with :math:`w_0 = w_T = 0` (the first and last frames have one temporal neighbour) and
:math:`L_s = \sum_{(i,j) \in E} w_s^{ij} (e_i - e_j)(e_i - e_j)^\top` the weighted graph
Laplacian of the skeleton. The ridge :math:`\varepsilon` (default :math:`10^{-6}`, a prior
standard deviation of 1000 pixels around the origin) keeps the Gaussian proper when a keypoint
is never observed, so its normaliser exists. Its pull towards the origin, relative to an
observation of precision :math:`P`, is :math:`\varepsilon / P`: negligible for any useful
observation (1 % only for one with a standard deviation of 100 pixels).

**Algorithm: block cyclic reduction.** Split the frames of a level into kept :math:`K` (even
positions) and eliminated :math:`O` (odd positions). The odd frames are conditionally
independent given their two even neighbours, so :math:`\Lambda_{OO} = \operatorname{blockdiag}(A_o)`
and the Schur complement

.. math::

    \Lambda' = \Lambda_{KK} - \Lambda_{KO} \Lambda_{OO}^{-1} \Lambda_{OK}, \qquad
    h' = h_K - \Lambda_{KO} \Lambda_{OO}^{-1} h_O

is again block tridiagonal over the :math:`\lceil n/2 \rceil` kept frames, with
:math:`A'_k = A_k - B_k A_{k+1}^{-1} B_k^\top - B_{k-1}^\top A_{k-1}^{-1} B_{k-1}` and
:math:`B'_k = -B_k A_{k+1}^{-1} B_{k+1}` (indices of the finer level). Repeating for
:math:`\lceil \log_2 T \rceil` levels, each one a batched Cholesky and a few batched matrix
products over all of the level's odd frames, leaves one block. Going back up:

.. math::

    \mu_O = A_O^{-1} (h_O - \Lambda_{OK} \mu_K), \qquad
    \Sigma_{OK} = -A_O^{-1} \Lambda_{OK} \Sigma_{KK}, \qquad
    \Sigma_{OO} = A_O^{-1} - \Sigma_{OK} \Lambda_{KO} A_O^{-1},

which needs only the diagonal and lag-one blocks of :math:`\Sigma_{KK}` (those of the coarser
level) and gives the diagonal and lag-one blocks of the finer level (selected inversion). The
log determinant is :math:`\log\det\Lambda = \sum_O \log\det A_o + \log\det\Lambda'`, summed over
levels. The same factorisation is a (permuted) Cholesky factorisation of :math:`\Lambda`, so an
exact reparameterised sample is :math:`y = \mu + \delta` with
:math:`\delta_O = L_O^{-\top}\epsilon_O - A_O^{-1}\Lambda_{OK}\delta_K`,
:math:`A_o = L_o L_o^\top`, and :math:`\epsilon \sim \mathcal{N}(0, I)`: the conditional of the odd
frames given the kept ones is exactly :math:`\mathcal{N}(A_O^{-1}(h_O - \Lambda_{OK}y_K), A_O^{-1})`.
Work is :math:`\sum_k T/2^{k+1} = O(T)` block operations, memory :math:`O(T D^2)`, and the
Python loop runs over the :math:`\log_2 T` levels only. When the off-diagonal blocks are
diagonal (as in the model, ``B`` given as ``(..., T-1, D)``), the finest level, half of all the
work, needs elementwise scalings instead of matrix products. Every block inverse goes through
its Cholesky factor (``potrf`` and a triangular solve), never an unpivoted elimination.

**Long chains** (more than ``CHUNKED_ABOVE`` frames) are reduced in chunks: every
``CHUNK_FRAMES``-th frame is a separator, the interiors of the chunks between two separators
are eliminated by the same cyclic reduction, batched over chunks and ``GROUP_FRAMES`` frames
at a time (cache-sized, on ``workers`` threads), leaving a block-tridiagonal chain over the
separators that is factorised in turn. It is the same elimination in another order, so exact;
:func:`smooth_keypoints` builds each group's blocks on the fly, so the :math:`(T, D, D)`
precision never exists. Where the model decouples (no skeleton: independent keypoints;
axis-aligned observation precisions: independent coordinates), :func:`smooth_keypoints` solves
the smaller chains as a batch, exactly.

References: cyclic reduction for block-tridiagonal systems (Heller 1976, SIAM J. Numer. Anal.
13(4)); selected inversion of the diagonal blocks of a sparse inverse (Lin et al. 2011, ACM
TOMS 37(4)); the parallel Kalman smoother (Särkkä and García-Fernández 2021, IEEE TAC 66(1)),
the associative-scan alternative of the same logarithmic depth.

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
:math:`m_{tj}, P_{tj}`     pseudo-observation mean and precision (:math:`d \times d`, PSD, zero where missing)
:math:`w_t^j`              temporal weight of keypoint :math:`j` (1 / pixels squared)
:math:`w_s^{ij}`           skeletal weight of edge :math:`(i, j)`
:math:`L_s`                weighted Laplacian of the skeleton graph, :math:`J \times J`
:math:`\varepsilon`        ridge (``ridge``), :math:`10^{-6}` by default
=========================  ====================================================================

All routines take leading batch dimensions (``A (..., T, D, D)``, ``B (..., T-1, D, D)`` or
``(..., T-1, D)``, ``h (..., T, D)``), are differentiable with torch autograd, and run in the
dtype of their inputs (use float64 for long videos).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from statistics import NormalDist
from typing import NamedTuple

import torch
from jaxtyping import Bool, Float
from pyro.distributions.torch_distribution import TorchDistribution
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.utils import lazy_property

__all__ = [
    "BlockTridiagonalGaussian",
    "ChainMarginals",
    "build_chain_precision",
    "chain_entropy",
    "chain_log_prob",
    "chain_posterior",
    "chain_sample",
    "smooth_keypoints",
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


# ----------------------------------------------------------------------------------------------
# The factorisation (block cyclic reduction)
# ----------------------------------------------------------------------------------------------


def _is_diagonal_offdiag(A: Tensor, B: Tensor, diagonal_B: bool | None) -> bool:
    T, D = A.shape[-3], A.shape[-1]
    if diagonal_B is not None:
        return bool(diagonal_B)
    if B.dim() >= 3 and B.shape[-3:] == (T - 1, D, D):
        return False
    if B.dim() >= 2 and B.shape[-2:] == (T - 1, D):
        return True
    raise ValueError(
        f"B must be (..., T-1, D, D) or diagonal (..., T-1, D) with T={T}, D={D}; got {tuple(B.shape)}"
    )


def _check_shapes(A: Tensor, B: Tensor, h: Tensor, diagonal: bool) -> None:
    if A.dim() < 3 or A.shape[-1] != A.shape[-2]:
        raise ValueError(f"A must be (..., T, D, D); got {tuple(A.shape)}")
    T, D = A.shape[-3], A.shape[-1]
    if T < 1:
        raise ValueError("the chain needs at least one frame")
    want_B = (T - 1, D) if diagonal else (T - 1, D, D)
    if tuple(B.shape[-len(want_B) :]) != want_B:
        raise ValueError(f"B must be (..., {', '.join(map(str, want_B))}); got {tuple(B.shape)}")
    if h.dim() < 2 or tuple(h.shape[-2:]) != (T, D):
        raise ValueError(f"h must be (..., {T}, {D}); got {tuple(h.shape)}")


def _cholesky(M: Tensor) -> Tensor:
    L, info = torch.linalg.cholesky_ex(M)
    if bool((info != 0).any()):
        raise ValueError(
            "the chain precision is not positive definite (a Schur complement block failed its "
            "Cholesky factorisation); check for negative weights or precisions, or add a ridge"
        )
    return L


def _interleave(even: Tensor, odd: Tensor) -> Tensor:
    """Merge blocks at even and odd positions along dim -3 (``len(even)`` is ``len(odd)`` or one more)."""
    batch = torch.broadcast_shapes(even.shape[:-3], odd.shape[:-3])
    n = even.shape[-3] + odd.shape[-3]
    out = even.new_empty(*batch, n, *even.shape[-2:], dtype=torch.result_type(even, odd))
    out[..., 0::2, :, :] = even
    out[..., 1::2, :, :] = odd
    return out


@dataclass
class _Level:
    """What one reduction level keeps for the way back up (n_o odd frames, n_r with a right neighbour)."""

    n: int
    n_o: int
    n_r: int
    diagonal: bool
    Ainv: Tensor  # (..., n_o, D, D)   A_o^{-1}
    R: Tensor | None  # (..., n_o, D, D) L_o^{-T}, a square root of A_o^{-1} (for sampling)
    z: Tensor  # (..., n_o, D, 1)   A_o^{-1} h_o
    U: Tensor | None  # (..., n_o, D, D)   A_o^{-1} Lambda_{o, left}   (dense levels)
    V: Tensor | None  # (..., n_r, D, D)   A_o^{-1} Lambda_{o, right}  (dense levels)
    cl: Tensor | None  # (..., n_o, D) diagonal of Lambda_{o, left}    (diagonal levels)
    cr: Tensor | None  # (..., n_r, D) diagonal of Lambda_{o, right}   (diagonal levels)


def _inverse_spd(M: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(M^{-1}, L^{-T}, log det M)`` of SPD blocks through their Cholesky factors ``M = L L^T``."""
    L = _cholesky(M)
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device).expand_as(L)
    L_inv = torch.linalg.solve_triangular(L, eye, upper=False)
    root = L_inv.mT
    log_det = 2.0 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    return root @ L_inv, root, log_det


def _reduce(A: Tensor, B: Tensor, h: Tensor, diagonal: bool, keep_root: bool, stop: int):
    """Cyclic reduction of ``(A, B, h)`` down to ``stop`` frames (``h`` as columns ``(..., n, D, 1)``).

    Returns the levels, the reduced ``(A, B, h)`` and the log determinant of the eliminated blocks
    (summed over frames, per batch element).
    """
    D = A.shape[-1]
    levels: list[_Level] = []
    log_det = A.new_zeros(())
    n = A.shape[-3]
    while n > stop:
        Ak, Ao = A[..., 0::2, :, :], A[..., 1::2, :, :]
        hk, ho = h[..., 0::2, :, :], h[..., 1::2, :, :]
        if diagonal:
            Cl, Cr = B[..., 0::2, :], B[..., 1::2, :]
        else:
            Cl, Cr = B[..., 0::2, :, :], B[..., 1::2, :, :]
        n_o = Ao.shape[-3]
        n_r = Cr.shape[-2] if diagonal else Cr.shape[-3]
        n_k = n - n_o
        Ainv, root, ld = _inverse_spd(Ao)
        log_det = log_det + ld.sum(-1)
        z = Ainv @ ho
        Ainv_r = Ainv[..., :n_r, :, :]
        batch = torch.broadcast_shapes(
            Ak.shape[:-3], Ainv.shape[:-3], Cl.shape[: Cl.dim() - (2 if diagonal else 3)]
        )
        A_new = Ak.expand(*batch, n_k, D, D).clone()
        if diagonal:
            U = V = None
            # Lambda_{k,o} A_o^{-1} Lambda_{o,k'} with diagonal couplings: elementwise scalings of A_o^{-1}
            Cl, Cr = Cl.contiguous(), Cr.contiguous()
            A_new[..., :n_o, :, :].addcmul_(Ainv, Cl.unsqueeze(-1) * Cl.unsqueeze(-2), value=-1.0)
            A_new[..., 1 : 1 + n_r, :, :].addcmul_(Ainv_r, Cr.unsqueeze(-1) * Cr.unsqueeze(-2), value=-1.0)
            B_new = Ainv_r * (Cl[..., :n_r, :].unsqueeze(-1) * Cr.neg().unsqueeze(-2))
            h_right = Cl.unsqueeze(-1) * z
            h_left = Cr.unsqueeze(-1) * z[..., :n_r, :, :]
        else:
            U = Ainv @ Cl.mT
            V = Ainv_r @ Cr
            A_new[..., :n_o, :, :] -= Cl @ U
            A_new[..., 1 : 1 + n_r, :, :] -= Cr.mT @ V
            B_new = (Cl[..., :n_r, :, :] @ V).neg_()
            h_right = Cl @ z
            h_left = Cr.mT @ z[..., :n_r, :, :]
        hbatch = torch.broadcast_shapes(hk.shape[:-3], h_right.shape[:-3])
        h_new = hk.expand(*hbatch, n_k, D, hk.shape[-1]).clone()
        h_new[..., :n_o, :, :] -= h_right
        h_new[..., 1 : 1 + n_r, :, :] -= h_left
        levels.append(
            _Level(
                n=n,
                n_o=n_o,
                n_r=n_r,
                diagonal=diagonal,
                Ainv=Ainv,
                R=root if keep_root else None,
                z=z,
                U=U,
                V=V,
                cl=Cl if diagonal else None,
                cr=Cr if diagonal else None,
            )
        )
        A, B, h, diagonal, n = A_new, B_new, h_new, False, n_k
    return levels, A, B, h, log_det


def _odd_from_kept(level: _Level, x_kept: Tensor, w: Tensor) -> Tensor:
    """x_o = w - A_o^{-1} Lambda_{oK} x_K, interleaved with x_K (columns ``(..., n, D, K)``)."""
    n_o, n_r = level.n_o, level.n_r
    if level.diagonal:
        t = level.cl.unsqueeze(-1) * x_kept[..., :n_o, :, :]
        t[..., :n_r, :, :] += level.cr.unsqueeze(-1) * x_kept[..., 1 : 1 + n_r, :, :]
        x_odd = w - level.Ainv @ t
    else:
        x_odd = w - level.U @ x_kept[..., :n_o, :, :]
        x_odd[..., :n_r, :, :] -= level.V @ x_kept[..., 1 : 1 + n_r, :, :]
    return _interleave(x_kept, x_odd)


def _up_means(levels: list[_Level], x: Tensor) -> Tensor:
    for level in reversed(levels):
        x = _odd_from_kept(level, x, level.z)
    return x


def _up_deviation(levels: list[_Level], x: Tensor, eps: Tensor) -> Tensor:
    """Back-substitute noise columns ``eps (..., n, D, K)`` given the top frames' deviations ``x``."""
    eps_levels = []
    for _level in levels:
        eps_levels.append(eps[..., 1::2, :, :])
        eps = eps[..., 0::2, :, :]
    for level, e in zip(reversed(levels), reversed(eps_levels), strict=True):
        x = _odd_from_kept(level, x, level.R @ e)
    return x


def _up_marginals(
    levels: list[_Level], S: Tensor, X: Tensor, cross: bool, block: int | None
) -> tuple[Tensor, Tensor | None]:
    """Selected inversion: diagonal ``S`` and lag-one ``X`` blocks, from the top level down to the finest.

    With ``block=d`` the finest level gives only the ``d x d`` diagonal sub-blocks
    ``(..., n, J, d, d)`` of each frame's covariance (and no cross covariances).
    """
    D = S.shape[-1]
    for index in range(len(levels) - 1, -1, -1):
        level = levels[index]
        finest = index == 0
        n_o, n_r = level.n_o, level.n_r
        Ainv = level.Ainv
        S_left, S_right = S[..., :n_o, :, :], S[..., 1 : 1 + n_r, :, :]
        if level.diagonal:
            # col = Cov(y_o, y_left) = -A^{-1}(diag(cl) S_left + diag(cr) X^T),
            # cor = Cov(y_o, y_right) = -A^{-1}(diag(cl) X + diag(cr) S_right),
            # S_oo = A^{-1} - col diag(cl) A^{-1} - cor diag(cr) A^{-1} = (I - W) A^{-1}
            ncl, ncr = level.cl.neg().unsqueeze(-1), level.cr.neg().unsqueeze(-1)
            M = S_left * ncl
            M[..., :n_r, :, :].addcmul_(X.mT, ncr)
            col = Ainv @ M
            N = X * ncl[..., :n_r, :, :]
            N.addcmul_(S_right, ncr)
            cor = Ainv[..., :n_r, :, :] @ N
            I_minus_W = col * ncl.mT
            I_minus_W[..., :n_r, :, :].addcmul_(cor, ncr.mT)
            I_minus_W.diagonal(dim1=-2, dim2=-1).add_(1.0)
            if finest and block is not None:
                J, d = D // block, block
                # ((I - W) A^{-1})[ja, jb] = sum_m (I - W)[ja, m] A^{-1}[jb, m], A^{-1} symmetric
                odd = torch.einsum(
                    "...jam,...jbm->...jab", I_minus_W.unflatten(-2, (J, d)), Ainv.unflatten(-2, (J, d))
                )
                even = _keypoint_blocks(S, J, d)
                return _interleave(even.flatten(-3, -2), odd.flatten(-3, -2)).unflatten(-2, (J, d)), None
            S_odd = I_minus_W @ Ainv
        else:
            col = level.U @ S_left
            col[..., :n_r, :, :] += level.V @ X.mT
            col.neg_()
            cor = level.U[..., :n_r, :, :] @ X
            cor += level.V @ S_right
            cor.neg_()
            correction = col @ level.U.mT  # col U^T + cor V^T
            correction[..., :n_r, :, :] += cor @ level.V.mT
            if finest and block is not None:
                J, d = D // block, block
                odd = _keypoint_blocks(Ainv, J, d) - _keypoint_blocks(correction, J, d)
                even = _keypoint_blocks(S, J, d)
                return _interleave(even.flatten(-3, -2), odd.flatten(-3, -2)).unflatten(-2, (J, d)), None
            S_odd = Ainv - correction
        S = _interleave(S, S_odd)
        if cross or not finest:
            X = _interleave(col.mT, cor)
    if block is not None:  # nothing was reduced
        return _keypoint_blocks(S, D // block, block), None
    return S, (X if cross else None)


def _keypoint_blocks(S: Tensor, J: int, d: int) -> Tensor:
    """``(..., D, D)`` -> its ``J`` diagonal ``d x d`` sub-blocks ``(..., J, d, d)``."""
    S5 = S.unflatten(-1, (J, d)).unflatten(-3, (J, d))  # (..., J, d, J, d)
    return S5.diagonal(dim1=-4, dim2=-2).movedim(-1, -3)


#: Chains longer than this are factorised in chunks (see :class:`_ChunkedChainFactor`).
CHUNKED_ABOVE = 1024
#: Frames per chunk of the chunked factorisation (a power of two).
CHUNK_FRAMES = 32
#: Frames processed together (one batch of chunks) by the chunked factorisation.
GROUP_FRAMES = 4096


class _FactorBase:
    """Common interface: ``batch_shape, T, D, log_det, mean, marginals, deviation``."""

    batch_shape: torch.Size
    T: int
    D: int
    log_det: Tensor

    def _to_columns(self, value: Tensor):
        """``(*extra, *b, T, D)`` (``b``: the factor's batch dims) -> ``(*b, T, D, K)``, and the way back."""
        nb = len(self.batch_shape)
        T, D = self.T, self.D
        if tuple(value.shape[-2:]) != (T, D):
            raise ValueError(f"expected a value ending in ({T}, {D}); got {tuple(value.shape)}")
        if value.dim() < nb + 2:
            value = value.reshape((1,) * (nb + 2 - value.dim()) + value.shape)
        extra = value.shape[: value.dim() - nb - 2]
        batch = torch.broadcast_shapes(value.shape[len(extra) : -2], self.batch_shape)
        value = value.expand(*extra, *batch, T, D)
        cols = value.reshape(-1, *batch, T, D).movedim(0, -1)

        def restore(x: Tensor) -> Tensor:
            x = x.expand(*batch, T, D, x.shape[-1])
            return x.movedim(-1, 0).reshape(*extra, *batch, T, D)

        return cols, restore

    def deviation(self, eps: Tensor) -> Tensor:
        """Map standard normal noise ``(*extra, *batch, T, D)`` to ``L^{-T} eps`` (same shape).

        ``batch`` is matched to the trailing batch dimensions of the factor; the dimensions before
        it become columns of one matrix product.
        """
        cols, restore = self._to_columns(eps)
        return restore(self._deviation_columns(cols))

    def _deviation_columns(self, cols: Tensor) -> Tensor:
        raise NotImplementedError

    def marginals(self, cross: bool = True, block: int | None = None) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError


class _ChainFactor(_FactorBase):
    """Block cyclic reduction of the whole chain at once; see the module docstring.

    The batch shape of the factor is the broadcast of the batch shapes of ``A``, ``B`` and ``h``.
    Vectors travel as columns ``(..., n, D, K)`` so that many right-hand sides (samples, or
    extra batch dimensions of a value) share one matrix product without copying the blocks.
    """

    def __init__(self, A: Tensor, B: Tensor, h: Tensor, diagonal: bool, keep_root: bool = True):
        self.batch_shape = _batch_shape(A, B, h, diagonal)
        self.T, self.D = A.shape[-3], A.shape[-1]
        self.keep_root = keep_root
        self.levels, A_top, _, h_top, log_det = _reduce(A, B, h.unsqueeze(-1), diagonal, keep_root, stop=1)
        self.base_Ainv, base_root, base_log_det = _inverse_spd(A_top)
        self.base_R = base_root if keep_root else None
        self.base_z = self.base_Ainv @ h_top
        self.log_det = (log_det + base_log_det.sum(-1)).expand(self.batch_shape)

    @lazy_property
    def mean(self) -> Tensor:
        """Marginal means ``(*batch, T, D)``."""
        x = _up_means(self.levels, self.base_z)
        return x.squeeze(-1).expand(*self.batch_shape, self.T, self.D)

    def _deviation_columns(self, cols: Tensor) -> Tensor:
        if not self.keep_root:
            raise RuntimeError("this factorisation was built without keep_root; it cannot sample")
        top = cols
        for _level in self.levels:
            top = top[..., 0::2, :, :]
        return _up_deviation(self.levels, self.base_R @ top, cols)

    def marginals(self, cross: bool = True, block: int | None = None) -> tuple[Tensor, Tensor | None]:
        """Diagonal blocks ``(*batch, T, D, D)`` and lag-one blocks ``(*batch, T-1, D, D)`` of Lambda^{-1}.

        With ``block=d``: only the ``d x d`` diagonal sub-blocks ``(*batch, T, D/d, d, d)`` of each
        frame's covariance (cheaper; what per-keypoint credible intervals need), no cross blocks.
        """
        S = self.base_Ainv
        X = S.new_zeros(*S.shape[:-3], 0, self.D, self.D)
        S, X = _up_marginals(self.levels, S, X, cross, block)
        S = S.expand(*self.batch_shape, *S.shape[-3 if block is None else -4 :])
        if X is not None:
            X = X.expand(*self.batch_shape, *X.shape[-3:])
        return S, X


class _ChainSource:
    """Where a chunked factorisation reads its frames: ``A, B, h`` of frames ``f0..f1-1``.

    Frames at ``T`` and beyond are padding: independent standard normal frames (``A = I``,
    ``h = 0``, no coupling), which change neither the other frames nor the log determinant.
    """

    T: int
    D: int
    diagonal: bool
    batch_shape: torch.Size
    dtype: torch.dtype
    device: torch.device

    def _frames(self, f0: int, f1: int) -> tuple[Tensor, Tensor, Tensor]:
        """``A (..., n, D, D)``, ``B`` of the ``n - 1`` couplings inside, ``h (..., n, D)`` (``f1 <= T``)."""
        raise NotImplementedError

    def _every(self, step: int) -> tuple[Tensor, Tensor]:
        """``A`` and ``h`` of frames ``0, step, 2 step, ... < T``."""
        raise NotImplementedError

    def frames(self, f0: int, f1: int) -> tuple[Tensor, Tensor, Tensor]:
        stop = min(f1, self.T)
        A, B, h = self._frames(f0, stop)
        pad = f1 - stop
        if pad:
            D, batch = self.D, self.batch_shape
            A = A.expand(*batch, *A.shape[-3:])
            h = h.expand(*batch, *h.shape[-2:])
            B = B.expand(*batch, *B.shape[-2 if self.diagonal else -3 :])
            eye = torch.eye(D, dtype=self.dtype, device=self.device).expand(*batch, pad, D, D)
            A = torch.cat([A, eye], dim=-3)
            h = torch.cat([h, h.new_zeros(*batch, pad, D)], dim=-2)
            zeros_B = B.new_zeros(*batch, pad, *((D,) if self.diagonal else (D, D)))
            B = torch.cat([B, zeros_B], dim=-2 if self.diagonal else -3)
        return A, B, h

    def every(self, step: int, count: int) -> tuple[Tensor, Tensor]:
        """``A, h`` of frames ``0, step, ..., (count - 1) step`` (padding past ``T``)."""
        A, h = self._every(step)
        pad = count - A.shape[-3]
        if pad:
            D, batch = self.D, self.batch_shape
            eye = torch.eye(D, dtype=self.dtype, device=self.device).expand(*batch, pad, D, D)
            A = torch.cat([A.expand(*batch, *A.shape[-3:]), eye], dim=-3)
            h = torch.cat([h.expand(*batch, *h.shape[-2:]), h.new_zeros(*batch, pad, D)], dim=-2)
        return A, h


class _TensorSource(_ChainSource):
    def __init__(self, A: Tensor, B: Tensor, h: Tensor, diagonal: bool):
        self.A, self.B, self.h = A, B, h
        self.T, self.D, self.diagonal = A.shape[-3], A.shape[-1], diagonal
        self.batch_shape = _batch_shape(A, B, h, diagonal)
        self.dtype, self.device = A.dtype, A.device

    def _frames(self, f0, f1):
        B = self.B[..., f0 : f1 - 1, :] if self.diagonal else self.B[..., f0 : f1 - 1, :, :]
        return self.A[..., f0:f1, :, :], B, self.h[..., f0:f1, :]

    def _every(self, step):
        return self.A[..., ::step, :, :], self.h[..., ::step, :]


def _map(fn, items: list, workers: int) -> list:
    """``[fn(x) for x in items]`` on ``workers`` threads (grad mode carried over).

    Independent groups of chunks run side by side: torch releases the GIL inside its kernels.
    On a 2-core machine busy with other work this was also 3-10x faster than one thread whose
    ops use two OpenMP threads (spinning at barriers while the partner thread is preempted).
    The intra-op thread count is left alone: changing it at run time (``torch.set_num_threads``
    1 then 2) hung the next MKL LAPACK call in this torch build.
    """
    if workers <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    grad = torch.is_grad_enabled()

    def run(x):
        with torch.set_grad_enabled(grad):
            return fn(x)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(run, items))


def _default_workers() -> int:
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


class _ChunkedChainFactor(_FactorBase):
    """Cyclic reduction in chunks, for long chains: streams the frames through the cache.

    Frames ``0, C, 2C, ...`` are separators; the ``C - 1`` frames between two separators form a
    chunk. Every chunk's interior is eliminated by cyclic reduction on its ``C + 1`` frames
    (``C`` a power of two, so its two end frames are the last two left), batched over chunks and
    ``GROUP_FRAMES`` frames at a time so that the working set stays in cache (and, with a
    streaming source, the ``(T, D, D)`` precision is never formed); groups run on ``workers``
    threads. What is left is a block-tridiagonal chain over the separators, ``C`` times shorter,
    factorised as a whole; the way back up runs group by group again. This is the same Gaussian
    elimination as one cyclic reduction in another order, so every answer is exact. The chain is
    padded at its end with independent frames to ``M C + 1`` frames.
    """

    def __init__(
        self,
        source: _ChainSource,
        keep_root: bool = True,
        chunk: int | None = None,
        group: int | None = None,
        workers: int | None = None,
    ):
        chunk = CHUNK_FRAMES if chunk is None else chunk
        group = GROUP_FRAMES if group is None else group
        if chunk < 2 or chunk & (chunk - 1):
            raise ValueError(f"chunk must be a power of two >= 2; got {chunk}")
        self.batch_shape = source.batch_shape
        T, D, C = source.T, source.D, chunk
        self.T, self.D, self.C, self.keep_root = T, D, C, keep_root
        self.workers = _default_workers() if workers is None else int(workers)
        M = max(1, -(-(T - 1) // C))
        self.M, self.pad = M, M * C + 1 - T
        per_group = max(1, group // C)
        bounds = [(g0, min(M, g0 + per_group)) for g0 in range(0, M, per_group)]

        def reduce_group(bound):
            g0, g1 = bound
            A, B, h = source.frames(g0 * C, g1 * C + 1)
            Ac = _chunks(A, C, dim=-3)  # (..., g, C+1, D, D), a view
            hc = _chunks(h.unsqueeze(-1), C, dim=-3)  # (..., g, C+1, D, 1)
            Bc = B.unflatten(-2 if source.diagonal else -3, (g1 - g0, C))
            return _reduce(Ac, Bc, hc, source.diagonal, keep_root, stop=2)

        reduced = _map(reduce_group, bounds, self.workers)
        self.groups = [(g0, g1, r[0]) for (g0, g1), r in zip(bounds, reduced, strict=True)]
        # The chunk ends were not eliminated: top = own block - what the chunk's interior took.
        A_top = torch.cat([r[1] for r in reduced], dim=-4)  # (..., M, 2, D, D)
        B_top = torch.cat([r[2] for r in reduced], dim=-4)[..., 0, :, :]  # (..., M, D, D)
        h_top = torch.cat([r[3] for r in reduced], dim=-4)[..., 0]  # (..., M, 2, D)
        log_det = sum(r[4].sum(-1) for r in reduced)
        A_sep, h_sep = source.every(C, M + 1)
        zero_A = A_top.new_zeros(*A_top.shape[:-4], 1, D, D)
        zero_h = h_top.new_zeros(*h_top.shape[:-3], 1, D)
        A_sep = (
            A_sep
            + torch.cat([A_top[..., :, 0, :, :] - A_sep[..., :-1, :, :], zero_A], dim=-3)
            + torch.cat([zero_A, A_top[..., :, 1, :, :] - A_sep[..., 1:, :, :]], dim=-3)
        )
        h_sep = (
            h_sep
            + torch.cat([h_top[..., :, 0, :] - h_sep[..., :-1, :], zero_h], dim=-2)
            + torch.cat([zero_h, h_top[..., :, 1, :] - h_sep[..., 1:, :]], dim=-2)
        )
        self.separators = _factorize(A_sep, B_top, h_sep, False, keep_root, workers=self.workers)
        self.log_det = (log_det + self.separators.log_det).expand(self.batch_shape)

    @staticmethod
    def _pairs(x: Tensor, g0: int, g1: int, dim: int) -> Tensor:
        """The two separators of each chunk ``g0..g1-1``, stacked on a new dim before ``dim``."""
        return torch.stack([x.narrow(dim, g0, g1 - g0), x.narrow(dim, g0 + 1, g1 - g0)], dim=dim)

    def _join(self, parts: list[Tensor], last: Tensor, dim: int) -> Tensor:
        """Chunks ``(..., g, C+1, ...)`` -> frames: drop each chunk's last frame, add the last separator."""
        body = [p.narrow(dim, 0, self.C).flatten(dim - 1, dim) for p in parts]  # frames now at ``dim``
        return torch.cat([*body, last], dim=dim).narrow(dim, 0, self.T)

    @lazy_property
    def mean(self) -> Tensor:
        x_sep = self.separators.mean  # (..., M+1, D)

        def up(group):
            g0, g1, levels = group
            top = self._pairs(x_sep, g0, g1, dim=-2).unsqueeze(-1)  # (..., g, 2, D, 1)
            return _up_means(levels, top)[..., 0]  # (..., g, C+1, D)

        parts = _map(up, self.groups, self.workers)
        return self._join(parts, x_sep[..., -1:, :], dim=-2).expand(*self.batch_shape, self.T, self.D)

    def _deviation_columns(self, cols: Tensor) -> Tensor:
        if not self.keep_root:
            raise RuntimeError("this factorisation was built without keep_root; it cannot sample")
        C = self.C
        if self.pad:
            cols = torch.cat([cols, cols.new_zeros(*cols.shape[:-3], self.pad, *cols.shape[-2:])], dim=-3)
        x_sep = self.separators._deviation_columns(cols[..., ::C, :, :])  # (..., M+1, D, K)

        def up(group):
            g0, g1, levels = group
            eps = _chunks(cols[..., g0 * C : g1 * C + 1, :, :], C, dim=-3)
            top = self._pairs(x_sep, g0, g1, dim=-3)  # (..., g, 2, D, K)
            return _up_deviation(levels, top, eps)

        parts = _map(up, self.groups, self.workers)
        return self._join(parts, x_sep[..., -1:, :, :], dim=-3)

    def marginals(self, cross: bool = True, block: int | None = None) -> tuple[Tensor, Tensor | None]:
        S_sep, X_sep = self.separators.marginals(cross=True)

        def up(group):
            g0, g1, levels = group
            S_top = self._pairs(S_sep, g0, g1, dim=-3)  # (..., g, 2, D, D)
            X_top = X_sep[..., g0:g1, :, :].unsqueeze(-3)  # (..., g, 1, D, D)
            return _up_marginals(levels, S_top, X_top, cross, block)

        results = _map(up, self.groups, self.workers)
        parts_S = [r[0] for r in results]
        if block is None:
            S = self._join(parts_S, S_sep[..., -1:, :, :], dim=-3)
        else:
            last = _keypoint_blocks(S_sep[..., -1:, :, :], self.D // block, block)
            S = self._join(parts_S, last, dim=-4)
        S = S.expand(*self.batch_shape, *S.shape[len(S.shape) - (3 if block is None else 4) :])
        X = None
        if cross and block is None:
            X = torch.cat([r[1].flatten(-4, -3) for r in results], dim=-3)[..., : self.T - 1, :, :]
            X = X.expand(*self.batch_shape, *X.shape[-3:])
        return S, X


def _chunks(x: Tensor, C: int, dim: int) -> Tensor:
    """Overlapping windows of ``C + 1`` frames, step ``C``, along ``dim`` (a view), as a new dim before it."""
    return x.unfold(dim, C + 1, C).movedim(-1, dim)


def _batch_shape(A: Tensor, B: Tensor, h: Tensor, diagonal: bool) -> torch.Size:
    b_batch = B.shape[: B.dim() - (2 if diagonal else 3)]
    return torch.broadcast_shapes(A.shape[:-3], b_batch, h.shape[:-2])


def _factorize(
    A: Tensor,
    B: Tensor,
    h: Tensor,
    diagonal_B: bool | None = None,
    keep_root: bool = True,
    workers: int | None = None,
) -> _ChainFactor | _ChunkedChainFactor:
    """Factorise the chain: at once if short, in chunks if longer than ``CHUNKED_ABOVE`` frames."""
    diagonal = _is_diagonal_offdiag(A, B, diagonal_B)
    _check_shapes(A, B, h, diagonal)
    if A.shape[-3] > CHUNKED_ABOVE:
        return _ChunkedChainFactor(_TensorSource(A, B, h, diagonal), keep_root, workers=workers)
    return _ChainFactor(A, B, h, diagonal, keep_root)


# ----------------------------------------------------------------------------------------------
# Public routines
# ----------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------
# The Pyro distribution
# ----------------------------------------------------------------------------------------------


class BlockTridiagonalGaussian(TorchDistribution):
    r"""A Gaussian over a chain of frames with block-tridiagonal precision, for Pyro guides and priors.

    ``BlockTridiagonalGaussian(A, B, h)`` is :math:`\mathcal{N}(\Lambda^{-1} h, \Lambda^{-1})` with
    the precision of the module docstring. Its event shape is ``(T, D)``, or ``(T, J, d)`` with
    ``keypoint_dim=d``; its batch shape is the broadcast of the leading dimensions of ``A``,
    ``B`` and ``h``. Sampling is exact and reparameterised (``rsample``), ``log_prob`` and
    ``entropy`` are exact; all cost :math:`O(T D^3)` and the factorisation is computed once per
    instance (and shared by :meth:`expand`).

    Args:
        A: ``(..., T, D, D)`` diagonal precision blocks.
        B: ``(..., T-1, D, D)`` off-diagonal blocks, or their diagonals ``(..., T-1, D)``.
        h: ``(..., T, D)`` information vector.
        keypoint_dim: ``d`` to give events the shape ``(T, D/d, d)``; ``None`` for ``(T, D)``.
        diagonal_B: whether ``B`` holds diagonals (inferred from the shapes when ``None``).
    """

    arg_constraints = {"A": constraints.real, "B": constraints.real, "h": constraints.real}
    has_rsample = True

    def __init__(
        self,
        A: Tensor,
        B: Tensor,
        h: Tensor,
        keypoint_dim: int | None = None,
        diagonal_B: bool | None = None,
        validate_args: bool | None = None,
    ):
        self._diagonal = _is_diagonal_offdiag(A, B, diagonal_B)
        _check_shapes(A, B, h, self._diagonal)
        self.A, self.B, self.h = A, B, h
        self.num_frames, self.state_dim = A.shape[-3], A.shape[-1]
        if keypoint_dim is not None and self.state_dim % keypoint_dim:
            raise ValueError(f"keypoint_dim={keypoint_dim} does not divide the state size {self.state_dim}")
        self.keypoint_dim = keypoint_dim
        b_batch = B.shape[: B.dim() - (2 if self._diagonal else 3)]
        self._param_batch_shape = torch.broadcast_shapes(A.shape[:-3], b_batch, h.shape[:-2])
        super().__init__(self._param_batch_shape, self._event_shape_for(), validate_args=validate_args)

    def _event_shape_for(self) -> torch.Size:
        if self.keypoint_dim is None:
            return torch.Size((self.num_frames, self.state_dim))
        d = self.keypoint_dim
        return torch.Size((self.num_frames, self.state_dim // d, d))

    @property
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    @lazy_property
    def _factor(self) -> _ChainFactor | _ChunkedChainFactor:
        return _factorize(self.A, self.B, self.h, self._diagonal, keep_root=True)

    # -- shapes ---------------------------------------------------------------------------------

    def _to_event(self, x: Tensor) -> Tensor:
        return x.reshape(*x.shape[:-1], *self.event_shape[1:])

    def _from_event(self, value: Tensor) -> Tensor:
        n = len(self.event_shape)
        return value.reshape(*value.shape[: value.dim() - n], self.num_frames, self.state_dim)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(BlockTridiagonalGaussian, _instance)
        batch_shape = torch.Size(batch_shape)
        torch.broadcast_shapes(self._param_batch_shape, batch_shape)  # raises if incompatible
        if torch.broadcast_shapes(self._param_batch_shape, batch_shape) != batch_shape:
            raise ValueError(f"cannot expand batch shape {tuple(self.batch_shape)} to {tuple(batch_shape)}")
        new.A, new.B, new.h = self.A, self.B, self.h
        new._diagonal = self._diagonal
        new.num_frames, new.state_dim, new.keypoint_dim = self.num_frames, self.state_dim, self.keypoint_dim
        new._param_batch_shape = self._param_batch_shape
        if "_factor" in self.__dict__:
            new.__dict__["_factor"] = self._factor
        super(BlockTridiagonalGaussian, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    @classmethod
    def stack(
        cls, distributions: Sequence[BlockTridiagonalGaussian], dim: int = 0
    ) -> BlockTridiagonalGaussian:
        """Stack distributions of one event shape into one with a new batch dimension ``dim``."""
        if not distributions:
            raise ValueError("nothing to stack")
        first = distributions[0]
        for other in distributions[1:]:
            if other.event_shape != first.event_shape or other._diagonal != first._diagonal:
                raise ValueError("can only stack distributions with the same event shape and kind of B")
        batch = torch.broadcast_shapes(*(q.batch_shape for q in distributions))
        if dim < 0:
            dim = dim + len(batch) + 1
        b_tail = 2 if first._diagonal else 3

        def stacked(name: str, tail: int) -> Tensor:
            parts = []
            for q in distributions:
                value = getattr(q, name)
                parts.append(value.expand(*batch, *value.shape[value.dim() - tail :]))
            return torch.stack(parts, dim=dim)

        return cls(
            stacked("A", 3),
            stacked("B", b_tail),
            stacked("h", 2),
            keypoint_dim=first.keypoint_dim,
            diagonal_B=first._diagonal,
            validate_args=first._validate_args,
        )

    # -- moments --------------------------------------------------------------------------------

    @property
    def mean(self) -> Tensor:
        mean = self._factor.mean.expand(*self.batch_shape, self.num_frames, self.state_dim)
        return self._to_event(mean)

    @lazy_property
    def _marginals(self) -> tuple[Tensor, Tensor | None]:
        return self._factor.marginals(cross=True)

    @property
    def marginal_covariance(self) -> Tensor:
        """Covariance of each frame's state, ``(*batch, T, D, D)``."""
        cov = self._marginals[0]
        return cov.expand(*self.batch_shape, *cov.shape[-3:])

    @property
    def cross_covariance(self) -> Tensor:
        r""":math:`\mathrm{Cov}(y_t, y_{t+1})`, ``(*batch, T-1, D, D)``."""
        cross = self._marginals[1]
        return cross.expand(*self.batch_shape, *cross.shape[-3:])

    @property
    def variance(self) -> Tensor:
        return self._to_event(self.marginal_covariance.diagonal(dim1=-2, dim2=-1))

    @property
    def stddev(self) -> Tensor:
        return self.variance.sqrt()

    # -- sampling and densities -----------------------------------------------------------------

    def rsample(self, sample_shape=()) -> Tensor:
        sample_shape = torch.Size(sample_shape)
        shape = (*sample_shape, *self.batch_shape, self.num_frames, self.state_dim)
        noise = torch.randn(shape, dtype=self.A.dtype, device=self.A.device)
        y = self._factor.mean + self._factor.deviation(noise)
        return self._to_event(y)

    def log_prob(self, value: Tensor) -> Tensor:
        if self._validate_args:
            self._validate_sample(value)
        y = self._from_event(value)
        factor = self._factor
        log_prob = _log_prob_from_factor(factor, self.A, self.B, self._diagonal, y)
        shape = torch.broadcast_shapes(log_prob.shape, self.batch_shape)
        return log_prob.expand(shape)

    def entropy(self) -> Tensor:
        T, D = self.num_frames, self.state_dim
        entropy = 0.5 * T * D * (1.0 + _LOG_2PI) - 0.5 * self._factor.log_det
        return entropy.expand(self.batch_shape)


# ----------------------------------------------------------------------------------------------
# The Deep Graph Pose chain: builder and whole-video smoother
# ----------------------------------------------------------------------------------------------


def _skeleton_laplacian(
    J: int, edges: Sequence[tuple[int, int]], weight: Tensor, dtype: torch.dtype, device
) -> Tensor:
    """Weighted graph Laplacian ``(..., J, J)`` of the skeleton, ``sum_e w_e (e_i - e_j)(e_i - e_j)^T``."""
    if len(edges) == 0:
        return torch.zeros(*weight.shape[:-1], J, J, dtype=dtype, device=device)
    first = [int(i) for i, _ in edges]
    second = [int(j) for _, j in edges]
    if any(not 0 <= k < J for k in first + second) or any(i == j for i, j in zip(first, second, strict=True)):
        raise ValueError(f"skeleton edges {list(edges)} must join two different keypoints in 0..{J - 1}")
    incidence = torch.zeros(len(edges), J, dtype=dtype, device=device)
    rows = torch.arange(len(edges), device=device)
    incidence[rows, torch.tensor(first, device=device)] = 1.0
    incidence[rows, torch.tensor(second, device=device)] = -1.0
    return torch.einsum("ei,...e,ej->...ij", incidence, weight, incidence)


@dataclass
class _KeypointInputs:
    """Checked inputs of the Deep Graph Pose chain: missing observations have zero precision."""

    mean: Tensor  # (..., T, J, d), zero where missing
    precision: Tensor  # (..., T, J, d, d), zero where missing
    step_weight: Tensor  # (..., T-1, J)
    edges: list[tuple[int, int]]
    skeletal_weight: Tensor  # (..., E)


def _keypoint_inputs(
    obs_mean, obs_precision, temporal_weight, skeleton_edges, skeletal_weight, obs_mask
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
    if skeletal_weight.shape[-1] != len(edges):
        raise ValueError(f"{len(edges)} skeleton edges but skeletal_weight is {tuple(skeletal_weight.shape)}")
    if bool((skeletal_weight.detach() < 0).any()):
        raise ValueError("skeletal weights must be non-negative")
    return _KeypointInputs(mean, precision, step_weight, edges, skeletal_weight)


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
        laplacian = _skeleton_laplacian(J, inputs.edges, inputs.skeletal_weight, dtype, device)  # (..., J, J)
        eye_d = torch.eye(d, dtype=dtype, device=device)
        self.skeletal = torch.einsum("...ij,ab->...iajb", laplacian, eye_d).reshape(
            *laplacian.shape[:-2], D, D
        )
        self.precision, self.degree, self.ridge = precision, degree, float(ridge)
        self.step_diag = -step_weight.repeat_interleave(d, dim=-1)  # (..., T-1, D)
        self.info = (precision @ mean.unsqueeze(-1)).squeeze(-1).flatten(-2)  # (..., T, D)
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
        A = self.skeletal.unsqueeze(-3).expand(*batch, n, D, D).clone()
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
    skeletal_weight: Float[Tensor, "... E"] | float,
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
        skeletal_weight: :math:`w_s^{ij}`, ``(E,)`` or a scalar for every edge.
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
        obs_mean, obs_precision, temporal_weight, skeleton_edges, skeletal_weight, obs_mask
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
    skeletal_weight: Float[Tensor, " E"] | float,
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
    are tensors, differentiable when the inputs require gradients.

    Args:
        obs_mean, obs_precision, temporal_weight, skeleton_edges, skeletal_weight, ridge,
            obs_mask: as in :func:`build_chain_precision` (leading batch dimensions allowed).
        levels: credible levels of the equal-tailed intervals (marginal Gaussians).
        workers: threads for long videos (groups of chunks run side by side); default
            ``torch.get_num_threads()``.

    Returns:
        ``{"mean": (T, J, d), "std": (T, J, d), "cov": (T, J, d, d), "log_det": (),
        "lower": {level: (T, J, d)}, "upper": {level: (T, J, d)}}``.
    """
    inputs = _keypoint_inputs(
        obs_mean, obs_precision, temporal_weight, skeleton_edges, skeletal_weight, obs_mask
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
    if source.T > CHUNKED_ABOVE:
        factor: _FactorBase = _ChunkedChainFactor(source, keep_root=False, workers=workers)
    else:
        factor = _ChainFactor(*source.frames(0, source.T), diagonal=True, keep_root=False)
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
        split = _KeypointInputs(
            mean.movedim(-1, -3).unsqueeze(-1),
            variance.movedim(-1, -3)[..., None, None],
            step.unsqueeze(-3),
            inputs.edges,
            skeletal.unsqueeze(-2),
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
        skeletal.new_zeros(*skeletal.shape[:-1], 1, 0),
    )
    m, blocks, log_det = _smooth(split, ridge, workers)  # (..., J, T, 1, d), (..., J, T, 1, d, d)
    return m[..., 0, :].movedim(-3, -2), blocks[..., 0, :, :].movedim(-4, -3), log_det.sum(-1)
