"""The outlier-robust Gaussian form: a dense exact check of the cavity responsibilities, and a
frame sequence where the network jumps to a wrong blob and the posterior must not follow it."""

from __future__ import annotations

import math

import pytest
import torch

from dgp_pyro.model.dgp import ModelSettings, guide_observations
from dgp_pyro.model.outliers import DAMPING, TOLERANCE, inlier_responsibilities
from dgp_pyro.model.potentials import PRIOR_RIDGE, PotentialWeights
from dgp_pyro.model.structured_guide import GuideCorrection
from dgp_pyro.ops.keypoint_chain import build_chain_precision, smooth_keypoints

DTYPE = torch.float64
SIZE = (320, 256)


def _dense(A, B):
    T, D = A.shape[-3], A.shape[-1]
    Lam = torch.zeros(T * D, T * D, dtype=DTYPE)
    for t in range(T):
        Lam[t * D : (t + 1) * D, t * D : (t + 1) * D] = A[t]
    for t in range(T - 1):
        Lam[t * D : (t + 1) * D, (t + 1) * D : (t + 2) * D] = torch.diag(B[t])
        Lam[(t + 1) * D : (t + 2) * D, t * D : (t + 1) * D] = torch.diag(B[t])
    return Lam


def _log_normal(x, mean, cov):
    r = x - mean
    return float(-0.5 * r @ torch.linalg.solve(cov, r) - 0.5 * torch.logdet(2 * math.pi * cov))


def test_one_pass_equals_the_dense_leave_one_out_answer():
    """One pass moves r_tj from 1 half-way (DAMPING) to the dense leave-one-out answer: the posterior
    of y_tj without heatmap (t, j), image prior added."""
    g = torch.Generator().manual_seed(3)
    T, J = 5, 3
    mean = 100 + 20 * torch.randn(T, J, 2, generator=g, dtype=DTYPE)
    X = torch.randn(T, J, 2, 2, generator=g, dtype=DTYPE)
    precision = X @ X.mT / 2 + 0.05 * torch.eye(2, dtype=DTYPE)
    temporal = torch.tensor([0.02, 0.05, 0.01], dtype=DTYPE)
    edges, skeletal = [(0, 1), (1, 2)], torch.tensor([0.01, 0.03], dtype=DTYPE)
    prob = 0.1
    got = inlier_responsibilities(
        mean, precision, None, None, (temporal, edges, skeletal), prob, SIZE, PRIOR_RIDGE, iterations=1
    )
    A, B, h = build_chain_precision(
        mean, precision, temporal, edges, skeletal, ridge=PRIOR_RIDGE, diagonal_offdiag=True
    )
    Lam, eta = _dense(A, B), h.reshape(-1)
    W, H = SIZE
    image_precision = torch.diag(torch.tensor([12 / W**2, 12 / H**2], dtype=DTYPE))
    centre = torch.tensor([(W - 1) / 2, (H - 1) / 2], dtype=DTYPE)
    for t in range(T):
        for j in range(J):
            i = (t * J + j) * 2
            cavity, cavity_eta = Lam.clone(), eta.clone()
            cavity[i : i + 2, i : i + 2] -= precision[t, j]
            cavity_eta[i : i + 2] -= precision[t, j] @ mean[t, j]
            Sigma = torch.linalg.inv(cavity)
            m = (Sigma @ cavity_eta)[i : i + 2]
            C = Sigma[i : i + 2, i : i + 2]
            # the image's spread joins the cavity marginal of y_tj
            C_cav = torch.linalg.inv(torch.linalg.inv(C) + image_precision)
            m_cav = C_cav @ (torch.linalg.solve(C, m) + image_precision @ centre)
            heat_cov = torch.linalg.inv(precision[t, j])
            inlier = math.log(1 - prob) + _log_normal(mean[t, j], m_cav, C_cav + heat_cov)
            outlier = math.log(prob) + _log_normal(
                mean[t, j], centre, torch.linalg.inv(image_precision) + heat_cov
            )
            want = max(1 / (1 + math.exp(outlier - inlier)), 1e-4)
            assert float(got[t, j]) == pytest.approx(1 + DAMPING * (want - 1), rel=1e-6, abs=1e-9)


def _walk(T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    steps = 2.0 * torch.randn(T, 2, 2, generator=g, dtype=DTYPE)
    return torch.tensor([[120.0, 100.0], [140.0, 110.0]], dtype=DTYPE) + steps.cumsum(0)


def _settings(prob: float) -> ModelSettings:
    return ModelSettings(
        variant="dgp", stride=8, heatmap_sigma=8.0, edges=[(0, 1)], outlier_prob=prob, image_size=SIZE
    )


def test_posterior_does_not_follow_a_confident_jump():
    """Frames 20-21 of keypoint 0 jump 45 px to a wrong blob with a tight heatmap: the plain
    Gaussian form follows; the outlier mixture keeps the track and widens the intervals there."""
    T = 40
    truth = _walk(T)
    g = torch.Generator().manual_seed(1)
    observed = truth + 1.0 * torch.randn(T, 2, 2, generator=g, dtype=DTYPE)
    jump = [20, 21]
    observed[jump, 0] += torch.tensor([45.0, -30.0], dtype=DTYPE)
    cov = torch.eye(2, dtype=DTYPE).expand(T, 2, 2, 2).clone()  # a confident 1-px heatmap everywhere
    # the temporal weight of a 2-px-per-frame random walk, a loose limb between the two
    weights = PotentialWeights(torch.full((2,), 1 / 8.0), torch.full((1,), 1e-3))
    correction = GuideCorrection(2)
    errors, stds = {}, {}
    for prob in (0.0, 0.05):
        obs_mean, obs_precision = guide_observations(_settings(prob), weights, correction, observed, cov)
        smoothed = smooth_keypoints(obs_mean, obs_precision, weights.temporal(), [(0, 1)], weights.skeletal())
        errors[prob] = (smoothed["mean"] - truth).norm(dim=-1)
        stds[prob] = smoothed["std"]
    plain, robust = errors[0.0], errors[0.05]
    assert plain[jump, 0].min() > 15.0  # the Gaussian form is pulled most of the way over
    assert robust[jump, 0].max() < 4.0  # the mixture bridges the jump from the neighbours
    others = torch.ones(T, 2, dtype=torch.bool)
    others[jump, 0] = False
    assert robust[others].mean() < 1.1 * plain[others].mean() + 0.05  # no price elsewhere
    assert (stds[0.05][jump, 0] > 1.5 * stds[0.0][jump, 0]).all()  # and it says it is less sure


def test_responsibilities_flag_the_jump_and_nothing_else():
    T = 40
    truth = _walk(T, seed=2)
    observed = truth.clone()
    observed[10, 1] += torch.tensor([0.0, 60.0], dtype=DTYPE)
    precision = torch.eye(2, dtype=DTYPE).expand(T, 2, 2, 2).clone()
    weights = (torch.full((2,), 1 / 8.0, dtype=DTYPE), [(0, 1)], torch.full((1,), 1e-3, dtype=DTYPE))
    r = inlier_responsibilities(observed, precision, None, None, weights, 0.05, SIZE, PRIOR_RIDGE)
    assert r[10, 1] < 1e-3
    r[10, 1] = 1.0
    assert r.min() > 0.9


def test_unconstrained_keypoint_keeps_the_prior_odds():
    """No potential touches a lone keypoint: its heatmap can be neither confirmed nor refuted."""
    observed = torch.tensor([[[10.0, 240.0]]], dtype=DTYPE)  # near a corner of the image
    precision = torch.eye(2, dtype=DTYPE).expand(1, 1, 2, 2).clone()
    args = (torch.zeros(1, dtype=DTYPE), [], torch.zeros(0, dtype=DTYPE))
    r = inlier_responsibilities(observed, precision, None, None, args, 0.05, SIZE, PRIOR_RIDGE)
    assert float(r) == pytest.approx(0.95, abs=TOLERANCE)  # approached in damped passes


def test_labels_are_trusted_and_the_plain_form_is_unchanged():
    T = 12
    truth = _walk(T, seed=4)
    cov = 4 * torch.eye(2, dtype=DTYPE).expand(T, 2, 2, 2).clone()
    labels = truth.clone()
    mask = torch.zeros(T, 2, dtype=torch.bool)
    mask[3, 0] = True
    labels[3, 0] += 80.0  # far from every heatmap: a label is never called an outlier
    weights, correction = PotentialWeights(torch.full((2,), 0.1), torch.full((1,), 1e-3)), GuideCorrection(2)
    mean_r, prec_r = guide_observations(_settings(0.05), weights, correction, truth, cov, labels, mask)
    assert (mean_r[3, 0] - labels[3, 0]).norm() < 0.5
    mean_0, prec_0 = guide_observations(_settings(0.0), weights, correction, truth, cov, labels, mask)
    fused = torch.linalg.solve(prec_0[3, 0], prec_0[3, 0] @ mean_0[3, 0])
    assert torch.allclose(fused, mean_0[3, 0])
    assert torch.allclose(mean_0[~mask], truth[~mask])  # off: the heatmaps as they were


def test_settings_refuse_a_probability_out_of_range():
    with pytest.raises(ValueError, match="outlier_prob"):
        _settings(1.0)
    with pytest.raises(ValueError, match="image_size"):
        ModelSettings(variant="dgp", stride=8, heatmap_sigma=8.0, outlier_prob=0.1)


def test_two_confident_heatmaps_that_disagree_settle_instead_of_flipping():
    """Two confident heatmaps 100 px apart across a tight edge each judge the other. Undamped
    passes flip both between outlier and inlier on every pass (the posterior then depends on
    whether the number of passes is odd or even); the damped passes settle on one answer."""
    mean = torch.tensor([[[100.0, 100.0], [200.0, 100.0]]], dtype=DTYPE)
    precision = torch.eye(2, dtype=DTYPE).expand(1, 2, 2, 2) / 2.0**2
    potentials = (torch.zeros(2, dtype=DTYPE), [(0, 1)], torch.tensor([1.0], dtype=DTYPE))
    answers = [
        inlier_responsibilities(
            mean, precision, None, None, potentials, 0.05, SIZE, PRIOR_RIDGE, iterations=n
        )
        for n in (59, 60, 200)
    ]
    torch.testing.assert_close(answers[0], answers[1], atol=2e-3, rtol=0)
    torch.testing.assert_close(answers[1], answers[2], atol=2e-3, rtol=0)
