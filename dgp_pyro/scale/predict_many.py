"""``dgp-pyro predict`` over many videos: skip what is complete, predict the rest, report failures.

:func:`predict_videos` plans one job per video (per session for 3D runs,
:func:`~dgp_pyro.posterior.predict_run.plan_predictions`), skips every job whose output is
complete (:func:`~dgp_pyro.scale.manifest.is_complete`, unless ``overwrite``), and runs the others
(:func:`~dgp_pyro.scale.jobs.predict_one`) with one of two engines:

- ``serial``: one after another in this process, with one network (the default);
- ``ray``: one Ray task per job, the network and the posterior on the worker
  (:mod:`~dgp_pyro.scale.ray_engine`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from dgp_pyro.atomic import remove_stale_temporaries
from dgp_pyro.data.output_paths import check_output_folder
from dgp_pyro.errors import DGPError
from dgp_pyro.posterior.marginals import DEFAULT_LEVELS
from dgp_pyro.posterior.predict_run import plan_predictions
from dgp_pyro.run.folder import Run
from dgp_pyro.scale.jobs import JobOutcome, Predictor, PredictSettings, predict_one
from dgp_pyro.scale.manifest import checkpoint_identity, is_complete
from dgp_pyro.scale.ray_engine import import_ray, run_on_ray

__all__ = ["ENGINES", "predict_videos"]

#: The engines of ``dgp-pyro predict --engine``.
ENGINES = ("serial", "ray")


def predict_videos(
    run: Run,
    videos: Sequence[str | Path] | None = None,
    out: str | Path | None = None,
    levels: Sequence[float] = DEFAULT_LEVELS,
    *,
    device: str = "cpu",
    checkpoint: str | Path | None = None,
    batch_size: int = 16,
    nwb: bool = False,
    overwrite: bool = False,
    engine: str = "serial",
    workers: int = 1,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: int | None = None,
    max_retries: int = 3,
    progress: bool = False,
) -> Iterator[JobOutcome]:
    """Predict ``videos`` (default: the run's project's) into ``out`` (default ``RUN/predictions``).

    A generator of one :class:`JobOutcome` per video (2D) or session (3D): skipped jobs first,
    then the others as they finish (in order for ``serial``, as workers finish them for ``ray``).

    Args:
        engine: ``serial`` (this process) or ``ray`` (one task per job).
        workers: Ray tasks running at once; without ``address``, the size of the local cluster.
        address: an existing Ray cluster's address (``ray start --head`` prints it; ``auto``).
        gpus_per_worker: GPUs per Ray task (fractional: several tasks share a GPU); needs
            ``device="cuda"``.
        cpus_per_worker: CPUs per Ray task, and torch's threads in it (default: this machine's
            cores over ``workers`` without ``address``, 1 with it).
        max_retries: Ray's retries of a task whose worker died.
        progress: a bar over frames (``serial``) or over videos (``ray``).

    Raises:
        DGPError: bad numbers, an unknown engine, Ray not installed, and everything
            :func:`~dgp_pyro.posterior.predict_run.plan_predictions` raises.
    """
    if engine not in ENGINES:
        raise DGPError(f"unknown engine {engine!r}", hint=f"use one of {', '.join(ENGINES)}")
    if batch_size < 1:
        raise DGPError(f"--batch-size {batch_size} must be at least 1")
    if workers < 1:
        raise DGPError(f"--workers {workers} must be at least 1")
    if gpus_per_worker < 0:
        raise DGPError(f"--gpus-per-worker {gpus_per_worker} must not be negative")
    if gpus_per_worker > 0 and not str(device).startswith("cuda"):
        raise DGPError("--gpus-per-worker needs --device cuda", hint="add --device cuda")
    if cpus_per_worker is not None and cpus_per_worker < 1:
        raise DGPError(f"--cpus-per-worker {cpus_per_worker} must be at least 1")
    if engine == "serial" and (workers != 1 or address or gpus_per_worker or cpus_per_worker):
        raise DGPError(
            "--workers, --address, --gpus-per-worker and --cpus-per-worker are for --engine ray",
            hint="add --engine ray",
        )
    if engine == "ray":
        import_ray()  # fail before any work if Ray is missing
    run.require_finished()  # an unfinished run's intervals are not calibrated
    jobs = plan_predictions(run, videos)
    out = check_output_folder(Path(out) if out else run.predictions_dir, "--out")
    remove_stale_temporaries(out)  # left by a predict killed while writing
    checkpoint = Path(checkpoint) if checkpoint else run.last_checkpoint
    if not checkpoint.is_file():
        raise DGPError("checkpoint not found", checkpoint, hint="train the run first, or give --checkpoint")
    settings = PredictSettings(
        run=run.path.resolve(), out=(Path(out) if out else run.predictions_dir).resolve(),
        levels=tuple(float(level) for level in levels), checkpoint=checkpoint.resolve(),
        checkpoint_id=checkpoint_identity(checkpoint), device=str(device), batch_size=batch_size, nwb=nwb,
    )  # fmt: skip
    todo = []
    for job in jobs:
        if not overwrite and is_complete(settings.out, job.stem, settings.header(run, job)):
            yield JobOutcome(job, "skipped")
        else:
            todo.append(job)
    if not todo:
        return
    if engine == "serial":
        predictor = Predictor(settings)
        for job in todo:
            yield predict_one(predictor, job, progress=progress)
        return
    run.network("cpu", checkpoint=checkpoint)  # a checkpoint that does not load fails here, once
    yield from run_on_ray(
        settings, todo, workers=workers, address=address, gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker, max_retries=max_retries, progress=progress,
    )  # fmt: skip
