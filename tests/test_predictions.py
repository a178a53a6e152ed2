"""DeepLabCut-format prediction files: exact round trips, DeepLabCut's own files, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dgp_pyro.data.labels import H5_KEY
from dgp_pyro.data.predictions import PredictionTable, read_predictions, write_predictions
from dgp_pyro.errors import DGPError


def _random_table(
    rng: np.random.Generator, t: int = 40, k: int = 3, image_keys: bool = False
) -> PredictionTable:
    def values(*shape: int) -> np.ndarray:
        out = rng.normal(size=shape) * np.exp(rng.normal(size=shape) * 8)
        out[rng.random(shape) < 0.2] = np.nan
        return out

    return PredictionTable(
        scorer="DGP_resnet50",
        keypoints=[f"kp{j}" for j in range(k)],
        xy=values(t, k, 2),
        likelihood=values(t, k),
        extras={name: values(t, k) for name in ("x_std", "y_std", "x_lo90", "x_hi90", "y_lo90", "y_hi90")},
        frame_index=np.arange(t) * 3 + 100,
        image_keys=[f"labeled-data/v/img{i:03d}.png" for i in range(t)] if image_keys else None,
    )


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.int64), b.view(np.int64))


@pytest.mark.parametrize("suffix", [".csv", ".h5"])
def test_round_trip_is_exact(tmp_path: Path, suffix: str):
    table = _random_table(np.random.default_rng(0))
    path = tmp_path / f"video_DGP{suffix}"
    write_predictions(path, table)
    back = read_predictions(path)
    assert back.scorer == table.scorer
    assert back.keypoints == table.keypoints
    assert list(back.extras) == list(table.extras)  # insertion order kept
    assert _same_bits(back.xy, table.xy)
    assert _same_bits(back.likelihood, table.likelihood)
    for name, value in table.extras.items():
        assert _same_bits(back.extras[name], value)
    np.testing.assert_array_equal(back.frame_index, table.frame_index)
    assert back.frame_index.dtype == np.int64
    assert back.image_keys is None
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


@pytest.mark.parametrize("suffix", [".csv", ".h5"])
def test_round_trip_with_image_keys(tmp_path: Path, suffix: str):
    table = _random_table(np.random.default_rng(1), t=5, image_keys=True)
    write_predictions(tmp_path / f"x{suffix}", table)
    back = read_predictions(tmp_path / f"x{suffix}")
    assert back.image_keys == table.image_keys
    np.testing.assert_array_equal(back.frame_index, np.arange(5))
    assert _same_bits(back.xy, table.xy)


def test_deeplabcut_column_layout(tmp_path: Path):
    table = _random_table(np.random.default_rng(2), t=3, k=2)
    write_predictions(tmp_path / "x.h5", table)
    frame = pd.read_hdf(tmp_path / "x.h5", key=H5_KEY)
    assert list(frame.columns.names) == ["scorer", "bodyparts", "coords"]
    assert [c[2] for c in frame.columns[:9]] == ["x", "y", "likelihood", "x_std", "y_std"] + [
        "x_lo90",
        "x_hi90",
        "y_lo90",
        "y_hi90",
    ]
    assert frame.columns[9] == ("DGP_resnet50", "kp1", "x")
    assert list(frame.index) == [100, 103, 106]
    # What a DeepLabCut user does with it works unchanged.
    np.testing.assert_array_equal(
        frame["DGP_resnet50"]["kp1"]["likelihood"].to_numpy(), table.likelihood[:, 1]
    )


def test_empty_table_round_trips(tmp_path: Path):
    table = PredictionTable("s", ["a"], np.zeros((0, 1, 2)), np.zeros((0, 1)))
    for suffix in (".csv", ".h5"):
        write_predictions(tmp_path / f"x{suffix}", table)
        back = read_predictions(tmp_path / f"x{suffix}")
        assert back.xy.shape == (0, 1, 2) and back.frame_index.shape == (0,)


def test_reads_a_plain_deeplabcut_video_csv(tmp_path: Path):
    path = tmp_path / "videoDLC_resnet50.csv"
    path.write_text(
        "scorer,DLC,DLC,DLC,DLC,DLC,DLC\n"
        "bodyparts,nose,nose,nose,tail,tail,tail\n"
        "coords,x,y,likelihood,x,y,likelihood\n"
        "0,1.5,2.5,0.9,3,4,0.1\n"
        "1,5,6,0.8,,,\n"
    )
    table = read_predictions(path)
    assert table.scorer == "DLC" and table.keypoints == ["nose", "tail"]
    assert table.extras == {} and table.image_keys is None
    np.testing.assert_array_equal(table.frame_index, [0, 1])
    np.testing.assert_array_equal(table.xy[0], [[1.5, 2.5], [3, 4]])
    np.testing.assert_array_equal(table.likelihood[:, 0], [0.9, 0.8])
    assert np.isnan(table.xy[1, 1]).all()


def test_reads_a_plain_deeplabcut_video_h5(tmp_path: Path):
    columns = pd.MultiIndex.from_product(
        [["DLC"], ["nose"], ["x", "y", "likelihood"]], names=["scorer", "bodyparts", "coords"]
    )
    frame = pd.DataFrame(np.arange(12.0).reshape(4, 3), columns=columns)  # RangeIndex, as DeepLabCut
    frame.to_hdf(tmp_path / "x.h5", key=H5_KEY, format="table", mode="w")
    table = read_predictions(tmp_path / "x.h5")
    np.testing.assert_array_equal(table.frame_index, [0, 1, 2, 3])
    np.testing.assert_array_equal(table.likelihood[:, 0], [2, 5, 8, 11])
    assert table.extras == {}


def test_reads_deeplabcut_predictions_on_labeled_images(tmp_path: Path):
    # DeepLabCut >= 2.3 evaluation output: a three-column image index.
    path = tmp_path / "x.csv"
    path.write_text(
        "scorer,,,DLC,DLC,DLC\n"
        "bodyparts,,,nose,nose,nose\n"
        "coords,,,x,y,likelihood\n"
        "labeled-data,v,img001.png,1,2,0.5\n"
        "labeled-data,v,img007.png,3,4,0.6\n"
    )
    table = read_predictions(path)
    assert table.image_keys == ["labeled-data/v/img001.png", "labeled-data/v/img007.png"]
    np.testing.assert_array_equal(table.frame_index, [0, 1])


def test_table_checks_its_shapes():
    with pytest.raises(ValueError, match="likelihood"):
        PredictionTable("s", ["a"], np.zeros((2, 1, 2)), np.zeros((3, 1)))
    with pytest.raises(ValueError, match="extra"):
        PredictionTable("s", ["a"], np.zeros((2, 1, 2)), np.zeros((2, 1)), extras={"x_std": np.zeros((2, 2))})
    with pytest.raises(ValueError, match="clashes"):
        PredictionTable("s", ["a"], np.zeros((2, 1, 2)), np.zeros((2, 1)), extras={"x": np.zeros((2, 1))})
    with pytest.raises(ValueError, match="frame_index"):
        PredictionTable("s", ["a"], np.zeros((2, 1, 2)), np.zeros((2, 1)), frame_index=np.arange(3))


def _bad(path: Path, *fragments: str) -> None:
    with pytest.raises(DGPError) as info:
        read_predictions(path)
    assert info.value.path == path
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_a_label_file_is_not_a_prediction_file(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_text("scorer,me,me\nbodyparts,nose,nose\ncoords,x,y\na.png,1,2\n")
    _bad(path, "'likelihood'", "read_labels")


def test_body_parts_with_different_extras(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_text(
        "scorer,s,s,s,s,s,s,s\n"
        "bodyparts,nose,nose,nose,nose,tail,tail,tail\n"
        "coords,x,y,likelihood,x_std,x,y,likelihood\n"
        "0,1,2,0.5,0.1,3,4,0.5\n"
    )
    _bad(path, "'tail'", "'x_std'")


def test_bad_prediction_files(tmp_path: Path):
    multi = tmp_path / "multi.csv"
    multi.write_text(
        "scorer,s,s,s\nindividuals,m1,m1,m1\nbodyparts,nose,nose,nose\ncoords,x,y,likelihood\n0,1,2,0.5\n"
    )
    _bad(multi, "multi-animal")
    text = tmp_path / "text.csv"
    text.write_text("scorer,s,s,s\nbodyparts,nose,nose,nose\ncoords,x,y,likelihood\n0,1,2,high\n")
    _bad(text, "non-numeric", "'high'")
    _bad(tmp_path / "missing.h5", "not found")
