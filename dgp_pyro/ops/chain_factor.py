r"""Factorisations of a whole Gaussian chain: at once, or in chunks on threads for long chains.

A factor object holds the block cyclic reduction (:mod:`dgp_pyro.ops.cyclic_reduction`) of one
chain in information form (``A, B, h``, symbols as in :mod:`dgp_pyro.ops.gaussian_chain`) and
answers, from it, the means, the log determinant, the marginal (and lag-one cross) covariances
and the map from standard normal noise to an exact sample. :func:`_factorize` picks the kind.

**Short chains** (:class:`_ChainFactor`) are reduced level by level to one block.

**Long chains** (more than ``CHUNKED_ABOVE`` frames, :class:`_ChunkedChainFactor`) are reduced
in chunks: every ``CHUNK_FRAMES``-th frame is a separator, the interiors of the chunks between
two separators are eliminated by the same cyclic reduction, batched over chunks and
``GROUP_FRAMES`` frames at a time (cache-sized, on ``workers`` threads), leaving a
block-tridiagonal chain over the separators that is factorised in turn. It is the same
elimination in another order, so exact. The frames come from a :class:`_ChainSource`, which
may build each group's blocks on the fly (as :mod:`dgp_pyro.ops.keypoint_chain` does), so the
:math:`(T, D, D)` precision never exists.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor
from torch.distributions.utils import lazy_property

from dgp_pyro.ops.cyclic_reduction import (
    _check_shapes,
    _inverse_spd,
    _is_diagonal_offdiag,
    _keypoint_blocks,
    _reduce,
    _up_deviation,
    _up_marginals,
    _up_means,
)

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
    """Block cyclic reduction of the whole chain at once; see :mod:`dgp_pyro.ops.cyclic_reduction`.

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


def _factorize_source(
    source: _ChainSource, keep_root: bool = True, workers: int | None = None
) -> _ChainFactor | _ChunkedChainFactor:
    """Factorise the chain a source streams: at once if short, in chunks if longer than ``CHUNKED_ABOVE``."""
    if source.T > CHUNKED_ABOVE:
        return _ChunkedChainFactor(source, keep_root=keep_root, workers=workers)
    return _ChainFactor(*source.frames(0, source.T), diagonal=source.diagonal, keep_root=keep_root)
