"""One job of ``dgp-pyro predict`` (a video, or a 3D session): predicted, written, its manifest last.

:class:`PredictSettings` is what every job of one call shares (it is sent once to each Ray
worker); :class:`Predictor` is a run loaded for them (network on the device, 3D posterior model);
:func:`predict_one` does one job: the same files as
:func:`~dgp_pyro.posterior.predict_run.predict_run` (plus NWB if asked), written atomically, then
the job's manifest (:mod:`dgp_pyro.scale.manifest`). A job that fails with a
:class:`~dgp_pyro.errors.DGPError` (a video that cannot be read, a posterior that is not finite)
becomes a failed :class:`JobOutcome`, so the other jobs go on.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from dgp_pyro.errors import DGPError
from dgp_pyro.export.nwb import write_prediction_nwb
from dgp_pyro.model.registry import is_3d
from dgp_pyro.posterior.posterior3d import PosteriorModel3D
from dgp_pyro.posterior.predict_run import PredictionJob, predict_job
from dgp_pyro.run.folder import Run, load_run
from dgp_pyro.scale.manifest import manifest_header, write_manifest

__all__ = ["JobOutcome", "PredictSettings", "Predictor", "predict_one"]


@dataclass(frozen=True)
class PredictSettings:
    """What every job of one ``dgp-pyro predict`` call shares (sent once to each Ray worker).

    Attributes:
        run: the run folder.
        out: the output folder.
        levels: credible levels of the interval columns.
        checkpoint: the checkpoint file (resolved).
        checkpoint_id: :func:`~dgp_pyro.scale.manifest.checkpoint_identity` of it.
        device: ``cpu`` or ``cuda``.
        batch_size: frames per forward pass.
        nwb: also write an NWB file per job.
        threads: torch CPU threads in a worker (``None``: leave torch's default).
    """

    run: Path
    out: Path
    levels: tuple[float, ...]
    checkpoint: Path
    checkpoint_id: dict[str, Any]
    device: str = "cpu"
    batch_size: int = 16
    nwb: bool = False
    threads: int | None = None

    def header(self, run: Run, job: PredictionJob) -> dict[str, Any]:
        """The manifest header of ``job``'s output (see :mod:`dgp_pyro.scale.manifest`)."""
        return manifest_header(
            self.run, run.config.model, self.checkpoint_id, job.videos, self.levels, self.nwb
        )


@dataclass
class JobOutcome:
    """What became of one job: ``written``, ``skipped`` (complete output found) or ``failed``.

    Attributes:
        job: the job.
        status: ``written``, ``skipped`` or ``failed``.
        frames: frames predicted (0 unless written).
        paths: the files written (prediction files, NWB).
        manifest: the manifest written after them.
        error: why it failed (one line for a :class:`~dgp_pyro.errors.DGPError`; a worker's
            traceback for anything else on Ray).
        seconds: wall time of the job in its worker.
    """

    job: PredictionJob
    status: Literal["written", "skipped", "failed"]
    frames: int = 0
    paths: list[Path] = field(default_factory=list)
    manifest: Path | None = None
    error: str | None = None
    seconds: float = 0.0


class Predictor:
    """A loaded run: its network on the device and, for 3D runs, its posterior model."""

    def __init__(self, settings: PredictSettings):
        self.settings = settings
        if settings.threads is not None:
            torch.set_num_threads(settings.threads)
        self.run = load_run(settings.run)
        self.network = self.run.network(settings.device, checkpoint=settings.checkpoint)
        self.model = PosteriorModel3D.from_run(self.run) if is_3d(self.run.config.model) else None


def predict_one(predictor: Predictor, job: PredictionJob, progress: bool = False) -> JobOutcome:
    """Predict ``job``, write its files and then its manifest; a DGPError makes a failed outcome."""
    settings = predictor.settings
    start = time.perf_counter()
    try:
        prediction = predict_job(
            predictor.run, job, predictor.network, settings.out, settings.levels,
            batch_size=settings.batch_size, progress=progress, model=predictor.model,
        )  # fmt: skip
        paths = list(prediction.paths)
        if settings.nwb:
            paths.append(write_prediction_nwb(prediction, predictor.run.scorer))
        header = settings.header(predictor.run, job)
        manifest = write_manifest(settings.out, job.stem, header, paths)
    except DGPError as error:
        return JobOutcome(job, "failed", error=str(error), seconds=time.perf_counter() - start)
    frames = len(prediction.posterior.mean)
    return JobOutcome(job, "written", frames, paths, manifest, seconds=time.perf_counter() - start)
