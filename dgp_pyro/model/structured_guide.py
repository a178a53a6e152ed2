r"""The structured guide's skeleton, shared by the 2D and the 3D model.

Both guides (:func:`~dgp_pyro.model.dgp.dgp_guide`, :func:`~dgp_pyro.model.dgp3d.dgp3d_guide`)
are one Gaussian chain over each window's keypoints, built in the same three steps:

1. Gaussian pseudo-observations :math:`(m_{tj}, P_{tj})` of every keypoint in every frame from
   the detached heatmaps and any labels (each model's own step: the soft-argmax summaries in
   2D, the robust triangulation of every view's summaries in 3D);
2. learned corrections (:class:`GuideCorrection`): :math:`m_{tj} + b_j` and
   :math:`P_{tj} \exp(s_j)`, a per-keypoint offset and log precision scale;
3. the chain with those pseudo-observations and the model's quadratic potentials
   (:func:`guide_chain`, through :func:`~dgp_pyro.ops.keypoint_chain.build_chain_precision`),
   sampled as the one latent site ``"keypoints"`` of the ``"windows"`` plate, scaled like the
   model's (:func:`sample_windows`).

This module holds steps 2 and 3, and what the models share with them: the potentials' weights
as chain arguments (:func:`potential_arguments`) and the windows plate (:func:`window_plate`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Protocol

import pyro
import torch
from pyro import poutine
from torch import Tensor, nn

from dgp_pyro.model.potentials import PRIOR_RIDGE, PotentialWeights
from dgp_pyro.ops.block_tridiagonal import BlockTridiagonalGaussian
from dgp_pyro.ops.keypoint_chain import build_chain_precision

__all__ = [
    "GuideCorrection",
    "GuideCorrection3D",
    "PotentialSwitches",
    "guide_chain",
    "potential_arguments",
    "sample_windows",
    "window_plate",
]


class GuideCorrection(nn.Module):
    """Learned corrections of the Gaussian form: per-keypoint log precision scale and offset.

    ``dim`` is the keypoints' coordinates: 2 (image keypoints, offsets in pixels) or 3 (world
    keypoints, :class:`GuideCorrection3D`, offsets in world units).
    """

    def __init__(self, num_keypoints: int, dim: int = 2):
        super().__init__()
        self.log_precision_scale = nn.Parameter(torch.zeros(num_keypoints, dtype=torch.float64))
        self.offset = nn.Parameter(torch.zeros(num_keypoints, dim, dtype=torch.float64))

    def correct(self, mean: Tensor, precision: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``(..., J, d)`` plus :math:`b_j`, precision ``(..., J, d, d)`` times :math:`e^{s_j}`."""
        return mean + self.offset, precision * self.log_precision_scale.exp()[:, None, None]


class GuideCorrection3D(GuideCorrection):
    """Learned corrections of the 3D pseudo-observations: per-keypoint log precision scale and offset."""

    def __init__(self, num_keypoints: int):
        super().__init__(num_keypoints, dim=3)


class PotentialSwitches(Protocol):
    """What :func:`potential_arguments` reads of a model's settings (2D or 3D)."""

    edges: list[tuple[int, int]]

    @property
    def temporal(self) -> bool: ...

    @property
    def skeletal(self) -> bool: ...


def potential_arguments(settings: PotentialSwitches, weights: PotentialWeights) -> tuple:
    """``(temporal_weight, edges, skeletal_weight, skeletal_offset)`` for the chain builders; off means zero.

    ``skeletal_offset`` is ``None`` except for a skeleton learned from the labels (per-axis
    weights and mean offsets, :mod:`dgp_pyro.model.learned_skeleton`).

    Only the quadratic potentials: the 3D bone-length potential is not quadratic and is not
    part of these (see :func:`~dgp_pyro.model.dgp3d.bone_energy`).
    """
    keypoints = weights.log_temporal.shape[-1]
    zeros = weights.log_temporal.new_zeros(keypoints)
    return (
        weights.temporal() if settings.temporal else zeros,
        settings.edges if settings.skeletal else [],
        weights.skeletal() if settings.skeletal else zeros[:0],
        weights.skeletal_offset() if settings.skeletal else None,
    )


#: Adds terms to a guide chain's ``(A, B, h)`` and returns the new ``(A, h)`` (the 3D bone terms).
ChainRefinement = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def guide_chain(
    mean: Tensor,
    precision: Tensor,
    potentials: tuple,
    keypoint_dim: int,
    obs_mask: Tensor | None = None,
    refine: ChainRefinement | None = None,
) -> BlockTridiagonalGaussian:
    """q(y) over runs of consecutive frames: corrected pseudo-observations and the potentials.

    ``mean (..., T, J, d)`` and ``precision (..., T, J, d, d)`` are the corrected
    pseudo-observations (``obs_mask``: where they observe anything), ``potentials`` the
    :func:`potential_arguments`; leading dimensions are windows (independent chains).
    ``refine`` adds non-quadratic terms linearised around the chain (the 3D bone lengths).
    """
    A, B, h = build_chain_precision(
        mean,
        precision,
        *potentials,
        ridge=PRIOR_RIDGE,
        obs_mask=obs_mask,
        diagonal_offdiag=True,
    )
    if refine is not None:
        A, h = refine(A, B, h)
    return BlockTridiagonalGaussian(A, B, h, keypoint_dim=keypoint_dim, diagonal_B=True)


@contextmanager
def window_plate(num_windows: int, scale: float) -> Iterator[None]:
    """The ``"windows"`` plate of the models and guides, scaled so windows weigh like the labeled loss."""
    with pyro.plate("windows", num_windows), poutine.scale(scale=scale):
        yield


def sample_windows(q: BlockTridiagonalGaussian, num_windows: int, scale: float) -> None:
    """The guide's one latent site: every window's keypoints, ``pyro.sample("keypoints", q)``."""
    with window_plate(num_windows, scale):
        pyro.sample("keypoints", q)
