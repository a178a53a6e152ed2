"""The training schedule shared by the 2D and 3D graphical models, and its ELBO log.

:func:`train_jointly` runs it: labeled images only until ``dgp_start``; then, once, the
temporal weights and the guide's precision scales from the network as it is then; from there
every step adds windows of video to the labeled batch and takes a gradient step on the
negative ELBO (:func:`trace_elbo`, whose parts go to ``RUN/elbo.csv``, :data:`ELBO_LOG`).
Each trainer (:func:`~dgp_pyro.train.dgp.train_dgp`, :func:`~dgp_pyro.train.dgp3d.train_dgp3d`)
gives its window pool, temporal-weight and precision-scale estimators, window batch and loss.
The optimizer (:func:`joint_optimizer`) gives the guide's parameters a learning rate of their
own; checkpoints, resuming (:func:`start_or_resume`) and the loss log are those of the
supervised trainer (:mod:`dgp_pyro.train.supervised`).
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
from dgp_pyro.model.dgp import LabeledBatch
from dgp_pyro.nets import frozen_batch_norm, normalize_images
from dgp_pyro.run import Run, RunConfig, load_run
from dgp_pyro.run.checkpoint import Checkpointer
from dgp_pyro.train.supervised import (
    TrainingLog,
    make_optimizer,
    make_scheduler,
    restore_training_state,
    run_training_loop,
)

#: The per-step ELBO parts of a graphical-model run, in the run folder.
ELBO_LOG = "elbo.csv"


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


def join_windows(values: np.ndarray, fill: float) -> np.ndarray:
    """``(w, t, ...)`` windows as one ``(w (t + 1), ...)`` sequence, a ``fill`` frame after each.

    A NaN position (or zero confidence) between windows, so no temporal step spans two of them.
    """
    pad = np.full((values.shape[0], 1) + values.shape[2:], fill)
    return np.concatenate([values, pad], axis=1).reshape(-1, *values.shape[2:])


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
    elbo_parts: tuple[str, ...],
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


def write_elbo_rows(path: Path, rows: list[dict[str, float]], parts: tuple[str, ...]) -> None:
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
