"""Videos per second of ``dgp-pyro predict`` with 1, 2 and 4 Ray workers, against the serial engine.

A synthetic video (``write_synthetic_project``, one view, ``--frames`` frames at ``--image-size``)
is copied ``--videos`` times and predicted with a 1-step supervised run (``--backbone``, trained
here on another synthetic project; speed does not depend on its weights) by
:func:`dgp_pyro.scale.predict_many.predict_videos`:

- ``serial``: one process (the better of two passes, each loading the run);
- ``ray`` with ``--workers`` 1, 2, 4 on a local cluster started for each: ``init_s`` starts Ray;
  ``cold_s`` is the first pass (worker processes start, import torch and load the network);
  ``warm_s`` a second pass over the same videos (``overwrite``) on the same workers.

One JSON line per configuration, then ``ray_overhead``: what one Ray worker costs over the serial
path, ``startup_s`` once (Ray's start) and ``per_video_s`` (cold and warm: task submission, the
worker's own load, the result's transfer). Each Ray line also says how many files equal the
serial ones byte for byte (``identical_csv``, ``identical_h5``) and the largest difference in
any value (``max_abs_diff``).

Every process runs torch on ``--threads`` threads (default 1; the Ray workers get as many CPUs),
so that one worker and the serial path do the same arithmetic the same way, and N workers use N
threads in all. (On a loaded machine a torch process on 2 threads can be many times slower than
on 1, each parallel region waiting for a descheduled thread: that would swamp what Ray costs.)
The machine's other load shows in every number: on a shared machine run it twice.

    python benchmarks/bench_predict_scale.py [--videos 8] [--frames 60] [--workers 1 2 4]

On a cluster: start Ray on the head node (``ray start --head``) and on each worker node (``ray
start --address HEAD:6379``), with dgp-pyro installed on every node and the run, the videos and
the output folder at the same paths (a shared file system); then ``--address auto`` here (or
``dgp-pyro predict RUN VIDEOS... --engine ray --workers N --address auto``) joins that cluster
instead of starting a local one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "bench_predict_scale"


def _timed_predict(run, videos, out, **kwargs) -> float:
    from dgp_pyro.scale.predict_many import predict_videos

    start = time.perf_counter()
    outcomes = list(predict_videos(run, videos, out, overwrite=True, **kwargs))
    seconds = time.perf_counter() - start
    failed = [o.error for o in outcomes if o.status != "written"]
    if failed:
        raise RuntimeError(f"predictions failed: {failed[:2]}")
    return seconds


def _compare(serial: Path, other: Path) -> dict:
    """Files byte-identical to the serial engine's, per format, and the largest difference in values."""
    from dgp_pyro.data.predictions import read_predictions

    same = {"identical_csv": 0, "identical_h5": 0, "max_abs_diff": 0.0}
    for path in sorted(other.glob("*.h5")) + sorted(other.glob("*.csv")):
        reference = serial / path.name
        same[f"identical_{path.suffix[1:]}"] += reference.read_bytes() == path.read_bytes()
        a, b = read_predictions(reference), read_predictions(path)
        diffs = [np.nanmax(np.abs(a.xy - b.xy)), np.nanmax(np.abs(a.likelihood - b.likelihood))]
        diffs += [np.nanmax(np.abs(a.extras[k] - b.extras[k])) for k in a.extras]
        same["max_abs_diff"] = max(same["max_abs_diff"], float(max(diffs)))
    same["max_abs_diff"] = float(f"{same['max_abs_diff']:.3g}")
    return same


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=64, help="square video and network size")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (default 1)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: local ones)")
    parser.add_argument("--out", type=Path, default=RESULTS / f"{NAME}.jsonl")
    args = parser.parse_args(argv)

    import ray

    from dgp_pyro.data.synthetic.project import write_synthetic_project
    from dgp_pyro.posterior.fit import fit_run
    from dgp_pyro.run import RunConfig

    cores = os.cpu_count() or 1
    torch.set_num_threads(args.threads)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        size = args.image_size
        project = write_synthetic_project(
            root / "p", views=1, frames=40, labeled=12, seed=3, size=(size, size)
        )
        config = RunConfig(
            project=str(project),
            backbone=args.backbone,
            size=[size, size],
            steps=1,
            batch_size=2,
            holdout=0.0,
        )
        run = fit_run(config, root / "run", progress=False)
        clip = write_synthetic_project(
            root / "v", views=1, frames=args.frames, labeled=2, seed=4, size=(size, size)
        ) / "videos" / "session0.mp4"  # fmt: skip
        videos = []
        for k in range(args.videos):
            videos.append(root / "videos" / f"clip{k:03d}.mp4")
            videos[-1].parent.mkdir(exist_ok=True)
            shutil.copy(clip, videos[-1])
        common = {"videos": args.videos, "frames_per_video": args.frames, "image_size": size,
                  "backbone": args.backbone, "cores": cores,
                  "threads": args.threads}  # fmt: skip
        serial_s = min(_timed_predict(run, videos, root / "serial") for _ in range(2))
        lines.append({"bench": NAME, "engine": "serial", **common, "seconds": round(serial_s, 3),
                      "videos_per_s": round(args.videos / serial_s, 3)})  # fmt: skip
        for workers in args.workers:
            start = time.perf_counter()
            if args.address:
                ray.init(address=args.address, log_to_driver=False)
            else:
                ray.init(num_cpus=workers * args.threads, include_dashboard=False, log_to_driver=False)
            init_s = time.perf_counter() - start
            out = root / f"ray{workers}"
            try:
                ray_args = {"engine": "ray", "workers": workers, "cpus_per_worker": args.threads}
                cold_s = _timed_predict(run, videos, out, **ray_args)
                warm_s = _timed_predict(run, videos, out, **ray_args)
            finally:
                ray.shutdown()
            same = _compare(root / "serial", out)
            lines.append({
                "bench": NAME, "engine": "ray", "workers": workers, **common,
                "init_s": round(init_s, 3), "cold_s": round(cold_s, 3), "warm_s": round(warm_s, 3),
                "videos_per_s_cold": round(args.videos / cold_s, 3),
                "videos_per_s_warm": round(args.videos / warm_s, 3),
                **same,
            })  # fmt: skip
        one = next((line for line in lines if line.get("workers") == 1), None)
        if one is not None:
            lines.append({
                "bench": NAME, "ray_overhead": "1 worker over serial", **common,
                "startup_s": one["init_s"],
                "per_video_s_cold": round((one["cold_s"] - serial_s) / args.videos, 3),
                "per_video_s_warm": round((one["warm_s"] - serial_s) / args.videos, 3),
                "serial_per_video_s": round(serial_s / args.videos, 3),
                **{key: one[key] for key in same},
            })  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w") as file:
        for line in lines:
            print(json.dumps(line))
            file.write(json.dumps(line) + "\n")
    return lines


if __name__ == "__main__":
    main()
