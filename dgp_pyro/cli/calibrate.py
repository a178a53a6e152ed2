"""``dgp-pyro calibrate``: estimate the cameras of a multi-view project from its labels.

For rigs without a calibration (a mirror setup, or cameras never calibrated): bundle
adjustment over the keypoints labeled in two or more views (see
:mod:`dgp_pyro.geometry.camera_estimation`), written as an Anipose calibration TOML that the 3D
model reads like any other.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from dgp_pyro.cli.options import add_view_arguments, holdout_argument
from dgp_pyro.data.output_paths import check_output_file
from dgp_pyro.data.project import load_project
from dgp_pyro.data.project_cameras import estimate_project_cameras


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "calibrate",
        help="estimate cameras from multi-view labels (no calibration needed) and write an Anipose TOML",
        description=(
            "Estimate the cameras of a multi-view project from the keypoints labeled in two or more "
            "views (affine factorisation, then robust bundle adjustment) and write them as an "
            "Anipose calibration TOML. World units are arbitrary: the first camera's axes, origin "
            "at the centroid of the labeled keypoints, RMS distance 100 from it."
        ),
    )
    parser.add_argument("project", help="project folder")
    add_view_arguments(parser)
    parser.add_argument("--out", required=True, help="calibration TOML to write (e.g. calibration.toml)")
    parser.add_argument(
        "--model",
        choices=("auto", "affine", "perspective"),
        default="auto",
        help="camera model; auto keeps perspective only if it lowers the held-out "
        "error meaningfully (default: auto)",
    )
    parser.add_argument(
        "--holdout",
        type=holdout_argument,
        default=0.2,
        metavar="FRACTION|FILE",
        help="labeled frames held out to measure the error: a share (default: 0.2, drawn with "
        "--seed) or a run's split JSON as `train --holdout FILE` reads it, so the cameras never see "
        "the frames the run is scored on",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the held-out draw (default: 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def run(args: argparse.Namespace) -> int:
    check_output_file(args.out, "--out")
    project = load_project(args.project, views=args.views, view_layout=getattr(args, "view_layout", None))
    by_file = isinstance(args.holdout, str)
    estimate = estimate_project_cameras(
        project,
        model=args.model,
        holdout_fraction=0.0 if by_file else args.holdout,
        seed=args.seed,
        holdout_file=args.holdout if by_file else None,
    )
    out = Path(args.out)
    estimate.cameras.to_toml(out)
    if args.json:
        summary = estimate.to_dict()
        summary["out"] = str(out)
        print(json.dumps(_finite(summary)))
        return 0
    held = estimate.heldout_reprojection_rmse_px
    print(f"model        {estimate.model}")
    print(f"views        {', '.join(project.views)}")
    print(f"frames       {len(estimate.fit_frames)} fitted, {len(estimate.heldout_frames)} held out")
    per_view = ", ".join(f"{k} {v:.2f}" for k, v in estimate.per_view_rmse_px.items())
    print(f"fit RMSE     {estimate.reprojection_rmse_px:.2f} px ({per_view})")
    print(f"held-out     {'n/a' if held is None else f'{held:.2f} px'}")
    for name, row in estimate.candidates.items():
        if name != estimate.model:
            other = row["heldout_reprojection_rmse_px"]
            print(
                f"{name:<12} fit {row['reprojection_rmse_px']:.2f} px, held-out "
                f"{'n/a' if other is None else f'{other:.2f} px'} (not kept)"
            )
    for note in estimate.notes:
        print(f"note         {note}")
    print(f"wrote        {out}")
    return 0


def _finite(obj):
    """NaN and infinities as None, so the output is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj
