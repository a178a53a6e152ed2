"""Peak resident memory and frames per second of ``dgp-pyro predict`` on long videos (1k, 10k, 100k frames).

A tiny synthetic project (``dgp-pyro synth``, one view, 60 frames at ``--image-size``, 13 keypoints)
trains a 2-step ``supervised`` run and a 2-step ``dgp`` run (``--backbone``; memory and speed do not
depend on the weights). Its 60-frame video is looped into videos of ``--frames`` frames each
(:func:`dgp_pyro.data.video.write_video`, frames streamed one at a time, in a child process), and
each run predicts each video with ``dgp-pyro predict RUN VIDEO --out DIR --quiet`` in its own
process. That process's peak resident set (``ru_maxrss`` from ``os.wait4`` on it) and wall time
give one JSON line per (model, frames): ``peak_rss_mb``, ``wall_s``, ``fps`` (frames / wall time,
start-up and file writing included).

The network pass streams the video in batches, so its memory does not grow with the video; what
grows is the per-frame state kept for the posterior (network summaries, the smoother's chain for
``dgp``, the prediction table and files). Between consecutive lengths, one ``slope`` line per model:
``mb_per_1k_frames`` (peak RSS growth), ``bytes_per_frame_per_keypoint`` (that growth per frame and
keypoint) and ``marginal_fps`` (the extra frames over the extra wall time: the streaming speed without
start-up). A flat network pass shows as a peak that at 1k frames is the process's fixed cost (Python,
torch, the network) and a small slope.

This script imports only the standard library (everything else runs in child processes): on Linux,
a child started by ``vfork`` counts its parent's peak in its own ``ru_maxrss``, so a large parent
would hide the child's. Every child gets ``OMP_NUM_THREADS=--threads`` (default 1). On a shared
machine, the wall times (not the memory) carry its other load.

    python benchmarks/bench_predict_memory.py [--frames 1000 10000 100000] [--models supervised dgp]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "bench_predict_memory"
DGP_PYRO = [sys.executable, "-m", "dgp_pyro.cli.main"]

# Runs in a child: loop a short video into a long one, frame by frame (never the whole video in memory).
_LOOP_VIDEO = """
import itertools, sys
from dgp_pyro.data.video import VideoReader, write_video, video_info
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
with VideoReader(src) as reader:
    clip = [frame for batch, _ in reader.iter_batches(64) for frame in batch]
frames = itertools.islice(itertools.cycle(clip), n)
written = write_video(dst, frames, fps=video_info(src)["fps"])
assert written == n, (written, n)
"""


def _cli() -> list[str]:
    """The ``dgp-pyro`` command beside this Python (the console script), else ``python -m``."""
    script = Path(sys.executable).with_name("dgp-pyro")
    return [str(script)] if script.exists() else DGP_PYRO


def _run(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float]:
    """Run ``command``; return its wall seconds and its own peak resident set in MB. Raise if it fails."""
    with open(log, "w") as out:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {child.returncode}:\n{log.read_text()[-2000:]}")
    return seconds, usage.ru_maxrss / 1024  # Linux: kilobytes


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--models", nargs="+", default=["supervised", "dgp"])
    parser.add_argument("--image-size", type=int, default=64, help="square video and network size")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=16, help="predict --batch-size (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every child (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{NAME}.jsonl")
    args = parser.parse_args(argv)

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
    cli = _cli()
    size = f"{args.image_size}x{args.image_size}"
    lines: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        log = root / "child.log"
        # seed 2: at 64x64 every keypoint is labeled in some of the 12 frames (seed 0 never shows the snout)
        _run(cli + ["synth", "--out", str(root / "p"), "--views", "1", "--frames", "60", "--labeled", "12",
                    "--size", size, "--seed", "2"], env, log)  # fmt: skip
        header = (root / "p" / "labeled-data" / "session0" / "CollectedData_synthetic.csv").read_text()
        keypoints = len(set(header.splitlines()[1].split(",")[1:]))
        for model in args.models:
            _run(cli + ["train", str(root / "p"), "--model", model, "--out", str(root / model),
                        "--backbone", args.backbone, "--size", size, "--steps", "2", "--batch-size", "2",
                        "--holdout", "0", "--quiet"], env, log)  # fmt: skip
        common = {"image_size": args.image_size, "backbone": args.backbone, "keypoints": keypoints,
                  "batch_size": args.batch_size, "threads": args.threads,
                  "cores": os.cpu_count()}  # fmt: skip
        points: dict[str, list[dict]] = {model: [] for model in args.models}
        for frames in sorted(args.frames):
            video = root / f"long{frames}.mp4"
            write_s, _ = _run([sys.executable, "-c", _LOOP_VIDEO, str(root / "p" / "videos" / "session0.mp4"),
                               str(video), str(frames)], env, log)  # fmt: skip
            for model in args.models:
                out = root / f"pred_{model}_{frames}"
                command = cli + ["predict", str(root / model), str(video), "--out", str(out),
                                 "--batch-size", str(args.batch_size), "--quiet"]  # fmt: skip
                seconds, peak = _run(command, env, log)
                line = {"bench": NAME, "model": model, "frames": frames, **common,
                        "video_mb": round(video.stat().st_size / 2**20, 2),
                        "write_video_s": round(write_s, 1),
                        "wall_s": round(seconds, 2), "fps": round(frames / seconds, 1),
                        "peak_rss_mb": round(peak, 1)}  # fmt: skip
                points[model].append(line)
                lines.append(line)
                print(json.dumps(line), flush=True)
            video.unlink()
        for model, rows in points.items():
            for a, b in zip(rows, rows[1:], strict=False):
                extra = b["frames"] - a["frames"]
                grown = (b["peak_rss_mb"] - a["peak_rss_mb"]) * 2**20
                line = {"bench": NAME, "model": model, "slope": f"{a['frames']}->{b['frames']}", **common,
                        "mb_per_1k_frames": round(grown / 2**20 / extra * 1000, 3),
                        "bytes_per_frame_per_keypoint": round(grown / extra / keypoints, 1),
                        "marginal_fps": round(extra / (b["wall_s"] - a["wall_s"]), 1)}  # fmt: skip
                lines.append(line)
                print(json.dumps(line), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as file:
        for line in lines:
            file.write(json.dumps(line) + "\n")
    return lines


if __name__ == "__main__":
    main()
