"""Semi-supervised training of multi-view 3D Deep Graph Pose (:mod:`dgp_pyro.model.dgp3d`).

:func:`train_dgp3d` trains the 3D variants ``dgp3d``, ``dgp3d_temporal``, ``dgp3d_skeletal``
and ``dgp3d_bones`` into a run folder that looks and resumes exactly like every other run
(same config, split, ``loss.csv``, checkpoints; :mod:`dgp_pyro.train.supervised`), plus
``elbo.csv`` with the parts of the ELBO per step.

The project must be multi-view, in either layout, with an Anipose ``calibration.toml`` (or
``--calibration FILE``, e.g. written by ``dgp-pyro calibrate``) whose camera names are the
view names (:meth:`~dgp_pyro.geometry.camera_group.CameraGroup.match_views`; sessions and
calibration are read by :mod:`dgp_pyro.data.sessions`):

- *folders*: one video per camera and session (``videos/<session>_<view>.mp4``); the videos
  of a session must have the same number of frames (synchronised cameras);
- *suffix* (a mirror: one image holds every view, keypoint columns ``<bodypart>_<view>``):
  one video per session holds every view, so its frames are trivially synchronous; each
  camera is calibrated in the pixels of the whole image (``dgp-pyro calibrate`` writes it so).

One heatmap network is shared by all views. Its supervised part trains on the labeled images
exactly as a 2D run of the project does (one image per view, or the whole mirror image with its
``J V`` channels). The windows (:mod:`dgp_pyro.train.sync_windows`) hold ``window`` synchronous
frames of a session (windows around each labeled frame found in a video, holding its training
labels in every view, and windows at seeded random places); every image of every frame goes
through the network once, batched, and :class:`~dgp_pyro.model.views3d.ViewChannels` splits the
output channels into the views' ``(V, J)`` heatmaps the model takes (an identity in the folders
layout).

Schedule (``RunConfig.model_options``, defaults in :data:`~dgp_pyro.model.options.DEFAULT_OPTIONS_3D`):

1. warm-up on labeled images only for the first ``dgp_start`` fraction of the steps;
2. at the switch, the temporal weights (1 / world units^2) are set from the (trimmed) mean
   squared steps of the network's own triangulated soft-argmax trajectories over the pool's
   windows (:func:`estimate_temporal_weights3d`); the skeletal weights were set at the start from
   the bones of the triangulated training labels (:func:`skeleton_weights3d`: the inverse
   mean squared bone length for ``dgp3d``; mean length and inverse variance, floored at
   ``bone_sigma_floor`` of the length, for ``dgp3d_bones``), scaled by the strengths; and the
   guide's precision scales start calibrated on the labeled windows
   (:func:`calibrate_precision_scale`: the soft-argmax spread is the heatmap's width, not
   the error of its mean, which is many times smaller for a trained network);
3. joint phase: the negative ELBO of :func:`~dgp_pyro.model.dgp3d.dgp3d_model` under
   :func:`~dgp_pyro.model.dgp3d.dgp3d_guide`, one gradient step per batch (guide corrections,
   with ``learn_weights`` the quadratic weights, and with ``windows_train_network`` the
   network). The guide's parameters have their own learning rate ``guide_lr`` (the network's
   ``lr`` would move a log precision scale by about ``lr`` per step, far too slowly), same
   schedule, no weight decay.

**Why the windows do not train the network by default** (``bench_dgp3d_accuracy``, 3 cameras,
600 frames, 20 training labels, 600 steps, seed 0; 3D RMSE in mm, all points / points hidden in
a view). The network's 3D pseudo-labels helped a network that never learned what hidden looks
like (``absent_weight`` 0): dgp3d 7.15 / 8.61 against 7.81 / 9.35 for per-view networks plus
DLT, more weight on them hurt (7.30 at ``unlabeled_weight`` 0.3, 7.92 at 1). Teaching the
network empty maps for hidden parts (``absent_weight`` 0.3, the 3D default) helps far more, since
a hidden view then drops out of the triangulation (per-view networks plus DLT: 6.72 / 7.50), but
then the windows' bumps in hidden views fight the labels (7.55 / 8.53). With the network on
labels alone and the guide fitted on the windows: 6.29 / 7.05.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, UInt8
from torch import Tensor, nn

from dgp_pyro.data.sessions import check_frame_sizes, load_calibration, session_videos, triangulate_labels
from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.triangulation import triangulate_torch
from dgp_pyro.model.dgp import LabeledBatch
from dgp_pyro.model.dgp3d import (
    Model3DSettings,
    PotentialWeights3D,
    ViewWindowBatch,
    dgp3d_guide,
    dgp3d_model,
)
from dgp_pyro.model.options import model_settings3d, resolve_options
from dgp_pyro.model.potentials import default_skeletal_weights
from dgp_pyro.model.pseudo_observations3d import triangulation_observations
from dgp_pyro.model.registry import MODELS_3D, is_3d
from dgp_pyro.model.structured_guide import GuideCorrection3D
from dgp_pyro.model.views3d import ViewCameras, ViewChannels
from dgp_pyro.nets import normalize_images, soft_argmax
from dgp_pyro.run import Run, RunConfig
from dgp_pyro.train.joint import join_windows, trace_elbo, train_jointly
from dgp_pyro.train.supervised import (
    build_network_seeded,
    prepare_training,
    seed_everything,
)
from dgp_pyro.train.sync_windows import SyncWindowPool, build_sync_window_pool, training_samples_in_sessions

__all__ = [
    "calibrate_precision_scale",
    "elbo_loss3d",
    "estimate_temporal_weights3d",
    "mean_square_temporal_weights",
    "skeleton_weights3d",
    "train_dgp3d",
    "view_summaries",
]

ELBO_PARTS = ("labeled_heatmaps", "neural", "bones", "keypoints", "labels", "entropy", "loss")


# --------------------------------------------------------------------------- weights and ELBO


def skeleton_weights3d(
    points_3d: Float[np.ndarray, "n keypoints 3"],
    edges: list[tuple[int, int]],
    variant: str,
    strength: float,
    sigma_floor: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """``(weights (E,), bone lengths (E,))`` from triangulated labels.

    ``dgp3d`` and ``dgp3d_skeletal``: :func:`~dgp_pyro.model.potentials.default_skeletal_weights`
    (``strength`` over the mean squared bone vector). ``dgp3d_bones``: the mean length
    :math:`L_b` and ``strength`` over the variance of the length, the standard deviation
    floored at ``sigma_floor`` :math:`L_b`; a bone never triangulated gets weight 0.
    """
    E = len(edges)
    if E == 0:
        return np.zeros(0), np.zeros(0)
    if variant != "dgp3d_bones":
        return default_skeletal_weights(points_3d, edges, strength), np.zeros(E)
    lengths = np.full(E, np.nan)
    weights = np.zeros(E)
    for k, (i, j) in enumerate(edges):
        values = np.linalg.norm(points_3d[:, i] - points_3d[:, j], axis=-1)
        values = values[np.isfinite(values)]
        if values.size:
            lengths[k] = float(np.mean(values))
            variance = float(np.var(values)) if values.size > 1 else 0.0
            weights[k] = strength / max(variance, (sigma_floor * lengths[k]) ** 2, 1e-12)
    return weights, np.nan_to_num(lengths, nan=0.0)


def _device(network: nn.Module) -> torch.device:
    return next(network.parameters()).device


def _pool_channels(pool: SyncWindowPool, channels: ViewChannels | None) -> ViewChannels:
    if channels is not None:
        return channels
    V, J = pool.labels.shape[2], pool.labels.shape[3]
    return ViewChannels.per_camera([f"view{v}" for v in range(V)], [f"keypoint{j}" for j in range(J)])


def view_summaries(
    network: nn.Module,
    frames: UInt8[Tensor, "... images height width 3"],
    channels: ViewChannels,
    stride: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Soft-argmax ``mean (..., V, J, 2)``, ``cov (..., V, J, 2, 2)``, ``confidence (..., V, J)`` of frames.

    Every image goes through ``network`` once (training pixels); :meth:`ViewChannels.summaries`
    splits the channels into views.
    """
    batch = frames.shape[:-3]  # (..., I)
    logits = network(normalize_images(frames.flatten(0, -4).to(_device(network))))
    summary = soft_argmax(logits.float(), stride)
    K = logits.shape[1]
    return channels.summaries(
        summary.mean.reshape(*batch, K, 2),
        summary.cov.reshape(*batch, K, 2, 2),
        summary.confidence.reshape(*batch, K),
    )


def mean_square_temporal_weights(
    trajectory: Float[np.ndarray, "time keypoints 3"],
    confidence: Float[np.ndarray, "time keypoints"],
    strength: float = 1.0,
    min_confidence: float = 0.5,
    trim: float = 0.02,
) -> np.ndarray:
    r"""``strength`` over the per-axis mean squared step of each keypoint (largest ``trim`` dropped).

    The maximum-likelihood step variance of a Gaussian random walk is the mean squared step.
    Animal steps are heavy-tailed (a paw rests, then swings), so the median-based estimate of
    :func:`~dgp_pyro.model.potentials.default_temporal_weights` makes the 3D prior several
    times too stiff for fast keypoints (measured on the synthetic animal: 0.4-2.3 against the
    true 0.15-0.3 mm^-2 for the paws), which drags fast moves. Only steps between two
    confident frames count; the largest ``trim`` of them are dropped as detection glitches.
    """
    step = trajectory[1:] - trajectory[:-1]
    squared = np.sum(step**2, axis=-1)
    ok = (confidence[1:] >= min_confidence) & (confidence[:-1] >= min_confidence) & np.isfinite(squared)
    dim = trajectory.shape[-1]
    weights = np.full(trajectory.shape[1], np.nan)
    for j in range(trajectory.shape[1]):
        values = np.sort(squared[:, j][ok[:, j]])
        if values.size < 5:
            continue
        keep = values[: max(1, int(np.ceil((1.0 - trim) * values.size)))]
        weights[j] = strength / max(float(np.mean(keep)) / dim, 1e-2)
    if np.isnan(weights).all():
        return np.full(trajectory.shape[1], strength)
    weights[np.isnan(weights)] = np.nanmedian(weights)
    return weights


@torch.no_grad()
def estimate_temporal_weights3d(
    network: nn.Module,
    pool: SyncWindowPool,
    cameras: ViewCameras,
    settings: Model3DSettings,
    strength: float,
    batch: int = 48,
    channels: ViewChannels | None = None,
) -> np.ndarray:
    """Data-driven 3D :math:`w_t`: mean squared steps of the network's triangulated soft-argmax.

    See :func:`mean_square_temporal_weights`. A 3D point counts as confident where its second
    most confident view has a heatmap peak of at least 0.5 (two views see it); steps never
    span two windows. ``channels``: the views in the network's output (default: one image per view).
    """
    channels = _pool_channels(pool, channels)
    was_training = network.training
    network.eval()
    _, T, n_images = pool.frames.shape[:3]
    per_chunk = max(1, batch // (T * n_images))
    trajectories, confidences = [], []
    for start in range(0, len(pool), per_chunk):
        frames = pool.frames[start : start + per_chunk]
        mean, cov, confidence = view_summaries(network, frames, channels, settings.stride)
        obs = triangulation_observations(
            cameras, mean, cov, confidence, robust=settings.robust, iterations=settings.gauss_newton
        )
        points = obs.point.cpu().numpy()  # (w, T, J, 3)
        conf = confidence.double().sort(dim=2, descending=True).values[:, :, 1]
        trajectories.append(join_windows(points, np.nan))
        confidences.append(join_windows(conf.cpu().numpy(), 0.0))
    network.train(was_training)
    return mean_square_temporal_weights(np.concatenate(trajectories), np.concatenate(confidences), strength)


@torch.no_grad()
def calibrate_precision_scale(
    network: nn.Module,
    pool: SyncWindowPool,
    cameras: ViewCameras,
    settings: Model3DSettings,
    bounds: tuple[float, float] = (0.1, 1e4),
    channels: ViewChannels | None = None,
) -> np.ndarray:
    r"""Per-keypoint precision scales that calibrate the 3D pseudo-observations on the labeled frames.

    The Gaussian form's :math:`\Sigma_v` is the heatmap's spatial spread, not the error of its
    mean, so the pseudo-observation precision :math:`P` is off by a factor. On the pool's
    frames labeled in at least two views, the triangulated label :math:`Y` and the heatmaps'
    pseudo-observation :math:`(m, P)` give :math:`s_j = 3 / \overline{(m - Y)^\top P (m - Y)}`
    (a calibrated 3D Gaussian has a mean squared Mahalanobis distance of 3), clipped to
    ``bounds``; SVI refines it. Keypoints with fewer than 3 such frames get the median scale
    (1 when there is none). The labels are training labels, so the scale errs on the confident
    side. ``channels``: the views in the network's output (default: one image per view).
    """
    channels = _pool_channels(pool, channels)
    was_training = network.training
    network.eval()
    mask = pool.mask  # (P, T, V, J)
    rows = (mask.sum(2) >= 2).any(-1).nonzero()  # (n, 2): (window, frame) with a 2-view label
    J = mask.shape[-1]
    sums, counts = np.zeros(J), np.zeros(J)
    for start in range(0, len(rows), 16):
        p, t = rows[start : start + 16].unbind(-1)
        frames = pool.frames[p, t]  # (n, I, H, W, 3)
        mean, cov, confidence = view_summaries(network, frames, channels, settings.stride)
        obs = triangulation_observations(
            cameras, mean, cov, confidence, robust=settings.robust, iterations=settings.gauss_newton
        )
        labels = pool.labels[p, t].to(torch.float64)  # (n, V, J, 2)
        weight = (mask[p, t]).to(torch.float64).movedim(1, 0)  # (V, n, J)
        truth = triangulate_torch(
            labels.movedim(1, 0).to(obs.mean.device),
            confidence=weight.to(obs.mean.device),
            **cameras.params(),
        )  # (n, J, 3)
        error = obs.mean - truth
        d2 = torch.einsum("nji,njik,njk->nj", error, obs.precision, error)
        ok = torch.isfinite(d2) & obs.observed
        sums += torch.where(ok, d2, torch.zeros_like(d2)).sum(0).cpu().numpy()
        counts += ok.sum(0).cpu().numpy()
    network.train(was_training)
    scale = np.full(J, np.nan)
    enough = counts >= 3
    scale[enough] = 3.0 * counts[enough] / np.maximum(sums[enough], 1e-12)
    fill = float(np.nanmedian(scale)) if enough.any() else 1.0
    return np.clip(np.where(np.isnan(scale), fill, scale), *bounds)


def elbo_loss3d(*args: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative ELBO of :func:`dgp3d_model` under :func:`dgp3d_guide` and its parts (one sample)."""
    return trace_elbo(dgp3d_model, dgp3d_guide, *args)


# --------------------------------------------------------------------------- the trainer


def train_dgp3d(
    config: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Run:
    """Train a 3D variant (one of :data:`~dgp_pyro.model.registry.MODELS_3D`) into ``out_dir``.

    ``on_step(step, loss)`` is called after every step (tests, monitoring).

    Raises:
        DGPError: besides :func:`~dgp_pyro.train.supervised.prepare_training`'s checks, a
            single-view project, a missing or mismatched calibration (camera names, frame
            sizes), videos of different lengths in a session, no window of video.
    """
    if not is_3d(config.model):
        raise DGPError(f"train_dgp3d trains {', '.join(MODELS_3D)}, not {config.model!r}")
    options = resolve_options(config)
    config.model_options = options
    setup = prepare_training(config, out_dir, resume)
    config, device = setup.config, setup.device
    project = setup.project
    group = load_calibration(project, options["calibration"])
    sessions = session_videos(project)
    check_frame_sizes(group, sessions)
    channels = ViewChannels.from_project(project)
    settings = model_settings3d(config, options, channels)
    size = tuple(config.size)
    cameras = ViewCameras.from_group(group, sessions[0].frame_sizes, size, device=device)

    generator = seed_everything(config.seed)
    network = build_network_seeded(config).to(device)
    keypoints = len(channels.keypoints)
    samples = project.network_samples()
    train_frames = np.unique(samples.frame_index[setup.train_index])
    group.check_geometry()  # before triangulating: coinciding camera centres
    labels_3d = triangulate_labels(project, group, train_frames)
    group.check_geometry(labels_3d)  # centres on a line with the animal: depth unobservable
    skeletal, lengths = skeleton_weights3d(
        labels_3d,
        settings.edges,
        config.model,
        float(options["skeletal_strength"]),
        float(options["bone_sigma_floor"]),
    )
    learn = bool(options["learn_weights"]) and not settings.bones
    weights = PotentialWeights3D(
        torch.ones(keypoints), torch.as_tensor(skeletal), torch.as_tensor(lengths), learn=learn
    )
    correction = GuideCorrection3D(keypoints)
    weights.to(device)
    correction.to(device)
    pool = build_sync_window_pool(
        sessions,
        size,
        int(options["window"]),
        int(options["random_windows"]),
        config.seed,
        keypoints,
        labeled=training_samples_in_sessions(setup, sessions, channels),
        channels=channels,
    )
    if len(pool) == 0:
        raise DGPError(
            f"model {config.model!r} needs video: no session has {options['window']} frames",
            project.root / "videos",
            hint="use a shorter window (--option window=N)",
        )

    def window_batch(logits: Tensor, labels: Tensor, mask: Tensor) -> ViewWindowBatch:
        w, t = mask.shape[:2]  # the logits of every image of every frame: (w t images, ...)
        return ViewWindowBatch(
            channels.select(logits.reshape(w, t, channels.num_images, *logits.shape[1:]), tail=2),
            labels.to(device),
            mask.to(device),
            channels.present(device),
        )

    def loss(labeled: LabeledBatch, windows: ViewWindowBatch | None) -> tuple[Tensor, dict[str, float]]:
        return elbo_loss3d(network, settings, weights, correction, cameras, labeled, windows)

    return train_jointly(
        setup, network, weights, correction, pool, generator, resume,
        settings=settings,
        temporal_weights=lambda strength: estimate_temporal_weights3d(
            network, pool, cameras, settings, strength, channels=channels
        ),
        precision_scale=lambda: calibrate_precision_scale(
            network, pool, cameras, settings, channels=channels
        ),
        window_batch=window_batch,
        loss=loss,
        elbo_parts=ELBO_PARTS,
        extra_state={"frame_sizes": [list(size) for size in sessions[0].frame_sizes]},
        progress=progress,
        on_step=on_step,
    )  # fmt: skip
