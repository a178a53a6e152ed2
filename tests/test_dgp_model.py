"""The Deep Graph Pose model and its structured guide, checked against dense exact answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dgp_pyro.model.dgp import (
    LabeledBatch,
    ModelSettings,
    WindowBatch,
    guide_from_summaries,
)
from dgp_pyro.model.potentials import (
    PRIOR_RIDGE,
    PotentialWeights,
    SkeletalPotential,
    TemporalPotential,
    default_skeletal_weights,
    default_temporal_weights,
    keypoint_prior,
)
from dgp_pyro.model.structured_guide import GuideCorrection
from dgp_pyro.nets import heatmap_loss
from dgp_pyro.train.dgp import elbo_loss

EDGES = [(0, 1), (1, 2), (1, 3)]


def random_summaries(generator: torch.Generator, T: int, K: int):
    mean = torch.rand(T, K, 2, generator=generator, dtype=torch.float64) * 50
    root = torch.randn(T, K, 2, 2, generator=generator, dtype=torch.float64)
    cov = root @ root.transpose(-1, -2) + 0.5 * torch.eye(2, dtype=torch.float64)
    return mean, cov


def dense_posterior(mean, cov, labels, mask, temporal, skeletal, edges, label_sigma):
    """The Gaussian-form posterior assembled term by term as one dense (T K 2) matrix."""
    T, K = mean.shape[:2]
    D = T * K * 2
    precision = np.zeros((D, D))
    information = np.zeros(D)

    def index(t, k):
        return slice((t * K + k) * 2, (t * K + k) * 2 + 2)

    eye = np.eye(2)
    for t in range(T):
        for k in range(K):
            P = np.linalg.inv(cov[t, k])
            precision[index(t, k), index(t, k)] += P
            information[index(t, k)] += P @ mean[t, k]
            if mask[t, k]:
                precision[index(t, k), index(t, k)] += eye / label_sigma**2
                information[index(t, k)] += labels[t, k] / label_sigma**2
            if t + 1 < T:  # 1/2 w ||y_{t+1} - y_t||^2
                w = temporal[k]
                precision[index(t, k), index(t, k)] += w * eye
                precision[index(t + 1, k), index(t + 1, k)] += w * eye
                precision[index(t, k), index(t + 1, k)] -= w * eye
                precision[index(t + 1, k), index(t, k)] -= w * eye
        for e, (i, j) in enumerate(edges):  # 1/2 w ||y_i - y_j||^2
            w = skeletal[e]
            precision[index(t, i), index(t, i)] += w * eye
            precision[index(t, j), index(t, j)] += w * eye
            precision[index(t, i), index(t, j)] -= w * eye
            precision[index(t, j), index(t, i)] -= w * eye
    precision += PRIOR_RIDGE * np.eye(D)
    covariance = np.linalg.inv(precision)
    return (covariance @ information).reshape(T, K, 2), covariance


@pytest.mark.parametrize("variant", ["dgp", "temporal", "skeletal", "supervised"])
def test_guide_equals_dense_gaussian_posterior(variant):
    generator = torch.Generator().manual_seed(3)
    T, K = 6, 4
    mean, cov = random_summaries(generator, T, K)
    labels = torch.rand(T, K, 2, generator=generator, dtype=torch.float64) * 50
    mask = torch.zeros(T, K, dtype=torch.bool)
    mask[1, :2] = True
    mask[4, 3] = True
    labels[~mask] = float("nan")
    temporal = torch.tensor([0.3, 0.05, 1.0, 0.2], dtype=torch.float64)
    skeletal = torch.tensor([0.02, 0.1, 0.5], dtype=torch.float64)
    settings = ModelSettings(variant, stride=8, heatmap_sigma=8.0, edges=EDGES, label_sigma=1.5)
    q = guide_from_summaries(
        settings, PotentialWeights(temporal, skeletal), GuideCorrection(K), mean, cov, labels, mask
    )

    on_t = temporal.numpy() if settings.temporal else np.zeros(K)
    on_s = skeletal.numpy() if settings.skeletal else np.zeros(len(EDGES))
    dense_mean, dense_cov = dense_posterior(
        mean.numpy(), cov.numpy(), labels.numpy(), mask.numpy(), on_t, on_s, EDGES, 1.5
    )
    np.testing.assert_allclose(q.mean.detach().numpy(), dense_mean, atol=1e-5, rtol=0)
    blocks = np.stack([dense_cov[t * 2 * K : (t + 1) * 2 * K, t * 2 * K : (t + 1) * 2 * K] for t in range(T)])
    np.testing.assert_allclose(q.marginal_covariance.detach().numpy(), blocks, atol=1e-5, rtol=0)


def test_guide_correction_scales_precision_and_shifts_mean():
    generator = torch.Generator().manual_seed(0)
    mean, cov = random_summaries(generator, 1, 4)
    settings = ModelSettings("supervised", stride=8, heatmap_sigma=8.0)
    weights = PotentialWeights(torch.ones(4), torch.ones(0))
    correction = GuideCorrection(4)
    with torch.no_grad():
        correction.log_precision_scale.fill_(np.log(4.0))
        correction.offset.fill_(2.0)
    q = guide_from_summaries(settings, weights, correction, mean, cov)
    # the prior's tiny ridge shrinks towards 0 by a negligible amount
    np.testing.assert_allclose(q.mean.detach().numpy(), mean.numpy() + 2.0, atol=1e-3)
    frame_cov = q.marginal_covariance[0].detach().numpy()
    for k in range(4):
        np.testing.assert_allclose(
            frame_cov[2 * k : 2 * k + 2, 2 * k : 2 * k + 2], cov[0, k].numpy() / 4, atol=1e-5
        )


def test_prior_density_is_the_sum_of_the_potentials():
    """log p(y) differences equal minus the potentials' energy differences (plus the ridge)."""
    generator = torch.Generator().manual_seed(1)
    T, K = 7, 4
    temporal = torch.tensor([0.3, 0.05, 1.0, 0.2], dtype=torch.float64)
    skeletal = torch.tensor([0.02, 0.1, 0.5], dtype=torch.float64)
    prior = keypoint_prior(T, K, 2, temporal, EDGES, skeletal)
    energy_t = TemporalPotential(temporal)
    energy_s = SkeletalPotential(EDGES, skeletal)
    y = torch.randn(2, T, K, 2, generator=generator, dtype=torch.float64) * 10

    def energy(v):
        return energy_t.energy(v) + energy_s.energy(v) + 0.5 * PRIOR_RIDGE * v.pow(2).sum((-3, -2, -1))

    log_p = prior.log_prob(y)
    torch.testing.assert_close(log_p[0] - log_p[1], -(energy(y[0]) - energy(y[1])), atol=1e-8, rtol=1e-10)


def test_supervised_variant_objective_is_the_heatmap_loss():
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, 8, 8, generator=generator, requires_grad=True)
    points = torch.rand(3, 4, 2, generator=generator) * 60
    points[0, 1] = float("nan")
    mask = torch.isfinite(points).all(-1)
    settings = ModelSettings("supervised", stride=8, heatmap_sigma=8.0, edges=EDGES)
    weights = PotentialWeights(torch.ones(4), torch.ones(3))
    loss, parts = elbo_loss(
        torch.nn.Linear(1, 1), settings, weights, GuideCorrection(4), LabeledBatch(logits, points, mask), None
    )
    torch.testing.assert_close(loss.float(), heatmap_loss(logits, points, 8, 8.0, mask))
    assert parts["entropy"] == 0.0


def test_window_elbo_has_finite_gradients_with_missing_labels():
    generator = torch.Generator().manual_seed(4)
    W, T, K = 2, 5, 4
    logits = torch.randn(W, T, K, 8, 8, generator=generator, requires_grad=True)
    labels = torch.full((W, T, K, 2), float("nan"))
    labels[0, 2] = torch.rand(K, 2, generator=generator) * 60
    labels[1, 0, 1] = torch.tensor([10.0, 20.0])
    mask = torch.isfinite(labels).all(-1)
    settings = ModelSettings("dgp", stride=8, heatmap_sigma=8.0, edges=EDGES)
    weights = PotentialWeights(torch.full((K,), 0.1), torch.full((3,), 0.01), learn=True)
    correction = GuideCorrection(K)
    torch.manual_seed(0)
    loss, parts = elbo_loss(
        torch.nn.Linear(1, 1), settings, weights, correction, None, WindowBatch(logits, labels, mask)
    )
    loss.backward()
    for tensor in (
        logits.grad,
        correction.offset.grad,
        correction.log_precision_scale.grad,
        weights.log_temporal.grad,
    ):
        assert tensor is not None and torch.isfinite(tensor).all()
    assert set(parts) >= {"neural", "keypoints", "labels", "entropy", "loss"}


def test_default_weights_from_data():
    labels = np.zeros((10, 4, 2))
    labels[:, 1, 0] = 10.0  # edge (0, 1) has length 10
    labels[:, 2, 0] = 10.0
    labels[:, 2, 1] = 5.0  # edge (1, 2) has length 5
    labels[3, 3] = np.nan
    weights = default_skeletal_weights(labels, [(0, 1), (1, 2)], strength=2.0)
    np.testing.assert_allclose(weights, [2.0 / 100, 2.0 / 25])

    rng = np.random.default_rng(0)
    steps = rng.normal(0, 2.0, size=(5000, 3, 2))  # per-axis step std 2 -> w = 1/4
    trajectory = np.cumsum(steps, axis=0)
    trajectory[100:110, 0] += 500  # a wrong detection does not inflate the estimate
    np.testing.assert_allclose(default_temporal_weights(trajectory), 0.25, rtol=0.1)
