"""Accuracy of the supervised baseline on a synthetic project, against ground truth.

A synthetic project (``write_synthetic_project``: one view, 128 x 128, ``--frames`` frames,
20 labeled frames, fixed seed) is trained with ``dgp-pyro train --model supervised``
(resnet18, 128 x 128, all 20 labeled frames, no holdout) for a fixed number of steps chosen
to take about 5 minutes on 2 CPU cores (``--quick``: about 1 minute). Then every frame of the
video is predicted and compared with the true 2D keypoints on the frames that were NOT
labeled: ``rmse_px``, ``median_px``, ``pck_5px``, ``pck_10px`` over all true points (hidden
ones included), ``visible_*`` over the points visible in the image, and for scale
``mean_pose_rmse_px``, the RMSE of predicting every keypoint at its mean training label.
This is the baseline every semi-supervised figure is compared against (same labels, same
network, same budget). CPU, ``torch.set_num_threads(2)``.

    python benchmarks/bench_supervised_accuracy.py [--quick] [--steps N] [--keep DIR]
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

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "bench_supervised_accuracy"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--labeled", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default 1000 (--quick: 200)")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--keep", type=Path, default=None, help="keep the project and run here")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{NAME}.json")
    args = parser.parse_args(argv)
    steps = args.steps or (200 if args.quick else 1000)
    torch.set_num_threads(args.threads)

    from dgp_pyro.data.synthetic.project import write_synthetic_project
    from dgp_pyro.eval.evaluate import PROJECT_TRUTH, evaluate_run
    from dgp_pyro.eval.metrics import keypoint_errors, mean_pose_baseline, summarize_errors
    from dgp_pyro.posterior.fit import fit_run
    from dgp_pyro.run import RunConfig

    work = Path(tempfile.mkdtemp(prefix="bench_supervised_"))
    try:
        size = (args.size, args.size)
        started = time.perf_counter()
        project = write_synthetic_project(
            work / "project", views=1, frames=args.frames, labeled=args.labeled, seed=args.seed, size=size
        )
        synth_seconds = time.perf_counter() - started
        config = RunConfig(
            project=str(project),
            model="supervised",
            backbone=args.backbone,
            size=list(size),
            steps=steps,
            holdout=0.0,
            seed=args.seed,
            checkpoint_every=max(steps, 1),
        )
        started = time.perf_counter()
        run = fit_run(config, work / "run", progress=False)
        train_seconds = time.perf_counter() - started
        started = time.perf_counter()
        report = evaluate_run(run, truth=PROJECT_TRUTH)
        predict_seconds = time.perf_counter() - started

        truth = np.load(project / "ground_truth.npz")
        points, visible, labeled = truth["points_2d"][:, 0], truth["visible"][:, 0], truth["labeled_frames"]
        unlabeled = np.setdiff1d(np.arange(len(points)), labeled)
        names = list(run.config.keypoints)
        baseline = mean_pose_baseline(
            np.where(visible[labeled][..., None], points[labeled], np.nan), len(unlabeled)
        )  # the training labels are the visible points of the labeled frames
        base = summarize_errors(keypoint_errors(baseline, points[unlabeled]), names)
        base_visible = summarize_errors(
            np.where(visible[unlabeled], keypoint_errors(baseline, points[unlabeled]), np.nan), names
        )
        final_loss = run.read_loss_log()[-1]["loss"]
        result = {
            "name": NAME,
            "backbone": args.backbone,
            "size": list(size),
            "frames": args.frames,
            "labeled": args.labeled,
            "seed": args.seed,
            "steps": steps,
            "batch_size": run.config.batch_size,
            "threads": args.threads,
            "quick": args.quick,
            "n_unlabeled_frames": int(len(unlabeled)),
            "rmse_px": report["truth_unlabeled_rmse_px"],
            "median_px": report["truth_unlabeled_median_px"],
            "pck_5px": report["truth_unlabeled_pck_5px"],
            "pck_10px": report["truth_unlabeled_pck_10px"],
            "visible_rmse_px": report["truth_unlabeled_visible_rmse_px"],
            "visible_median_px": report["truth_unlabeled_visible_median_px"],
            "visible_pck_5px": report["truth_unlabeled_visible_pck_5px"],
            "mean_pose_rmse_px": base["rmse_px"],
            "mean_pose_visible_rmse_px": base_visible["rmse_px"],
            "rmse_ratio_to_mean_pose": round(report["truth_unlabeled_rmse_px"] / base["rmse_px"], 4),
            "final_loss": final_loss,
            "train_seconds": round(train_seconds, 1),
            "predict_evaluate_seconds": round(predict_seconds, 1),
            "synth_seconds": round(synth_seconds, 1),
            "torch": torch.__version__,
            "device": "cpu",
        }
        if args.keep is not None:
            shutil.copytree(work, args.keep, dirs_exist_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    line = json.dumps(result)
    print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(line + "\n")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
