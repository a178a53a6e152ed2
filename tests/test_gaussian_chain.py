"""Block-tridiagonal Gaussian chains against dense answers (float64, small problems)."""

from __future__ import annotations

import math
import time

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
from torch.overrides import TorchFunctionMode

import dgp_pyro.ops.chain_factor as chain_factor
from dgp_pyro.ops.block_tridiagonal import BlockTridiagonalGaussian
from dgp_pyro.ops.cyclic_reduction import _keypoint_blocks
from dgp_pyro.ops.gaussian_chain import chain_entropy, chain_log_prob, chain_posterior, chain_sample
from dgp_pyro.ops.keypoint_chain import build_chain_precision, smooth_keypoints

DTYPE = torch.float64


# -- helpers ------------------------------------------------------------------------------------


def random_chain(T, D, batch=(), diagonal=False, seed=0):
    """A random SPD block-tridiagonal precision (diagonally dominant by construction) and h."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(*batch, T, D, D, generator=g, dtype=DTYPE)
    if diagonal:
        B = 2.0 * torch.randn(*batch, T - 1, D, generator=g, dtype=DTYPE)
        norm = B.abs().amax() if T > 1 else 0.0
    else:
        B = torch.randn(*batch, T - 1, D, D, generator=g, dtype=DTYPE)
        norm = torch.linalg.matrix_norm(B, 2).amax() if T > 1 else 0.0
    A = X @ X.mT / D + (2.0 * norm + 0.3) * torch.eye(D, dtype=DTYPE)
    h = torch.randn(*batch, T, D, generator=g, dtype=DTYPE)
    return A, B, h


def dense_precision(A, B, diagonal=False):
    T, D = A.shape[-3], A.shape[-1]
    Lam = torch.zeros(*A.shape[:-3], T * D, T * D, dtype=A.dtype)
    for t in range(T):  # a loop over frames is fine in the dense reference
        Lam[..., t * D : (t + 1) * D, t * D : (t + 1) * D] = A[..., t, :, :]
    for t in range(T - 1):
        Bt = torch.diag_embed(B[..., t, :]) if diagonal else B[..., t, :, :]
        Lam[..., t * D : (t + 1) * D, (t + 1) * D : (t + 2) * D] = Bt
        Lam[..., (t + 1) * D : (t + 2) * D, t * D : (t + 1) * D] = Bt.mT
    return Lam


def dense_answer(A, B, h, diagonal=False):
    T, D = A.shape[-3], A.shape[-1]
    Lam = dense_precision(A, B, diagonal)
    Sigma = torch.linalg.inv(Lam)
    mean = (Sigma @ h.reshape(*h.shape[:-2], T * D, 1)).reshape(h.shape)
    cov = torch.stack([Sigma[..., t * D : (t + 1) * D, t * D : (t + 1) * D] for t in range(T)], dim=-3)
    cross = torch.stack(
        [Sigma[..., t * D : (t + 1) * D, (t + 1) * D : (t + 2) * D] for t in range(T - 1)]
        or [Sigma.new_zeros(*Sigma.shape[:-2], D, D)],
        dim=-3,
    )[..., : T - 1, :, :]
    return Lam, Sigma, mean, cov, cross, torch.linalg.slogdet(Lam)[1]


def keypoint_problem(T, J, d, seed=0, missing=0.2):
    g = torch.Generator().manual_seed(seed)
    obs = 10.0 * torch.randn(T, J, d, generator=g, dtype=DTYPE)
    X = torch.randn(T, J, d, d, generator=g, dtype=DTYPE)
    precision = X @ X.mT / d + 0.05 * torch.eye(d, dtype=DTYPE)
    mask = torch.rand(T, J, generator=g) > missing
    temporal = 0.5 + torch.rand(J, generator=g, dtype=DTYPE)
    edges = [(j, j + 1) for j in range(J - 1)] + ([(0, J - 1)] if J > 2 else [])
    skeletal = 0.1 + torch.rand(len(edges), generator=g, dtype=DTYPE)
    return obs, precision, mask, temporal, edges, skeletal


SIZES = [(T, D) for T in (1, 2, 3, 4, 5, 7, 8, 13, 16, 17) for D in (1, 4, 6)]


# -- the chain routines against the dense inverse ------------------------------------------------


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize(("T", "D"), SIZES)
def test_posterior_matches_dense_inverse(T, D, diagonal):
    A, B, h = random_chain(T, D, batch=(2,), diagonal=diagonal, seed=T * 10 + D)
    _, _, mean, cov, cross, log_det = dense_answer(A, B, h, diagonal)
    out = chain_posterior(A, B, h)
    torch.testing.assert_close(out.mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.cov, cov, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.cross_cov, cross, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.log_det, log_det, rtol=1e-10, atol=1e-9)
    assert out.cross_cov.shape == (2, T - 1, D, D)


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize(
    ("T", "chunk", "group"), [(2, 2, 2), (9, 4, 4), (30, 4, 8), (33, 8, 16), (47, 2, 64)]
)
def test_chunked_factorisation_matches_dense(T, chunk, group, diagonal):
    D = 4
    A, B, h = random_chain(T, D, batch=(2,), diagonal=diagonal, seed=T)
    _, Sigma, mean, cov, cross, log_det = dense_answer(A, B, h, diagonal)
    factor = chain_factor._ChunkedChainFactor(
        chain_factor._TensorSource(A, B, h, diagonal), keep_root=True, chunk=chunk, group=group
    )
    S, X = factor.marginals(cross=True)
    torch.testing.assert_close(factor.mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(S, cov, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(X, cross, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(factor.log_det, log_det, rtol=1e-10, atol=1e-9)
    blocks, _ = factor.marginals(cross=False, block=2)
    torch.testing.assert_close(blocks, _keypoint_blocks(cov, 2, 2), rtol=1e-9, atol=1e-10)
    # the noise-to-sample map, read off with unit noise vectors, is a square root of Sigma
    root = _noise_map(factor, T, D, batch=2)
    torch.testing.assert_close(root @ root.mT, Sigma, rtol=1e-9, atol=1e-10)


def _noise_map(factor, T, D, batch):
    eye = torch.eye(T * D, dtype=DTYPE).reshape(T * D, 1, T, D).expand(T * D, batch, T, D)
    columns = factor.deviation(eye)  # (T D, batch, T, D): column i is L^{-T} e_i
    return columns.reshape(T * D, batch, T * D).permute(1, 2, 0)


def test_public_routines_take_the_chunked_path(monkeypatch):
    monkeypatch.setattr(chain_factor, "CHUNKED_ABOVE", 8)
    monkeypatch.setattr(chain_factor, "CHUNK_FRAMES", 4)
    monkeypatch.setattr(chain_factor, "GROUP_FRAMES", 8)
    T, D = 29, 3
    A, B, h = random_chain(T, D, diagonal=True, seed=3)
    assert isinstance(chain_factor._factorize(A, B, h), chain_factor._ChunkedChainFactor)
    Lam, _, mean, cov, cross, log_det = dense_answer(A, B, h, diagonal=True)
    out = chain_posterior(A, B, h)
    torch.testing.assert_close(out.mean, mean, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.cov, cov, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out.cross_cov, cross, rtol=1e-9, atol=1e-10)
    y = torch.randn(5, T, D, dtype=DTYPE)
    reference = torch.distributions.MultivariateNormal(mean.reshape(-1), precision_matrix=Lam)
    torch.testing.assert_close(
        chain_log_prob(A, B, h, y), reference.log_prob(y.reshape(5, -1)), rtol=1e-10, atol=1e-8
    )
    draws = chain_sample(A, B, h, num_samples=3, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (3, T, D) and torch.isfinite(draws).all()


@pytest.mark.parametrize(("T", "D"), [(1, 3), (2, 1), (5, 4), (8, 6), (11, 2)])
def test_log_prob_and_entropy_match_multivariate_normal(T, D):
    A, B, h = random_chain(T, D, batch=(3,), seed=T + D)
    Lam, _, mean, _, _, _ = dense_answer(A, B, h)
    reference = torch.distributions.MultivariateNormal(mean.reshape(3, T * D), precision_matrix=Lam)
    y = torch.randn(4, 3, T, D, generator=torch.Generator().manual_seed(1), dtype=DTYPE)
    torch.testing.assert_close(
        chain_log_prob(A, B, h, y), reference.log_prob(y.reshape(4, 3, T * D)), rtol=1e-10, atol=1e-8
    )
    torch.testing.assert_close(chain_entropy(A, B, h), reference.entropy(), rtol=1e-10, atol=1e-8)
    # a value without the batch dimension broadcasts against it
    torch.testing.assert_close(
        chain_log_prob(A, B, h, y[:, 0:1]),
        reference.log_prob(y[:, 0:1].reshape(4, 1, T * D)),
        rtol=1e-10,
        atol=1e-8,
    )


def test_diagonal_and_dense_off_diagonal_blocks_agree():
    A, B_diag, h = random_chain(9, 4, diagonal=True, seed=5)
    first = chain_posterior(A, B_diag, h)
    second = chain_posterior(A, torch.diag_embed(B_diag), h)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_not_positive_definite_is_an_error():
    A, B, h = random_chain(4, 2, seed=0)
    with pytest.raises(ValueError, match="positive definite"):
        chain_posterior(A, 100.0 * torch.ones_like(B), h)
    with pytest.raises(ValueError, match="B must be"):
        chain_posterior(A, B[:-1], h)


# -- sampling -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("T", "D", "diagonal"), [(1, 2, False), (4, 3, False), (7, 2, True), (16, 1, False)])
def test_noise_map_is_an_exact_square_root(T, D, diagonal):
    A, B, h = random_chain(T, D, batch=(2,), diagonal=diagonal, seed=2 * T + D)
    _, Sigma, *_ = dense_answer(A, B, h, diagonal)
    factor = chain_factor._factorize(A, B, h)
    root = _noise_map(factor, T, D, batch=2)
    torch.testing.assert_close(root @ root.mT, Sigma, rtol=1e-9, atol=1e-11)


def test_sample_moments_match_dense_within_monte_carlo_error():
    T, D, S = 5, 3, 40_000
    A, B, h = random_chain(T, D, seed=11)
    Lam, Sigma, mean, *_ = dense_answer(A, B, h)
    y = chain_sample(A, B, h, num_samples=S, generator=torch.Generator().manual_seed(0)).reshape(S, T * D)
    mu, var = mean.reshape(-1), Sigma.diagonal()
    # means: each coordinate within 5 standard errors
    z_mean = (y.mean(0) - mu) / (var / S).sqrt()
    assert z_mean.abs().max() < 5.0
    # covariances: each entry within 5 standard errors, Var(x_i x_j) = S_ii S_jj + S_ij^2
    centred = y - mu
    emp = centred.T @ centred / S
    se = ((var[:, None] * var[None, :] + Sigma**2) / S).sqrt()
    assert ((emp - Sigma) / se).abs().max() < 5.0
    # chi-square: (y - mu)^T Lambda (y - mu) ~ chi2(TD), mean TD and variance 2 TD
    q = ((centred @ Lam) * centred).sum(-1)
    k = T * D
    assert abs(q.mean().item() - k) < 5.0 * math.sqrt(2.0 * k / S)
    assert abs(q.var().item() - 2.0 * k) < 5.0 * math.sqrt(8.0 * k * (k + 6.0) / S) + 0.05 * k


def test_sample_with_a_wrong_covariance_would_fail():
    """The chi-square statistic notices a covariance that is off by 10 %."""
    T, D, S = 5, 3, 40_000
    A, B, h = random_chain(T, D, seed=11)
    Lam, Sigma, mean, *_ = dense_answer(A, B, h)
    noise = torch.randn(S, T * D, generator=torch.Generator().manual_seed(0), dtype=DTYPE)
    centred = noise @ torch.linalg.cholesky(1.1 * Sigma).mT  # draws with a 10 % too large covariance
    q = ((centred @ Lam) * centred).sum(-1)
    assert abs(q.mean().item() - T * D) > 5.0 * math.sqrt(2.0 * T * D / S)


def test_reparameterised_gradients():
    T, D = 3, 2
    A0, B0, h0 = random_chain(T, D, seed=7)
    noise = torch.randn(2, T, D, generator=torch.Generator().manual_seed(2), dtype=DTYPE)

    def draw(X, B, h):
        return chain_sample(0.5 * (X + X.mT), B, h, noise=noise)

    inputs = tuple(t.clone().requires_grad_() for t in (A0, B0, h0))
    assert torch.autograd.gradcheck(draw, inputs, eps=1e-6, atol=1e-6, fast_mode=True)

    # With the unit vectors as noise, the draws' squared deviations add up to tr(Sigma) and the
    # zero-noise draw is the mean: their gradients equal those of the dense answer.
    A, B, h = (t.clone().requires_grad_() for t in (A0, B0, h0))
    eye = torch.eye(T * D, dtype=DTYPE).reshape(T * D, T, D)
    weights = torch.randn(T, D, generator=torch.Generator().manual_seed(3), dtype=DTYPE)
    mean_draw = chain_sample(A, B, h, noise=torch.zeros(1, T, D, dtype=DTYPE))[0]
    deviations = chain_sample(A, B, h, noise=eye) - mean_draw
    loss = deviations.pow(2).sum() + (weights * mean_draw).sum()
    grads = torch.autograd.grad(loss, (A, B, h))

    A2, B2, h2 = (t.clone().requires_grad_() for t in (A0, B0, h0))
    Sigma = torch.linalg.inv(dense_precision(A2, B2))
    mean = (Sigma @ h2.reshape(-1, 1)).reshape(T, D)
    dense_loss = Sigma.diagonal().sum() + (weights * mean).sum()
    dense_grads = torch.autograd.grad(dense_loss, (A2, B2, h2))
    for a, b in zip(_symmetrise_first(grads), _symmetrise_first(dense_grads), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def _symmetrise_first(grads):
    """Only the symmetric part of a gradient wrt the symmetric blocks A is defined."""
    return (0.5 * (grads[0] + grads[0].mT), *grads[1:])


def test_log_prob_gradient_matches_dense():
    T, D = 5, 3
    A0, B0, h0 = random_chain(T, D, seed=9)
    y = torch.randn(2, T, D, dtype=DTYPE)
    A, B, h = (t.clone().requires_grad_() for t in (A0, B0, h0))
    grads = torch.autograd.grad(chain_log_prob(A, B, h, y).sum(), (A, B, h))
    A2, B2, h2 = (t.clone().requires_grad_() for t in (A0, B0, h0))
    Lam = dense_precision(A2, B2)
    mean = torch.linalg.solve(Lam, h2.reshape(-1))
    reference = torch.distributions.MultivariateNormal(mean, precision_matrix=Lam).log_prob(y.reshape(2, -1))
    dense_grads = torch.autograd.grad(reference.sum(), (A2, B2, h2))
    for a, b in zip(_symmetrise_first(grads), _symmetrise_first(dense_grads), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


# -- the Pyro distribution ----------------------------------------------------------------------


def test_distribution_shapes_moments_and_densities():
    T, J, d = 6, 3, 2
    obs, precision, mask, temporal, edges, skeletal = keypoint_problem(T, J, d, seed=1)
    A, B, h = build_chain_precision(obs, precision, temporal, edges, skeletal, obs_mask=mask)
    q = BlockTridiagonalGaussian(A, B, h, keypoint_dim=d)
    Lam, Sigma, mean, cov, cross, _ = dense_answer(A, B, h)
    assert q.has_rsample and q.event_shape == (T, J, d) and q.batch_shape == ()
    assert q.support.event_dim == 3
    torch.testing.assert_close(q.mean, mean.reshape(T, J, d), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(
        q.variance, cov.diagonal(dim1=-2, dim2=-1).reshape(T, J, d), rtol=1e-9, atol=1e-10
    )
    torch.testing.assert_close(q.marginal_covariance, cov, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(q.cross_covariance, cross, rtol=1e-9, atol=1e-10)
    reference = torch.distributions.MultivariateNormal(mean.reshape(-1), precision_matrix=Lam)
    y = q.rsample((7,))
    assert y.shape == (7, T, J, d)
    torch.testing.assert_close(q.log_prob(y), reference.log_prob(y.reshape(7, -1)), rtol=1e-10, atol=1e-8)
    torch.testing.assert_close(q.entropy(), reference.entropy(), rtol=1e-10, atol=1e-8)

    expanded = q.expand([4])
    assert expanded.batch_shape == (4,) and expanded._factor is q._factor
    y = expanded.rsample((2,))
    assert y.shape == (2, 4, T, J, d) and expanded.log_prob(y).shape == (2, 4)
    torch.testing.assert_close(
        expanded.log_prob(y), reference.log_prob(y.reshape(2, 4, -1)), rtol=1e-10, atol=1e-8
    )

    other = BlockTridiagonalGaussian(A, B, 2.0 * h, keypoint_dim=d)
    stacked = BlockTridiagonalGaussian.stack([q, other])
    assert stacked.batch_shape == (2,)
    value = torch.randn(3, 2, T, J, d, dtype=DTYPE)
    torch.testing.assert_close(
        stacked.log_prob(value), torch.stack([q.log_prob(value[:, 0]), other.log_prob(value[:, 1])], dim=-1)
    )
    flat = BlockTridiagonalGaussian(A, B, h)
    assert flat.event_shape == (T, J * d)


def test_distribution_in_pyro_svi():
    """In a Pyro model and guide: at the exact posterior every ELBO draw equals the log evidence."""
    pyro.clear_param_store()
    T, J, d, W = 5, 2, 2, 3
    obs, precision, mask, temporal, edges, skeletal = keypoint_problem(T, J, d, seed=4, missing=0.0)
    zeros_mean, zeros_precision = torch.zeros(T, J, d, dtype=DTYPE), torch.zeros(T, J, d, d, dtype=DTYPE)
    A_prior, B_prior, h_prior = build_chain_precision(zeros_mean, zeros_precision, temporal, edges, skeletal)
    prior = BlockTridiagonalGaussian(A_prior, B_prior, h_prior, keypoint_dim=d)
    data = obs.expand(W, T, J, d)

    def model():
        with pyro.plate("windows", W):
            y = pyro.sample("keypoints", prior.expand([W]))
            pyro.sample("obs", dist.Normal(y, 1.0).to_event(3), obs=data)

    # the exact posterior: precision of the prior plus identity (unit noise), information = obs
    A, B, _ = build_chain_precision(
        obs, torch.eye(d, dtype=DTYPE).expand(T, J, d, d), temporal, edges, skeletal
    )

    def guide():
        h = pyro.param("h", torch.zeros(W, T, J * d, dtype=DTYPE))
        with pyro.plate("windows", W):
            pyro.sample("keypoints", BlockTridiagonalGaussian(A, B, h, keypoint_dim=d))

    prior_cov = torch.linalg.inv(dense_precision(A_prior, B_prior))
    evidence = torch.distributions.MultivariateNormal(
        torch.zeros(T * J * d, dtype=DTYPE), prior_cov + torch.eye(T * J * d, dtype=DTYPE)
    ).log_prob(obs.reshape(-1))
    elbo = Trace_ELBO()
    pyro.param("h", obs.reshape(T, J * d).expand(W, T, J * d).clone())
    for seed in range(3):
        pyro.set_rng_seed(seed)
        assert elbo.loss(model, guide) == pytest.approx(-W * evidence.item(), rel=1e-9)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi = SVI(model, guide, Adam({"lr": 0.5}), Trace_ELBO(num_particles=8, vectorize_particles=True))
    losses = [svi.step() for _ in range(25)]
    assert losses[-1] < losses[0] - 0.5 * (losses[0] + W * evidence.item())


# -- the Deep Graph Pose chain ------------------------------------------------------------------


def test_build_chain_precision_matches_the_potentials():
    T, J, d = 7, 4, 2
    obs, precision, mask, temporal, edges, skeletal = keypoint_problem(T, J, d, seed=2)
    obs = torch.where(mask[..., None], obs, torch.full_like(obs, float("nan")))  # NaN marks missing too
    ridge = 1e-3
    step_weight = temporal + 0.3 * torch.rand(
        T - 1, J, generator=torch.Generator().manual_seed(0), dtype=DTYPE
    )
    for weights in (temporal, step_weight):
        A, B, h = build_chain_precision(obs, precision, weights, edges, skeletal, ridge=ridge)
        A2, B_diag, h2 = build_chain_precision(
            obs, precision, weights, edges, skeletal, ridge=ridge, diagonal_offdiag=True
        )
        torch.testing.assert_close(A, A2)
        torch.testing.assert_close(B, torch.diag_embed(B_diag))
        torch.testing.assert_close(h, h2)
        Lam = dense_precision(A, B)
        w = weights.expand(T - 1, J)
        m = torch.nan_to_num(obs)
        P = precision * mask[..., None, None]
        constant = -0.5 * torch.einsum("tja,tjab,tjb->", m, P, m)
        for seed in range(3):
            y = 5.0 * torch.randn(T, J, d, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)
            flat = y.reshape(-1)
            quadratic = -0.5 * flat @ Lam @ flat + h.reshape(-1) @ flat
            temporal_energy = 0.5 * (w[..., None] * (y[1:] - y[:-1]) ** 2).sum()
            skeletal_energy = sum(
                0.5 * skeletal[k] * ((y[:, i] - y[:, j]) ** 2).sum() for k, (i, j) in enumerate(edges)
            )
            r = y - m
            observation_energy = 0.5 * torch.einsum("tja,tjab,tjb->", r, P, r)
            ridge_energy = 0.5 * ridge * (y**2).sum()
            log_potential = -(temporal_energy + skeletal_energy + observation_energy + ridge_energy)
            torch.testing.assert_close(quadratic + constant, log_potential, rtol=1e-12, atol=1e-8)


def test_build_chain_precision_checks_its_inputs():
    obs, precision, mask, temporal, edges, skeletal = keypoint_problem(4, 3, 2)
    with pytest.raises(ValueError, match="non-negative"):
        build_chain_precision(obs, precision, -temporal, edges, skeletal)
    with pytest.raises(ValueError, match="skeleton edges"):
        build_chain_precision(obs, precision, temporal, [(0, 5)], skeletal[:1])
    with pytest.raises(ValueError, match="skeletal_weight"):
        build_chain_precision(obs, precision, temporal, edges, skeletal[:1])


def test_smooth_keypoints_matches_the_dense_posterior(monkeypatch):
    T, J, d = 40, 3, 2
    obs, precision, mask, temporal, edges, skeletal = keypoint_problem(T, J, d, seed=5)
    A, B, h = build_chain_precision(obs, precision, temporal, edges, skeletal, obs_mask=mask)
    _, _, mean, cov, _, log_det = dense_answer(A, B, h)
    blocks = _keypoint_blocks(cov, J, d)
    results = [smooth_keypoints(obs, precision, temporal, edges, skeletal, obs_mask=mask)]
    monkeypatch.setattr(chain_factor, "CHUNKED_ABOVE", 16)
    monkeypatch.setattr(chain_factor, "CHUNK_FRAMES", 4)
    monkeypatch.setattr(chain_factor, "GROUP_FRAMES", 16)
    results.append(smooth_keypoints(obs, precision, temporal, edges, skeletal, obs_mask=mask))
    for out in results:
        torch.testing.assert_close(out["mean"], mean.reshape(T, J, d), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(out["cov"], blocks, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(
            out["std"], blocks.diagonal(dim1=-2, dim2=-1).sqrt(), rtol=1e-9, atol=1e-10
        )
        torch.testing.assert_close(out["log_det"], log_det, rtol=1e-10, atol=1e-8)
        z = 1.6448536269514722  # the 95 % quantile of the standard normal
        torch.testing.assert_close(out["upper"][0.9], out["mean"] + z * out["std"])
        torch.testing.assert_close(out["lower"][0.9], out["mean"] - z * out["std"])
        assert set(out["lower"]) == {0.5, 0.9, 0.95}


@pytest.mark.parametrize(("skeleton", "axis_aligned"), [(False, False), (True, True), (False, True)])
@pytest.mark.parametrize("chunked", [False, True])
def test_smooth_keypoints_decoupled_chains_match_dense(skeleton, axis_aligned, chunked, monkeypatch):
    """Without a skeleton, or with axis-aligned precisions, the chain splits into smaller exact ones."""
    if chunked:
        monkeypatch.setattr(chain_factor, "CHUNKED_ABOVE", 8)
        monkeypatch.setattr(chain_factor, "CHUNK_FRAMES", 4)
        monkeypatch.setattr(chain_factor, "GROUP_FRAMES", 8)
    T, J, d = 23, 3, 2
    obs, precision, mask, temporal, edges, skeletal = keypoint_problem(T, J, d, seed=8)
    if axis_aligned:
        precision = torch.diag_embed(precision.diagonal(dim1=-2, dim2=-1))
    if not skeleton:
        edges, skeletal = [], torch.zeros(0, dtype=DTYPE)
    A, B, h = build_chain_precision(obs, precision, temporal, edges, skeletal, obs_mask=mask)
    _, _, mean, cov, _, log_det = dense_answer(A, B, h)
    out = smooth_keypoints(obs, precision, temporal, edges, skeletal, obs_mask=mask)
    torch.testing.assert_close(out["mean"], mean.reshape(T, J, d), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out["cov"], _keypoint_blocks(cov, J, d), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(out["log_det"], log_det, rtol=1e-10, atol=1e-8)


def test_smooth_keypoints_gradients_flow_through_the_chunked_path(monkeypatch):
    T, J, d = 37, 2, 2
    obs, precision, mask, temporal, edges, skeletal = keypoint_problem(T, J, d, seed=6)
    grads = []
    for chunked in (False, True):
        if chunked:
            monkeypatch.setattr(chain_factor, "CHUNKED_ABOVE", 8)
            monkeypatch.setattr(chain_factor, "CHUNK_FRAMES", 4)
            monkeypatch.setattr(chain_factor, "GROUP_FRAMES", 8)
        o, w = obs.clone().requires_grad_(), temporal.clone().requires_grad_()
        out = smooth_keypoints(o, precision, w, edges, skeletal, obs_mask=mask)
        loss = out["mean"].pow(2).sum() + out["std"].sum() + out["log_det"]
        grads.append(torch.autograd.grad(loss, (o, w)))
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_smooth_keypoints_on_a_random_walk_beats_raw_and_is_calibrated():
    """Well-specified simulation: random-walk truth, Gaussian noise of known per-frame precision."""
    T, J, d = 4000, 3, 2
    g = torch.Generator().manual_seed(0)
    step_sd = torch.tensor([1.0, 2.0, 0.5], dtype=DTYPE)
    truth = torch.cumsum(step_sd[:, None] * torch.randn(T, J, d, generator=g, dtype=DTYPE), dim=0)
    X = torch.randn(T, J, d, d, generator=g, dtype=DTYPE)
    precision = X @ X.mT / d + 0.02 * torch.eye(d, dtype=DTYPE)  # noise sd from about 0.5 to 7 px
    noise = torch.linalg.solve_triangular(
        torch.linalg.cholesky(precision).mT, torch.randn(T, J, d, 1, generator=g, dtype=DTYPE), upper=True
    )[..., 0]
    obs = truth + noise
    mask = torch.rand(T, J, generator=g) > 0.1
    out = smooth_keypoints(obs, precision, 1.0 / step_sd**2, [], torch.zeros(0, dtype=DTYPE), obs_mask=mask)
    rmse_raw = (obs - truth)[mask].pow(2).sum(-1).mean().sqrt()
    rmse_smoothed = (out["mean"] - truth)[mask].pow(2).sum(-1).mean().sqrt()
    assert rmse_smoothed < 0.8 * rmse_raw
    for level in (0.5, 0.9, 0.95):
        inside = (truth >= out["lower"][level]) & (truth <= out["upper"][level])
        assert abs(inside.double().mean().item() - level) < 0.03, level


# -- no loop over frames ------------------------------------------------------------------------


class _CountCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def _smooth(T, seed=0, workers=None):
    J, d = 3, 2
    obs, precision, mask, temporal, edges, skeletal = keypoint_problem(T, J, d, seed=seed)
    return lambda: smooth_keypoints(obs, precision, temporal, edges, skeletal, obs_mask=mask, workers=workers)


def test_no_python_loop_over_frames():
    counts = []
    for T in (10_000, 20_000):
        with _CountCalls() as counter:  # counts the torch calls of this thread: one worker
            _smooth(T, workers=1)()
        counts.append(counter.calls)
    # a loop over frames would make at least one torch call per frame
    assert counts[1] - counts[0] < 0.5 * 10_000, counts
    timings = []
    for T in (2_000, 20_000):
        run = _smooth(T)
        run()
        best = math.inf
        for _ in range(3):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        timings.append(best)
    assert timings[1] / timings[0] < 20.0, timings


@pytest.mark.parametrize("axis_aligned", [False, True])
def test_skeleton_offsets_and_axis_weights_match_the_dense_energy(axis_aligned):
    """A learned skeleton (mean offset, weight per axis) against the minimiser and Hessian of its energy."""
    T, J, d = 6, 4, 2
    obs, precision, mask, temporal, edges, _ = keypoint_problem(T, J, d, seed=11)
    if axis_aligned:  # the smoother splits the coordinates into chains of their own
        precision = torch.diag_embed(precision.diagonal(dim1=-2, dim2=-1))
    g = torch.Generator().manual_seed(3)
    weight = 0.05 + torch.rand(len(edges), d, generator=g, dtype=DTYPE)
    weight[0, 1] = 0.0  # an axis the edge does not hold
    offset = 20.0 * torch.randn(len(edges), d, generator=g, dtype=DTYPE)
    ridge = 1e-6
    observed = mask[..., None].to(DTYPE)
    filled = torch.where(mask[..., None], obs, torch.zeros_like(obs))

    def energy(flat):
        y = flat.reshape(T, J, d)
        residual = (y - filled)[..., None]
        e = 0.5 * (observed[..., None] * residual.mT @ precision @ residual).sum()
        e = e + 0.5 * (temporal[:, None] * (y[1:] - y[:-1]) ** 2).sum()
        for k, (i, j) in enumerate(edges):
            e = e + 0.5 * (weight[k] * (y[:, i] - y[:, j] - offset[k]) ** 2).sum()
        return e + 0.5 * ridge * (flat**2).sum()

    zero = torch.zeros(T * J * d, dtype=DTYPE)
    hessian = torch.autograd.functional.hessian(energy, zero)
    gradient = torch.autograd.functional.jacobian(energy, zero)
    mean = torch.linalg.solve(hessian, -gradient).reshape(T, J, d)
    D = J * d
    full = torch.linalg.inv(hessian)
    cov = torch.stack([full[t * D : (t + 1) * D, t * D : (t + 1) * D] for t in range(T)])
    out = smooth_keypoints(obs, precision, temporal, edges, weight, offset, obs_mask=mask, ridge=ridge)
    torch.testing.assert_close(out["mean"], mean, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(out["cov"], _keypoint_blocks(cov, J, d), rtol=1e-8, atol=1e-10)
    A, B, h = build_chain_precision(
        obs, precision, temporal, edges, weight, offset, ridge=ridge, obs_mask=mask
    )
    torch.testing.assert_close(dense_answer(A, B, h)[2].reshape(T, J, d), mean, rtol=1e-8, atol=1e-8)
    with pytest.raises(ValueError, match="must be"):
        smooth_keypoints(obs, precision, temporal, edges, weight[:, 0], offset, obs_mask=mask)
