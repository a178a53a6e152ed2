"""Heatmap network, weights loading, Gaussian targets, heatmap loss and soft-argmax."""

from __future__ import annotations

import math
import urllib.error

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from dgp_pyro.errors import DGPError
from dgp_pyro.nets import (
    BACKBONES,
    HeatmapNet,
    build_backbone,
    gaussian_targets,
    heatmap_grid,
    heatmap_loss,
    heatmap_potential,
    normalize_images,
    offset_loss,
    soft_argmax,
)
from dgp_pyro.nets.backbone import OFFLINE_ENV, hub_cache_file
from dgp_pyro.nets.heatmaps import INFLATION_POWER, PEAK_THRESHOLD


def _exact_offsets(points: torch.Tensor, size: tuple[int, int], stride: int) -> torch.Tensor:
    """Offsets from every cell centre to the keypoint, ``(B, K, 2, h, w)``."""
    xs, ys = heatmap_grid(*size, stride)
    dx = points[..., 0, None, None] - xs
    dy = points[..., 1, None, None] - ys[:, None]
    dx, dy = torch.broadcast_tensors(dx, dy)
    return torch.stack([dx, dy], dim=2)


def _bump_logits(points: torch.Tensor, size: tuple[int, int], stride: int, sigma: float, floor: float = 0.0):
    """Logits whose sigmoid is a Gaussian bump (plus a background floor), as a trained net makes."""
    bump = gaussian_targets(points, size, stride, sigma)
    return torch.logit((1 - floor) * bump.clamp(1e-6, 1 - 1e-6) + floor)


# ---------------------------------------------------------------------------------------------
# network shapes and input checks


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("stride", [4, 8])
def test_output_shapes(backbone, stride):
    net = HeatmapNet(3, backbone, stride, offset_head=True, seed=0).eval()
    size = (64, 96) if backbone in ("resnet18", "resnet34") else (32, 64)
    with torch.no_grad():
        logits, offsets = net.forward_with_offsets(torch.randn(2, 3, *size))
    h, w = size[0] // stride, size[1] // stride
    assert logits.shape == (2, 3, h, w)
    assert offsets.shape == (2, 3, 2, h, w)
    assert net.heatmap_size(*size) == (h, w)
    assert (net.stride, net.num_keypoints, net.backbone_name) == (stride, 3, backbone)


@pytest.mark.parametrize("stride", [16, 32])
def test_coarse_strides(stride):
    net = HeatmapNet(2, "resnet18", stride, seed=0).eval()
    with torch.no_grad():
        logits, offsets = net.forward_with_offsets(torch.randn(1, 3, 64, 128))
    assert logits.shape == (1, 2, 64 // stride, 128 // stride)
    assert offsets is None


def test_initial_heatmap_is_sparse():
    net = HeatmapNet(2, "resnet18", seed=0).eval()
    with torch.no_grad():
        prob = torch.sigmoid(net(torch.randn(2, 3, 64, 64)))
    assert prob.mean().item() == pytest.approx(0.01, rel=0.2)


def test_head_is_cheap_relative_to_backbone():
    assert HeatmapNet(4, "resnet18", 8).head_flops_ratio(128, 128) < 0.05


def test_input_size_errors():
    net = HeatmapNet(1, "resnet18", seed=0)
    with pytest.raises(DGPError, match=r"height 100 \(nearest valid: 96 or 128\)"):
        net.check_input_size(100, 128, source="video.mp4")
    with pytest.raises(DGPError, match=r"width 20 \(nearest valid: 32\)"):
        net.check_input_size(64, 20)
    net.check_input_size(96, 128)
    with pytest.raises(DGPError, match="not a multiple of 32"):
        net(torch.randn(1, 3, 70, 64))
    with pytest.raises(DGPError, match="output stride 2"):
        HeatmapNet(1, "resnet18", stride=2)
    with pytest.raises(DGPError, match="unknown backbone"):
        HeatmapNet(1, "vgg16")
    with pytest.raises(DGPError, match="at least one keypoint"):
        HeatmapNet(0, "resnet18")


def test_seed_reproducible():
    state = torch.get_rng_state()
    a = HeatmapNet(2, "resnet18", seed=7).eval()
    b = HeatmapNet(2, "resnet18", seed=7).eval()
    c = HeatmapNet(2, "resnet18", seed=8).eval()
    assert torch.equal(torch.get_rng_state(), state)  # seed= leaves the global stream alone
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), c(x))
    torch.manual_seed(3)
    d = HeatmapNet(2, "resnet18")
    torch.manual_seed(3)
    e = HeatmapNet(2, "resnet18")
    assert all(torch.equal(p, q) for p, q in zip(d.parameters(), e.parameters(), strict=True))


def test_normalize_images():
    frames = np.zeros((2, 64, 32, 3), dtype=np.uint8)
    frames[..., 0] = 255
    x = normalize_images(frames)
    assert x.shape == (2, 3, 64, 32) and x.dtype == torch.float32 and x.is_contiguous()
    assert x[0, 0, 0, 0].item() == pytest.approx((1 - 0.485) / 0.229, rel=1e-5)
    assert x[0, 1, 0, 0].item() == pytest.approx(-0.456 / 0.224, rel=1e-5)
    assert normalize_images(torch.from_numpy(frames[0])).shape == (1, 3, 64, 32)
    with pytest.raises(TypeError):
        normalize_images(frames.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# weights


def _trunk_out(trunk, x):
    with torch.no_grad():
        return trunk.eval()(x)


def test_local_state_dict_loads(tmp_path):
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)  # with its fc head, which is dropped
    trunk, channels = build_backbone("resnet18", path)
    assert channels == 512
    x = torch.randn(1, 3, 64, 64)
    expected = torch.nn.Sequential(*list(reference.children())[:-2])
    torch.testing.assert_close(_trunk_out(trunk, x), _trunk_out(expected, x))

    # DataParallel prefix, checkpoint wrapper and a string path all work too
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}, wrapped)
    net = HeatmapNet(1, "resnet18", weights=str(wrapped), seed=0)
    torch.testing.assert_close(_trunk_out(net.backbone, x), _trunk_out(expected, x))


def test_resnet50_weights_into_resnet18(tmp_path):
    path = tmp_path / "r50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    with pytest.raises(DGPError) as info:
        build_backbone("resnet18", path)
    message = str(info.value)
    assert "r50.pth" in message
    assert "shape mismatches" in message and "unexpected keys" in message
    assert "layer1.0.conv3.weight" in message  # a bottleneck key resnet18 does not have
    assert "backbone='resnet50'" in message  # the hint names the right backbone


def test_corrupt_and_missing_weight_files(tmp_path):
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"this is not a torch file")
    with pytest.raises(DGPError, match="cannot read the weights file"):
        build_backbone("resnet18", corrupt)
    truncated = tmp_path / "truncated.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:5000])
    with pytest.raises(DGPError, match="truncated.pth"):
        build_backbone("resnet18", truncated)
    with pytest.raises(DGPError, match="not found"):
        build_backbone("resnet18", tmp_path / "nowhere.pth")


@pytest.fixture
def empty_hub(tmp_path, monkeypatch):
    """An empty torch hub cache, and any download attempt fails the test."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_network(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return tmp_path / "hub"


def test_torchvision_weights_not_cached(empty_hub, monkeypatch):
    monkeypatch.setenv(OFFLINE_ENV, "1")
    with pytest.raises(DGPError, match="not in the torch hub cache") as info:
        build_backbone("resnet50", "ResNet50_Weights.IMAGENET1K_V2")
    assert "resnet50-11ad3fa6.pth" in str(info.value)
    with pytest.raises(DGPError, match="not in the torch hub cache"):
        HeatmapNet(1, "resnet18", weights="DEFAULT")


def test_torchvision_weights_download_failure(empty_hub, monkeypatch):
    monkeypatch.delenv(OFFLINE_ENV, raising=False)

    def unreachable(url, dst, *args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(torch.hub, "download_url_to_file", unreachable)
    with pytest.raises(DGPError, match="could not be downloaded"):
        build_backbone("resnet18", "IMAGENET1K_V1")


def test_torchvision_weights_from_cache(empty_hub):
    reference = torchvision.models.resnet18(weights=None).eval()
    cached = hub_cache_file(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url)
    cached.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), cached)
    trunk, _ = build_backbone("resnet18", "ResNet18_Weights.IMAGENET1K_V1")
    x = torch.randn(1, 3, 32, 32)
    expected = torch.nn.Sequential(*list(reference.children())[:-2])
    torch.testing.assert_close(_trunk_out(trunk, x), _trunk_out(expected, x))


def test_bad_weight_names(empty_hub):
    with pytest.raises(DGPError, match="another network"):
        build_backbone("resnet18", "ResNet50_Weights.IMAGENET1K_V2")
    with pytest.raises(DGPError, match="neither a weights file nor a torchvision weight name"):
        build_backbone("resnet18", "IMAGENET_BEST")


# ---------------------------------------------------------------------------------------------
# targets, losses, potential


def test_heatmap_grid_centres():
    xs, ys = heatmap_grid(2, 3, 8)
    assert xs.tolist() == [3.5, 11.5, 19.5]
    assert ys.tolist() == [3.5, 11.5]


def test_gaussian_targets_peak_at_label():
    points = torch.tensor([[[19.5, 11.5], [float("nan"), 4.0]]])
    maps = gaussian_targets(points, (4, 6), 8, sigma=5.0)
    assert maps.shape == (1, 2, 4, 6)
    assert maps[0, 0, 1, 2].item() == pytest.approx(1.0)
    assert maps[0, 0].argmax().item() == 1 * 6 + 2
    assert maps[0, 0, 1, 3].item() == pytest.approx(math.exp(-64 / 50), rel=1e-5)
    assert torch.count_nonzero(maps[0, 1]) == 0


def test_heatmap_potential_is_the_bce():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, 7)
    y = torch.rand(4, 2, 3, 2) * torch.tensor([56.0, 40.0])
    phi = heatmap_potential(logits, y, 8, 6.0)
    assert phi.shape == (4, 2, 3)
    for s in range(4):
        target = gaussian_targets(y[s], (5, 7), 8, 6.0)
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum((-2, -1))
        torch.testing.assert_close(phi[s], bce)


def test_heatmap_loss_ignores_missing_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    points = torch.tensor(
        [
            [[20.0, 30.0], [float("nan"), float("nan")], [40.0, 10.0]],
            [[5.0, 5.0], [50.0, 50.0], [9.0, float("nan")]],
        ]
    )
    mask = torch.tensor([[True, True, True], [True, False, True]])
    loss = heatmap_loss(logits, points, 8, 8.0, mask=mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    # only (0,0), (0,2) and (1,0) count
    assert torch.count_nonzero(logits.grad[0, 1]) == 0
    assert torch.count_nonzero(logits.grad[1, 1:]) == 0
    valid = [(0, 0), (0, 2), (1, 0)]
    phis = [heatmap_potential(logits[b, k], points[b, k], 8, 8.0) for b, k in valid]
    torch.testing.assert_close(loss, torch.stack(phis).mean())
    # no label at all: zero loss, zero (not NaN) gradients
    empty = torch.full((2, 3, 2), float("nan"))
    logits.grad = None
    none = heatmap_loss(logits, empty, 8, 8.0)
    none.backward()
    assert none.item() == 0.0 and torch.count_nonzero(logits.grad) == 0


def test_heatmap_loss_trains_absent_keypoints_towards_an_empty_map():
    torch.manual_seed(0)
    logits = torch.randn(3, 3, 8, 8, requires_grad=True)
    nan = float("nan")
    points = torch.tensor(
        [
            [[20.0, 30.0], [nan, nan], [40.0, 10.0]],  # keypoint 1 hidden in a labeled image
            [[5.0, 5.0], [50.0, 50.0], [9.0, 12.0]],
            [[nan, nan], [nan, nan], [nan, nan]],  # an unlabeled image: nothing is "absent"
        ]
    )
    labeled = [(0, 0), (0, 2), (1, 0), (1, 1), (1, 2)]
    phis = torch.stack([heatmap_potential(logits[b, k], points[b, k], 8, 8.0) for b, k in labeled])
    empty = F.binary_cross_entropy_with_logits(logits[0, 1], torch.zeros(8, 8), reduction="sum")
    loss = heatmap_loss(logits, points, 8, 8.0, absent_weight=0.5)
    torch.testing.assert_close(loss, (phis.sum() + 0.5 * empty) / len(labeled))
    loss.backward()
    assert (logits.grad[0, 1] > 0).all()  # descent lowers every logit of the hidden map
    assert torch.count_nonzero(logits.grad[2]) == 0
    # weight 0 is the labels-only loss
    torch.testing.assert_close(heatmap_loss(logits, points, 8, 8.0), phis.mean())


def test_heatmap_potential_minimised_at_truth():
    truth = torch.tensor([[[37.3, 21.8]]])
    logits = _bump_logits(truth, (8, 10), 8, 6.0, floor=1e-3)
    offsets = torch.tensor([[0.0, 0.0], [3.0, 0.0], [-2.0, 2.0], [0.0, -4.0]])
    phi = heatmap_potential(logits, truth + offsets[:, None, None, :], 8, 6.0)
    assert phi[0].item() < phi[1:].min().item()
    y = (truth + torch.tensor([2.5, -1.5])).requires_grad_(True)
    heatmap_potential(logits, y, 8, 6.0).sum().backward()
    descent = -y.grad[0, 0]
    towards = (truth - y.detach())[0, 0]
    assert torch.dot(descent, towards) > 0.8 * descent.norm() * towards.norm()


def test_offset_loss_zero_for_exact_offsets():
    points = torch.tensor([[[20.3, 13.9], [float("nan"), 1.0]]])
    exact = torch.nan_to_num(_exact_offsets(points, (4, 6), 8))
    assert offset_loss(exact, points, 8).item() == pytest.approx(0.0, abs=1e-7)
    assert offset_loss(exact + 4.0, points, 8).item() > 0


# ---------------------------------------------------------------------------------------------
# soft-argmax


def test_soft_argmax_subpixel_everywhere():
    stride, sigma = 8, 8.0
    points = torch.tensor(
        [
            [
                [50.61, 77.25],  # interior
                [3.9, 4.6],  # top-left corner cell
                [123.2, 64.4],  # last column
                [64.37, 121.8],  # bottom row
                [9.3, 117.45],  # bottom-left
                [100.05, 11.7],  # one cell from the top
            ]
        ]
    )
    for floor in (0.0, 0.003):  # with a background level, as a trained network has
        summary = soft_argmax(_bump_logits(points, (16, 16), stride, sigma, floor), stride, min_std=0.5)
        error = (summary.mean - points).norm(dim=-1)
        assert error.max().item() < 0.1, error
        var = torch.diagonal(summary.cov, dim1=-2, dim2=-1)
        torch.testing.assert_close(var, torch.full_like(var, sigma**2), rtol=0.05, atol=0)
        assert summary.cov[..., 0, 1].abs().max() < 0.05 * sigma**2
        assert (summary.confidence > 0.85).all()


def test_soft_argmax_ignores_far_second_peak():
    points = torch.tensor([[[44.7, 52.2]]])
    logits = _bump_logits(points, (16, 16), 8, 8.0, floor=1e-3)
    distractor = gaussian_targets(torch.tensor([[[110.0, 110.0]]]), (16, 16), 8, 8.0)
    logits = torch.logit(torch.sigmoid(logits) + 0.5 * distractor * (1 - torch.sigmoid(logits)))
    summary = soft_argmax(logits, 8)
    assert (summary.mean - points).norm().item() < 0.1
    # a whole-map softmax of the logits is pulled toward the distractor and the map centre
    p = torch.softmax(logits.flatten(-2), -1).view_as(logits)
    xs, ys = heatmap_grid(16, 16, 8)
    naive = torch.stack([(p.sum(-2) * xs).sum(-1), (p.sum(-1) * ys).sum(-1)], -1)
    assert (naive - points).norm().item() > 1.0


def test_soft_argmax_confidence_and_inflation():
    strong = _bump_logits(torch.tensor([[[60.0, 60.0]]]), (16, 16), 8, 8.0, floor=1e-3)
    flat = torch.full((1, 1, 16, 16), -6.0)
    weak = torch.logit(0.45 * torch.sigmoid(strong))
    faint = torch.logit(0.05 * torch.sigmoid(strong))
    s, f, w, v = (soft_argmax(x, 8) for x in (strong, flat, weak, faint))
    assert s.confidence.item() > 0.95 and f.confidence.item() < 0.01
    # equal shapes, so a weak peak's covariance is its strong twin's inflated (c0 / c)^p times
    factor = (PEAK_THRESHOLD / w.confidence.item()) ** INFLATION_POWER
    assert 2.0 < factor < 100.0  # the test exercises the power law, not the cap
    torch.testing.assert_close(w.cov, s.cov * factor, rtol=0.05, atol=1e-3 * s.cov.max().item())
    torch.testing.assert_close(v.cov, s.cov * 100.0, rtol=0.05, atol=1e-3 * s.cov.max().item())  # capped
    linear = soft_argmax(faint, 8, peak_threshold=0.5, inflation_power=1.0)  # the linear rule
    torch.testing.assert_close(linear.cov, s.cov * 0.5 / 0.05, rtol=0.05, atol=1e-3 * s.cov.max().item())
    assert torch.linalg.eigvalsh(f.cov).min() > 100 * 16  # flat map: 100x the floor at least
    for summary in (s, f, w, v):
        assert torch.isfinite(summary.mean).all()
        assert (torch.linalg.eigvalsh(summary.cov) > 0).all()


def test_soft_argmax_floor_and_gradients():
    one_hot = torch.full((2, 3, 8, 8), -9.0)
    one_hot[..., 4, 2] = 9.0
    one_hot.requires_grad_(True)
    summary = soft_argmax(one_hot, 8)
    assert torch.allclose(summary.mean[0, 0], torch.tensor([19.5, 35.5]), atol=1e-3)
    assert torch.linalg.eigvalsh(summary.cov).min() >= 16.0 - 1e-3  # (stride / 2)^2
    (summary.mean.sum() + summary.cov.sum() + summary.confidence.sum()).backward()
    assert torch.isfinite(one_hot.grad).all()
    torch.testing.assert_close(summary.precision @ summary.cov, torch.eye(2).expand(2, 3, 2, 2))


def test_soft_argmax_with_offsets():
    points = torch.tensor([[[21.3, 44.9]]])
    logits = _bump_logits(torch.tensor([[[19.5, 43.5]]]), (8, 8), 8, 4.0)  # peak one cell off
    summary = soft_argmax(logits, 8, offsets=_exact_offsets(points, (8, 8), 8))
    torch.testing.assert_close(summary.mean, points)


# ---------------------------------------------------------------------------------------------
# training from scratch


def _disc_images():
    points = torch.tensor([[[18.3, 22.6]], [[44.8, 15.2]], [[30.5, 47.1]], [[12.0, 40.0]]])
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    frames = torch.full((4, 64, 64, 3), 30, dtype=torch.uint8)
    for b in range(4):
        disc = (xx - points[b, 0, 0]) ** 2 + (yy - points[b, 0, 1]) ** 2 <= 36
        frames[b][disc] = 230
    return normalize_images(frames), points


def test_overfit_four_images():
    torch.manual_seed(0)
    images, points = _disc_images()
    net = HeatmapNet(1, "resnet18", stride=8, seed=0)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(50):
        loss = heatmap_loss(net(images), points, stride=8, sigma=8.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.no_grad():
        summary = soft_argmax(net(images), stride=8)
    error = (summary.mean - points).norm(dim=-1)
    assert error.max().item() < 3.0, error
    assert summary.confidence.min().item() > 0.5


def test_frozen_batch_norm_keeps_statistics_and_passes_gradients():
    from dgp_pyro.nets import frozen_batch_norm

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    network.train()
    batch_norm = network[1]
    before = (batch_norm.running_mean.clone(), batch_norm.running_var.clone())
    images = torch.randn(5, 3, 8, 8)
    with frozen_batch_norm(network):
        out = network(images)
        assert not batch_norm.training and network.training
    out.sum().backward()
    assert batch_norm.training  # restored
    torch.testing.assert_close(batch_norm.running_mean, before[0], rtol=0, atol=0)
    torch.testing.assert_close(batch_norm.running_var, before[1], rtol=0, atol=0)
    assert network[0].weight.grad is not None and network[0].weight.grad.abs().sum() > 0
    network(images)  # outside: batch statistics again
    assert not torch.equal(batch_norm.running_mean, before[0])
