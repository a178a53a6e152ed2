"""``dgp-pyro predict``: the keypoint posterior over whole videos, as DeepLabCut-format files.

What is written, 2D and 3D, is :func:`dgp_pyro.posterior.predict_run.predict_run`'s module doc;
``--nwb`` also writes each posterior, spreads and intervals included, as an NWB file with the
ndx-pose extension (:func:`dgp_pyro.export.nwb.write_prediction_nwb`). Each video's (or 3D
session's) files get a manifest, and a video whose complete output is already there is skipped
(``--overwrite`` predicts it again); ``--engine ray`` runs one Ray task per video
(:mod:`dgp_pyro.scale.predict_many`). A video that fails is reported and the others go on.
"""

from __future__ import annotations

import argparse
import sys

from dgp_pyro.cli.options import parse_level
from dgp_pyro.run.folder import load_run
from dgp_pyro.scale.predict_many import ENGINES, predict_videos


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
    parser.add_argument(
        "--overwrite", action="store_true", help="predict again videos whose complete output is there"
    )
    parser.add_argument(
        "--engine", choices=ENGINES, default="serial",
        help="serial (default: one video after another here) or ray (one Ray task per video or session)",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=int, default=1, help="--engine ray: tasks at once (the local cluster's size)"
    )
    parser.add_argument(
        "--address",
        default=None,
        help="--engine ray: join this Ray cluster (e.g. auto) instead of a local one",
    )
    parser.add_argument(
        "--gpus-per-worker", type=float, default=0.0,
        help="--engine ray: GPUs per task, fractional to share a GPU (needs --device cuda)",
    )  # fmt: skip
    parser.add_argument(
        "--cpus-per-worker", type=int, default=None,
        help="--engine ray: CPUs and torch threads per task (default: cores / workers; 1 with --address)",
    )  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def run(args: argparse.Namespace) -> int:
    run_ = load_run(args.run)
    counts = {"written": 0, "skipped": 0, "failed": 0}
    failures = []
    for outcome in predict_videos(
        run_, args.videos, args.out, args.levels, device=args.device, checkpoint=args.checkpoint,
        batch_size=args.batch_size, nwb=args.nwb, overwrite=args.overwrite, engine=args.engine,
        workers=args.workers, address=args.address, gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker, progress=not args.quiet,
    ):  # fmt: skip
        counts[outcome.status] += 1
        names = ", ".join(str(v) for v in outcome.job.videos)
        if outcome.status == "written":
            print(f"{names}: {outcome.frames} frames -> {', '.join(str(p) for p in outcome.paths)}")
        elif outcome.status == "skipped":
            print(f"{names}: skipped, its complete output is there ({outcome.job.stem}.manifest.json)")
        else:
            failures.append(outcome)
            print(f"dgp-pyro predict: error: {outcome.error}", file=sys.stderr)
    total = sum(counts.values())
    if total > 1:
        print(", ".join(f"{n} {status}" for status, n in counts.items()) + f" (of {total})")
    if failures and total > 1:
        print(
            f"dgp-pyro predict: {len(failures)} of {total} failed (above); the others are done",
            file=sys.stderr,
        )
    return 2 if failures else 0
