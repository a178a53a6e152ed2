"""3D accuracy of multi-view Deep Graph Pose against per-view supervised networks plus triangulation.

On a synthetic 3-camera project with 20 labeled training frames (the bundled
``data/synthetic-mouse``'s scene, 600 frames, rendered with 10 more labeled frames that are held
out of training to recalibrate the posterior variances, ``--calibration-labels``: with 4, the
coverage is within 0.05 of every level for about half the possible held-out sets, with 10 for
about 80 %, ``calibration_sampling`` below; or
``--project``), two runs with the same network (``--backbone``), size, labels and step budget
are trained: ``supervised`` (labeled images of every view only) and ``dgp3d``.
Every frame of the session is then scored against the ground truth ``points_3d`` that
training never saw (world millimetres):

- **(a) supervised + DLT**: the supervised network's soft-argmax in every view, triangulated by
  confidence-weighted DLT (:meth:`~dgp_pyro.geometry.camera_group.CameraGroup.triangulate`, weights =
  heatmap peak probabilities);
- **(b) supervised + smoothed DLT**: (a) smoothed in time by the exact Gaussian chain smoother
  of a local-level model per keypoint (a random walk seen with white noise), its two
  variances chosen per keypoint by maximum marginal likelihood on a grid (type-II ML, a
  Kalman smoother with fitted noise); each frame's precision is scaled by its second most
  confident view's peak / 0.5 (at most 1), so unsure triangulations lean on their neighbours;
- **(b2) Anipose**: when aniposelib is installed, Anipose's own optimised triangulation of the
  same 2D output with its default settings and the skeleton as limb constraints
  (:func:`anipose_triangulation`); and again with its score threshold chosen on the held-out
  labels (:func:`score_threshold_from_labels`), since 0.8 is meant for DeepLabCut's scores;
- **(c) dgp3d**: the whole-session posterior of the dgp3d run
  (:class:`~dgp_pyro.posterior.posterior3d.PosteriorModel3D`, as in
  :func:`~dgp_pyro.posterior.posterior3d.session_posterior3d`).

Also reported: ``supervised_robust`` (the supervised network through dgp3d's robust,
linearised triangulation without potentials: what the 3D inference alone gives) and
``dgp3d_network_dlt`` (the dgp3d run's network with plain DLT: what its training alone gives),
the ratios
``c/a`` and ``c/b`` of the 3D RMSE, the RMSE over the points hidden in at least one view
(occluded or out of the frame, from ``visible``) and its ratios, every RMSE split by the number
of views that see the point (``rmse_by_views_seen_mm``), the coverage of the 50/90/95 %
3D intervals (dgp3d and (b); dgp3d's also apart for the points every view sees and the others)
and of dgp3d's reprojected 2D intervals against the true 2D points, the mean posterior standard
deviation, and the seconds of each stage. ``calibration_sampling`` repeats dgp3d's 3D
recalibration on random sets of 4, 10 and 20 unlabeled frames (their true 3D points where two
views see them standing in for triangulated labels, :func:`calibration_sampling`): the median,
5 % and 95 % quantiles of the resulting 3D coverage, the share of draws within 0.05 at every
level, and the leave-one-frame-out standard error the product reports for such a sample (``held_out_loo_se``:
the runs' own). ``oracle_visibility_dlt`` is a diagnostic that reads the ground truth: (a)
with the views that do not see a point left out. ``--bones`` also trains ``dgp3d_bones`` with
the same budget. CPU, one torch thread by default (on a
shared 2-core machine two threads fighting other processes are many times slower).

``--quick``: 200 steps (default 1500).

    python benchmarks/bench_dgp3d_accuracy.py [--quick] [--steps N] [--bones]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dgp_pyro.cli.options import add_model_option_argument
from dgp_pyro.errors import DGPError
from dgp_pyro.model.registry import default_absent_weight
from dgp_pyro.run import read_run_config

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "dgp3d_accuracy"


def _size(text: str) -> list[int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return [w, h]


def rmse(pred: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None) -> float | None:
    d2 = np.sum((pred - truth) ** 2, axis=-1)
    ok = np.isfinite(d2) if mask is None else np.isfinite(d2) & mask
    return float(np.sqrt(d2[ok].mean())) if ok.any() else None


def smoothed_triangulation(points: np.ndarray, weight: np.ndarray, levels=(0.5, 0.9, 0.95)) -> dict:
    """Baseline (b): per keypoint, a random walk seen with white noise, variances by type-II ML.

    ``points (T, J, 3)`` triangulated (NaN: missing), ``weight (T, J)`` in [0, 1] scales each
    frame's observation precision. For every keypoint the temporal weight ``q`` and the noise
    precision ``r`` (both 1/mm^2) are the grid point of highest marginal likelihood
    ``log p(y | q, r)`` (exact, from the chain smoother's mean and log-determinants); the
    posterior at that point gives the mean and the intervals.
    """
    from dgp_pyro.ops.keypoint_chain import smooth_keypoints

    T, J, _ = points.shape
    finite = np.isfinite(points).all(-1)
    w = np.where(finite, weight, 0.0).T  # (J, T)
    y = torch.as_tensor(np.where(finite[..., None], points, 0.0).transpose(1, 0, 2))  # (J, T, 3)
    qs = np.logspace(-2.5, 1.0, 8)
    rs = np.logspace(-3.0, 2.0, 11)
    eye = torch.eye(3, dtype=torch.float64)
    best = np.full(J, -np.inf)
    choice = np.zeros((J, 2))
    zeros = torch.zeros(J, T, 1, 3, dtype=torch.float64)
    for q in qs:
        temporal = torch.full((J, 1), q, dtype=torch.float64)
        prior = smooth_keypoints(zeros, zeros[..., None].expand(J, T, 1, 3, 3), temporal, [], 0.0, levels=())
        for r in rs:
            precision = torch.as_tensor(r * w)[:, :, None, None, None] * eye  # (J, T, 1, 3, 3)
            out = smooth_keypoints(y[:, :, None], precision, temporal, [], 0.0, levels=())
            info = (precision[:, :, 0] @ y[..., None])[..., 0]  # (J, T, 3)
            observed = w > 0
            log_r = np.where(observed, np.log(np.where(observed, r * w, 1.0)), 0.0).sum(-1)
            evidence = (
                -0.5 * (info * y).sum((-2, -1)).numpy()
                + 0.5 * (info * out["mean"][:, :, 0]).sum((-2, -1)).numpy()
                + 1.5 * log_r
                + 0.5 * prior["log_det"].numpy()
                - 0.5 * out["log_det"].numpy()
            )
            better = evidence > best
            best = np.where(better, evidence, best)
            choice[better] = (q, r)
    precision = torch.as_tensor(choice[:, 1, None] * w)[:, :, None, None, None] * eye
    out = smooth_keypoints(
        y[:, :, None], precision, torch.as_tensor(choice[:, :1]), [], 0.0, levels=tuple(levels)
    )

    def back(x: torch.Tensor) -> np.ndarray:
        return x[:, :, 0].numpy().transpose(1, 0, 2)  # (J, T, 1, 3) -> (T, J, 3)

    return {
        "mean": back(out["mean"]),
        "lower": {lv: back(v) for lv, v in out["lower"].items()},
        "upper": {lv: back(v) for lv, v in out["upper"].items()},
        "temporal_weight": choice[:, 0],
        "noise_precision": choice[:, 1],
    }


def score_threshold_from_labels(confidence: np.ndarray, labeled: np.ndarray) -> float:
    """The confidence threshold that best separates labeled keypoints from hidden (unlabeled) ones.

    Over held-out labeled images (``confidence``, ``labeled`` ``(N, K)``): the threshold with the
    least balanced error, the mean of the share of labeled keypoints it drops and of hidden ones
    it keeps. Without a hidden keypoint, the 5th percentile of the labeled ones' confidence.
    """
    confidence, labeled = np.asarray(confidence, dtype=np.float64), np.asarray(labeled, dtype=bool)
    ok = np.isfinite(confidence)
    shown, hidden = confidence[ok & labeled], confidence[ok & ~labeled]
    if not hidden.size:
        return float(np.quantile(shown, 0.05))
    candidates = np.unique(np.concatenate([shown, hidden]))
    dropped = (shown[None, :] < candidates[:, None]).mean(1)
    kept = (hidden[None, :] >= candidates[:, None]).mean(1)
    return float(candidates[np.argmin(0.5 * (dropped + kept))])


def anipose_triangulation(
    calibration: Path,
    views: list[str],
    points: np.ndarray,
    scores: np.ndarray,
    edges: list[tuple[int, int]],
    score_threshold: float = 0.8,
) -> np.ndarray | None:
    """Reference (b'): Anipose's own triangulation with its temporal and limb-length optimisation.

    What an Anipose user runs on DeepLabCut output with ``triangulation.optim: true``: points
    scoring below ``score_threshold`` (Anipose's default 0.8) are dropped, the rest are
    triangulated by aniposelib's DLT and refined by ``CameraGroup.optim_points`` with the skeleton
    edges as limb-length constraints and Anipose's default weights (``scale_smooth`` 2,
    ``scale_length`` 2, ``n_deriv_smooth`` 3, ``reproj_error_threshold`` 5 px), the cameras read
    from the project's Anipose TOML by aniposelib itself. ``points (V, T, J, 2)``,
    ``scores (V, T, J)``; returns ``(T, J, 3)``, or None when aniposelib is not installed
    (``pip install aniposelib``).
    """
    try:
        from aniposelib.cameras import CameraGroup as AniposeCameraGroup
    except ImportError:
        return None
    cameras = AniposeCameraGroup.load(str(calibration)).subset_cameras_names(views)
    V, T, J, _ = points.shape
    points = np.where((scores < score_threshold)[..., None], np.nan, points)
    initial = cameras.triangulate(points.reshape(V, T * J, 2), progress=False).reshape(T, J, 3)
    if np.isfinite(initial[..., 0]).sum() < 20:  # Anipose's own guard
        return initial
    return cameras.optim_points(
        points,
        initial,
        constraints=[list(edge) for edge in edges],
        scale_smooth=2,
        scale_length=2,
        scale_length_weak=1,
        n_deriv_smooth=3,
        reproj_error_threshold=5,
        verbose=False,
    )


def coverage(lower: dict, upper: dict, truth: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Share of true coordinates inside each interval; ``mask`` (T, J) keeps some points only."""
    finite = np.isfinite(truth)
    if mask is not None:
        finite &= np.broadcast_to(mask[..., None], truth.shape)
    return {
        f"{level * 100:g}": float(((truth >= lower[level]) & (truth <= upper[level]))[finite].mean())
        for level in sorted(lower)
    }


def calibration_sampling(
    mean: np.ndarray,
    std: np.ndarray,
    truth: np.ndarray,
    labeled: np.ndarray,
    frames: np.ndarray,
    sizes: tuple[int, ...],
    draws: int = 200,
    seed: int = 0,
    levels: tuple[float, ...] = (0.5, 0.9, 0.95),
) -> dict:
    """How the 3D coverage depends on the frames the posterior was recalibrated on.

    Emulates the 3D part of :func:`~dgp_pyro.posterior.calibrate.calibrate_posterior` on ``draws``
    random sets of ``n`` of ``frames`` (for each ``n`` in ``sizes``): the uncalibrated 3D
    posterior (``mean``, ``std`` ``(T, J, 3)``) is fitted, by the product's own fits, to the true
    3D points where ``labeled`` ``(T, J)`` (seen by two views or more: what triangulated labels
    give), and the resulting intervals are scored on every frame. The spread of that coverage
    over draws is what one run's coverage can be off by from its held-out sample alone;
    ``loo_se_median`` is the standard error that ``calibrate_posterior`` reports for such a
    sample (leave one frame out), to compare with the spread. Uses the whole-session posterior
    at the drawn frames (training's recalibration uses 16 frames of context each side).
    """
    from scipy.stats import norm

    from dgp_pyro.posterior.interval_fit import (
        fit_interval_scales,
        fit_variance_scale,
        interpolate_interval_scales,
        leave_one_out_coverage,
    )

    rng = np.random.default_rng(seed)
    labels = np.where(labeled[..., None], truth, np.nan)
    error = np.abs(truth - mean) / std
    error = error[np.isfinite(error)]
    out = {}
    for n in sizes:
        covered, se = {level: [] for level in levels}, []
        for _ in range(draws):
            pick = np.sort(rng.choice(frames, size=n, replace=False))
            m, s, t = mean[pick], std[pick], labels[pick]
            scale, _ = fit_variance_scale(m, s, t, levels)
            fitted, _ = fit_interval_scales(m, s, t, levels)
            widening = interpolate_interval_scales(fitted, levels, np.sqrt(scale))
            for level in levels:
                covered[level].append(float((error <= widening[level] * norm.ppf(0.5 + level / 2)).mean()))
            _, standard_error, _ = leave_one_out_coverage(m, s, t, levels)
            se.append(standard_error.get(levels[0], np.nan))
        within = np.all([np.abs(np.array(covered[lv]) - lv) <= 0.05 for lv in levels], axis=0)
        out[str(n)] = {
            "median": {_tag(lv): float(np.median(c)) for lv, c in covered.items()},
            "q05": {_tag(lv): float(np.quantile(c, 0.05)) for lv, c in covered.items()},
            "q95": {_tag(lv): float(np.quantile(c, 0.95)) for lv, c in covered.items()},
            "share_within_0.05": float(within.mean()),
            f"spread_{_tag(levels[0])}": float(np.std(covered[levels[0]])),
            f"loo_se_median_{_tag(levels[0])}": float(np.nanmedian(se)),
        }
    return out


def _tag(level: float) -> str:
    return f"{level * 100:g}"


def _finished(run_dir: Path, config) -> bool:
    """A finished run in ``run_dir`` with the same project, model, steps, seed, absent weight, options."""
    if not (run_dir / "config.json").is_file() or not (run_dir / "loss.csv").is_file():
        return False
    try:
        saved = read_run_config(run_dir / "config.json")
    except DGPError:  # a run of an older format: retrain
        return False
    rows = (run_dir / "loss.csv").read_text().strip().splitlines()
    same = all(
        getattr(saved, k) == getattr(config, k) for k in ("project", "model", "steps", "seed", "holdout")
    )
    absent = default_absent_weight(config.model) if config.absent_weight is None else config.absent_weight
    same = same and saved.absent_weight == absent
    options = saved.model_options.items() >= config.model_options.items()
    return same and options and len(rows) > config.steps


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--project",
        type=Path,
        default=None,
        help="default: a synthetic 3-camera project like the bundled one (600 frames, seed 0) with "
        "20 + --calibration-labels labeled frames",
    )
    parser.add_argument(
        "--calibration-labels",
        type=int,
        default=10,
        help="labeled frames held out of training to recalibrate the posterior variances (default 10)",
    )
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=_size, default=None, help="training size WxH (default: the frames')")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bones", action="store_true", help="also train dgp3d_bones")
    add_model_option_argument(parser, help="a model option of the dgp3d runs")
    parser.add_argument(
        "--absent-weight",
        type=float,
        default=None,
        help="RunConfig.absent_weight of every run (default: its default)",
    )
    parser.add_argument("--quick", action="store_true", help="a short budget (200 steps)")
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temp folder)")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{NAME}.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 200
    torch.set_num_threads(args.threads)

    from dgp_pyro.data.sessions import session_videos
    from dgp_pyro.data.synthetic import write_synthetic_project
    from dgp_pyro.geometry.camera_group import CameraGroup
    from dgp_pyro.paths import BUNDLED_PROJECT
    from dgp_pyro.posterior.fit import fit_run
    from dgp_pyro.posterior.held_out import held_out_images
    from dgp_pyro.posterior.posterior3d import PosteriorModel3D
    from dgp_pyro.posterior.predict import predict_images, predict_video
    from dgp_pyro.run import RunConfig, load_run

    if args.project is not None:
        project = args.project.absolute()
    elif args.calibration_labels == 0:
        project = BUNDLED_PROJECT
    else:
        cache = (args.work or RESULTS) / f"project_3d_{20 + args.calibration_labels}labels"
        if not (cache / "ground_truth.npz").is_file():
            write_synthetic_project(cache, views=3, frames=600, labeled=20 + args.calibration_labels, seed=0)
        project = cache.absolute()
    labeled = int(len(np.load(project / "ground_truth.npz")["labeled_frames"]))
    holdout = min(args.calibration_labels, labeled - 1) / labeled
    truth_file = np.load(project / "ground_truth.npz")
    truth = truth_file["points_3d"]  # (T, J, 3)
    visible = truth_file["visible"]  # (T, V, J)
    truth_2d = truth_file["points_2d"]  # (T, V, J, 2)
    hidden = ~visible.all(1)  # (T, J): hidden in at least one view
    group = CameraGroup.from_toml(project / "calibration.toml")

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)

        def config(model: str) -> RunConfig:
            return RunConfig(
                project=str(project),
                model=model,
                backbone=args.backbone,
                size=args.size,
                steps=args.steps,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                holdout=holdout,
                checkpoint_every=max(args.steps, 1),
                model_options=dict(args.option) if model != "supervised" else {},
                absent_weight=args.absent_weight,  # None: the model's default
            )

        seconds: dict[str, float] = {}
        runs = {}
        models = ["supervised", "dgp3d"] + (["dgp3d_bones"] if args.bones else [])
        for model in models:
            if _finished(work / model, config(model)):
                runs[model] = load_run(work / model)  # --work: a finished run of this config is reused
                print(f"reusing {model} from {work / model}", file=sys.stderr)
                continue
            start = time.perf_counter()
            runs[model] = fit_run(config(model), work / model, progress=False)
            seconds[f"train_{model}"] = time.perf_counter() - start
            print(f"trained {model} in {seconds[f'train_{model}']:.0f} s", file=sys.stderr)

        session = session_videos(runs["supervised"].project())[0]
        group = group.match_views(list(runs["supervised"].project().views))

        # (a), (b) and the robust per-frame triangulation of the supervised network
        start = time.perf_counter()
        network = runs["supervised"].network()
        views = [predict_video(network, video, runs["supervised"].size) for video in session.videos]
        seconds["predict_supervised"] = time.perf_counter() - start
        mean2d = np.stack([s.mean for s in views])  # (V, T, J, 2)
        conf = np.stack([s.confidence for s in views])  # (V, T, J)
        dlt = group.triangulate(mean2d, conf)  # (T, J, 3)
        second = np.sort(conf, axis=0)[-2]  # second most confident view
        start = time.perf_counter()
        smoothed = smoothed_triangulation(dlt, np.clip(second / 0.5, 0.01, 1.0))
        seconds["smooth_dlt"] = time.perf_counter() - start
        # Anipose's 0.8 is for DeepLabCut's per-pixel scores; a heatmap peak probability is on
        # another scale, so also the threshold that best tells labeled from hidden keypoints in
        # the held-out labeled images (labels only, no ground truth)
        held = held_out_images(runs["supervised"])
        held_confidence = predict_images(network, held.paths, runs["supervised"].size).confidence
        label_threshold = score_threshold_from_labels(held_confidence, np.isfinite(held.labels).all(-1))
        anipose = {}
        for name, threshold in (
            ("b2_anipose_optim", 0.8),
            ("b2_anipose_optim_label_threshold", label_threshold),
        ):
            start = time.perf_counter()
            estimate = anipose_triangulation(
                project / "calibration.toml",
                list(runs["supervised"].project().views),
                mean2d,
                conf,
                runs["supervised"].project().network_skeleton(),
                score_threshold=threshold,
            )
            if estimate is not None:
                anipose[name] = estimate
                seconds[name.replace("b2_", "")] = time.perf_counter() - start
        frames_model = PosteriorModel3D.from_run(runs["supervised"], group, calibrated=False)
        robust = frames_model.posterior(
            np.stack([s.mean for s in views], 1), np.stack([s.cov for s in views], 1), conf.transpose(1, 0, 2)
        )

        posteriors, models3d, network_dlt = {}, {}, {}
        for model in runs:
            if model == "supervised":
                continue
            start = time.perf_counter()
            net = runs[model].network()
            summaries = [predict_video(net, video, runs[model].size) for video in session.videos]
            models3d[model] = PosteriorModel3D.from_run(runs[model], group)
            posteriors[model] = models3d[model].posterior(
                *(np.stack([getattr(s, k) for s in summaries], 1) for k in ("mean", "cov", "confidence")),
                frame_index=summaries[0].frame_index,
            )
            seconds[f"posterior_{model}"] = time.perf_counter() - start
            network_dlt[f"{model}_network_dlt"] = group.triangulate(
                np.stack([s.mean for s in summaries]), np.stack([s.confidence for s in summaries])
            )

    estimates = {
        "a_supervised_dlt": dlt,
        "b_supervised_dlt_smoothed": smoothed["mean"],
        "supervised_robust": robust.mean,
    }
    estimates.update({f"c_{m}" if m == "dgp3d" else m: p.mean for m, p in posteriors.items()})
    estimates.update(network_dlt)
    estimates.update(anipose)
    # a diagnostic, not a method: (a) with the views that do not see a point (ground truth) left
    # out, so what is left is the network's precision where it sees the point
    scored = {
        **estimates,
        "oracle_visibility_dlt": group.triangulate(mean2d, conf * visible.transpose(1, 0, 2)),
    }
    seen_by = visible.sum(1)  # (T, J): in how many views each point is visible
    calibrations = {
        m: json.loads((r.path / "posterior_calibration.json").read_text())
        for m, r in runs.items()
        if (r.path / "posterior_calibration.json").is_file()
    }
    result: dict = {
        "name": NAME,
        "project": project.name,
        "frames": int(truth.shape[0]),
        "views": int(visible.shape[1]),
        "keypoints": int(truth.shape[1]),
        "labeled_frames": int(len(truth_file["labeled_frames"])),
        "calibration_labels": args.calibration_labels,
        "variance_scale": {m: c["variance_scale"] for m, c in calibrations.items()},
        "variance_scale_3d": {m: c.get("variance_scale_3d") for m, c in calibrations.items()},
        "backbone": args.backbone,
        "size": list(runs["dgp3d"].size),
        "steps": args.steps,
        "seed": args.seed,
        "options": dict(args.option),
        "absent_weight": {m: r.config.absent_weight for m, r in runs.items()},
        "quick": bool(args.quick),
        "rmse_mm": {k: rmse(v, truth) for k, v in scored.items()},
        "rmse_hidden_mm": {k: rmse(v, truth, hidden) for k, v in estimates.items()},
        # the RMSE of the points seen in n views (n = 0 .. V) and their count: where the error lives
        "rmse_by_views_seen_mm": {
            k: {
                str(n): rmse(v, truth, seen_by == n)
                for n in range(visible.shape[1] + 1)
                if (seen_by == n).any()
            }
            for k, v in scored.items()
        },
        "n_by_views_seen": {str(n): int((seen_by == n).sum()) for n in range(visible.shape[1] + 1)},
        "n_points": int(np.isfinite(truth).all(-1).sum()),
        "n_hidden": int(hidden.sum()),
        "n_missing_dlt": int((~np.isfinite(dlt).all(-1)).sum()),
    }
    a, b, c = (result["rmse_mm"][k] for k in ("a_supervised_dlt", "b_supervised_dlt_smoothed", "c_dgp3d"))
    result["ratio_c_over_a"] = c / a if a else None
    result["ratio_c_over_b"] = c / b if b else None
    ha, hb, hc = (
        result["rmse_hidden_mm"][k] for k in ("a_supervised_dlt", "b_supervised_dlt_smoothed", "c_dgp3d")
    )
    result["hidden_ratio_c_over_a"] = hc / ha if ha else None
    result["hidden_ratio_c_over_b"] = hc / hb if hb else None
    if anipose:
        result["ratio_c_over_b2_anipose"] = c / result["rmse_mm"]["b2_anipose_optim"]
        result["hidden_ratio_c_over_b2_anipose"] = hc / result["rmse_hidden_mm"]["b2_anipose_optim"]
        tuned = "b2_anipose_optim_label_threshold"
        result["anipose_label_threshold"] = label_threshold
        result["ratio_c_over_b2_anipose_label_threshold"] = c / result["rmse_mm"][tuned]
        result["hidden_ratio_c_over_b2_anipose_label_threshold"] = hc / result["rmse_hidden_mm"][tuned]
    else:
        result["b2_anipose_optim"] = "aniposelib not installed"
    result["coverage_3d"] = {m: coverage(p.lower, p.upper, truth) for m, p in posteriors.items()}
    result["coverage_3d"]["b_supervised_dlt_smoothed"] = coverage(smoothed["lower"], smoothed["upper"], truth)
    # recalibration sees held-out labels, i.e. visible points only: how the two kinds fare
    result["coverage_3d_seen_by_all"] = {
        m: coverage(p.lower, p.upper, truth, ~hidden) for m, p in posteriors.items()
    }
    result["coverage_3d_hidden"] = {
        m: coverage(p.lower, p.upper, truth, hidden) for m, p in posteriors.items()
    }
    result["coverage_2d_reprojected"] = {
        m: coverage(p.lower_2d, p.upper_2d, truth_2d) for m, p in posteriors.items()
    }
    result["std_3d_mean_mm"] = {m: float(np.mean(p.std)) for m, p in posteriors.items()}
    # how much of a run's coverage error its few held-out frames alone explain: the recalibration
    # repeated on random sets of unlabeled frames (ground truth standing in for labels)
    dgp3d = posteriors["dgp3d"]
    start = time.perf_counter()
    result["calibration_sampling"] = calibration_sampling(
        dgp3d.mean,
        dgp3d.std / np.sqrt(models3d["dgp3d"].variance_scale_3d or models3d["dgp3d"].variance_scale),
        truth,
        seen_by >= 2,
        np.setdiff1d(np.arange(truth.shape[0]), truth_file["labeled_frames"]),
        sizes=tuple(sorted({max(args.calibration_labels, 2), 4, 10, 20})),
        seed=args.seed,
    )
    result["held_out_loo_se"] = {
        m: {space: c.get(f"coverage_leave_one_out{space}_se") for space in ("", "_3d")}
        for m, c in calibrations.items()
    }
    seconds["calibration_sampling"] = time.perf_counter() - start
    result["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    line = json.dumps(result)
    print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(line + "\n")
    return result


if __name__ == "__main__":
    main()
