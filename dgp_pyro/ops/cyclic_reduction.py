r"""Block cyclic reduction: the factorisation of one block-tridiagonal chain, level by level.

The chain is the Gaussian of :mod:`dgp_pyro.ops.gaussian_chain` in information form, with
diagonal precision blocks :math:`A_t` ``(..., T, D, D)``, off-diagonal blocks :math:`B_t`
``(..., T-1, D, D)`` (or their diagonals ``(..., T-1, D)``) and information vector :math:`h_t`
``(..., T, D)``; symbols as listed there. This module holds the elimination (:func:`_reduce`)
and the three ways back up (means, sample deviations, selected inversion of the marginals);
:mod:`dgp_pyro.ops.chain_factor` drives them over a whole chain or in chunks.

**Algorithm.** Split the frames of a level into kept :math:`K` (even positions) and eliminated
:math:`O` (odd positions). The odd frames are conditionally independent given their two even
neighbours, so :math:`\Lambda_{OO} = \operatorname{blockdiag}(A_o)` and the Schur complement

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

Symbols of this module (besides those of :mod:`dgp_pyro.ops.gaussian_chain`):

=========================  ====================================================================
:math:`K, O`               kept (even) and eliminated (odd) frames of a level
:math:`\Lambda', h'`       the Schur complement on the kept frames: the next, coarser level
:math:`L_o`                Cholesky factor of an eliminated block, :math:`A_o = L_o L_o^\top`
:math:`\epsilon`           standard normal noise of a sample, shape of :math:`y`
=========================  ====================================================================

Vectors travel as columns ``(..., n, D, K)`` (``K`` right-hand sides: one for the means, many
for samples), so that many right-hand sides share one matrix product.

References: cyclic reduction for block-tridiagonal systems (Heller 1976, SIAM J. Numer. Anal.
13(4)); selected inversion of the diagonal blocks of a sparse inverse (Lin et al. 2011, ACM
TOMS 37(4)); the parallel Kalman smoother (Särkkä and García-Fernández 2021, IEEE TAC 66(1)),
the associative-scan alternative of the same logarithmic depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


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
