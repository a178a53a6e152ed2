r"""Keypoint posteriors as ArviZ ``InferenceData``, with a pointwise log-likelihood on held-out labels.

What is built (:func:`posterior_inference_data` for a run, :func:`inference_data_from_draws` from
plain arrays):

``posterior``
    ``keypoints (chain, draw, frame, keypoint, coord)``: posterior draws of the keypoint
    positions, in the frames' (images') own pixels. Coordinates: ``keypoint`` = the network's
    keypoint names, ``frame`` = the held-out image keys (or video frame numbers), ``coord`` =
    ``["x", "y"]``.
``log_likelihood``
    ``labels (chain, draw, label)``: for every held-out labeled keypoint (a label whose x and
    y are both present; a flat ``label`` dim of size ``n_labels``) and every draw,
    :math:`\log N(\ell \mid y^{(s)}, \sigma^2 I)`, the labeling-noise model of Deep Graph Pose
    with :math:`\sigma` = ``label_sigma`` (``RunConfig.model_options``, default 1, in *training*
    pixels), converted to frame pixels per axis: :math:`\sigma_x = \sigma W_0 / W`,
    :math:`\sigma_y = \sigma H_0 / H` (so runs trained at different sizes are scored as
    densities of the same data in the same units). Non-dimension coordinates ``label_frame``
    and ``label_keypoint`` name each label.
``observed_data``
    ``labels (label, coord)``: those labels, frame pixels.

So ``az.summary``, ``az.hdi``, ``az.loo`` and ``az.compare`` work on it as is.

**Multi-view projects.** ``frame`` stays one entry per held-out image; a non-dimension
coordinate ``view`` names the view: along ``frame`` in the folders layout (one image per
view), along ``keypoint`` in the suffix layout (``<bodypart>_<view>`` channels in one image).
A dense ``view`` *dimension* is not built because held-out images need not cover every view
of a frame; select a view with ``idata.posterior.where(idata.posterior.view == "top", drop=True)``.

**The draws** are drawn from each keypoint's Gaussian *marginal* posterior
(:class:`~dgp_pyro.posterior.marginals.KeypointPosterior`: the exact marginals of the fitted
structured guide, :math:`N(m_{tk}, \Sigma_{tk})`). Marginal draws ignore the correlation
between frames (temporal potential) and between keypoints (skeletal potential): every
per-keypoint summary, interval, and the pointwise log-likelihood are exact in distribution,
but a function of several keypoints at once (a limb length) or of several frames (a speed)
computed from these draws is not. Draws are independent, so ``chains`` is only a split of
them (default two, which keeps ``az.summary`` from warning about one chain); ``r_hat`` and
ESS are then trivially fine and say nothing about the variational fit.

**Reading the LOO numbers.** The draws are not exact posterior draws (variational), and
they are draws of :math:`p(y \mid \text{image})`, *not* conditioned on the held-out labels.
PSIS-LOO (``az.loo``) assumes each observation was in the posterior and importance-weights
it out again, so here it under-estimates the predictive density, and its Pareto
:math:`\hat k` grows with the posterior spread :math:`s` over the label noise (its tail index
is :math:`(s / \sigma)^2` asymptotically): report ``pareto_k`` beside ``elpd_loo``
(:func:`loo_summary` does). Because the labels really were
held out, the direct estimate :math:`\sum_i \log \frac1S \sum_s p(\ell_i \mid y^{(s)})`
(:func:`held_out_elpd`, ArviZ's ``lppd``) is the held-out expected log predictive density
itself, with no importance sampling; prefer it for ranking when :math:`\hat k > 0.7`. For
Gaussian marginals it is even available in closed form, :math:`\sum_i \log N(\ell_i \mid m_i,
\Sigma_i + \sigma^2 I)` (:func:`gaussian_predictive_elpd`), exact where few draws are not.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
from jaxtyping import Float
from scipy.special import logsumexp

from dgp_pyro.errors import DGPError
from dgp_pyro.posterior.held_out import held_out_images
from dgp_pyro.posterior.marginals import DEFAULT_LEVELS, KeypointPosterior
from dgp_pyro.posterior.posterior2d import image_posteriors, video_posterior
from dgp_pyro.run.folder import Run

with warnings.catch_warnings():
    # ArviZ 0.2x warns once a day, on import, that its 1.0 refactor is coming (a FutureWarning
    # about ArviZ's own API): nothing a dgp-pyro user can act on, so it is kept off the terminal.
    warnings.filterwarnings(
        "ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning
    )
    import arviz as az

__all__ = [
    "POSTERIOR_VAR",
    "LOG_LIKELIHOOD_VAR",
    "marginal_draws",
    "label_log_density",
    "inference_data_from_draws",
    "inference_data_from_posterior",
    "posterior_inference_data",
    "held_out_elpd",
    "gaussian_predictive_elpd",
    "loo_summary",
]

#: The posterior variable: keypoint positions ``(chain, draw, frame, keypoint, coord)``.
POSTERIOR_VAR = "keypoints"
#: The log-likelihood / observed variable: one entry per held-out labeled keypoint.
LOG_LIKELIHOOD_VAR = "labels"
#: Pareto k-hat above which PSIS-LOO is unreliable (Vehtari et al. 2024).
K_HAT_LIMIT = 0.7

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- pure arrays


def marginal_draws(
    mean: Float[np.ndarray, "t k 2"],
    cov: Float[np.ndarray, "t k 2 2"],
    num_draws: int = 200,
    seed: int = 0,
    chains: int = 2,
) -> Float[np.ndarray, "c s t k 2"]:
    """Independent draws from per-frame, per-keypoint Gaussian marginals ``N(mean, cov)``.

    Cross-frame and cross-keypoint correlations are ignored (see the module doc). A keypoint
    whose mean or covariance is NaN gets NaN draws.

    Returns:
        ``(chains, num_draws, T, K, 2)`` float64.
    """
    mean = np.asarray(mean, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    if mean.ndim != 3 or mean.shape[-1] != 2 or cov.shape != (*mean.shape, 2):
        raise ValueError(f"mean {mean.shape} must be (T, K, 2) and cov {cov.shape} (T, K, 2, 2)")
    if num_draws < 1 or chains < 1:
        raise ValueError("num_draws and chains must be at least 1")
    bad = ~(np.isfinite(mean).all(-1) & np.isfinite(cov).all((-2, -1)))
    safe = np.where(bad[..., None, None], np.eye(2), 0.5 * (cov + np.swapaxes(cov, -1, -2)))
    # Symmetric square root via eigh: robust to a covariance that is PSD only up to rounding.
    values, vectors = np.linalg.eigh(safe)
    root = vectors * np.sqrt(np.clip(values, 0.0, None))[..., None, :]
    z = np.random.default_rng(seed).standard_normal((chains, num_draws, *mean.shape))
    draws = mean + np.einsum("tkij,cstkj->cstki", root, z)
    draws[:, :, bad] = np.nan
    return draws


def _label_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    present = np.isfinite(labels).all(-1)
    return np.nonzero(present)


def label_log_density(
    draws: Float[np.ndarray, "c s t k 2"],
    labels: Float[np.ndarray, "t k 2"],
    label_sigma: float | np.ndarray = 1.0,
) -> tuple[Float[np.ndarray, "c s n"], np.ndarray, np.ndarray]:
    r"""Pointwise :math:`\log N(\ell_{tk} \mid y^{(s)}_{tk}, \mathrm{diag}(\sigma_x^2, \sigma_y^2))`.

    Args:
        draws: ``(C, S, T, K, 2)`` keypoint draws.
        labels: ``(T, K, 2)``; a label with x or y NaN is left out.
        label_sigma: labeling noise in the draws' units; a scalar or anything broadcasting to
            ``(T, K, 2)`` (per image and axis, e.g. ``sigma * factor[:, None, :]``).

    Returns:
        ``(loglik (C, S, N), frame_idx (N,), keypoint_idx (N,))`` for the N present labels,
        frames first then keypoints.
    """
    labels = np.asarray(labels, dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(label_sigma, dtype=np.float64), labels.shape)
    ti, ki = _label_index(labels)
    s = sigma[ti, ki]
    if np.any(~(s > 0)):
        raise ValueError("label_sigma must be positive where there are labels")
    z = (draws[:, :, ti, ki, :] - labels[ti, ki]) / s
    loglik = -0.5 * (z**2).sum(-1) - np.log(s).sum(-1) - _LOG_2PI
    return loglik, ti, ki


def inference_data_from_draws(
    draws: Float[np.ndarray, "*c s t k 2"],
    keypoint_names: Sequence[str],
    frame_coords: Sequence[Any],
    labels: Float[np.ndarray, "t k 2"] | None = None,
    label_sigma: float | np.ndarray = 1.0,
    *,
    frame_views: Sequence[str] | None = None,
    keypoint_views: Sequence[str] | None = None,
    attrs: dict[str, Any] | None = None,
) -> az.InferenceData:
    """An ``InferenceData`` from keypoint draws and (optionally) labels: pure arrays, no run.

    Args:
        draws: ``(S, T, K, 2)`` (one chain) or ``(C, S, T, K, 2)``.
        keypoint_names: the K keypoint names.
        frame_coords: T labels of the frames (image keys or frame numbers), unique.
        labels: ``(T, K, 2)`` labels in the draws' units, NaN = missing; with them the
            ``log_likelihood`` and ``observed_data`` groups are added (see the module doc).
        label_sigma: labeling noise, in the draws' units (scalar or broadcasting to ``(T, K, 2)``).
        frame_views, keypoint_views: optional view name per frame / per keypoint, added as a
            non-dimension coordinate ``view`` (multi-view projects).
        attrs: extra attributes of every group.

    Returns:
        ``InferenceData`` with ``posterior`` and, given labels, ``log_likelihood`` and
        ``observed_data``.
    """
    draws = np.asarray(draws, dtype=np.float64)
    if draws.ndim == 4:
        draws = draws[None]
    if draws.ndim != 5 or draws.shape[-1] != 2:
        raise ValueError(f"draws {draws.shape} must be (S, T, K, 2) or (C, S, T, K, 2)")
    _, _, t, k, _ = draws.shape
    keypoint_names = [str(name) for name in keypoint_names]
    frame_coords = list(frame_coords)
    if len(keypoint_names) != k or len(frame_coords) != t:
        raise ValueError(
            f"draws have {t} frames and {k} keypoints; got {len(frame_coords)} frame coords "
            f"and {len(keypoint_names)} keypoint names"
        )
    if len(set(frame_coords)) != t:
        raise ValueError("frame coords must be unique")
    if frame_views is not None and keypoint_views is not None:
        raise ValueError("give a view per frame or per keypoint, not both")
    attrs = dict(attrs or {})
    coords: dict[str, Any] = {"frame": frame_coords, "keypoint": keypoint_names, "coord": ["x", "y"]}
    dims = {POSTERIOR_VAR: ["frame", "keypoint", "coord"]}
    log_likelihood = None
    observed = None
    if labels is not None:
        labels = np.asarray(labels, dtype=np.float64)
        if labels.shape != (t, k, 2):
            raise ValueError(f"labels {labels.shape} must be ({t}, {k}, 2) like the draws")
        loglik, ti, ki = label_log_density(draws, labels, label_sigma)
        if np.isnan(loglik).any():
            raise ValueError("a labeled keypoint has no posterior draws (NaN)")
        n = len(ti)
        coords["label"] = np.arange(n)
        dims[LOG_LIKELIHOOD_VAR] = ["label"]
        log_likelihood = {LOG_LIKELIHOOD_VAR: loglik}
        label_coords = {
            "label": np.arange(n),
            "label_frame": ("label", np.asarray(frame_coords)[ti] if n else np.asarray(frame_coords)[:0]),
            "label_keypoint": ("label", np.asarray(keypoint_names)[ki]),
            "coord": ["x", "y"],
        }
        observed = xr.Dataset(
            {LOG_LIKELIHOOD_VAR: (("label", "coord"), labels[ti, ki])}, coords=label_coords, attrs=attrs
        )
    idata = az.from_dict(
        posterior={POSTERIOR_VAR: draws},
        log_likelihood=log_likelihood,
        coords=coords,
        dims=dims,
        attrs=dict(attrs),
        posterior_attrs=dict(attrs),
        log_likelihood_attrs=dict(attrs),
    )
    if frame_views is not None:
        idata.posterior = idata.posterior.assign_coords(view=("frame", [str(v) for v in frame_views]))
    if keypoint_views is not None:
        idata.posterior = idata.posterior.assign_coords(view=("keypoint", [str(v) for v in keypoint_views]))
    if observed is not None:
        idata.log_likelihood = idata.log_likelihood.assign_coords(
            label_frame=observed.label_frame, label_keypoint=observed.label_keypoint
        )
        idata.add_groups({"observed_data": observed})
    return idata


def inference_data_from_posterior(
    posterior: KeypointPosterior,
    keypoint_names: Sequence[str],
    frame_coords: Sequence[Any],
    labels: Float[np.ndarray, "t k 2"] | None = None,
    label_sigma: float | np.ndarray = 1.0,
    num_draws: int = 200,
    seed: int = 0,
    chains: int = 2,
    **kwargs: Any,
) -> az.InferenceData:
    """:func:`inference_data_from_draws` with draws from a posterior's Gaussian marginals."""
    draws = marginal_draws(posterior.mean, posterior.cov, num_draws, seed, chains)
    return inference_data_from_draws(draws, keypoint_names, frame_coords, labels, label_sigma, **kwargs)


# --------------------------------------------------------------------------- ELPD


def held_out_elpd(idata: az.InferenceData, var_name: str = LOG_LIKELIHOOD_VAR) -> dict[str, Any]:
    r"""The direct held-out ELPD: :math:`\sum_i \log \frac1S \sum_s p(\ell_i \mid y^{(s)})`.

    Valid because the draws do not condition on the held-out labels (see the module doc).

    Returns:
        ``{"elpd": float, "se": float, "n": int, "pointwise": (N,) array}``.
    """
    ll = np.asarray(idata.log_likelihood[var_name])
    ll = ll.reshape(-1, ll.shape[-1]) if ll.ndim > 2 else ll
    n = ll.shape[-1]
    pointwise = logsumexp(ll, axis=0) - math.log(ll.shape[0])
    se = float(np.sqrt(n * np.var(pointwise))) if n else float("nan")
    return {"elpd": float(pointwise.sum()), "se": se, "n": int(n), "pointwise": pointwise}


def gaussian_predictive_elpd(
    mean: Float[np.ndarray, "t k 2"],
    cov: Float[np.ndarray, "t k 2 2"],
    labels: Float[np.ndarray, "t k 2"],
    label_sigma: float | np.ndarray = 1.0,
) -> dict[str, Any]:
    r"""The held-out ELPD of Gaussian marginals, exact (no draws).

    :math:`\sum_i \log N(\ell_i \mid m_i, \Sigma_i + \sigma^2 I)`: what :func:`held_out_elpd`
    estimates by Monte Carlo, in closed form, so exact however wide the posterior is against
    the label noise (where a few hundred draws are far from enough). ``label_sigma`` as in
    :func:`label_log_density` (per image and axis allowed).

    Returns:
        ``{"elpd": float, "se": float, "n": int, "pointwise": (N,) array}``.
    """
    labels = np.asarray(labels, dtype=np.float64)
    sigma = np.broadcast_to(np.asarray(label_sigma, dtype=np.float64), labels.shape)
    ti, ki = _label_index(labels)
    total = np.asarray(cov, dtype=np.float64)[ti, ki] + np.eye(2) * (sigma[ti, ki] ** 2)[:, None, :]
    d = labels[ti, ki] - np.asarray(mean, dtype=np.float64)[ti, ki]
    sign, logdet = np.linalg.slogdet(total)
    maha = np.einsum("ni,ni->n", d, np.linalg.solve(total, d[..., None])[..., 0])
    pointwise = np.where(sign > 0, -0.5 * maha - 0.5 * logdet - _LOG_2PI, np.nan)
    n = len(pointwise)
    se = float(np.sqrt(n * np.var(pointwise))) if n else float("nan")
    return {"elpd": float(pointwise.sum()), "se": se, "n": int(n), "pointwise": pointwise}


def loo_summary(idata: az.InferenceData, var_name: str = LOG_LIKELIHOOD_VAR) -> dict[str, Any]:
    """``az.loo`` with its Pareto k-hat, and the direct held-out ELPD beside it.

    ArviZ's own high-k-hat warning is silenced here: ``pareto_k_max`` and ``n_high_k`` report it.

    Returns:
        ``{"elpd_loo", "elpd_se", "p_loo", "pareto_k_max", "n_high_k", "n_infinite_k",
        "elpd_heldout", "elpd_heldout_se", "n_labels"}``. ``pareto_k_max`` is ``inf`` where ArviZ
        could not fit the tail at all (the log weights span more than float64's range).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        loo = az.loo(idata, pointwise=True, var_name=var_name)
    k = np.asarray(loo.pareto_k, dtype=float)
    direct = held_out_elpd(idata, var_name)
    return {
        "elpd_loo": float(loo["elpd_loo"]),
        "elpd_se": float(loo["se"]),
        "p_loo": float(loo["p_loo"]),
        "pareto_k_max": float(np.nanmax(k)) if k.size else float("nan"),
        "n_high_k": int(np.sum(k > K_HAT_LIMIT)),
        "n_infinite_k": int(np.sum(np.isinf(k))),
        "elpd_heldout": direct["elpd"],
        "elpd_heldout_se": direct["se"],
        "n_labels": direct["n"],
    }


# --------------------------------------------------------------------------- runs


def run_label_sigma(run: Run) -> float:
    """The run's labeling noise in training pixels (``model_options["label_sigma"]``, default 1)."""
    return float(run.config.model_options.get("label_sigma", 1.0))


def posterior_inference_data(
    run: Run,
    images: Sequence[str] | None = None,
    *,
    video: str | Path | None = None,
    start: int = 0,
    stop: int | None = None,
    num_draws: int = 200,
    seed: int = 0,
    chains: int = 2,
    levels: Sequence[float] | None = None,
    network: Any = None,
    device: str = "cpu",
) -> az.InferenceData:
    """``InferenceData`` of a run's keypoint posterior (see the module doc).

    Args:
        run: a trained run.
        images: labeled image keys of the run's project (default: its held-out ``test``
            images); with their labels the ``log_likelihood`` and ``observed_data`` groups
            are added.
        video: instead of images, frames ``start .. stop - 1`` of a video (``frame`` = frame
            numbers; no labels, so no ``log_likelihood``).
        num_draws: draws per chain.
        seed: seeds the draws.
        chains: how many chains the (independent) draws are split into.
        levels: credible levels the posterior computes (only affects the attributes).
        network: the run's network if already loaded.
        device: where to run the network.

    Raises:
        DGPError: no held-out images (trained without ``--holdout``) and none given.
    """
    levels = tuple(DEFAULT_LEVELS if levels is None else levels)
    network = run.network(device) if network is None else network
    keypoints = list(run.config.keypoints)
    attrs = {
        "run": str(run.path),
        "model": run.config.model,
        "inference": "variational (structured Gaussian guide); marginal draws",
        "label_sigma_training_px": run_label_sigma(run),
    }
    if video is not None:
        posterior = video_posterior(run, video, levels, network=network, start=start, stop=stop)
        return inference_data_from_posterior(
            posterior,
            keypoints,
            [int(f) for f in posterior.frame_index],
            num_draws=num_draws,
            seed=seed,
            chains=chains,
            attrs={**attrs, "video": str(video)},
        )
    held = held_out_images(run, images)
    if not len(held):
        raise DGPError(
            "the run has no held-out labeled images",
            run.path,
            hint="train with --holdout, or name labeled images",
        )
    posterior = image_posteriors(run, held.paths, held.keys, levels, network=network)
    sigma = run_label_sigma(run) * held.factor[:, None, :]
    return inference_data_from_posterior(
        posterior,
        keypoints,
        held.keys,
        held.labels,
        sigma,
        num_draws=num_draws,
        seed=seed,
        chains=chains,
        frame_views=held.views,
        keypoint_views=held.keypoint_views,
        attrs=attrs,
    )
