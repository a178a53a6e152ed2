"""``dgp-pyro demo`` end to end on a tiny synthetic 3-camera project (its smoke test) and on real data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from dgp_pyro.cli.main import main
from dgp_pyro.data.synthetic import write_synthetic_project
from dgp_pyro.data.video import VideoReader, write_video
from dgp_pyro.eval import report
from dgp_pyro.geometry.camera_group import CameraGroup
from dgp_pyro.posterior.files3d import read_points3d
from dgp_pyro.run.config import RunConfig
from dgp_pyro.run.folder import load_run


def test_demo_trains_every_model_and_writes_the_report(tmp_path):
    project = write_synthetic_project(tmp_path / "p", views=3, frames=40, labeled=6, seed=0, size=(64, 64))
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--project", str(project), "--steps", "3", "--size", "64x64"]
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["models"]) == ["supervised", "dgp", "dgp3d"]
    for model, row in metrics["models"].items():
        assert row["rmse_px"] > 0 and 0 <= row["coverage_90"] <= 1, model
        assert row["rmse_3d"] > 0, model  # DLT of the 2D models, dgp3d's own 3D posterior
    report = (out / "report.md").read_text()
    plots = ("trajectories_supervised.png", "frame.png", "skeleton_3d.png", "coverage.png", "comparison.png")
    for plot in plots:
        assert (out / plot).is_file() and f"]({plot})" in report, plot
    assert "| dgp3d |" in report
    assert (out / "predictions" / "dgp3d" / "session0_DGPpyro_dgp3d_3d.csv").is_file()
    assert (out / "predictions" / "dgp" / "session0_cam1_DGPpyro_dgp.h5").is_file()


def test_demo_uses_the_quick_network_on_the_bundled_project_and_the_training_defaults_on_others(
    tmp_path, monkeypatch
):
    project = write_synthetic_project(tmp_path / "p", views=1, frames=30, labeled=10, seed=0, size=(64, 64))
    monkeypatch.setattr(report, "BUNDLED_PROJECT", project)  # stands in for data/synthetic-mouse
    quick = ["--models", "supervised", "--steps", "2", "--size", "64x64"]
    assert main(["demo", "--out", str(tmp_path / "bundled"), *quick]) == 0
    assert main(["demo", "--out", str(tmp_path / "own"), "--project", str(project), *quick]) == 0
    bundled = load_run(tmp_path / "bundled" / "runs" / "supervised").config
    own = load_run(tmp_path / "own" / "runs" / "supervised").config
    assert (bundled.backbone, bundled.weights) == (report.BUNDLED_BACKBONE, None)  # from scratch
    assert (own.backbone, own.weights) == (RunConfig.backbone, "DEFAULT")  # dgp-pyro train's network
    assert json.loads((tmp_path / "own" / "metrics.json").read_text())["backbone"] == RunConfig.backbone


def test_demo_refuses_unknown_models_and_3d_without_cameras(tmp_path, capsys):
    project = write_synthetic_project(tmp_path / "p", views=1, frames=20, labeled=4, seed=0, size=(64, 64))
    assert main(["demo", "--out", str(tmp_path / "d"), "--project", str(project), "--models", "nope"]) == 2
    assert "unknown model(s) nope" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--project", str(project), "--models", "dgp3d"]) == 2
    assert "need a calibrated multi-view project" in capsys.readouterr().err


def mirror_clip_project(mirror_project: Path, root: Path, frames: int = 24) -> Path:
    """The real mirror mouse with the first ``frames`` frames of its video (labels linked, not copied)."""
    (root / "videos").mkdir(parents=True)
    (root / "labeled-data").symlink_to(mirror_project / "labeled-data", target_is_directory=True)
    shutil.copy(mirror_project / "CollectedData.csv", root / "CollectedData.csv")
    with VideoReader(mirror_project / "videos" / "test_vid.mp4") as reader:
        write_video(root / "videos" / "test_vid.mp4", [reader.read(i) for i in range(frames)], fps=reader.fps)
    return root


def test_demo_on_the_real_mirror_mouse_estimates_cameras_and_scores_held_out_labels(mirror_project, tmp_path):
    project = mirror_clip_project(mirror_project, tmp_path / "mirror")
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--project", str(project), "--views", "top", "bot",
            "--models", "supervised", "dgp3d", "--steps", "2", "--size", "64x64"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    # no ground truth: the cameras come from the labels, the scores from the held-out labels
    assert not metrics["ground_truth"] and metrics["calibration"] == str(out / "calibration.toml")
    assert CameraGroup.from_toml(out / "calibration.toml").names == ["top", "bot"]
    assert 0 < metrics["estimated_cameras"]["heldout_reprojection_rmse_px"] < 10
    held_out = len(json.loads((out / "runs" / "supervised" / "split.json").read_text())["test"])
    for model, row in metrics["models"].items():
        assert row["n_test_frames"] == held_out and row["n"] > held_out, model
        assert row["rmse_px"] > 0 and list(row["per_view_rmse_px"]) == ["top", "bot"], model
        assert all(0 <= row[f"coverage_loo_{level}"] <= 1 for level in ("50", "90", "95")), model
        assert row["rmse_3d"] is None, model
    report = (out / "report.md").read_text()
    assert "no ground truth" in report and "RMSE px (top) | RMSE px (bot)" in report
    for plot in ("trajectories_supervised.png", "frame.png", "skeleton_3d.png", "comparison.png"):
        assert (out / plot).is_file() and f"]({plot})" in report, plot
    assert not (out / "coverage.png").exists()  # a calibration curve needs the truth
    # the 2D run's video posterior is written once, not once per view of the mirror frame
    assert sorted(p.name for p in (out / "predictions" / "supervised").iterdir()) == [
        "test_vid_DGPpyro_supervised.csv",
        "test_vid_DGPpyro_supervised.h5",
    ]
    points = read_points3d(out / "predictions" / "dgp3d" / "test_vid_DGPpyro_dgp3d_3d.csv")
    assert points["mean"].shape == (24, 10, 3) and np.isfinite(points["mean"]).all()


def test_demo_refuses_a_project_without_videos_before_training(reaching_project, tmp_path, capsys):
    out = tmp_path / "d"
    args = ["demo", "--out", str(out), "--project", str(reaching_project), "--models", "supervised"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "has none" in err and str(reaching_project) in err and err.count("\n") == 1
    assert not (out / "runs").exists()
