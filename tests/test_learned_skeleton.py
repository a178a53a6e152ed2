"""The skeleton learned from the labels: its edges, offsets and weights, and what it does to a posterior."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgp_pyro.model.dgp import ModelSettings, guide_observations
from dgp_pyro.model.learned_skeleton import SD_FLOOR, VARIANCE_INFLATION, learned_skeleton
from dgp_pyro.model.potentials import PotentialWeights
from dgp_pyro.model.structured_guide import GuideCorrection, potential_arguments
from dgp_pyro.ops.keypoint_chain import smooth_keypoints

SIZE = (200, 200)


def column_labels(frames: int = 20, seed: int = 0) -> np.ndarray:
    """Parts 0-3 stacked in a column (same x, 30 px apart in y), part 4 anywhere."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(30, 170, frames)
    y = rng.uniform(20, 60, frames)
    labels = np.empty((frames, 5, 2))
    for k in range(4):
        labels[:, k, 0] = x + rng.normal(0, 1.0, frames)
        labels[:, k, 1] = y + 30 * k + rng.normal(0, 1.0, frames)
    labels[:, 4] = rng.uniform(10, 190, (frames, 2))
    return labels


def test_the_column_is_found_with_its_offsets_and_the_loose_part_is_joined_last():
    labels = column_labels()
    skeleton = learned_skeleton(labels)
    assert len(skeleton.edges) == 4  # a spanning tree of 5 parts
    column = [(i, j) for i, j in skeleton.edges if 4 not in (i, j)]
    assert len(column) == 3
    for (i, j), offset in zip(skeleton.edges, skeleton.offset, strict=True):
        if (i, j) in column:
            np.testing.assert_allclose(offset, [0.0, 30.0 * (i - j)], atol=1.5)
    # the weights are the inflated inverse spreads of each offset, per axis
    k = skeleton.edges.index(column[0])
    i, j = column[0]
    variance = np.maximum(np.var(labels[:, i] - labels[:, j], axis=0, ddof=1), SD_FLOOR**2)
    np.testing.assert_allclose(skeleton.weight[k], 1.0 / (VARIANCE_INFLATION * variance))
    loose = [k for k, edge in enumerate(skeleton.edges) if 4 in edge]
    assert skeleton.weight[loose].max() < 0.02 * skeleton.weight[k].min()


def test_rarely_labeled_parts_and_too_few_frames_give_no_edges():
    labels = column_labels()
    labels[6:, 3] = np.nan  # part 3 labeled in 6 of 20 frames: under half
    skeleton = learned_skeleton(labels)
    assert all(3 not in edge for edge in skeleton.edges)
    assert len(skeleton.edges) == 3
    few = learned_skeleton(column_labels(frames=4))
    assert few.edges == [] and few.weight.shape == (0, 2) and few.offset.shape == (0, 2)


@pytest.mark.parametrize("robust", [True, False])
def test_a_confident_wrong_part_is_put_back_in_its_column(robust):
    """One part's heatmap on the wrong blob, 100 px off: the learned skeleton and the robust
    likelihood put it back where its column says; the Gaussian form is dragged far off."""
    skeleton = learned_skeleton(column_labels())
    truth = torch.tensor([[[60.0, 40.0], [60.0, 70.0], [60.0, 100.0], [60.0, 130.0], [150.0, 20.0]]])
    observed = truth.clone()
    observed[0, 3, 0] += 100.0  # the wrong blob
    cov = torch.eye(2).expand(1, 5, 2, 2) * 2.0**2  # confident heatmaps everywhere
    settings = ModelSettings(
        variant="skeletal",
        stride=4,
        heatmap_sigma=4.0,
        edges=skeleton.edges,
        outlier_prob=0.05 if robust else 0.0,
        image_size=SIZE,
    )
    weights = PotentialWeights(
        torch.ones(5), torch.as_tensor(skeleton.weight), skeletal_offset=torch.as_tensor(skeleton.offset)
    )
    obs_mean, obs_precision = guide_observations(settings, weights, GuideCorrection(5), observed, cov)
    posterior = smooth_keypoints(
        obs_mean, obs_precision, *potential_arguments(settings, weights), levels=(0.9,)
    )
    error = (posterior["mean"] - truth).norm(dim=-1)[0]
    if robust:
        assert error[3] < 5.0 and error[:3].max() < 2.0
        inside = (posterior["lower"][0.9][0, 3] <= truth[0, 3]) & (
            truth[0, 3] <= posterior["upper"][0.9][0, 3]
        )
        assert bool(inside.all())
    else:
        assert error[3] > 20.0 and error[:3].max() > 5.0  # the wrong peak drags the column with it
