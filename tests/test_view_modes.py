"""The heatmaps' second modes, and the views voting between modes (a left/right swap in one view).

Two synthetic cameras look at a simulated trajectory; one view's heatmap of each keypoint puts
its strong peak on another keypoint's projection (a swap) and a weaker one on its own. The vote
must take the weaker peak there, and change nothing where the views agree or where no peak of
the swapped view agrees with the other.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgp_pyro.data.synthetic import make_cameras, simulate_motion
from dgp_pyro.model.pseudo_observations3d import triangulation_observations
from dgp_pyro.model.view_modes import select_view_modes
from dgp_pyro.model.views3d import ViewCameras
from dgp_pyro.nets import heatmap_grid, second_mode, soft_argmax
from dgp_pyro.posterior.posterior3d import PosteriorModel3D

torch.set_num_threads(1)

STRIDE = 4
SIZE = (160, 128)
AGREE_PX = 8.0


def bumps(centres: list[torch.Tensor], peaks: list[float], sigma: float = STRIDE) -> torch.Tensor:
    """Logits of a map with a Gaussian bump of each height at each ``(..., 2)`` centre."""
    w, h = SIZE[0] // STRIDE, SIZE[1] // STRIDE
    xs, ys = heatmap_grid(h, w, STRIDE, dtype=torch.float64)
    total = 0.0
    for centre, peak in zip(centres, peaks, strict=True):
        gx = torch.exp(-((xs - centre[..., 0:1]) ** 2) / (2 * sigma**2))
        gy = torch.exp(-((ys - centre[..., 1:2]) ** 2) / (2 * sigma**2))
        total = total + peak * gy[..., :, None] * gx[..., None, :]
    p = torch.as_tensor(total).clamp(1e-4, 1 - 1e-4)
    return torch.log(p / (1 - p))


@pytest.fixture(scope="module")
def rig():
    group = make_cameras(2, SIZE, seed=3)
    cameras = ViewCameras.from_group(group)
    truth = torch.tensor(simulate_motion(6, seed=2), dtype=torch.float64)  # (T, J, 3)
    return group, cameras, truth, cameras.project(truth).movedim(0, 1)  # (T, V, J, 2)


def summaries(logits: torch.Tensor, second: bool = False) -> tuple[torch.Tensor, ...]:
    s = (second_mode if second else soft_argmax)(logits, STRIDE)
    return s.mean.double(), s.cov.double(), s.confidence.double()


def decoy(points: torch.Tensor) -> torch.Tensor:
    """A look-alike part in view 0, 43 px from each keypoint: ``(T, J, 2)``."""
    return points[:, 0] + torch.tensor([35.0, 25.0], dtype=torch.float64)


def swapped(points: torch.Tensor, other_peak: float = 0.5) -> torch.Tensor:
    """View 0 peaks at 0.9 on the decoy and at ``other_peak`` on the keypoint; view 1 on the keypoint."""
    view0 = bumps([decoy(points), points[:, 0]], [0.9, other_peak])
    view1 = bumps([points[:, 1]], [0.9])
    return torch.stack([view0, view1], 1)  # (T, V, J, h, w)


def detectable(cameras: ViewCameras, points: torch.Tensor) -> torch.Tensor:
    """(T, J): the decoy is on the map and disagrees with view 1 (two views see only the error
    across the epipolar line)."""
    pair = torch.stack([decoy(points), points[:, 1]], 1)
    eye = torch.eye(2, dtype=torch.float64).expand(*pair.shape[:-1], 2, 2)
    x = triangulation_observations(cameras, pair, eye, torch.ones(pair.shape[:-1]), robust=None).point
    inside = ((decoy(points) > 2 * STRIDE) & (decoy(points) < torch.tensor(SIZE) - 2 * STRIDE)).all(-1)
    return inside & ((cameras.project(x).movedim(0, 1) - pair).norm(dim=-1).amax(1) > 1.5 * AGREE_PX)


def test_second_mode_is_the_other_bump():
    a, b = torch.tensor([[40.0, 30.0]]), torch.tensor([[110.0, 90.0]])
    logits = bumps([a, b], [0.9, 0.4])
    first, second = soft_argmax(logits, STRIDE), second_mode(logits, STRIDE)
    torch.testing.assert_close(first.mean.double(), a.double(), atol=0.3, rtol=0)
    torch.testing.assert_close(second.mean.double(), b.double(), atol=0.3, rtol=0)
    assert abs(float(second.confidence) - 0.4) < 0.01 and float(first.confidence) > 0.8
    lone = second_mode(bumps([a], [0.9]), STRIDE)
    assert float(lone.confidence) < 0.01  # one bump: only its far tail is left (the 1e-4 floor here)


def test_a_swapped_view_takes_its_second_mode(rig):
    _, cameras, _, points = rig
    logits = swapped(points)
    first, second = summaries(logits), summaries(logits, second=True)
    mean, cov, conf, switched = select_view_modes(cameras, *first, *second, agree_px=AGREE_PX)
    apart = detectable(cameras, points)
    assert apart.float().mean() > 0.5
    assert switched[:, 0][apart].all() and not switched[:, 1].any()
    # the summaries now point at the right parts in both views
    error = (mean - points).norm(dim=-1)
    assert error[:, 0][apart].max() < 1.0 and error[:, 1].max() < 1.0
    torch.testing.assert_close(conf[:, 0][apart], second[2][:, 0][apart])


def test_views_that_agree_keep_their_first_modes(rig):
    _, cameras, _, points = rig
    decoy = points + torch.tensor([60.0, -40.0], dtype=torch.float64)
    logits = torch.stack([bumps([points[:, v], decoy[:, v]], [0.9, 0.6]) for v in range(2)], 1)
    first, second = summaries(logits), summaries(logits, second=True)
    mean, _, _, switched = select_view_modes(cameras, *first, *second, agree_px=AGREE_PX)
    assert not switched.any()
    torch.testing.assert_close(mean, first[0])


def test_no_agreeing_peak_and_weak_second_modes_change_nothing(rig):
    _, cameras, _, points = rig
    # view 0's second peak is as wrong as its first (mirrored): no combination agrees
    nowhere = points[:, 0] - torch.tensor([35.0, 25.0], dtype=torch.float64)
    logits = torch.stack([bumps([decoy(points), nowhere], [0.9, 0.5]), bumps([points[:, 1]], [0.9])], 1)
    first, second = summaries(logits), summaries(logits, second=True)
    _, _, _, switched = select_view_modes(cameras, *first, *second, agree_px=AGREE_PX)
    assert not switched[:, 1].any() and switched[:, 0].float().mean() < 0.2
    # the right second peak, but lower than min_second: a tail, never used
    logits = swapped(points, other_peak=0.01)
    first, second = summaries(logits), summaries(logits, second=True)
    _, _, _, switched = select_view_modes(cameras, *first, *second, agree_px=AGREE_PX)
    assert not switched.any()


def test_the_posterior_triangulates_the_agreed_modes(rig):
    """:meth:`PosteriorModel3D.posterior` with the second modes follows the vote: the 3D mean of a
    swapped keypoint is the truth, not the robust compromise of the first modes."""
    from dgp_pyro.model.dgp3d import Model3DSettings, PotentialWeights3D
    from dgp_pyro.model.structured_guide import GuideCorrection3D

    group, cameras, truth, points = rig
    J = truth.shape[1]
    settings = Model3DSettings("supervised", STRIDE, float(STRIDE), [])
    model = PosteriorModel3D(
        settings, PotentialWeights3D(torch.ones(J), torch.ones(0)), GuideCorrection3D(J), cameras,
        [f"k{j}" for j in range(J)], list(group.names), agree_px=AGREE_PX,
    )  # fmt: skip
    logits = swapped(points)
    first = [x.numpy() for x in summaries(logits)]
    second = tuple(x.numpy() for x in summaries(logits, second=True))
    apart = detectable(cameras, points).numpy()
    voted = model.posterior(*first, second=second)
    plain = model.posterior(*first)
    error_voted = np.linalg.norm(voted.mean - truth.numpy(), axis=-1)[apart]
    error_plain = np.linalg.norm(plain.mean - truth.numpy(), axis=-1)[apart]
    assert np.median(error_voted) < 0.2 * np.median(error_plain)
    reprojected = np.linalg.norm(voted.mean_2d - points.numpy(), axis=-1)[:, 0][apart]
    assert np.max(reprojected) < 1.0
