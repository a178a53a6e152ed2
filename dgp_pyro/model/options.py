"""A run's model options (``RunConfig.model_options``, ``--option NAME=VALUE``) and its model settings.

Each graphical family (:mod:`dgp_pyro.model.registry`) has its own options and defaults:
:data:`DEFAULT_OPTIONS` for the 2D Deep Graph Pose schedule (:mod:`dgp_pyro.train.dgp`) and
:data:`DEFAULT_OPTIONS_3D` for the 3D one (:mod:`dgp_pyro.train.dgp3d`); the measurements behind
the defaults are in those trainers' docstrings. :func:`resolve_options` fills a run's options in
from its family's defaults and refuses unknown names and values out of range
(:data:`OPTION_RANGES`, shared by both families). :func:`model_settings` and
:func:`model_settings3d` build the settings objects the 2D and 3D models take from a run's
config and options.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dgp_pyro.errors import DGPError
from dgp_pyro.model.dgp import ModelSettings
from dgp_pyro.model.dgp3d import VARIANTS_3D, Model3DSettings
from dgp_pyro.model.pseudo_observations3d import DEFAULT_ROBUST
from dgp_pyro.model.registry import model_spec
from dgp_pyro.model.views3d import ViewChannels
from dgp_pyro.run.config import RunConfig

#: Settings of the semi-supervised schedule (``--option NAME=VALUE`` on the command line).
DEFAULT_OPTIONS: dict[str, Any] = {
    "window": 8,  # frames per window
    "windows_per_step": 1,  # windows in each step's unlabeled batch
    "random_windows": 96,  # unlabeled windows in the pool (besides those around labels)
    "dgp_start": 0.6,  # fraction of the steps trained on labels only before the windows join
    "temporal_strength": 1.0,  # multiplies the data-driven temporal weights
    "skeletal_strength": 1.0,  # multiplies the skeletal weights (either skeleton)
    # the skeletal potential's edges: "project" (config.yaml's skeleton, the original zero-mean
    # potential), "learned" (a Chow-Liu forest of the labels with mean offsets and per-axis
    # weights, model.learned_skeleton), "none", or "auto": the project's if it has one, else learned
    "skeleton": "auto",
    "calibrate_precision": True,  # start the guide's precision scales from the training labels
    "label_sigma": 1.0,  # labeling noise, training pixels
    # probability that a heatmap is an outlier (a confident peak on the wrong blob): the guide and
    # the posterior weigh each heatmap by how well the potentials agree with it (model.outliers)
    "outlier_prob": 0.05,
    "unlabeled_weight": 0.1,  # windows' per-keypoint ELBO against the labeled loss (measured in train.dgp)
    "learn_weights": False,  # fit w_t and w_s by SVI as well
    # False: the windows fit only the guide; the network learns from the labels. False by default:
    # on real video the windows' pseudo-labels confirm the network's confident mistakes (measured
    # in train.dgp)
    "windows_train_network": False,
    # peak lr of the guide corrections (and learned weights): an optimizer group of their own, no
    # weight decay, clipped apart, as in dgp3d; null: in the network's group (measured in
    # train.dgp's docstring)
    "guide_lr": 0.02,
    "videos": [],  # extra videos for unlabeled windows, besides the project's
}

#: Settings of the 3D schedule (``--option NAME=VALUE``).
DEFAULT_OPTIONS_3D: dict[str, Any] = {
    "window": 8,  # synchronous frames per window (each frame counts V images)
    "windows_per_step": 1,  # windows in each step's unlabeled batch
    "random_windows": 48,  # unlabeled windows in the pool (besides those around labels)
    "dgp_start": 0.6,  # fraction of the steps trained on labels only (as in 2D, measured there)
    # multiplies the data-driven temporal weights: a random walk with the measured mean squared
    # step is too stiff for gait (oscillating paws); 0.1 measured best on the synthetic rig
    "temporal_strength": 0.1,
    "skeletal_strength": 1.0,  # multiplies the triangulated-label skeletal (or bone) weights
    "bone_sigma_floor": 0.05,  # dgp3d_bones: bone-length std at least this fraction of the length
    "label_sigma": 1.0,  # labeling noise, training pixels
    "unlabeled_weight": 0.1,  # windows' ELBO per keypoint, frame and view, against the labeled loss
    "robust": DEFAULT_ROBUST,  # robust view weights: k in heatmap spreads (0: plain confidence weighting)
    "learn_weights": False,  # fit w_t and w_s by SVI as well
    # False: the windows fit only the guide; the network learns from the labels alone (clipped
    # apart from the guide, so the windows cannot touch its step). False by default: with the empty
    # maps of hidden parts (RunConfig.absent_weight) the windows' pseudo-labels, which put a
    # bump at the reprojection in every view, contradict the labels (measured in train.dgp3d)
    "windows_train_network": False,
    "guide_lr": 0.02,  # peak lr of the guide corrections (and learned weights); null: the network's
    "calibrate_precision": True,  # start the precision scales from the labeled windows
    "calibration": None,  # an Anipose calibration.toml (default: the project's), --calibration
}

#: Model family -> its options and their defaults (the ``supervised`` network has none).
FAMILY_OPTIONS: dict[str, dict[str, Any]] = {"dgp": DEFAULT_OPTIONS, "dgp3d": DEFAULT_OPTIONS_3D}

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
    "outlier_prob": (0, True, 1, "in [0, 1): the probability that a heatmap is an outlier (0: off)"),
}
#: Options that may also be null.
NULLABLE_OPTIONS = ("robust", "guide_lr")
#: Options that name one of a few choices.
CHOICE_OPTIONS: dict[str, tuple[str, ...]] = {"skeleton": ("auto", "project", "learned", "none")}


def default_options(model: str) -> dict[str, Any]:
    """The options of ``model``'s family with their defaults (empty for ``supervised``)."""
    return dict(FAMILY_OPTIONS.get(model_spec(model).family, {}))


def resolve_options(config: RunConfig) -> dict[str, Any]:
    """The model options with the defaults of the model's family filled in.

    Extra videos (the 2D option ``videos``) become absolute paths.

    Raises:
        DGPError: an unknown option name, a video that is not there, a value out of range
            (:func:`check_option_values`).
    """
    defaults = default_options(config.model)
    unknown = sorted(set(config.model_options) - set(defaults))
    if unknown:
        raise DGPError(
            f"unknown model option(s) {', '.join(unknown)}",
            hint=f"known options: {', '.join(defaults)}",
        )
    options = {**defaults, **config.model_options}
    if "videos" in options:
        options["videos"] = [str(Path(v).expanduser().absolute()) for v in options["videos"]]
        for video in options["videos"]:
            if not Path(video).is_file():
                raise DGPError("video not found", video, hint="check the --videos paths")
    check_option_values(options)
    return options


def check_option_values(options: dict[str, Any]) -> None:
    """Refuse model options out of range (a non-positive potential strength, ...) before training.

    Raises:
        DGPError: naming the option, its value and what it may be.
    """
    for name, choices in CHOICE_OPTIONS.items():
        if name in options and options[name] not in choices:
            raise DGPError(
                f"model option {name}={options[name]!r} must be one of {', '.join(choices)}",
                hint=f"--option {name}={choices[0]}",
            )
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
    edges = config.skeleton_edges()
    return ModelSettings(
        variant=config.model,
        stride=int(config.stride),
        heatmap_sigma=float(config.sigma),
        edges=edges,
        label_sigma=float(options["label_sigma"]),
        unlabeled_weight=float(options["unlabeled_weight"]),
        absent_weight=float(config.absent_weight),
        outlier_prob=float(options.get("outlier_prob", 0.0)),
        image_size=config.image_size,
    )


def model_settings3d(
    config: RunConfig, options: dict[str, Any] | None = None, channels: ViewChannels | None = None
) -> Model3DSettings:
    """The :class:`Model3DSettings` of a run (a ``supervised`` run gives the potential-free variant).

    ``channels``: the run's network channels (default: one per keypoint, the folders layout); the
    skeleton edges between channels (per view in the suffix layout) become edges between the
    3D keypoints, each once.
    """
    options = {**DEFAULT_OPTIONS_3D, **(options if options is not None else config.model_options)}
    if config.model not in VARIANTS_3D:
        raise DGPError(
            f"model {config.model!r} has no 3D form",
            hint=f"3D models: {', '.join(m for m in VARIANTS_3D)}",
        )
    if channels is None:
        edges = config.skeleton_edges()
    else:
        edges = []
        for a, b in config.skeleton:
            edge = (channels.keypoint_of(a), channels.keypoint_of(b))
            if edge[0] != edge[1] and edge not in edges and edge[::-1] not in edges:
                edges.append(edge)
    robust = options.get("robust")
    return Model3DSettings(
        variant=config.model,
        stride=int(config.stride),
        heatmap_sigma=float(config.sigma if config.sigma is not None else config.stride),
        edges=edges,
        label_sigma=float(options["label_sigma"]),
        unlabeled_weight=float(options["unlabeled_weight"]),
        absent_weight=float(config.absent_weight),
        robust=float(robust) if robust else None,
    )
