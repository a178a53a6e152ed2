"""Data-parallel training on several devices (``dgp-pyro train --devices K``), with torch DDP.

:func:`data_parallel_trainer` returns a trainer (the signature of
:mod:`dgp_pyro.train.registry`) that starts ``K`` processes with :mod:`torch.multiprocessing`,
one per device (``nccl`` on CUDA, device ``cuda:<rank>``; ``gloo`` on CPU), joined in one
process group on this machine, and wraps the network in
:class:`~torch.nn.parallel.DistributedDataParallel`. Only the ``supervised`` family is
supported; the graphical models are refused with a clear error.

The result is the one-device run at the same effective batch size, up to float noise:

- ``--batch-size`` stays the effective (global) batch. Every rank draws the whole batch from
  the same seeded generator (same images, same augmentation), and trains on its own contiguous
  share of it; the data generator therefore advances exactly as in one process, and a resumed
  run continues the same way.
- The loss is a ratio, the summed heatmap (and offset) loss over the number of labeled
  keypoints in the batch; each rank's loss is its share of the numerator over the *whole*
  batch's count, times ``K``, so DDP's gradient average is the one-process gradient.
- Batch-norm statistics are taken over the whole batch, across ranks (:class:`GlobalBatchNorm2d`:
  :class:`torch.nn.SyncBatchNorm` runs on GPUs only, this one on CPU too), and the logged loss
  is the whole batch's.

Rank 0 alone writes the run folder (``config.json`` and ``split.json`` are written before the
processes start, checkpoints and ``loss.csv`` by rank 0). The ``on_step`` callback is not
called (it would run in another process). Every rank holds the training images in memory and
augments the whole batch (cheap beside the network; it keeps the random stream identical).
"""

from __future__ import annotations

import dataclasses
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from dgp_pyro.data.augment import AugmentConfig, flip_permutation
from dgp_pyro.errors import DGPError
from dgp_pyro.model.registry import model_spec
from dgp_pyro.nets.heatmaps import labeled_mask
from dgp_pyro.run import Run, RunConfig, load_run
from dgp_pyro.run.checkpoint import Checkpointer
from dgp_pyro.train.registry import trainer_for
from dgp_pyro.train.supervised import (
    TrainingLog,
    TrainingSetup,
    build_network_seeded,
    make_optimizer,
    make_scheduler,
    prepare_training,
    restore_training_state,
    run_training_loop,
    seed_everything,
    supervised_loss,
)

__all__ = ["GlobalBatchNorm2d", "data_parallel_trainer", "train_supervised_data_parallel"]


class _SumOverRanks(torch.autograd.Function):
    """A tensor summed over the process group; its gradient is summed over the group too."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    """The sum of ``x`` over the ranks, differentiable (each rank's gradient is the group's)."""
    return _SumOverRanks.apply(x)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose training statistics are those of the whole batch, across the process group.

    The same parameters and buffers as :class:`~torch.nn.BatchNorm2d` (checkpoints are
    unchanged). The mean and the (biased) variance are summed over the ranks with a
    differentiable all-reduce, in two passes as :func:`torch.nn.functional.batch_norm` does,
    and the running statistics get the unbiased variance, as there.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(x)
        channels = (0, 2, 3)
        count = all_reduce(x.new_tensor(float(x.numel() // x.shape[1])))
        mean = all_reduce(x.sum(channels)) / count
        centred = x - mean[None, :, None, None]
        var = all_reduce(centred.square().sum(channels)) / count
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (
                    self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                )
                unbiased = var.detach() * (count / (count - 1).clamp(min=1))
                self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return out


def data_parallel_trainer(model: str, devices: int) -> Callable[..., Run]:
    """A trainer of ``model`` on ``devices`` devices (the signature of :mod:`dgp_pyro.train.registry`).

    Raises:
        DGPError: fewer than 1 device, or (2 or more) a model outside the ``supervised`` family.
    """
    if devices < 1:
        raise DGPError(f"--devices {devices} must be at least 1")
    if devices == 1:
        return trainer_for(model)
    family = model_spec(model).family
    if family != "supervised":
        raise DGPError(
            f"--devices {devices}: data-parallel training supports the supervised model only, "
            f"not {model!r} (its video windows and guide are not split across devices yet)",
            hint="train it on one device (leave out --devices)",
        )

    def trainer(
        config: RunConfig,
        out_dir: str | Path,
        resume: bool = False,
        progress: bool = True,
        on_step: Callable[[int, float], None] | None = None,
    ) -> Run:
        return train_supervised_data_parallel(config, out_dir, devices, resume=resume, progress=progress)

    return trainer


def train_supervised_data_parallel(
    config: RunConfig, out_dir: str | Path, devices: int, resume: bool = False, progress: bool = True
) -> Run:
    """:func:`~dgp_pyro.train.supervised.train_supervised` on ``devices`` processes; return the run.

    Raises:
        DGPError: what one-device training raises (from whichever rank met it), a batch smaller
            than ``devices``, or fewer CUDA devices than asked for.
    """
    if config.batch_size < devices:
        raise DGPError(
            f"--batch-size {config.batch_size} is the whole batch, shared by --devices {devices}: "
            "give at least one image per device"
        )
    setup = prepare_training(config, out_dir, resume)
    if setup.device.type == "cuda" and torch.cuda.device_count() < devices:
        raise DGPError(f"--devices {devices}, but only {torch.cuda.device_count()} CUDA devices are visible")
    errors = mp.get_context("spawn").SimpleQueue()
    port = _free_port()
    threads = max(1, (os.cpu_count() or 1) // devices) if setup.device.type == "cpu" else None
    mp.spawn(
        _rank_main, args=(devices, port, setup, resume, progress, threads, errors), nprocs=devices, join=True
    )
    if not errors.empty():
        raise DGPError(errors.get())
    return load_run(setup.run_dir)


def _rank_main(
    rank: int,
    world: int,
    port: int,
    setup: TrainingSetup,
    resume: bool,
    progress: bool,
    threads: int | None,
    errors: Any,
) -> None:
    """One process of the group: rank ``rank`` of ``world``, training its share of each batch."""
    cuda = setup.device.type == "cuda"
    if threads is not None:
        torch.set_num_threads(threads)
    if cuda:
        torch.cuda.set_device(rank)
        setup = dataclasses.replace(setup, device=torch.device("cuda", rank))
    dist.init_process_group(
        "nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        _train_rank(setup, rank, world, resume, progress and rank == 0)
    except DGPError as error:
        errors.put(str(error))
    finally:
        dist.destroy_process_group()


def _train_rank(setup: TrainingSetup, rank: int, world: int, resume: bool, progress: bool) -> None:
    """The body of :func:`~dgp_pyro.train.supervised.train_supervised`, on one rank of the group."""
    config, device = setup.config, setup.device
    generator = seed_everything(config.seed)
    network = _global_batch_norm(build_network_seeded(config)).to(device)
    optimizer = make_optimizer(network.parameters(), config)
    scheduler = make_scheduler(optimizer, config)
    writer = rank == 0
    checkpointer = (Checkpointer if writer else _NoCheckpoints)(
        setup.run_dir / "checkpoints", keep=config.keep_checkpoints
    )
    step, seconds_before = 0, 0.0
    log = (TrainingLog if writer else _NoLog)(setup.run_dir / "loss.csv")
    if resume:
        state = restore_training_state(checkpointer.last, network, optimizer, scheduler, config, generator)
        step, seconds_before = int(state["step"]), float(state.get("seconds", 0.0))
        log = (TrainingLog.resume if writer else _NoLog.resume)(log.path, step)
    ddp = nn.parallel.DistributedDataParallel(
        _Forward(network), device_ids=[rank] if device.type == "cuda" else None
    )
    parallel = _Routed(ddp)
    augment = AugmentConfig.from_dict(config.augment)
    flip_perm = flip_permutation(config.keypoints, augment.flip_pairs) if augment.flip > 0 else None

    def compute_loss(step: int) -> tuple[torch.Tensor, dict[str, float]]:
        images, points = setup.dataset.sample_batch(config.batch_size, generator, augment, flip_perm)
        share = torch.tensor_split(torch.arange(config.batch_size), world)[rank]
        labeled = float(labeled_mask(points).sum().clamp(min=1))
        mine = float(labeled_mask(points[share]).sum().clamp(min=1))
        loss = supervised_loss(parallel, images[share].to(device), points[share].to(device), config)
        loss = loss * (mine * world / labeled)  # this share's part of the whole batch's ratio, times K
        whole = loss.detach().clone()
        dist.all_reduce(whole)
        whole /= world
        if not torch.isfinite(whole):
            return whole, {"loss": float(whole)}  # every rank stops at the same step
        return loss, {"loss": float(whole)}

    run_training_loop(
        setup, network, optimizer, scheduler, generator, checkpointer,
        log, step, seconds_before, compute_loss, progress=progress,
    )  # fmt: skip


def _global_batch_norm(network: nn.Module) -> nn.Module:
    """``network`` with every :class:`~torch.nn.BatchNorm2d` made a :class:`GlobalBatchNorm2d` (in place)."""
    for module in network.modules():
        if type(module) is nn.BatchNorm2d:
            module.__class__ = GlobalBatchNorm2d
    return network


class _Forward(nn.Module):
    """The network's two forward passes as one ``forward``, so that DDP sees either."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor, offsets: bool = False) -> Any:
        return self.network.forward_with_offsets(x) if offsets else self.network(x)


class _Routed:
    """What :func:`~dgp_pyro.train.supervised.supervised_loss` calls, routed through DDP."""

    def __init__(self, ddp: nn.Module):
        self.ddp = ddp

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.ddp(x)

    def forward_with_offsets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ddp(x, offsets=True)


class _NoCheckpoints(Checkpointer):
    """The checkpointer of ranks other than 0: rank 0 writes."""

    def save(self, state: dict[str, Any], step: int, snapshot: bool = True) -> Path:
        return self.last


class _NoLog(TrainingLog):
    """The loss log of ranks other than 0: rank 0 writes."""

    @classmethod
    def resume(cls, path: Path, step: int) -> TrainingLog:
        return cls(path)

    def write(self) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
