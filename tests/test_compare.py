"""``dgp-pyro compare`` on two short supervised runs of a tiny synthetic project."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dgp_pyro.cli import compare
from dgp_pyro.data.predictions import PredictionTable, write_predictions
from dgp_pyro.data.project import load_project
from dgp_pyro.data.synthetic import write_synthetic_project
from dgp_pyro.errors import DGPError
from dgp_pyro.eval.compare import elbo_per_frame, match_image_keys
from dgp_pyro.posterior.fit import fit_run
from dgp_pyro.run import RunConfig, load_run

FIELDS = (
    "name",
    "model",
    "rmse_px",
    "median_px",
    "pck_5px",
    "coverage_50",
    "coverage_90",
    "coverage_95",
    "elbo_per_frame",
    "elpd_loo",
    "elpd_se",
    "loo_weight",
    "pareto_k_max",
)


@pytest.fixture(scope="session")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Two 3-step runs sharing one held-out split (the second reads the first's split.json)."""
    root = tmp_path_factory.mktemp("compare")
    # Project seed 2: every keypoint is labeled in enough of the 10 frames to survive a 30 % holdout.
    project = write_synthetic_project(root / "project", views=1, frames=60, labeled=10, seed=2, size=(64, 64))

    def config(seed: int, holdout: float | str) -> RunConfig:
        return RunConfig(
            project=str(project),
            model="supervised",
            backbone="resnet18",
            steps=3,
            batch_size=2,
            size=[64, 64],
            holdout=holdout,
            seed=seed,
        )

    a = fit_run(config(0, 0.3), root / "run_a", progress=False).path
    b = fit_run(config(1, str(a / "split.json")), root / "run_b", progress=False).path
    return {"root": root, "project": project, "a": a, "b": b}


def _args(inputs, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dgp-pyro")
    compare.add_parser(parser.add_subparsers(dest="verb"))
    return parser.parse_args(["compare", *map(str, inputs), *extra])


def _run_json(capsys, inputs, *extra: str) -> tuple[list[dict], str]:
    assert compare.run(_args(inputs, "--json", "--draws", "50", *extra)) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def _copy_run(src: Path, dst: Path, checkpoints: bool = True) -> Path:
    if checkpoints:
        shutil.copytree(src, dst)
    else:
        dst.mkdir()
        for name in ("config.json", "split.json"):
            shutil.copy(src / name, dst / name)
    return dst


def _dlc_files(runs, tmp: Path) -> tuple[Path, Path, np.ndarray]:
    """DeepLabCut-style predictions of the held-out images, 1 px right of the labels.

    The .h5 is indexed as DeepLabCut 2.3 writes labeled-image predictions (a three-level row
    index); the .csv by the plain image paths and misses one held-out image.
    """
    run = load_run(runs["a"])
    samples = load_project(runs["project"]).network_samples()
    index = {k: i for i, k in enumerate(samples.image_keys)}
    keys = run.split["test"]
    truth = samples.labels[[index[k] for k in keys]]
    xy = np.nan_to_num(truth, nan=10.0) + np.array([1.0, 0.0])
    keypoints = list(run.config.keypoints)
    scorer = "DLC_resnet50_syntheticJan1shuffle1_1000"
    columns = pd.MultiIndex.from_tuples(
        [(scorer, kp, c) for kp in keypoints for c in ("x", "y", "likelihood")],
        names=["scorer", "bodyparts", "coords"],
    )
    values = np.concatenate([xy, np.full((*xy.shape[:2], 1), 0.9)], axis=-1).reshape(len(keys), -1)
    rows = pd.MultiIndex.from_tuples([tuple(k.split("/")) for k in keys])
    h5 = tmp / "dlc_predictions.h5"
    pd.DataFrame(values, index=rows, columns=columns).to_hdf(h5, key="df_with_missing", mode="w")
    csv = tmp / "dlc_predictions.csv"
    order = list(reversed(range(len(keypoints))))  # keypoint columns in another order: matched by name
    write_predictions(
        csv,
        PredictionTable(
            scorer,
            [keypoints[k] for k in order],
            xy[1:, order],
            np.full((len(keys) - 1, len(keypoints)), 0.9),
            image_keys=keys[1:],
        ),
    )
    return h5, csv, truth


def test_compare_two_runs_and_deeplabcut_files(runs, capsys, tmp_path):
    h5, csv, truth = _dlc_files(runs, tmp_path)
    rows, err = _run_json(capsys, [runs["a"], runs["b"], h5, csv])
    assert "do not share" not in err
    assert [r["name"] for r in rows] == ["run_a", "run_b", h5.name, csv.name]
    n_labels = int(np.isfinite(truth).all(-1).sum())
    for row in rows[:2]:
        assert set(FIELDS) <= set(row)
        assert row["model"] == "supervised" and row["kind"] == "run"
        assert row["n_images"] == len(truth) and row["n_labels"] == n_labels
        for key in ("rmse_px", "median_px", "pck_5px", "coverage_50", "coverage_90", "coverage_95"):
            assert isinstance(row[key], float), key
        assert 0.0 <= row["coverage_50"] <= row["coverage_90"] <= row["coverage_95"] <= 1.0
        assert row["elbo_per_frame"] is None  # supervised runs write no elbo.csv
        assert isinstance(row["elpd_heldout"], float)  # exact: always there
        # PSIS-LOO of a 3-step network (flat heatmaps, wide posteriors against 1 px labels) can
        # fail outright (infinite k-hat, NaN elpd); then it is null and the note says why
        if row["elpd_loo"] is None:
            assert row["n_high_k"] > 0 and "elpd_loo is unreliable" in row["note"]
        else:
            assert isinstance(row["elpd_loo"], float) and isinstance(row["elpd_se"], float)
        assert row["pareto_k_max"] is None or row["pareto_k_max"] >= 0
        assert "in-sample" in row["calibration"] and "leaving one held-out frame out" in row["calibration"]
    assert rows[0]["loo_weight"] + rows[1]["loo_weight"] == pytest.approx(1.0, abs=1e-6)

    dlc, dlc_csv = rows[2], rows[3]
    assert dlc["kind"] == "predictions" and dlc["model"].startswith("DLC_")
    assert dlc["rmse_px"] == pytest.approx(1.0) and dlc["median_px"] == pytest.approx(1.0)
    assert dlc["pck_5px"] == pytest.approx(1.0)
    assert dlc["n_images"] == len(truth) and dlc["n_labels"] == n_labels
    for key in (
        "coverage_50",
        "coverage_90",
        "coverage_95",
        "elpd_loo",
        "elpd_se",
        "loo_weight",
        "pareto_k_max",
    ):
        assert dlc[key] is None, key
    assert "no posterior" in dlc["note"]
    assert dlc_csv["rmse_px"] == pytest.approx(1.0)
    assert dlc_csv["n_images"] == len(truth) - 1 and "not in the file" in dlc_csv["note"]

    # the table prints too
    assert compare.run(_args([runs["a"], h5], "--draws", "20")) == 0
    out = capsys.readouterr().out
    assert "run_a" in out and "dlc_predictions.h5" in out and "coverage_90" in out


def test_split_mismatch_and_run_without_held_out_labels(runs, capsys, tmp_path):
    other = _copy_run(runs["b"], tmp_path / "run_other_split")
    split = json.loads((other / "split.json").read_text())
    moved = split["train"][:1] + split["test"][1:]
    split = {"train": split["test"][:1] + split["train"][1:], "test": moved}
    (other / "split.json").write_text(json.dumps(split))
    no_holdout = _copy_run(runs["a"], tmp_path / "run_no_holdout", checkpoints=False)
    split = json.loads((no_holdout / "split.json").read_text())
    (no_holdout / "split.json").write_text(json.dumps({"train": split["train"] + split["test"], "test": []}))
    losses = np.linspace(10.0, 1.0, 20)
    lines = ["step,labeled_heatmaps,neural,keypoints,labels,entropy,loss"]
    lines += [f"{i + 1},0,0,0,0,0,{float(loss)!r}" for i, loss in enumerate(losses)]
    (no_holdout / "elbo.csv").write_text("\n".join(lines) + "\n")

    rows, err = _run_json(capsys, [runs["a"], other, no_holdout])
    assert "do not share the held-out split" in err and "run_other_split" in err
    a, moved_row, empty = rows
    assert a["loo_weight"] is None  # nothing else shares its split
    assert isinstance(moved_row["rmse_px"], float) and "not in the LOO comparison" in moved_row["note"]
    for key in ("rmse_px", "median_px", "pck_5px", "coverage_50", "elpd_loo", "loo_weight", "pareto_k_max"):
        assert empty[key] is None, key
    assert empty["n_images"] == 0 and "no held-out labeled images" in empty["note"]
    assert empty["elbo_per_frame"] == pytest.approx(-np.mean(losses[-2:]))


def test_refuses_different_projects_and_keypoints(runs, tmp_path):
    elsewhere = _copy_run(runs["b"], tmp_path / "elsewhere", checkpoints=False)
    config = json.loads((elsewhere / "config.json").read_text())
    (elsewhere / "config.json").write_text(json.dumps({**config, "project": str(tmp_path / "other_project")}))
    with pytest.raises(DGPError, match="different projects"):
        compare.run(_args([runs["a"], elsewhere]))
    renamed = _copy_run(runs["b"], tmp_path / "renamed", checkpoints=False)
    (renamed / "config.json").write_text(json.dumps({**config, "keypoints": config["keypoints"][::-1]}))
    with pytest.raises(DGPError, match="different keypoints"):
        compare.run(_args([runs["a"], renamed]))
    wrong = tmp_path / "wrong_keypoints.h5"
    write_predictions(
        wrong,
        PredictionTable("DLC_x", ["a", "b"], np.zeros((1, 2, 2)), np.ones((1, 2)), image_keys=["i.png"]),
    )
    with pytest.raises(DGPError, match="prediction file has keypoints"):
        compare.run(_args([runs["a"], wrong]))
    with pytest.raises(DGPError, match="no such run folder"):
        compare.run(_args([tmp_path / "missing"]))


@pytest.mark.parametrize("level", ["1.5", "0", "abc"])
def test_level_outside_zero_one_is_an_argparse_error(level, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _args(["run"], "--levels", "0.5", level)
    assert exit_info.value.code == 2
    assert "level" in capsys.readouterr().err


def test_match_image_keys():
    truth = ["labeled-data/s0/img001.png", "labeled-data/s0/img002.png", "labeled-data/s1/img001.png"]
    pred = [
        "C:\\data\\proj\\labeled-data\\s1\\img001.png",
        "/abs/proj/labeled-data/s0/img001.png",
        "other/img009.png",
    ]
    assert match_image_keys(truth, pred) == [1, None, 0]


def test_elbo_per_frame(tmp_path):
    assert elbo_per_frame(tmp_path) is None
    rows = ["step,loss"] + [f"{i},{float(i)}" for i in range(1, 31)]
    (tmp_path / "elbo.csv").write_text("\n".join(rows) + "\n")
    assert elbo_per_frame(tmp_path) == pytest.approx(-29.0)  # mean of -28, -29, -30


def test_posterior_inference_data_of_a_run(runs):
    import arviz as az

    from dgp_pyro.export.inference_data import LOG_LIKELIHOOD_VAR, POSTERIOR_VAR, posterior_inference_data

    run = load_run(runs["a"])
    idata = posterior_inference_data(run, num_draws=20, seed=1)
    post = idata.posterior[POSTERIOR_VAR]
    assert post.dims == ("chain", "draw", "frame", "keypoint", "coord")
    assert sorted(post.frame.values.tolist()) == sorted(run.split["test"])
    assert post.keypoint.values.tolist() == list(run.config.keypoints)
    samples = load_project(runs["project"]).network_samples()
    index = {k: i for i, k in enumerate(samples.image_keys)}
    n_labels = int(np.isfinite(samples.labels[[index[k] for k in run.split["test"]]]).all(-1).sum())
    assert idata.log_likelihood[LOG_LIKELIHOOD_VAR].shape == (2, 20, n_labels)
    assert idata.posterior.attrs["label_sigma_training_px"] == 1.0
    assert len(az.summary(idata, var_names=[POSTERIOR_VAR], kind="stats")) == post[0, 0].size

    video = load_project(runs["project"]).videos()[0]
    frames = posterior_inference_data(run, video=video, start=5, stop=9, num_draws=10)
    assert frames.posterior[POSTERIOR_VAR].frame.values.tolist() == [5, 6, 7, 8]
    assert set(frames.groups()) == {"posterior"}
