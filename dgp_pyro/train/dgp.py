"""Semi-supervised training of Deep Graph Pose: the network and the structured guide by SVI.

:func:`train_dgp` trains the variants ``temporal``, ``skeletal`` and ``dgp`` of
:mod:`dgp_pyro.model.dgp` into a run folder that looks and resumes exactly like a supervised
run (same config, split, loss log, checkpoints; :mod:`dgp_pyro.train.supervised`).

Schedule (``RunConfig.model_options``, defaults in :data:`DEFAULT_OPTIONS`):

1. **Warm-up** (the first ``dgp_start`` fraction of the steps, default 0.6): labeled images
   only, i.e. the supervised objective. Deep Graph Pose's windows are only informative once
   the heatmaps point roughly at the animal; before that the guide would chase noise.
2. At the switch the **temporal weights** are set from the data: the network's own
   soft-argmax trajectories over the pool's windows give a robust per-keypoint step size
   (:func:`~dgp_pyro.model.potentials.default_temporal_weights`); the **skeletal weights** come
   from the labeled limb lengths (:func:`~dgp_pyro.model.potentials.default_skeletal_weights`).
   Both are scaled by the user-facing ``temporal_strength`` and ``skeletal_strength``. The
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
   with batch norm frozen, :func:`~dgp_pyro.nets.frozen_batch_norm`), and takes
   a gradient step on the negative ELBO of :func:`~dgp_pyro.model.dgp.dgp_model` under
   :func:`~dgp_pyro.model.dgp.dgp_guide` (network, guide corrections and, with
   ``learn_weights``, the potential weights together; the last two at ``guide_lr``). Its parts are logged to
   ``elbo.csv``: the labeled heatmap loss, the neural potential, the prior, the label term and
   the guide's entropy, per step.

**Why this schedule** (``bench_dgp_accuracy``: one view, 1000 frames, 20 training labels,
600 steps; supervised RMSE 3.40 px). Through the windows the network is trained towards the
guide's samples, which sit on the network's own detections nudged by the potentials: on these
videos, where a network's errors persist over many frames, that pseudo-labelling mostly
confirms its early mistakes. The dgp RMSE was 5.96 px with DGP's schedule (windows from 30 %
of the steps at full weight); 4.79 px once the windows stopped setting the batch-norm
statistics; 4.06 px at ``unlabeled_weight`` 0.3; 3.33 px (ratio 0.98) with windows from 60 %
of the steps at weight 0.1, the defaults. ``windows_train_network=False`` keeps the network
on labels alone and fits only the guide on the windows. The guide's corrections learn at their
own rate ``guide_lr`` (0.02, as in ``dgp3d``; the network's 1e-3 barely moves a log precision
scale in 240 steps): 3.31 -> 3.26 px (seed 0) and 3.21 -> 3.13 px (seed 1), coverage within
0.05 of every level on both.

The ELBO is computed from Pyro traces (the same estimator as ``pyro.infer.Trace_ELBO``, with
reparameterised samples) so its parts can be logged and the step uses the same AdamW,
schedule, clipping and checkpoints as the supervised trainer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch import Tensor, nn

from dgp_pyro.atomic import atomic_path
from dgp_pyro.data.augment import AugmentConfig, flip_permutation
from dgp_pyro.data.windows import WindowPool, build_window_pool
from dgp_pyro.errors import DGPError
from dgp_pyro.model.dgp import (
    GuideCorrection,
    LabeledBatch,
    ModelSettings,
    PotentialWeights,
    WindowBatch,
    dgp_guide,
    dgp_model,
)
from dgp_pyro.model.potentials import default_skeletal_weights, default_temporal_weights
from dgp_pyro.nets import frozen_batch_norm, normalize_images, soft_argmax
from dgp_pyro.run import Run, RunConfig, load_run
from dgp_pyro.run.checkpoint import Checkpointer
from dgp_pyro.train.supervised import (
    TrainingLog,
    build_network_seeded,
    make_optimizer,
    make_scheduler,
    prepare_training,
    restore_training_state,
    run_training_loop,
    seed_everything,
)

#: Settings of the semi-supervised schedule (``--option NAME=VALUE`` on the command line).
DEFAULT_OPTIONS: dict[str, Any] = {
    "window": 8,  # frames per window
    "windows_per_step": 1,  # windows in each step's unlabeled batch
    "random_windows": 96,  # unlabeled windows in the pool (besides those around labels)
    "dgp_start": 0.6,  # fraction of the steps trained on labels only before the windows join
    "temporal_strength": 1.0,  # multiplies the data-driven temporal weights
    "skeletal_strength": 1.0,  # multiplies the labeled-limb-length skeletal weights
    "calibrate_precision": True,  # start the guide's precision scales from the training labels
    "label_sigma": 1.0,  # labeling noise, training pixels
    "unlabeled_weight": 0.1,  # windows' per-keypoint ELBO against the labeled loss (measured below)
    "learn_weights": False,  # fit w_t and w_s by SVI as well
    # False: the windows fit only the guide; the network learns from the labels
    "windows_train_network": True,
    # peak lr of the guide corrections (and learned weights): an optimizer group of their own, no
    # weight decay, clipped apart, as in dgp3d; null: in the network's group (measured in the
    # module doc)
    "guide_lr": 0.02,
    "videos": [],  # extra videos for unlabeled windows, besides the project's
}

ELBO_LOG = "elbo.csv"
#: Logged parts: the log-density of each model site (the prior is "keypoints"), the entropy, the loss.
ELBO_PARTS = ("labeled_heatmaps", "neural", "keypoints", "labels", "entropy", "loss")


def resolve_options(config: RunConfig) -> dict[str, Any]:
    """The model options with defaults filled in; unknown names raise :class:`DGPError`."""
    unknown = sorted(set(config.model_options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise DGPError(
            f"unknown model option(s) {', '.join(unknown)}",
            hint=f"known options: {', '.join(DEFAULT_OPTIONS)}",
        )
    options = {**DEFAULT_OPTIONS, **config.model_options}
    options["videos"] = [str(Path(v).expanduser().absolute()) for v in options["videos"]]
    for video in options["videos"]:
        if not Path(video).is_file():
            raise DGPError("video not found", video, hint="check the --videos paths")
    check_option_values(options)
    return options


#: Numeric model options (2D and 3D) and the values each may take:
#: ``(lowest, lowest allowed?, highest (excluded), what to say)``.
OPTION_RANGES: dict[str, tuple[float, bool, float, str]] = {
    "dgp_start": (0, True, 1, "in [0, 1): the fraction of the steps trained on labels only"),
    "window": (2, True, math.inf, "at least 2 frames"),
    "windows_per_step": (1, True, math.inf, "at least 1"),
    "random_windows": (0, True, math.inf, "0 or more"),
    "temporal_strength": (0, False, math.inf, "positive (a factor on the temporal weights)"),
    "skeletal_strength": (0, False, math.inf, "positive (a factor on the skeletal weights)"),
    "label_sigma": (0, False, math.inf, "positive (the labeling noise in training pixels)"),
    "unlabeled_weight": (0, True, math.inf, "0 or more"),
    "bone_sigma_floor": (0, False, math.inf, "positive (a fraction of each bone's length)"),
    "guide_lr": (0, False, math.inf, "positive"),
    "robust": (0, True, math.inf, "0 or more (0 or null: plain confidence weighting)"),
}
#: Options that may also be null.
NULLABLE_OPTIONS = ("robust", "guide_lr")


def joint_optimizer(
    network: nn.Module, guide_parameters: list[nn.Parameter], guide_lr: float | None, config: RunConfig
) -> torch.optim.Optimizer:
    """The graphical models' optimizer: the network, and the guide's parameters at ``guide_lr``.

    ``guide_lr`` None puts the guide's parameters in the network's group (its ``lr``, weight
    decay and gradient clipping); a number gives them a group of their own at that peak learning
    rate, without weight decay (it would pull the log precision scales to 0) and clipped apart.
    """
    if guide_lr is None:
        return make_optimizer(list(network.parameters()) + guide_parameters, config)
    guide_group = {"params": guide_parameters, "lr": float(guide_lr), "weight_decay": 0.0}
    return make_optimizer([{"params": list(network.parameters())}, guide_group], config)


def check_option_values(options: dict[str, Any]) -> None:
    """Refuse model options out of range (a non-positive potential strength, ...) before training.

    Raises:
        DGPError: naming the option, its value and what it may be.
    """
    for name, (lowest, inclusive, highest, what) in OPTION_RANGES.items():
        if name not in options:
            continue
        value = options[name]
        if value is None and name in NULLABLE_OPTIONS:
            continue
        above = _is_number(value) and (value >= lowest if inclusive else value > lowest)
        if not above or value >= highest:
            raise DGPError(f"model option {name}={value!r} must be {what}", hint=f"--option {name}=VALUE")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def model_settings(config: RunConfig, options: dict[str, Any]) -> ModelSettings:
    """The :class:`ModelSettings` of a run (edges as indices into the network keypoints)."""
    index = {name: k for k, name in enumerate(config.keypoints)}
    edges = [(index[a], index[b]) for a, b in config.skeleton]
    return ModelSettings(
        variant=config.model,
        stride=int(config.stride),
        heatmap_sigma=float(config.sigma),
        edges=edges,
        label_sigma=float(options["label_sigma"]),
        unlabeled_weight=float(options["unlabeled_weight"]),
        absent_weight=float(config.absent_weight),
    )


def trace_elbo(model: Callable, guide: Callable, *args: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """Negative ELBO of ``model`` under ``guide`` and its parts, from one reparameterised sample.

    The same estimator as ``pyro.infer.Trace_ELBO``; computed from the traces here so each
    site's contribution (the model's log-density per site, the guide's entropy) can be logged.
    """
    guide_trace = poutine.trace(guide).get_trace(*args)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    zero = torch.zeros((), dtype=torch.float64)
    parts = {
        name: site["log_prob_sum"]
        for name, site in model_trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    }
    entropy = sum(
        (
            -site["log_prob_sum"]
            for site in guide_trace.nodes.values()
            if site["type"] == "sample" and not site_is_subsample(site)
        ),
        zero,
    )
    loss = -(sum(parts.values(), zero) + entropy)
    logged = {name: float(value.detach()) for name, value in parts.items()}
    logged["entropy"] = float(entropy.detach())
    logged["loss"] = float(loss.detach())
    return loss, logged


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


def join_windows(values: np.ndarray, fill: float) -> np.ndarray:
    """``(w, t, ...)`` windows as one ``(w (t + 1), ...)`` sequence, a ``fill`` frame after each.

    A NaN position (or zero confidence) between windows, so no temporal step spans two of them.
    """
    pad = np.full((values.shape[0], 1) + values.shape[2:], fill)
    return np.concatenate([values, pad], axis=1).reshape(-1, *values.shape[2:])


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
    (:func:`~dgp_pyro.posterior.posterior2d.calibrate_posterior`).
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
    settings = model_settings(config, options)
    keypoints = len(config.keypoints)

    train_labels = setup.dataset.points.double().numpy()  # training pixels
    skeletal = default_skeletal_weights(train_labels, settings.edges, float(options["skeletal_strength"]))
    weights = PotentialWeights(
        torch.ones(keypoints), torch.as_tensor(skeletal), learn=bool(options["learn_weights"])
    )
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
        progress=progress,
        on_step=on_step,
    )  # fmt: skip


def train_jointly(
    setup: Any,
    network: nn.Module,
    weights: nn.Module,
    correction: nn.Module,
    pool: Any,
    generator: torch.Generator,
    resume: bool,
    *,
    settings: Any,
    temporal_weights: Callable[[float], np.ndarray],
    precision_scale: Callable[[], np.ndarray],
    window_batch: Callable[[Tensor, Tensor, Tensor], Any],
    loss: Callable[[LabeledBatch, Any], tuple[Tensor, dict[str, float]]],
    elbo_parts: tuple[str, ...] = ELBO_PARTS,
    extra_state: dict[str, Any] | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Run:
    """The training schedule shared by the 2D and 3D graphical models; returns the finished run.

    ``settings``: the model's (:class:`~dgp_pyro.model.dgp.ModelSettings` or its 3D twin), for
    whether it has a temporal potential and uses windows at all. Labels only until
    ``dgp_start``; then, once, from the network as it is then, the temporal weights
    ``temporal_weights(temporal_strength)`` (with a temporal potential) and the guide's
    precision scales ``precision_scale()`` (with ``calibrate_precision``); from there
    every step adds ``windows_per_step`` windows of ``pool``, run through the network with
    frozen batch norm (and without gradient unless ``windows_train_network``), arranged by
    ``window_batch(logits, labels, mask)``, and scored with the labeled batch by
    ``loss(labeled, windows)`` (the negative ELBO and its logged parts). The optimizer is
    :func:`joint_optimizer`; checkpoints carry the potential weights, the guide correction and
    ``extra_state``; the ELBO parts (``elbo_parts``) are logged to ``RUN/elbo.csv``.
    """
    config, device, options = setup.config, setup.device, setup.config.model_options
    guide_parameters = list(correction.parameters()) + list(weights.parameters())
    optimizer = joint_optimizer(network, guide_parameters, options["guide_lr"], config)
    scheduler = make_scheduler(optimizer, config)
    checkpointer = Checkpointer(setup.run_dir / "checkpoints", keep=config.keep_checkpoints)
    dgp_start = int(math.floor(float(options["dgp_start"]) * config.steps))

    step, seconds_before, temporal_ready, log, elbo_rows = start_or_resume(
        setup, resume, checkpointer, network, optimizer, scheduler, generator, weights, correction
    )

    augment = AugmentConfig.from_dict(config.augment)
    flip_perm = flip_permutation(config.keypoints, augment.flip_pairs) if augment.flip > 0 else None

    def compute_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        nonlocal temporal_ready
        use_windows = settings.uses_windows and step >= dgp_start
        if use_windows and not temporal_ready:
            with torch.no_grad():
                if settings.temporal:
                    temporal = temporal_weights(float(options["temporal_strength"]))
                    weights.log_temporal.copy_(torch.as_tensor(temporal).log())
                if options["calibrate_precision"]:
                    correction.log_precision_scale.copy_(torch.as_tensor(precision_scale()).log())
            temporal_ready = True
        images, points = setup.dataset.sample_batch(config.batch_size, generator, augment, flip_perm)
        labeled_logits = network(normalize_images(images.to(device)))
        windows = None
        if use_windows:
            frames, window_labels, window_mask = pool.sample(int(options["windows_per_step"]), generator)
            # every image of every frame of the windows, once (frames: (..., C, H, W)); their
            # near-identical frames must not set the batch-norm statistics
            with frozen_batch_norm(network), torch.set_grad_enabled(bool(options["windows_train_network"])):
                window_logits = network(normalize_images(frames.flatten(0, -4).to(device)))
            windows = window_batch(window_logits, window_labels, window_mask)
        points = points.to(device)
        labeled = LabeledBatch(labeled_logits, points, torch.isfinite(points).all(-1))
        return loss(labeled, windows)

    def state() -> dict[str, Any]:
        return {
            "potential_weights": weights.state_dict(),
            "guide_correction": correction.state_dict(),
            "temporal_ready": temporal_ready,
            **(extra_state or {}),
        }

    def log_parts(step: int, parts: dict[str, float]) -> None:
        elbo_rows.append({"step": step, **{k: parts.get(k, 0.0) for k in elbo_parts}})

    run_training_loop(
        setup, network, optimizer, scheduler, generator, checkpointer, log, step,
        seconds_before, compute_loss, extra_state=state,
        on_save=lambda: write_elbo_rows(setup.run_dir / ELBO_LOG, elbo_rows, elbo_parts), on_parts=log_parts,
        progress=progress, on_step=on_step,
    )  # fmt: skip
    return load_run(setup.run_dir)


def start_or_resume(
    setup: Any,
    resume: bool,
    checkpointer: Checkpointer,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    weights: nn.Module,
    correction: nn.Module,
) -> tuple[int, float, bool, TrainingLog, list[dict[str, float]]]:
    """Where a graphical-model run starts: step 0, or its last checkpoint restored (``resume``).

    Returns ``(step, seconds so far, whether the potential weights were set, the loss log, the
    ELBO rows up to that step)``; shared by the 2D and 3D trainers.
    """
    log = TrainingLog(setup.run_dir / "loss.csv")
    if not resume:
        return 0, 0.0, False, log, []
    state = restore_training_state(checkpointer.last, network, optimizer, scheduler, setup.config, generator)
    step = int(state["step"])
    weights.load_state_dict(state["potential_weights"])
    correction.load_state_dict(state["guide_correction"])
    rows = [row for row in read_elbo_rows(setup.run_dir / ELBO_LOG) if row["step"] <= step]
    seconds, ready = float(state.get("seconds", 0.0)), bool(state["temporal_ready"])
    return step, seconds, ready, TrainingLog.resume(log.path, step), rows


def write_elbo_rows(path: Path, rows: list[dict[str, float]], parts: tuple[str, ...] = ELBO_PARTS) -> None:
    """Write the per-step ELBO parts as CSV (atomically: a checkpoint and its log agree)."""
    columns = ("step",) + tuple(parts)
    with atomic_path(path) as tmp:
        with open(tmp, "w") as handle:
            handle.write(",".join(columns) + "\n")
            for row in rows:
                handle.write(",".join(repr(row.get(k, 0.0)) for k in columns) + "\n")


def read_elbo_rows(path: Path) -> list[dict[str, float]]:
    """The rows of :func:`write_elbo_rows` (empty if the file does not exist)."""
    if not path.is_file():
        return []
    lines = path.read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, map(float, line.split(",")), strict=True)) for line in lines[1:] if line]
