"""Bad-input cases: arguments (unknown names, bad numbers, output paths that cannot be written)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from bad_inputs import case, garbage, put, train

# --- arguments


@case("arguments", "train-unknown-model")
def _(c):
    return ["train", c.synth(), "--out", c.tmp / "r", "--model", "dgp9"], ["--model", "dgp9"]


@case("arguments", "train-zero-steps")
def _(c):
    return train(c.synth(), c.tmp / "r", "--steps", "0"), ["--steps", "at least 1"]


@case("arguments", "train-negative-steps")
def _(c):
    return train(c.synth(), c.tmp / "r", "--steps", "-5"), ["--steps"]


@case("arguments", "train-zero-batch")
def _(c):
    return train(c.synth(), c.tmp / "r", "--batch-size", "0"), ["--batch-size"]


@case("arguments", "train-size-not-wxh")
def _(c):
    return train(c.synth(), c.tmp / "r", "--size", "big"), ["size", "big"]


@case("arguments", "train-size-not-multiple-of-32")
def _(c):
    return train(c.synth(), c.tmp / "r", "--size", "65x64"), ["65", "32"]


@case("arguments", "train-unknown-backbone")
def _(c):
    return train(c.synth(), c.tmp / "r", "--backbone", "resnet7"), ["resnet7"]


@case("arguments", "train-holdout-above-one")
def _(c):
    return train(c.synth(), c.tmp / "r", "--holdout", "1.5"), ["holdout", "1.5"]


@case("arguments", "train-holdout-negative")
def _(c):
    return train(c.synth(), c.tmp / "r", "--holdout", "-0.2"), ["holdout"]


@case("arguments", "train-holdout-file-missing")
def _(c):
    return train(c.synth(), c.tmp / "r", "--holdout", c.tmp / "split.json"), ["split.json"]


@case("arguments", "train-holdout-file-garbage")
def _(c):
    put(c.tmp / "split.json", "{not json")
    return train(c.synth(), c.tmp / "r", "--holdout", c.tmp / "split.json"), ["split.json"]


@case("arguments", "train-holdout-file-unknown-images")
def _(c):
    put(c.tmp / "split.json", json.dumps({"test": ["labeled-data/nowhere/img1.png"]}))
    return train(c.synth(), c.tmp / "r", "--holdout", c.tmp / "split.json"), ["split.json"]


@case("arguments", "train-unknown-view")
def _(c):
    return train(c.synth(), c.tmp / "r", "--views", "cam0", "cam7"), ["cam7"]


@case("arguments", "train-out-is-a-file")
def _(c):
    put(c.tmp / "taken", "x")
    return train(c.synth(), c.tmp / "taken"), ["taken", "not a folder"]


@case("arguments", "train-out-under-a-file")
def _(c):
    put(c.tmp / "taken", "x")
    return train(c.synth(), c.tmp / "taken" / "run"), ["taken"]


@case("arguments", "train-out-in-proc")
def _(c):
    return train(c.synth(), "/proc/dgp-pyro-run"), ["/proc", "cannot be written"]


@case("arguments", "train-out-read-only")
def _(c):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders")
    folder = c.tmp / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    return train(c.synth(), folder / "run"), ["ro", "cannot be written"]


@case("arguments", "train-flip-pair-unknown")
def _(c):
    return train(c.synth(), c.tmp / "r", "--flip-pairs", "paw_l:paw_r"), ["paw_l"]


@case("arguments", "train-calibration-for-2d")
def _(c):
    p = c.synth()
    return train(p, c.tmp / "r", "--calibration", p / "calibration.toml"), ["--calibration", "3D"]


@case("arguments", "predict-out-is-a-file")
def _(c):
    put(c.tmp / "taken.h5", "x")
    return ["predict", c.run(), "--out", c.tmp / "taken.h5", "--quiet"], ["taken.h5", "not a folder"]


@case("arguments", "predict-out-in-proc")
def _(c):
    return ["predict", c.run(), "--out", "/proc/dgp-pyro-out", "--quiet"], ["/proc", "cannot be written"]


@case("arguments", "predict-zero-batch")
def _(c):
    return ["predict", c.run(), "--batch-size", "0", "--quiet"], ["batch"]


@case("arguments", "predict-level-one")
def _(c):
    return ["predict", c.run(), "--levels", "1", "--quiet"], ["level", "between 0 and 1"]


@case("arguments", "predict-checkpoint-missing")
def _(c):
    return ["predict", c.run(), "--checkpoint", c.tmp / "nope.pt", "--quiet"], ["nope.pt", "not found"]


@case("arguments", "demo-out-is-a-file")
def _(c):
    put(c.tmp / "report", "x")
    return ["demo", "--out", c.tmp / "report", "--project", c.synth(), "--steps", "1"], ["report", "folder"]


@case("arguments", "demo-zero-steps")
def _(c):
    return ["demo", "--out", c.tmp / "d", "--project", c.synth(), "--steps", "0"], ["--steps"]


@case("arguments", "demo-unknown-model")
def _(c):
    return ["demo", "--out", c.tmp / "d", "--project", c.synth(), "--models", "dgp9"], ["dgp9"]


@case("arguments", "calibrate-out-is-a-folder")
def _(c):
    (c.tmp / "cal").mkdir()
    return ["calibrate", c.synth(), "--out", c.tmp / "cal"], ["cal", "folder"]


@case("arguments", "calibrate-holdout-above-one")
def _(c):
    return ["calibrate", c.synth(), "--out", c.tmp / "c.toml", "--holdout", "2"], ["holdout"]


@case("arguments", "synth-zero-views")
def _(c):
    return ["synth", "--out", c.tmp / "s", "--views", "0", "--frames", "8", "--labeled", "4"], ["views"]


@case("arguments", "synth-odd-size")
def _(c):
    return ["synth", "--out", c.tmp / "s", "--frames", "8", "--labeled", "4", "--size", "63x64"], ["63"]


@case("arguments", "synth-more-labeled-than-frames")
def _(c):
    return ["synth", "--out", c.tmp / "s", "--frames", "8", "--labeled", "20"], ["labeled"]


@case("arguments", "synth-out-not-empty")
def _(c):
    put(c.tmp / "s" / "keep.txt", "mine")
    return ["synth", "--out", c.tmp / "s", "--frames", "8", "--labeled", "4"], ["s", "empty"]


@case("arguments", "info-project-missing")
def _(c):
    return ["info", c.tmp / "nowhere"], ["nowhere"]


@case("arguments", "compare-input-missing")
def _(c):
    return ["compare", c.tmp / "nothing"], ["nothing"]


@case("arguments", "evaluate-truth-object-array")
def _(c):
    np.savez(c.tmp / "gt.npz", keypoints=np.array(["a", {"b": 1}], dtype=object))
    return ["evaluate", c.run(), "--truth", c.tmp / "gt.npz"], ["gt.npz", "python objects"]


@case("arguments", "evaluate-truth-garbage")
def _(c):
    put(c.tmp / "gt.npz", garbage())
    return ["evaluate", c.run(), "--truth", c.tmp / "gt.npz"], ["gt.npz", "cannot read"]


@case("arguments", "evaluate-truth-missing")
def _(c):
    return ["evaluate", c.run(), "--truth", c.tmp / "gt.npz"], ["gt.npz"]


