"""A training run's folder: its configuration, data split, checkpoints, loss log and outputs.

Layout of ``RUN/`` (every file written atomically)::

    config.json            RunConfig: everything the run was trained with
    split.json             {"train": [image keys], "test": [image keys]} (keys as in the label file)
    loss.csv               step, loss, lr, seconds (wall time since the run started, resumes included)
    checkpoints/last.pt    the newest checkpoint (model, optimizer, scheduler, step, RNG states)
    checkpoints/step_N.pt  snapshots every ``checkpoint_every`` steps, the newest few kept
    posterior_calibration.json  the posterior's calibration (written after the last step)
    finished.json          written last, once training and calibration are complete: a run
                           without it is unfinished (killed, or still training), and predict and
                           evaluate refuse it with how to finish it (``train ... --resume``)
    predictions/           prediction files written by ``dgp-pyro predict`` / ``evaluate``

The folder is model-agnostic: every trainer (``supervised`` here; the Deep Graph Pose
variants elsewhere) writes the same files, keeps its own settings in
``RunConfig.model_options``, and every reader (prediction, evaluation) works from
:func:`load_run` alone. Model names are listed once, in :data:`dgp_pyro.model.registry.MODELS`.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dgp_pyro.atomic import atomic_path, atomic_write_json, remove_stale_temporaries
from dgp_pyro.data.project import Project, load_project
from dgp_pyro.errors import DGPError
from dgp_pyro.nets.backbone import resolve_weights
from dgp_pyro.nets.heatmap_net import HeatmapNet
from dgp_pyro.run.checkpoint import LAST, Checkpointer, check_keypoints, load_checkpoint
from dgp_pyro.run.config import CONFIG, RunConfig, read_json, read_run_config

SPLIT = "split.json"
LOSS_LOG = "loss.csv"
CHECKPOINTS = "checkpoints"
PREDICTIONS = "predictions"
FINISHED = "finished.json"
LOSS_COLUMNS = ("step", "loss", "lr", "seconds")


def scorer_name(model: str) -> str:
    """The scorer written in prediction files: ``DGPpyro_<model>``."""
    return f"DGPpyro_{model}"


# --------------------------------------------------------------------------- the folder


@dataclass
class Run:
    """A run folder as read from disk (see :func:`load_run`)."""

    path: Path
    config: RunConfig
    split: dict[str, list[str]]

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints_dir / "last.pt"

    @property
    def predictions_dir(self) -> Path:
        return self.path / PREDICTIONS

    @property
    def loss_log(self) -> Path:
        return self.path / LOSS_LOG

    @property
    def scorer(self) -> str:
        return scorer_name(self.config.model)

    @property
    def size(self) -> tuple[int, int]:
        return self.config.image_size

    def project(self) -> Project:
        """Load the run's project (same views and layout) and check its keypoints match."""
        root = Path(self.config.project)
        if not root.exists():
            raise DGPError(
                "the run's project folder no longer exists", root, hint=f"see {self.path / CONFIG}"
            )
        project = load_project(root, views=self.config.views, view_layout=self.config.view_layout)
        keypoints = list(project.network_keypoints())
        if keypoints != list(self.config.keypoints):
            raise DGPError(
                f"checkpoint has keypoints {list(self.config.keypoints)}, project has {keypoints}",
                self.path,
                hint="the project's keypoints changed since training; retrain",
            )
        return project

    def checkpoint(
        self, path: str | Path | None = None, device: str | torch.device = "cpu"
    ) -> dict[str, Any]:
        """Load a checkpoint of this run (default ``last.pt``), checked against the config."""
        path = self.last_checkpoint if path is None else Path(path)
        state = load_checkpoint(path, map_location=device)
        check_keypoints(state, list(self.config.keypoints), path, what="the run config")
        return state

    def network(self, device: str | torch.device = "cpu", checkpoint: str | Path | None = None) -> HeatmapNet:
        """The trained network from the last (or the given) checkpoint, in eval mode on ``device``."""
        device = resolve_device(str(device))
        state = self.checkpoint(checkpoint, device="cpu")
        network = build_network(self.config, pretrained=False)
        try:
            network.load_state_dict(state["model"])
        except RuntimeError as error:
            raise DGPError(
                f"checkpoint does not fit the network in the run config ({str(error).splitlines()[0]})",
                checkpoint or self.last_checkpoint,
            ) from error
        return network.to(device).eval()

    def read_loss_log(self) -> list[dict[str, float]]:
        return read_loss_log(self.loss_log)

    @property
    def finished(self) -> bool:
        """Whether training and the posterior calibration both completed (``finished.json``)."""
        return (self.path / FINISHED).is_file()

    def require_finished(self) -> None:
        """Raise :class:`DGPError` unless the run is finished, saying how to finish it."""
        if self.finished:
            return
        resume = f"dgp-pyro train {self.config.project} --out {self.path} --resume"
        if not self.last_checkpoint.is_file() and not Checkpointer(self.checkpoints_dir).snapshots():
            raise DGPError(
                "the run is unfinished: training stopped before its first checkpoint",
                self.path,
                hint=f"train it again: `dgp-pyro train {self.config.project} --out {self.path}` "
                "with its settings",
            )
        raise DGPError(
            "the run is unfinished (training or its posterior calibration did not complete)",
            self.path,
            hint=f"finish it with `{resume}`",
        )


def mark_finished(run: Run) -> None:
    """Write ``RUN/finished.json``: the run's last file, after its calibration."""
    log = run.read_loss_log()
    atomic_write_json(run.path / FINISHED, {"step": int(log[-1]["step"]) if log else 0})


def build_network(config: RunConfig, pretrained: bool = True, seed: int | None = None) -> HeatmapNet:
    """A fresh :class:`~dgp_pyro.nets.HeatmapNet` for ``config``.

    Args:
        config: the run's settings (keypoints, backbone, stride, offset head, weights).
        pretrained: load ``config.weights`` (off when a checkpoint's weights follow anyway).
        seed: draw the random initialisation from this seed (global RNG untouched).
    """
    return HeatmapNet(
        len(config.keypoints),
        backbone=config.backbone,
        stride=config.stride,
        weights=resolve_weights(config.backbone, config.weights) if pretrained else None,
        offset_head=config.offset_head,
        seed=seed,
    )


def resolve_device(device: str) -> torch.device:
    """``torch.device(device)``; a CUDA device that is not there raises :class:`DGPError`."""
    try:
        dev = torch.device(device)
    except RuntimeError as error:
        raise DGPError(f"unknown device {device!r}", hint="use cpu or cuda") from error
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DGPError("--device cuda was requested but no CUDA device is available", hint="use --device cpu")
    if dev.type not in ("cpu", "cuda"):
        raise DGPError(f"unsupported device {device!r}", hint="use cpu or cuda")
    return dev


def load_run(path: str | Path) -> Run:
    """Read a run folder's config and split (checkpoints are read on demand)."""
    path = Path(path)
    if not path.is_dir():
        raise DGPError("run folder not found", path, hint="train one with `dgp-pyro train PROJECT --out RUN`")
    config_path = path / CONFIG
    if not config_path.is_file():
        raise DGPError(
            f"not a run folder (no {CONFIG})", path, hint="give the --out folder of `dgp-pyro train`"
        )
    config = read_run_config(config_path)
    return Run(path=path, config=config, split=read_split(path / SPLIT))


def read_split(path: Path) -> dict[str, list[str]]:
    """A run's ``split.json``: ``{"train": [image keys], "test": [image keys]}``, checked."""
    if not path.is_file():
        raise DGPError(
            "the run's split.json is missing (it lists the training and held-out frames)",
            path,
            hint="restore it from a copy of the run, or retrain",
        )
    split = read_json(path)
    ok = isinstance(split, dict) and all(
        isinstance(split.get(key), list) and all(isinstance(v, str) for v in split[key])
        for key in ("train", "test")
    )
    if not ok:
        raise DGPError('not a split: want {"train": [image keys], "test": [image keys]}', path)
    return {"train": list(split["train"]), "test": list(split["test"])}


def write_split(run_dir: Path, split: dict[str, list[str]]) -> None:
    atomic_write_json(Path(run_dir) / SPLIT, {"train": list(split["train"]), "test": list(split["test"])})


def prepare_run_dir(out: str | Path, config: RunConfig, resume: bool) -> tuple[Path, RunConfig | None]:
    """Check ``out`` can take this run; return the folder and, when resuming, the saved config.

    A folder that already holds a run (a config and a checkpoint) is refused unless ``resume``
    (then the saved config must agree with ``config`` on everything but
    :data:`RESUME_MAY_CHANGE`); ``resume`` of a folder with no run is refused too.
    """
    out = Path(out)
    existing = out / CONFIG
    if out.exists() and not out.is_dir():
        raise DGPError("--out exists and is not a folder", out)
    if not resume:
        # A folder whose run never reached its first checkpoint holds nothing worth keeping.
        checkpoints = out / CHECKPOINTS
        if existing.is_file() and ((checkpoints / LAST).is_file() or Checkpointer(checkpoints).snapshots()):
            raise DGPError(
                "--out already holds a run",
                out,
                hint="pass --resume to continue it, or choose another --out",
            )
        return out, None
    if not existing.is_file():
        raise DGPError(
            "--resume: no run to resume here (no config.json)", out, hint="drop --resume to start one"
        )
    saved = read_run_config(existing)
    read_loss_log(out / LOSS_LOG)  # a damaged log is refused before anything is written
    recover_last_checkpoint(out / CHECKPOINTS)
    # Settings left at "default" (None) take the saved run's resolved values.
    for name in ("size", "sigma", "warmup_steps", "absent_weight"):
        if getattr(config, name) is None:
            setattr(config, name, getattr(saved, name))
    if config.epochs is not None and config.epochs == saved.epochs:
        config.steps = saved.steps  # resolved from the epochs when the run started
    if not config.keypoints:
        config.keypoints = list(saved.keypoints)
        config.skeleton = [list(e) for e in saved.skeleton]
    diff = saved.differences(config)
    if diff:
        detail = ", ".join(
            f"{name}: run has {getattr(saved, name)!r}, now {getattr(config, name)!r}" for name in diff
        )
        raise DGPError(
            f"--resume with settings that differ from the run's ({detail})",
            out,
            hint="resume with the run's own settings (omit them), or start a new --out",
        )
    return out, saved


def recover_last_checkpoint(folder: Path) -> Path | None:
    """Make ``last.pt`` the newest complete checkpoint; return it (``None``: there is none).

    A run killed at any moment keeps a readable ``last.pt`` (every write is atomic), but one
    deleted or damaged by hand is replaced by the newest ``step_<N>.pt`` snapshot that loads,
    so ``--resume`` continues from there. Temporary files of a killed write are removed.
    """
    remove_stale_temporaries(folder)
    last = folder / LAST
    problem: DGPError | None = None
    if last.is_file():
        try:
            load_checkpoint(last)
            return last
        except DGPError as error:
            problem = error
    for _, snapshot in reversed(Checkpointer(folder).snapshots()):
        try:
            load_checkpoint(snapshot)
        except DGPError:
            continue
        with atomic_path(last) as tmp:
            tmp.write_bytes(snapshot.read_bytes())
        return last
    if problem is not None:
        raise problem
    return None


# --------------------------------------------------------------------------- loss log


def read_loss_log(path: str | Path) -> list[dict[str, float]]:
    path = Path(path)
    if not path.is_file():
        return []
    try:
        with open(path, newline="") as handle:
            rows = [
                {"step": int(row["step"]), **{k: float(row[k]) for k in LOSS_COLUMNS[1:]}}
                for row in csv.DictReader(handle)
            ]
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, csv.Error) as error:
        raise DGPError(
            f"the loss log cannot be read ({type(error).__name__}); want the columns "
            f"{', '.join(LOSS_COLUMNS)}",
            path,
            hint="restore it, or delete it to start a new log",
        ) from None
    return rows


def write_loss_log(path: str | Path, rows: list[dict[str, float]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(LOSS_COLUMNS)
        for row in rows:
            writer.writerow(
                [
                    int(row["step"]),
                    repr(float(row["loss"])),
                    repr(float(row["lr"])),
                    f"{float(row['seconds']):.3f}",
                ]
            )
