"""``dgp-pyro demo``: the main job on the bundled synthetic project, with a report.

Trains the ``supervised`` baseline, 2D Deep Graph Pose (``dgp``, each view on its own) and
multi-view 3D Deep Graph Pose (``dgp3d``) on the same labeled frames with the same network and
budget, computes the posterior over every frame of every view's video, scores them against the
synthetic ground truth (2D on unlabeled frames, credible interval coverage, and 3D: the 2D
models' posterior means triangulated by confidence-weighted DLT, ``dgp3d``'s own 3D posterior),
and writes ``DIR/report.md`` with the comparison table and the plots.

``--project`` runs the same comparison on any project. Without a ``ground_truth.npz`` (real
data) every model is scored on its held-out labeled frames instead (``dgp-pyro evaluate``'s
figures: errors, and the coverage of intervals recalibrated without the image they score), and
the plots show the posteriors without truth. A multi-view project without a calibration (a
mirror rig: ``--views top bot``) gets its cameras estimated from the labels first
(``dgp-pyro calibrate``; written to ``DIR/calibration.toml``) so ``dgp3d`` can run.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from dgp_pyro.atomic import atomic_write_json, atomic_write_text
from dgp_pyro.cli.options import add_view_arguments, parse_size
from dgp_pyro.errors import DGPError

#: The demo's models, in report order.
DEMO_MODELS = ("supervised", "dgp", "dgp3d")
LEVELS = (0.5, 0.9, 0.95)
#: What the report's table holds, with ground truth (synthetic projects) and without it.
TRUTH_NOTE = """\
Errors are against the synthetic ground truth on every unlabeled frame of every camera's video; coverage
is the share of true coordinates inside the posterior's equal-tailed credible intervals (for `dgp3d`, its
3D posterior reprojected into each view). 3D errors: `dgp3d`'s 3D posterior mean; for the 2D models,
their posterior means triangulated by confidence-weighted DLT (what a DeepLabCut + Anipose user would
get)."""
HELDOUT_NOTE = """\
The project has no ground truth, so every model is scored on the labeled frames it held out of training
(`dgp-pyro evaluate`'s figures: its posterior mean against the labels, in the images' pixels; per view
for a multi-view project, the 3D model through the reprojection of its 3D posterior). Coverage is the
share of held-out label coordinates inside each credible interval, each frame scored with the intervals
recalibrated on the other held-out frames only (leave-one-out: what new frames can expect), with its
standard error over frames after +/-: with few held-out frames it is itself uncertain. The plots show
the posteriors over the project's video."""


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
    parser.add_argument("--steps", type=int, default=150, help="training steps per model (default 150)")
    parser.add_argument("--backbone", default="resnet18", help="ResNet backbone (default resnet18)")
    parser.add_argument(
        "--size", type=parse_size, default=None, help="training image size WxH (default: the frames' size)"
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
    from dgp_pyro.data.project import load_project
    from dgp_pyro.data.synthetic import write_synthetic_project
    from dgp_pyro.paths import BUNDLED_PROJECT
    from dgp_pyro.posterior.fit import fit_run
    from dgp_pyro.run import RunConfig, load_run

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    if args.project is not None:
        project_dir = Path(args.project)
    elif BUNDLED_PROJECT.is_dir():
        project_dir = BUNDLED_PROJECT
    else:
        project_dir = out / "project"
        if not project_dir.exists():
            _say("rendering a synthetic 3-camera project")
            write_synthetic_project(project_dir, views=3, frames=600, labeled=20, seed=args.seed)
    project = load_project(project_dir, views=args.views, view_layout=args.view_layout)
    _say(f"project {project_dir}: {len(project.frame_keys)} labeled frames, views {', '.join(project.views)}")

    from dgp_pyro.model.registry import MODELS, MODELS_3D

    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        raise DGPError(f"unknown model(s) {', '.join(unknown)}", hint=f"models: {', '.join(MODELS)}")
    if not project.sessions:
        raise DGPError(
            "the demo predicts the project's videos, and this project has none",
            project.root,
            hint="add the videos the labeled frames came from (videos/), or use dgp-pyro train / evaluate",
        )
    calibration, cameras = _calibration(project, args, out)
    if args.calibration is not None and not any(m in MODELS_3D for m in args.models):
        raise DGPError("--calibration is for the 3D models, and none was asked for", args.calibration)
    has_truth = project.ground_truth is not None
    results, posteriors, points3d, runs = {}, {}, {}, {}
    for model in args.models:
        run_dir = out / "runs" / model
        config = RunConfig(
            project=str(project_dir),
            model=model,
            backbone=args.backbone,
            **({"size": list(args.size)} if args.size else {}),
            steps=args.steps,
            batch_size=8,
            seed=args.seed,
            holdout=0.2,
            device=args.device,
            checkpoint_every=max(50, args.steps // 4),
            views=args.views,
            view_layout=args.view_layout,
            model_options={"calibration": str(calibration)} if model in MODELS_3D else {},
        )
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        if resume and _finished(run_dir, args.steps):
            _say(f"{model}: already trained in {run_dir}")
        else:
            how = "resuming" if resume else "new run"
            _say(f"training {model} for {args.steps} steps ({how}) -> {run_dir}")
        if not _finished(run_dir, args.steps):
            fit_run(config, run_dir, resume=resume, progress=True)
        runs[model] = load_run(run_dir)
        _say(f"posterior over every frame of every video ({model})")
        posteriors[model], points3d[model] = _video_posteriors(
            runs[model], out / "predictions" / model, calibration
        )
        if has_truth:
            results[model] = _score(project, posteriors[model], points3d[model])
        else:
            results[model] = _score_heldout(runs[model], args.device)
        where = f", 3D {results[model]['rmse_3d']:.2f}" if results[model].get("rmse_3d") is not None else ""
        frames = "unlabeled frames" if has_truth else "held-out labeled frames"
        _say(f"{model}: RMSE {_number(results[model]['rmse_px'])} px on {frames}{where}")

    _say("plots and report")
    plots = _plots(project, posteriors, points3d, out)
    summary = {
        "project": str(project_dir),
        "steps": args.steps,
        "backbone": args.backbone,
        "ground_truth": has_truth,
        "calibration": None if calibration is None else str(calibration),
        "estimated_cameras": cameras,
        "models": results,
    }
    summary["seconds"] = time.perf_counter() - started
    atomic_write_json(out / "metrics.json", summary)
    atomic_write_text(out / "report.md", _report(summary, plots, runs, out))
    _say(f"done in {summary['seconds']:.0f} s: {out / 'report.md'}")
    return 0


def _calibration(project, args: argparse.Namespace, out: Path) -> tuple[Path | None, dict | None]:
    """The cameras the demo uses: ``--calibration``, the project's, or estimated from its labels.

    Returns the calibration file (None for a project that is single-view or not asked for 3D
    models and has none) and, when the cameras were estimated, the estimate's summary.
    """
    from dgp_pyro.model.registry import MODELS_3D

    wants_3d = [m for m in args.models if m in MODELS_3D]
    if wants_3d and len(project.views) < 2:
        raise DGPError(
            "the 3D models need a calibrated multi-view project",
            project.root,
            hint=f"leave out {', '.join(wants_3d)}, or name the views of a mirror project (--views top bot)",
        )
    if args.calibration is not None:
        path = Path(args.calibration)
        if not path.is_file():
            raise DGPError("calibration file not found", path)
        return path.absolute(), None
    if project.calibration is not None or len(project.views) < 2 or not wants_3d:
        return project.calibration, None
    from dgp_pyro.geometry.camera_estimation import estimate_project_cameras

    _say("no calibration: estimating the cameras from the labels (as dgp-pyro calibrate does)")
    estimate = estimate_project_cameras(project, seed=args.seed)
    path = out / "calibration.toml"
    estimate.cameras.to_toml(path)
    held = estimate.heldout_reprojection_rmse_px
    _say(
        f"{estimate.model} cameras -> {path}: reprojection {estimate.reprojection_rmse_px:.2f} px, "
        f"held-out {_number(held)} px"
    )
    keys = ("model", "reprojection_rmse_px", "heldout_reprojection_rmse_px")
    estimated = estimate.to_dict()
    summary = {key: estimated[key] for key in keys}
    return path.absolute(), summary


def _score_heldout(run, device: str) -> dict[str, float | None]:
    """A project without ground truth: ``dgp-pyro evaluate``'s figures on the run's held-out labels."""
    from dgp_pyro.cli.evaluate import evaluate_run

    report = evaluate_run(run, device=device)
    keys = ("rmse_px", "median_px", "pck_5px", "n", "n_test_frames", "mean_pose_rmse_px")
    out = {key: report.get(key) for key in keys}
    for level in ("50", "90", "95"):
        out[f"coverage_{level}"] = report.get(f"coverage_{level}")
        out[f"coverage_loo_{level}"] = report.get(f"coverage_loo_{level}")
        out[f"coverage_loo_se_{level}"] = report.get(f"coverage_loo_se_{level}")
    if "per_view" in report:
        out["per_view_rmse_px"] = {view: stats["rmse_px"] for view, stats in report["per_view"].items()}
    out["rmse_3d"] = out["rmse_3d_hidden"] = None  # no 3D truth
    return out


def _finished(run_dir: Path, steps: int) -> bool:
    log = run_dir / "loss.csv"
    if not log.is_file():
        return False
    lines = log.read_text().strip().splitlines()
    return len(lines) > 1 and int(float(lines[-1].split(",")[0])) >= steps


def _video_posteriors(
    run, out_dir: Path, calibration: Path | None
) -> tuple[dict[str, object], dict[str, tuple]]:
    """Posterior over each view's video, written as DeepLabCut files; keyed by ``session/view``.

    Every entry is the posterior of one view's body parts (the project's ``bodyparts`` order):
    in the suffix layout (one image holds every view) a 2D run's video posterior is split into
    its views' channels, a body part a view lacks being NaN with zero confidence.

    Also the 3D estimate of each session, ``{session: (mean (T, J, 3), std or None)}``: a 3D
    run's posterior, or a 2D run's posterior means triangulated by confidence-weighted DLT
    (no 3D uncertainty), when there are cameras.
    """
    from dgp_pyro.model.dgp3d import ViewChannels
    from dgp_pyro.model.registry import MODELS_3D
    from dgp_pyro.posterior.posterior2d import video_posterior
    from dgp_pyro.posterior.posterior3d import videos_posterior3d, write_posterior3d
    from dgp_pyro.posterior.predict import prediction_stem, summaries_to_table, write_prediction_files
    from dgp_pyro.train.dgp3d import load_calibration, session_videos

    project = run.project()
    network = run.network()
    posteriors, points3d = {}, {}
    if run.config.model in MODELS_3D:
        for session in session_videos(project):
            posterior = videos_posterior3d(run, session.videos, LEVELS, network)
            write_posterior3d(posterior, out_dir, f"{session.name}_{run.scorer}", run.scorer, session.videos)
            for v, view in enumerate(project.views):
                posteriors[f"{session.name}/{view}"] = posterior.view_posterior(v)
            points3d[session.name] = (posterior.mean, posterior.std)
        return posteriors, points3d
    channels = ViewChannels.from_project(project)
    for session, videos in sorted(project.sessions.items()):
        per_image = {}  # image index -> posterior (the suffix layout: one video holds every view)
        for v, view in enumerate(project.views):
            image, video = channels.image[v], videos[view]
            if image not in per_image:
                per_image[image] = video_posterior(run, video, LEVELS, network=network)
                table = summaries_to_table(
                    per_image[image].as_summaries(),
                    run.config.keypoints,
                    run.scorer,
                    extras=per_image[image].interval_columns(),
                )
                write_prediction_files(table, out_dir, prediction_stem(video, run.scorer))
        images = [per_image[i] for i in range(channels.num_images)]
        for view, posterior in zip(project.views, _view_posteriors(channels, images), strict=True):
            posteriors[f"{session}/{view}"] = posterior
    if calibration is not None and len(project.views) >= 2:
        group = load_calibration(project, calibration)
        for session in sorted(project.sessions):
            views = [posteriors[f"{session}/{view}"] for view in project.views]
            mean = group.triangulate(
                np.stack([p.mean for p in views]), np.stack([p.confidence for p in views])
            )
            points3d[session] = (mean, None)
    return posteriors, points3d


def _view_posteriors(channels, images: list) -> list:
    """Each view's posterior over its body parts from the posteriors of a frame's images.

    :meth:`~dgp_pyro.model.dgp3d.ViewChannels.select` reads view ``v``'s channels: a body part
    a view lacks gets a NaN mean, covariance and bounds and zero confidence. One image per view
    with the body parts as channels (the folders layout) needs no selection, so videos of
    different lengths stay apart.
    """
    import torch

    from dgp_pyro.posterior.posterior2d import KeypointPosterior

    if channels.identity:
        return images

    def select(arrays: list[np.ndarray], tail: int, fill: float) -> np.ndarray:
        return channels.select(torch.from_numpy(np.stack(arrays, axis=1)), tail, fill).numpy()

    first = images[0]
    mean = select([p.mean for p in images], 1, np.nan)
    cov = select([p.cov for p in images], 2, np.nan)
    confidence = select([p.confidence for p in images], 0, 0.0)
    lower = {lv: select([p.lower[lv] for p in images], 1, np.nan) for lv in first.lower}
    upper = {lv: select([p.upper[lv] for p in images], 1, np.nan) for lv in first.upper}
    return [
        KeypointPosterior(
            mean[:, v],
            cov[:, v],
            confidence[:, v],
            first.frame_index,
            {lv: bound[:, v] for lv, bound in lower.items()},
            {lv: bound[:, v] for lv, bound in upper.items()},
        )
        for v in range(len(channels.views))
    ]


def _truth(project) -> dict[str, np.ndarray]:
    with np.load(project.ground_truth) as data:
        return {key: data[key] for key in ("points_2d", "points_3d", "visible", "labeled_frames")}


def _score(project, posteriors: dict[str, object], points3d: dict[str, tuple]) -> dict[str, float]:
    """RMSE (unlabeled, visible-unlabeled), PCK and coverage against the ground truth; 3D RMSE."""
    from dgp_pyro.eval.metrics import keypoint_errors, summarize_errors
    from dgp_pyro.posterior.posterior2d import interval_coverage

    truth = _truth(project)
    errors, visible_errors, coverage_parts = [], [], []
    for key, posterior in posteriors.items():
        view = project.views.index(key.split("/")[1])
        true_points = truth["points_2d"][:, view]
        unlabeled = np.ones(len(true_points), bool)
        unlabeled[truth["labeled_frames"]] = False
        dist = keypoint_errors(posterior.mean, true_points)
        errors.append(dist[unlabeled])
        visible_errors.append(np.where(truth["visible"][:, view], dist, np.nan)[unlabeled])
        coverage_parts.append(
            interval_coverage(posterior.select(np.flatnonzero(unlabeled)), true_points[unlabeled])
        )
    names = list(project.bodyparts)
    unlabeled_summary = summarize_errors(np.concatenate(errors), names)
    visible_summary = summarize_errors(np.concatenate(visible_errors), names)
    out = {
        "rmse_px": unlabeled_summary["rmse_px"],
        "median_px": unlabeled_summary["median_px"],
        "pck_5px": unlabeled_summary["pck_5px"],
        "rmse_visible_px": visible_summary["rmse_px"],
    }
    for name in coverage_parts[0]:
        out[name] = float(np.mean([part[name] for part in coverage_parts]))
    out["rmse_3d"] = out["rmse_3d_hidden"] = None
    if points3d:  # the bundled project has one session
        mean, _ = next(iter(points3d.values()))
        unlabeled = np.ones(len(mean), bool)
        unlabeled[truth["labeled_frames"]] = False
        error = np.linalg.norm(mean - truth["points_3d"], axis=-1)[unlabeled]
        hidden = ~truth["visible"].all(axis=1)[unlabeled]
        out["rmse_3d"] = float(np.sqrt(np.nanmean(error**2)))
        out["rmse_3d_hidden"] = float(np.sqrt(np.nanmean(error[hidden] ** 2))) if hidden.any() else None
    return out


def _plots(project, posteriors: dict[str, dict], points3d: dict[str, dict], out: Path) -> dict[str, str]:
    """Trajectories, a frame, the 3D skeleton, the models side by side, coverage (with ground truth)."""
    from dgp_pyro.data.video import VideoReader
    from dgp_pyro.viz import (
        plot_comparison,
        plot_coverage,
        plot_frame,
        plot_skeleton_3d,
        plot_trajectories,
        save_figure,
    )

    truth = _truth(project) if project.ground_truth is not None else None
    first_key = sorted(next(iter(posteriors.values())))[0]
    session, view = first_key.split("/")
    v = project.views.index(view)
    names = list(project.bodyparts)
    first = next(iter(posteriors.values()))[first_key]
    frames = slice(0, min(300, len(first.mean)))
    labeled = None if truth is None else truth["labeled_frames"]
    true_2d = None if truth is None else truth["points_2d"][:, v]
    # the first keypoints this view has (a mirror view may lack some)
    seen = [j for j in range(len(names)) if np.isfinite(first.mean[:, j]).any()]
    shown = [names[j] for j in (seen[:2] + seen[-1:])]
    plots = {}
    for model, per_video in posteriors.items():
        posterior = per_video[first_key]
        figure = plot_trajectories(
            posterior.mean[frames],
            {lv: posterior.lower[lv][frames] for lv in (0.5, 0.9)},
            {lv: posterior.upper[lv][frames] for lv in (0.5, 0.9)},
            names,
            keypoints=shown,
            labeled_frames=labeled,
            truth=None if true_2d is None else true_2d[frames],
            title=f"{model}: trajectories in {view} with 50 % and 90 % credible bands",
        )
        plots[f"trajectories_{model}"] = save_figure(figure, out / f"trajectories_{model}.png").name
    candidates = np.setdiff1d(np.arange(frames.stop), [] if labeled is None else labeled)
    frame = int(candidates[min(frames.stop // 2, len(candidates) - 1)])
    with VideoReader(project.sessions[session][view]) as reader:
        image = reader.read(frame)
    model = list(posteriors)[-1]
    posterior = posteriors[model][first_key]
    figure = plot_frame(
        image,
        posterior.mean[frame],
        posterior.cov[frame],
        names,
        skeleton=project.skeleton,
        truth=None if true_2d is None else true_2d[frame],
        title=f"{model}, {view} frame {frame}: 90 % ellipses" + ("" if truth is None else " (truth as x)"),
    )
    plots["frame"] = save_figure(figure, out / "frame.png").name
    with_std = [m for m, sessions in points3d.items() if sessions and sessions[session][1] is not None]
    if with_std:
        mean, std = points3d[with_std[-1]][session]
        figure = plot_skeleton_3d(
            mean[frame],
            std[frame],
            names,
            project.skeleton,
            truth=None if truth is None else truth["points_3d"][frame],
            title=f"{with_std[-1]}, frame {frame}: 3D posterior with 90 % bars"
            + ("" if truth is None else " (truth hollow)"),
            units="mm" if truth is not None else "",
        )
        plots["skeleton_3d"] = save_figure(figure, out / "skeleton_3d.png").name
    j = names.index(shown[0])
    estimates = {m: p[first_key].mean[frames, j] for m, p in posteriors.items()}
    bands = {
        m: (p[first_key].lower[0.9][frames, j], p[first_key].upper[0.9][frames, j])
        for m, p in posteriors.items()
    }
    figure = plot_comparison(
        np.arange(frames.stop),
        estimates,
        bands=bands,
        truth=None if true_2d is None else true_2d[frames, j],
        labeled_frames=labeled,
        keypoint_name=names[j],
        band_level=0.9,
    )
    plots["comparison"] = save_figure(figure, out / "comparison.png").name
    if truth is not None:
        levels = np.linspace(0.05, 0.95, 19)
        coverage = {m: _coverage_curve(project, p, levels) for m, p in posteriors.items()}
        plots["coverage"] = save_figure(plot_coverage(levels, coverage), out / "coverage.png").name
    return plots


def _coverage_curve(project, posteriors: dict[str, object], levels: np.ndarray) -> np.ndarray:
    from scipy.stats import norm

    truth = _truth(project)
    inside, count = np.zeros(len(levels)), 0
    for key, posterior in posteriors.items():
        v = project.views.index(key.split("/")[1])
        z = np.abs(truth["points_2d"][:, v] - posterior.mean) / posterior.std
        z = z[np.isfinite(z)]
        inside += (z[None, :] <= norm.ppf(0.5 + levels[:, None] / 2)).sum(1)
        count += z.size
    return inside / max(count, 1)


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(summary: dict) -> tuple[list[str], str]:
    """The comparison table's rows and what its numbers are."""
    from dgp_pyro.cli.evaluate import plus_minus
    rows = []
    if summary["ground_truth"]:
        rows.append(
            "| model | RMSE px (unlabeled frames) | median px | PCK 5 px | RMSE px (visible) "
            "| cov. 50 % | cov. 90 % | cov. 95 % | 3D RMSE mm | 3D RMSE mm (hidden in a view) |"
        )
        rows.append("|" + " --- |" * 10)
        for model, r in summary["models"].items():
            rows.append(
                f"| {model} | {r['rmse_px']:.2f} | {r['median_px']:.2f} | {r['pck_5px']:.3f} "
                f"| {r['rmse_visible_px']:.2f} "
                f"| {r['coverage_50']:.3f} | {r['coverage_90']:.3f} | {r['coverage_95']:.3f} "
                f"| {_number(r.get('rmse_3d'))} | {_number(r.get('rmse_3d_hidden'))} |"
            )
        return rows, TRUTH_NOTE
    views = list(
        dict.fromkeys(view for r in summary["models"].values() for view in r.get("per_view_rmse_px") or {})
    )
    rows.append(
        "| model | RMSE px (held-out labels) | median px | PCK 5 px | points | "
        + "".join(f"RMSE px ({view}) | " for view in views)
        + "cov. 50 % | cov. 90 % | cov. 95 % |"
    )
    rows.append("|" + " --- |" * (8 + len(views)))
    for model, r in summary["models"].items():
        per_view = r.get("per_view_rmse_px") or {}
        rows.append(
            f"| {model} | {_number(r['rmse_px'])} | {_number(r['median_px'])} | {_number(r['pck_5px'], 3)} "
            f"| {r['n']} | "
            + "".join(f"{_number(per_view.get(view))} | " for view in views)
            + " | ".join(
                _number(r[f"coverage_loo_{level}"], 3) + plus_minus(r.get(f"coverage_loo_se_{level}"))
                for level in ("50", "90", "95")
            )
            + " |"
        )
    about = HELDOUT_NOTE
    cameras = summary.get("estimated_cameras")
    if cameras:
        about += f"""

The project had no calibration: its cameras were estimated from the labels ({cameras["model"]} model,
`{summary["calibration"]}`), with a reprojection error of {cameras["reprojection_rmse_px"]:.2f} px on the
labels used and {_number(cameras["heldout_reprojection_rmse_px"])} px on held-out labels."""
    return rows, about


def _report(summary: dict, plots: dict[str, str], runs: dict, out: Path) -> str:
    rows, about = _table(summary)
    models = list(summary["models"])
    ratio = ""
    base = summary["models"].get("supervised", {}).get("rmse_px")
    if base and len(models) > 1:
        ratio = "\n".join(
            f"- {m} / supervised RMSE ratio: **{summary['models'][m]['rmse_px'] / base:.3f}**"
            for m in models
            if m != "supervised" and summary["models"][m]["rmse_px"] is not None
        )
    images = "\n\n".join(f"![{name}]({file})" for name, file in plots.items())
    files = "\n".join(f"- `{name}`: {run.path}" for name, run in runs.items())
    return f"""# dgp-pyro demo report

Project: `{summary["project"]}`. Backbone {summary["backbone"]}, {summary["steps"]} training steps per model,
the same labeled frames, seed and budget for every model. Total time {summary["seconds"]:.0f} s.

{about}

{chr(10).join(rows)}

{ratio}

{images}

## Where things went

{files}
- predictions (DeepLabCut CSV/H5: x, y, likelihood, x_std, y_std, interval bounds): `{out / "predictions"}`
- metrics: `{out / "metrics.json"}`
"""
