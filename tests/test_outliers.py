"""The outlier-robust Gaussian form: a dense exact check of the cavity responsibilities (one and
two modes per heatmap), a frame sequence where the network jumps to a wrong blob and the
posterior must not follow it, and a mirrored paw whose top view peaks on the wrong paw."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from dgp_pyro.model.dgp import ModelSettings, SecondModes, guide_observations
from dgp_pyro.model.outliers import (
    DAMPING,
    TOLERANCE,
    inlier_responsibilities,
    mode_responsibilities,
    second_mode_share,
)
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


def _image_prior() -> tuple[torch.Tensor, torch.Tensor]:
    """The precision and centre of "anywhere in the image" for an image of SIZE."""
    W, H = SIZE
    return torch.diag(torch.tensor([12 / W**2, 12 / H**2], dtype=DTYPE)), torch.tensor(
        [(W - 1) / 2, (H - 1) / 2], dtype=DTYPE
    )


def _dense_cavities(mean, precision, temporal, edges, skeletal) -> dict:
    """``(t, j) -> (m, C)``: the dense posterior of y_tj with heatmap (t, j) removed and the
    image's spread joined in, from the full precision matrix of the chain."""
    T, J = mean.shape[:2]
    A, B, h = build_chain_precision(
        mean, precision, temporal, edges, skeletal, ridge=PRIOR_RIDGE, diagonal_offdiag=True
    )
    Lam, eta = _dense(A, B), h.reshape(-1)
    image_precision, centre = _image_prior()
    out = {}
    for t in range(T):
        for j in range(J):
            i = (t * J + j) * 2
            cavity, cavity_eta = Lam.clone(), eta.clone()
            cavity[i : i + 2, i : i + 2] -= precision[t, j]
            cavity_eta[i : i + 2] -= precision[t, j] @ mean[t, j]
            Sigma = torch.linalg.inv(cavity)
            m, C = (Sigma @ cavity_eta)[i : i + 2], Sigma[i : i + 2, i : i + 2]
            C_cav = torch.linalg.inv(torch.linalg.inv(C) + image_precision)
            out[t, j] = C_cav @ (torch.linalg.solve(C, m) + image_precision @ centre), C_cav
    return out


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
    image_precision, centre = _image_prior()
    for (t, j), (m_cav, C_cav) in _dense_cavities(mean, precision, temporal, edges, skeletal).items():
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


def test_two_modes_one_pass_equals_the_dense_leave_one_out_answer():
    """From (r, r') = (1, 0) one pass moves each mode's responsibility half-way to the dense
    answer: the cavity posterior of y_tj (heatmap (t, j) removed, image prior added) scores each
    mode with its share of the inlier, against the outlier."""
    g = torch.Generator().manual_seed(5)
    T, J = 4, 3
    mean = 100 + 20 * torch.randn(T, J, 2, generator=g, dtype=DTYPE)
    second = mean + 15 * torch.randn(T, J, 2, generator=g, dtype=DTYPE)
    X = torch.randn(T, J, 2, 2, generator=g, dtype=DTYPE)
    precision = X @ X.mT / 2 + 0.05 * torch.eye(2, dtype=DTYPE)
    precision2 = precision / 3.0
    share = torch.rand(T, J, generator=g, dtype=DTYPE) * 0.5
    share[0, 0] = 0.0  # no second mode here: one-mode answer
    temporal = torch.tensor([0.02, 0.05, 0.01], dtype=DTYPE)
    edges, skeletal = [(0, 1), (1, 2)], torch.tensor([0.01, 0.03], dtype=DTYPE)
    prob = 0.1
    got = mode_responsibilities(
        mean, precision, None, None, (temporal, edges, skeletal), prob, SIZE, PRIOR_RIDGE, iterations=1,
        second_mean=second, second_precision=precision2, second_share=share,
    )  # fmt: skip
    image_precision, centre = _image_prior()
    for (t, j), (m_cav, C_cav) in _dense_cavities(mean, precision, temporal, edges, skeletal).items():
        w, heat_cov = float(share[t, j]), torch.linalg.inv(precision[t, j])
        first = math.log(1 - prob) + math.log(1 - w) + _log_normal(mean[t, j], m_cav, C_cav + heat_cov)
        other = -math.inf
        if w > 0:
            second_cov = torch.linalg.inv(precision2[t, j])
            other = math.log((1 - prob) * w) + _log_normal(second[t, j], m_cav, C_cav + second_cov)
        outlier = math.log(prob) + _log_normal(
            mean[t, j], centre, torch.linalg.inv(image_precision) + heat_cov
        )
        top = max(first, other, outlier)
        total = top + math.log(sum(math.exp(v - top) for v in (first, other, outlier)))
        want_first, want_second = max(math.exp(first - total), 1e-4), math.exp(other - total)
        assert float(got[t, j, 0]) == pytest.approx(1 + DAMPING * (want_first - 1), rel=1e-6, abs=1e-9)
        assert float(got[t, j, 1]) == pytest.approx(DAMPING * want_second, rel=1e-6, abs=1e-9)
    one_mode = inlier_responsibilities(
        mean, precision, None, None, (temporal, edges, skeletal), prob, SIZE, PRIOR_RIDGE, iterations=1
    )
    assert float(got[0, 0, 0]) == pytest.approx(float(one_mode[0, 0]), rel=1e-9)


def _mirrored_paw(second_confidence: float):
    """Keypoint 0 (top view) and 1 (bottom view) of one paw share their x (a tight x edge, y
    free, offset 0 in x and -80 px in y). The bottom view's heatmap is right; the top view's
    first mode is on the other paw, 60 px off in x and 25 px in y, its second mode on the paw."""
    truth = torch.tensor([[[150.0, 60.0], [150.0, 140.0]]], dtype=DTYPE)
    first = truth.clone()
    first[0, 0] += torch.tensor([60.0, 25.0], dtype=DTYPE)
    cov = (torch.eye(2, dtype=DTYPE) * 2.0**2).expand(1, 2, 2, 2).clone()
    second = SecondModes(
        mean=truth + 0.5,
        cov=cov * 4.0,
        confidence=torch.tensor([[second_confidence, 0.0]], dtype=DTYPE),
        first_confidence=torch.tensor([[0.5, 0.8]], dtype=DTYPE),
    )
    weights = PotentialWeights(
        torch.zeros(2), torch.tensor([[1.0, 1e-12]]), skeletal_offset=torch.tensor([[0.0, -80.0]])
    )
    return truth, first, cov, second, weights


def test_the_skeleton_picks_the_second_mode_of_a_swapped_paw():
    """With its second mode the top-view paw lands on the paw, and the right bottom view is not
    dragged; with the first mode alone the wrong peak is an outlier, and y is left to chance."""
    truth, first, cov, second, weights = _mirrored_paw(second_confidence=0.1)
    correction = GuideCorrection(2)
    settings = _settings(0.05)
    args = (weights.temporal(), [(0, 1)], weights.skeletal(), weights.skeletal_offset())
    results = {}
    for name, modes in (("two", second), ("one", None)):
        obs_mean, obs_precision = guide_observations(settings, weights, correction, first, cov, second=modes)
        results[name] = smooth_keypoints(obs_mean, obs_precision, *args, ridge=PRIOR_RIDGE)["mean"]
    error_two = (results["two"] - truth).norm(dim=-1)[0]
    error_one = (results["one"] - truth).norm(dim=-1)[0]
    assert error_two[0] < 2.0 and error_two[1] < 1.0
    assert error_one[0] > 20.0


def test_a_second_mode_too_low_or_unconstrained_changes_nothing():
    truth, first, cov, second, weights = _mirrored_paw(second_confidence=0.01)  # below MIN_SECOND_PEAK
    assert float(second_mode_share(second.first_confidence, second.confidence)[0, 0]) == 0.0
    settings, correction = _settings(0.05), GuideCorrection(2)
    with_second = guide_observations(settings, weights, correction, first, cov, second=second)
    without = guide_observations(settings, weights, correction, first, cov)
    torch.testing.assert_close(with_second, without, rtol=1e-12, atol=1e-12)
    # a lone keypoint (no potential): the first, stronger mode keeps it
    lone = ModelSettings(variant="dgp", stride=8, heatmap_sigma=8.0, outlier_prob=0.05, image_size=SIZE)
    strong = dataclasses.replace(second, confidence=torch.tensor([[0.3, 0.0]], dtype=DTYPE))
    no_edges = PotentialWeights(torch.zeros(2), torch.zeros(0))
    obs_mean, _ = guide_observations(lone, no_edges, correction, first, cov, second=strong)
    assert (obs_mean[0, 0] - first[0, 0]).norm() < 1.0
