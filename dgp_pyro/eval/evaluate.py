"""Accuracy of a trained run on its held-out frames and against ground truth (``dgp-pyro evaluate``).

**Held-out labeled frames** (always): the run's ``split.json`` test images get the run's
posterior (:func:`~dgp_pyro.posterior.posterior2d.image_posteriors`: in their video context when
they were extracted from one of the project's videos) and its mean is compared with their
labels, in the images' own pixels: ``rmse_px``, ``median_px``, ``mean_px``, ``pck_5px``,
``pck_10px`` (share of points within 5 / 10 px), ``n`` (scored points), ``n_test_frames``,
``per_keypoint``, in a multi-view project ``per_view`` (the same statistics for each view's
points: for a 3D run, the held-out reprojection error of its 3D posterior in each camera), for
scale ``mean_pose_rmse_px`` (the RMSE of predicting every keypoint at its mean training label),
and ``coverage_50``, ``coverage_90``, ``coverage_95``: the share of
held-out label coordinates inside each equal-tailed posterior interval. Training fits the
posterior's variance scale to these same labels
(:func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`), so their coverage is in-sample:
``posterior_variance_scale`` and ``variance_scale_fitted_on_heldout`` say so. What new frames
can expect is ``coverage_loo_50``, ``coverage_loo_90``, ``coverage_loo_95``: each held-out frame
(all its views) scored by intervals recalibrated on the other held-out frames only
(:func:`~dgp_pyro.posterior.interval_fit.leave_one_out_coverage`; None for runs trained before it, or
with fewer than two held-out frames), with its standard error over frames
``coverage_loo_se_50``, ... (None for runs calibrated before it was recorded); a 3D run also
has ``coverage_loo_3d_50``, ... and ``coverage_loo_3d_se_50``, ...: its 3D intervals against the
held-out labels triangulated. A standard error
over 0.05 means the held-out frames disagree and are too few to pin the intervals down: hold
out more labeled frames. Ground truth or other labels judge it best.

**Ground truth** (``--truth``): every frame of the project's videos is predicted and compared
with the true 2D points of a ``ground_truth.npz`` (synthetic projects: ``points_2d (T, V, J,
2)``, ``visible (T, V, J)``, ``keypoints``, ``views``, ``labeled_frames``). ``--truth`` alone
uses the project's own ``ground_truth.npz``; ``--truth FILE`` names one. Reported as
``truth_*`` keys over five sets of points: all frames (``truth_rmse_px``), the frames that
were not labeled (``truth_unlabeled_*``, what a tracker is for), the points visible in their
view (``truth_visible_*``), both (``truth_unlabeled_visible_*``), and the unlabeled points
hidden in their view (``truth_unlabeled_hidden_*``: where only the priors and the network's
guess of an unseen part can place them). In a multi-view project
each view's video is predicted by the shared network and compared with ``points_2d[:, v]``.

Against ground truth the posterior over whole videos is scored the same way, with
``truth_coverage_*`` over all frames. A 3D run (``dgp3d`` ...) is scored through the
reprojection of its 3D posterior into each view, and, where the ground truth has
``points_3d``, in world units: ``truth_3d_rmse``, ``truth_3d_unlabeled_rmse``,
``truth_3d_hidden_rmse`` (points hidden in at least one view), ``truth_3d_coverage_*``.

**Cached predictions**: posteriors are written to ``RUN/predictions/`` (videos:
``<stem>_<scorer>.h5``; held-out images: ``labeled_test_<scorer>.h5``) with their interval
columns and read back instead of predicting again when they are newer than the run's last
checkpoint (:mod:`dgp_pyro.eval.prediction_cache`).
"""

from __future__ import annotations

from pathlib import Path
from statistics import NormalDist
from typing import Any

import numpy as np

from dgp_pyro.data.predictions import PredictionTable
from dgp_pyro.data.project import Project
from dgp_pyro.errors import DGPError
from dgp_pyro.eval.error_analysis import write_error_analysis
from dgp_pyro.eval.ground_truth import channel_map, load_truth, truth_session
from dgp_pyro.eval.metrics import keypoint_errors, mean_pose_baseline, summarize_errors
from dgp_pyro.eval.prediction_cache import NetworkOnce, cached_table, ensure_3d_tables, mark_fresh
from dgp_pyro.model.registry import is_3d
from dgp_pyro.model.views3d import ViewChannels
from dgp_pyro.posterior.calibration_file import POSTERIOR_CALIBRATION, out_of_sample_coverage, variance_scale
from dgp_pyro.posterior.files3d import read_points3d
from dgp_pyro.posterior.held_out import resize_factors
from dgp_pyro.posterior.marginals import level_tag
from dgp_pyro.posterior.posterior2d import image_posteriors
from dgp_pyro.posterior.predict import (
    image_heatmaps,
    prediction_stem,
    summaries_to_table,
    write_prediction_files,
)
from dgp_pyro.posterior.predict_run import write_video_prediction
from dgp_pyro.run.folder import Run

#: ``--truth`` given without a file: use the project's own ground truth.
PROJECT_TRUTH = "<project>"
#: The subsets of ground-truth points reported, and their key prefixes.
TRUTH_SUBSETS = ("all", "unlabeled", "visible", "unlabeled_visible", "unlabeled_hidden")
HEADLINE = ("rmse_px", "median_px", "mean_px", "pck_5px", "pck_10px", "n")
#: Credible levels whose coverage is reported.
LEVELS = (0.5, 0.9, 0.95)


def plus_minus(standard_error: float | None) -> str:
    """`` +/- 0.09`` after a coverage, or nothing without a standard error."""
    return "" if standard_error is None else f" +/- {standard_error:.2f}"


def evaluate_test_images(
    run: Run,
    project: Project,
    network: NetworkOnce,
    batch_size: int = 16,
    use_cache: bool = True,
    errors_dir: str | Path | None = None,
    worst: int = 12,
) -> dict[str, Any]:
    """Metrics on the run's held-out labeled images (see the module doc); with ``errors_dir``,
    also the error analysis of :mod:`dgp_pyro.eval.error_analysis` (its summary under ``errors``)."""
    keypoints = list(run.config.keypoints)
    samples = project.network_samples()
    index_of = {key: i for i, key in enumerate(samples.image_keys)}
    missing = [k for k in run.split["test"] if k not in index_of]
    if missing:
        raise DGPError(
            f"the run's held-out images are no longer in the project ({', '.join(missing[:3])})",
            run.path / "split.json",
        )
    test = np.array([index_of[k] for k in run.split["test"]], dtype=np.int64)
    train = np.array([index_of[k] for k in run.split["train"] if k in index_of], dtype=np.int64)
    out: dict[str, Any] = {
        "n_test_frames": int(len(set(samples.frame_index[test].tolist()))),
        "n_test_images": int(len(test)),
    }
    if len(test) == 0:
        out.update({key: None for key in HEADLINE})
        out.update({"n": 0, "per_keypoint": {}, "mean_pose_rmse_px": None})
        return out
    cache = run.predictions_dir / f"labeled_test_{run.scorer}.h5"
    table = cached_table(cache, run, keypoints, use_cache)
    if table is None or table.image_keys != list(run.split["test"]):
        posterior = image_posteriors(
            run, [samples.image_paths[i] for i in test], list(run.split["test"]), LEVELS, network=network()
        )
        table = summaries_to_table(
            posterior.as_summaries(),
            keypoints,
            run.scorer,
            image_keys=run.split["test"],
            extras=posterior.interval_columns(),
        )
        write_prediction_files(table, run.predictions_dir, cache.stem, formats=("h5",))
        mark_fresh(cache)
    truth = samples.labels[test]
    dist = keypoint_errors(table.xy, truth)
    out.update(summarize_errors(dist, keypoints, truth_present=np.isfinite(truth).all(-1)))
    if len(project.views) > 1:
        out["per_view"] = per_view_errors(project, samples.view_index[test], dist, keypoints)
    out.update(table_coverage(table, truth))
    baseline = mean_pose_baseline(samples.labels[train], len(test))
    out["mean_pose_rmse_px"] = summarize_errors(keypoint_errors(baseline, truth), keypoints)["rmse_px"]
    if errors_dir is not None:
        paths = [Path(samples.image_paths[i]) for i in test]
        out["errors"] = write_error_analysis(
            errors_dir,
            list(run.split["test"]),
            paths,
            keypoints,
            table.xy,
            truth,
            image_heatmaps(network(), paths, run.size),
            resize_factors(paths, run.size),
            int(run.config.stride),
            worst=worst,
        )
    return out


def per_view_errors(
    project: Project, sample_views: np.ndarray, dist: np.ndarray, keypoints: list[str]
) -> dict[str, dict[str, Any]]:
    """Headline statistics of held-out distances ``dist (N, K)`` per view of the project.

    The view of an entry is its sample's view (folders layout: ``sample_views``) or, where one
    image holds every view (suffix layout), its channel's view.
    """
    channels = ViewChannels.from_project(project)
    view_of = np.array(
        [[pair[0] for pair in channels.image_pairs(channels.image[int(v)])] for v in sample_views],
        dtype=np.int64,
    ).reshape(dist.shape)
    out = {}
    for v, view in enumerate(project.views):
        stats = summarize_errors(np.where(view_of == v, dist, np.nan), keypoints)
        out[view] = {key: stats[key] for key in HEADLINE}
    return out


def evaluate_truth(
    run: Run,
    project: Project,
    network: NetworkOnce,
    truth_path: Path,
    batch_size: int = 16,
    use_cache: bool = True,
    progress: bool = False,
) -> dict[str, Any]:
    """Metrics of every video frame against ground-truth 2D points (see the module doc)."""
    truth = load_truth(truth_path)
    keypoints = list(run.config.keypoints)
    roles = channel_map(project, keypoints, truth, truth_path)
    if is_3d(run.config.model):  # whole sessions at once; the loop below then reads the per-view tables
        ensure_3d_tables(run, project, network, LEVELS, batch_size, use_cache, progress)
        use_cache = True
    preds, truths, vis, unlabeled, names, tables = [], [], [], [], [], []
    n_frames = n_unlabeled = 0
    for gt_session, arrays in truth["sessions"].items():
        points, visible, labeled = arrays["points_2d"], arrays["visible"], arrays["labeled_mask"]
        t = points.shape[0]
        session = truth_session(project, gt_session, t, truth_path)
        videos = project.sessions[session]
        n_frames += t
        n_unlabeled += int((~labeled).sum())
        for role, channels in roles.items():
            video = next(iter(videos.values())) if role == "" else videos.get(role)
            if video is None:
                continue
            stem = prediction_stem(video, run.scorer)
            table = cached_table(run.predictions_dir / f"{stem}.h5", run, keypoints, use_cache)
            if table is None or len(table.xy) != t:
                _, table, _ = write_video_prediction(
                    run, video, run.predictions_dir, stem, LEVELS, network(), batch_size, progress
                )
                mark_fresh(run.predictions_dir / f"{stem}.h5")
            pred = table.xy
            tables.append(table)
            if len(pred) != t:
                raise DGPError(
                    f"the video has {len(pred)} frames, the ground truth {t}",
                    video,
                    hint=f"truth: {truth_path}",
                )
            v_idx = np.array([v for v, _ in channels])
            j_idx = np.array([j for _, j in channels])
            preds.append(pred)
            truths.append(points[:, v_idx, j_idx])
            vis.append(visible[:, v_idx, j_idx])
            unlabeled.append(np.broadcast_to(~labeled[:, None], (t, len(keypoints))))
            names.append(str(video))
    if not preds:
        raise DGPError("no video of the project matches the ground truth's sessions and views", project.root)
    pred, gt = np.concatenate(preds), np.concatenate(truths)
    vis_mask, unl_mask = np.concatenate(vis), np.concatenate(unlabeled)
    dist = keypoint_errors(pred, gt)
    present = np.isfinite(gt).all(-1)
    out: dict[str, Any] = {
        "file": str(truth_path),
        "n_frames": int(n_frames),
        "n_unlabeled_frames": int(n_unlabeled),
        "videos": names,
    }
    masks = {
        "all": np.ones_like(vis_mask),
        "unlabeled": unl_mask,
        "visible": vis_mask,
        "unlabeled_visible": unl_mask & vis_mask,
        "unlabeled_hidden": unl_mask & ~vis_mask,
    }
    for subset in TRUTH_SUBSETS:
        mask = masks[subset]
        out[subset] = summarize_errors(np.where(mask, dist, np.nan), keypoints, truth_present=present & mask)
    coverage = [table_coverage(table, points) for table, points in zip(tables, truths, strict=True)]
    weights = np.array([np.isfinite(points).sum() for points in truths], dtype=float)
    for key in coverage[0]:
        out[key] = float(np.average([c[key] for c in coverage], weights=weights))
    if is_3d(run.config.model):
        out["3d"] = _evaluate_truth_3d(run, project, truth, truth_path)
    return out


def _evaluate_truth_3d(run: Run, project: Project, truth: dict, truth_path: Path) -> dict[str, Any]:
    """3D runs: world-unit errors and interval coverage of the 3D tables against ``points_3d``."""
    keypoints = list(ViewChannels.from_project(project).keypoints)  # the 3D keypoints (body parts)
    errors, hidden, unlabeled, inside = [], [], [], {level: [] for level in LEVELS}
    for gt_session, arrays in truth["sessions"].items():
        if "points_3d" not in arrays:
            continue
        session = truth_session(project, gt_session, arrays["points_3d"].shape[0], truth_path)
        table = read_points3d(run.predictions_dir / f"{session}_{run.scorer}_3d.h5", keypoints)
        columns = [truth["keypoints"].index(k) for k in keypoints if k in truth["keypoints"]]
        ours = [keypoints.index(truth["keypoints"][c]) for c in columns]
        gt = arrays["points_3d"][:, columns]
        mean, std = table["mean"][:, ours], table["std"][:, ours]
        errors.append(np.linalg.norm(mean - gt, axis=-1))
        hidden.append(~arrays["visible"][:, :, columns].all(axis=1))
        unlabeled.append(np.broadcast_to(~arrays["labeled_mask"][:, None], errors[-1].shape))
        for level in LEVELS:
            z = NormalDist().inv_cdf(0.5 + level / 2)
            inside[level].append((np.abs(gt - mean) <= z * std).reshape(-1))
    if not errors:
        return {}
    error, hidden_mask, unlabeled_mask = (np.concatenate(x) for x in (errors, hidden, unlabeled))

    def rmse(mask: np.ndarray) -> float | None:
        values = error[mask & np.isfinite(error)]
        return float(np.sqrt(np.mean(values**2))) if values.size else None

    out: dict[str, Any] = {
        "rmse": rmse(np.ones_like(hidden_mask)),
        "unlabeled_rmse": rmse(unlabeled_mask),
        "hidden_rmse": rmse(hidden_mask),
        "median": float(np.nanmedian(error)),
    }
    for level in LEVELS:
        out[f"coverage_{level_tag(level)}"] = float(np.mean(np.concatenate(inside[level])))
    return out


def table_coverage(table: PredictionTable, truth: np.ndarray) -> dict[str, float]:
    """Share of true coordinates inside each interval of a prediction table (``x_lo90`` ... columns)."""
    out = {}
    levels = sorted({name[4:] for name in table.extras if name.startswith("x_lo")}, key=float)
    finite = np.isfinite(truth)
    for tag in levels:
        lower = np.stack([table.extras[f"x_lo{tag}"], table.extras[f"y_lo{tag}"]], axis=-1)
        upper = np.stack([table.extras[f"x_hi{tag}"], table.extras[f"y_hi{tag}"]], axis=-1)
        inside = (truth >= lower) & (truth <= upper)
        out[f"coverage_{tag}"] = float(inside[finite].mean()) if finite.any() else None
    return out


def evaluate_run(
    run: Run,
    truth: str | Path | None = None,
    device: str = "cpu",
    batch_size: int = 16,
    use_cache: bool = True,
    progress: bool = False,
    errors_dir: str | Path | None = None,
    worst: int = 12,
) -> dict[str, Any]:
    """Everything ``dgp-pyro evaluate`` reports, as one JSON-able dict (see the module doc).

    ``errors_dir``: also write the error analysis of the held-out keypoints there (``worst``
    cases drawn; :mod:`dgp_pyro.eval.error_analysis`).
    """
    if batch_size < 1:
        raise DGPError(f"--batch-size {batch_size} must be at least 1")
    run.require_finished()  # an unfinished run's intervals are not calibrated
    project = run.project()
    truth_path = None
    if truth is not None:  # checked before any work (and any cached prediction) is written
        if truth == PROJECT_TRUTH:
            if project.ground_truth is None:
                raise DGPError(
                    "--truth: the project has no ground_truth.npz",
                    project.root,
                    hint="name one: --truth FILE",
                )
            truth_path = project.ground_truth
        else:
            truth_path = Path(truth)
        if not truth_path.is_file():
            raise DGPError("--truth: ground-truth file not found", truth_path)
        load_truth(truth_path)  # a damaged file is refused before any prediction is cached
    network = NetworkOnce(run, device)
    result: dict[str, Any] = {"run": str(run.path), "model": run.config.model, "scorer": run.scorer}
    result.update(evaluate_test_images(run, project, network, batch_size, use_cache, errors_dir, worst))
    # Coverage on the held-out labels is in-sample when the variances were fitted to them;
    # the leave-one-out figures from the calibration are not.
    result["posterior_variance_scale"] = variance_scale(run)
    result["variance_scale_fitted_on_heldout"] = (run.path / POSTERIOR_CALIBRATION).is_file()
    for space, infix in (("2d", ""), ("3d", "3d_")):
        out_of_sample = out_of_sample_coverage(run, space)
        if space == "3d" and not out_of_sample:
            continue  # a 2D run, or no held-out keypoint labeled in two views
        for level in LEVELS:
            coverage, standard_error = out_of_sample.get(float(level), (None, None))
            result[f"coverage_loo_{infix}{level_tag(level)}"] = coverage
            result[f"coverage_loo_{infix}se_{level_tag(level)}"] = standard_error
    if truth_path is not None:
        detail = evaluate_truth(run, project, network, truth_path, batch_size, use_cache, progress)
        for subset in TRUTH_SUBSETS:
            prefix = "truth_" if subset == "all" else f"truth_{subset}_"
            for key in HEADLINE:
                result[prefix + key] = detail[subset][key]
        for key, value in detail.items():
            if key.startswith("coverage_"):
                result[f"truth_{key}"] = value
        for key, value in detail.get("3d", {}).items():
            result[f"truth_3d_{key}"] = value
        result["truth"] = detail
    return result
