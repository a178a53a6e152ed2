"""The demo (``dgp-pyro demo``): the main job on the bundled synthetic project, with a report.

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

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgp_pyro.atomic import atomic_write_json, atomic_write_text
from dgp_pyro.data.output_paths import check_output_folder
from dgp_pyro.data.project import Project, load_project
from dgp_pyro.data.project_cameras import estimate_project_cameras
from dgp_pyro.data.synthetic import write_synthetic_project
from dgp_pyro.errors import DGPError
from dgp_pyro.eval.evaluate import evaluate_run, plus_minus
from dgp_pyro.eval.metrics import keypoint_errors, summarize_errors
from dgp_pyro.eval.project_posteriors import project_posteriors
from dgp_pyro.eval.report_figures import read_truth, report_figures
from dgp_pyro.model.registry import MODELS, MODELS_3D
from dgp_pyro.paths import BUNDLED_PROJECT
from dgp_pyro.posterior.fit import fit_run
from dgp_pyro.posterior.marginals import KeypointPosterior, interval_coverage
from dgp_pyro.run.config import RunConfig
from dgp_pyro.run.folder import FINISHED, Run, load_run

#: The demo's models, in report order.
DEMO_MODELS = ("supervised", "dgp", "dgp3d")
#: The bundled project's network and schedule. Its small, clean synthetic frames need neither
#: ImageNet weights nor a long schedule, and the demo stays at minutes on a laptop; a real
#: project (``--project``) gets what ``dgp-pyro train`` uses (:class:`RunConfig`'s defaults).
BUNDLED_BACKBONE = "resnet18"
BUNDLED_STEPS = 150
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


def run_demo(
    out: str | Path,
    project_path: str | Path | None = None,
    *,
    steps: int | None = None,
    backbone: str | None = None,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    models: Sequence[str] = DEMO_MODELS,
    views: list[str] | None = None,
    view_layout: str | None = None,
    calibration: str | Path | None = None,
    device: str = "cpu",
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``models`` on a project (default: the bundled one), score them, write ``out/report.md``.

    Also ``out/metrics.json`` (the summary returned), ``out/runs/<model>``,
    ``out/predictions/<model>`` and the figures; finished runs are reused, interrupted ones
    resumed. ``say`` receives the progress messages. See the module doc. ``steps`` and
    ``backbone`` left out: :data:`BUNDLED_STEPS` and :data:`BUNDLED_BACKBONE` on the bundled
    project, ``dgp-pyro train``'s defaults on ``project_path``.
    """
    say = say or (lambda message: None)
    models = list(models)
    out = check_output_folder(out, "--out")  # before any work
    bundled = project_path is None
    backbone = backbone or (BUNDLED_BACKBONE if bundled else RunConfig.backbone)
    steps = steps if steps is not None else (BUNDLED_STEPS if bundled else RunConfig.steps)
    if steps < 1:
        raise DGPError(f"--steps {steps} must be at least 1")
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        raise DGPError(f"unknown model(s) {', '.join(unknown)}", hint=f"models: {', '.join(MODELS)}")
    started = time.perf_counter()
    if project_path is not None:
        project_dir = Path(project_path)
    elif BUNDLED_PROJECT.is_dir():
        project_dir = BUNDLED_PROJECT
    else:
        project_dir = out / "project"
        if not project_dir.exists():
            say("rendering a synthetic 3-camera project")
            write_synthetic_project(project_dir, views=3, frames=600, labeled=20, seed=seed)
    project = load_project(project_dir, views=views, view_layout=view_layout)
    say(f"project {project_dir}: {len(project.frame_keys)} labeled frames, views {', '.join(project.views)}")
    if not project.sessions:
        raise DGPError(
            "the demo predicts the project's videos, and this project has none",
            project.root,
            hint="add the videos the labeled frames came from (videos/), or use dgp-pyro train / evaluate",
        )
    out.mkdir(parents=True, exist_ok=True)
    cameras_file, cameras = _calibration(project, models, calibration, seed, out, say)
    if calibration is not None and not any(m in MODELS_3D for m in models):
        raise DGPError("--calibration is for the 3D models, and none was asked for", calibration)
    has_truth = project.ground_truth is not None
    results, posteriors, points3d, runs = {}, {}, {}, {}
    for model in models:
        run_dir = out / "runs" / model
        config = RunConfig(
            project=str(project_dir),
            model=model,
            backbone=backbone,
            **({"size": list(size)} if size else {}),
            steps=steps,
            batch_size=8,
            seed=seed,
            holdout=0.2,
            device=device,
            checkpoint_every=max(50, steps // 4),
            views=views,
            view_layout=view_layout,
            model_options={"calibration": str(cameras_file)} if model in MODELS_3D else {},
        )
        resume = (run_dir / "checkpoints" / "last.pt").is_file()
        if resume and _finished(run_dir, steps):
            say(f"{model}: already trained in {run_dir}")
        else:
            how = "resuming" if resume else "new run"
            say(f"training {model} for {steps} steps ({how}) -> {run_dir}")
        if not _finished(run_dir, steps):
            fit_run(config, run_dir, resume=resume, progress=True)
        runs[model] = load_run(run_dir)
        say(f"posterior over every frame of every video ({model})")
        posteriors[model], points3d[model] = project_posteriors(
            runs[model], out / "predictions" / model, cameras_file
        )
        if has_truth:
            results[model] = _score(project, posteriors[model], points3d[model])
        else:
            results[model] = _score_heldout(runs[model], device)
        where = f", 3D {results[model]['rmse_3d']:.2f}" if results[model].get("rmse_3d") is not None else ""
        frames = "unlabeled frames" if has_truth else "held-out labeled frames"
        say(f"{model}: RMSE {_number(results[model]['rmse_px'])} px on {frames}{where}")

    say("plots and report")
    plots = report_figures(project, posteriors, points3d, out)
    summary = {
        "project": str(project_dir),
        "steps": steps,
        "backbone": backbone,
        "ground_truth": has_truth,
        "calibration": None if cameras_file is None else str(cameras_file),
        "estimated_cameras": cameras,
        "models": results,
    }
    summary["seconds"] = time.perf_counter() - started
    atomic_write_json(out / "metrics.json", summary)
    atomic_write_text(out / "report.md", _report(summary, plots, runs, out))
    say(f"done in {summary['seconds']:.0f} s: {out / 'report.md'}")
    return summary


def _calibration(
    project: Project,
    models: list[str],
    calibration: str | Path | None,
    seed: int,
    out: Path,
    say: Callable[[str], None],
) -> tuple[Path | None, dict | None]:
    """The cameras the demo uses: ``--calibration``, the project's, or estimated from its labels.

    Returns the calibration file (None for a project that is single-view or not asked for 3D
    models and has none) and, when the cameras were estimated, the estimate's summary.
    """
    wants_3d = [m for m in models if m in MODELS_3D]
    if wants_3d and len(project.views) < 2:
        raise DGPError(
            "the 3D models need a calibrated multi-view project",
            project.root,
            hint=f"leave out {', '.join(wants_3d)}, or name the views of a mirror project (--views top bot)",
        )
    if calibration is not None:
        path = Path(calibration)
        if not path.is_file():
            raise DGPError("calibration file not found", path)
        return path.absolute(), None
    if project.calibration is not None or len(project.views) < 2 or not wants_3d:
        return project.calibration, None
    say("no calibration: estimating the cameras from the labels (as dgp-pyro calibrate does)")
    estimate = estimate_project_cameras(project, seed=seed)
    path = out / "calibration.toml"
    estimate.cameras.to_toml(path)
    held = estimate.heldout_reprojection_rmse_px
    say(
        f"{estimate.model} cameras -> {path}: reprojection {estimate.reprojection_rmse_px:.2f} px, "
        f"held-out {_number(held)} px"
    )
    keys = ("model", "reprojection_rmse_px", "heldout_reprojection_rmse_px")
    estimated = estimate.to_dict()
    summary = {key: estimated[key] for key in keys}
    return path.absolute(), summary


def _score_heldout(run: Run, device: str) -> dict[str, float | None]:
    """A project without ground truth: ``dgp-pyro evaluate``'s figures on the run's held-out labels."""
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
    """A run trained for ``steps`` and calibrated (its ``finished.json``; see :func:`fit_run`)."""
    marker = run_dir / FINISHED
    if not marker.is_file():
        return False
    try:
        return int(json.loads(marker.read_text()).get("step", 0)) >= steps
    except (ValueError, AttributeError, TypeError):
        return False


def _score(
    project: Project, posteriors: dict[str, KeypointPosterior], points3d: dict[str, tuple]
) -> dict[str, float]:
    """RMSE (unlabeled, visible-unlabeled), PCK and coverage against the ground truth; 3D RMSE."""
    truth = read_truth(project)
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


def _number(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _table(summary: dict) -> tuple[list[str], str]:
    """The comparison table's rows and what its numbers are."""
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


def _report(summary: dict, plots: dict[str, str], runs: dict[str, Run], out: Path) -> str:
    """``report.md``: what was run, the comparison table, the RMSE ratios, the figures, where things went."""
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
