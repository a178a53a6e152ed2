"""Projects: the real DeepLabCut and Lightning Pose fixtures, multi-view layouts, bad input."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from dgp_pyro.cli.main import main
from dgp_pyro.data.labels import LabelTable, read_labels, write_labels
from dgp_pyro.data.project import load_project
from dgp_pyro.data.view_layout import suggest_suffix_views
from dgp_pyro.errors import DGPError

NAN = np.nan


# ---------------------------------------------------------------------------------------------
# Helpers: tiny projects in tmp_path.


def _png(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (40, 80, 120)).save(path)


def _config(root: Path, bodyparts: list[str], **extra) -> Path:
    config = {
        "Task": "test",
        "scorer": "me",
        "project_path": "WILL BE AUTOMATICALLY UPDATED BY DEMO CODE",
        "video_sets": {"WILL BE AUTOMATICALLY UPDATED BY DEMO CODE": {"crop": "0, 8, 0, 6"}},
        "bodyparts": bodyparts,
        **extra,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root / "config.yaml"


def _labels(
    root: Path,
    folder: str,
    keypoints: list[str],
    rows: dict[str, list],
    suffix: str = ".csv",
    images: bool = True,
) -> Path:
    """labeled-data/<folder>/CollectedData_me<suffix> with one row per image name (and the PNGs)."""
    keys = [f"labeled-data/{folder}/{name}" for name in rows]
    coords = np.array([rows[name] for name in rows], dtype=float).reshape(len(rows), len(keypoints), 2)
    if images:
        for key in keys:
            _png(root / key)
    path = root / "labeled-data" / folder / f"CollectedData_me{suffix}"
    write_labels(path, LabelTable("me", keys, keypoints, coords))
    return path


def _dlc_project(root: Path, **config_extra) -> Path:
    """A single-view DeepLabCut project: two label folders, two body parts."""
    _config(root, ["nose", "tail"], skeleton=[["nose", "tail"]], **config_extra)
    _labels(root, "vidA", ["nose", "tail"], {"img0.png": [1, 2, 3, 4], "img1.png": [5, 6, NAN, NAN]})
    _labels(root, "vidB", ["nose", "tail"], {"img0.png": [7, 8, 9, 10]})
    return root


def _folders_project(root: Path) -> Path:
    """Two cameras in the folders layout; camera 1 has no 'ear'; frames differ between views."""
    _config(
        root,
        ["nose", "ear", "tail"],
        skeleton=[["nose", "ear"], ["ear", "tail"]],
        multiview={"views": ["cam0", "cam1"], "layout": "folders"},
    )
    three, two = ["nose", "ear", "tail"], ["nose", "tail"]
    _labels(
        root,
        "session0_cam0",
        three,
        {"img0.png": [1, 1, 2, 2, 3, 3], "img1.png": [4, 4, NAN, NAN, 6, 6], "img2.png": [7, 7, 8, 8, 9, 9]},
    )
    _labels(root, "session0_cam1", two, {"img0.png": [10, 10, 30, 30], "img3.png": [40, 40, 60, 60]})
    _png(root / "labeled-data/session0_cam1/img2.png")  # an image of cam1 with no label row
    _labels(root, "mouse_cam0_day2", three, {"img0.png": [11, 12, 13, 14, 15, 16]})
    _labels(root, "mouse_cam1_day2", two, {"img0.png": [21, 22, 25, 26]})
    videos = root / "videos"
    videos.mkdir()
    for name in (
        "session0_cam0.mp4",
        "session0_cam1.mp4",
        "mouse_cam0_day2.avi",
        "overview.mp4",
        "notes.txt",
    ):
        (videos / name).write_bytes(b"")  # never opened by the loader
    (root / "calibration.toml").write_text(
        '[cam_1]\nname = "cam1"\nsize = [8, 6]\n\n'
        '[cam_0]\nname = "cam0"\nsize = [8, 6]\n\n'
        "[metadata]\nadjusted = false\n"
    )
    np.savez(root / "ground_truth.npz", points=np.zeros((2, 3, 3)))
    return root


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(root.rglob("*"))}


def _bad(project: Path, *fragments: str, where: Path | None = None, **kwargs) -> DGPError:
    """load_project(project, **kwargs) raises a DGPError naming ``where`` and every fragment."""
    with pytest.raises(DGPError) as info:
        load_project(project, **kwargs)
    err = info.value
    if where is not None:
        assert err.path is not None and err.path.absolute() == where.absolute(), (err.path, where)
        assert str(err.path) in str(err)
    for fragment in fragments:
        assert fragment in str(err), (fragment, str(err))
    return err


# ---------------------------------------------------------------------------------------------
# Real data.


def test_reaching_project(reaching_project: Path):
    project = load_project(reaching_project)
    assert project.format == "deeplabcut"
    assert project.root == reaching_project.absolute()
    assert project.bodyparts == ["Hand", "Finger1", "Tongue", "Joystick1", "Joystick2"]
    assert project.skeleton == [("Hand", "Finger1"), ("Joystick1", "Joystick2")]
    assert project.views == ["main"] and project.view_layout == "single"
    assert project.labels.shape == (55, 1, 5, 2)
    assert project.keypoint_in_view.shape == (1, 5) and project.keypoint_in_view.all()
    csv_file = reaching_project / "labeled-data/reachingvideo1/CollectedData_Mackenzie.csv"
    assert project.label_files == [csv_file.absolute()]  # the CSV wins over the H5 beside it
    table = read_labels(csv_file)
    np.testing.assert_array_equal(project.labels[:, 0], table.coords)
    assert project.frame_keys == table.image_keys
    assert all(
        len(paths) == 1 and paths[0].is_file() and paths[0].is_absolute() for paths in project.image_paths
    )
    assert project.image_paths[0][0] == reaching_project.absolute() / "labeled-data/reachingvideo1/img005.png"
    # No video shipped, and the placeholder video_sets entry is ignored.
    assert project.videos() == [] and project.sessions == {}
    assert project.calibration is None and project.ground_truth is None
    assert project.config_path == reaching_project.absolute() / "config.yaml"

    assert project.network_keypoints() == project.bodyparts
    assert project.network_skeleton() == [(0, 1), (3, 4)]
    samples = project.network_samples()
    assert len(samples.image_paths) == 55 and samples.labels.shape == (55, 5, 2)
    np.testing.assert_array_equal(samples.labels, table.coords)
    np.testing.assert_array_equal(samples.frame_index, np.arange(55))
    np.testing.assert_array_equal(samples.view_index, np.zeros(55))

    summary = json.loads(json.dumps(project.summary()))
    assert summary["n_labeled_frames"] == 55
    assert summary["keypoints"] == project.bodyparts
    assert summary["skeleton"] == [["Hand", "Finger1"], ["Joystick1", "Joystick2"]]
    assert summary["views"] == ["main"] and summary["view_layout"] == "single"
    assert summary["videos"] == [] and summary["cameras"] is None
    assert summary["format"] == "deeplabcut"
    assert summary["root"] == str(reaching_project.absolute())


def test_reaching_h5_gives_the_same_labels(reaching_project: Path, tmp_path: Path):
    copy = tmp_path / "reaching"
    shutil.copytree(reaching_project, copy, ignore=shutil.ignore_patterns("*.csv"))
    from_h5 = load_project(copy)
    assert [p.suffix for p in from_h5.label_files] == [".h5"]
    from_csv = load_project(reaching_project)
    np.testing.assert_array_equal(from_h5.labels, from_csv.labels)
    assert from_h5.frame_keys == from_csv.frame_keys


def test_mirror_project_suffix_layout(mirror_project: Path):
    project = load_project(mirror_project, views=["top", "bot"])
    assert project.format == "lightning-pose"
    assert project.view_layout == "suffix"
    assert project.views == ["top", "bot"]
    assert project.bodyparts == [
        "paw1LH",
        "paw2LF",
        "paw3RF",
        "paw4RH",
        "tailBase",
        "tailMid",
        "nose",
        "obs",
        "obsHigh",
        "obsLow",
    ]
    in_view = dict(zip(project.bodyparts, project.keypoint_in_view.T, strict=True))
    assert in_view["obs"].tolist() == [True, False]
    assert in_view["obsHigh"].tolist() == [False, True]
    assert in_view["obsLow"].tolist() == [False, True]
    assert all(in_view[p].all() for p in project.bodyparts[:7])
    assert project.labels.shape == (90, 2, 10, 2)
    assert project.skeleton == [] and project.config_path is None

    table = read_labels(mirror_project / "CollectedData.csv")
    column = {name: k for k, name in enumerate(table.keypoints)}
    j = project.bodyparts.index
    np.testing.assert_array_equal(project.labels[:, 0, j("nose")], table.coords[:, column["nose_top"]])
    np.testing.assert_array_equal(project.labels[:, 1, j("obsLow")], table.coords[:, column["obsLow_bot"]])
    assert np.isnan(project.labels[:, 0, j("obsHigh")]).all()
    assert np.isnan(project.labels[:, 1, j("obs")]).all()
    # One image holds both views.
    assert all(paths[0] == paths[1] and paths[0].is_file() for paths in project.image_paths)

    # The network predicts the 17 file columns, in file order.
    assert project.network_keypoints() == table.keypoints
    samples = project.network_samples()
    assert samples.labels.shape == (90, 17, 2)
    np.testing.assert_array_equal(samples.labels, table.coords)
    assert samples.image_keys == table.image_keys

    video = mirror_project.absolute() / "videos/test_vid.mp4"
    assert project.sessions == {"test_vid": {"top": video, "bot": video}}
    assert project.videos() == [video]
    summary = json.loads(json.dumps(project.summary()))
    assert summary["videos"] == [{"path": str(video), "view": None, "session": "test_vid"}]
    assert summary["keypoints"] == project.bodyparts and summary["views"] == ["top", "bot"]


def test_mirror_project_defaults_to_one_view(mirror_project: Path):
    project = load_project(mirror_project)
    assert project.view_layout == "single" and project.labels.shape == (90, 1, 17, 2)
    assert project.sessions == {"test_vid": {"main": mirror_project.absolute() / "videos/test_vid.mp4"}}
    # ... but its keypoint names say how to read it as two views, and `info` says so
    assert project.summary()["suggested_views"] == ["top", "bot"]
    assert load_project(mirror_project, views=["top", "bot"]).summary()["suggested_views"] == []
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["info", str(mirror_project)]) == 0
    assert "--views top bot reads them as views" in out.getvalue()
    assert "skeleton     none (the 2D dgp and skeletal models learn one from the labels)" in out.getvalue()


@pytest.mark.parametrize(
    ("names", "views"),
    [
        (["paw_top", "nose_top", "ear_top", "paw_bot", "nose_bot", "tail_bot"], ["top", "bot"]),
        (["a_cam1", "b_cam1", "c_cam1", "a_cam2", "b_cam2", "c_cam2"], ["cam1", "cam2"]),
        (["Hand", "Finger1", "Finger2", "Joystick1", "Joystick2"], []),  # reaching: no suffixes
        (["left_paw", "right_paw", "left_ear", "right_ear"], []),  # sides of parts, not views
        (["fl_paw", "fr_paw", "hl_paw", "hr_paw", "l_ear", "r_ear"], []),
        (["paw_top", "nose_top", "ear_top", "paw_bot", "nose_bot", "tail"], []),  # tail: no suffix
        (["paw_top", "nose_top", "tail_top", "paw_bot", "nose_bot"], []),  # bot: two names only
    ],
)
def test_suggested_views_from_keypoint_names(names, views):
    assert suggest_suffix_views(names) == views


def test_mirror_project_explicit_layouts(mirror_project: Path):
    assert load_project(mirror_project, views=["top", "bot"], view_layout="suffix").view_layout == "suffix"
    # A view that matches nothing: the message lists what was found.
    err = _bad(
        mirror_project,
        "side",
        "nose_top",
        "obsLow_bot",
        "label folders",
        where=mirror_project,
        views=["top", "side"],
    )
    assert "top," not in str(err).split("found")[0]  # only the unmatched view is blamed
    _bad(
        mirror_project,
        "label folder",
        "top",
        where=mirror_project,
        views=["top", "bot"],
        view_layout="folders",
    )
    # With only the top view, the _bot columns belong to no view.
    _bad(mirror_project, "obsLow_bot", "_top", where=mirror_project, views=["top"], view_layout="suffix")


# ---------------------------------------------------------------------------------------------
# Tiny projects: single view, folders layout, Lightning Pose multi-view.


def test_single_view_project_with_two_folders_and_videos(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    outside = tmp_path / "elsewhere" / "vidB.mov"
    outside.parent.mkdir()
    outside.write_bytes(b"")
    (root / "videos").mkdir()
    for name in ("vidA.mp4", "vidA.AVI", "readme.txt"):
        (root / "videos" / name).write_bytes(b"")
    config = yaml.safe_load((root / "config.yaml").read_text())
    config["video_sets"] = {
        str(outside): {"crop": "0, 8, 0, 6"},
        "videos/vidA.mp4": {},
        "C:\\nowhere\\x.avi": {},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))

    project = load_project(root)
    assert project.frame_keys == [
        "labeled-data/vidA/img0.png",
        "labeled-data/vidA/img1.png",
        "labeled-data/vidB/img0.png",
    ]
    np.testing.assert_array_equal(
        project.labels[:, 0], [[[1, 2], [3, 4]], [[5, 6], [NAN, NAN]], [[7, 8], [9, 10]]]
    )
    videos = project.videos()
    assert sorted(p.name for p in videos) == ["vidA.AVI", "vidA.mp4", "vidB.mov"]  # each once, no .txt
    assert outside.absolute() in videos
    # Two videos with one stem: the second (in name order) keeps its suffix as session name.
    assert set(project.sessions) == {"vidA", "vidA.mp4", "vidB"}
    assert project.sessions["vidB"] == {"main": outside.absolute()}


def test_loading_by_config_path(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    assert load_project(root / "config.yaml").root == root.absolute()


def test_folders_layout(tmp_path: Path):
    root = _folders_project(tmp_path / "proj")
    before = _snapshot(root)
    project = load_project(root)  # views and layout from config.yaml
    assert project.views == ["cam0", "cam1"] and project.view_layout == "folders"
    assert project.bodyparts == ["nose", "ear", "tail"]
    assert project.skeleton == [("nose", "ear"), ("ear", "tail")]
    assert project.frame_keys == [
        "mouse_day2/img0.png",
        "session0/img0.png",
        "session0/img1.png",
        "session0/img2.png",
        "session0/img3.png",
    ]
    assert project.keypoint_in_view.tolist() == [[True, True, True], [True, False, True]]
    labels = project.labels
    assert labels.shape == (5, 2, 3, 2)
    np.testing.assert_array_equal(labels[0, 0], [[11, 12], [13, 14], [15, 16]])
    np.testing.assert_array_equal(labels[0, 1], [[21, 22], [NAN, NAN], [25, 26]])
    np.testing.assert_array_equal(labels[1, 1], [[10, 10], [NAN, NAN], [30, 30]])
    np.testing.assert_array_equal(labels[2, 0], [[4, 4], [NAN, NAN], [6, 6]])
    assert np.isnan(labels[2, 1]).all() and np.isnan(labels[4, 0]).all()

    # session0/img2 has an image but no label row in cam1; session0/img3 has no cam0 image.
    ld = root.absolute() / "labeled-data"
    assert project.image_paths[3] == [ld / "session0_cam0/img2.png", ld / "session0_cam1/img2.png"]
    assert project.image_keys[3] == [
        "labeled-data/session0_cam0/img2.png",
        "labeled-data/session0_cam1/img2.png",
    ]
    assert project.image_paths[4] == [None, ld / "session0_cam1/img3.png"]
    assert project.image_keys[4] == [None, "labeled-data/session0_cam1/img3.png"]

    assert project.network_keypoints() == ["nose", "ear", "tail"]
    assert project.network_skeleton() == [(0, 1), (1, 2)]
    samples = project.network_samples()
    # session0/img1 has no cam1 image and session0/img3 no cam0 image: 8 samples, not 10.
    assert len(samples.image_paths) == 8
    assert samples.labels.shape == (8, 3, 2)
    assert samples.frame_index.tolist() == [0, 0, 1, 1, 2, 3, 3, 4]
    assert samples.view_index.tolist() == [0, 1, 0, 1, 0, 0, 1, 1]
    np.testing.assert_array_equal(samples.labels[7], labels[4, 1])
    assert samples.image_paths[7] == ld / "session0_cam1/img3.png"
    assert samples.image_keys[7] == "labeled-data/session0_cam1/img3.png"

    videos = root.absolute() / "videos"
    assert project.sessions == {
        "session0": {"cam0": videos / "session0_cam0.mp4", "cam1": videos / "session0_cam1.mp4"},
        "mouse_day2": {"cam0": videos / "mouse_cam0_day2.avi"},
    }
    assert project.videos() == [
        videos / "mouse_cam0_day2.avi",
        videos / "session0_cam0.mp4",
        videos / "session0_cam1.mp4",
        videos / "overview.mp4",
    ]
    assert project.calibration == root.absolute() / "calibration.toml"
    assert project.ground_truth == root.absolute() / "ground_truth.npz"

    summary = json.loads(json.dumps(project.summary()))
    assert summary["cameras"] == ["cam0", "cam1"]  # in cam_N order
    assert summary["n_labeled_frames"] == 5
    assert summary["views"] == ["cam0", "cam1"] and summary["view_layout"] == "folders"
    assert summary["videos"][1] == {
        "path": str(videos / "session0_cam0.mp4"),
        "view": "cam0",
        "session": "session0",
    }
    assert summary["videos"][3]["session"] is None
    assert _snapshot(root) == before  # nothing the user gave is modified


def test_folders_layout_detected_from_views_argument(tmp_path: Path):
    root = _folders_project(tmp_path / "proj")
    config = yaml.safe_load((root / "config.yaml").read_text())
    del config["multiview"]
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    assert load_project(root).view_layout == "single"
    project = load_project(root, views=["cam1", "cam0"])  # the argument sets the view order
    assert project.view_layout == "folders" and project.views == ["cam1", "cam0"]
    assert project.keypoint_in_view.tolist() == [[True, False, True], [True, True, True]]
    _bad(root, "cam2", "label folders", "session0_cam0", where=root, views=["cam0", "cam2"])


def test_folders_layout_label_folder_without_view(tmp_path: Path):
    root = _folders_project(tmp_path / "proj")
    _labels(root, "extra", ["nose"], {"img0.png": [1, 2]})
    err = _bad(root, "'extra'", "none of the views", views=["cam0", "cam1"], view_layout="folders")
    assert err.path is not None and err.path.parent.name == "extra"


def test_lightning_pose_multiview_files(tmp_path: Path):
    root = tmp_path / "lp"
    for view, offset in (("top", 0), ("bot", 100)):
        keys = [f"labeled-data/sess1_{view}/img{i}.png" for i in range(3)]
        for key in keys:
            _png(root / key)
        coords = np.arange(12, dtype=float).reshape(3, 2, 2) + offset
        write_labels(root / f"CollectedData_{view}.csv", LabelTable("lp", keys, ["nose", "paw"], coords))
    # Lightning Pose's out-of-distribution split sits beside them and must not be picked up.
    write_labels(
        root / "CollectedData_top_test.csv", LabelTable("lp", ["x.png"], ["nose", "paw"], np.zeros((1, 2, 2)))
    )
    project = load_project(root, views=["top", "bot"])
    assert project.format == "lightning-pose" and project.view_layout == "folders"
    assert project.label_files == [
        root.absolute() / "CollectedData_top.csv",
        root.absolute() / "CollectedData_bot.csv",
    ]
    assert project.frame_keys == ["sess1/img0.png", "sess1/img1.png", "sess1/img2.png"]
    np.testing.assert_array_equal(project.labels[:, 1] - project.labels[:, 0], np.full((3, 2, 2), 100.0))
    assert project.skeleton == []
    _bad(root, "several label files", "CollectedData_bot.csv", where=root)


def test_lightning_pose_single_view_with_a_skeleton(tmp_path: Path):
    root = tmp_path / "lp"
    keys = ["labeled-data/img1.png", "labeled-data/img2.png"]
    for key in keys:
        _png(root / key)
    write_labels(root / "CollectedData.csv", LabelTable("lp", keys, ["a", "b"], np.ones((2, 2, 2))))
    project = load_project(root)
    assert project.format == "lightning-pose" and project.skeleton == [] and project.config_path is None
    (root / "config.yaml").write_text("skeleton:\n- [a, b]\n")
    assert load_project(root).skeleton == [("a", "b")]


def test_suffix_layout_skeleton_from_column_names(tmp_path: Path):
    root = tmp_path / "mirror"
    _config(
        root,
        ["nose_top", "tail_top", "nose_bot", "tail_bot"],
        skeleton=[["nose_top", "tail_top"], ["nose_bot", "tail_bot"], ["nose_top", "nose_bot"]],
    )
    _labels(
        root, "vid", ["nose_top", "tail_top", "nose_bot", "tail_bot"], {"img0.png": [1, 2, 3, 4, 5, 6, 7, 8]}
    )
    project = load_project(root, views=["top", "bot"])
    assert project.view_layout == "suffix" and project.bodyparts == ["nose", "tail"]
    assert project.skeleton == [("nose", "tail")]  # one edge per pair of body parts
    assert project.network_keypoints() == ["nose_top", "tail_top", "nose_bot", "tail_bot"]
    assert project.network_skeleton() == [(0, 1), (2, 3)]
    np.testing.assert_array_equal(project.labels[0], [[[1, 2], [3, 4]], [[5, 6], [7, 8]]])


def test_csv_preferred_over_h5_and_h5_alone(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    rows = {"img0.png": [100, 100, 100, 100], "img1.png": [100, 100, 100, 100]}
    _labels(root, "vidA", ["nose", "tail"], rows, suffix=".h5")
    assert load_project(root).labels[0, 0, 0, 0] == 1  # from the CSV
    (root / "labeled-data/vidA/CollectedData_me.csv").unlink()
    project = load_project(root)
    assert project.labels[0, 0, 0, 0] == 100
    assert [p.suffix for p in project.label_files] == [".h5", ".csv"]


def test_bare_image_names_and_windows_separators(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    folder = root / "labeled-data/vidA"
    keys = ["img0.png", "labeled-data\\vidA\\img1.png"]
    write_labels(
        folder / "CollectedData_me.csv", LabelTable("me", keys, ["nose", "tail"], np.ones((2, 2, 2)))
    )
    project = load_project(root)
    assert project.image_paths[0][0] == folder.absolute() / "img0.png"
    assert project.image_paths[1][0] == root.absolute() / "labeled-data/vidA/img1.png"


def test_nan_labels_are_fine(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    _labels(root, "vidA", ["nose", "tail"], {"img0.png": [NAN] * 4})
    project = load_project(root)
    assert np.isnan(project.labels[0]).all()


# ---------------------------------------------------------------------------------------------
# Bad projects: one DGPError naming the file and the problem.


def test_missing_and_empty_folders(tmp_path: Path):
    _bad(tmp_path / "nope", "not found", where=tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    _bad(tmp_path / "empty", "empty", where=tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("hi")
    _bad(tmp_path / "other", "not a DeepLabCut or Lightning Pose project", where=tmp_path / "other")
    _bad(tmp_path / "other" / "notes.txt", "not a folder", where=tmp_path / "other" / "notes.txt")


def test_config_without_labels(tmp_path: Path):
    _config(tmp_path / "proj", ["nose"])
    _bad(
        tmp_path / "proj",
        "no label files",
        "CollectedData_<scorer>.csv",
        where=tmp_path / "proj" / "labeled-data",
    )


def test_labels_without_config(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    (root / "config.yaml").unlink()
    _bad(root, "config.yaml is missing", where=root / "config.yaml")


def test_malformed_config(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    (root / "config.yaml").write_text("Task: x\nbodyparts:\n- nose\n  - tail: [\n")
    _bad(root, "not valid YAML", "line 4", where=root / "config.yaml")
    (root / "config.yaml").write_text("Task: x\n")
    _bad(root, "no 'bodyparts' list", where=root / "config.yaml")
    (root / "config.yaml").write_text("bodyparts: nose\n")
    _bad(root, "'bodyparts'", "list", where=root / "config.yaml")
    (root / "config.yaml").write_text("")
    _bad(root, "empty", where=root / "config.yaml")
    (root / "config.yaml").write_text("- a\n- b\n")
    _bad(root, "mapping", where=root / "config.yaml")
    (root / "config.yaml").write_text("bodyparts: [nose, tail]\nskeleton: [[nose, tail, ear]]\n")
    _bad(root, "skeleton entry", where=root / "config.yaml")
    (root / "config.yaml").write_text("bodyparts: [nose, tail]\nskeleton: [[nose, ear]]\n")
    _bad(root, "'ear'", "not a body part", where=root / "config.yaml")
    (root / "config.yaml").write_text("bodyparts: [nose, tail]\nskeleton: [[nose, tail], [tail, tail]]\n")
    _bad(root, "[tail, tail]", "itself", where=root / "config.yaml")
    (root / "config.yaml").write_text("bodyparts: [nose, tail]\nmultiview: {views: cam0}\n")
    _bad(root, "multiview.views", where=root / "config.yaml")
    (root / "config.yaml").write_text("bodyparts: [nose, tail]\nmultiview: {views: [cam0], layout: grid}\n")
    _bad(root, "multiview.layout", "'grid'", where=root / "config.yaml")


def test_body_parts_disagree_with_config(tmp_path: Path):
    root = tmp_path / "proj"
    _config(root, ["nose"])
    label_file = _labels(root, "vidA", ["nose", "tail"], {"img0.png": [1, 2, 3, 4]})
    _bad(root, "tail", "not listed in config.yaml", where=label_file)
    _config(root, ["nose", "tail", "ear", "paw"])
    _bad(root, "ear, paw", "no label file has", where=root / "config.yaml")


def test_missing_image(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    (root / "labeled-data/vidA/img1.png").unlink()
    expected = root.absolute() / "labeled-data/vidA/img1.png"
    _bad(
        root,
        "'labeled-data/vidA/img1.png'",
        str(expected),
        where=root / "labeled-data/vidA/CollectedData_me.csv",
    )


def test_infinite_label(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    label_file = _labels(root, "vidA", ["nose", "tail"], {"img0.png": [1, 2, 3, -np.inf]})
    _bad(root, "infinite", "'labeled-data/vidA/img0.png'", "'tail'", where=label_file)


def test_multi_animal_projects(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    label_file = root / "labeled-data/vidA/CollectedData_me.csv"
    label_file.write_text(
        "scorer,me,me\nindividuals,m1,m1\nbodyparts,nose,nose\ncoords,x,y\nlabeled-data/vidA/img0.png,1,2\n"
    )
    _bad(root, "multi-animal projects are not supported yet", where=label_file)
    _config(root, ["nose", "tail"], multianimalproject=True)
    _bad(root, "multi-animal projects are not supported yet", where=root / "config.yaml")


def test_zero_labeled_rows(tmp_path: Path):
    root = tmp_path / "proj"
    _config(root, ["nose", "tail"])
    label_file = _labels(root, "vidA", ["nose", "tail"], {})
    _bad(root, "no labeled rows", where=label_file)


def test_image_labeled_twice(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    keys = ["labeled-data/vidA/img0.png"]
    write_labels(
        root / "labeled-data/vidA/CollectedData_you.csv",
        LabelTable("you", keys, ["nose", "tail"], np.ones((1, 2, 2))),
    )
    _bad(root, "labeled in two files", "'labeled-data/vidA/img0.png'")


def test_bad_view_arguments(tmp_path: Path):
    root = _dlc_project(tmp_path / "proj")
    _bad(root, "needs the view names", view_layout="suffix")
    _bad(root, "unknown view layout", view_layout="grid")
    _bad(root, "empty", views=[])
    _bad(root, "given twice", views=["a", "a"])
    _bad(root, "one view", views=["a", "b"], view_layout="single")
    _bad(root, "cam0", "nose, tail", "vidA", where=root, views=["cam0", "cam1"])
