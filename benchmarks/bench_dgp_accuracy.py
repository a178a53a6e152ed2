"""Accuracy and calibration of the 2D variants on one synthetic project, against ground truth.

One synthetic project (one view, ``--frames`` frames, 20 labeled training frames, fixed seed)
and the same network (resnet18), seed, labels and number of steps for every variant:
``supervised``, ``temporal``, ``skeletal``, ``dgp``. Each is trained on the 20 frames, its
posterior variances are recalibrated on ``--calibration-labels`` more labeled frames held out
from training (default 4; :func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`, what every run
with ``--holdout`` does), its posterior is computed over the whole video, and scored on every
UNLABELED frame (neither training nor calibration labels) against the true 2D keypoints: RMSE,
median, PCK at 5 px, and the coverage of the 50 / 90 / 95 % credible intervals.

Each variant also gets two bounds on what a better posterior could reach from the same heatmaps
(:func:`error_bounds`): the RMSE if every hidden keypoint were exact, and if every left/right
pair were assigned to its true parts.

Prints one JSON line with every variant and the ratio dgp / supervised;
wall-clock training seconds are reported too, since a graphical-model step also sees the
unlabeled windows. CPU, ``torch.set_num_threads(2)``.

    python benchmarks/bench_dgp_accuracy.py [--quick] [--hard] [--steps N] [--variants supervised dgp]

``--hard`` renders the project with the nuisances of real videos
(:data:`dgp_pyro.data.synthetic.nuisances.HARD`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dgp_pyro.cli.options import add_model_option_argument

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "bench_dgp_accuracy"
VARIANTS = ("supervised", "temporal", "skeletal", "dgp")


def left_right_pairs(keypoints: list[str]) -> list[tuple[int, int]]:
    """Index pairs of keypoints whose names differ only by ``left`` / ``right``."""
    index = {name: k for k, name in enumerate(keypoints)}
    return [
        (k, index[name.replace("left", "right")])
        for k, name in enumerate(keypoints)
        if "left" in name and name.replace("left", "right") in index
    ]


def error_bounds(
    pred: np.ndarray, points: np.ndarray, visible: np.ndarray, pairs: list[tuple[int, int]]
) -> dict[str, float]:
    """RMSE of ``pred`` against ``points`` (both ``(T, K, 2)``), and two oracle bounds.

    ``rmse_hidden_exact_px``: every keypoint not ``visible`` put exactly on its true position
    (what perfect occlusion handling would give); ``rmse_swaps_undone_px``: in every frame each
    of the ``pairs`` assigned to its two true positions the cheaper way (what a prior that never
    swaps left and right would give). ``hidden_share_of_squared_error``: the share of the
    squared error on hidden keypoints.
    """
    squared = np.sum((pred - points) ** 2, -1)
    unswapped = pred.copy()
    for left, right in pairs:
        swapped = np.sum((pred[:, [right, left]] - points[:, [left, right]]) ** 2, (-1, -2))
        flip = swapped < squared[:, left] + squared[:, right]
        unswapped[flip, left], unswapped[flip, right] = pred[flip, right], pred[flip, left]
    return {
        "rmse_px": float(np.sqrt(squared.mean())),
        "rmse_hidden_exact_px": float(np.sqrt(np.where(visible, squared, 0.0).mean())),
        "rmse_swaps_undone_px": float(np.sqrt(np.sum((unswapped - points) ** 2, -1).mean())),
        "hidden_share_of_squared_error": float(squared[~visible].sum() / squared.sum()),
    }


def run_error_bounds(run, project: Path) -> dict[str, float]:
    """:func:`error_bounds` of a run's video predictions over the synthetic project's unlabeled frames."""
    from dgp_pyro.data.predictions import read_predictions
    from dgp_pyro.posterior.predict import prediction_stem

    truth = np.load(project / "ground_truth.npz")
    keypoints = [str(k) for k in truth["keypoints"]]
    table = read_predictions(run.predictions_dir / f"{prediction_stem('session0.mp4', run.scorer)}.h5")
    pred = table.xy[:, [list(table.keypoints).index(k) for k in keypoints]].astype(float)
    unlabeled = np.ones(len(pred), bool)
    unlabeled[truth["labeled_frames"]] = False
    return error_bounds(
        pred[unlabeled],
        truth["points_2d"][unlabeled, 0],
        truth["visible"][unlabeled, 0],
        left_right_pairs(keypoints),
    )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--labeled", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default 600 (--quick: 150)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--calibration-labels", type=int, default=4, help="held-out frames for calibration")
    parser.add_argument(
        "--absent-weight", type=float, default=None, help="RunConfig.absent_weight (default: its default)"
    )
    add_model_option_argument(parser, help="a model option")
    parser.add_argument(
        "--hard",
        action="store_true",
        help="the hard renderer (look-alike limbs, texture, distractors, motion blur, lighting)",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="keep the project and runs here")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{NAME}.json")
    args = parser.parse_args(argv)
    steps = args.steps or (150 if args.quick else 600)
    torch.set_num_threads(args.threads)

    from dgp_pyro.data.synthetic.project import write_synthetic_project
    from dgp_pyro.eval.evaluate import PROJECT_TRUTH, evaluate_run
    from dgp_pyro.posterior.fit import fit_run
    from dgp_pyro.run import RunConfig

    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_dgp_"))
    size = (args.size, args.size)
    project = work / "project"
    if not project.exists():
        write_synthetic_project(
            project,
            views=1,
            frames=args.frames,
            labeled=args.labeled + args.calibration_labels,
            seed=args.seed,
            size=size,
            hard=args.hard,
        )
    options = dict(args.option)
    result: dict = {
        "name": NAME,
        "backbone": args.backbone,
        "size": list(size),
        "frames": args.frames,
        "labeled": args.labeled,
        "calibration_labels": args.calibration_labels,
        "options": options,
        "steps": steps,
        "seed": args.seed,
        "threads": args.threads,
        "quick": args.quick,
        "hard": args.hard,
    }
    try:
        for variant in args.variants:
            config = RunConfig(
                project=str(project),
                model=variant,
                backbone=args.backbone,
                size=list(size),
                steps=steps,
                holdout=args.calibration_labels / (args.labeled + args.calibration_labels),
                seed=args.seed,
                checkpoint_every=max(steps, 1),
                model_options=dict(options) if variant != "supervised" else {},
                absent_weight=args.absent_weight,  # None: the model's default
            )
            started = time.perf_counter()
            run = fit_run(config, work / variant, progress=False)
            seconds = time.perf_counter() - started
            report = evaluate_run(run, truth=PROJECT_TRUTH, use_cache=False)
            result[variant] = {
                "rmse_px": report["truth_unlabeled_rmse_px"],
                "median_px": report["truth_unlabeled_median_px"],
                "pck_5px": report["truth_unlabeled_pck_5px"],
                "visible_rmse_px": report["truth_unlabeled_visible_rmse_px"],
                "hidden_rmse_px": report["truth_unlabeled_hidden_rmse_px"],
                "coverage_50": report.get("truth_coverage_50"),
                "coverage_90": report.get("truth_coverage_90"),
                "coverage_95": report.get("truth_coverage_95"),
                "train_seconds": round(seconds, 1),
                "absent_weight": run.config.absent_weight,
                "bounds": run_error_bounds(run, project),
            }
            calibration = run.path / "posterior_calibration.json"
            if calibration.is_file():
                result[variant]["variance_scale"] = json.loads(calibration.read_text())["variance_scale"]
        if "supervised" in result:
            base = result["supervised"]["rmse_px"]
            for variant in args.variants:
                if variant != "supervised":
                    result[f"rmse_ratio_{variant}_supervised"] = round(result[variant]["rmse_px"] / base, 4)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    result["torch"] = torch.__version__
    line = json.dumps(result)
    print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(line + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
