"""Bad-input cases: damaged label files, config.yaml, images, videos and calibrations."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np

from bad_inputs import (
    TRAIN,
    case,
    edit_image,
    edit_rows,
    garbage,
    put,
    reaching_csv,
    truncate,
)
from dgp_pyro.data.synthetic import write_synthetic_project
from dgp_pyro.data.video import VideoReader, write_video

# --- label files


@case("labels", "empty-file")
def _(c):
    p = c.reaching()
    put(reaching_csv(p), "")
    reaching_csv(p).with_suffix(".h5").unlink()
    return ["info", p], ["CollectedData_Mackenzie.csv"]


@case("labels", "one-header-row")
def _(c):
    p = c.reaching()
    edit_rows(reaching_csv(p), lambda rows: [rows[1]] + rows[3:])
    return ["info", p], ["CollectedData_Mackenzie.csv"]


@case("labels", "missing-bodypart-column")
def _(c):
    p = c.reaching()
    edit_rows(reaching_csv(p), lambda rows: [r[:-2] for r in rows])
    return ["info", p], ["Joystick2"]


@case("labels", "extra-bodypart-column")
def _(c):
    p = c.reaching()
    edit_rows(reaching_csv(p), _extra_column)
    return ["info", p], ["Tail"]


def _extra_column(rows):
    head = [rows[0] + ["Mackenzie"] * 2, rows[1] + ["Tail"] * 2, rows[2] + ["x", "y"]]
    return head + [r + ["1.0", "2.0"] for r in rows[3:]]


@case("labels", "non-numeric-cell")
def _(c):
    p = c.reaching()

    def edit(rows):
        rows[5][3] = "left"

    edit_rows(reaching_csv(p), edit)
    return ["info", p], ["CollectedData_Mackenzie.csv", "left"]


@case("labels", "all-empty-cells")
def _(c):
    p = c.reaching()
    edit_rows(reaching_csv(p), lambda rows: rows[:3] + [[r[0]] + [""] * (len(r) - 1) for r in rows[3:]])
    return ["train", p, "--out", c.tmp / "r", *TRAIN[:-3]], ["CollectedData_Mackenzie.csv", "0 labeled"]


@case("labels", "far-outside-image")
def _(c):
    p = c.reaching()

    def edit(rows):
        for r in rows[3:8]:
            r[1] = "9000.0"

    edit_rows(reaching_csv(p), edit)
    return ["train", p, "--out", c.tmp / "r", *TRAIN], ["CollectedData_Mackenzie.csv", "outside"]


@case("labels", "negative-coordinates")
def _(c):
    p = c.reaching()

    def edit(rows):
        rows[4][2] = "-400"

    edit_rows(reaching_csv(p), edit)
    return ["train", p, "--out", c.tmp / "r", *TRAIN], ["CollectedData_Mackenzie.csv", "outside"]


@case("labels", "duplicate-rows")
def _(c):
    p = c.reaching()
    edit_rows(reaching_csv(p), lambda rows: rows + [rows[4]])
    return ["info", p], ["CollectedData_Mackenzie.csv", "img"]


@case("labels", "row-names-missing-image")
def _(c):
    p = c.reaching()
    (p / "labeled-data" / "reachingvideo1" / "img020.png").unlink()
    return ["train", p, "--out", c.tmp / "r", *TRAIN], ["img020.png"]


@case("labels", "garbage-bytes")
def _(c):
    p = c.reaching()
    put(reaching_csv(p), garbage())
    reaching_csv(p).with_suffix(".h5").unlink()
    return ["info", p], ["CollectedData_Mackenzie.csv"]


@case("labels", "truncated-h5")
def _(c):
    p = c.reaching()
    reaching_csv(p).unlink()
    truncate(reaching_csv(p).with_suffix(".h5"))
    return ["info", p], ["CollectedData_Mackenzie.h5"]


@case("labels", "truncated-csv-row")
def _(c):
    p = c.reaching()
    edit_rows(reaching_csv(p), lambda rows: rows[:-1] + [rows[-1][:4]])
    return ["info", p], ["CollectedData_Mackenzie.csv"]


@case("labels", "view-images-at-half-size")
def _(c):
    p = c.synth()
    folder = p / "labeled-data" / "session0_cam1"
    for image in folder.glob("*.png"):
        edit_image(image, lambda im: im.resize((32, 32)))
    return ["train", p, "--out", c.tmp / "r", *TRAIN], ["session0_cam1", "outside"]


@case("labels", "image-halved-all-outside")
def _(c):
    p = c.reaching()
    edit_image(p / "labeled-data" / "reachingvideo1" / "img005.png", lambda im: im.resize((200, 180)))
    return ["train", p, "--out", c.tmp / "r", *TRAIN], ["img005.png", "outside"]


# --- config.yaml


@case("config", "malformed-yaml")
def _(c):
    p = c.reaching()
    put(p / "config.yaml", "bodyparts: [Hand, Finger1\nskeleton: {{{\n")
    return ["info", p], ["config.yaml"]


@case("config", "no-bodyparts")
def _(c):
    p = c.reaching()
    text = (p / "config.yaml").read_text()
    put(p / "config.yaml", re.sub(r"bodyparts:\n(- .*\n)+", "", text))
    return ["info", p], ["config.yaml", "bodyparts"]


@case("config", "bodyparts-not-a-list")
def _(c):
    p = c.reaching()
    text = (p / "config.yaml").read_text()
    put(p / "config.yaml", re.sub(r"bodyparts:\n(- .*\n)+", "bodyparts: 5\n", text))
    return ["info", p], ["config.yaml", "bodyparts"]


@case("config", "skeleton-unknown-part")
def _(c):
    p = c.reaching()
    text = (p / "config.yaml").read_text().replace("'Joystick2'", "'Elbow'")
    put(p / "config.yaml", text)
    return ["info", p], ["config.yaml", "Elbow"]


@case("config", "empty-file")
def _(c):
    p = c.reaching()
    put(p / "config.yaml", "")
    return ["info", p], ["config.yaml"]


@case("config", "top-level-list")
def _(c):
    p = c.reaching()
    put(p / "config.yaml", "- a\n- b\n")
    return ["info", p], ["config.yaml"]


# --- images


@case("images", "zero-bytes")
def _(c):
    p = c.reaching()
    put(p / "labeled-data" / "reachingvideo1" / "img020.png", b"")
    return ["train", p, "--out", c.tmp / "r", *TRAIN], ["img020.png"]


@case("images", "corrupt")
def _(c):
    p = c.reaching()
    put(p / "labeled-data" / "reachingvideo1" / "img020.png", b"\x89PNG\r\n\x1a\n" + garbage(500))
    return ["train", p, "--out", c.tmp / "r", *TRAIN], ["img020.png"]


@case("images", "truncated")
def _(c):
    p = c.reaching()
    truncate(p / "labeled-data" / "reachingvideo1" / "img020.png", 0.3)
    return ["train", p, "--out", c.tmp / "r", *TRAIN], ["img020.png"]


@case("images", "text-named-png")
def _(c):
    p = c.synth()
    put(p / "labeled-data" / "session0_cam0" / "img00003.png", "not an image\n")
    return ["train", p, "--out", c.tmp / "r", *TRAIN], ["img00003.png"]


# --- videos


@case("videos", "zero-bytes")
def _(c):
    return ["predict", c.run(), put(c.tmp / "v.mp4", b""), "--quiet"], ["v.mp4"]


@case("videos", "truncated")
def _(c):
    video = c.tmp / "v.mp4"
    put(video, (c.synth_source / "videos" / "session0_cam0.mp4").read_bytes())
    truncate(video, 0.4)
    return ["predict", c.run(), video, "--quiet"], ["v.mp4"]


@case("videos", "not-a-video")
def _(c):
    return ["predict", c.run(), put(c.tmp / "notes.mp4", "hello\n" * 100), "--quiet"], ["notes.mp4"]


@case("videos", "missing")
def _(c):
    return ["predict", c.run(), c.tmp / "gone.mp4", "--quiet"], ["gone.mp4"]


@case("videos", "info-zero-bytes-in-project")
def _(c):
    p = c.synth()
    put(p / "videos" / "session0_cam1.mp4", b"")
    return ["info", p], ["session0_cam1.mp4"]


@case("videos", "views-differ-in-frame-count")
def _(c):
    p = c.synth()
    other = write_synthetic_project(c.tmp / "short", views=2, frames=10, labeled=4, seed=0, size=(64, 64))
    put(p / "videos" / "session0_cam1.mp4", (other / "videos" / "session0_cam1.mp4").read_bytes())
    return ["train", p, "--out", c.tmp / "r", *TRAIN[2:], "--model", "dgp3d"], ["session0", "frames"]


@case("videos", "views-differ-in-frame-rate")
def _(c):
    p = c.synth()
    with VideoReader(p / "videos" / "session0_cam1.mp4") as reader:
        frames = np.stack([reader.read(k) for k in range(len(reader))])
    target = p / "videos" / "session0_cam1.mp4"
    target.unlink()
    write_video(target, frames, fps=15.0)
    return ["train", p, "--out", c.tmp / "r", *TRAIN[2:], "--model", "dgp3d"], ["session0", "fps"]


# --- calibrations


def _calibration_case(c, edit: Callable[[str], str]) -> tuple[list, list[str]]:
    p = c.synth()
    put(p / "calibration.toml", edit((c.synth_source / "calibration.toml").read_text()))
    return ["train", p, "--out", c.tmp / "r", *TRAIN[2:], "--model", "dgp3d"], ["calibration.toml"]


@case("calibration", "malformed-toml")
def _(c):
    return _calibration_case(c, lambda t: t.replace("[cam_0]", "[cam_0", 1))


@case("calibration", "one-camera-missing")
def _(c):
    return _calibration_case(c, lambda t: t[: t.index("[cam_1]")])


@case("calibration", "camera-names-wrong")
def _(c):
    return _calibration_case(c, lambda t: t.replace('name = "cam1"', 'name = "side"'))


@case("calibration", "matrix-missing")
def _(c):
    return _calibration_case(c, lambda t: re.sub(r"matrix = \[.*?\n\]\n", "", t, count=1, flags=re.S))


@case("calibration", "singular-matrix")
def _(c):
    return _calibration_case(c, lambda t: re.sub(r"87\.\d+", "0.0", t))


@case("calibration", "garbage")
def _(c):
    return _calibration_case(c, lambda t: garbage().decode("latin-1"))


