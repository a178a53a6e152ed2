"""The bad-input corpus (tests/test_bad_inputs.py): damaged copies, snapshots, the case registry.

Copies hard-link their files (the shared fixtures are large), so every helper that damages a
file first unlinks it and writes a new one: the shared original is never touched.

A case is a function of a :class:`Ctx` registered with ``@case(family, name)`` into
:data:`CASES` under the id ``<family>-<name>``; it builds its damaged copy and returns
``(argv, words)``: the ``dgp-pyro`` arguments and the words the one error line must contain
(case-insensitive). The cases live in :mod:`bad_inputs.arguments`, :mod:`bad_inputs.project_files`
and :mod:`bad_inputs.runs`, imported at the end of this module.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from dgp_pyro.cli.main import main


def link_copy(src: Path, dst: Path) -> Path:
    """A copy of ``src`` whose files are hard links (fast, no disk)."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def put(path: Path, data: bytes | str) -> Path:
    """Replace ``path`` by a new file holding ``data`` (never writes through a hard link)."""
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    return put(path, data[: int(len(data) * keep)])


def garbage(n: int = 4096, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def csv_rows(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().splitlines()]


def write_rows(path: Path, rows: list[list[str]]) -> Path:
    return put(path, "\n".join(",".join(r) for r in rows) + "\n")


def edit_rows(path: Path, edit: Callable[[list[list[str]]], list[list[str]] | None]) -> Path:
    """Edit a DeepLabCut CSV's rows (header rows included) and drop its ``.h5`` twin."""
    rows = csv_rows(path)
    rows = edit(rows) or rows
    path.with_suffix(".h5").unlink(missing_ok=True)
    return write_rows(path, rows)


def edit_image(path: Path, edit: Callable[[Image.Image], Image.Image]) -> Path:
    with Image.open(path) as image:
        new = edit(image.copy())
    path.unlink()
    new.save(path)
    return path


def snapshot(*roots: Path) -> dict[str, tuple[int, int] | None]:
    """Every file under ``roots``: path -> (size, mtime_ns); folders as ``None``."""
    tree: dict[str, tuple[int, int] | None] = {}
    for root in roots:
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames:
                tree[os.path.join(dirpath, name)] = None
            for name in filenames:
                stat = os.stat(os.path.join(dirpath, name))
                tree[os.path.join(dirpath, name)] = (stat.st_size, stat.st_mtime_ns)
    return tree


def run_cli(argv: list[str | Path]) -> tuple[int, str, str]:
    """``dgp-pyro ARGV`` in this process: exit code, stdout, stderr (argparse exits included)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def label_csv(project: Path, view: str = "cam0") -> Path:
    """The label CSV of a synthetic project's view (``session0_<view>``)."""
    return project / "labeled-data" / f"session0_{view}" / "CollectedData_synthetic.csv"


def reaching_csv(project: Path) -> Path:
    return project / "labeled-data" / "reachingvideo1" / "CollectedData_Mackenzie.csv"


FAMILIES = ("arguments", "labels", "config", "images", "videos", "calibration", "runs")


@dataclass
class Ctx:
    """What a case builds its damaged inputs from; every copy lands in ``tmp``."""

    tmp: Path
    synth_source: Path
    reaching_source: Path
    run_getter: Callable[[], Path]

    def synth(self, name: str = "p") -> Path:
        return link_copy(self.synth_source, self.tmp / name)

    def reaching(self) -> Path:
        return link_copy(self.reaching_source, self.tmp / "reaching")

    def run(self, name: str = "run") -> Path:
        return link_copy(self.run_getter(), self.tmp / name)

    def run_on_copy(self) -> tuple[Path, Path]:
        """A copy of the run whose config points at a copy of its project (to damage the project)."""
        project, run = self.synth("runproject"), self.run()
        config_path = run / "config.json"
        config = json.loads(config_path.read_text())
        config["project"] = str(project)
        put(config_path, json.dumps(config))
        return run, project


TRAIN = ["--model", "supervised", "--backbone", "resnet18", "--steps", "1", "--batch-size", "2",
         "--size", "64x64", "--quiet"]  # fmt: skip


def train(project: Path, out: Path, *extra: str) -> list:
    return ["train", project, "--out", out, *TRAIN, *extra]


# ----------------------------------------------------------------------------- cases
# Each case returns (argv, words): the error line must contain every word (case-insensitive).

CASES: dict[str, Callable[[Ctx], tuple[list, list[str]]]] = {}


def case(family: str, name: str):
    assert family in FAMILIES

    def register(build):
        CASES[f"{family}-{name}"] = build
        return build

    return register


from bad_inputs import arguments, project_files, runs  # noqa: E402,F401  (registers the cases)
