r"""The block-tridiagonal Gaussian chain as a Pyro distribution (:class:`BlockTridiagonalGaussian`).

The Gaussian of :mod:`dgp_pyro.ops.gaussian_chain`, :math:`\mathcal{N}(\Lambda^{-1} h, \Lambda^{-1})`
with a block-tridiagonal precision :math:`\Lambda` given by its blocks ``(A, B)`` and information
vector ``h``, for Pyro guides and priors: one sample site holds a whole window of frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions.torch_distribution import TorchDistribution
from torch import Tensor
from torch.distributions import constraints
from torch.distributions.utils import lazy_property

from dgp_pyro.ops.chain_factor import _ChainFactor, _ChunkedChainFactor, _factorize
from dgp_pyro.ops.cyclic_reduction import _check_shapes, _is_diagonal_offdiag
from dgp_pyro.ops.gaussian_chain import _LOG_2PI, _log_prob_from_factor

__all__ = ["BlockTridiagonalGaussian"]


class BlockTridiagonalGaussian(TorchDistribution):
    r"""A Gaussian over a chain of frames with block-tridiagonal precision, for Pyro guides and priors.

    ``BlockTridiagonalGaussian(A, B, h)`` is :math:`\mathcal{N}(\Lambda^{-1} h, \Lambda^{-1})` with
    the precision of :mod:`dgp_pyro.ops.gaussian_chain`. Its event shape is ``(T, D)``, or
    ``(T, J, d)`` with ``keypoint_dim=d``; its batch shape is the broadcast of the leading
    dimensions of ``A``, ``B`` and ``h``. Sampling is exact and reparameterised (``rsample``),
    ``log_prob`` and ``entropy`` are exact; all cost :math:`O(T D^3)` and the factorisation is
    computed once per instance (and shared by :meth:`expand`).

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
