"""Seconds for the whole-video posterior (``smooth_keypoints``) at 10 000 and 100 000 frames.

The input is what the network would have produced: per frame and keypoint a soft-argmax mean
and a precision (heatmap summaries), here simulated. The truth is an animal of J = 12
keypoints on a chain skeleton (limbs of about 12 px) whose body follows a Gaussian random
walk and whose limbs wiggle slowly; each observation is the truth plus Gaussian noise with its
own random full 2 x 2 precision (noise standard deviations from about 0.7 to 7 px), and 10 %
of the keypoints are missing in runs (occlusions). The posterior uses the temporal weight of
the simulated steps and the default skeletal weight (strength over the mean squared limb
length). Timed: one call of ``smooth_keypoints`` in float64 (the precision is built inside),
the best of ``--repeats`` after one untimed warm-up call. Also reported: the RMSE of the raw
observations and of the posterior mean on the observed points, the posterior RMSE on the
missing ones, and the coverage of the 90 % intervals. Linear time is a ratio of 10.

``OMP_WAIT_POLICY`` defaults to ``PASSIVE`` here (set before torch loads; recorded in the
output): on a shared machine whose cores are busy with other work, OpenMP threads that spin at
barriers while their partner thread is preempted made the same run 3 to 10 times slower.

    python benchmarks/bench_posterior_speed.py [--quick] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (see above)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.signal import lfilter  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "posterior_speed"
KEYPOINTS = 12


def simulate(T: int, seed: int = 0):
    """Truth, observations (NaN where missing) and observation precisions, float64."""
    rng = np.random.default_rng(seed)
    J, d = KEYPOINTS, 2
    body_step = 2.0
    body = 200.0 + np.cumsum(rng.normal(0.0, body_step, size=(T, 1, d)), axis=0)
    rest = np.stack([12.0 * np.arange(J), np.zeros(J)], axis=-1)[None] - 6.0 * J
    phi = 0.98  # AR(1) limb wiggle, innovations of 0.5 px
    wiggle = lfilter([1.0], [1.0, -phi], rng.normal(0.0, 0.5, size=(T, J, d)), axis=0)
    truth = body + rest + wiggle
    # random full 2 x 2 precisions: noise sd from about 0.7 to 7 px, random orientation
    sd = np.exp(rng.uniform(np.log(0.7), np.log(7.0), size=(T, J, d)))
    angle = rng.uniform(0.0, np.pi, size=(T, J))
    rot = np.stack(
        [np.stack([np.cos(angle), -np.sin(angle)], -1), np.stack([np.sin(angle), np.cos(angle)], -1)], -2
    )
    cov = rot @ (sd[..., :, None] ** 2 * np.eye(d)) @ np.swapaxes(rot, -1, -2)
    noise = (rot @ (sd * rng.standard_normal((T, J, d)))[..., None])[..., 0]
    obs = truth + noise
    precision = np.linalg.inv(cov)
    # occlusions: runs of missing frames per keypoint, about 10 % in all
    missing = np.zeros((T, J), dtype=bool)
    starts = rng.random((T, J)) < 0.1 / 8.0
    for k in range(8):  # runs of 8 frames
        missing[k:] |= starts[: T - k]
    obs[missing] = np.nan
    step_var = body_step**2 + 0.5**2 * 2.0 / (1.0 + phi)  # per axis: body step + AR(1) step
    temporal = np.full(J, 1.0 / step_var)
    edges = [(j, j + 1) for j in range(J - 1)]
    limb_sq = np.mean(np.sum((truth[:, 1:] - truth[:, :-1]) ** 2, axis=-1))
    skeletal = np.full(len(edges), 1.0 / limb_sq)
    return truth, obs, precision, temporal, edges, skeletal


def run_once(T: int, repeats: int, workers: int | None, seed: int = 0) -> dict:
    from dgp_pyro.ops.keypoint_chain import smooth_keypoints

    truth, obs, precision, temporal, edges, skeletal = simulate(T, seed)
    args = (torch.from_numpy(obs), torch.from_numpy(precision), torch.from_numpy(temporal), edges)
    skeletal_t = torch.from_numpy(skeletal)
    best, best_cpu = float("inf"), float("inf")
    with torch.no_grad():
        for _ in range(repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            out = smooth_keypoints(*args, skeletal_t, levels=(0.5, 0.9, 0.95), workers=workers)
            best = min(best, time.perf_counter() - start)
            best_cpu = min(best_cpu, time.process_time() - start_cpu)
    observed = np.isfinite(obs).all(-1)
    mean = out["mean"].numpy()
    err_raw = np.sum((obs - truth) ** 2, axis=-1)[observed]
    err_post = np.sum((mean - truth) ** 2, axis=-1)
    lower, upper = out["lower"][0.9].numpy(), out["upper"][0.9].numpy()
    return {
        "seconds": best,
        "cpu_seconds": best_cpu,
        "rmse_raw": float(np.sqrt(err_raw.mean())),
        "rmse_smoothed": float(np.sqrt(err_post[observed].mean())),
        "rmse_smoothed_missing": float(np.sqrt(err_post[~observed].mean())),
        "coverage_90": float(np.mean((truth >= lower) & (truth <= upper))),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 000 and 10 000 frames instead")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per size (the best is kept)")
    parser.add_argument(
        "--workers", type=int, default=None, help="smooth_keypoints workers (default: threads)"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_default_dtype(torch.float64)
    small, large = (1_000, 10_000) if args.quick else (10_000, 100_000)
    run_once(500, 1, args.workers, seed=1)  # warm-up: imports, allocator, thread pools
    first = run_once(small, args.repeats, args.workers)
    second = run_once(large, args.repeats, args.workers)
    label = {1_000: "1k", 10_000: "10k", 100_000: "100k"}
    a, b = label[small], label[large]
    result = {
        "bench": NAME,
        f"seconds_{a}": round(first["seconds"], 4),
        f"seconds_{b}": round(second["seconds"], 4),
        f"ratio_{b}_{a}": round(second["seconds"] / first["seconds"], 3),
        "keypoints": KEYPOINTS,
        "rmse_raw": round(second["rmse_raw"], 4),
        "rmse_smoothed": round(second["rmse_smoothed"], 4),
        "rmse_smoothed_missing": round(second["rmse_smoothed_missing"], 4),
        "coverage_90": round(second["coverage_90"], 4),
        f"cpu_seconds_{a}": round(first["cpu_seconds"], 4),
        f"cpu_seconds_{b}": round(second["cpu_seconds"], 4),
        "frames": [small, large],
        "dim": 2,
        "dtype": "float64",
        "threads": torch.get_num_threads(),
        "workers": args.workers,
        "repeats": args.repeats,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "quick": args.quick,
        "torch": torch.__version__,
    }
    line = json.dumps(result)
    print(line)
    out = args.out or RESULTS / (f"{NAME}_quick.json" if args.quick else f"{NAME}.json")
    from dgp_pyro.atomic import atomic_write_text

    atomic_write_text(out, line + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
