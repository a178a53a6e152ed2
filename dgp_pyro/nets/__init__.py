"""Heatmap network, Gaussian targets, heatmap loss and soft-argmax.

- :mod:`~dgp_pyro.nets.backbone`: ResNet trunks and their weights (random, torchvision, file).
- :mod:`~dgp_pyro.nets.heatmap_net`: :class:`HeatmapNet` and :func:`normalize_images`.
- :mod:`~dgp_pyro.nets.heatmaps`: the pixel grid of a heatmap, Gaussian targets, the heatmap
  loss (the heatmap form of the neural potential) and soft-argmax (its Gaussian form).
"""

from dgp_pyro.nets.backbone import BACKBONE_STRIDE, BACKBONES, build_backbone
from dgp_pyro.nets.heatmap_net import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    STRIDES,
    HeatmapNet,
    frozen_batch_norm,
    normalize_images,
)
from dgp_pyro.nets.heatmaps import (
    SoftArgmax,
    gaussian_targets,
    heatmap_grid,
    heatmap_loss,
    heatmap_potential,
    labeled_mask,
    offset_loss,
    second_mode,
    soft_argmax,
)

__all__ = [
    "BACKBONES",
    "BACKBONE_STRIDE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "STRIDES",
    "HeatmapNet",
    "SoftArgmax",
    "build_backbone",
    "frozen_batch_norm",
    "gaussian_targets",
    "heatmap_grid",
    "heatmap_loss",
    "heatmap_potential",
    "labeled_mask",
    "normalize_images",
    "offset_loss",
    "second_mode",
    "soft_argmax",
]
