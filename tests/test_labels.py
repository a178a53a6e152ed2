"""DeepLabCut label files: reading both layouts, exact round trips, and every bad input."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dgp_pyro.data.labels import H5_KEY, LabelTable, read_labels, write_labels
from dgp_pyro.errors import DGPError

REACHING_LABELS = Path("labeled-data/reachingvideo1/CollectedData_Mackenzie")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _bad(path: Path, *fragments: str) -> DGPError:
    """read_labels(path) raises a DGPError naming the file and containing every fragment."""
    with pytest.raises(DGPError) as info:
        read_labels(path)
    err = info.value
    assert err.path == path
    assert str(path) in str(err)
    for fragment in fragments:
        assert fragment in str(err), (fragment, str(err))
    return err


def _random_table(rng: np.random.Generator, n: int = 7, k: int = 4) -> LabelTable:
    coords = rng.normal(size=(n, k, 2)) * np.exp(rng.normal(size=(n, k, 2)) * 10)
    coords[rng.random((n, k, 2)) < 0.25] = np.nan
    coords[0, 0] = [5e-324, -0.0]  # subnormal and negative zero survive too
    coords[1, 1] = [1e300, 0.1 + 0.2]
    keys = [f"labeled-data/vid,{i}/img{i:03d}.png" for i in range(n)]  # a comma forces quoting
    return LabelTable(scorer="tester", image_keys=keys, keypoints=[f"kp{j}" for j in range(k)], coords=coords)


# ---------------------------------------------------------------------------------------------
# Real files.


def test_reaching_csv_and_h5_agree(reaching_project: Path):
    csv_table = read_labels(reaching_project / REACHING_LABELS.with_suffix(".csv"))
    h5_table = read_labels(reaching_project / REACHING_LABELS.with_suffix(".h5"))
    assert csv_table.scorer == h5_table.scorer == "Mackenzie"
    assert csv_table.keypoints == ["Hand", "Finger1", "Tongue", "Joystick1", "Joystick2"]
    assert csv_table.keypoints == h5_table.keypoints
    assert csv_table.image_keys == h5_table.image_keys
    assert csv_table.image_keys[0] == "labeled-data/reachingvideo1/img005.png"
    assert csv_table.coords.shape == (55, 5, 2)
    assert csv_table.coords.dtype == np.float64
    np.testing.assert_array_equal(csv_table.coords, h5_table.coords)
    # img005 has an empty Tongue cell.
    assert np.isnan(csv_table.coords[0, 2]).all()
    assert csv_table.coords[0, 0, 0] == 185.25173502386923


def test_mirror_labels(mirror_project: Path):
    table = read_labels(mirror_project / "CollectedData.csv")
    assert table.scorer == "rick"
    assert table.coords.shape == (90, 17, 2)
    assert table.keypoints[:2] == ["paw1LH_top", "paw2LF_top"]
    assert table.keypoints[-2:] == ["obsHigh_bot", "obsLow_bot"]
    assert np.isnan(table.coords).any() and np.isfinite(table.coords).any()


def test_rewriting_reaching_csv_gives_the_same_file(reaching_project: Path, tmp_path: Path):
    source = reaching_project / REACHING_LABELS.with_suffix(".csv")
    write_labels(tmp_path / "copy.csv", read_labels(source))
    assert (tmp_path / "copy.csv").read_text().splitlines() == source.read_text().splitlines()


# ---------------------------------------------------------------------------------------------
# Round trips and layouts.


@pytest.mark.parametrize("suffix", [".csv", ".h5"])
def test_round_trip_is_exact(tmp_path: Path, suffix: str):
    table = _random_table(np.random.default_rng(0))
    path = tmp_path / f"CollectedData_tester{suffix}"
    write_labels(path, table)
    back = read_labels(path)
    assert back.scorer == table.scorer
    assert back.image_keys == table.image_keys
    assert back.keypoints == table.keypoints
    assert back.coords.dtype == np.float64
    assert np.array_equal(back.coords.view(np.int64), table.coords.view(np.int64))  # same bits
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("suffix", [".csv", ".h5"])
def test_round_trip_empty_table(tmp_path: Path, suffix: str):
    table = LabelTable("s", [], ["a", "b"], np.zeros((0, 2, 2)))
    write_labels(tmp_path / f"x{suffix}", table)
    back = read_labels(tmp_path / f"x{suffix}")
    assert back.keypoints == ["a", "b"] and back.coords.shape == (0, 2, 2)


def test_h5_is_written_the_deeplabcut_way(tmp_path: Path):
    write_labels(tmp_path / "x.h5", _random_table(np.random.default_rng(1)))
    frame = pd.read_hdf(tmp_path / "x.h5", key=H5_KEY)
    assert list(frame.columns.names) == ["scorer", "bodyparts", "coords"]
    assert frame.columns[0] == ("tester", "kp0", "x")


def test_failed_write_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    path = tmp_path / "x.csv"
    write_labels(path, _random_table(np.random.default_rng(2)))
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", boom)
    with pytest.raises(RuntimeError):
        write_labels(path, _random_table(np.random.default_rng(3)))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["x.csv"]


def test_new_three_column_index_csv(tmp_path: Path):
    path = _write(
        tmp_path / "CollectedData_me.csv",
        "scorer,,,me,me,me,me\n"
        "bodyparts,,,nose,nose,tail,tail\n"
        "coords,,,x,y,x,y\n"
        "labeled-data,vid1,img001.png,1.5,2.5,,\n"
        "labeled-data,vid1,img002.png,3,4,5,6\n",
    )
    table = read_labels(path)
    assert table.image_keys == ["labeled-data/vid1/img001.png", "labeled-data/vid1/img002.png"]
    assert table.keypoints == ["nose", "tail"]
    np.testing.assert_array_equal(table.coords[0], [[1.5, 2.5], [np.nan, np.nan]])
    np.testing.assert_array_equal(table.coords[1], [[3, 4], [5, 6]])


def test_h5_with_three_level_index(tmp_path: Path):
    columns = pd.MultiIndex.from_product(
        [["me"], ["nose"], ["x", "y"]], names=["scorer", "bodyparts", "coords"]
    )
    index = pd.MultiIndex.from_tuples(
        [("labeled-data", "vid1", "img001.png"), ("labeled-data", "vid1", "img002.png")]
    )
    frame = pd.DataFrame([[1.0, 2.0], [np.nan, np.nan]], columns=columns, index=index)
    frame.to_hdf(tmp_path / "x.h5", key=H5_KEY, mode="w")
    table = read_labels(tmp_path / "x.h5")
    assert table.image_keys == ["labeled-data/vid1/img001.png", "labeled-data/vid1/img002.png"]
    np.testing.assert_array_equal(table.coords[:, 0], [[1.0, 2.0], [np.nan, np.nan]])


def test_h5_under_another_single_key(tmp_path: Path):
    columns = pd.MultiIndex.from_product(
        [["me"], ["nose"], ["x", "y"]], names=["scorer", "bodyparts", "coords"]
    )
    pd.DataFrame([[1.0, 2.0]], columns=columns, index=["a.png"]).to_hdf(
        tmp_path / "x.h5", key="other", mode="w"
    )
    assert read_labels(tmp_path / "x.h5").image_keys == ["a.png"]


def test_blank_lines_whitespace_and_bom_are_tolerated(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_bytes(
        b"\xef\xbb\xbfscorer,me,me\nbodyparts,nose,nose\ncoords,x,y\n\na.png, 1.25 ,  \n\nb.png,nan,3\n\n"
    )
    table = read_labels(path)
    assert table.image_keys == ["a.png", "b.png"]
    np.testing.assert_array_equal(table.coords[:, 0], [[1.25, np.nan], [np.nan, 3.0]])


def test_label_table_checks_its_shape():
    with pytest.raises(ValueError, match="shape"):
        LabelTable("s", ["a.png"], ["nose", "tail"], np.zeros((1, 3, 2)))


# ---------------------------------------------------------------------------------------------
# Bad input: one DGPError naming the file and the problem.

HEADER = "scorer,me,me\nbodyparts,nose,nose\ncoords,x,y\n"


def test_missing_file(tmp_path: Path):
    _bad(tmp_path / "nope.csv", "not found")
    _bad(tmp_path / "nope.h5", "not found")


def test_unsupported_suffix(tmp_path: Path):
    _bad(_write(tmp_path / "labels.txt", HEADER), "unsupported file type", ".txt")


def test_wrong_header(tmp_path: Path):
    _bad(_write(tmp_path / "x.csv", "frame,nose,tail\n0,1,2\n1,3,4\n"), "three header rows", "'frame'")
    _bad(_write(tmp_path / "y.csv", "scorer,me,me\nbodypart,nose,nose\ncoords,x,y\n"), "'bodypart'")
    _bad(_write(tmp_path / "empty.csv", ""), "an empty file")


def test_header_rows_of_different_lengths(tmp_path: Path):
    _bad(
        _write(tmp_path / "x.csv", "scorer,me,me\nbodyparts,nose\ncoords,x,y\n"), "different numbers of cells"
    )


def test_multi_animal_csv(tmp_path: Path):
    path = _write(
        tmp_path / "x.csv",
        "scorer,me,me\nindividuals,mouse1,mouse1\nbodyparts,nose,nose\ncoords,x,y\na.png,1,2\n",
    )
    _bad(path, "multi-animal projects are not supported yet")


def test_multi_animal_h5(tmp_path: Path):
    columns = pd.MultiIndex.from_product(
        [["me"], ["mouse1"], ["nose"], ["x", "y"]], names=["scorer", "individuals", "bodyparts", "coords"]
    )
    pd.DataFrame([[1.0, 2.0]], columns=columns, index=["a.png"]).to_hdf(
        tmp_path / "x.h5", key=H5_KEY, mode="w"
    )
    _bad(tmp_path / "x.h5", "multi-animal projects are not supported yet")


def test_h5_with_flat_columns(tmp_path: Path):
    pd.DataFrame({"nose_x": [1.0]}).to_hdf(tmp_path / "x.h5", key=H5_KEY, mode="w")
    _bad(tmp_path / "x.h5", "three column levels")


def test_coords_other_than_xy(tmp_path: Path):
    err = _bad(
        _write(
            tmp_path / "x.csv",
            "scorer,me,me,me\nbodyparts,nose,nose,nose\ncoords,x,y,likelihood\na.png,1,2,0.9\n",
        ),
        "x/y pairs",
        "'likelihood'",
    )
    assert "read_predictions" in str(err)
    _bad(_write(tmp_path / "y.csv", "scorer,me,me\nbodyparts,nose,tail\ncoords,x,y\na.png,1,2\n"), "only x")
    _bad(_write(tmp_path / "z.csv", "scorer,me,me\nbodyparts,nose,nose\ncoords,x,z\na.png,1,2\n"), "'z'")


def test_non_numeric_cell(tmp_path: Path):
    _bad(
        _write(tmp_path / "x.csv", HEADER + "a.png,1,2\nb.png,3,oops\n"),
        "non-numeric",
        "'oops'",
        "'b.png'",
        "nose/y",
    )


def test_non_numeric_cell_h5(tmp_path: Path):
    columns = pd.MultiIndex.from_product(
        [["me"], ["nose"], ["x", "y"]], names=["scorer", "bodyparts", "coords"]
    )
    frame = pd.DataFrame([[1.0, "oops"]], columns=columns, index=["a.png"]).astype(object)
    with warnings.catch_warnings():  # pandas warns that it pickles the object column: that is the point
        warnings.simplefilter("ignore", pd.errors.PerformanceWarning)
        frame.to_hdf(tmp_path / "x.h5", key=H5_KEY, mode="w", format="fixed")
    _bad(tmp_path / "x.h5", "non-numeric", "'oops'")


def test_duplicate_body_part(tmp_path: Path):
    path = _write(
        tmp_path / "x.csv",
        "scorer,me,me,me,me\nbodyparts,nose,nose,nose,nose\ncoords,x,y,x,y\na.png,1,2,3,4\n",
    )
    _bad(path, "duplicate body part", "'nose'")


def test_duplicate_image(tmp_path: Path):
    _bad(_write(tmp_path / "x.csv", HEADER + "a.png,1,2\na.png,3,4\n"), "'a.png'", "twice")


def test_several_scorers(tmp_path: Path):
    _bad(
        _write(tmp_path / "x.csv", "scorer,me,you\nbodyparts,nose,nose\ncoords,x,y\na.png,1,2\n"),
        "several scorers",
    )


def test_ragged_row(tmp_path: Path):
    _bad(_write(tmp_path / "x.csv", HEADER + "a.png,1,2,3\n"), "line 4", "4 cells")


def test_no_keypoint_columns(tmp_path: Path):
    _bad(_write(tmp_path / "x.csv", "scorer,,\nbodyparts,,\ncoords,,\n"), "no keypoint columns")


def test_unparsable_files(tmp_path: Path):
    path = tmp_path / "x.csv"
    path.write_bytes(b"scorer,me\xff\xfe\x00,me\nbodyparts\n")
    _bad(path, "cannot be parsed")
    garbage = tmp_path / "x.h5"
    garbage.write_bytes(b"this is not an HDF5 file" * 10)
    _bad(garbage, "cannot be read as a pandas HDF5 file")


def test_h5_without_the_deeplabcut_key(tmp_path: Path):
    frame = pd.DataFrame({"a": [1.0]})
    frame.to_hdf(tmp_path / "x.h5", key="one", mode="w")
    frame.to_hdf(tmp_path / "x.h5", key="two", mode="a")
    _bad(tmp_path / "x.h5", "'df_with_missing'", "/one")
