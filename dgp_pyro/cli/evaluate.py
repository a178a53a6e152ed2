"""``dgp-pyro evaluate``: accuracy of a trained run on its held-out frames and against ground truth.

What is scored, and the keys of ``--json``, is :mod:`dgp_pyro.eval.evaluate`'s module doc
(:func:`~dgp_pyro.eval.evaluate.evaluate_run`); this module parses the options and prints.
"""

from __future__ import annotations

import argparse
import json

from dgp_pyro.eval.evaluate import PROJECT_TRUTH, TRUTH_SUBSETS, evaluate_run, plus_minus
from dgp_pyro.eval.metrics import format_table
from dgp_pyro.posterior.interval_fit import LOO_SE_WARNING
from dgp_pyro.run.folder import load_run


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="accuracy on the held-out labeled frames (and against ground truth with --truth)",
        description="Predict the run's held-out labeled images and report RMSE, median error and PCK; "
        "with --truth, also every video frame against ground-truth 2D points.",
    )
    parser.add_argument("run", help="run folder written by `dgp-pyro train`")
    parser.add_argument(
        "--truth",
        nargs="?",
        const=PROJECT_TRUTH,
        default=None,
        metavar="FILE",
        help="also score every video frame against ground truth: a ground_truth.npz, or nothing "
        "for the project's own",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per forward pass (default 16)")
    parser.add_argument(
        "--no-cache", action="store_true", help="predict again even if predictions are cached"
    )
    parser.add_argument(
        "--errors",
        default=None,
        metavar="DIR",
        help="also write where the held-out errors come from: errors.csv (each keypoint's error, "
        "heatmap peak and kind: swap, posterior, other_mode, missed), error_histograms.png and "
        "the worst cases on their images with their heatmaps (worst/)",
    )
    parser.add_argument(
        "--worst", type=int, default=12, metavar="N", help="worst keypoints drawn with --errors (default 12)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    run_ = load_run(args.run)
    result = evaluate_run(
        run_,
        args.truth,
        device=args.device,
        batch_size=args.batch_size,
        use_cache=not args.no_cache,
        progress=not args.json,
        errors_dir=args.errors,
        worst=args.worst,
    )
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"run          {result['run']} ({result['model']})")
    print(f"held out     {result['n_test_frames']} frames ({result['n_test_images']} images)")
    if result.get("n"):
        print(f"mean pose    rmse {result['mean_pose_rmse_px']:.2f} px (predicting the mean training pose)")
        print(format_table(result, title="held-out labeled frames"))
        for infix, what in (("", "coverage    "), ("3d_", "3D coverage ")):
            loo = {tag: result.get(f"coverage_loo_{infix}{tag}") for tag in ("50", "90", "95")}
            if all(value is not None for value in loo.values()):
                errors = {tag: result.get(f"coverage_loo_{infix}se_{tag}") for tag in loo}
                print(
                    f"{what} "
                    + ", ".join(
                        f"{tag} % {value:.2f}" + plus_minus(errors[tag]) for tag, value in loo.items()
                    )
                    + " (leave one frame out: what new frames can expect)"
                )
                if any((error or 0.0) > LOO_SE_WARNING for error in errors.values()):
                    print(
                        "             the held-out frames disagree: too few to pin the intervals down; "
                        "hold out more labeled frames (train --holdout)"
                    )
        for view, stats in result.get("per_view", {}).items():
            if stats["n"]:
                print(
                    f"view {view:<8} rmse {stats['rmse_px']:.2f} px, median {stats['median_px']:.2f} px "
                    f"({stats['n']} points)"
                )
    else:
        print("no held-out labeled frames to score (train with --holdout)")
    if "errors" in result:
        summary = result["errors"]
        kinds = ", ".join(f"{n} {kind}" for kind, n in summary["error_kinds"].items() if kind != "ok" and n)
        print(
            f"gross errors {summary['n_gross']} keypoints over {summary['gross_threshold_px']:g} px"
            + (f" ({kinds})" if kinds else "")
            + f"; analysis in {summary['errors_dir']}"
        )
    if "truth" in result:
        detail = result["truth"]
        print(
            f"\nground truth {detail['file']}: {detail['n_frames']} frames, "
            f"{detail['n_unlabeled_frames']} unlabeled"
        )
        for subset in TRUTH_SUBSETS:
            print()
            print(format_table(detail[subset], title=f"ground truth: {subset.replace('_', ' ')} points"))
    return 0
