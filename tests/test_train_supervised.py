"""Supervised training end to end: learning, run folders, exact resume, checkpoints, bad input.

Tiny settings throughout (resnet18, 64 x 64 images, a few steps). The tests never change
torch's thread count: switching it back and forth inside one process can hang MKL in this
torch build.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dgp_pyro.cli.main import main
from dgp_pyro.data.labels import read_labels, write_labels
from dgp_pyro.errors import DGPError
from dgp_pyro.model.registry import MODELS
from dgp_pyro.posterior.fit import fit_run
from dgp_pyro.run import RunConfig, load_run
from dgp_pyro.train.supervised import prepare_training

SIZE = ["--size", "64x64", "--backbone", "resnet18"]


@pytest.fixture(scope="module")
def synth1(tmp_path_factory) -> Path:
    from dgp_pyro.data.synthetic.project import write_synthetic_project

    out = tmp_path_factory.mktemp("synth") / "synth1"
    return write_synthetic_project(out, views=1, frames=200, labeled=20, seed=0, size=(64, 64))


def cli(*args) -> tuple[int, str, str]:
    """Run ``dgp-pyro ARGS``; return (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def tiny_config(project: Path, **changes) -> RunConfig:
    settings = dict(
        project=str(project),
        backbone="resnet18",
        size=[64, 64],
        steps=4,
        batch_size=4,
        holdout=0.2,
        checkpoint_every=100,
    )
    settings.update(changes)
    return RunConfig(**settings)


@pytest.fixture(scope="module")
def learned_run(synth1, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "learned"
    code, stdout, stderr = cli(
        "train", synth1, "--model", "supervised", "--out", out, *SIZE, "--steps", 60, "--lr", 2e-3,
        "--holdout", 0.2, "--checkpoint-every", 1000, "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    assert "trained supervised" in stdout
    return out


@pytest.fixture(scope="module")
def tiny_run(synth1, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    fit_run(tiny_config(synth1, steps=2), out, progress=False)
    return out


# --------------------------------------------------------------------------- learning


def test_learning_beats_mean_pose_and_evaluate_reports_it(learned_run, synth1):
    code, stdout, stderr = cli("evaluate", learned_run, "--truth", "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    for key in (
        "rmse_px",
        "median_px",
        "pck_5px",
        "pck_10px",
        "per_keypoint",
        "n_test_frames",
        "mean_pose_rmse_px",
    ):
        assert key in result
    assert result["n_test_frames"] == 4  # 20 % of 20 labeled frames
    assert load_run(learned_run).config.absent_weight == 0.0  # the 2D default: hidden parts unseen
    # held-out labeled frames: well below predicting the mean training pose
    assert result["rmse_px"] < 0.7 * result["mean_pose_rmse_px"], result
    # every unlabeled frame of the video against the ground truth
    truth = np.load(synth1 / "ground_truth.npz")
    points, labeled = truth["points_2d"][:, 0], truth["labeled_frames"]
    unlabeled = np.setdiff1d(np.arange(len(points)), labeled)
    mean_pose = np.nanmean(points[labeled], axis=0)
    baseline = np.sqrt(np.nanmean(((points[unlabeled] - mean_pose) ** 2).sum(-1)))
    assert result["truth_unlabeled_rmse_px"] < 0.7 * baseline, (result["truth_unlabeled_rmse_px"], baseline)
    for key in (
        "truth_rmse_px",
        "truth_median_px",
        "truth_pck_5px",
        "truth_visible_rmse_px",
        "truth_unlabeled_hidden_rmse_px",
    ):
        assert result[key] is not None
    assert result["truth"]["n_frames"] == 200 and result["truth"]["n_unlabeled_frames"] == 180
    assert set(result["per_keypoint"]) == set(truth["keypoints"].tolist())

    # the readable table, from the cached predictions
    code, stdout, _ = cli("evaluate", learned_run)
    assert code == 0 and "rmse_px" in stdout and "held-out labeled frames" in stdout


def test_evaluate_predicts_again_after_the_code_changed(learned_run, monkeypatch):
    from dgp_pyro.eval import prediction_cache

    run = load_run(learned_run)
    cache = run.predictions_dir / f"labeled_test_{run.scorer}.h5"
    assert cli("evaluate", learned_run, "--json")[0] == 0
    assert prediction_cache.is_fresh(cache, run)
    written = cache.stat().st_ino
    assert cli("evaluate", learned_run, "--json")[0] == 0
    assert cache.stat().st_ino == written  # the same code: read back
    monkeypatch.setattr(prediction_cache, "code_fingerprint", lambda: "another-version")
    assert not prediction_cache.is_fresh(cache, run)
    code, stdout, stderr = cli("evaluate", learned_run, "--json")
    assert code == 0, stderr
    assert cache.stat().st_ino != written  # predicted again, not scored from the old table
    assert prediction_cache.is_fresh(cache, run)


def test_evaluate_errors_writes_the_analysis(learned_run, tmp_path):
    """--errors: one CSV row per labeled held-out keypoint, errors equal to evaluate's, worst first."""
    import csv

    from dgp_pyro.eval.error_analysis import ERROR_KINDS

    out = tmp_path / "errors"
    code, stdout, stderr = cli("evaluate", learned_run, "--errors", out, "--worst", 3, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    with open(out / "errors.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == result["n"]
    errors = np.array([float(r["error_px"]) for r in rows])
    assert np.sqrt(np.mean(errors**2)) == pytest.approx(result["rmse_px"], abs=0.01)
    assert {r["kind"] for r in rows} <= set(ERROR_KINDS)
    summary = result["errors"]
    assert (
        summary["n_gross"]
        == int((errors > 20).sum())
        == sum(n for kind, n in summary["error_kinds"].items() if kind != "ok")
    )
    drawn = sorted((out / "worst").glob("*.png"))
    assert [p.name[:3] for p in drawn] == ["01_", "02_", "03_"]
    worst = max(rows, key=lambda r: float(r["error_px"]))
    assert drawn[0].name.endswith(f"_{worst['keypoint']}.png")
    assert (out / "error_histograms.png").stat().st_size > 0


def test_run_folder_contents(learned_run, synth1):
    run = load_run(learned_run)
    config = json.loads((learned_run / "config.json").read_text())
    assert config["project"] == str(synth1.absolute()) and config["model"] == "supervised"
    assert config["size"] == [64, 64] and config["steps"] == 60 and config["sigma"] == 8.0
    assert config["keypoints"][0] == "snout" and ["neck", "snout"] in config["skeleton"]
    assert isinstance(config["model_options"], dict)
    split = json.loads((learned_run / "split.json").read_text())
    assert len(split["train"]) == 16 and len(split["test"]) == 4
    assert not set(split["train"]) & set(split["test"])
    log = run.read_loss_log()
    assert [row["step"] for row in log] == list(range(1, 61))
    assert log[-1]["loss"] < log[0]["loss"] and log[-1]["seconds"] > 0
    assert (learned_run / "checkpoints" / "last.pt").is_file()
    assert run.network().num_keypoints == 13
    assert "supervised" in MODELS


# --------------------------------------------------------------------------- resume and interruption


def test_resume_is_exact_and_interrupt_keeps_checkpoint(synth1, tmp_path):
    straight = fit_run(tiny_config(synth1), tmp_path / "straight", progress=False)

    def interrupt(step, loss):
        if step == 2:
            raise KeyboardInterrupt

    resumed_dir = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        fit_run(tiny_config(synth1), resumed_dir, progress=False, on_step=interrupt)
    interrupted = load_run(resumed_dir)
    assert interrupted.checkpoint()["step"] == 2  # saved on the interrupt
    assert [row["step"] for row in interrupted.read_loss_log()] == [1, 2]

    # resume through the command line: the run's own settings are the defaults
    code, _, stderr = cli("train", synth1, "--out", resumed_dir, "--resume", "--quiet")
    assert code == 0, stderr
    a, b = straight.checkpoint(), load_run(resumed_dir).checkpoint()
    assert a["step"] == b["step"] == 4
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    for (_, sa), (_, sb) in zip(
        a["optimizer"]["state"].items(), b["optimizer"]["state"].items(), strict=True
    ):
        assert torch.equal(sa["exp_avg"], sb["exp_avg"])
    assert [r["loss"] for r in straight.read_loss_log()] == [
        r["loss"] for r in load_run(resumed_dir).read_loss_log()
    ]


def test_failure_keeps_last_periodic_checkpoint(synth1, tmp_path):
    def fail(step, loss):
        if step == 3:
            raise RuntimeError("boom")

    out = tmp_path / "failed"
    with pytest.raises(RuntimeError, match="boom"):
        fit_run(tiny_config(synth1, checkpoint_every=2), out, progress=False, on_step=fail)
    run = load_run(out)
    assert run.checkpoint()["step"] == 2
    assert (out / "checkpoints" / "step_2.pt").is_file()
    run.network()  # loads


def test_refuses_existing_run_and_conflicting_resume(tiny_run, synth1):
    code, _, stderr = cli("train", synth1, "--out", tiny_run, *SIZE, "--steps", 2, "--quiet")
    assert code == 2 and "already holds a run" in stderr
    code, _, stderr = cli("train", synth1, "--out", tiny_run, "--resume", "--lr", 0.5, "--quiet")
    assert code == 2 and "differ" in stderr and "lr" in stderr


# --------------------------------------------------------------------------- checkpoints


def test_corrupt_checkpoint_is_a_dgp_error(tiny_run, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    last = broken / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.raises(DGPError, match="checkpoint cannot be read") as info:
        load_run(broken).network()
    assert "last.pt" in str(info.value)
    code, _, stderr = cli("predict", broken, tmp_path / "none.mp4")
    assert code == 2


def test_mismatched_keypoints_are_a_dgp_error(tiny_run, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_run, other)
    last = other / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=True)
    state["keypoints"] = ["nose", "tail"]
    torch.save(state, last)
    with pytest.raises(DGPError, match=r"checkpoint has keypoints \['nose', 'tail'\]"):
        load_run(other).network()

    # a project whose keypoints changed since training
    config = json.loads((other / "config.json").read_text())
    config["keypoints"] = config["keypoints"][::-1]
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(DGPError, match=r"checkpoint has keypoints \[.*\], project has \['snout'"):
        load_run(other).project()


def test_missing_run_folder(tmp_path):
    with pytest.raises(DGPError, match="run folder not found"):
        load_run(tmp_path / "nowhere")
    code, _, stderr = cli("evaluate", tmp_path / "nowhere")
    assert code == 2 and "run folder not found" in stderr


def test_absent_weight_teaches_the_network_when_a_keypoint_is_hidden(learned_run, synth1, tmp_path):
    """DeepLabCut's empty maps for hidden keypoints: the confidence then drops where a part is hidden."""
    from dgp_pyro.posterior.predict import predict_video

    out = tmp_path / "absent"
    code, _, stderr = cli(
        "train", synth1, "--model", "supervised", "--out", out, *SIZE, "--steps", 60, "--lr", 2e-3,
        "--holdout", 0.2, "--checkpoint-every", 1000, "--absent-weight", 1, "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    assert load_run(out).config.absent_weight == 1.0
    truth = np.load(synth1 / "ground_truth.npz")
    visible = truth["visible"][:, 0]
    video = next((synth1 / "videos").iterdir())
    contrast = {}
    for name, run_dir in (("labels only", learned_run), ("absent", out)):
        run = load_run(run_dir)
        confidence = predict_video(run.network(), video, run.size).confidence  # (T, J)
        contrast[name] = confidence[~visible].mean() / confidence[visible].mean()
    # hidden parts look far less sure than visible ones only when the network was told about them
    assert contrast["absent"] < 0.7 * contrast["labels only"], contrast


# --------------------------------------------------------------------------- bad input


def test_bad_size(synth1, tmp_path):
    code, _, stderr = cli("train", synth1, "--out", tmp_path / "r", "--size", "130x128", "--quiet")
    assert code == 2
    assert "--size 130x128 does not fit the network's stride 32; try 128x128" in stderr


def test_negative_absent_weight(synth1, tmp_path):
    code, _, stderr = cli("train", synth1, "--out", tmp_path / "r", "--absent-weight", -1, "--quiet")
    assert code == 2 and "--absent-weight -1.0 must be a number of at least 0" in stderr
    assert not (tmp_path / "r" / "checkpoints").exists()


def test_augment_settings_reach_the_run_and_bad_ones_are_named(synth1, tmp_path):
    code, _, stderr = cli(
        "train", synth1, "--out", tmp_path / "a", *SIZE, "--steps", 2, "--quiet",
        "--augment", "occlusion=0.5", "--augment", "motion_blur=0.3",
    )  # fmt: skip
    assert code == 0, stderr
    assert not load_run(tmp_path / "a").config.offset_head
    augment = load_run(tmp_path / "a").config.augment
    assert augment["occlusion"] == 0.5 and augment["motion_blur"] == 0.3 and augment["rotation"] == 15.0
    code, _, stderr = cli("train", synth1, "--out", tmp_path / "b", "--augment", "blur=2", "--quiet")
    assert code == 2 and "unknown augmentation settings ['blur']" in stderr
    code, _, stderr = cli("train", synth1, "--out", tmp_path / "c", "--augment", "occlusion=2", "--quiet")
    assert code == 2 and "occlusion=2 is a probability" in stderr
    assert not (tmp_path / "c" / "checkpoints").exists()


def test_offset_head_flag_trains_the_offsets(synth1, tmp_path):
    code, _, stderr = cli(
        "train", synth1, "--out", tmp_path / "r", *SIZE, "--steps", 2, "--offset-head", "--quiet"
    )
    assert code == 0, stderr
    run = load_run(tmp_path / "r")
    assert run.config.offset_head and run.network().has_offsets
    # the graphical models' guide reads the heatmaps alone: refused before anything is trained
    code, _, stderr = cli(
        "train", synth1, "--out", tmp_path / "d", "--model", "dgp", *SIZE, "--offset-head", "--quiet"
    )  # fmt: skip
    assert code == 2 and "--offset-head is for --model supervised, not dgp" in stderr
    assert not (tmp_path / "d" / "checkpoints").exists()


def test_a_schedule_by_epochs_sets_the_steps_from_the_training_images(synth1, tmp_path):
    code, _, stderr = cli("train", synth1, "--out", tmp_path / "r", *SIZE, "--epochs", 3, "--quiet")
    assert code == 0, stderr
    run = load_run(tmp_path / "r")
    images = len(run.split["train"])
    assert run.config.epochs == 3 and run.config.steps == math.ceil(3 * images / run.config.batch_size)
    assert run.read_loss_log()[-1]["step"] == run.config.steps
    code, _, stderr = cli(
        "train", synth1, "--out", tmp_path / "r", *SIZE, "--epochs", 3, "--resume", "--quiet"
    )
    assert code == 0, stderr  # the resolved steps are the run's own
    code, _, stderr = cli("train", synth1, "--out", tmp_path / "r", "--steps", 50, "--resume", "--quiet")
    assert code == 2 and "epochs: run has 3, now None" in stderr
    with pytest.raises(SystemExit):  # argparse: one schedule or the other
        cli("train", synth1, "--out", tmp_path / "s", "--epochs", 3, "--steps", 5, "--quiet")
    code, _, stderr = cli("train", synth1, "--out", tmp_path / "t", "--epochs", 0, "--quiet")
    assert code == 2 and "--epochs 0 must be at least 1" in stderr


def test_cuda_requested_but_missing(synth1, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    code, _, stderr = cli("train", synth1, "--out", tmp_path / "r", "--device", "cuda", "--quiet")
    assert code == 2 and "no CUDA device" in stderr


def _copy_project(src: Path, dst: Path) -> tuple[Path, Path]:
    shutil.copytree(src, dst)
    label_file = next((dst / "labeled-data").glob("*/CollectedData_*.csv"))
    for h5 in (dst / "labeled-data").glob("*/CollectedData_*.h5"):
        h5.unlink()
    return dst, label_file


def test_fewer_than_two_labeled_frames(synth1, tmp_path):
    project, label_file = _copy_project(synth1, tmp_path / "one")
    table = read_labels(label_file)
    table.image_keys, table.coords = table.image_keys[:1], table.coords[:1]
    write_labels(label_file, table)
    with pytest.raises(DGPError, match="at least 2"):
        prepare_training(tiny_config(project), tmp_path / "r")


def test_keypoint_without_training_labels_is_named(synth1, tmp_path):
    project, label_file = _copy_project(synth1, tmp_path / "nolabel")
    table = read_labels(label_file)
    table.coords[:, table.keypoints.index("tail_tip")] = np.nan
    write_labels(label_file, table)
    with pytest.raises(DGPError, match="tail_tip"):
        prepare_training(tiny_config(project), tmp_path / "r")


def test_missing_images(synth1, tmp_path):
    project, label_file = _copy_project(synth1, tmp_path / "noimage")
    next(label_file.parent.glob("*.png")).unlink()
    with pytest.raises(DGPError, match="not found|missing"):
        prepare_training(tiny_config(project), tmp_path / "r")


def test_holdout_file_semantics(synth1, tmp_path):
    keys = read_labels(next((synth1 / "labeled-data").glob("*/CollectedData_*.csv"))).image_keys
    spec = tmp_path / "split.json"
    spec.write_text(json.dumps({"test": keys[:2], "train": keys[5:9]}))
    setup = prepare_training(tiny_config(synth1, holdout=str(spec)), tmp_path / "a")
    assert setup.split == {"train": keys[5:9], "test": keys[:2]}
    assert len(setup.dataset) == 4  # only the listed frames train
    assert json.loads((tmp_path / "a" / "split.json").read_text())["test"] == keys[:2]

    spec.write_text(json.dumps({"test": keys[:2]}))
    setup = prepare_training(tiny_config(synth1, holdout=str(spec)), tmp_path / "b")
    assert setup.split["test"] == keys[:2] and setup.split["train"] == keys[2:]

    spec.write_text(json.dumps({"test": ["labeled-data/elsewhere/img1.png"]}))
    with pytest.raises(DGPError, match="not labeled images of the project"):
        prepare_training(tiny_config(synth1, holdout=str(spec)), tmp_path / "c")
    spec.write_text(json.dumps({"test": keys[:2], "train": keys[1:3]}))
    with pytest.raises(DGPError, match="both in train and test"):
        prepare_training(tiny_config(synth1, holdout=str(spec)), tmp_path / "d")


def test_fractional_holdout_is_seeded_and_by_frame(synth1, tmp_path):
    from dgp_pyro.data.dataset import split_frames

    keys = [f"v{v}/img{f}.png" for f in range(10) for v in range(3)]
    frames = np.repeat(np.arange(10), 3)
    labels = np.zeros((30, 2, 2))
    a = split_frames(keys, frames, labels, 0.3, seed=1)
    assert a == split_frames(keys, frames, labels, 0.3, seed=1)
    assert len(a["test"]) == 9 and len(a["train"]) == 21  # 3 frames x 3 views
    test_frames = {k.split("/")[1] for k in a["test"]}
    assert all(k.split("/")[1] not in test_frames for k in a["train"])  # every view on one side


# --------------------------------------------------------------------------- real fixtures


def test_reaching_project_end_to_end(reaching_project, tmp_path):
    if not reaching_project.exists():
        pytest.skip("reaching fixture absent")
    out = tmp_path / "reach"
    code, _, stderr = cli(
        "train", reaching_project, "--out", out, *SIZE, "--steps", 2, "--batch-size", 4, "--quiet"
    )
    assert code == 0, stderr
    code, stdout, stderr = cli("evaluate", out, "--json")
    assert code == 0, stderr
    result = json.loads(stdout)
    assert result["n_test_frames"] >= 1 and set(result["per_keypoint"]) == {
        "Hand", "Finger1", "Tongue", "Joystick1", "Joystick2",
    }  # fmt: skip
    code, _, stderr = cli("predict", out, "--out", tmp_path / "pred")
    assert code == 2 and "no videos" in stderr  # the DeepLabCut example ships none


def test_mirror_project_end_to_end(mirror_project, tmp_path):
    if not mirror_project.exists():
        pytest.skip("mirror fixture absent")
    from dgp_pyro.data.predictions import read_predictions
    from dgp_pyro.data.video import VideoReader, write_video

    out = tmp_path / "mirror"
    code, _, stderr = cli(
        "train", mirror_project, "--views", "top", "bot", "--out", out, *SIZE,
        "--steps", 2, "--batch-size", 4, "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    run = load_run(out)
    assert run.config.keypoints[0].endswith("_top") and run.config.keypoints[-1].endswith("_bot")
    code, stdout, stderr = cli("evaluate", out, "--json")
    assert code == 0, stderr
    assert json.loads(stdout)["n"] > 0
    with VideoReader(mirror_project / "videos" / "test_vid.mp4") as reader:
        frames = [reader.read(i) for i in range(20)]
    clip = tmp_path / "test_vid.mp4"
    write_video(clip, frames, fps=reader.fps)
    code, stdout, stderr = cli("predict", out, clip, "--out", tmp_path / "pred", "--quiet")
    assert code == 0, stderr
    table = read_predictions(tmp_path / "pred" / "test_vid_DGPpyro_supervised.h5")
    assert table.xy.shape == (20, len(run.config.keypoints), 2)
    # without --views a 2D run says how the keypoint names could be read as views
    code, stdout, stderr = cli(
        "train", mirror_project, "--out", tmp_path / "one_view", *SIZE,
        "--steps", 1, "--batch-size", 2, "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    assert "note: the keypoint names look like views of one image (top bot): --views top bot" in stdout


def test_a_run_of_another_format_version_is_refused_with_how_to_retrain(tiny_run, tmp_path):
    """config.json carries the run format version; a run written before versions existed, or in
    another version, is refused naming both versions and how to retrain, never read with guessed
    defaults; a config that is not a JSON object is a clear error too."""
    from dgp_pyro.run import RUN_FORMAT_VERSION, read_run_config

    saved = json.loads((tiny_run / "config.json").read_text())
    assert saved["format_version"] == RUN_FORMAT_VERSION
    path = tmp_path / "config.json"
    path.write_text(json.dumps(saved))
    assert read_run_config(path).to_dict() == {k: v for k, v in saved.items() if k != "format_version"}
    path.write_text(json.dumps({k: v for k, v in saved.items() if k != "format_version"}))
    with pytest.raises(DGPError, match="before format versions.*reads run format") as info:
        read_run_config(path)
    assert "retrain" in str(info.value)
    path.write_text(json.dumps({**saved, "format_version": RUN_FORMAT_VERSION + 1}))
    with pytest.raises(DGPError, match=f"in format {RUN_FORMAT_VERSION + 1}"):
        read_run_config(path)
    path.write_text("[1, 2]")
    with pytest.raises(DGPError, match="JSON object"):
        read_run_config(path)


def test_default_backbone_starts_from_its_packaged_imagenet_weights(synth1, tmp_path):
    """No --backbone: EfficientNet-Lite0 from ImageNet; a ResNet or --weights none: from scratch."""
    from dgp_pyro.nets.backbone import resolve_weights
    from dgp_pyro.nets.efficientnet_lite import build_lite_trunk

    assert resolve_weights("efficientnet_lite0", "auto") == "DEFAULT"
    assert resolve_weights("resnet18", "auto") is None
    assert resolve_weights("efficientnet_lite0", "none") is None
    assert resolve_weights("resnet18", "/w.pth") == "/w.pth"
    common = ["--size", "64x64", "--steps", 1, "--batch-size", 2, "--quiet"]
    saved = {}
    for name, extra in {
        "default": [],
        "none": ["--weights", "none"],
        "resnet": ["--backbone", "resnet18"],
    }.items():
        code, _, stderr = cli("train", synth1, "--out", tmp_path / name, *common, *extra)
        assert code == 0, stderr
        saved[name] = json.loads((tmp_path / name / "config.json").read_text())
    assert (saved["default"]["backbone"], saved["default"]["weights"]) == ("efficientnet_lite0", "DEFAULT")
    assert saved["default"]["steps"] == 1 and saved["none"]["weights"] is None
    assert (saved["resnet"]["backbone"], saved["resnet"]["weights"]) == ("resnet18", None)
    # The default run's trunk started at the packaged weights: the first-layer filters it saved at
    # step 1 are those weights after one small step, far closer to them than a scratch run's.
    packaged = build_lite_trunk("efficientnet_lite0", "DEFAULT")[0].state_dict()
    key = next(k for k, v in packaged.items() if v.ndim == 4)
    trained = {
        name: torch.load(tmp_path / name / "checkpoints" / "last.pt", weights_only=False)["model"]
        for name in ("default", "none")
    }

    def distance(name: str) -> float:
        state = trained[name]
        value = next(v for k, v in state.items() if k.endswith(key))
        return float((value - packaged[key]).norm() / packaged[key].norm())

    assert distance("default") < 0.1 < distance("none")
