"""A training run's folder: its configuration, data split, checkpoints, loss log and outputs.

Layout of ``RUN/`` (every file written atomically)::

    config.json            RunConfig: everything the run was trained with
    split.json             {"train": [image keys], "test": [image keys]} (keys as in the label file)
    loss.csv               step, loss, lr, seconds (wall time since the run started, resumes included)
    checkpoints/last.pt    the newest checkpoint (model, optimizer, scheduler, step, RNG states)
    checkpoints/step_N.pt  snapshots every ``checkpoint_every`` steps, the newest few kept
    predictions/           prediction files written by ``dgp-pyro predict`` / ``evaluate``

The folder is model-agnostic: every trainer (``supervised`` here; the Deep Graph Pose
variants elsewhere) writes the same files, keeps its own settings in
``RunConfig.model_options``, and every reader (prediction, evaluation) works from
:func:`load_run` alone. Model names are listed once, in :data:`MODELS`.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from dgp_pyro.atomic import atomic_path, atomic_write_json
from dgp_pyro.data.augment import AugmentConfig
from dgp_pyro.errors import DGPError

if TYPE_CHECKING:  # pragma: no cover
    from dgp_pyro.data.project import Project
    from dgp_pyro.nets.heatmap_net import HeatmapNet

#: The multi-view 3D models (latent world keypoints seen through calibrated cameras).
MODELS_3D = ("dgp3d", "dgp3d_temporal", "dgp3d_skeletal", "dgp3d_bones")
#: Every model a run can be trained with; ``dgp-pyro train --model`` offers exactly these.
MODELS = ("supervised", "temporal", "skeletal", "dgp") + MODELS_3D

CONFIG = "config.json"
SPLIT = "split.json"
LOSS_LOG = "loss.csv"
CHECKPOINTS = "checkpoints"
PREDICTIONS = "predictions"
LOSS_COLUMNS = ("step", "loss", "lr", "seconds")

#: ``RunConfig.absent_weight`` when not given. Measured on the synthetic benchmarks: in one view,
#: empty maps for hidden parts cost their estimate (the network's guess of a part hidden under
#: the body was 5.7 px RMSE, the potentials' 6.8 px); with three cameras, they let a hidden
#: view drop out of the triangulation (supervised + DLT 7.81 -> 6.72 mm at 0.3, 6.79 at 0.1).
DEFAULT_ABSENT_WEIGHT = {"2d": 0.0, "3d": 0.3}


def default_absent_weight(model: str) -> float:
    """The ``absent_weight`` a run of ``model`` trains with when none is given."""
    return DEFAULT_ABSENT_WEIGHT["3d" if model in MODELS_3D else "2d"]


#: Settings added after runs were first saved, with the value that reproduces how a run saved
#: before them was trained (empty heatmaps for hidden parts did not exist: 0). A saved
#: ``config.json`` without one reads as that value (:func:`read_run_config`), so ``--resume``
#: continues an older run as it began instead of refusing it for a setting it never had.
LEGACY_SETTINGS: dict[str, Any] = {"absent_weight": 0.0}
#: The same for model options, by kind of model: the 2D guide's precision scales started at 1
#: (not calibrated from the labels) and its corrections shared the network's optimizer group;
#: the 3D windows trained the network.
LEGACY_MODEL_OPTIONS: dict[str, dict[str, Any]] = {
    "2d": {"calibrate_precision": False, "windows_train_network": True, "guide_lr": None},
    "3d": {"windows_train_network": True},
}

#: Settings that may differ between a run and its ``--resume`` (they do not change the result).
RESUME_MAY_CHANGE = frozenset({"device", "checkpoint_every", "keep_checkpoints"})


@dataclass
class RunConfig:
    """Everything a run is trained with; saved as ``RUN/config.json``.

    ``None`` for ``size``, ``sigma``, ``warmup_steps`` and ``absent_weight`` means "the default", which the
    trainer resolves and writes back before the first step, so a saved config is complete.

    Attributes:
        project: absolute path of the project folder.
        model: one of :data:`MODELS`.
        views: the project's views used (``None``: all).
        view_layout: how views are stored (``None``: detected).
        backbone: torchvision ResNet name (``resnet18``, ``resnet50``, ...).
        stride: output stride of the heatmaps (8 or 4, ...).
        weights: initial backbone weights: ``None`` (from scratch), a torchvision enum name
            (``IMAGENET1K_V1``) or a file.
        offset_head: whether the network also predicts sub-pixel offsets.
        size: training size ``[W, H]``, multiples of 32 (see :func:`dgp_pyro.data.augment.default_size`).
        steps: number of optimizer steps.
        batch_size: labeled images per step.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up from 0 to ``lr`` (default: 5 % of the steps, at most 200).
        lr_schedule: ``"cosine"`` (decay to ``min_lr_factor * lr``) or ``"constant"``.
        min_lr_factor: the final learning rate as a fraction of ``lr``.
        clip_grad_norm: gradient clipping (L2 norm of each optimizer parameter group: the
            network, and in the graphical models the guide apart); 0 disables.
        sigma: width of the Gaussian target, pixels at training size (default: ``stride``).
        absent_weight: weight of the loss that trains the heatmaps of keypoints missing from a
            labeled image (hidden, or outside it) towards zero, as DeepLabCut does; 0 ignores them
            (see :func:`dgp_pyro.nets.heatmap_loss`). Default (:data:`DEFAULT_ABSENT_WEIGHT`): 0
            for the 2D models, whose only guess of a hidden part is the network's; 0.3 for the
            3D models, where the other views place it.
        seed: seeds the split, the initialisation, the batches and the augmentation.
        holdout: a fraction of the labeled frames to hold out, or the absolute path of a JSON
            split file (``{"test": [...], "train": [...]}``).
        device: ``cpu`` or ``cuda``.
        checkpoint_every: steps between checkpoints.
        keep_checkpoints: how many ``step_N.pt`` snapshots to keep.
        augment: :class:`~dgp_pyro.data.augment.AugmentConfig` as a dict.
        keypoints: the network's keypoints (output channels), in order.
        skeleton: the project's skeleton edges (pairs of keypoint names).
        model_options: free settings of the model's own trainer (e.g. the DGP potentials).
    """

    project: str
    model: str = "supervised"
    views: list[str] | None = None
    view_layout: str | None = None
    backbone: str = "resnet50"
    stride: int = 8
    weights: str | None = None
    offset_head: bool = False
    size: list[int] | None = None
    steps: int = 1000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int | None = None
    lr_schedule: str = "cosine"
    min_lr_factor: float = 0.01
    clip_grad_norm: float = 5.0
    sigma: float | None = None
    absent_weight: float | None = None
    seed: int = 0
    holdout: float | str = 0.1
    device: str = "cpu"
    checkpoint_every: int = 100
    keep_checkpoints: int = 2
    augment: dict[str, Any] = field(default_factory=lambda: AugmentConfig().to_dict())
    keypoints: list[str] = field(default_factory=list)
    skeleton: list[list[str]] = field(default_factory=list)
    model_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path | None = None) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise DGPError(
                f"unknown run settings {unknown}", path, hint="was it written by a newer dgp-pyro?"
            )
        if "project" not in data:
            raise DGPError("the run config names no project", path)
        return cls(**data)

    @property
    def image_size(self) -> tuple[int, int]:
        """``(W, H)``; only valid once the trainer has resolved the default size."""
        if self.size is None:
            raise DGPError("the run config has no training size yet (training never started)")
        return int(self.size[0]), int(self.size[1])

    def differences(self, other: RunConfig, ignore: frozenset[str] = RESUME_MAY_CHANGE) -> list[str]:
        """Names of the settings that differ from ``other``, ignoring ``ignore``."""
        a, b = self.to_dict(), other.to_dict()
        return [name for name in a if name not in ignore and a[name] != b[name]]


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
        from dgp_pyro.data.project import load_project

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
        from dgp_pyro.infer.checkpoint import check_keypoints, load_checkpoint

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


def build_network(config: RunConfig, pretrained: bool = True, seed: int | None = None) -> HeatmapNet:
    """A fresh :class:`~dgp_pyro.nets.HeatmapNet` for ``config``.

    Args:
        config: the run's settings (keypoints, backbone, stride, offset head, weights).
        pretrained: load ``config.weights`` (off when a checkpoint's weights follow anyway).
        seed: draw the random initialisation from this seed (global RNG untouched).
    """
    from dgp_pyro.nets.heatmap_net import HeatmapNet

    return HeatmapNet(
        len(config.keypoints),
        backbone=config.backbone,
        stride=config.stride,
        weights=config.weights if pretrained else None,
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
    split_path = path / SPLIT
    split = _read_json(split_path) if split_path.is_file() else {"train": [], "test": []}
    return Run(path=path, config=config, split={"train": list(split["train"]), "test": list(split["test"])})


def read_run_config(path: str | Path) -> RunConfig:
    """A saved ``config.json``, with the settings it predates at their legacy values.

    A run saved before a setting or model option existed (:data:`LEGACY_SETTINGS`,
    :data:`LEGACY_MODEL_OPTIONS`) was trained as that value says; reading it so lets ``--resume``
    and ``predict`` treat the run as it was made. A config of a run that never started (no
    model options resolved yet) is read as written.
    """
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DGPError("a run config must be a JSON object", path)
    if data.get("size") is not None:  # resolved by a trainer, so written in full by some version
        for name, value in LEGACY_SETTINGS.items():
            data.setdefault(name, value)
    options, model = data.get("model_options"), data.get("model")
    if isinstance(options, dict) and options and model in MODELS and model != "supervised":
        legacy = LEGACY_MODEL_OPTIONS["3d" if model in MODELS_3D else "2d"]
        data["model_options"] = {**legacy, **options}
    return RunConfig.from_dict(data, path)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DGPError(f"cannot be read as JSON ({error})", path) from error


def write_config(run_dir: Path, config: RunConfig) -> None:
    atomic_write_json(Path(run_dir) / CONFIG, config.to_dict())


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
        if existing.is_file() and (out / CHECKPOINTS / "last.pt").is_file():
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
    # Settings left at "default" (None) take the saved run's resolved values.
    for name in ("size", "sigma", "warmup_steps", "absent_weight"):
        if getattr(config, name) is None:
            setattr(config, name, getattr(saved, name))
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


# --------------------------------------------------------------------------- loss log


def read_loss_log(path: str | Path) -> list[dict[str, float]]:
    path = Path(path)
    if not path.is_file():
        return []
    with open(path, newline="") as handle:
        return [
            {"step": int(row["step"]), **{k: float(row[k]) for k in LOSS_COLUMNS[1:]}}
            for row in csv.DictReader(handle)
        ]


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
