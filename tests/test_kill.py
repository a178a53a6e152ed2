"""kill -9 at any moment loses nothing: training and prediction killed in a subprocess.

Training (supervised and the 3D model ``dgp3d``) is killed with SIGKILL right after its first
checkpoint; every file left in the run folder must be complete and loadable (a killed atomic
write may leave only its hidden temporary file), the run must read as unfinished (predict says
how to finish it), ``--resume`` must remove the temporary files and finish, and its final
checkpoint must equal an uninterrupted run's with the same seed bit for bit (CPU; every run in
a subprocess with the same thread count). ``predict`` killed mid-way must leave no prediction
file that looks complete but is not.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dgp_pyro.data.predictions import read_predictions
from dgp_pyro.data.synthetic import write_synthetic_project
from dgp_pyro.run.checkpoint import load_checkpoint
from dgp_pyro.run.config import read_run_config
from dgp_pyro.run.folder import FINISHED, read_loss_log, read_split

TEMPORARY = re.compile(r"^\..+\.tmp(\.[^.]+)?$")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def dgp_pyro(*args) -> list[str]:
    return [sys.executable, "-m", "dgp_pyro.cli.main", *[str(a) for a in args]]


def run_to_end(*args) -> None:
    done = subprocess.run(dgp_pyro(*args), env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def start_and_kill(args: list, ready, timeout: float = 300.0) -> bool:
    """Start ``dgp-pyro ARGS``, SIGKILL it as soon as ``ready()``; True if it was killed alive."""
    process = subprocess.Popen(dgp_pyro(*args), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if process.poll() is not None:
                return False
            assert time.monotonic() < deadline, "the command never got there"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        return process.returncode == -signal.SIGKILL
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.is_file() and TEMPORARY.match(p.name)]


def check_complete(run: Path) -> None:
    """Every file of the run folder (temporaries aside) is complete and loadable."""
    read_run_config(run / "config.json")
    read_split(run / "split.json")
    read_loss_log(run / "loss.csv")
    for path in run.rglob("*"):
        if path.is_file() and not TEMPORARY.match(path.name) and path.suffix == ".pt":
            load_checkpoint(path)


def same_checkpoint(a: Path, b: Path) -> None:
    left, right = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
    assert left["step"] == right["step"]
    for part in ("model", "optimizer", "scheduler"):
        assert _flat(left[part]) == _flat(right[part]), f"{part} differs"


def _flat(obj, prefix=""):
    """A nested state as {path: value}, tensors as their bytes (bit-identical comparison)."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            out.update(_flat(value, f"{prefix}/{key}"))
        return out
    if isinstance(obj, list | tuple):
        out = {}
        for i, value in enumerate(obj):
            out.update(_flat(value, f"{prefix}/{i}"))
        return out
    if isinstance(obj, torch.Tensor):
        return {prefix: (obj.dtype, tuple(obj.shape), obj.detach().cpu().contiguous().numpy().tobytes())}
    return {prefix: obj}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("kill") / "p"
    return write_synthetic_project(out, views=2, frames=16, labeled=8, seed=1, size=(64, 64))


SETTINGS = {
    "supervised": ["--steps", "6", "--checkpoint-every", "2"],
    "dgp3d": ["--steps", "4", "--checkpoint-every", "1", "--option", "window=4"],
}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(SETTINGS))
def test_train_killed_after_first_checkpoint_resumes_exactly(project, tmp_path, model):
    common = [
        "--model", model, "--backbone", "resnet18", "--batch-size", "2", "--size", "64x64",
        "--holdout", "0.25", "--seed", "3", "--quiet", *SETTINGS[model],
    ]  # fmt: skip
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run_to_end("train", project, "--out", reference, *common)
    assert (reference / FINISHED).is_file()

    first = killed / "checkpoints" / "last.pt"
    was_alive = start_and_kill(["train", project, "--out", killed, *common], first.is_file)
    assert was_alive, "training ended before it could be killed"
    check_complete(killed)
    assert not (killed / FINISHED).is_file(), "a killed run must not read as finished"
    predict = subprocess.run(dgp_pyro("predict", killed, "--quiet"), env=ENV, capture_output=True, text=True)
    assert predict.returncode == 2 and "unfinished" in predict.stderr and "--resume" in predict.stderr
    assert not (killed / "predictions").exists()

    stale = killed / "checkpoints" / ".last.abcd1234.tmp.pt"  # as a write killed mid-way leaves it
    stale.write_bytes(b"half a checkpoint")
    run_to_end("train", project, "--out", killed, "--resume", "--quiet")
    assert temporaries(killed) == [], temporaries(killed)
    assert (killed / FINISHED).is_file()
    check_complete(killed)
    same_checkpoint(reference / "checkpoints" / "last.pt", killed / "checkpoints" / "last.pt")
    assert read_loss_log(reference / "loss.csv")[-1]["loss"] == read_loss_log(killed / "loss.csv")[-1]["loss"]


@pytest.mark.slow
def test_resume_uses_newest_snapshot_when_last_is_damaged(project, tmp_path):
    run = tmp_path / "run"
    run_to_end(
        "train", project, "--out", run, "--model", "supervised", "--backbone", "resnet18",
        "--batch-size", "2", "--size", "64x64", "--holdout", "0.25", "--quiet",
        "--checkpoint-every", "2", "--steps", "6",
    )  # fmt: skip
    last = run / "checkpoints" / "last.pt"
    expected = tmp_path / "expected.pt"
    os.link(last, expected)  # the uninterrupted run's final checkpoint
    data = last.read_bytes()
    last.unlink()  # last.pt is hard-linked to the newest snapshot: damage a copy
    last.write_bytes(data[: len(data) // 3])
    (run / "checkpoints" / "step_6.pt").unlink()  # the newest complete snapshot is now step 4
    (run / FINISHED).unlink()
    run_to_end("train", project, "--out", run, "--resume", "--quiet")
    assert load_checkpoint(last)["step"] == 6
    same_checkpoint(expected, last)


@pytest.mark.slow
def test_predict_killed_leaves_no_partial_prediction(project, tmp_path):
    run = tmp_path / "run"
    run_to_end("train", project, "--out", run, "--model", "supervised", "--backbone", "resnet18", "--steps",
               "2", "--batch-size", "2", "--size", "64x64", "--holdout", "0.25", "--quiet")  # fmt: skip
    out = tmp_path / "predictions"
    videos = sorted((project / "videos").glob("*.mp4"))

    def writing() -> bool:
        return out.is_dir() and any(out.iterdir())

    start_and_kill(["predict", run, *videos, "--out", out, "--quiet"], writing)
    expected = 16
    for path in out.glob("*.h5"):  # whatever looks complete must be complete
        if not TEMPORARY.match(path.name):
            assert len(read_predictions(path).xy) == expected
    run_to_end("predict", run, *videos, "--out", out, "--quiet")
    assert temporaries(out) == []
    files = sorted(p for p in out.glob("*.h5"))
    assert len(files) == len(videos)
    for path in files:
        assert len(read_predictions(path).xy) == expected
