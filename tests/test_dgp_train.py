"""Deep Graph Pose end to end: semi-supervised training, exact resume, posteriors, CLI outputs."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm

from dgp_pyro.cli.main import main
from dgp_pyro.data.predictions import read_predictions
from dgp_pyro.errors import DGPError
from dgp_pyro.model.dgp import ModelSettings
from dgp_pyro.model.potentials import PotentialWeights
from dgp_pyro.model.structured_guide import GuideCorrection
from dgp_pyro.posterior.fit import fit_run
from dgp_pyro.posterior.marginals import interval_coverage
from dgp_pyro.posterior.posterior2d import PosteriorModel
from dgp_pyro.posterior.predict import NetworkSummaries
from dgp_pyro.run import RunConfig, load_run
from dgp_pyro.train.joint import ELBO_LOG

OPTIONS = {"window": 4, "windows_per_step": 1, "random_windows": 6, "dgp_start": 0.25}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    from dgp_pyro.data.synthetic import write_synthetic_project

    out = tmp_path_factory.mktemp("dgp") / "synth"
    return write_synthetic_project(out, views=1, frames=120, labeled=16, seed=0, size=(64, 64))


def tiny(project: Path, steps: int = 8, model: str = "dgp", **options) -> RunConfig:
    return RunConfig(
        project=str(project),
        model=model,
        backbone="resnet18",
        size=[64, 64],
        steps=steps,
        batch_size=2,
        holdout=0.2,
        checkpoint_every=4,
        model_options={**OPTIONS, **options},
    )


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def dgp_run(project, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "dgp"
    fit_run(tiny(project), out, progress=False)
    return out


def test_training_logs_elbo_parts_and_sets_weights(dgp_run):
    rows = (dgp_run / ELBO_LOG).read_text().splitlines()
    header = rows[0].split(",")
    values = [dict(zip(header, map(float, r.split(",")), strict=True)) for r in rows[1:]]
    assert len(values) == 8
    assert all(v["neural"] == 0.0 for v in values[:2])  # labels only before dgp_start
    assert all(v["neural"] != 0.0 and v["entropy"] != 0.0 for v in values[2:])
    state = torch.load(dgp_run / "checkpoints" / "last.pt", weights_only=True)
    temporal = state["potential_weights"]["log_temporal"].exp()
    assert state["temporal_ready"] and torch.isfinite(temporal).all() and (temporal > 0).all()


@pytest.mark.parametrize("skeleton", ["auto", "learned"])
def test_resume_is_exact(project, tmp_path, skeleton):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    fit_run(tiny(project, steps=6, skeleton=skeleton), straight, progress=False)

    def interrupt(step, loss):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_run(tiny(project, steps=6, skeleton=skeleton), resumed, progress=False, on_step=interrupt)
    fit_run(tiny(project, steps=6, skeleton=skeleton), resumed, resume=True, progress=False)
    a = torch.load(straight / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    for part in ("guide_correction", "potential_weights"):
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], rtol=0, atol=0)


def test_predict_writes_posterior_columns_and_evaluate_reports_coverage(dgp_run, tmp_path):
    code, stdout, stderr = cli("predict", dgp_run, "--out", tmp_path, "--quiet")
    assert code == 0, stderr
    files = sorted(tmp_path.glob("*.h5"))
    assert files
    table = read_predictions(files[0])
    for column in ("x_std", "y_std", "x_lo90", "x_hi90", "y_lo95", "y_hi95"):
        assert column in table.extras
    assert np.all(table.extras["x_lo90"] <= table.xy[..., 0]) and np.all(
        table.xy[..., 0] <= table.extras["x_hi90"]
    )
    code, stdout, stderr = cli("evaluate", dgp_run, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    for key in ("rmse_px", "median_px", "pck_5px", "coverage_50", "coverage_90", "coverage_95"):
        assert key in result
    assert 0.0 <= result["coverage_95"] <= 1.0
    # out-of-sample coverage, from the recalibration at the end of training
    calibration = json.loads((dgp_run / "posterior_calibration.json").read_text())
    for level, value in calibration["coverage_leave_one_out"].items():
        assert result[f"coverage_loo_{float(level) * 100:g}"] == value
        assert (
            result[f"coverage_loo_se_{float(level) * 100:g}"]
            == calibration["coverage_leave_one_out_se"][level]
        )
    assert calibration["n_frames"] == result["n_test_frames"]
    code, stdout, stderr = cli("evaluate", dgp_run)
    assert code == 0, stderr
    assert "leave one frame out" in stdout and "+/-" in stdout


def test_variant_without_video_is_refused(project, tmp_path):
    import shutil

    copy = Path(shutil.copytree(project, tmp_path / "p"))
    for video in (copy / "videos").iterdir():
        video.unlink()
    with pytest.raises(DGPError, match="needs video"):
        fit_run(tiny(copy, steps=2), tmp_path / "run", progress=False)


def test_unknown_option_is_refused(project, tmp_path):
    with pytest.raises(DGPError, match="unknown model option"):
        fit_run(tiny(project, steps=2, windowz=3), tmp_path / "run", progress=False)


@pytest.mark.parametrize(
    "option, value, what",
    [
        ("temporal_strength", 0, "positive"),
        ("skeletal_strength", -1.0, "positive"),
        ("label_sigma", 0.0, "positive"),
        ("unlabeled_weight", -0.1, "0 or more"),
        ("windows_per_step", 0, "at least 1"),
        ("window", 1, "at least 2 frames"),
        ("temporal_strength", "strong", "positive"),
        ("dgp_start", 1.0, "[0, 1)"),
        ("guide_lr", 0, "positive"),
        ("skeleton", "tree", "auto, project, learned, none"),
    ],
)
def test_option_out_of_range_is_refused_before_training(project, tmp_path, option, value, what):
    with pytest.raises(DGPError, match="must") as info:
        fit_run(tiny(project, steps=2, **{option: value}), tmp_path / "run", progress=False)
    assert option in str(info.value) and what in str(info.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_learned_skeleton_replaces_the_projects_and_its_run_predicts(project, tmp_path):
    """``skeleton=learned``: the labels' forest, with offsets, in the run's config and checkpoint;
    the run's posterior reads them back. ``auto`` keeps the project's skeleton (the synthetic
    animal has one), ``none`` drops it."""
    runs = {}
    for choice in ("auto", "learned", "none"):
        runs[choice] = tmp_path / choice
        fit_run(tiny(project, steps=4, skeleton=choice), runs[choice], progress=False)
    configs = {c: json.loads((r / "config.json").read_text()) for c, r in runs.items()}
    project_skeleton = configs["auto"]["skeleton"]
    learned = configs["learned"]["skeleton"]
    assert project_skeleton and learned and learned != project_skeleton
    assert len(learned) < len(configs["learned"]["keypoints"])  # a forest
    assert configs["none"]["skeleton"] == []
    state = torch.load(runs["learned"] / "checkpoints" / "last.pt", weights_only=True)["potential_weights"]
    assert state["offset"].shape == (len(learned), 2) == state["log_skeletal"].shape
    model = PosteriorModel.from_run(load_run(runs["learned"]))
    assert model.settings.edges and model.weights.skeletal_offset() is not None
    torch.testing.assert_close(model.weights.skeletal_offset(), state["offset"])
    code, stdout, stderr = cli("predict", runs["learned"], "--out", tmp_path / "out", "--quiet")
    assert code == 0, stderr
    tables = list((tmp_path / "out").glob("*.h5"))
    assert tables and all(np.isfinite(read_predictions(t).xy).all() for t in tables)


def test_guide_lr_gives_the_guide_a_group_of_its_own(project, tmp_path):
    """``guide_lr`` null: one optimizer group; a number: the guide apart, at that lr, no decay."""
    from dgp_pyro.train.joint import joint_optimizer

    network, guide = torch.nn.Linear(2, 2), [torch.nn.Parameter(torch.zeros(3))]
    config = tiny(project)
    shared = joint_optimizer(network, guide, None, config)
    assert len(shared.param_groups) == 1 and len(shared.param_groups[0]["params"]) == 3
    apart = joint_optimizer(network, guide, 0.05, config)
    assert [g["lr"] for g in apart.param_groups] == [config.lr, 0.05]
    assert apart.param_groups[1]["weight_decay"] == 0.0 and apart.param_groups[1]["params"] == guide
    run = fit_run(tiny(project, steps=4, guide_lr=0.05), tmp_path / "run", progress=False)
    groups = torch.load(run.path / "checkpoints" / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    assert len(groups) == 2 and groups[1]["weight_decay"] == 0.0


def test_by_default_the_windows_fit_the_guide_and_the_labels_train_the_network(project, tmp_path):
    """2D default ``windows_train_network=false``: how much the windows weigh cannot change the
    network (they fit the guide); asked to, they train it."""

    def after(name: str, **options) -> dict[str, torch.Tensor]:
        run = fit_run(tiny(project, steps=4, **options), tmp_path / name, progress=False)
        asked = options.get("windows_train_network", False)
        assert run.config.model_options["windows_train_network"] is asked
        return run.checkpoint()

    light = after("light", unlabeled_weight=0.1)
    heavy = after("heavy", unlabeled_weight=10.0)
    trained = after("trained", unlabeled_weight=10.0, windows_train_network=True)
    for key, value in light["model"].items():
        assert torch.equal(value, heavy["model"][key]), key
    assert any(not torch.equal(value, trained["model"][key]) for key, value in light["model"].items())
    # ... while the windows did fit the guide: its corrections moved, differently with the weight
    scales = [s["guide_correction"]["log_precision_scale"] for s in (light, heavy)]
    assert not torch.equal(*scales)


def test_video_shorter_than_the_window_is_refused(project, tmp_path):
    import shutil

    from dgp_pyro.data.video import VideoReader, write_video

    copy = Path(shutil.copytree(project, tmp_path / "p"))
    for video in (copy / "videos").iterdir():
        with VideoReader(video) as reader:
            frames = [reader.read(i) for i in range(3)]
        write_video(video, frames, fps=30)
    with pytest.raises(DGPError, match="no video of at least 4 frames"):
        fit_run(tiny(copy, steps=2), tmp_path / "run", progress=False)


def test_nan_elbo_stops_naming_the_step_and_the_last_good_checkpoint(project, tmp_path, monkeypatch):
    from dgp_pyro.run.checkpoint import load_checkpoint
    from dgp_pyro.train import dgp as dgp_train

    real = dgp_train.elbo_loss
    calls = []

    def nan_from_the_sixth_step(*args):
        loss, parts = real(*args)
        calls.append(1)
        return (loss * float("nan"), parts) if len(calls) >= 6 else (loss, parts)

    monkeypatch.setattr(dgp_train, "elbo_loss", nan_from_the_sixth_step)
    run = tmp_path / "run"
    with pytest.raises(DGPError, match="the training loss became nan at step 6") as info:
        fit_run(tiny(project, steps=8), run, progress=False)
    last = run / "checkpoints" / "last.pt"
    assert f"the last good checkpoint, {last}, from step 4, is kept" in str(info.value)
    state = load_checkpoint(last)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (run / "posterior_calibration.json").exists()


def test_a_damaged_checkpoint_writes_no_posterior(dgp_run, tmp_path):
    import shutil

    from dgp_pyro.run.checkpoint import load_checkpoint, save_checkpoint

    run = Path(shutil.copytree(dgp_run, tmp_path / "run"))
    for path in (run / "checkpoints").glob("*.pt"):
        state = load_checkpoint(path)
        name = next(k for k, v in state["model"].items() if v.is_floating_point() and v.ndim == 4)
        state["model"][name] = torch.full_like(state["model"][name], float("nan"))
        path.unlink()  # snapshots are hard links of last.pt: write each anew
        save_checkpoint(path, state)
    out = tmp_path / "pred"
    code, _, stderr = cli("predict", run, "--out", out, "--quiet")
    assert code == 2 and "are not finite at" in stderr and "nothing was written" in stderr
    assert ".mp4" in stderr and stderr.count("\n") == 1
    assert not list(out.glob("*.h5")) and not list(out.glob("*.csv"))


@pytest.mark.parametrize("variant", ["temporal", "dgp"])
def test_posterior_beats_raw_estimate_and_is_calibrated(variant):
    """With noisy heatmap summaries of a smooth trajectory, the posterior beats the raw estimate."""
    rng = np.random.default_rng(0)
    T, K = 3000, 3
    truth = np.cumsum(rng.normal(0, 1.0, size=(T, K, 2)), axis=0) + 100
    truth[:, 1] = truth[:, 0] + 5 + rng.normal(0, 0.3, size=(T, 2)).cumsum(0) * 0.01
    noise_std = 3.0
    cov = np.broadcast_to(np.eye(2) * noise_std**2, (T, K, 2, 2)).copy()
    summaries = NetworkSummaries(
        truth + rng.normal(0, noise_std, size=truth.shape), cov, np.ones((T, K)), np.arange(T)
    )
    settings = ModelSettings(variant, stride=8, heatmap_sigma=8.0, edges=[(0, 1)])
    weights = PotentialWeights(torch.full((K,), 1.0), torch.full((1,), 1e-3))
    model = PosteriorModel(settings, weights, GuideCorrection(K), size=(64, 64))
    posterior = model.posterior(summaries, (64, 64))
    raw_rmse = np.sqrt(np.mean((summaries.mean - truth) ** 2))
    rmse = np.sqrt(np.mean((posterior.mean - truth) ** 2))
    assert rmse < 0.7 * raw_rmse
    coverage = interval_coverage(posterior, truth)
    assert abs(coverage["coverage_90"] - 0.9) < 0.05
    assert abs(coverage["coverage_50"] - 0.5) < 0.06


def test_variance_scale_recovers_a_known_miscalibration():
    from dgp_pyro.posterior.interval_fit import coverage_curve, fit_variance_scale

    rng = np.random.default_rng(0)
    std = rng.uniform(1.0, 3.0, size=(4000, 2))
    truth = rng.normal(0.0, 2.0 * std)  # the stated std is half the real one: c = 4
    scale, n = fit_variance_scale(np.zeros_like(truth), std, truth)
    assert n == truth.size and 3.6 < scale < 4.4
    _, coverage, _ = coverage_curve((np.zeros_like(truth), std * np.sqrt(scale)), truth, (0.5, 0.9, 0.95))
    np.testing.assert_allclose(coverage, (0.5, 0.9, 0.95), atol=0.02)
    assert fit_variance_scale(np.zeros(2), np.ones(2), np.full(2, np.nan)) == (1.0, 0)


def test_interval_scales_calibrate_heavy_tailed_errors_at_every_level():
    """Split conformal widths cover fresh heavy-tailed errors at every level; one variance scale cannot."""
    from dgp_pyro.posterior.interval_fit import (
        coverage_curve,
        fit_interval_scales,
        fit_variance_scale,
        interpolate_interval_scales,
    )

    rng = np.random.default_rng(1)
    levels = (0.5, 0.9, 0.95)
    std = rng.uniform(1.0, 3.0, size=(2, 3000, 2))
    errors = std * rng.standard_t(2.5, size=std.shape)  # heavy tails; the stated std is not theirs
    (fit_std, test_std), (fit_err, test_err) = std, errors
    scales, n = fit_interval_scales(np.zeros_like(fit_err), fit_std, fit_err, levels)
    assert n == fit_err.size and set(scales) == set(levels)
    assert scales[0.5] < scales[0.9] < scales[0.95]  # heavier than Gaussian: wider the further out
    for level in levels:
        half = norm.ppf(0.5 + level / 2) * scales[level] * test_std
        assert abs(np.mean(np.abs(test_err) <= half) - level) < 0.02
    c, _ = fit_variance_scale(np.zeros_like(fit_err), fit_std, fit_err, levels)
    _, one_scale, _ = coverage_curve((np.zeros_like(test_err), test_std * np.sqrt(c)), test_err, levels)
    assert np.max(np.abs(one_scale - levels)) > 0.03
    # levels between fitted ones interpolate; nothing fitted falls back to the default
    assert interpolate_interval_scales(scales, [0.925], 1.0)[0.925] == pytest.approx(
        0.5 * (scales[0.9] + scales[0.95])
    )
    assert interpolate_interval_scales({}, [0.8], 2.0) == {0.8: 2.0}
    few, _ = fit_interval_scales(np.zeros(10), np.ones(10), rng.normal(size=10), levels)
    assert set(few) == {0.5, 0.9}  # 10 coordinates cannot place a 95 % bound: that level is left out


def test_leave_one_out_coverage_is_honest_where_in_sample_coverage_is_not():
    """Left-out images get nominal coverage when they are like the rest, and less when not."""
    from dgp_pyro.posterior.interval_fit import fit_interval_scales, leave_one_out_coverage

    rng = np.random.default_rng(2)
    levels = (0.5, 0.9, 0.95)
    std = rng.uniform(1.0, 3.0, size=(150, 12, 2))  # 150 images of 12 keypoints
    errors = std * rng.standard_t(3.0, size=std.shape)
    coverage, standard_error, n = leave_one_out_coverage(np.zeros_like(errors), std, errors, levels)
    assert n == errors.size and set(coverage) == set(levels) == set(standard_error)
    for level in levels:
        assert abs(coverage[level] - level) < 0.02
    # Errors that share a cause within an image (a per-image scale) and few images, as in a
    # run's held-out set: in sample the 95 % intervals cover 95 % by construction, while fresh
    # images get less; left out one image at a time, the estimate moves to the fresh figure.
    in_sample, left_out, fresh = [], [], []
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        std = rng.uniform(1.0, 3.0, size=(210, 12, 2))
        errors = std * np.exp(rng.normal(size=(210, 1, 1))) * rng.standard_normal(std.shape)
        held, new = slice(0, 10), slice(10, None)  # 10 held-out images, 200 fresh ones
        scales, _ = fit_interval_scales(np.zeros_like(errors[held]), std[held], errors[held], levels)
        inside = np.abs(errors) <= norm.ppf(0.5 + 0.95 / 2) * scales[0.95] * std
        in_sample.append(inside[held].mean())
        fresh.append(inside[new].mean())
        loo, _, _ = leave_one_out_coverage(np.zeros((10, 12, 2)), std[held], errors[held], levels)
        left_out.append(loo[0.95])
    in_sample, left_out, fresh = (float(np.mean(v)) for v in (in_sample, left_out, fresh))
    assert in_sample >= 0.95 and fresh < 0.94
    assert fresh < left_out < in_sample - 0.01  # closer to what fresh images get
    # one image (or none) with a truth: nothing to leave out
    assert leave_one_out_coverage(np.zeros((1, 3, 2)), np.ones((1, 3, 2)), np.ones((1, 3, 2))) == ({}, {}, 6)
    # three images of one frame are one group: nothing to leave out either
    ones = np.ones((3, 3, 2))
    assert leave_one_out_coverage(0 * ones, ones, ones, groups=[7, 7, 7]) == ({}, {}, 18)


def test_leave_one_frame_out_reports_how_unsure_few_frames_are():
    """Views of a frame leave together, and the standard error over frames matches the real spread.

    Each frame has a shared error scale (a hard frame is hard in every view), as in a 3-camera
    project. Calibrated on 4 frames, the coverage that fresh frames get swings by about 0.1 at
    50 %; the reported standard error says so (same size, and large against 0.05), and with
    40 frames both shrink.
    """
    from dgp_pyro.posterior.interval_fit import LOO_SE_WARNING, fit_interval_scales, leave_one_out_coverage

    levels = (0.5, 0.9, 0.95)

    def draw(rng, frames):
        std = rng.uniform(1.0, 3.0, size=(frames, 3, 12, 2))  # frames x views x keypoints x xy
        scale = np.exp(0.4 * rng.normal(size=(frames, 1, 1, 1)))
        return std, std * scale * rng.standard_normal(std.shape)

    for frames in (4, 40):
        fresh, reported = [], []
        for seed in range(60):
            rng = np.random.default_rng(1000 * frames + seed)
            std, errors = draw(rng, frames)
            images = (frames * 3, 12, 2)
            groups = np.repeat(np.arange(frames), 3)
            scales, _ = fit_interval_scales(
                np.zeros(images), std.reshape(images), errors.reshape(images), levels
            )
            new_std, new_errors = draw(rng, 400)
            fresh.append(np.mean(np.abs(new_errors) <= norm.ppf(0.75) * scales[0.5] * new_std))
            _, se, _ = leave_one_out_coverage(
                np.zeros(images), std.reshape(images), errors.reshape(images), levels, groups=groups
            )
            reported.append(se[0.5])
        spread, typical = float(np.std(fresh)), float(np.median(reported))
        # (left out one image at a time, the views of a frame look independent: 0.6 x the spread)
        assert 0.75 * spread < typical < 1.6 * spread, (frames, spread, typical)
        if frames == 4:
            assert typical > LOO_SE_WARNING and spread > LOO_SE_WARNING
        else:
            assert typical < LOO_SE_WARNING and spread < LOO_SE_WARNING
    with pytest.raises(ValueError, match="one label per image"):
        leave_one_out_coverage(np.zeros((4, 3, 2)), np.ones((4, 3, 2)), np.ones((4, 3, 2)), groups=[0, 1])


def test_training_with_held_out_labels_recalibrates_the_posterior(dgp_run):
    from dgp_pyro.posterior.calibration_file import POSTERIOR_CALIBRATION
    from dgp_pyro.posterior.held_out import held_out_images
    from dgp_pyro.posterior.posterior2d import image_posteriors
    from dgp_pyro.run import load_run

    info = json.loads((dgp_run / POSTERIOR_CALIBRATION).read_text())
    assert info["variance_scale"] > 0 and info["n_coordinates"] > 0
    run = load_run(dgp_run)
    held = held_out_images(run)
    raw = image_posteriors(run, held.paths, held.keys, calibrated=False)
    fitted = image_posteriors(run, held.paths, held.keys)
    np.testing.assert_array_equal(fitted.mean, raw.mean)  # only the spread changes
    np.testing.assert_allclose(fitted.cov, raw.cov * info["variance_scale"], rtol=1e-12)
    assert set(info["interval_scales"]) == {"0.5", "0.9", "0.95"}
    for level in (0.5, 0.9, 0.95):
        wide = raw.mean + (raw.upper[level] - raw.mean) * info["interval_scales"][str(level)]
        np.testing.assert_allclose(fitted.upper[level], wide, rtol=1e-12)
    # the conformal intervals cover their level of the labels they were fitted on (in sample)
    coverage = interval_coverage(fitted, held.labels)
    n = info["n_coordinates"]
    for level in (0.5, 0.9, 0.95):
        assert level - 1.0 / n <= coverage[f"coverage_{level * 100:g}"] <= level + 2.0 / n
    # and out of sample, each image scored by widths fitted on the others, are reported
    assert set(info["coverage_leave_one_out"]) == {"0.5", "0.9", "0.95"}
    assert all(0.0 <= c <= 1.0 for c in info["coverage_leave_one_out"].values())
