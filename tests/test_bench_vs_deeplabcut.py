"""``benchmarks/bench_vs_deeplabcut.py``'s own logic: the split, the scoring and the equal-time budget.

The benchmark itself trains for hours with DeepLabCut in its own virtualenv and is not run here.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


bench = _load("bench_vs_deeplabcut")


def _labels(keys: list[str], labeled: list[bool] | None = None):
    xy = np.ones((len(keys), 2, 2))
    for i, ok in enumerate(labeled or [True] * len(keys)):
        if not ok:
            xy[i] = np.nan
    return bench.Labels(keys, ["a", "b"], xy)


# --------------------------------------------------------------------------- split


def test_split_spreads_training_images_over_the_sorted_keys():
    keys = [f"labeled-data/v/img{i:03d}.png" for i in range(10)]
    shuffled = list(np.random.default_rng(0).permutation(keys))
    split = bench.make_split(_labels(shuffled), 4)
    # round(linspace(0, 9, 4)) = round([0, 3, 6, 9])
    assert split["train"] == [keys[i] for i in (0, 3, 6, 9)]
    assert split["test"] == [k for i, k in enumerate(keys) if i not in (0, 3, 6, 9)]
    assert bench.make_split(_labels(list(reversed(keys))), 4) == split  # order of the file is irrelevant


def test_split_sizes_disjoint_and_only_labeled_images():
    keys = [f"labeled-data/img{i:02d}.png" for i in range(93)]
    labeled = [i not in (5, 50, 92) for i in range(93)]
    split = bench.make_split(_labels(keys, labeled), 20)
    assert len(split["train"]) == 20 and len(split["test"]) == 70
    assert not set(split["train"]) & set(split["test"])
    assert set(split["train"]) | set(split["test"]) == {k for k, ok in zip(keys, labeled, strict=True) if ok}
    with pytest.raises(SystemExit):
        bench.make_split(_labels(keys[:5]), 5)  # nothing left to hold out


def test_split_keys_are_the_label_files_keys(tmp_path: Path):
    """Keys as written in the label file: one index column as is, three joined with '/'."""
    one = tmp_path / "one.csv"
    one.write_text(
        "scorer,s,s,s,s\nbodyparts,a,a,b,b\ncoords,x,y,x,y\n"
        "labeled-data/v/img2.png,1,2,,\nlabeled-data/v/img1.png,3,4,5,6\n"
    )
    three = tmp_path / "three.csv"
    three.write_text(
        "scorer,,,s,s\nbodyparts,,,a,a\ncoords,,,x,y\nlabeled-data,v,img2.png,1,2\nlabeled-data,v,img1.png,,\n"
    )
    labels = bench.read_label_csv(one)
    assert labels.keys == ["labeled-data/v/img2.png", "labeled-data/v/img1.png"]
    assert labels.keypoints == ["a", "b"]
    np.testing.assert_array_equal(labels.xy[0], [[1, 2], [np.nan, np.nan]])
    split = bench.make_split(labels, 1)
    assert split == {"train": ["labeled-data/v/img1.png"], "test": ["labeled-data/v/img2.png"]}
    labels3 = bench.read_label_csv(three)
    assert labels3.keys == ["labeled-data/v/img2.png", "labeled-data/v/img1.png"]
    with pytest.raises(SystemExit):  # img1 has no label at all: one labeled image cannot be split
        bench.make_split(labels3, 1)


def test_split_of_the_real_projects_matches_the_holdout_format(shared_data: Path, tmp_path: Path):
    """The keys are the library's image keys, so ``dgp-pyro train --holdout`` accepts the file."""
    from dgp_pyro.data.labels import read_labels

    for name, label_file in (
        ("reaching-mackenzie", "labeled-data/reachingvideo1/CollectedData_Mackenzie.csv"),
        ("mirror-mouse-example", "CollectedData.csv"),
    ):
        labels = bench.project_labels(shared_data / name)
        library = read_labels(shared_data / name / label_file)
        assert labels.keys == list(library.image_keys)
        np.testing.assert_array_equal(labels.xy, library.coords)
        split = bench.make_split(labels, 20)
        assert len(split["train"]) == 20
        assert len(split["test"]) == {"reaching-mackenzie": 35, "mirror-mouse-example": 70}[name]
        path = tmp_path / f"{name}.json"
        bench.write_json(path, split)
        assert json.loads(path.read_text()) == split
        assert bench.make_split(labels, 20) == split  # deterministic


# --------------------------------------------------------------------------- scoring


def test_score_against_hand_computed_errors():
    truth = np.array(
        [
            [[0.0, 0.0], [10.0, 10.0], [np.nan, np.nan]],
            [[0.0, 0.0], [0.0, 0.0], [100.0, 100.0]],
        ]
    )
    pred = np.array(
        [
            [[3.0, 4.0], [10.0, 10.0], [50.0, 50.0]],  # 5 px, 0 px, unlabeled (skipped)
            [[6.0, 8.0], [0.0, 30.0], [np.nan, np.nan]],  # 10 px, 30 px, no prediction (a miss)
        ]
    )
    out = bench.score(pred, truth)
    errors = np.array([5.0, 0.0, 10.0, 30.0])
    assert out["n_points"] == 5 and out["n_missing"] == 1
    assert out["mean_px"] == pytest.approx(errors.mean())  # 11.25
    assert out["rmse_px"] == pytest.approx(math.sqrt((25 + 0 + 100 + 900) / 4))
    assert out["median_px"] == pytest.approx(7.5)
    assert out["pck_5px"] == pytest.approx(2 / 5)  # 5 px is within 5 px
    assert out["pck_10px"] == pytest.approx(3 / 5)
    assert out["over_20px"] == pytest.approx(2 / 5)  # 30 px and the missing one


def test_score_coverage_counts_labeled_coordinates_inside_the_interval():
    truth = np.array([[[0.0, 0.0], [5.0, np.nan]]])
    pred = np.zeros_like(truth)
    lower, upper = np.full_like(truth, -1.0), np.full_like(truth, 1.0)
    out = bench.score(pred, truth, {"50": (lower, upper), "90": (lower - 10, upper + 10)})
    assert out["n_points"] == 1  # the second keypoint lacks y: not a labeled point
    assert out["coverage_50"] == pytest.approx(2 / 3)  # x and y of point 1 inside, x = 5 outside
    assert out["coverage_90"] == pytest.approx(1.0)


# --------------------------------------------------------------------------- budget


def test_epochs_fit_the_budget_after_the_fixed_cost():
    assert bench.epochs_for_budget(1000.0, 44.0) == 22  # floor(22.7)
    assert bench.epochs_for_budget(1000.0, 44.0, fixed_seconds=120.0) == 20
    assert bench.epochs_for_budget(10.0, 44.0) == 1  # at least one epoch
    assert bench.epochs_for_budget(1000.0, 44.0, override=7) == 7
    with pytest.raises(ValueError):
        bench.epochs_for_budget(1000.0, 44.0, override=0)
    with pytest.raises(ValueError):
        bench.epochs_for_budget(1000.0, 0.0)
    # never past DeepLabCut's default schedule, unless asked
    assert bench.epochs_for_budget(20000.0, 44.0) == bench.DLC_DEFAULT_EPOCHS == 200
    assert bench.epochs_for_budget(20000.0, 44.0, maximum=None) == 454
    assert bench.epochs_for_budget(20000.0, 44.0, override=300) == 300


def test_probe_rate_skips_the_first_epochs_warm_up():
    timing = {
        "fit_start_cpu_seconds": 20.0,
        "epoch_end_cpu_seconds": [90.0, 130.0, 170.0],  # 70 s with warm-up, then 40 s each
        "process_cpu_seconds": 175.0,
    }
    per_epoch, fixed = bench.probe_rate(timing)
    assert per_epoch == pytest.approx(40.0)
    assert fixed == pytest.approx(175.0 - 3 * 40.0)
    one = {"fit_start_cpu_seconds": 20.0, "epoch_end_cpu_seconds": [90.0], "process_cpu_seconds": 95.0}
    assert bench.probe_rate(one) == (pytest.approx(70.0), pytest.approx(25.0))
    assert bench.epochs_for_budget(600.0, *bench.probe_rate(timing)) == 13  # (600 - 55) / 40


def test_interrupted_training_segments_add_up():
    """A killed segment counts its wall time to its last checkpoint, its CPU at the others' ratio."""
    segments = [
        {"seconds": 100.0, "cpu_seconds": None, "interrupted": True},
        {"seconds": 300.0, "cpu_seconds": 450.0},
    ]
    total = bench.segments_total(segments)
    assert total == {"seconds": 400.0, "cpu_seconds": pytest.approx(600.0)}
    assert bench.segments_total([{"seconds": 10.0, "cpu_seconds": 19.0}]) == {
        "seconds": 10.0,
        "cpu_seconds": 19.0,
    }


def test_markdown_table_has_a_row_per_method():
    row = {
        "project": "p",
        "method": "deeplabcut",
        "epochs": 3,
        "train_seconds": 120.0,
        "train_cpu_seconds": 240.0,
        "mean_px": 1.0,
        "rmse_px": 2.0,
        "median_px": 0.5,
        "pck_5px": 0.9,
        "pck_10px": 1.0,
        "over_20px": 0.0,
        "predict_fps": 3.0,
    }
    dgp = {**row, "method": "dgp-pyro dgp", "coverage_50": 0.5, "coverage_90": 0.9}
    skipped = {"project": "p", "method": "dgp-pyro dgp", "skipped": "needs video"}
    lines = bench.markdown_table([row, dgp, skipped]).splitlines()
    assert len(lines) == 5
    assert all(line.count("|") == lines[0].count("|") for line in lines)
    assert "deeplabcut, 3 epochs" in lines[2] and "2.0 / 4.0" in lines[2]
    assert "0.50 / 0.90" in lines[3]
    assert "skipped: needs video" in lines[4]


def test_dgp3d_runs_where_the_project_has_views(tmp_path: Path):
    """``dgp3d`` joins the dgp-pyro rows on the shared mirror project (its views known) or with
    ``--views``; a one-view project has none; ``--views`` wins over the known views."""
    args = bench.argparse.Namespace(views=None)
    assert bench.project_views(tmp_path / "mirror-mouse-example", args) == ["top", "bot"]
    assert bench.project_views(tmp_path / "reaching-mackenzie", args) == []
    args.views = ["left", "right"]
    assert bench.project_views(tmp_path / "mirror-mouse-example", args) == ["left", "right"]
