"""The bad-input corpus: damaged projects, runs and arguments through every ``dgp-pyro`` verb.

Each case builds a small damaged copy of a real (``../shared/data``) or synthetic project, or of
one tiny trained run, inside its own ``tmp_path``, runs ``dgp-pyro`` (``main([...])``) and checks
the promise of issue 23: exit code 2, exactly one line on stderr that names the file or argument
and the problem, no traceback, and every file it could touch exactly as before (names, sizes,
mtimes). Cases that should work (grayscale or 16-bit images, as DeepLabCut accepts them) are
checked to work. Ids read ``<family>-<case>``; the families are listed in
:data:`bad_inputs.FAMILIES`; the cases are in ``tests/bad_inputs/``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from bad_inputs import CASES, FAMILIES, Ctx, edit_image, put, run_cli, snapshot, train
from PIL import Image

from dgp_pyro.data.synthetic import write_synthetic_project


@pytest.fixture(scope="session")
def synth_source(tmp_path_factory) -> Path:
    """A tiny synthetic 2-camera project (16 frames, 8 labeled, 64x64)."""
    out = tmp_path_factory.mktemp("bad_synth") / "p"
    return write_synthetic_project(out, views=2, frames=16, labeled=8, seed=0, size=(64, 64))


@pytest.fixture(scope="session")
def run_source(synth_source, tmp_path_factory) -> Path:
    """One tiny trained supervised run on :func:`synth_source` (2 steps, resnet18, 64x64)."""
    out = tmp_path_factory.mktemp("bad_run") / "run"
    code, _, err = run_cli(
        ["train", synth_source, "--out", out, "--model", "supervised", "--backbone", "resnet18",
         "--steps", "2", "--batch-size", "2", "--size", "64x64", "--holdout", "0.25", "--quiet"]
    )  # fmt: skip
    assert code == 0, err
    return out


# ----------------------------------------------------------------------------- the tests


@pytest.fixture
def ctx(tmp_path, synth_source, reaching_project, request) -> Ctx:
    return Ctx(tmp_path, synth_source, reaching_project, lambda: request.getfixturevalue("run_source"))


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input(name, ctx):
    argv, words = CASES[name](ctx)
    watched = [ctx.tmp, ctx.synth_source, ctx.reaching_source]
    before = snapshot(*watched)
    code, out, err = run_cli(argv)
    lines = err.strip().splitlines()
    assert "Traceback" not in err + out, err
    assert code == 2, f"exit {code}; stderr: {err!r}"
    assert len(lines) == 1, f"want one line on stderr, got {len(lines)}: {err!r}"
    line = lines[0]
    print(f"{name}: {line}")
    missing = [w for w in words if w.lower() not in line.lower()]
    assert not missing, f"{line!r} does not name {missing}"
    for advice in ("weights_only", "allow_pickle"):
        assert advice not in line
    assert snapshot(*watched) == before, "the command changed files although it failed"


# --- cases that must work


def test_grayscale_images_work(ctx):
    p = ctx.reaching()
    for image in (p / "labeled-data" / "reachingvideo1").glob("*.png"):
        edit_image(image, lambda im: im.convert("L"))
    code, out, err = run_cli(["info", p])
    assert code == 0 and err == "", err
    code, out, err = run_cli(train(p, ctx.tmp / "r", "--size", "64x64", "--holdout", "0"))
    assert code == 0, err


def test_sixteen_bit_png_works(ctx):
    p = ctx.reaching()
    for image in (p / "labeled-data" / "reachingvideo1").glob("*.png"):
        with Image.open(image) as im:
            gray = (np.asarray(im.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        image.unlink()
        Image.fromarray(gray).save(image)
        with Image.open(image) as check:
            assert check.mode.startswith("I")
    code, out, err = run_cli(train(p, ctx.tmp / "r", "--holdout", "0"))
    assert code == 0, err


def test_corpus_size():
    families = {f: sum(name.startswith(f + "-") for name in CASES) for f in FAMILIES}
    assert sum(families.values()) >= 50 and all(families.values()), families


def anipose_named(ctx: Ctx) -> Path:
    """The synthetic project with Anipose's names (``session0-cam0``) and no views in config.yaml."""
    p = ctx.synth()
    for old in sorted((p / "labeled-data").iterdir()):
        new = old.with_name(old.name.replace("_cam", "-cam"))
        old.rename(new)
        for table in new.glob("CollectedData_*.csv"):
            put(table, table.read_text().replace(f"/{old.name}/", f"/{new.name}/"))
        for table in new.glob("CollectedData_*.h5"):
            table.unlink()
    for video in sorted((p / "videos").iterdir()):
        video.rename(video.with_name(video.name.replace("_cam", "-cam")))
    text = (p / "config.yaml").read_text().replace("_cam", "-cam")
    put(p / "config.yaml", re.sub(r"multiview:\n(  .*\n)+", "", text))
    return p


@pytest.mark.parametrize(
    "how, views",
    [("detected", ["0", "1"]), ("named", ["cam0", "cam1"]), ("config.toml", ["cam0", "cam1"])],
)
def test_anipose_view_names_work(ctx, how, views):
    p = anipose_named(ctx)
    args = ["info", p, "--json"]
    if how == "named":
        args += ["--views", "cam0", "cam1"]
    if how == "config.toml":  # Anipose's project config, its cam_regex naming the whole camera
        put(p / "config.toml", "[triangulation]\ncam_regex = '-(cam[0-9]+)$'\n")
    code, out, err = run_cli(args)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["views"] == views and summary["view_layout"] == "folders"
    assert summary["n_labeled_frames"] == 8
    videos = sorted(Path(v["path"]).name for v in summary["videos"])
    assert videos == ["session0-cam0.mp4", "session0-cam1.mp4"]
