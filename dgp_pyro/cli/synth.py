"""``dgp-pyro synth``: write a synthetic multi-view project with ground truth."""

from __future__ import annotations

import argparse

from dgp_pyro.cli.options import parse_size
from dgp_pyro.data.synthetic import write_synthetic_project


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "synth",
        help="write a synthetic multi-view animal project (videos, labels, calibration, ground truth)",
        description="Render a synthetic animal seen by calibrated cameras and write it as an ordinary "
        "DeepLabCut-style project with an Anipose calibration and a ground-truth file.",
    )
    parser.add_argument("--out", required=True, help="folder to create (must not exist or be empty)")
    parser.add_argument("--views", type=int, default=3, help="number of cameras (default 3)")
    parser.add_argument("--frames", type=int, default=600, help="frames per video (default 600)")
    parser.add_argument("--labeled", type=int, default=20, help="number of labeled frames (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "--size", type=parse_size, default=(160, 128), help="frame size WxH of each view (default 160x128)"
    )
    parser.add_argument(
        "--layout",
        choices=("folders", "suffix"),
        default="folders",
        help="folders: one video per camera (default); suffix: every view side by side in one image, "
        "as a mirror rig records them (keypoint columns <kp>_<view>)",
    )
    parser.add_argument(
        "--hard",
        action="store_true",
        help="render with the nuisances of real videos: look-alike left/right limbs, a textured floor, "
        "part-like distractors, motion blur, lighting changes",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    out = write_synthetic_project(
        args.out,
        views=args.views,
        frames=args.frames,
        labeled=args.labeled,
        seed=args.seed,
        size=args.size,
        layout=args.layout,
        hard=args.hard,
    )
    print(f"wrote synthetic project to {out}")
    return 0
