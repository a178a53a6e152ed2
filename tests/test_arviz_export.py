"""ArviZ export on pure arrays, and the calibration curve: no training needed."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
from scipy.stats import norm

from dgp_pyro.export.inference_data import (
    LOG_LIKELIHOOD_VAR,
    POSTERIOR_VAR,
    gaussian_predictive_elpd,
    held_out_elpd,
    inference_data_from_draws,
    inference_data_from_posterior,
    label_log_density,
    loo_summary,
    marginal_draws,
)
from dgp_pyro.posterior.interval_fit import DEFAULT_CURVE_LEVELS, calibration_note, coverage_curve
from dgp_pyro.posterior.marginals import KeypointPosterior

# az.compare sorts with DataFrame.sort_values(inplace=True), deprecated in pandas 3: ArviZ's, not ours.
PANDAS_INPLACE = "ignore:The inplace keyword:DeprecationWarning"

T, K = 30, 4
KEYPOINTS = [f"kp{k}" for k in range(K)]
FRAMES = [f"labeled-data/s/img{t:03d}.png" for t in range(T)]


def _problem(post_std: float, label_sigma: float, bias: float = 0.0, seed: int = 0):
    """Truth, labels (truth + label noise), and a calibrated Gaussian posterior (shifted by ``bias``)."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0, 100, (T, K, 2))
    labels = truth + rng.normal(0, label_sigma, (T, K, 2))
    labels[0, 0, 0] = np.nan  # a half-missing label is left out
    labels[3, 2] = np.nan
    mean = truth + rng.normal(0, post_std, (T, K, 2)) + bias
    cov = np.broadcast_to(np.eye(2) * post_std**2, (T, K, 2, 2)).copy()
    return labels, mean, cov


def test_structure_dims_and_coords():
    labels, mean, cov = _problem(0.1, 2.0)
    draws = marginal_draws(mean, cov, num_draws=50, seed=0, chains=2)
    assert draws.shape == (2, 50, T, K, 2)
    idata = inference_data_from_draws(
        draws, KEYPOINTS, FRAMES, labels, 2.0, frame_views=["top"] * T, attrs={"run": "x"}
    )
    assert set(idata.groups()) == {"posterior", "log_likelihood", "observed_data"}
    post = idata.posterior[POSTERIOR_VAR]
    assert post.dims == ("chain", "draw", "frame", "keypoint", "coord")
    assert list(post.keypoint.values) == KEYPOINTS
    assert list(post.frame.values) == FRAMES
    assert list(post.coord.values) == ["x", "y"]
    assert list(idata.posterior.view.values) == ["top"] * T
    np.testing.assert_array_equal(post.values, draws)

    n_labels = T * K - 2
    ll = idata.log_likelihood[LOG_LIKELIHOOD_VAR]
    assert ll.dims == ("chain", "draw", "label") and ll.shape == (2, 50, n_labels)
    obs = idata.observed_data[LOG_LIKELIHOOD_VAR]
    assert obs.dims == ("label", "coord") and obs.shape == (n_labels, 2)
    # label 0 is frame 0's keypoint 1 (kp0 of frame 0 is half-missing)
    assert obs.label_frame.values[0] == FRAMES[0] and obs.label_keypoint.values[0] == "kp1"
    np.testing.assert_array_equal(obs.values[0], labels[0, 1])
    assert "kp2" not in obs.label_keypoint.values[obs.label_frame.values == FRAMES[3]]
    assert idata.posterior.attrs["run"] == "x"

    # one chain: (S, T, K, 2); no labels: no log_likelihood
    bare = inference_data_from_draws(draws[0], KEYPOINTS, list(range(T)))
    assert bare.posterior[POSTERIOR_VAR].shape == (1, 50, T, K, 2)
    assert set(bare.groups()) == {"posterior"}
    with pytest.raises(ValueError, match="frame coords"):
        inference_data_from_draws(draws, KEYPOINTS, FRAMES[:-1])


def test_multiview_keypoint_views_and_netcdf(tmp_path):
    labels, mean, cov = _problem(0.1, 2.0)
    views = ["top", "top", "side", "side"]
    idata = inference_data_from_posterior(
        KeypointPosterior(mean, cov, np.ones((T, K)), np.arange(T)),
        KEYPOINTS,
        FRAMES,
        labels,
        2.0,
        num_draws=20,
        keypoint_views=views,
    )
    assert list(idata.posterior.view.values) == views
    path = tmp_path / "idata.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    np.testing.assert_allclose(
        back.log_likelihood[LOG_LIKELIHOOD_VAR], idata.log_likelihood[LOG_LIKELIHOOD_VAR]
    )


def test_marginal_draws_match_the_gaussians():
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(3, 2, 2))
    a = rng.normal(size=(3, 2, 2, 2))
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(2)
    cov[2, 1] = np.nan
    draws = marginal_draws(mean, cov, num_draws=20000, seed=3, chains=1)[0]
    np.testing.assert_allclose(draws[:, :2].mean(0), mean[:2], atol=0.05)
    flat = draws[:, 0, 0] - draws[:, 0, 0].mean(0)
    np.testing.assert_allclose(flat.T @ flat / len(flat), cov[0, 0], rtol=0.05, atol=0.02)
    assert np.isnan(draws[:, 2, 1]).all() and np.isfinite(draws[:, 2, 0]).all()
    again = marginal_draws(mean, cov, num_draws=20000, seed=3, chains=1)[0]
    np.testing.assert_array_equal(np.nan_to_num(draws), np.nan_to_num(again))


def test_label_log_density_per_axis_sigma():
    rng = np.random.default_rng(2)
    draws = rng.normal(size=(1, 5, 2, 3, 2))
    labels = rng.normal(size=(2, 3, 2))
    labels[1, 2, 1] = np.nan
    sigma = np.array([[1.5, 0.5], [2.0, 1.0]])[:, None, :]  # per image and axis
    loglik, ti, ki = label_log_density(draws, labels, sigma)
    assert loglik.shape == (1, 5, 5)
    sig = np.broadcast_to(sigma, labels.shape)
    expected = norm.logpdf(labels[ti, ki], draws[:, :, ti, ki], sig[ti, ki]).sum(-1)
    np.testing.assert_allclose(loglik, expected)


def test_summary_hdi_loo_work_directly():
    labels, mean, cov = _problem(0.1, 2.0)
    idata = inference_data_from_draws(marginal_draws(mean, cov, 200, 0), KEYPOINTS, FRAMES, labels, 2.0)
    summary = az.summary(idata, var_names=[POSTERIOR_VAR])
    assert len(summary) == T * K * 2
    assert {"mean", "sd", "r_hat", "ess_bulk"} <= set(summary.columns)
    np.testing.assert_allclose(summary["sd"].to_numpy(), 0.1, rtol=0.3)
    hdi = az.hdi(idata, hdi_prob=0.9)[POSTERIOR_VAR]
    assert hdi.dims == ("frame", "keypoint", "coord", "hdi")
    inside = (mean >= hdi.sel(hdi="lower").values) & (mean <= hdi.sel(hdi="higher").values)
    assert inside.all()

    loo = az.loo(idata, pointwise=True)
    assert loo.pareto_k.shape == (T * K - 2,)
    assert float(loo.pareto_k.max()) < 0.5
    # label noise dominates: LOO ~ the direct held-out elpd ~ the analytic predictive density
    ok = np.isfinite(labels).all(-1)
    analytic = norm.logpdf(labels[ok], mean[ok], np.sqrt(0.1**2 + 2.0**2)).sum()
    direct = held_out_elpd(idata)
    assert direct["n"] == T * K - 2
    assert abs(float(loo["elpd_loo"]) - analytic) < 3.0
    assert abs(direct["elpd"] - analytic) < 3.0


@pytest.mark.filterwarnings(PANDAS_INPLACE)
def test_compare_prefers_the_better_model():
    labels, mean, cov = _problem(0.1, 2.0)
    good = inference_data_from_draws(marginal_draws(mean, cov, 200, 0), KEYPOINTS, FRAMES, labels, 2.0)
    bad = inference_data_from_draws(marginal_draws(mean + 2.0, cov, 200, 1), KEYPOINTS, FRAMES, labels, 2.0)
    table = az.compare({"good": good, "bad": bad})
    assert table.index[0] == "good"
    assert table.loc["good", "weight"] > 0.9
    assert table.loc["good", "elpd_loo"] > table.loc["bad", "elpd_loo"]


def test_loo_summary_reports_k_hat_without_warning():
    # posterior spread ~ label noise: PSIS struggles (k-hat high); the direct held-out elpd does not
    labels, mean, cov = _problem(1.0, 1.0)
    idata = inference_data_from_draws(marginal_draws(mean, cov, 200, 0), KEYPOINTS, FRAMES, labels, 1.0)
    out = loo_summary(idata)  # warnings are errors in this suite: ArviZ's own must be silenced
    assert out["n_labels"] == T * K - 2
    assert out["pareto_k_max"] > 0.7 and out["n_high_k"] > 0
    ok = np.isfinite(labels).all(-1)
    analytic = norm.logpdf(labels[ok], mean[ok], np.sqrt(2.0)).sum()
    assert abs(out["elpd_heldout"] - analytic) < 0.05 * abs(analytic)
    assert out["elpd_loo"] < out["elpd_heldout"]  # PSIS-LOO under-estimates a truly held-out density


def test_gaussian_predictive_elpd_is_exact():
    from scipy.stats import multivariate_normal

    rng = np.random.default_rng(4)
    mean = rng.normal(size=(3, 2, 2))
    a = rng.normal(size=(3, 2, 2, 2))
    cov = a @ np.swapaxes(a, -1, -2) + 0.1 * np.eye(2)
    labels = mean + rng.normal(size=mean.shape)
    labels[1, 1] = np.nan
    sigma = np.array([0.5, 2.0])  # per axis
    out = gaussian_predictive_elpd(mean, cov, labels, sigma)
    expected = [
        multivariate_normal(mean[t, k], cov[t, k] + np.diag(sigma**2)).logpdf(labels[t, k])
        for t in range(3)
        for k in range(2)
        if (t, k) != (1, 1)
    ]
    assert out["n"] == 5
    np.testing.assert_allclose(out["pointwise"], expected)
    # the Monte Carlo estimate converges to it
    idata = inference_data_from_draws(
        marginal_draws(mean, cov, 20000, 0, 1), ["a", "b"], [0, 1, 2], labels, sigma
    )
    assert held_out_elpd(idata)["elpd"] == pytest.approx(out["elpd"], abs=0.1)


# --------------------------------------------------------------------------- calibration


def _gaussian_case(scale: float, n: int = 4000, seed: int = 0):
    rng = np.random.default_rng(seed)
    mean = rng.normal(0, 10, (n, 2, 2))
    std = rng.uniform(0.5, 3.0, (n, 2, 2))
    truth = mean + rng.normal(size=mean.shape) * std * scale
    truth[0, 0] = np.nan
    return mean, std, truth


def test_coverage_curve_calibrated():
    mean, std, truth = _gaussian_case(1.0)
    levels, coverage, n = coverage_curve((mean, std), truth)
    np.testing.assert_allclose(levels, DEFAULT_CURVE_LEVELS)
    assert n == truth.size - 2
    se = np.sqrt(levels * (1 - levels) / n)
    assert np.all(np.abs(coverage - levels) < 4 * se)
    assert calibration_note(levels, coverage, n).startswith("calibrated")


def test_coverage_curve_flags_over_and_under_confidence():
    mean, std, truth = _gaussian_case(2.0)  # truth spread twice the posterior's: intervals too narrow
    levels, coverage, n = coverage_curve((mean, std), truth)
    assert np.all(coverage < levels)
    assert calibration_note(levels, coverage, n).startswith("over-confident")
    mean, std, truth = _gaussian_case(0.5)
    levels, coverage, n = coverage_curve((mean, std), truth, levels=[0.5, 0.9])
    assert calibration_note(levels, coverage, n).startswith("under-confident")
    assert calibration_note(levels, np.full(2, np.nan), 0).startswith("no truth")


def test_coverage_curve_takes_a_posterior():
    mean, std, truth = _gaussian_case(1.0, n=200)
    cov = np.zeros((*mean.shape, 2))
    cov[..., 0, 0], cov[..., 1, 1] = std[..., 0] ** 2, std[..., 1] ** 2
    posterior = KeypointPosterior(mean, cov, np.ones(mean.shape[:-1]), np.arange(len(mean)))
    a = coverage_curve(posterior, truth, [0.5, 0.9])
    b = coverage_curve((mean, std), truth, [0.5, 0.9])
    np.testing.assert_allclose(a[1], b[1])
    with pytest.raises(ValueError, match="strictly between"):
        coverage_curve((mean, std), truth, [0.5, 1.0])
