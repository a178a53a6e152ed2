"""dgp-pyro against DeepLabCut 3 on real labeled projects, side by side, on the same held-out frames.

For each project (by default the two real projects in ``../shared/data``: ``reaching-mackenzie``,
a DeepLabCut project, and ``mirror-mouse-example``, a Lightning-Pose project whose two views share
one image, which DeepLabCut sees as one image with its 17 ``<part>_top`` / ``<part>_bot`` columns
as 17 body parts; or any DeepLabCut project folder, or shared project name, given on the command
line):

1. **Split.** The labeled images (rows with at least one labeled keypoint), keys as written in the
   label file, sorted; ``--train-frames N`` (default 20) of them train: the sorted unique indices
   ``round(linspace(0, n - 1, N))``; every other labeled image is held out. Written to
   ``OUT/<project>/train<N>/split.json`` as ``{"train": [...], "test": [...]}``, the file
   ``dgp-pyro train --holdout`` reads.
2. **dgp-pyro** ``supervised`` and ``dgp``, each trained by ``dgp-pyro train PROJECT --model M
   --holdout split.json`` with the library's default settings (the ``dgp`` model uses the
   project's unlabeled videos, as ``train`` finds them: ``videos/`` or ``video_sets``), then
   ``dgp-pyro evaluate RUN --json``, which writes the posterior on the held-out images to
   ``RUN/predictions/labeled_test_DGPpyro_<model>.h5`` (means and interval columns). On a
   project with several views (``--views``; the shared ``mirror-mouse-example`` is ``top bot``)
   ``dgp3d`` runs too, with ``--views`` and cameras estimated by ``dgp-pyro calibrate --holdout
   split.json`` from the training frames' labels alone (the held-out frames only measure the
   cameras' reprojection error, reported in the row's ``settings``); it is scored on the same
   keypoint columns, through the reprojection of its 3D posterior into each view.
3. **DeepLabCut 3.0.2**, PyTorch engine, ``resnet_50``, its default augmentation and schedule, CPU,
   from a random initialisation (``--dlc-pretrained``: its default ImageNet weights, for users who
   have them), in a virtualenv this script creates (``--dlc-venv``, default
   ``benchmarks/results/dlc-venv``: ``python -m venv`` + ``pip install deeplabcut==3.0.2``; never a
   dependency of dgp-pyro). ``benchmarks/dlc_driver.py`` runs inside it (see its docstring): it
   converts the project, trains with the same split, and predicts the held-out images with the
   last epoch's snapshot.
4. **Scoring**, the same code for every method, over the labeled keypoints of the held-out images:
   ``mean_px`` (mean Euclidean error), ``rmse_px``, ``median_px``, ``pck_5px`` and ``pck_10px``
   (share within 5 / 10 px), ``over_20px`` (share more than 20 px off), ``n_points``; a labeled
   keypoint without a prediction counts as a miss in the shares and is left out of the distances
   (``n_missing``). For dgp-pyro also ``coverage_50`` / ``coverage_90``: the share of held-out label
   coordinates inside the prediction file's equal-tailed intervals; training fits the intervals'
   scale on these same labels, so that figure is in-sample, and ``coverage_loo_50`` /
   ``coverage_loo_90`` (from ``evaluate``: each frame scored by intervals refitted on the others)
   is what new frames can expect.

**Budget.** DeepLabCut gets as many epochs as fit in the CPU time (user + system seconds of the
process) that ``dgp-pyro train --model dgp`` took (``supervised``'s where the project has no video,
so that ``dgp`` cannot train and its line says ``skipped``), never more than DeepLabCut's default
200 epochs: a short probe run (``--dlc-probe-epochs``, default 2, on a copy of the same split)
measures DeepLabCut's CPU seconds per epoch and its fixed start-up cost. CPU time rather than wall
time because a shared machine's wall time depends on what else runs; on an idle machine they agree
(wall = CPU / cores). ``--dlc-epochs`` overrides. Every line reports ``train_seconds`` (wall) and
``train_cpu_seconds``, and DeepLabCut's line the budget it was given. An interrupted dgp-pyro
training resumes from its last checkpoint on the next call (its time: the sum of the segments).
``predict_fps`` is held-out images per wall second of the whole prediction step (a fresh process:
start-up, model loading and, for dgp-pyro, the posterior included), so with a few dozen images it
measures start-up more than throughput.

**Output.** One JSON line per project and method on stdout, appended to ``OUT/results.jsonl``;
``--markdown`` also prints the table. Every stage keeps its result under ``--out`` (default
``benchmarks/results/vs_deeplabcut``) and a later call reuses it, so a second call only re-scores.
Progress goes to stderr; each subprocess logs to ``OUT/<project>/train<N>/<stage>.log``. Runs one
process at a time with ``--threads`` (default 2) threads. Takes hours with the defaults; not run
by CI (``tests/test_bench_vs_deeplabcut.py`` tests the split, the scoring and the budget).

    python benchmarks/bench_vs_deeplabcut.py [PROJECT ...] [--train-frames 20] [--out DIR]
        [--dlc-epochs N] [--dlc-pretrained] [--dlc-venv DIR] [--dgp-pyro-commit REV] [--markdown]

``--dgp-pyro-commit REV`` runs that commit of dgp-pyro (``git archive`` into ``OUT``, first on the
subprocesses' ``PYTHONPATH``) rather than the working tree, so a run of hours measures one version;
every line records the commit (``dgp_pyro_commit``).

Smoke test (minutes, not a benchmark): ``--dgp-train-args "--steps 5" --dlc-epochs 1 --out /tmp/x``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import fcntl
import json
import math
import os
import platform
import pty
import resource
import select
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_OUT = RESULTS / "vs_deeplabcut"
DEFAULT_VENV = RESULTS / "dlc-venv"
DRIVER = Path(__file__).resolve().with_name("dlc_driver.py")
SHARED_PROJECTS = ("reaching-mackenzie", "mirror-mouse-example")
DLC_VERSION = "3.0.2"
DGP_MODELS = ("supervised", "dgp")
#: The 3D model, run on top of those where the project has several views (``--views``).
DGP_MODEL_3D = "dgp3d"
#: The views of the shared projects with more than one (``--views`` for other projects).
SHARED_VIEWS = {"mirror-mouse-example": ("top", "bot")}
#: Epochs of the fixed-length DeepLabCut reference run (``--dlc-also-epochs``): where DeepLabCut
#: from scratch has converged on a 20-frame project, as users train it.
DLC_REFERENCE_EPOCHS = 60
#: ``train_settings.epochs`` of DeepLabCut 3.0.2's resnet_50 pytorch_config.yaml: its default schedule.
DLC_DEFAULT_EPOCHS = 200
#: The dgp-pyro model whose training time is DeepLabCut's budget.
BUDGET_MODEL = "dgp"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
LEVELS = ("50", "90")


def log(message: str) -> None:
    """A progress line on stderr, with the time of day."""
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def shared_data_dir() -> Path:
    """The real projects: ``$DGP_PYRO_SHARED_DATA`` or ``../shared/data`` beside the repo."""
    return Path(os.environ.get("DGP_PYRO_SHARED_DATA", ROOT.parent / "shared" / "data"))


# --------------------------------------------------------------------------- labels


@dataclass
class Labels:
    """A project's labels: ``xy[i, k]`` is keypoint ``keypoints[k]`` in image ``keys[i]`` (NaN: unlabeled)."""

    keys: list[str]
    keypoints: list[str]
    xy: np.ndarray  # (N, K, 2)

    def rows(self, keys: list[str]) -> np.ndarray:
        index = {k: i for i, k in enumerate(self.keys)}
        return self.xy[[index[k] for k in keys]]


def _float(cell: str) -> float:
    cell = cell.strip()
    return math.nan if cell == "" else float(cell)


def read_label_csv(path: Path) -> Labels:
    """A DeepLabCut label CSV: three header rows, one or three index columns (joined with '/')."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        rows = [row for row in csv.reader(handle) if any(cell.strip() for cell in row)]
    header, body = rows[:3], rows[3:]
    n_index = 1
    while n_index < len(header[0]) and all(row[n_index] == "" for row in header):
        n_index += 1
    bodyparts, coords = header[1][n_index:], header[2][n_index:]
    keypoints = list(dict.fromkeys(bp for bp, c in zip(bodyparts, coords, strict=True) if c in ("x", "y")))
    column = {(bp, c): i for i, (bp, c) in enumerate(zip(bodyparts, coords, strict=True))}
    keys, values = [], []
    for row in body:
        keys.append("/".join(cell.strip() for cell in row[:n_index] if cell.strip()))
        cells = row[n_index:]
        values.append([[_float(cells[column[(k, c)]]) for c in ("x", "y")] for k in keypoints])
    return Labels(keys, keypoints, np.array(values, dtype=float).reshape(len(keys), len(keypoints), 2))


def read_label_h5(path: Path) -> Labels:
    import pandas as pd

    frame = pd.read_hdf(path)
    keypoints = list(dict.fromkeys(frame.columns.get_level_values("bodyparts")))
    keys = ["/".join(str(p) for p in k) if isinstance(k, tuple) else str(k) for k in frame.index]
    xy = np.stack(
        [
            np.stack([frame.xs((k, c), axis=1, level=("bodyparts", "coords")).iloc[:, 0] for c in "xy"], -1)
            for k in keypoints
        ],
        axis=1,
    )
    return Labels(keys, keypoints, xy.astype(float))


def project_labels(project: Path) -> Labels:
    """Every label file of a DeepLabCut project (``labeled-data/*/CollectedData_*.csv``, else ``.h5``),
    or a Lightning-Pose project's ``CollectedData.csv``."""
    if not (project / "config.yaml").is_file():
        return read_label_csv(project / "CollectedData.csv")
    tables = []
    for folder in sorted(p for p in (project / "labeled-data").iterdir() if p.is_dir()):
        csvs, h5s = sorted(folder.glob("CollectedData_*.csv")), sorted(folder.glob("CollectedData_*.h5"))
        if csvs:
            tables.append(read_label_csv(csvs[0]))
        elif h5s:
            tables.append(read_label_h5(h5s[0]))
    if not tables:
        raise SystemExit(f"{project}: no labeled-data/*/CollectedData_*.csv or .h5")
    keypoints = tables[0].keypoints
    if any(t.keypoints != keypoints for t in tables):
        raise SystemExit(f"{project}: label files disagree on the keypoints")
    return Labels(
        [k for t in tables for k in t.keys], keypoints, np.concatenate([t.xy for t in tables], axis=0)
    )


def project_videos(project: Path) -> list[str]:
    """The videos in the project's ``videos/`` folder (what ``dgp`` trains on besides the labels)."""
    folder = project / "videos"
    if not folder.is_dir():
        return []
    return sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)


# --------------------------------------------------------------------------- split


def make_split(labels: Labels, n_train: int) -> dict[str, list[str]]:
    """``n_train`` training images spread evenly over the sorted labeled image keys; the rest test.

    Labeled images: at least one keypoint labeled. Train: the sorted unique indices
    ``round(linspace(0, n - 1, n_train))`` of the sorted keys; test: all other labeled images.
    """
    labeled = np.isfinite(labels.xy).all(-1).any(-1)
    keys = sorted(k for k, ok in zip(labels.keys, labeled, strict=True) if ok)
    if len(set(keys)) != len(keys):
        raise SystemExit("the label files list an image twice")
    n = len(keys)
    if not 1 <= n_train < n:
        raise SystemExit(f"--train-frames {n_train} must be at least 1 and below the {n} labeled images")
    chosen = sorted({int(i) for i in np.round(np.linspace(0, n - 1, n_train))})
    train = [keys[i] for i in chosen]
    taken = set(train)
    return {"train": train, "test": [k for k in keys if k not in taken]}


# --------------------------------------------------------------------------- scoring


def score(
    pred: np.ndarray,
    truth: np.ndarray,
    intervals: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> dict[str, Any]:
    """Errors of predictions ``pred (N, K, 2)`` against labels ``truth (N, K, 2)`` (NaN: unlabeled).

    ``intervals`` maps a level ("50", "90") to ``(lower, upper)`` arrays shaped like ``pred``;
    coverage is the share of labeled coordinates (x and y each) inside the interval.
    """
    labeled = np.isfinite(truth).all(-1)
    predicted = np.isfinite(pred).all(-1)
    dist = np.linalg.norm(pred - truth, axis=-1)[labeled & predicted]
    n = int(labeled.sum())
    out: dict[str, Any] = {"n_points": n, "n_missing": int((labeled & ~predicted).sum())}
    if n == 0:
        return out
    out.update(
        mean_px=float(dist.mean()) if dist.size else None,
        rmse_px=float(np.sqrt(np.mean(dist**2))) if dist.size else None,
        median_px=float(np.median(dist)) if dist.size else None,
        # shares over every labeled keypoint: one without a prediction is a miss
        pck_5px=float((dist <= 5.0).sum() / n),
        pck_10px=float((dist <= 10.0).sum() / n),
        over_20px=float(((dist > 20.0).sum() + out["n_missing"]) / n),
    )
    for level, (lower, upper) in (intervals or {}).items():
        coords = np.isfinite(truth)
        inside = (truth >= lower) & (truth <= upper)
        out[f"coverage_{level}"] = float(inside[coords].mean())
    return out


# --------------------------------------------------------------------------- budget


def probe_rate(timing: dict[str, Any]) -> tuple[float, float]:
    """``(CPU seconds per epoch, fixed CPU seconds)`` of DeepLabCut from a probe run's timing.

    ``timing`` holds the process's CPU seconds when training started (``fit_start_cpu_seconds``),
    at each epoch's end (``epoch_end_cpu_seconds``) and in all (``process_cpu_seconds``). Per epoch:
    the mean over the epochs after the first (the first carries warm-up), or the first alone when
    only one ran. Fixed: the process's CPU time less that many epochs (imports, data, model).
    """
    ends = [float(t) for t in timing["epoch_end_cpu_seconds"]]
    if not ends:
        raise ValueError("the probe logged no epoch")
    if len(ends) > 1:
        per_epoch = (ends[-1] - ends[0]) / (len(ends) - 1)
    else:
        per_epoch = ends[0] - float(timing["fit_start_cpu_seconds"])
    fixed = max(0.0, float(timing["process_cpu_seconds"]) - per_epoch * len(ends))
    return per_epoch, fixed


def epochs_for_budget(
    budget_seconds: float,
    per_epoch_seconds: float,
    fixed_seconds: float = 0.0,
    override: int | None = None,
    maximum: int | None = DLC_DEFAULT_EPOCHS,
) -> int:
    """DeepLabCut's epochs: ``override`` when given, else as many whole epochs as fit in the budget
    after the fixed cost (at least one, at most ``maximum``: DeepLabCut's own default schedule
    stops there, and a user would not train longer)."""
    if override is not None:
        if override < 1:
            raise ValueError(f"--dlc-epochs {override} must be at least 1")
        return int(override)
    if per_epoch_seconds <= 0:
        raise ValueError("seconds per epoch must be positive")
    epochs = max(1, int(math.floor((budget_seconds - fixed_seconds) / per_epoch_seconds)))
    return epochs if maximum is None else min(epochs, maximum)


# --------------------------------------------------------------------------- subprocesses


def child_env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[name] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _last_line(path: Path) -> str:
    """The last progress line of a log (tqdm rewrites its line with carriage returns)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, path.stat().st_size - 4000))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
    return lines[-1][:160] if lines else ""


def run_logged(
    cmd: list[str],
    logfile: Path,
    what: str,
    env: dict[str, str],
    every: float,
    status: Callable[[], str] | None = None,
    check: bool = True,
) -> dict[str, float]:
    """Run ``cmd`` with its output in ``logfile``, a progress line every ``every`` seconds.

    Returns its wall seconds and CPU seconds (user + system of the process and its children:
    this script runs one subprocess at a time, so the change in ``RUSAGE_CHILDREN`` is its own),
    and with ``check=False`` its exit status (``returncode``) instead of stopping on a failure.
    """
    logfile.parent.mkdir(parents=True, exist_ok=True)
    log(f"{what}: {' '.join(shlex.quote(c) for c in cmd)}  (log: {logfile})")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    # The child writes to a pseudo-terminal: dgp-pyro shows its progress bar only on a terminal.
    master, slave = pty.openpty()
    # a terminal of zero columns would get an empty bar (tqdm's dynamic_ncols)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 100, 0, 0))
    with open(logfile, "wb") as out:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=ROOT)
        os.close(slave)
        try:
            next_report = started + every
            while True:
                ready, _, _ = select.select([master], [], [], 1.0)
                if ready:
                    try:
                        chunk = os.read(master, 65536)
                    except OSError:  # EIO: the child and its terminal are gone
                        chunk = b""
                    if not chunk:
                        break
                    out.write(chunk)
                    out.flush()
                elif proc.poll() is not None:
                    break
                if time.time() >= next_report:
                    next_report += every
                    note = (status() if status else "") or _last_line(logfile)
                    log(f"{what}: {(time.time() - started) / 60:.1f} min  | {note}")
        finally:  # stopped (Ctrl-C, kill): stop the child too, it would run on unwatched
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
        os.close(master)
        proc.wait()
    wall = time.time() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        if not check:
            return {"seconds": wall, "cpu_seconds": cpu, "returncode": proc.returncode}
        raise SystemExit(f"{what} failed (exit {proc.returncode}); see {logfile}:\n{_last_line(logfile)}")
    log(f"{what}: done in {wall / 60:.1f} min wall, {cpu / 60:.1f} min CPU")
    return {"seconds": wall, "cpu_seconds": cpu}


def loss_log_status(run_dir: Path) -> Callable[[], str]:
    """A progress note from a dgp-pyro run's ``loss.csv`` (its progress bar is off without a terminal)."""

    def status() -> str:
        lines = (run_dir / "loss.csv").read_text().splitlines() if (run_dir / "loss.csv").is_file() else []
        if len(lines) < 2:
            return ""
        row = dict(zip(lines[0].split(","), lines[-1].split(","), strict=False))
        return f"step {row.get('step')}, loss {row.get('loss')}, {row.get('seconds')} s (from loss.csv)"

    return status


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)  # a marker appears only complete


# --------------------------------------------------------------------------- dgp-pyro


def dgp_pyro_exe() -> str:
    beside = Path(sys.executable).with_name("dgp-pyro")
    return str(beside) if beside.exists() else (shutil.which("dgp-pyro") or "dgp-pyro")


def segments_total(segments: list[dict[str, Any]]) -> dict[str, float]:
    """Wall and CPU seconds of a training run in segments; an interrupted segment's unknown CPU
    time (``cpu_seconds`` None) is its wall time at the measured segments' CPU/wall ratio."""
    measured = [s for s in segments if s["cpu_seconds"] is not None]
    ratio = sum(s["cpu_seconds"] for s in measured) / max(sum(s["seconds"] for s in measured), 1e-9)
    wall = sum(s["seconds"] for s in segments)
    cpu = sum(s["cpu_seconds"] if s["cpu_seconds"] is not None else s["seconds"] * ratio for s in segments)
    return {"seconds": wall, "cpu_seconds": cpu}


def dgp_pyro_source(commit: str | None, out: Path) -> tuple[str, str | None]:
    """``(commit id, PYTHONPATH)`` of the dgp-pyro that runs.

    With ``commit`` (``--dgp-pyro-commit``), that commit's ``dgp_pyro/`` is exported once with
    ``git archive`` to ``OUT/dgp-pyro-<sha>/`` and put first on the subprocesses' ``PYTHONPATH``,
    so the benchmark measures a fixed version while the working tree changes. Without it, the
    installed dgp-pyro runs as it is, and its commit is ``git describe``'s (``-dirty`` when the
    working tree differs).
    """
    git = ["git", "-C", str(ROOT)]
    if commit is None:
        described = subprocess.run([*git, "describe", "--always", "--dirty"], capture_output=True, text=True)
        return described.stdout.strip() or "unknown", None
    sha = subprocess.run(
        [*git, "rev-parse", "--verify", f"{commit}^{{commit}}"], capture_output=True, text=True
    )
    if sha.returncode != 0:
        raise SystemExit(f"--dgp-pyro-commit {commit}: not a commit of {ROOT}")
    sha_text = sha.stdout.strip()[:12]
    source = out / f"dgp-pyro-{sha_text}"
    if not (source / "dgp_pyro" / "__init__.py").is_file():
        source.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run([*git, "archive", sha_text, "dgp_pyro"], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True)
    return sha_text, str(source)


def dgp_env(args: argparse.Namespace) -> dict[str, str]:
    env = child_env(args.threads)
    if args.dgp_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.dgp_pythonpath, env.get("PYTHONPATH")]))
    return env


def dgp_identity(cmd: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """What makes a dgp-pyro stage's result reusable: its arguments and the commit that ran them
    (not the executable's path, which may move)."""
    return {"command": cmd[1:], "commit": args.dgp_commit}


def made_by(saved: dict[str, Any] | None, cmd: list[str], args: argparse.Namespace) -> bool:
    """Whether a stage's saved record (its ``command`` and ``commit``) came from ``cmd`` at this commit."""
    if saved is None:
        return False
    return {"command": saved["command"][1:], "commit": saved.get("commit")} == dgp_identity(cmd, args)


def project_views(project: Path, args: argparse.Namespace) -> list[str]:
    """The views ``dgp3d`` runs with: ``--views``, else a shared project's known views, else none."""
    if args.views:
        return list(args.views)
    return list(SHARED_VIEWS.get(project.name, ()))


def run_calibration(
    project: Path, views: list[str], split: Path, work: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Cameras for ``dgp3d`` from the training frames' labels alone (``dgp-pyro calibrate --holdout
    split.json``: the held-out frames only measure the reprojection error); reused when present."""
    folder = work / "cameras"
    toml = folder / "calibration.toml"
    cmd = [dgp_pyro_exe(), "calibrate", str(project), "--views", *views, "--holdout", str(split)]
    cmd += ["--out", str(toml), "--json"]
    done = read_json(folder / "calibrate.json")
    if not made_by(done, cmd, args) or not toml.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        toml.unlink(missing_ok=True)
        run_logged(cmd, folder / "calibrate.log", f"{project.name}: dgp-pyro calibrate", dgp_env(args), 60.0)
        report = json.loads(_last_json_line(folder / "calibrate.log"))
        done = {"command": cmd, "commit": args.dgp_commit, "report": report}
        write_json(folder / "calibrate.json", done)
    return {"toml": toml, "heldout_reprojection_rmse_px": done["report"].get("heldout_reprojection_rmse_px")}


def run_dgp_pyro(
    project: Path, model: str, split: Path, work: Path, extra: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Train (or reuse) ``model`` with default settings, evaluate it; return train/evaluate facts."""
    folder = work / f"dgp-pyro-{model}"
    run_dir = folder / "run"
    cmd = [
        dgp_pyro_exe(),
        "train",
        str(project),
        "--model",
        model,
        "--out",
        str(run_dir),
        "--holdout",
        str(split),
        *extra,
    ]
    env = dgp_env(args)
    identity = dgp_identity(cmd, args)
    trained = read_json(folder / "train.json")
    if not made_by(trained, cmd, args):
        # An interrupted run of the same command resumes from its last checkpoint (dgp-pyro train
        # --resume). Its time is the sum of the segments: a finished segment's measured wall and
        # CPU time; an interrupted one's wall time up to its last checkpoint, and CPU time at the
        # finished segments' CPU/wall ratio (steps redone after the checkpoint are not counted twice).
        started = read_json(folder / "train-segments.json")
        checkpoints = sorted((run_dir / "checkpoints").glob("*.pt"), key=lambda p: p.stat().st_mtime)
        resume = started is not None and started["identity"] == identity and bool(checkpoints)
        if not resume:
            if run_dir.exists():
                log(f"{project.name}: dgp-pyro {model}: discarding {run_dir} (another run or no checkpoint)")
                shutil.rmtree(run_dir)
            started = {"identity": identity, "segments": []}
        else:
            log(f"{project.name}: dgp-pyro {model}: resuming the interrupted run in {run_dir}")
            if "running_since" in started:
                wall = max(0.0, checkpoints[-1].stat().st_mtime - started.pop("running_since"))
                started["segments"].append({"seconds": wall, "cpu_seconds": None, "interrupted": True})
        started["running_since"] = time.time()
        write_json(folder / "train-segments.json", started)
        logfile = folder / f"train{len(started['segments']) or ''}.log"
        timing = run_logged(
            cmd + (["--resume"] if resume else []),
            logfile,
            f"{project.name}: dgp-pyro {model} training",
            env,
            args.progress_every,
            loss_log_status(run_dir),
            check=False,
        )
        if timing.get("returncode"):
            text = logfile.read_text()
            if "needs video" in text:  # dgp-pyro's own verdict: the graphical models need a video
                skipped = {
                    "skipped": "no video (dgp needs one)",
                    "message": text.strip().splitlines()[-1],
                    "command": cmd,
                    "commit": args.dgp_commit,
                }
                write_json(folder / "train.json", skipped)
                log(f"{project.name}: dgp-pyro {model}: skipped, the project has no video")
                return {"train": skipped, "evaluate": None, "run": run_dir}
            raise SystemExit(f"{project.name}: dgp-pyro {model} training failed; see {logfile}")
        started.pop("running_since", None)
        started["segments"].append(timing)
        write_json(folder / "train-segments.json", started)
        trained = {
            "command": cmd,
            "commit": args.dgp_commit,
            **segments_total(started["segments"]),
            "segments": len(started["segments"]),
            "finished": dt.datetime.now().isoformat(timespec="seconds"),
        }
        write_json(folder / "train.json", trained)
        (folder / "evaluate.json").unlink(missing_ok=True)
    elif "skipped" in trained:
        log(f"{project.name}: dgp-pyro {model}: skipped before ({trained['skipped']})")
        return {"train": trained, "evaluate": None, "run": run_dir}
    else:
        log(f"{project.name}: dgp-pyro {model}: reusing the run in {run_dir}")
    evaluated = read_json(folder / "evaluate.json")
    if evaluated is None:
        ecmd = [dgp_pyro_exe(), "evaluate", str(run_dir), "--json", "--no-cache"]
        timing = run_logged(
            ecmd,
            folder / "evaluate.log",
            f"{project.name}: dgp-pyro {model} evaluate",
            env,
            args.progress_every,
        )
        report = json.loads(_last_json_line(folder / "evaluate.log"))
        evaluated = {"command": ecmd, **timing, "report": report}
        write_json(folder / "evaluate.json", evaluated)
    return {"train": trained, "evaluate": evaluated, "run": run_dir}


def _last_json_line(path: Path) -> str:
    for line in reversed(path.read_text().splitlines()):
        if line.startswith("{"):
            return line
    raise SystemExit(f"no JSON report in {path}")


def read_dgp_predictions(
    run_dir: Path, model: str, keys: list[str], keypoints: list[str]
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Means and interval bounds ``(N, K, 2)`` from ``RUN/predictions/labeled_test_DGPpyro_<model>.h5``."""
    import pandas as pd

    frame = pd.read_hdf(run_dir / "predictions" / f"labeled_test_DGPpyro_{model}.h5")
    frame.index = ["/".join(str(p) for p in k) if isinstance(k, tuple) else str(k) for k in frame.index]
    frame = frame.loc[keys]
    scorer = frame.columns.get_level_values(0)[0]

    def grab(cx: str, cy: str) -> np.ndarray:
        return np.stack(
            [
                np.stack([frame[(scorer, k, cx)].to_numpy(), frame[(scorer, k, cy)].to_numpy()], -1)
                for k in keypoints
            ],
            axis=1,
        ).astype(float)

    coords = set(frame.columns.get_level_values(2))
    intervals = {
        level: (grab(f"x_lo{level}", f"y_lo{level}"), grab(f"x_hi{level}", f"y_hi{level}"))
        for level in LEVELS
        if f"x_lo{level}" in coords
    }
    return grab("x", "y"), intervals


# --------------------------------------------------------------------------- DeepLabCut


def ensure_dlc_venv(venv: Path, work: Path) -> Path:
    """The virtualenv's python with ``deeplabcut==3.0.2`` (created and installed on first use)."""
    python = venv / "bin" / "python"
    marker = venv / f".bench-deeplabcut-{DLC_VERSION}"
    if marker.is_file():
        return python
    check = [
        str(python),
        "-c",
        f"import deeplabcut, sys; sys.exit(deeplabcut.__version__ != {DLC_VERSION!r})",
    ]
    env = child_env(2)
    if not (python.exists() and subprocess.run(check, capture_output=True, env=env).returncode == 0):
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        run_logged(
            [str(python), "-m", "pip", "install", f"deeplabcut=={DLC_VERSION}"],
            work / "dlc-venv-install.log",
            f"installing deeplabcut=={DLC_VERSION} in {venv}",
            env,
            60,
        )
        if subprocess.run(check, capture_output=True, env=env).returncode != 0:
            raise SystemExit(f"deeplabcut {DLC_VERSION} does not import in {venv}")
    marker.write_text("ok\n")
    return python


def run_deeplabcut(
    project: Path,
    split_path: Path,
    split: dict[str, list[str]],
    work: Path,
    budget: dict[str, float],
    budget_model: str,
    args: argparse.Namespace,
    fixed_epochs: int | None = None,
) -> dict[str, Any]:
    """Prepare, probe, train and predict with DeepLabCut (each stage reused when done).

    The epochs are ``fixed_epochs`` when given (a run of its own, in ``deeplabcut-<N>ep``), else
    ``--dlc-epochs``, else as many as fit in ``budget`` (in ``deeplabcut``).
    """
    python = str(ensure_dlc_venv(args.dlc_venv, args.out))
    env = child_env(args.threads)
    folder = work / ("deeplabcut" if fixed_epochs is None else f"deeplabcut-{fixed_epochs}ep")
    if fixed_epochs is None:
        fixed_epochs = args.dlc_epochs
    dest = folder / "project"
    config = dest / "config.yaml"
    every = args.progress_every
    threads = ["--threads", str(args.threads)]
    if read_json(folder / "prepared.json") is None:
        run_logged(
            [
                python,
                str(DRIVER),
                "prepare",
                "--source",
                str(project),
                "--dest",
                str(dest),
                "--split",
                str(split_path),
            ],
            folder / "prepare.log",
            f"{project.name}: DeepLabCut prepare",
            env,
            every,
        )
        write_json(folder / "prepared.json", {"split": split})
        for name in ("probe.json", "train.json", "predict.json"):
            (folder / name).unlink(missing_ok=True)

    probe = None
    if fixed_epochs is None:
        probe = read_json(folder / "probe.json")
        if probe is None or probe["timing"]["epochs"] != args.dlc_probe_epochs:
            timing_file = folder / "probe-timing.json"
            run = run_logged(
                [
                    python,
                    str(DRIVER),
                    "train",
                    "--config",
                    str(config),
                    "--shuffle",
                    "2",
                    "--epochs",
                    str(args.dlc_probe_epochs),
                    "--timing",
                    str(timing_file),
                    *threads,
                    *(["--pretrained"] if args.dlc_pretrained else []),
                ],
                folder / "probe.log",
                f"{project.name}: DeepLabCut probe ({args.dlc_probe_epochs} epochs)",
                env,
                every,
            )
            probe = {"timing": read_json(timing_file), **run}
            write_json(folder / "probe.json", probe)
        per_epoch, fixed = probe_rate(probe["timing"])
        epochs = epochs_for_budget(budget["cpu_seconds"], per_epoch, fixed)
        log(
            f"{project.name}: DeepLabCut: {per_epoch:.0f} CPU s per epoch + {fixed:.0f} s fixed; "
            f"{epochs} epochs fit the {budget['cpu_seconds'] / 60:.1f} CPU min dgp-pyro {budget_model} took"
        )
    else:
        epochs = epochs_for_budget(budget["cpu_seconds"], 1.0, override=fixed_epochs)

    trained = read_json(folder / "train.json")
    if trained is None or trained["epochs"] != epochs or trained["pretrained"] != args.dlc_pretrained:
        timing_file = folder / "train-timing.json"
        run = run_logged(
            [
                python,
                str(DRIVER),
                "train",
                "--config",
                str(config),
                "--shuffle",
                "1",
                "--epochs",
                str(epochs),
                "--timing",
                str(timing_file),
                *threads,
                *(["--pretrained"] if args.dlc_pretrained else []),
            ],
            folder / "train.log",
            f"{project.name}: DeepLabCut training ({epochs} epochs)",
            env,
            every,
        )
        trained = {
            "epochs": epochs,
            "pretrained": args.dlc_pretrained,
            "timing": read_json(timing_file),
            **run,
            "finished": dt.datetime.now().isoformat(timespec="seconds"),
        }
        write_json(folder / "train.json", trained)
        (folder / "predict.json").unlink(missing_ok=True)
    else:
        log(f"{project.name}: DeepLabCut: reusing the {epochs}-epoch run in {dest}")

    predicted = read_json(folder / "predict.json")
    if predicted is None:
        write_json(folder / "test-keys.json", split["test"])
        out = folder / "predictions.json"
        run = run_logged(
            [
                python,
                str(DRIVER),
                "predict",
                "--config",
                str(config),
                "--shuffle",
                "1",
                "--keys",
                str(folder / "test-keys.json"),
                "--out",
                str(out),
                *threads,
            ],
            folder / "predict.log",
            f"{project.name}: DeepLabCut predict",
            env,
            every,
        )
        predicted = {**run, "inference_seconds": read_json(out)["seconds"]}
        write_json(folder / "predict.json", predicted)
    return {
        "train": trained,
        "predict": predicted,
        "probe": probe,
        "predictions": read_json(folder / "predictions.json"),
    }


def dlc_prediction_array(predictions: dict[str, Any], keys: list[str], keypoints: list[str]) -> np.ndarray:
    """``(N, K, 2)`` from the driver's predictions (its body-part order mapped to ``keypoints``)."""
    order = [predictions["bodyparts"].index(k) for k in keypoints]
    return np.array([[predictions["predictions"][key][j][:2] for j in order] for key in keys], dtype=float)


# --------------------------------------------------------------------------- one project


def resolve_project(name: str) -> Path:
    path = Path(name).expanduser()
    if not path.exists() and (shared_data_dir() / name).is_dir():
        path = shared_data_dir() / name
    if not path.is_dir():
        raise SystemExit(f"project {name!r} not found (a folder, or one of {', '.join(SHARED_PROJECTS)})")
    return path.absolute()


def bench_project(project: Path, args: argparse.Namespace, machine: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON lines of one project: dgp-pyro supervised, dgp-pyro dgp, DeepLabCut."""
    labels = project_labels(project)
    split = make_split(labels, args.train_frames)
    work = args.out / project.name / f"train{args.train_frames}"
    split_path = work / "split.json"
    saved = read_json(split_path)
    if saved is not None and saved != split:
        raise SystemExit(f"{split_path} holds another split (the labels changed?): use another --out")
    write_json(split_path, split)
    log(
        f"{project.name}: {len(split['train'])} training / {len(split['test'])} held-out labeled images, "
        f"{len(labels.keypoints)} keypoints; split {split_path}"
    )
    truth = labels.rows(split["test"])
    extra = shlex.split(args.dgp_train_args)
    common = {
        "benchmark": "vs_deeplabcut",
        "project": project.name,
        "n_train_frames": len(split["train"]),
        "n_test_frames": len(split["test"]),
        "n_keypoints": len(labels.keypoints),
        **machine,
    }
    rows = []
    dgp = {}
    views = project_views(project, args)
    for model in DGP_MODELS + ((DGP_MODEL_3D,) if len(views) > 1 else ()):
        model_args, settings = list(extra), "defaults" + (f" + {args.dgp_train_args}" if extra else "")
        if model == DGP_MODEL_3D:
            cameras = run_calibration(project, views, split_path, work, args)
            model_args += ["--views", *views, "--calibration", str(cameras["toml"])]
            settings += (
                f", views {' '.join(views)}, cameras from the training frames' labels (held-out "
                f"reprojection {cameras['heldout_reprojection_rmse_px']:.2f} px)"
            )
        result = run_dgp_pyro(project, model, split_path, work, model_args, args)
        row = {
            **common,
            "method": f"dgp-pyro {model}",
            "version": machine["dgp_pyro_version"],
            "settings": settings,
            "unlabeled_videos": project_videos(project) if model != "supervised" else [],
        }
        if "skipped" in result["train"]:
            rows.append({**row, "skipped": result["train"]["skipped"]})
            continue
        dgp[model] = result
        pred, intervals = read_dgp_predictions(result["run"], model, split["test"], labels.keypoints)
        report = result["evaluate"]["report"]
        row.update(
            **score(pred, truth, intervals),
            **{f"coverage_loo_{lv}": report.get(f"coverage_loo_{lv}") for lv in LEVELS},
            train_seconds=result["train"]["seconds"],
            train_cpu_seconds=result["train"]["cpu_seconds"],
            predict_seconds=result["evaluate"]["seconds"],
            predict_fps=len(split["test"]) / result["evaluate"]["seconds"],
        )
        rows.append(row)
    if args.skip_dlc:
        return rows
    # DeepLabCut's budget: dgp's training time, or supervised's where dgp could not run (no video).
    budget_model = next(m for m in (BUDGET_MODEL, *DGP_MODELS) if m in dgp)
    budget = dgp[budget_model]["train"]
    runs = [(None, "--dlc-epochs" if args.dlc_epochs is not None else f"dgp-pyro {budget_model} CPU time")]
    runs += [(e, "--dlc-also-epochs") for e in args.dlc_also_epochs if e != args.dlc_epochs]
    for fixed_epochs, epochs_from in runs:
        dlc = run_deeplabcut(project, split_path, split, work, budget, budget_model, args, fixed_epochs)
        rows.append(deeplabcut_row(dlc, common, epochs_from, budget, split["test"], labels.keypoints, truth))
    return rows


def deeplabcut_row(
    dlc: dict[str, Any],
    common: dict[str, Any],
    epochs_from: str,
    budget: dict[str, float],
    test_keys: list[str],
    keypoints: list[str],
    truth: np.ndarray,
) -> dict[str, Any]:
    """The JSON line of one DeepLabCut run (see :func:`run_deeplabcut`)."""
    pred = dlc_prediction_array(dlc["predictions"], test_keys, keypoints)
    timing = dlc["train"]["timing"]
    return {
        **common,
        "method": "deeplabcut",
        "version": timing["deeplabcut_version"],
        "settings": f"pytorch resnet_50, {dlc['train']['epochs']} epochs, "
        + ("ImageNet weights" if dlc["train"]["pretrained"] else "random init")
        + f", last snapshot ({dlc['predictions']['snapshot']})",
        "epochs": dlc["train"]["epochs"],
        "epochs_from": epochs_from,
        "budget_train_seconds": budget["seconds"],
        "budget_train_cpu_seconds": budget["cpu_seconds"],
        "probe_cpu_seconds_per_epoch": probe_rate(dlc["probe"]["timing"])[0] if dlc["probe"] else None,
        **score(pred, truth),
        "train_seconds": dlc["train"]["seconds"],
        "train_cpu_seconds": dlc["train"]["cpu_seconds"],
        "predict_seconds": dlc["predict"]["seconds"],
        "predict_fps": len(test_keys) / dlc["predict"]["seconds"],
        "torch_version": timing["torch_version"],
    }


# --------------------------------------------------------------------------- output


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The results as a Markdown table (errors in px, shares as fractions, times in minutes)."""
    header = (
        "project",
        "method",
        "train (wall / CPU min)",
        "mean",
        "RMSE",
        "median",
        "PCK@5",
        "PCK@10",
        ">20 px",
        "pred fps",
        "cov 50/90",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        cov = "-"
        if r.get("coverage_50") is not None:
            cov = f"{r['coverage_50']:.2f} / {r['coverage_90']:.2f}"
            if r.get("coverage_loo_50") is not None:
                cov += f" (loo {r['coverage_loo_50']:.2f} / {r['coverage_loo_90']:.2f})"
        method = r["method"] + (f", {r['epochs']} epochs" if "epochs" in r else "")
        if "skipped" in r:
            lines.append(f"| {r['project']} | {method} | skipped: {r['skipped']} |" + " - |" * 8)
            continue
        lines.append(
            "| "
            + " | ".join(
                [
                    r["project"],
                    method,
                    f"{r['train_seconds'] / 60:.1f} / {r['train_cpu_seconds'] / 60:.1f}",
                    _fmt(r.get("mean_px")),
                    _fmt(r.get("rmse_px")),
                    _fmt(r.get("median_px")),
                    _fmt(r.get("pck_5px"), 2),
                    _fmt(r.get("pck_10px"), 2),
                    _fmt(r.get("over_20px"), 2),
                    _fmt(r.get("predict_fps"), 2),
                    cov,
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def machine_facts(args: argparse.Namespace) -> dict[str, Any]:
    version = subprocess.run(
        [dgp_pyro_exe(), "--version"], capture_output=True, text=True, env=dgp_env(args)
    ).stdout.split()
    return {
        "date": dt.date.today().isoformat(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "dgp_pyro_version": version[-1] if version else None,
        "dgp_pyro_commit": args.dgp_commit,
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "projects",
        nargs="*",
        help=f"project folders or names in ../shared/data (default: {' '.join(SHARED_PROJECTS)})",
    )
    parser.add_argument("--train-frames", type=int, default=20, help="labeled images that train (default 20)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="runs and results (kept, reused)")
    parser.add_argument(
        "--dlc-epochs",
        type=int,
        default=None,
        help="DeepLabCut epochs (default: as many as fit in dgp-pyro dgp's CPU time)",
    )
    parser.add_argument(
        "--dlc-also-epochs",
        type=int,
        nargs="*",
        default=[DLC_REFERENCE_EPOCHS],
        metavar="N",
        help=f"also train DeepLabCut for exactly N epochs, each a run and a line of its own (default "
        f"{DLC_REFERENCE_EPOCHS}: the from-scratch reference; give none to skip)",
    )
    parser.add_argument(
        "--dlc-pretrained",
        action="store_true",
        help="start DeepLabCut from its default ImageNet weights (downloads them)",
    )
    parser.add_argument("--dlc-venv", type=Path, default=DEFAULT_VENV, help="DeepLabCut's virtualenv")
    parser.add_argument(
        "--dlc-probe-epochs", type=int, default=2, help="epochs of the timing probe (default 2)"
    )
    parser.add_argument("--threads", type=int, default=2, help="threads of every subprocess (default 2)")
    parser.add_argument(
        "--dgp-pyro-commit",
        default=None,
        metavar="REV",
        help="benchmark this commit of dgp-pyro (exported with git archive) instead of the working tree",
    )
    parser.add_argument(
        "--views",
        nargs="+",
        default=None,
        metavar="VIEW",
        help="views of a multi-view project: dgp-pyro's dgp3d then runs too, with cameras estimated "
        "from the training frames' labels (default: the shared mirror-mouse-example's top bot)",
    )
    parser.add_argument("--markdown", action="store_true", help="also print the Markdown table")
    parser.add_argument("--progress-every", type=float, default=60.0, help=argparse.SUPPRESS)
    # For smoke tests only, e.g. "--steps 5": the benchmark itself uses the defaults.
    parser.add_argument("--dgp-train-args", default="", help=argparse.SUPPRESS)
    parser.add_argument("--skip-dlc", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out.expanduser().absolute()
    # `kill PID` of this script stops the stage it runs too (see run_logged)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args.dlc_venv = args.dlc_venv.expanduser().absolute()
    projects = [resolve_project(p) for p in (args.projects or SHARED_PROJECTS)]
    args.dgp_commit, args.dgp_pythonpath = dgp_pyro_source(args.dgp_pyro_commit, args.out)
    machine = machine_facts(args)
    rows = []
    for project in projects:
        for row in bench_project(project, args, machine):
            line = json.dumps(row)
            print(line, flush=True)
            with open(args.out / "results.jsonl", "a") as handle:
                handle.write(line + "\n")
            rows.append(row)
    if args.markdown:
        print(markdown_table(rows))
    return rows


if __name__ == "__main__":
    main()
