"""Resizing and label-consistent augmentation: a warped dot lands where its warped label says."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgp_pyro.data.augment import (
    AugmentConfig,
    augment_batch,
    check_size,
    default_size,
    flip_permutation,
    motion_blur,
    random_affine,
    resize_frames,
    scale_points,
    transform_points,
    unscale_points,
    warp_images,
)
from dgp_pyro.errors import DGPError


def _render_dots(h: int, w: int, points: np.ndarray, radius: float = 1.6) -> torch.Tensor:
    """One image per row of ``points (B, K, 2)``; keypoint k is drawn in colour channel k."""
    b, k, _ = points.shape
    yy, xx = np.mgrid[0:h, 0:w]
    images = np.zeros((b, h, w, 3), np.float64)
    for i in range(b):
        for j in range(k):
            x, y = points[i, j]
            images[i, :, :, j] = 255.0 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * radius**2))
    return torch.from_numpy(np.round(images).astype(np.uint8))


def _centroid(channel: np.ndarray, near: np.ndarray, radius: float = 6.0) -> np.ndarray:
    """Intensity centroid of ``channel`` within ``radius`` of ``near`` (x, y)."""
    h, w = channel.shape
    yy, xx = np.mgrid[0:h, 0:w]
    m = channel * (((xx - near[0]) ** 2 + (yy - near[1]) ** 2) <= radius**2)
    return np.array([(m * xx).sum() / m.sum(), (m * yy).sum() / m.sum()])


def _mass(channel: np.ndarray, near: np.ndarray, radius: float = 4.0) -> float:
    h, w = channel.shape
    yy, xx = np.mgrid[0:h, 0:w]
    return float((channel * (((xx - near[0]) ** 2 + (yy - near[1]) ** 2) <= radius**2)).sum())


def test_default_size_rounds_and_caps():
    assert default_size(160, 128) == (160, 128)
    assert default_size(396, 406) == (320, 320)  # long side capped at 320
    assert default_size(832, 747) == (320, 288)
    assert default_size(1280, 1024) == (320, 256)
    assert default_size(20, 20) == (32, 32)
    for w, h in [(640, 480), (1920, 1080), (100, 700), (33, 65)]:
        sw, sh = default_size(w, h)
        assert sw % 32 == 0 and sh % 32 == 0 and max(sw, sh) <= 320


def test_check_size_message():
    assert check_size((128, 96)) == (128, 96)
    with pytest.raises(DGPError, match=r"--size 130x128 does not fit the network's stride 32; try 128x128"):
        check_size((130, 128))


def test_scale_points_round_trip_and_pixel_edges():
    pts = np.array([[0.0, 0.0], [99.5, 49.5], [-0.5, -0.5]])
    scaled = scale_points(pts, (100, 50), (200, 25))
    np.testing.assert_allclose(unscale_points(scaled, (100, 50), (200, 25)), pts)
    # the image's outer edge (-0.5) maps to the outer edge
    np.testing.assert_allclose(scaled[2], [-0.5, -0.5])
    np.testing.assert_allclose(scaled[0], [0.5, -0.25])


def test_resized_dot_lands_on_scaled_label():
    truth = np.array([[[37.3, 21.8], [80.0, 60.2], [10.0, 70.0]]])
    images = _render_dots(96, 128, truth, radius=3.0)
    small = resize_frames(images, (64, 48)).numpy()
    expected = scale_points(truth, (128, 96), (64, 48))
    for k in range(3):
        found = _centroid(small[0, :, :, k].astype(float), expected[0, k], radius=5)
        np.testing.assert_allclose(found, expected[0, k], atol=0.15)


def test_warped_dots_land_on_warped_labels_with_flip_swap():
    h, w = 72, 96
    points = np.array([[[30.0, 25.0], [62.0, 44.0], [48.0, 36.0]]] * 6)
    images = _render_dots(h, w, points)
    config = AugmentConfig(rotation=30, scale=0.2, translate=0.08, brightness=0.0, contrast=0.0, flip=0.5)
    perm = flip_permutation(["left", "right", "mid"], [("left", "right")])
    out, moved = augment_batch(
        images, torch.from_numpy(points).float(), config, torch.Generator().manual_seed(3), perm
    )
    out, moved = out.numpy().astype(float), moved.numpy()
    flipped_any = False
    for b in range(len(points)):
        # after a flip the "left" label (channel 0 of the labels) sits on the dot drawn for "right"
        flipped = _mass(out[b, :, :, 0], moved[b, 0]) < _mass(out[b, :, :, 1], moved[b, 0])
        flipped_any |= flipped
        drawn = [1, 0, 2] if flipped else [0, 1, 2]
        for k in range(3):
            assert np.isfinite(moved[b, k]).all()
            found = _centroid(out[b, :, :, drawn[k]], moved[b, k])
            np.testing.assert_allclose(found, moved[b, k], atol=0.35)
    assert flipped_any  # the seed above flips at least one image


def test_labels_pushed_out_become_missing():
    matrices = torch.eye(3, dtype=torch.float64).expand(2, 3, 3).clone()
    matrices[:, 0, 2] = 20.0  # shift right by 20 px
    points = torch.tensor([[[10.0, 5.0], [50.0, 5.0]], [[39.0, 5.0], [float("nan"), 1.0]]])
    moved = transform_points(points, matrices, (64, 32))
    assert torch.allclose(moved[0, 0], torch.tensor([30.0, 5.0]))
    assert torch.isnan(moved[0, 1]).all()  # 70 > 63.5: left the image
    assert torch.allclose(moved[1, 0], torch.tensor([59.0, 5.0]))
    assert torch.isnan(moved[1, 1]).all()  # was missing, stays missing


def test_no_augmentation_is_identity():
    images = torch.randint(
        0, 256, (3, 32, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    points = torch.rand(3, 4, 2) * 30
    out, moved = augment_batch(images, points, AugmentConfig.none(), torch.Generator().manual_seed(1))
    assert torch.equal(out, images)
    assert torch.allclose(moved, points, atol=1e-5)


def test_augmentation_is_seeded():
    images = torch.randint(
        0, 256, (4, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    points = torch.rand(4, 2, 2) * 31
    config = AugmentConfig(flip=0.5)
    a = augment_batch(images, points, config, torch.Generator().manual_seed(7))
    b = augment_batch(images, points, config, torch.Generator().manual_seed(7))
    c = augment_batch(images, points, config, torch.Generator().manual_seed(8))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1].nan_to_num(-1), b[1].nan_to_num(-1))
    assert not torch.equal(a[0], c[0])
    # the same number of draws whatever the settings: the stream continues identically
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    random_affine(4, (32, 32), AugmentConfig(), g1)
    random_affine(4, (32, 32), AugmentConfig.none(), g2)
    assert torch.equal(torch.rand(3, generator=g1), torch.rand(3, generator=g2))


def test_warp_identity_matrix_keeps_pixels():
    images = torch.randint(
        0, 256, (2, 16, 24, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2)
    )
    out = warp_images(images, torch.eye(3, dtype=torch.float64).expand(2, 3, 3))
    assert torch.allclose(out, images.float(), atol=1e-3)


def test_flip_permutation_checks_names():
    assert flip_permutation(["a", "b", "c"], [("a", "c")]).tolist() == [2, 1, 0]
    with pytest.raises(DGPError, match="not one of"):
        flip_permutation(["a", "b"], [("a", "zz")])
    with pytest.raises(DGPError, match="already paired"):
        flip_permutation(["a", "b", "c"], [("a", "b"), ("b", "c")])


def test_augment_config_round_trip():
    config = AugmentConfig(flip=0.5, flip_pairs=[("l", "r")])
    assert AugmentConfig.from_dict(config.to_dict()) == config
    with pytest.raises(DGPError, match="unknown augmentation"):
        AugmentConfig.from_dict({"spin": 3})


def test_occluding_patch_is_flat_and_keeps_the_labels():
    images = torch.full((6, 48, 64, 3), 100, dtype=torch.uint8)
    points = torch.rand(6, 3, 2) * 40
    config = AugmentConfig.none()
    config.occlusion = 1.0
    out, moved = augment_batch(images, points, config, torch.Generator().manual_seed(0))
    assert torch.allclose(moved, points, atol=1e-5)  # an occluded part keeps its label
    short = 48
    for image in out:
        changed = (image != 100).any(dim=-1)
        assert changed.any()
        rows, cols = torch.nonzero(changed, as_tuple=True)
        grey = image[rows, cols]
        assert (grey == grey[0]).all()  # one flat grey level
        # a rectangle (clipped by the image), no larger than a square of occlusion_size
        h_box, w_box = int(rows.max() - rows.min()) + 1, int(cols.max() - cols.min()) + 1
        assert int(changed.sum()) == h_box * w_box
        assert h_box * w_box <= (config.occlusion_size * short) ** 2 + 2 * short


def test_motion_blur_keeps_a_dot_centred_and_spreads_it_along_a_line():
    h, w = 64, 64
    truth = np.array([[[31.0, 30.0], [20.0, 40.0], [45.0, 20.0]]] * 4)
    images = _render_dots(h, w, truth, radius=1.2)
    config = AugmentConfig.none()
    config.motion_blur, config.blur_length = 1.0, 11.0
    out, moved = augment_batch(
        images, torch.from_numpy(truth).float(), config, torch.Generator().manual_seed(4)
    )
    out = out.numpy().astype(float)
    spreads = []
    for b in range(len(truth)):
        for k in range(3):
            before, after = images[b, :, :, k].numpy().astype(float), out[b, :, :, k]
            np.testing.assert_allclose(_centroid(after, truth[b, k], radius=8), truth[b, k], atol=0.3)
            np.testing.assert_allclose(after.sum(), before.sum(), rtol=0.03)  # brightness kept
            spreads.append(after.max() / before.max())
    assert min(spreads) < 0.5  # the longer blurs smear the dots
    assert torch.allclose(moved, torch.from_numpy(truth).float())


def test_motion_blur_spreads_along_its_angle_by_its_length():
    h, w = 48, 48
    image = _render_dots(h, w, np.array([[[24.0, 24.0]]]), radius=1.0).float()
    config = AugmentConfig(motion_blur=0.5, blur_length=13.0)
    yy, xx = np.mgrid[0:h, 0:w]

    def variances(out: torch.Tensor) -> tuple[float, float]:
        m = out[0, :, :, 0].numpy()
        m = m / m.sum()
        return float((m * (xx - 24.0) ** 2).sum()), float((m * (yy - 24.0) ** 2).sum())

    before = variances(image)
    # switch on, longest blur, angle 0 (along x) then pi/2 (along y)
    along_x = variances(motion_blur(image, torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64), config))
    along_y = variances(motion_blur(image, torch.tensor([[0.0, 1.0, 0.5]], dtype=torch.float64), config))
    line = 13.0**2 / 12.0  # variance of a uniform segment of length 13
    assert along_x[0] - before[0] == pytest.approx(line, rel=0.2) and along_x[1] == pytest.approx(
        before[1], rel=0.1
    )
    assert along_y[1] - before[1] == pytest.approx(line, rel=0.2) and along_y[0] == pytest.approx(
        before[0], rel=0.1
    )
    # switched off: unchanged
    assert torch.equal(
        motion_blur(image, torch.tensor([[0.7, 1.0, 0.0]], dtype=torch.float64), config), image
    )


def test_corruptions_draw_only_when_switched_on():
    images = torch.zeros(4, 32, 32, 3, dtype=torch.uint8)
    points = torch.rand(4, 2, 2) * 31
    g_default, g_affine = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    augment_batch(images, points, AugmentConfig(), g_default)
    random_affine(4, (32, 32), AugmentConfig(), g_affine)
    # off (the default): the stream is what it was before the corruptions existed
    assert torch.equal(torch.rand(3, generator=g_default), torch.rand(3, generator=g_affine))
    g_on, g_more = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    augment_batch(images, points, AugmentConfig(occlusion=0.1), g_on)
    augment_batch(images, points, AugmentConfig(motion_blur=0.9, occlusion=0.7), g_more)
    assert torch.equal(torch.rand(3, generator=g_on), torch.rand(3, generator=g_more))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"occlusion": 1.5}, "occlusion=1.5 is a probability"),
        ({"rotation": -3}, "rotation=-3 must not be negative"),
        ({"motion_blur": "often"}, "motion_blur='often' is not a number"),
        ({"occlusion_size": 0}, "occlusion_size=0 must be in"),
    ],
)
def test_bad_augmentation_settings_say_which(settings, message):
    with pytest.raises(DGPError, match=message):
        AugmentConfig.from_dict(settings)
