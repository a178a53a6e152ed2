"""A trained run's posterior over whole videos, written as DeepLabCut-format prediction files.

:func:`predict_run` is ``dgp-pyro predict``: for each video, ``OUT/<video stem>_DGPpyro_<model>.h5``
and ``.csv`` hold, per keypoint, ``x, y`` (the posterior mean), ``likelihood`` (the heatmap's peak
probability, as DeepLabCut), ``x_std, y_std`` (posterior standard deviations, pixels) and the
equal-tailed credible interval bounds ``x_lo90, x_hi90, y_lo90, y_hi90`` for each level. For the
``supervised`` model the posterior is the Gaussian form of each heatmap; for the graphical models
it is the structured guide over the whole video (:mod:`dgp_pyro.posterior.posterior2d`). Without
videos, every video of the run's project is predicted. Frames are streamed in batches, so any
video length fits in memory.

3D runs (``dgp3d`` ...) predict each session's videos together (or one video per view, in the
run's view order, for each session given; in the suffix layout, a mirror, one video holds every
view, so each video given is a session): ``<session>_DGPpyro_<model>_3d.h5`` / ``.csv`` with the
3D posterior (:mod:`dgp_pyro.posterior.posterior3d`) and one DeepLabCut file per view of its
reprojection (suffix layout: ``<video stem>_<view>_DGPpyro_<model>``, plus
``<video stem>_DGPpyro_<model>`` with every view's columns as in the labels).

:func:`predict_run` is :func:`plan_predictions` (one :class:`PredictionJob` per video, or per
session in 3D, with its file stem) then :func:`predict_job` for each, with one network; the
engines of :mod:`dgp_pyro.scale` run the same jobs, anywhere.

:func:`write_video_prediction` is the 2D step that ``dgp-pyro evaluate`` and the demo share: one
video's posterior, as a table, written.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from dgp_pyro.atomic import remove_stale_temporaries
from dgp_pyro.data.output_paths import check_output_folder
from dgp_pyro.data.predictions import PredictionTable
from dgp_pyro.data.sessions import session_videos
from dgp_pyro.errors import DGPError
from dgp_pyro.model.registry import is_3d
from dgp_pyro.posterior.files3d import write_posterior3d
from dgp_pyro.posterior.marginals import DEFAULT_LEVELS, KeypointPosterior, Posterior3D
from dgp_pyro.posterior.posterior2d import video_posterior
from dgp_pyro.posterior.posterior3d import PosteriorModel3D, videos_posterior3d
from dgp_pyro.posterior.predict import prediction_stem, summaries_to_table, write_prediction_files
from dgp_pyro.run.folder import Run

__all__ = [
    "PredictionJob",
    "VideoPrediction",
    "plan_predictions",
    "predict_job",
    "predict_run",
    "unique_stems",
    "write_video_prediction",
]


@dataclass
class VideoPrediction:
    """One video's (2D) or one session's (3D) posterior, as :func:`predict_run` wrote it.

    Attributes:
        videos: the video (2D), or the session's videos, one per image of a frame (3D).
        stem: the name its files start with (``<video stem>_<scorer>``, ``<session>_<scorer>``).
        posterior: a :class:`~dgp_pyro.posterior.marginals.KeypointPosterior` or a
            :class:`~dgp_pyro.posterior.marginals.Posterior3D`.
        keypoints: the posterior's keypoint names.
        edges: its skeleton, as pairs of keypoint indices.
        out_dir: the folder they were written to.
        paths: the files written.
    """

    videos: list[Path]
    stem: str
    posterior: KeypointPosterior | Posterior3D
    keypoints: list[str]
    edges: list[tuple[int, int]]
    out_dir: Path
    paths: list[Path]

    @property
    def is_3d(self) -> bool:
        return isinstance(self.posterior, Posterior3D)


def unique_stems(videos: list[Path], scorer: str) -> list[str]:
    """``<stem>_<scorer>`` per video; videos sharing a stem get their parent folder's name too."""
    stems = [prediction_stem(v, scorer) for v in videos]
    if len(set(stems)) == len(stems):
        return stems
    return [
        prediction_stem(v.parent / f"{v.parent.name}_{v.stem}{v.suffix}", scorer) if stems.count(s) > 1 else s
        for v, s in zip(videos, stems, strict=True)
    ]


def write_video_prediction(
    run: Run,
    video: str | Path,
    out_dir: str | Path,
    stem: str,
    levels: Sequence[float] = DEFAULT_LEVELS,
    network: torch.nn.Module | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> tuple[KeypointPosterior, PredictionTable, list[Path]]:
    """A 2D run's posterior over one video, as a prediction table written to ``out_dir/<stem>.{h5,csv}``."""
    posterior = video_posterior(run, video, levels, network=network, batch_size=batch_size, progress=progress)
    table = summaries_to_table(
        posterior.as_summaries(), list(run.config.keypoints), run.scorer, extras=posterior.interval_columns()
    )
    return posterior, table, write_prediction_files(table, out_dir, stem)


@dataclass(frozen=True)
class PredictionJob:
    """One unit of ``dgp-pyro predict``: a video (2D) or a session's videos (3D), and its file stem."""

    videos: tuple[Path, ...]
    stem: str


def plan_predictions(run: Run, videos: Sequence[str | Path] | None = None) -> list[PredictionJob]:
    """The jobs :func:`predict_run` works through: one per video (2D) or per session (3D).

    Raises:
        DGPError: a video that is not a file, a project without videos, or (3D) a number of
            videos that is not a whole number of sessions.
    """
    given = [Path(v) for v in videos or ()]
    for video in given:
        if not video.is_file():
            raise DGPError("video not found", video)
    if not given:
        videos_2d = run.project().videos()
        if not videos_2d:
            raise DGPError(
                "the run's project has no videos to predict",
                run.config.project,
                hint="name the videos: dgp-pyro predict RUN VIDEO ...",
            )
    else:
        videos_2d = given
    if not is_3d(run.config.model):
        stems = unique_stems(videos_2d, run.scorer)
        return [PredictionJob((Path(v),), s) for v, s in zip(videos_2d, stems, strict=True)]
    model = PosteriorModel3D.from_run(run)
    channels = model.channels
    per_session = channels.num_images  # videos per session: one per view, or one holding them all
    if given:
        if len(given) % per_session:
            raise DGPError(
                f"{len(given)} videos for a {len(model.views)}-view run: give one video per view "
                f"({', '.join(model.views)}) for each session, in that order",
                given[0],
            )
        groups = [given[i : i + per_session] for i in range(0, len(given), per_session)]
        stems = [f"{group[0].stem}_{run.scorer}" for group in groups]
    else:
        sessions = session_videos(run.project())
        groups = [channels.image_sources(session.videos) for session in sessions]
        stems = [f"{session.name}_{run.scorer}" for session in sessions]
    return [PredictionJob(tuple(Path(v) for v in g), s) for g, s in zip(groups, stems, strict=True)]


def predict_job(
    run: Run,
    job: PredictionJob,
    network: torch.nn.Module,
    out: str | Path,
    levels: Sequence[float] = DEFAULT_LEVELS,
    *,
    batch_size: int = 16,
    progress: bool = False,
    model: PosteriorModel3D | None = None,
) -> VideoPrediction:
    """Predict one job of :func:`plan_predictions` and write its files into ``out`` (atomically).

    ``model``: a 3D run's posterior model, built once and shared between sessions (default: built here).
    """
    out = Path(out)
    if not is_3d(run.config.model):
        (video,) = job.videos
        posterior, _, paths = write_video_prediction(
            run, video, out, job.stem, levels, network=network, batch_size=batch_size, progress=progress
        )
        return VideoPrediction(
            [video], job.stem, posterior, list(run.config.keypoints), run.config.skeleton_edges(), out, paths
        )
    model = PosteriorModel3D.from_run(run) if model is None else model
    group = list(job.videos)
    posterior = videos_posterior3d(
        run, group, levels, network, batch_size=batch_size, progress=progress, model=model
    )
    paths = write_posterior3d(posterior, out, job.stem, run.scorer, videos=model.channels.per_view(group))
    return VideoPrediction(
        group, job.stem, posterior, list(posterior.keypoints), list(model.settings.edges), out, paths
    )


def predict_run(
    run: Run,
    videos: Sequence[str | Path] | None = None,
    out: str | Path | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    *,
    device: str = "cpu",
    checkpoint: str | Path | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> Iterator[VideoPrediction]:
    """Predict ``videos`` (default: the run's project's) into ``out`` (default ``RUN/predictions``).

    A generator: each video (2D) or session (3D) is predicted, written and yielded in turn (see
    the module doc).

    Raises:
        DGPError: a batch size under 1, a video that is not a file, a project without videos,
            or (3D) a number of videos that is not a whole number of sessions.
    """
    if batch_size < 1:
        raise DGPError(f"--batch-size {batch_size} must be at least 1")
    run.require_finished()  # an unfinished run's intervals are not calibrated
    jobs = plan_predictions(run, videos)
    out = check_output_folder(Path(out) if out else run.predictions_dir, "--out")
    remove_stale_temporaries(out)  # left by a predict killed while writing
    network = run.network(device, checkpoint=checkpoint)
    model = PosteriorModel3D.from_run(run) if is_3d(run.config.model) else None
    for job in jobs:
        yield predict_job(
            run, job, network, out, levels, batch_size=batch_size, progress=progress, model=model
        )
