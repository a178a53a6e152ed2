"""``dgp-pyro demo`` end to end on a tiny synthetic 3-camera project (its smoke test)."""

from __future__ import annotations

import json

from dgp_pyro.cli.main import main
from dgp_pyro.data.synthetic import write_synthetic_project


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


def test_demo_refuses_unknown_models_and_3d_without_cameras(tmp_path, capsys):
    project = write_synthetic_project(tmp_path / "p", views=1, frames=20, labeled=4, seed=0, size=(64, 64))
    assert main(["demo", "--out", str(tmp_path / "d"), "--project", str(project), "--models", "nope"]) == 2
    assert "unknown model(s) nope" in capsys.readouterr().err
    assert main(["demo", "--out", str(tmp_path / "d"), "--project", str(project), "--models", "dgp3d"]) == 2
    assert "need a calibrated multi-view project" in capsys.readouterr().err

