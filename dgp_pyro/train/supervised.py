"""Supervised training of the heatmap network on labeled frames (the DeepLabCut baseline).

:func:`train_supervised` trains :class:`~dgp_pyro.nets.HeatmapNet` on a project's labeled
images only, with the DeepLabCut heatmap loss, and writes a run folder
(:mod:`dgp_pyro.run`). It is the ``supervised`` model and the baseline every other model is
compared against; its building blocks (:func:`prepare_training`, :func:`make_optimizer`,
:func:`make_scheduler`, :class:`TrainingLog`, :func:`training_state`,
:func:`restore_training_state`) are meant to be reused by the other trainers so that every
run folder, checkpoint and resume behaves the same.

Training recipe (defaults in :class:`~dgp_pyro.run.RunConfig`):

- images resized to the training size (default: :func:`~dgp_pyro.data.augment.default_size`
  of the first labeled image), cached in memory, augmented on the fly (random rotation
  +-15 deg, zoom +-15 %, shift +-5 %, brightness and contrast; optional flip with left/right
  pairs);
- batches of ``batch_size`` images drawn uniformly with replacement;
- loss: binary cross-entropy of the heatmap against a Gaussian bump at each label, summed over
  the map and averaged over the labeled keypoints (:func:`~dgp_pyro.nets.heatmap_loss`); the
  bump's width ``sigma`` defaults to the output stride in training pixels (8 px at stride 8,
  i.e. one heatmap cell: wide enough that the soft-argmax sees a peak spread over a few
  cells, narrow enough not to blur neighbouring keypoints), missing labels add nothing;
- AdamW (``lr`` 1e-3, weight decay 1e-4), linear warm-up over ``warmup_steps`` (default 5 %
  of the steps, at most 200) then cosine decay to ``min_lr_factor * lr``; this trains the
  network from scratch (no pretrained weights are needed, none can be downloaded offline);
- gradients clipped to a norm of ``clip_grad_norm`` per optimizer parameter group;
- a checkpoint every ``checkpoint_every`` steps and at the end, written atomically, holding
  everything to resume exactly (model, optimizer, scheduler, step, every RNG state); on
  Ctrl-C the current state is saved before the interrupt propagates.

Deterministic on CPU for a seed: the split, the initialisation (``HeatmapNet(seed=...)``),
the batches and the augmentation all come from the seed, and a resumed run continues
bit-for-bit where it stopped.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dgp_pyro.data.augment import AugmentConfig, check_size, default_size, flip_permutation
from dgp_pyro.data.dataset import LabeledImages, image_size, split_frames
from dgp_pyro.data.project import load_project
from dgp_pyro.errors import DGPError
from dgp_pyro.model.registry import default_absent_weight, model_spec
from dgp_pyro.nets.backbone import resolve_weights
from dgp_pyro.nets.heatmap_net import normalize_images
from dgp_pyro.nets.heatmaps import heatmap_loss, offset_loss
from dgp_pyro.run import (
    Run,
    RunConfig,
    build_network,
    load_run,
    prepare_run_dir,
    read_loss_log,
    resolve_device,
    write_config,
    write_loss_log,
    write_split,
)
from dgp_pyro.run.checkpoint import (
    Checkpointer,
    capture_rng_state,
    check_keypoints,
    load_checkpoint,
    restore_rng_state,
)

__all__ = [
    "TrainingSetup",
    "TrainingLog",
    "prepare_training",
    "make_optimizer",
    "make_scheduler",
    "training_state",
    "restore_training_state",
    "supervised_loss",
    "train_supervised",
    "run_training_loop",
]


# --------------------------------------------------------------------------- setup


@dataclass
class TrainingSetup:
    """Everything a trainer needs before its first step (see :func:`prepare_training`).

    Attributes:
        run_dir: the run folder.
        config: the resolved config (size, sigma, warm-up, keypoints filled in), already saved.
        project: the loaded project.
        split: ``{"train": keys, "test": keys}``, already saved.
        train_index: indices into ``project.network_samples()`` of the training samples.
        test_index: the same for the held-out samples.
        dataset: the training images at training size, in memory.
        device: the torch device.
        resume: whether a checkpoint is to be resumed.
    """

    run_dir: Path
    config: RunConfig
    project: Any
    split: dict[str, list[str]]
    train_index: np.ndarray
    test_index: np.ndarray
    dataset: LabeledImages
    device: torch.device
    resume: bool


def prepare_training(config: RunConfig, out_dir: str | Path, resume: bool = False) -> TrainingSetup:
    """Check the inputs, resolve defaults, split the frames and write ``config.json`` / ``split.json``.

    On ``resume`` the saved split is reused and the config must agree with the saved one.

    Raises:
        DGPError: an ``--out`` holding another run (without ``resume``), a missing checkpoint to
            resume, an unavailable device, a size that is not a multiple of 32, fewer than 2
            labeled frames, a keypoint with no label in the training frames, missing images.
    """
    device = resolve_device(config.device)
    config.project = str(Path(config.project).expanduser().absolute())
    if isinstance(config.holdout, str):
        config.holdout = str(Path(config.holdout).expanduser().absolute())
    config.weights = resolve_weights(config.backbone, config.weights)  # before comparing with a saved run
    run_dir, saved = prepare_run_dir(out_dir, config, resume)
    if resume and not (run_dir / "checkpoints" / "last.pt").is_file():
        raise DGPError(
            "--resume: the run has no checkpoint yet", run_dir, hint="drop --resume and choose a new --out"
        )

    project = load_project(config.project, views=config.views, view_layout=config.view_layout)
    keypoints = list(project.network_keypoints())
    if saved is not None and list(saved.keypoints) != keypoints:
        raise DGPError(
            f"checkpoint has keypoints {list(saved.keypoints)}, project has {keypoints}",
            run_dir,
            hint="the project's keypoints changed since the run started; start a new --out",
        )
    config.keypoints = keypoints
    config.skeleton = [[keypoints[a], keypoints[b]] for a, b in project.network_skeleton()]
    samples = project.network_samples()
    _check_images_exist(samples.image_paths)
    project.check_labels_inside_images()  # a resized image or a damaged label file: refused

    if config.size is None:
        config.size = list(default_size(*image_size(samples.image_paths[0])))
    config.size = list(check_size(config.size))
    if config.sigma is None:
        config.sigma = float(config.stride)
    if config.absent_weight is None:
        config.absent_weight = default_absent_weight(config.model)
    _check_numbers(config)
    augment = AugmentConfig.from_dict(config.augment)
    config.augment = augment.to_dict()
    flip_permutation(keypoints, augment.flip_pairs)  # validates the pair names early

    if saved is not None:
        run = load_run(run_dir)
        split = run.split
    else:
        split = split_frames(
            samples.image_keys, samples.frame_index, samples.labels, config.holdout, config.seed
        )
    key_index = {key: i for i, key in enumerate(samples.image_keys)}
    missing = [k for k in split["train"] + split["test"] if k not in key_index]
    if missing:
        raise DGPError(
            f"the run's split names images the project no longer has ({', '.join(missing[:3])})",
            run_dir / "split.json",
            hint="start a new run",
        )
    train_index = np.array([key_index[k] for k in split["train"]], dtype=np.int64)
    test_index = np.array([key_index[k] for k in split["test"]], dtype=np.int64)
    if config.epochs is not None:
        config.steps = max(1, math.ceil(config.epochs * len(train_index) / config.batch_size))
    if config.warmup_steps is None:
        config.warmup_steps = int(min(200, max(1, round(0.05 * config.steps))))
    labels = samples.labels[train_index]
    unlabeled = [name for k, name in enumerate(keypoints) if not np.isfinite(labels[:, k]).all(-1).any()]
    if unlabeled:
        raise DGPError(
            f"keypoint(s) {', '.join(unlabeled)} have no label in the training frames",
            config.project,
            hint="label them in some frames, or hold out fewer frames (--holdout)",
        )

    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    write_split(run_dir, split)
    dataset = LabeledImages(
        [samples.image_paths[i] for i in train_index],
        labels,
        config.size,
        keys=[samples.image_keys[i] for i in train_index],
    )
    return TrainingSetup(
        run_dir=run_dir,
        config=config,
        project=project,
        split=split,
        train_index=train_index,
        test_index=test_index,
        dataset=dataset,
        device=device,
        resume=resume,
    )


def _check_images_exist(paths: list[Path]) -> None:
    missing = [Path(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise DGPError(
            f"{len(missing)} of {len(paths)} labeled images are missing (first: {missing[0].name})",
            missing[0],
            hint="the label files list these images; restore the project's labeled-data folder",
        )


def _check_numbers(config: RunConfig) -> None:
    checks = [
        (config.steps >= 1, f"--steps {config.steps} must be at least 1"),
        (config.epochs is None or config.epochs >= 1, f"--epochs {config.epochs} must be at least 1"),
        (config.batch_size >= 1, f"--batch-size {config.batch_size} must be at least 1"),
        (config.lr > 0, f"--lr {config.lr} must be positive"),
        (config.checkpoint_every >= 1, f"--checkpoint-every {config.checkpoint_every} must be at least 1"),
        (config.sigma > 0, f"sigma {config.sigma} must be positive"),
        (
            math.isfinite(config.absent_weight) and config.absent_weight >= 0,
            f"--absent-weight {config.absent_weight} must be a number of at least 0",
        ),
        (config.lr_schedule in ("cosine", "constant"), f"unknown lr schedule {config.lr_schedule!r}"),
        # The graphical models' guide and potentials read the heatmaps alone, so offsets would
        # move their predictions away from the posterior they fitted.
        (
            not (config.offset_head and model_spec(config.model).graphical),
            f"--offset-head is for --model supervised, not {config.model}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise DGPError(message)


# --------------------------------------------------------------------------- optimisation


def make_optimizer(parameters, config: RunConfig) -> torch.optim.Optimizer:
    """AdamW with the config's learning rate and weight decay."""
    return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, config: RunConfig) -> float:
    """Learning-rate multiplier before optimizer step ``step + 1``: linear warm-up, then cosine."""
    warmup = int(config.warmup_steps or 0)
    if step < warmup:
        return (step + 1) / warmup
    if config.lr_schedule == "constant":
        return 1.0
    span = max(1, config.steps - warmup)
    progress = min(1.0, (step - warmup) / span)
    low = config.min_lr_factor
    return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, config: RunConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """The warm-up + cosine schedule of :func:`lr_factor` (stepped once per optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, config))


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch, NumPy and Python's global generators; return the data pipeline's generator."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    return torch.Generator().manual_seed(seed + 1)


# --------------------------------------------------------------------------- checkpoints and log


class TrainingLog:
    """The loss log (``loss.csv``): rows of step, loss, lr and seconds since the run started."""

    def __init__(self, path: Path, rows: list[dict[str, float]] | None = None):
        self.path = Path(path)
        self.rows = list(rows or [])

    @classmethod
    def resume(cls, path: Path, step: int) -> TrainingLog:
        """The log up to ``step`` (rows after the checkpoint were not part of its state)."""
        return cls(path, [row for row in read_loss_log(path) if row["step"] <= step])

    def add(self, step: int, loss: float, lr: float, seconds: float) -> None:
        self.rows.append({"step": step, "loss": loss, "lr": lr, "seconds": seconds})

    def write(self) -> None:
        write_loss_log(self.path, self.rows)


def training_state(
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    step: int,
    seconds: float,
    config: RunConfig,
    data_generator: torch.Generator,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of a run at ``step`` (see :mod:`dgp_pyro.run.checkpoint`)."""
    state = {
        "model": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": int(step),
        "seconds": float(seconds),
        "rng": capture_rng_state(data_generator),
        "keypoints": list(config.keypoints),
        "model_name": config.model,
        "network": network.config() if hasattr(network, "config") else {},
        "size": list(config.size),
    }
    if extra:
        state.update(extra)
    return state


def restore_training_state(
    path: Path,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    config: RunConfig,
    data_generator: torch.Generator,
) -> dict[str, Any]:
    """Load ``path`` into the training objects (and the RNGs); return the checkpoint dict."""
    state = load_checkpoint(path, map_location="cpu")
    check_keypoints(state, list(config.keypoints), path)
    try:
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
    except (RuntimeError, KeyError, ValueError) as error:
        raise DGPError(
            f"checkpoint does not fit this run's network or optimizer ({str(error).splitlines()[0]})", path
        ) from error
    restore_rng_state(state["rng"], data_generator)
    return state


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm import tqdm  # not tqdm.auto: it warns in a notebook kernel without ipywidgets

    return tqdm(
        total=total,
        initial=initial,
        desc="train",
        unit="step",
        dynamic_ncols=True,
        disable=not (enabled and sys.stderr.isatty()),
    )


# --------------------------------------------------------------------------- the trainer


def supervised_loss(
    network: nn.Module, images: torch.Tensor, points: torch.Tensor, config: RunConfig
) -> torch.Tensor:
    """The heatmap loss (plus the offset loss with an offset head) of uint8 images and their labels."""
    x = normalize_images(images)
    stride, sigma, absent = int(config.stride), float(config.sigma), float(config.absent_weight)
    if config.offset_head:
        logits, offsets = network.forward_with_offsets(x)
        return heatmap_loss(logits, points, stride, sigma, absent_weight=absent) + offset_loss(
            offsets, points, stride
        )
    return heatmap_loss(network(x), points, stride, sigma, absent_weight=absent)


def train_supervised(
    config: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Run:
    """Train the heatmap network on the labeled frames only; write and return the run.

    Args:
        config: the run's settings (``config.model`` should be ``"supervised"``).
        out_dir: the run folder (created; refused if it holds a run, unless ``resume``).
        resume: continue the run in ``out_dir`` from its last checkpoint, exactly.
        progress: show a progress bar with the loss (only on a terminal).
        on_step: called as ``on_step(step, loss)`` after every step (tests, monitoring).

    Returns:
        the finished :class:`~dgp_pyro.run.Run`.
    """
    setup = prepare_training(config, out_dir, resume)
    config = setup.config
    device = setup.device
    generator = seed_everything(config.seed)
    network = build_network_seeded(config).to(device)
    optimizer = make_optimizer(network.parameters(), config)
    scheduler = make_scheduler(optimizer, config)
    checkpointer = Checkpointer(setup.run_dir / "checkpoints", keep=config.keep_checkpoints)
    step, seconds_before = 0, 0.0
    log = TrainingLog(setup.run_dir / "loss.csv")
    if resume:
        state = restore_training_state(checkpointer.last, network, optimizer, scheduler, config, generator)
        step, seconds_before = int(state["step"]), float(state.get("seconds", 0.0))
        log = TrainingLog.resume(log.path, step)

    augment = AugmentConfig.from_dict(config.augment)
    flip_perm = flip_permutation(config.keypoints, augment.flip_pairs) if augment.flip > 0 else None

    def compute_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        images, points = setup.dataset.sample_batch(config.batch_size, generator, augment, flip_perm)
        loss = supervised_loss(network, images.to(device), points.to(device), config)
        return loss, {"loss": float(loss.detach())}

    run_training_loop(
        setup, network, optimizer, scheduler, generator, checkpointer,
        log, step, seconds_before, compute_loss, progress=progress, on_step=on_step,
    )  # fmt: skip
    return load_run(setup.run_dir)


def run_training_loop(
    setup: TrainingSetup,
    network: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    checkpointer: Checkpointer,
    log: TrainingLog,
    step: int,
    seconds_before: float,
    compute_loss: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
    extra_state: Callable[[], dict[str, Any]] | None = None,
    on_save: Callable[[], None] | None = None,
    on_parts: Callable[[int, dict[str, float]], None] | None = None,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> None:
    """The optimisation loop every trainer shares: steps, clipping, schedule, log, checkpoints.

    ``compute_loss(step)`` returns the step's loss (drawing its batch from ``generator``) and
    the numbers to log (at least ``"loss"``). Checkpoints every ``config.checkpoint_every``
    steps and at the end hold :func:`training_state` plus ``extra_state()``; ``on_save`` writes
    a trainer's own logs beside them. On Ctrl-C inside a step the data generator is rewound to
    the step's start and the state saved, so a resume redraws the same batch; inside the
    parameter update itself the state is half-updated, so the last periodic checkpoint is kept.
    """
    config = setup.config
    started = time.perf_counter()

    def elapsed() -> float:
        return seconds_before + time.perf_counter() - started

    def save(snapshot: bool) -> None:
        log.write()
        if on_save is not None:
            on_save()
        extra = extra_state() if extra_state is not None else None
        state = training_state(network, optimizer, scheduler, step, elapsed(), config, generator, extra)
        checkpointer.save(state, step, snapshot=snapshot)

    network.train()
    bar = _progress_bar(config.steps, step, progress)
    in_update = False
    data_state = generator.get_state()
    try:
        while step < config.steps:
            loss, parts = compute_loss(step)
            if not torch.isfinite(loss):
                # checked before the update: the parameters and the last checkpoint are still good
                raise DGPError(
                    f"the training loss became {loss.item()} at step {step + 1} "
                    + _last_good_checkpoint(checkpointer),
                    setup.run_dir,
                    hint="lower --lr (or the model options' strengths) and train again, or --resume",
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.clip_grad_norm and config.clip_grad_norm > 0:
                # per parameter group: with one global norm, the guide's gradients (a group of
                # their own in the graphical models) would shrink the network's step, and back
                for group in optimizer.param_groups:
                    nn.utils.clip_grad_norm_(group["params"], config.clip_grad_norm)
            lr = optimizer.param_groups[0]["lr"]
            in_update = True
            optimizer.step()
            scheduler.step()
            step += 1
            in_update = False
            data_state = generator.get_state()  # the next step starts from here
            value = parts["loss"]
            log.add(step, value, lr, elapsed())
            if on_parts is not None:
                on_parts(step, parts)
            bar.update(1)
            if step % 10 == 0 or step == config.steps:
                bar.set_postfix(loss=f"{value:.4g}", lr=f"{lr:.2e}", refresh=False)
            if on_step is not None:
                on_step(step, value)
            if step % config.checkpoint_every == 0 and step < config.steps:
                save(snapshot=True)
        save(snapshot=True)
    except KeyboardInterrupt:
        if not in_update:
            generator.set_state(data_state)
            save(snapshot=False)
        raise
    finally:
        bar.close()


def _last_good_checkpoint(checkpointer: Checkpointer) -> str:
    """What a stopped run keeps: its last checkpoint and that checkpoint's step."""
    if not checkpointer.last.is_file():
        return "(no checkpoint had been written yet)"
    step = load_checkpoint(checkpointer.last).get("step")
    return f"(the last good checkpoint, {checkpointer.last}, from step {step}, is kept)"


def build_network_seeded(config: RunConfig) -> nn.Module:
    """A fresh network for ``config`` whose random initialisation comes from ``config.seed``."""
    return build_network(config, pretrained=True, seed=config.seed)
