"""``dgp-pyro predict``: the keypoint posterior over whole videos, as DeepLabCut-format files.

What is written, 2D and 3D, is :func:`dgp_pyro.posterior.predict_run.predict_run`'s module doc;
``--nwb`` also writes each posterior, spreads and intervals included, as an NWB file with the
ndx-pose extension (:func:`dgp_pyro.export.nwb.write_prediction_nwb`).
"""

from __future__ import annotations

import argparse

from dgp_pyro.cli.options import parse_level
from dgp_pyro.export.nwb import write_prediction_nwb
from dgp_pyro.posterior.predict_run import predict_run
from dgp_pyro.run.folder import load_run


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict keypoints in videos with a trained run (DeepLabCut .h5/.csv files)",
        description="Run a trained network over videos and write one DeepLabCut-format prediction "
        "file per video (x, y, likelihood, x_std, y_std per keypoint).",
    )
    parser.add_argument("run", help="run folder written by `dgp-pyro train`")
    parser.add_argument("videos", nargs="*", help="videos to predict (default: all of the project's videos)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN/predictions)")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per forward pass (default 16)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--checkpoint", default=None, help="checkpoint file (default: RUN/checkpoints/last.pt)"
    )
    parser.add_argument(
        "--levels",
        nargs="+",
        type=parse_level,
        default=[0.5, 0.9, 0.95],
        help="credible levels of the interval columns (default 0.5 0.9 0.95)",
    )
    parser.add_argument(
        "--nwb",
        action="store_true",
        help="also write NWB files (ndx-pose) with the posterior mean, spread and intervals",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    run_ = load_run(args.run)
    for prediction in predict_run(
        run_, args.videos, args.out, args.levels, device=args.device, checkpoint=args.checkpoint,
        batch_size=args.batch_size, progress=not args.quiet,
    ):  # fmt: skip
        paths = list(prediction.paths)
        if args.nwb:
            paths.append(write_prediction_nwb(prediction, run_.scorer))
        names = ", ".join(str(v) for v in prediction.videos)
        print(f"{names}: {len(prediction.posterior.mean)} frames -> {', '.join(str(p) for p in paths)}")
    return 0
