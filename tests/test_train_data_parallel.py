"""``dgp-pyro train --devices K``: torch DDP in K processes is the one-process run, up to float noise.

Two local processes with ``gloo`` on CPU against one process, at the same effective batch size:
the first step's gradients (the optimizer's first moment after step 1, ``(1 - beta1) g``) agree
to 1e-4 of each tensor's largest entry, and the logged losses to a relative 1e-5. (Later weights
are not compared entry by entry: Adam divides each gradient by its own size, so the float noise in
a gradient that is nearly zero becomes a step of up to ``lr`` either way, which the next steps carry
on.) The graphical models are refused with a clear message.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
import pytest
import torch

from dgp_pyro.cli.main import main
from dgp_pyro.data.synthetic.project import write_synthetic_project
from dgp_pyro.run import load_run

#: Gradient agreement, relative to each tensor's largest entry; loss agreement, relative.
GRADIENT_RTOL, LOSS_RTOL = 1e-4, 1e-5


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "p"
    return write_synthetic_project(out, views=1, frames=40, labeled=12, seed=3, size=(64, 64))


def test_two_gloo_processes_match_one_process(project, tmp_path):
    args = (
        "--backbone", "resnet18", "--size", "64x64", "--steps", 2, "--batch-size", 4,
        "--checkpoint-every", 1, "--quiet",
    )  # fmt: skip
    code, _, stderr = cli("train", project, "--out", tmp_path / "one", *args)
    assert code == 0, stderr
    code, stdout, stderr = cli("train", project, "--out", tmp_path / "two", *args, "--devices", 2)
    assert code == 0, stderr
    assert "trained supervised" in stdout
    one, two = load_run(tmp_path / "one"), load_run(tmp_path / "two")
    assert one.split == two.split
    a_log, b_log = one.read_loss_log(), two.read_loss_log()
    assert [row["step"] for row in b_log] == [1, 2]
    np.testing.assert_allclose([r["loss"] for r in b_log], [r["loss"] for r in a_log], rtol=LOSS_RTOL)
    a = torch.load(one.checkpoints_dir / "step_1.pt", weights_only=True)
    b = torch.load(two.checkpoints_dir / "step_1.pt", weights_only=True)
    assert list(a["model"]) == list(b["model"])  # the same network, the same checkpoint layout
    moments = [(a["optimizer"]["state"][i]["exp_avg"], b["optimizer"]["state"][i]["exp_avg"])
               for i in a["optimizer"]["state"]]  # fmt: skip
    assert len(moments) == len(list(one.network().parameters()))
    for x, y in moments:
        torch.testing.assert_close(y, x, rtol=0, atol=GRADIENT_RTOL * float(x.abs().max()))
    assert (tmp_path / "two" / "finished.json").is_file()


def test_the_graphical_models_are_refused_on_several_devices(project, tmp_path):
    code, _, stderr = cli("train", project, "--out", tmp_path / "run", "--model", "dgp", "--devices", 2)
    assert code == 2 and stderr.count("\n") == 1
    assert "supervised model only" in stderr and "leave out --devices" in stderr
    code, _, stderr = cli("train", project, "--out", tmp_path / "run", "--devices", 0)
    assert code == 2 and "--devices 0 must be at least 1" in stderr
