"""``dgp-pyro demo``: the main job on the bundled synthetic project, with a report.

What it trains, scores and writes is :mod:`dgp_pyro.eval.report`'s module doc
(:func:`~dgp_pyro.eval.report.run_demo`); this module parses the options and prints the progress.
"""

from __future__ import annotations

import argparse
import time

from dgp_pyro.cli.options import add_view_arguments, parse_size
from dgp_pyro.data.augment import DEFAULT_MAX_SIDE
from dgp_pyro.eval.report import BUNDLED_BACKBONE, BUNDLED_STEPS, DEMO_MODELS, run_demo
from dgp_pyro.run.config import RunConfig


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="train supervised, Deep Graph Pose and 3D Deep Graph Pose on the bundled synthetic project "
        "and write a report",
        description="The main job end to end on CPU: train, predict whole videos with credible "
        "intervals, compare against ground truth, and write DIR/report.md with plots.",
    )
    parser.add_argument("--out", required=True, help="output folder (report.md, runs/, predictions/, plots)")
    parser.add_argument("--project", default=None, help="project to use (default: the bundled synthetic one)")
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training steps per model (default {BUNDLED_STEPS} on the bundled project, "
        f"{RunConfig.steps} as in dgp-pyro train on --project)",
    )
    parser.add_argument(
        "--backbone",
        default=None,
        help=f"network backbone (default {BUNDLED_BACKBONE} from scratch on the bundled project, "
        f"{RunConfig.backbone} from its packaged ImageNet weights as in dgp-pyro train on --project)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="training image size WxH (default: as dgp-pyro train, the frames scaled to a long side "
        f"of at most {DEFAULT_MAX_SIDE})",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--models", nargs="+", default=list(DEMO_MODELS), help="models to train and compare")
    add_view_arguments(parser)
    parser.add_argument(
        "--calibration",
        default=None,
        help="3D models: an Anipose calibration.toml (default: the project's, else estimated from labels)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    return parser


def _say(message: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(args: argparse.Namespace) -> int:
    run_demo(
        args.out,
        args.project,
        steps=args.steps,
        backbone=args.backbone,
        size=args.size,
        seed=args.seed,
        models=args.models,
        views=args.views,
        view_layout=args.view_layout,
        calibration=args.calibration,
        device=args.device,
        say=_say,
    )
    return 0
