"""Semi-supervised training of Deep Graph Pose: the network and the structured guide by SVI.

:func:`train_dgp` trains the variants ``temporal``, ``skeletal`` and ``dgp`` of
:mod:`dgp_pyro.model.dgp` into a run folder that looks and resumes exactly like a supervised
run (same config, split, loss log, checkpoints; :mod:`dgp_pyro.train.supervised`).

Schedule (``RunConfig.model_options``, defaults in :data:`~dgp_pyro.model.options.DEFAULT_OPTIONS`;
the steps shared with 3D are :func:`~dgp_pyro.train.joint.train_jointly`'s):

1. **Warm-up** (the first ``dgp_start`` fraction of the steps, default 0.6): labeled images
   only, i.e. the supervised objective. Deep Graph Pose's windows are only informative once
   the heatmaps point roughly at the animal; before that the guide would chase noise.
2. At the switch the **temporal weights** are set from the data: the network's own
   soft-argmax trajectories over the pool's windows give a robust per-keypoint step size
   (:func:`~dgp_pyro.model.potentials.default_temporal_weights`); the **skeletal weights** come
   from the labeled limb lengths (:func:`~dgp_pyro.model.potentials.default_skeletal_weights`),
   or, for a project without a skeleton (option ``skeleton``, default ``auto``), the skeleton
   is learned from the training labels with its mean offsets and per-axis weights
   (:func:`~dgp_pyro.model.learned_skeleton.learned_skeleton`, written into the run's
   ``config.json`` as its ``skeleton``). Both are scaled by the user-facing
   ``temporal_strength`` and ``skeletal_strength``. The
   guide's per-keypoint **precision scales** start calibrated on the training labels
   (:func:`label_precision_scale`): the Gaussian form's covariance is the width of the
   heatmap's bump (about the target's ``sigma``), many times the error of a trained
   network's soft-argmax, so without this the potentials dominate the heatmaps, and the guide
   shrinks limbs and lags motion. On the benchmark's supervised network (1000 frames, 600
   steps) the smoothed RMSE was 4.51 px with unit scales and strengths (1, 1), against
   3.62 px raw and 3.33 px with the calibrated scale (about 24).
3. **Joint phase**: every step draws a labeled batch and ``windows_per_step`` windows of
   ``window`` consecutive frames (windows around the training labels and at random places of
   every video, :mod:`dgp_pyro.data.windows`), runs the network on all of them (the windows
   with batch norm frozen, :func:`~dgp_pyro.nets.frozen_batch_norm`, and without gradient
   unless ``windows_train_network``), and takes a gradient step on the negative ELBO of
   :func:`~dgp_pyro.model.dgp.dgp_model` under :func:`~dgp_pyro.model.dgp.dgp_guide` (network,
   guide corrections and, with ``learn_weights``, the potential weights together; the last two
   at ``guide_lr``). Its parts are logged to
   ``elbo.csv``: the labeled heatmap loss, the neural potential, the prior, the label term and
   the guide's entropy, per step.

**Why this schedule** (``bench_dgp_accuracy``: one view, 1000 frames, 20 training labels,
600 steps; supervised RMSE 3.40 px). Through the windows the network is trained towards the
guide's samples, which sit on the network's own detections nudged by the potentials: on these
videos, where a network's errors persist over many frames, that pseudo-labelling mostly
confirms its early mistakes. The dgp RMSE was 5.96 px with DGP's schedule (windows from 30 %
of the steps at full weight); 4.79 px once the windows stopped setting the batch-norm
statistics; 4.06 px at ``unlabeled_weight`` 0.3; 3.33 px (ratio 0.98) with windows from 60 %
of the steps at weight 0.1. On real video it did harm: on ``mirror-mouse-example``
(``bench_vs_deeplabcut``: 20 labels, the test video's windows, ``efficientnet_lite0`` defaults)
the held-out mean error was 17.5 px against ``supervised``'s 10.0 px, already 20.4 px 60 steps
after the windows joined. The network grew more confident on its wrong top-view paws (peak
0.6-0.7 instead of 0.4-0.6, 19-42 gross errors per paw instead of 10-24): on low-confidence
frames the guide's samples spread tens of pixels, and where the detections jump between
look-alike paws they sit on the wrong one, and the network learns both. So by default
(``windows_train_network=False``) the network learns from the labels alone and the windows fit
the guide (its precision scales and offsets) and set the temporal weights, as in 3D: 9.63 px
on the same split (ratio 0.96). The skeleton learned from the labels did not change that: with
it the posterior keeps the top-view paws over their bottom views, but the network trained
through the windows still fell to 12.3 px (against 7.4 px without; seed 0). The guide's
corrections learn at their own rate ``guide_lr`` (0.02, as in ``dgp3d``; the network's 1e-3
barely moves a log precision scale in 240 steps): 3.31 -> 3.26 px (seed 0) and 3.21 -> 3.13 px
(seed 1), coverage within 0.05 of every level on both.

The ELBO is computed from Pyro traces (the same estimator as ``pyro.infer.Trace_ELBO``, with
reparameterised samples) so its parts can be logged and the step uses the same AdamW,
schedule, clipping and checkpoints as the supervised trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from dgp_pyro.data.windows import WindowPool, build_window_pool
from dgp_pyro.errors import DGPError
from dgp_pyro.model.dgp import (
    VARIANTS,
    WindowBatch,
    dgp_guide,
    dgp_model,
)
from dgp_pyro.model.learned_skeleton import learned_skeleton
from dgp_pyro.model.options import model_settings, resolve_options
from dgp_pyro.model.potentials import PotentialWeights, default_skeletal_weights, default_temporal_weights
from dgp_pyro.model.structured_guide import GuideCorrection
from dgp_pyro.nets import normalize_images, soft_argmax
from dgp_pyro.run import Run, RunConfig
from dgp_pyro.run.config import write_config
from dgp_pyro.train.joint import join_windows, trace_elbo, train_jointly
from dgp_pyro.train.supervised import (
    build_network_seeded,
    prepare_training,
    seed_everything,
)

#: Logged parts: the log-density of each model site (the prior is "keypoints"), the entropy, the loss.
ELBO_PARTS = ("labeled_heatmaps", "neural", "keypoints", "labels", "entropy", "loss")


def elbo_loss(*args: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative ELBO of :func:`dgp_model` under :func:`dgp_guide`, and its parts (one sample)."""
    return trace_elbo(dgp_model, dgp_guide, *args)


@torch.no_grad()
def estimate_temporal_weights(
    network: nn.Module, pool: WindowPool, stride: int, strength: float, batch: int = 64
) -> np.ndarray:
    """Data-driven :math:`w_t`: robust step sizes of the network's soft-argmax over the pool's windows."""
    was_training = network.training
    network.eval()
    steps, confidences = [], []
    for start in range(0, len(pool), max(1, batch // pool.frames.shape[1])):
        frames = pool.frames[start : start + max(1, batch // pool.frames.shape[1])]
        w, t = frames.shape[:2]
        summary = soft_argmax(network(normalize_images(frames.flatten(0, 1).to(_device(network)))), stride)
        mean = summary.mean.reshape(w, t, -1, 2).double().cpu().numpy()
        conf = summary.confidence.reshape(w, t, -1).double().cpu().numpy()
        steps.append(join_windows(mean, np.nan))
        confidences.append(join_windows(conf, 0.0))
    network.train(was_training)
    return default_temporal_weights(np.concatenate(steps), np.concatenate(confidences), strength)


@torch.no_grad()
def label_precision_scale(
    network: nn.Module,
    images: torch.Tensor,
    points: torch.Tensor,
    stride: int,
    bounds: tuple[float, float] = (0.1, 1e4),
    batch: int = 32,
) -> np.ndarray:
    r"""Per-keypoint scales :math:`s_j` that calibrate the Gaussian form on labeled images.

    With :math:`d^2 = (\mu - y)^\top \Sigma^{-1} (\mu - y)` the squared Mahalanobis distance
    of a label :math:`y` from the soft-argmax :math:`(\mu, \Sigma)`, a calibrated 2D Gaussian
    has :math:`E[d^2] = 2`, so :math:`s_j = 2 / \overline{d^2_j}` (clipped to ``bounds``;
    keypoints labeled fewer than 3 times get the median scale). The images are the training
    images (``(N, h, w, 3)`` uint8, labels ``(N, K, 2)`` in training pixels, NaN = missing),
    which the network has fitted, so the scale errs on the confident side; the posterior's
    variances are recalibrated on held-out labels after training
    (:func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`).
    """
    was_training = network.training
    network.eval()
    keypoints = points.shape[1]
    sums, counts = np.zeros(keypoints), np.zeros(keypoints)
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch].to(_device(network))
        summary = soft_argmax(network(normalize_images(chunk)).float(), stride)
        error = summary.mean.double().cpu() - points[start : start + batch].double()
        d2 = torch.einsum("nki,nkij,nkj->nk", error, torch.linalg.inv(summary.cov.double().cpu()), error)
        ok = torch.isfinite(d2)
        sums += torch.where(ok, d2, torch.zeros_like(d2)).sum(0).numpy()
        counts += ok.sum(0).numpy()
    network.train(was_training)
    scale = np.full(keypoints, np.nan)
    enough = counts >= 3
    scale[enough] = 2.0 * counts[enough] / np.maximum(sums[enough], 1e-12)
    fill = float(np.nanmedian(scale)) if enough.any() else 1.0
    return np.clip(np.where(np.isnan(scale), fill, scale), *bounds)


def _device(network: nn.Module) -> torch.device:
    return next(network.parameters()).device


def _training_labels_in_frame_pixels(setup) -> list[tuple[str, np.ndarray]]:
    samples = setup.project.network_samples()
    return [(samples.image_keys[i], samples.labels[i]) for i in setup.train_index]


def skeletal_setup(config: RunConfig, options: dict[str, Any], train_labels: np.ndarray) -> PotentialWeights:
    """Choose the run's skeleton (``options["skeleton"]``), put its edges in ``config.skeleton``,
    and return the potential weights: unit temporal weights (set at the switch) and the skeletal ones.

    ``project`` keeps the project's edges with the original zero-mean weights; ``learned`` puts
    the labels' Chow-Liu forest in their place (mean offsets, per-axis weights); ``none`` drops
    the edges; ``auto`` is ``project`` when the project draws a skeleton, else ``learned``.
    Deterministic in the labels, so a resumed run rebuilds the same skeleton.
    """
    keypoints, strength = len(config.keypoints), float(options["skeletal_strength"])
    choice = options["skeleton"]
    if choice == "auto":
        choice = "project" if config.skeleton else "learned"
    learn = bool(options["learn_weights"])
    if choice == "none":
        config.skeleton = []
    elif choice == "learned" and VARIANTS[config.model]["skeletal"]:
        skeleton = learned_skeleton(train_labels, strength)
        config.skeleton = [[config.keypoints[i], config.keypoints[j]] for i, j in skeleton.edges]
        return PotentialWeights(
            torch.ones(keypoints), torch.as_tensor(skeleton.weight), learn, torch.as_tensor(skeleton.offset)
        )
    skeletal = default_skeletal_weights(train_labels, config.skeleton_edges(), strength)
    return PotentialWeights(torch.ones(keypoints), torch.as_tensor(skeletal), learn)


def train_dgp(
    config: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Run:
    """Train a graphical-model variant (``temporal``, ``skeletal``, ``dgp``) into ``out_dir``.

    Arguments as :func:`~dgp_pyro.train.supervised.train_supervised`.
    """
    options = resolve_options(config)
    config.model_options = options
    setup = prepare_training(config, out_dir, resume)
    config, device = setup.config, setup.device
    generator = seed_everything(config.seed)
    network = build_network_seeded(config).to(device)
    keypoints = len(config.keypoints)
    train_labels = setup.dataset.points.double().numpy()  # training pixels
    weights = skeletal_setup(config, options, train_labels)
    write_config(setup.run_dir, config)  # with the skeleton the model uses
    settings = model_settings(config, options)
    correction = GuideCorrection(keypoints)
    weights.to(device)
    correction.to(device)
    videos = [Path(v) for v in setup.project.videos()] + [Path(v) for v in options["videos"]]
    pool = build_window_pool(
        videos,
        tuple(config.size),
        int(options["window"]),
        int(options["random_windows"]) if settings.uses_windows else 0,
        config.seed,
        keypoints,
        labeled=_training_labels_in_frame_pixels(setup) if settings.uses_windows else [],
    )
    if settings.uses_windows and len(pool) == 0:
        raise DGPError(
            f"model {config.model!r} needs video: no video of at least {options['window']} frames was found",
            config.project,
            hint="add the project's videos to its videos/ folder, or pass --videos",
        )

    def window_batch(logits: Tensor, labels: Tensor, mask: Tensor) -> WindowBatch:
        w, t = mask.shape[:2]
        return WindowBatch(logits.reshape(w, t, *logits.shape[1:]), labels.to(device), mask.to(device))

    return train_jointly(
        setup, network, weights, correction, pool, generator, resume,
        settings=settings,
        temporal_weights=lambda strength: estimate_temporal_weights(network, pool, settings.stride, strength),
        precision_scale=lambda: label_precision_scale(
            network, setup.dataset.images, setup.dataset.points, settings.stride
        ),
        window_batch=window_batch,
        loss=lambda labeled, windows: elbo_loss(network, settings, weights, correction, labeled, windows),
        elbo_parts=ELBO_PARTS,
        progress=progress,
        on_step=on_step,
    )  # fmt: skip
