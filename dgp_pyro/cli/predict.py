"""``dgp-pyro predict``: the keypoint posterior over whole videos, as DeepLabCut-format files.

For each video, ``OUT/<video stem>_DGPpyro_<model>.h5`` and ``.csv`` hold, per keypoint,
``x, y`` (the posterior mean), ``likelihood`` (the heatmap's peak probability, as DeepLabCut),
``x_std, y_std`` (posterior standard deviations, pixels) and the equal-tailed credible
interval bounds ``x_lo90, x_hi90, y_lo90, y_hi90`` for each ``--levels`` value (default 0.5,
0.9, 0.95). For the ``supervised`` model the posterior is the Gaussian form of each heatmap;
for the graphical models it is the structured guide over the whole video
(:mod:`dgp_pyro.posterior.posterior2d`). Without videos, every video of the run's project is
predicted. Frames are streamed in batches, so any video length fits in memory.

3D runs (``dgp3d`` ...) predict each session's videos together (or one video per view, in the
run's view order, for each session given; in the suffix layout, a mirror, one video holds every
view, so each video given is a session): ``<session>_DGPpyro_<model>_3d.h5`` / ``.csv`` with
the 3D posterior (:mod:`dgp_pyro.posterior.posterior3d`) and one DeepLabCut file per view of its
reprojection (suffix layout: ``<video stem>_<view>_DGPpyro_<model>``, plus
``<video stem>_DGPpyro_<model>`` with every view's columns as in the labels).
``--nwb`` also writes each posterior, spreads and intervals included, as an NWB
file with the ndx-pose extension (:mod:`dgp_pyro.export.nwb`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dgp_pyro.cli.options import parse_level
from dgp_pyro.errors import DGPError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "predict",
        help="predict keypoints in videos with a trained run (DeepLabCut .h5/.csv files)",
        description="Run a trained network over videos and write one DeepLabCut-format prediction "
        "file per video (x, y, likelihood, x_std, y_std per keypoint).",
    )
    parser.add_argument("run", help="run folder written by `dgp-pyro train`")
    parser.add_argument("videos", nargs="*", help="videos to predict (default: all of the project's videos)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN/predictions)")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per forward pass (default 16)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--checkpoint", default=None, help="checkpoint file (default: RUN/checkpoints/last.pt)"
    )
    parser.add_argument(
        "--levels",
        nargs="+",
        type=parse_level,
        default=[0.5, 0.9, 0.95],
        help="credible levels of the interval columns (default 0.5 0.9 0.95)",
    )
    parser.add_argument(
        "--nwb",
        action="store_true",
        help="also write NWB files (ndx-pose) with the posterior mean, spread and intervals",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _skeleton_edges(run_) -> list[tuple[int, int]]:
    index = {name: k for k, name in enumerate(run_.config.keypoints)}
    return [(index[a], index[b]) for a, b in run_.config.skeleton]


def unique_stems(videos: list[Path], scorer: str) -> list[str]:
    """``<stem>_<scorer>`` per video; videos sharing a stem get their parent folder's name too."""
    from dgp_pyro.posterior.predict import prediction_stem

    stems = [prediction_stem(v, scorer) for v in videos]
    if len(set(stems)) == len(stems):
        return stems
    return [
        prediction_stem(v.parent / f"{v.parent.name}_{v.stem}{v.suffix}", scorer) if stems.count(s) > 1 else s
        for v, s in zip(videos, stems, strict=True)
    ]


def _predict_3d(run_, network, videos: list[Path], out: Path, args: argparse.Namespace) -> int:
    """3D runs: the posterior of each session (all views together), 3D table plus 2D files per view."""
    from dgp_pyro.posterior.posterior3d import PosteriorModel3D, videos_posterior3d, write_posterior3d
    from dgp_pyro.train.dgp3d import session_videos

    model = PosteriorModel3D.from_run(run_)
    channels = model.channels
    per_session = channels.num_images  # videos per session: one per view, or one holding them all
    if videos:
        if len(videos) % per_session:
            raise DGPError(
                f"{len(videos)} videos for a {len(model.views)}-view run: give one video per view "
                f"({', '.join(model.views)}) for each session, in that order",
                videos[0],
            )
        groups = [videos[i : i + per_session] for i in range(0, len(videos), per_session)]
        stems = [f"{group[0].stem}_{run_.scorer}" for group in groups]
    else:
        sessions = session_videos(run_.project())
        groups = [channels.image_sources(session.videos) for session in sessions]
        stems = [f"{session.name}_{run_.scorer}" for session in sessions]
    for group, stem in zip(groups, stems, strict=True):
        posterior = videos_posterior3d(
            run_, group, args.levels, network, batch_size=args.batch_size, progress=not args.quiet,
            model=model,
        )  # fmt: skip
        paths = write_posterior3d(posterior, out, stem, run_.scorer, videos=channels.per_view(group))
        if args.nwb:
            from dgp_pyro.data.video import video_info
            from dgp_pyro.export.nwb import write_nwb_3d

            fps = float(video_info(group[0])["fps"])
            paths.append(
                write_nwb_3d(out / f"{stem}_3d.nwb", posterior, posterior.keypoints, model.settings.edges,
                             fps=fps, scorer=run_.scorer, overwrite=True)
            )  # fmt: skip
        names = ", ".join(str(v) for v in group)
        print(f"{names}: {len(posterior.mean)} frames -> {', '.join(str(p) for p in paths)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from dgp_pyro.model.registry import MODELS_3D
    from dgp_pyro.posterior.posterior2d import video_posterior
    from dgp_pyro.posterior.predict import summaries_to_table, write_prediction_files
    from dgp_pyro.run import load_run

    run_ = load_run(args.run)
    if args.batch_size < 1:
        raise DGPError(f"--batch-size {args.batch_size} must be at least 1")
    if args.videos:
        videos = [Path(v) for v in args.videos]
        for video in videos:
            if not video.is_file():
                raise DGPError("video not found", video)
    else:
        videos = run_.project().videos()
        if not videos:
            raise DGPError(
                "the run's project has no videos to predict",
                run_.config.project,
                hint="name the videos: dgp-pyro predict RUN VIDEO ...",
            )
    out = Path(args.out) if args.out else run_.predictions_dir
    network = run_.network(args.device, checkpoint=args.checkpoint)
    if run_.config.model in MODELS_3D:
        return _predict_3d(run_, network, [Path(v) for v in args.videos], out, args)
    for video, stem in zip(videos, unique_stems(videos, run_.scorer), strict=True):
        posterior = video_posterior(
            run_, video, args.levels, network=network, batch_size=args.batch_size, progress=not args.quiet
        )
        table = summaries_to_table(
            posterior.as_summaries(), run_.config.keypoints, run_.scorer, extras=posterior.interval_columns()
        )
        paths = write_prediction_files(table, out, stem)
        if args.nwb:
            from dgp_pyro.data.video import video_info
            from dgp_pyro.export.nwb import write_nwb_2d

            paths.append(
                write_nwb_2d(out / f"{stem}.nwb", posterior, run_.config.keypoints, _skeleton_edges(run_),
                             view_name=video.stem, fps=float(video_info(video)["fps"]), source_video=video,
                             scorer=run_.scorer, overwrite=True)
            )  # fmt: skip
        print(f"{video}: {len(posterior.mean)} frames -> {', '.join(str(p) for p in paths)}")
    return 0
