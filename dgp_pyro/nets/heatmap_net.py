r"""The heatmap network :math:`h_\theta(x)`: a trunk (ResNet, EfficientNet-Lite) and a light upsampling head.

Architecture, for output stride :math:`s \in \{4, 8, 16, 32\}` and :math:`K` keypoints:

.. code-block:: text

    image (B,3,H,W) --trunk--> C4 (stride 32) --1x1 conv, BN, ReLU--> c0 channels
        --[3x3 conv -> PixelShuffle(2) -> BN -> ReLU] x log2(32/s)--> c channels at stride s
        + lateral 1x1 conv, BN of the trunk stage at stride s (ResNet layer1/2/3 for s = 4/8/16)
        --ReLU, 3x3 conv, BN, ReLU--> 3x3 conv --> K logits   (+ 2K offsets if asked)

- The trunk runs at stride 32 (its cheapest form: no dilation), so the head's upsampling costs
  a few percent of the trunk (see :meth:`HeatmapNet.head_flops_ratio`); the lateral skip
  connection brings back the fine spatial detail lost at stride 32 for one 1x1 convolution.
- Sub-pixel convolutions (PixelShuffle) are initialised ICNR-style (each group of four output
  channels starts identical, i.e. nearest-neighbour upsampling), which avoids checkerboard
  artefacts early in training.
- The last layer's bias is :math:`b = \operatorname{logit}(\pi) = \log \frac{\pi}{1 - \pi}`
  with :math:`\pi = 0.01`, so :math:`\sigma(h) \approx 0.01` everywhere at initialisation:
  the binary cross-entropy against sparse Gaussian targets then starts near its background
  optimum instead of spending the first hundreds of steps pushing every pixel down.
- The optional offset head predicts location refinement vectors (DeepLabCut's *locref*):
  for each heatmap cell the displacement, in pixels, from the cell centre to the keypoint.
  Its last layer starts at zero, so offsets start at zero.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, UInt8
from torch import Tensor, nn

from dgp_pyro.errors import DGPError
from dgp_pyro.nets.backbone import BACKBONE_STRIDE, build_backbone, check_backbone_name, lateral_stage

#: Output strides the head supports (the trunk stage tapped for the skip connection at each:
#: :func:`~dgp_pyro.nets.backbone.lateral_stage`).
STRIDES = (4, 8, 16, 32)

#: ImageNet statistics, the normalisation torchvision's ResNet weights expect.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Initial heatmap probability :math:`\sigma(b)` of the final layer's bias.
PRIOR_PROBABILITY = 0.01


def _conv_bn_relu(c_in: int, c_out: int, kernel: int) -> list[nn.Module]:
    return [
        nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    ]


class _UpBlock(nn.Sequential):
    """Two-fold upsampling: 3x3 conv to 4c channels, PixelShuffle(2), BN, ReLU."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__(
            nn.Conv2d(c_in, 4 * c_out, 3, padding=1, bias=False),
            nn.PixelShuffle(2),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
        )
        conv = self[0]
        # ICNR: init c_out kernels and repeat each for its 4 sub-pixels (PixelShuffle takes
        # output channel c from input channels 4c .. 4c+3), i.e. start as nearest upsampling.
        base = torch.empty(c_out, c_in, 3, 3)
        nn.init.kaiming_normal_(base, mode="fan_out", nonlinearity="relu")
        with torch.no_grad():
            conv.weight.copy_(base.repeat_interleave(4, dim=0))


class HeatmapNet(nn.Module):
    r"""Heatmap logits :math:`h_\theta(x)` of ``num_keypoints`` keypoints at output stride ``stride``.

    Heatmap cell :math:`(i, j)` looks at image pixel
    :math:`(x, y) = (s j + \tfrac{s-1}{2},\; s i + \tfrac{s-1}{2})` (see
    :func:`dgp_pyro.nets.heatmaps.heatmap_grid`); :math:`\sigma(h_{ij})` is the probability that
    the keypoint is near that pixel.

    Args:
        num_keypoints: :math:`K`, the number of heatmap channels.
        backbone: one of :data:`~dgp_pyro.nets.backbone.BACKBONES`.
        stride: output stride, 4, 8 (default), 16 or 32.
        weights: trunk weights: ``None`` (random init), a torchvision weight name, or a local
            state-dict file (see :func:`~dgp_pyro.nets.backbone.build_backbone`).
        offset_head: also predict location-refinement offsets (:meth:`forward_with_offsets`).
        head_channels: channels of the head after the channel reduction (default 128); each
            upsampling halves them, down to 32. 128 keeps the head under ~2.5% of the trunk's
            FLOPs at stride 8 for every backbone (the skip connection, not the width, carries
            the spatial detail).
        seed: if given, the random initialisation is drawn from this seed without touching the
            global random state (same seed, same network).

    Raises:
        DGPError: an unknown backbone or stride, ``num_keypoints < 1``, or weights that do not load.
    """

    def __init__(
        self,
        num_keypoints: int,
        backbone: str = "resnet50",
        stride: int = 8,
        weights: str | Path | None = None,
        offset_head: bool = False,
        *,
        head_channels: int | None = None,
        seed: int | None = None,
    ):
        super().__init__()
        check_backbone_name(backbone)
        if stride not in STRIDES:
            raise DGPError(f"output stride {stride} is not supported", hint=f"use one of {STRIDES}")
        if int(num_keypoints) < 1:
            raise DGPError(f"the network needs at least one keypoint, got {num_keypoints}")
        self.num_keypoints = int(num_keypoints)
        self.backbone_name = backbone
        self.stride = int(stride)
        self.has_offsets = bool(offset_head)
        if seed is None:
            self._build(weights, head_channels)
        else:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                self._build(weights, head_channels)

    def _build(self, weights: str | Path | None, head_channels: int | None) -> None:
        self.backbone, channels = build_backbone(self.backbone_name, weights)
        c = head_channels or 128
        self.reduce = nn.Sequential(*_conv_bn_relu(channels, c, 1))
        ups = []
        for _ in range(int(math.log2(BACKBONE_STRIDE // self.stride))):
            ups.append(_UpBlock(c, max(c // 2, 32)))
            c = max(c // 2, 32)
        self.upsample = nn.Sequential(*ups)
        lateral = lateral_stage(self.backbone_name, self.stride)
        self.lateral_stage = lateral[0] if lateral is not None else None
        if lateral is not None:
            self.lateral = nn.Sequential(nn.Conv2d(lateral[1], c, 1, bias=False), nn.BatchNorm2d(c))
            self.fuse = nn.Sequential(nn.ReLU(inplace=False), *_conv_bn_relu(c, c, 3))
        else:
            self.lateral = None
            self.fuse = nn.Identity()
        self.final = nn.Conv2d(c, self.num_keypoints, 3, padding=1)
        self.offset_conv = nn.Conv2d(c, 2 * self.num_keypoints, 3, padding=1) if self.has_offsets else None
        self._init_head()

    def _init_head(self) -> None:
        # The trunk keeps torchvision's init; the head gets He init for its ReLU convs.
        for module in (self.reduce, self.lateral, self.fuse):
            if module is None:
                continue
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.final.weight, std=0.001)
        nn.init.constant_(self.final.bias, math.log(PRIOR_PROBABILITY / (1 - PRIOR_PROBABILITY)))
        if self.offset_conv is not None:
            nn.init.zeros_(self.offset_conv.weight)
            nn.init.zeros_(self.offset_conv.bias)

    # ------------------------------------------------------------------------------------------

    def config(self) -> dict[str, object]:
        """The constructor arguments that rebuild this architecture (weights excluded)."""
        return {
            "num_keypoints": self.num_keypoints,
            "backbone": self.backbone_name,
            "stride": self.stride,
            "offset_head": self.has_offsets,
        }

    def check_input_size(self, height: int, width: int, source: str | Path | None = None) -> None:
        """Raise :class:`DGPError` unless ``height`` and ``width`` are multiples of 32.

        The trunk halves the resolution five times; other sizes would misalign the skip
        connection and the heatmap grid. The message names the nearest valid sizes.
        """
        sizes = (("height", int(height)), ("width", int(width)))
        bad = [(what, n) for what, n in sizes if n % BACKBONE_STRIDE or n <= 0]
        if not bad:
            return

        def options(n: int) -> str:
            below = (n // BACKBONE_STRIDE) * BACKBONE_STRIDE
            above = below + BACKBONE_STRIDE
            return f"{below} or {above}" if below > 0 else f"{above}"

        details = ", ".join(f"{what} {n} (nearest valid: {options(n)})" for what, n in bad)
        raise DGPError(
            f"image size {height}x{width} (height x width) is not a multiple of {BACKBONE_STRIDE}: {details}",
            source,
            hint=f"crop, pad or resize frames to multiples of {BACKBONE_STRIDE}",
        )

    def heatmap_size(self, height: int, width: int) -> tuple[int, int]:
        """Heatmap ``(h, w)`` for an input of ``height x width`` pixels."""
        return height // self.stride, width // self.stride

    def _features(self, images: Float[Tensor, "batch 3 height width"]) -> Float[Tensor, "batch c h w"]:
        self.check_input_size(int(images.shape[-2]), int(images.shape[-1]))
        x = images
        skip = None
        for name, module in self.backbone.named_children():
            x = module(x)
            if name == self.lateral_stage:
                skip = x
        x = self.upsample(self.reduce(x))
        if self.lateral is not None:
            x = self.fuse(x + self.lateral(skip))
        return x

    def forward(self, images: Float[Tensor, "batch 3 height width"]) -> Float[Tensor, "batch keypoints h w"]:
        """Heatmap logits, ``h = height // stride``, ``w = width // stride``."""
        return self.final(self._features(images))

    def forward_with_offsets(
        self, images: Float[Tensor, "batch 3 height width"]
    ) -> tuple[Float[Tensor, "batch keypoints h w"], Float[Tensor, "batch keypoints 2 h w"] | None]:
        r"""Logits and location-refinement offsets (``None`` without an offset head).

        ``offsets[b, k, :, i, j]`` is :math:`(\Delta x, \Delta y)` in pixels from the centre of
        cell :math:`(i, j)` to keypoint :math:`k`; the raw output is scaled by the stride so
        one unit of the last layer is one heatmap cell.
        """
        features = self._features(images)
        logits = self.final(features)
        if self.offset_conv is None:
            return logits, None
        raw = self.offset_conv(features)
        b, _, h, w = raw.shape
        return logits, self.stride * raw.view(b, self.num_keypoints, 2, h, w)

    # ------------------------------------------------------------------------------------------

    def head_flops_ratio(self, height: int = 128, width: int = 128) -> float:
        """FLOPs of everything but the trunk over the trunk's FLOPs, for one image."""
        from torch.utils.flop_counter import FlopCounterMode

        images = torch.zeros(1, 3, height, width, device=next(self.parameters()).device)
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                with FlopCounterMode(display=False) as counter:
                    self.backbone(images)
                trunk = counter.get_total_flops()
                with FlopCounterMode(display=False) as counter:
                    self.forward_with_offsets(images)
                total = counter.get_total_flops()
        finally:
            self.train(was_training)
        return (total - trunk) / trunk


def normalize_images(
    frames: UInt8[Tensor, "batch height width 3"] | UInt8[np.ndarray, "batch height width 3"],
) -> Float[Tensor, "batch 3 height width"]:
    r"""Video frames to network input: :math:`(x / 255 - m_c) / s_c` with ImageNet mean and std.

    Args:
        frames: RGB ``uint8`` frames, channels last (as video readers return them); a single
            ``(height, width, 3)`` frame is treated as a batch of one. A tensor stays on its
            device.

    Returns:
        ``float32`` images, channels first, contiguous.
    """
    x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize_images expects uint8 RGB frames, got {x.dtype}")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"normalize_images expects (batch, height, width, 3) frames, got {tuple(x.shape)}")
    # Fold /255 into the scale: one fused multiply-add per pixel.
    mean = torch.tensor(IMAGENET_MEAN, device=x.device) * 255.0
    inv_std = 1.0 / (torch.tensor(IMAGENET_STD, device=x.device) * 255.0)
    x = (x.permute(0, 3, 1, 2).float() - mean[:, None, None]) * inv_std[:, None, None]
    return x.contiguous()


@contextmanager
def frozen_batch_norm(network: nn.Module) -> Iterator[nn.Module]:
    """Run ``network`` with its batch-norm layers in eval mode (running statistics, no updates).

    For the graphical models' windows of video: a window holds a few nearly identical
    consecutive frames, whose batch statistics are nothing like those of the labeled images
    (nor of the frames at prediction time), so normalising by them, and folding them into the
    running statistics, degrades the network. Gradients still flow through the layers.
    """
    layers = [m for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for layer in layers:
        layer.eval()
    try:
        yield network
    finally:
        for layer in layers:
            layer.train()
