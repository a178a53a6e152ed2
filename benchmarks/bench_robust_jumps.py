"""Does the posterior follow the network when it jumps? A trained run on a real video, no labels.

The network's detections over a whole video are searched for jumps
(:mod:`dgp_pyro.eval.jumps`: a keypoint that leaves its path by more than ``--min-px`` for at
most ``--max-frames`` frames and comes back, which a body cannot do at the video's frame rate).
The run's posterior is computed twice from the same detections: with its outlier-robust
heatmap likelihood (:mod:`dgp_pyro.model.outliers`, the default) and with the plain Gaussian
form (``outlier_prob = 0``). Reported for each: the share of the jumps it follows by more than
half (all of them, and the *confident* ones whose heatmap peak is at least ``--confident``,
the case the robust form exists for) and the median distance it goes.

Natural jumps have no ground truth, so the script also **injects** them where the answer is
known: every ``--inject-every`` frames one keypoint, drawn at random, takes for ``n`` frames
(``--inject-frames``) the network's summary of the nearest other keypoint at least
``--min-px`` away (a real, confident peak on the wrong body part: a left/right swap). The
posterior of the corrupted detections is compared with the posterior of the clean ones: how
far it moved at the injected frames, and the share of swaps it followed by more than half.

    python benchmarks/bench_robust_jumps.py RUN [VIDEO] [--out DIR] [--summaries FILE.npz]

``--summaries`` keeps the network's output over the video in a file and reuses it (the
network pass is most of the time). Prints one JSON line; ``--out`` also gets a figure of the
largest confident jump (x and y over time: detections, Gaussian and robust posteriors).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from dgp_pyro.atomic import atomic_path
from dgp_pyro.data.project import load_project
from dgp_pyro.data.video import video_info
from dgp_pyro.errors import DGPError
from dgp_pyro.eval.jumps import Jump, find_jumps, follow_shares
from dgp_pyro.model.options import DEFAULT_OPTIONS
from dgp_pyro.posterior.posterior2d import PosteriorModel
from dgp_pyro.posterior.predict import NetworkSummaries, predict_video
from dgp_pyro.run.folder import load_run

NAME = "robust_jumps"
#: a posterior "follows" a jump when it goes more than this share of the way
FOLLOWS = 0.5


def network_summaries(run, video: Path, cache: Path | None, batch_size: int) -> NetworkSummaries:
    """The network's summaries over the whole video (second modes too, as the posterior reads
    them), from ``cache`` when it holds them."""
    if cache is not None and cache.is_file():
        z = np.load(cache)
        second = None
        if "second_mean" in z:
            second = NetworkSummaries(
                z["second_mean"], z["second_cov"], z["second_confidence"], z["frame_index"]
            )
        return NetworkSummaries(z["mean"], z["cov"], z["confidence"], z["frame_index"], second)
    summaries = predict_video(run.network(), video, run.size, batch_size=batch_size, second_mode=True)
    if cache is not None:
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as f:
                np.savez(
                    f,
                    mean=summaries.mean,
                    cov=summaries.cov,
                    confidence=summaries.confidence,
                    frame_index=summaries.frame_index,
                    second_mean=summaries.second.mean,
                    second_cov=summaries.second.cov,
                    second_confidence=summaries.second.confidence,
                )
    return summaries


def posterior_models(run) -> dict[str, PosteriorModel]:
    """The run's posterior with the robust heatmap likelihood and with the plain Gaussian one."""
    model = PosteriorModel.from_run(run)
    if not model.settings.temporal:
        raise DGPError(
            f"run {run.path} is a {model.settings.variant!r} run; jumps need the temporal potential"
        )
    prob = model.settings.outlier_prob or float(DEFAULT_OPTIONS["outlier_prob"])
    size = model.settings.image_size or tuple(run.config.size)

    def with_prob(p: float) -> PosteriorModel:
        settings = dataclasses.replace(model.settings, outlier_prob=p, image_size=size)
        return dataclasses.replace(model, settings=settings)

    return {"robust": with_prob(prob), "gaussian": with_prob(0.0)}


def inject_swaps(
    summaries: NetworkSummaries, frames: int, every: int, min_px: float, seed: int
) -> tuple[NetworkSummaries, list[Jump]]:
    """A copy of ``summaries`` with a keypoint swapped for its nearest look-alike every ``every`` frames."""
    rng = np.random.default_rng(seed)
    mean, cov, confidence = summaries.mean.copy(), summaries.cov.copy(), summaries.confidence.copy()
    T, K, _ = mean.shape
    events = []
    for start in range(every, T - every, every):
        j = int(rng.integers(K))
        distance = np.linalg.norm(summaries.mean[start, :] - summaries.mean[start, j], axis=-1)
        distance[j] = np.inf
        distance[~(distance > min_px)] = np.inf  # only keypoints far enough away (NaN excluded)
        if not np.isfinite(distance).any():
            continue
        i = int(np.argmin(distance))
        rows = slice(start, start + frames)
        mean[rows, j], cov[rows, j], confidence[rows, j] = (
            summaries.mean[rows, i],
            summaries.cov[rows, i],
            summaries.confidence[rows, i],
        )
        size = float(np.linalg.norm(mean[rows, j] - summaries.mean[rows, j], axis=-1).max())
        events.append(Jump(j, start, frames, size))
    second = summaries.second
    if second is not None:  # a swapped-in detection brings no second mode: the priors must bridge it
        second_confidence = second.confidence.copy()
        for event in events:
            second_confidence[event.start : event.stop, event.keypoint] = 0.0
        second = dataclasses.replace(second, confidence=second_confidence)
    injected = NetworkSummaries(mean, cov, confidence, summaries.frame_index, second)
    return injected, events


def _stats(shares: np.ndarray) -> dict[str, float | None]:
    if not len(shares):
        return {"followed": None, "median_share": None}
    return {"followed": float(np.mean(shares > FOLLOWS)), "median_share": float(np.median(shares))}


def natural_jumps(
    summaries: NetworkSummaries,
    posteriors: dict[str, np.ndarray],
    min_px: float,
    max_frames: int,
    confident: float,
) -> tuple[dict, list[Jump]]:
    """Statistics of the network's own jumps and how far each posterior follows them."""
    jumps = find_jumps(summaries.mean, min_px, max_frames)
    peaks = np.array([summaries.confidence[jump.start : jump.stop, jump.keypoint].max() for jump in jumps])
    sure = peaks >= confident if len(jumps) else np.zeros(0, dtype=bool)
    out: dict = {
        "jumps": len(jumps),
        "confident_jumps": int(sure.sum()),
        "median_jump_px": float(np.median([jump.size for jump in jumps])) if jumps else None,
        "by_keypoint": np.bincount(
            [jump.keypoint for jump in jumps], minlength=summaries.mean.shape[1]
        ).tolist(),
    }
    for name, mean in posteriors.items():
        shares = follow_shares(mean, summaries.mean, jumps)
        out[name] = {"all": _stats(shares), "confident": _stats(shares[sure])}
    confident_jumps = [jump for jump, keep in zip(jumps, sure, strict=True) if keep]
    return out, confident_jumps


def injected_jumps(
    summaries: NetworkSummaries,
    models: dict[str, PosteriorModel],
    clean: dict[str, np.ndarray],
    frame_size: tuple[int, int],
    lengths: list[int],
    every: int,
    min_px: float,
    seed: int,
) -> dict:
    """How far each posterior moves where a swap was injected, against its clean posterior."""
    out = {}
    for frames in lengths:
        corrupted, events = inject_swaps(summaries, frames, every, min_px, seed)
        if not events:  # no two keypoints ever --min-px apart
            out[str(frames)] = {"swaps": 0}
            continue
        row: dict = {"swaps": len(events), "median_swap_px": float(np.median([e.size for e in events]))}
        for name, model in models.items():
            moved = model.posterior(corrupted, frame_size).mean
            distance = np.array(
                [
                    np.linalg.norm(
                        moved[e.start : e.stop, e.keypoint] - clean[name][e.start : e.stop, e.keypoint],
                        axis=-1,
                    ).max()
                    for e in events
                ]
            )
            shares = distance / np.array([e.size for e in events])
            row[name] = {"median_moved_px": float(np.median(distance)), **_stats(shares)}
        out[str(frames)] = row
    return out


def plot_jump(
    path: Path, jump: Jump, name: str, detections: np.ndarray, posteriors: dict[str, np.ndarray]
) -> None:
    """x and y over time around one jump: the detections and each posterior mean."""
    lo, hi = max(0, jump.start - 12), min(len(detections), jump.stop + 12)
    t = np.arange(lo, hi)
    fig = Figure(figsize=(8, 4.5), layout="constrained")
    axes = fig.subplots(2, 1, sharex=True)
    styles = {"gaussian": dict(color="tab:orange", lw=1.5), "robust": dict(color="tab:blue", lw=2.0)}
    for axis, ax in enumerate(axes):
        ax.plot(t, detections[lo:hi, jump.keypoint, axis], "k.", ms=5, label="network (soft-argmax)")
        for kind, mean in posteriors.items():
            label = "posterior, robust likelihood" if kind == "robust" else "posterior, Gaussian likelihood"
            ax.plot(t, mean[lo:hi, jump.keypoint, axis], label=label, **styles[kind])
        ax.axvspan(jump.start - 0.5, jump.stop - 0.5, color="0.9")
        ax.set_ylabel(f"{'xy'[axis]} (px)")
    axes[0].set_title(f"{name}: the network jumps {jump.size:.0f} px at frame {jump.start}")
    axes[0].legend(fontsize=8, loc="best")
    axes[1].set_xlabel("frame")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a trained run with the temporal potential (dgp, temporal)")
    parser.add_argument("video", type=Path, nargs="?", help="default: the first video the run trained on")
    parser.add_argument("--min-px", type=float, default=40.0, help="smallest jump, video pixels (default 40)")
    parser.add_argument("--max-frames", type=int, default=2, help="longest jump, frames (default 2)")
    parser.add_argument("--confident", type=float, default=0.3, help="peak height of a confident jump")
    parser.add_argument("--inject-every", type=int, default=25, help="frames between injected swaps")
    parser.add_argument(
        "--inject-frames", type=int, nargs="+", default=[1, 2, 3], help="lengths of the swaps"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--summaries", type=Path, default=None, help="cache of the network's output (.npz)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the figure")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    run = load_run(args.run)
    videos = load_project(run.config.project).videos() + run.config.model_options.get("videos", [])
    video = args.video or next(iter(videos), None)
    if video is None:
        raise DGPError(
            f"run {run.path} names no unlabeled video; give one", hint="bench_robust_jumps.py RUN VIDEO"
        )
    video = Path(video)
    info = video_info(video)
    frame_size = (info["width"], info["height"])
    started = time.perf_counter()
    summaries = network_summaries(run, video, args.summaries, args.batch_size)
    network_seconds = time.perf_counter() - started
    models = posterior_models(run)
    clean = {name: model.posterior(summaries, frame_size).mean for name, model in models.items()}
    natural, confident = natural_jumps(summaries, clean, args.min_px, args.max_frames, args.confident)
    injected = injected_jumps(
        summaries, models, clean, frame_size, args.inject_frames, args.inject_every, args.min_px, args.seed
    )
    result = {
        "benchmark": NAME,
        "run": str(run.path),
        "model": run.config.model,
        "video": str(video),
        "frames": len(summaries),
        "fps": info["fps"],
        "min_px": args.min_px,
        "max_frames": args.max_frames,
        "confident": args.confident,
        "outlier_prob": models["robust"].settings.outlier_prob,
        "natural": natural,
        "injected": injected,
        "network_seconds": round(network_seconds, 1),
        "torch": torch.__version__,
    }
    if args.out and confident:
        args.out.mkdir(parents=True, exist_ok=True)
        biggest = max(confident, key=lambda jump: jump.size)
        plot_jump(
            args.out / "largest_confident_jump.png",
            biggest,
            run.config.keypoints[biggest.keypoint],
            summaries.mean,
            clean,
        )
        result["figure"] = str(args.out / "largest_confident_jump.png")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    try:
        main()
    except DGPError as error:
        sys.exit(f"error: {error}")
