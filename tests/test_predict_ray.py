"""``dgp-pyro predict --engine ray``: the same files as the serial path, skipping complete outputs.

A tiny trained run over copies of a short synthetic video: the Ray engine on a local cluster of
two workers writes the same prediction files as the serial engine, a second call skips every
video whose manifest says it is complete, a video that cannot be read is reported without
stopping the others, and without Ray installed ``--engine ray`` is one clear error line.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dgp_pyro.cli.main import main
from dgp_pyro.data.predictions import read_predictions
from dgp_pyro.data.synthetic.project import write_synthetic_project
from dgp_pyro.posterior.fit import fit_run
from dgp_pyro.run import RunConfig

COPIES = 3


def cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, list[Path]]:
    """A 1-step supervised run and copies of its project's 40-frame video."""
    root = tmp_path_factory.mktemp("ray")
    project = write_synthetic_project(root / "p", views=1, frames=40, labeled=12, seed=3, size=(64, 64))
    config = RunConfig(
        project=str(project), backbone="resnet18", size=[64, 64], steps=1, batch_size=2, holdout=0.0
    )
    fit_run(config, root / "run", progress=False)
    videos = []
    for k in range(COPIES):
        copy = root / "videos" / f"clip{k}.mp4"
        copy.parent.mkdir(exist_ok=True)
        shutil.copy(project / "videos" / "session0.mp4", copy)
        videos.append(copy)
    return root / "run", videos


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_engine_writes_the_serial_files_then_skips_them(tiny, ray_session, tmp_path):
    run, videos = tiny
    serial, distributed = tmp_path / "serial", tmp_path / "ray"
    code, stdout, stderr = cli("predict", run, *videos, "--out", serial, "--quiet")
    assert code == 0, stderr
    code, stdout, stderr = cli(
        "predict", run, *videos, "--out", distributed, "--engine", "ray", "--workers", 2, "--quiet"
    )
    assert code == 0, stderr
    assert f"{COPIES} written, 0 skipped, 0 failed" in stdout
    names = sorted(p.name for p in serial.iterdir())
    assert names == sorted(p.name for p in distributed.iterdir())
    assert len([n for n in names if n.endswith(".manifest.json")]) == COPIES
    for video in videos:
        stem = f"{video.stem}_DGPpyro_supervised"
        a, b = read_predictions(serial / f"{stem}.h5"), read_predictions(distributed / f"{stem}.h5")
        assert a.keypoints == b.keypoints and list(a.extras) == list(b.extras)
        # one torch thread per worker against two in the serial run: float noise only
        np.testing.assert_allclose(b.xy, a.xy, rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(b.likelihood, a.likelihood, rtol=1e-5, atol=1e-6)
        for name in a.extras:
            np.testing.assert_allclose(b.extras[name], a.extras[name], rtol=1e-5, atol=1e-4)
        manifest = json.loads((distributed / f"{stem}.manifest.json").read_text())
        assert manifest["checkpoint"]["sha256"] and manifest["videos"][0]["path"] == str(video.resolve())
        assert [f["name"] for f in manifest["files"]] == [f"{stem}.h5", f"{stem}.csv"]
    # a second call, either engine, skips every complete output and writes nothing
    before = {p: p.stat().st_mtime_ns for p in distributed.iterdir()}
    for engine in ("ray", "serial"):
        code, stdout, stderr = cli(
            "predict", run, *videos, "--out", distributed, "--engine", engine, "--quiet"
        )
        assert code == 0, stderr
        assert stdout.count("skipped, its complete output is there") == COPIES
    assert {p: p.stat().st_mtime_ns for p in distributed.iterdir()} == before
    # an output with a file missing is not complete: that video alone is predicted again
    (distributed / f"{videos[0].stem}_DGPpyro_supervised.csv").unlink()
    code, stdout, stderr = cli("predict", run, *videos, "--out", distributed, "--engine", "ray", "--quiet")
    assert code == 0, stderr
    assert f"1 written, {COPIES - 1} skipped, 0 failed" in stdout


def test_an_unreadable_video_is_reported_and_the_others_are_written(tiny, ray_session, tmp_path):
    run, videos = tiny
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    out = tmp_path / "out"
    code, stdout, stderr = cli(
        "predict",
        run,
        videos[0],
        broken,
        videos[1],
        "--out",
        out,
        "--engine",
        "ray",
        "--workers",
        2,
        "--quiet",
    )
    assert code == 2
    assert "broken.mp4" in stderr and "cannot open the video" in stderr
    assert "1 of 3 failed" in stderr and "2 written, 0 skipped, 1 failed" in stdout
    assert (out / f"{videos[0].stem}_DGPpyro_supervised.h5").is_file()
    assert (out / f"{videos[1].stem}_DGPpyro_supervised.h5").is_file()
    assert not list(out.glob("broken*"))


def test_without_ray_the_engine_says_how_to_install_it(tiny, monkeypatch, tmp_path):
    run, videos = tiny
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code, stdout, stderr = cli("predict", run, videos[0], "--out", tmp_path, "--engine", "ray")
    assert code == 2 and stderr.count("\n") == 1
    assert "needs Ray" in stderr and "pip install dgp-pyro[ray]" in stderr
    assert not list(tmp_path.iterdir())


def test_ray_options_are_refused_with_the_serial_engine(tiny, tmp_path):
    run, videos = tiny
    code, _, stderr = cli("predict", run, videos[0], "--out", tmp_path, "--workers", 2)
    assert code == 2 and "--engine ray" in stderr
