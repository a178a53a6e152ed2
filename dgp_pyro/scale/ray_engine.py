"""The ``ray`` engine of ``dgp-pyro predict``: one Ray task per video (per session for 3D runs).

Each task loads the run on its worker (once per worker process: :func:`_predictor` keeps it),
predicts its job and writes its files and manifest itself (:func:`~dgp_pyro.scale.jobs.predict_one`),
and returns only a small :class:`~dgp_pyro.scale.jobs.JobOutcome`, never the posterior. The
driver keeps ``workers`` tasks in flight, shows a bar over videos and yields outcomes as tasks
finish. A task whose worker dies is retried by Ray (``max_retries``); one that still fails, or
raises something other than a :class:`~dgp_pyro.errors.DGPError`, becomes a failed outcome with
the worker's traceback, and the others go on.

Without an address :func:`run_on_ray` starts a local cluster of ``workers * cpus_per_worker`` CPUs
(and shuts it down after); with one it joins that cluster (``ray start --head`` on the head
node; every node needs dgp-pyro installed and the run, videos and output folder at the same
paths). If Ray is already initialised in this process, that session is used as it is. Each task
asks Ray for ``cpus_per_worker`` CPUs (and ``gpus_per_worker`` GPUs, fractional allowed) and sets
torch to as many threads, so the workers do not oversubscribe the cores.

Ray is an optional dependency (``pip install dgp-pyro[ray]``): it is imported only here, inside
the functions that need it.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from types import ModuleType
from typing import Any

from dgp_pyro.errors import DGPError
from dgp_pyro.posterior.predict_run import PredictionJob
from dgp_pyro.scale.jobs import JobOutcome, Predictor, PredictSettings, predict_one

__all__ = ["import_ray", "local_cpus_per_worker", "run_on_ray"]

#: The run loaded in this worker process, with the settings it was loaded for.
_LOADED: dict[str, Any] = {}


def import_ray() -> ModuleType:
    """``import ray``, or a :class:`~dgp_pyro.errors.DGPError` that says how to install it."""
    try:
        import ray
    except ImportError:
        raise DGPError(
            "--engine ray needs Ray, which is not installed", hint="pip install dgp-pyro[ray]"
        ) from None
    return ray


def local_cpus_per_worker(workers: int) -> int:
    """This machine's cores shared out between ``workers`` (at least one each)."""
    return max(1, (os.cpu_count() or 1) // workers)


def run_on_ray(
    settings: PredictSettings,
    jobs: Sequence[PredictionJob],
    *,
    workers: int,
    address: str | None = None,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: int | None = None,
    max_retries: int = 3,
    progress: bool = False,
) -> Iterator[JobOutcome]:
    """Run ``jobs`` as Ray tasks, at most ``workers`` at once; yield each outcome as it finishes."""
    ray = import_ray()
    if cpus_per_worker is None:
        cpus_per_worker = 1 if address else local_cpus_per_worker(workers)
    settings = dataclasses.replace(settings, threads=cpus_per_worker)
    started = not ray.is_initialized()
    if started:
        if address:
            ray.init(address=address)
        else:
            ray.init(num_cpus=workers * cpus_per_worker, include_dashboard=False)
    bar = _progress_bar(len(jobs), progress)
    try:
        task = ray.remote(_predict_task).options(
            num_cpus=cpus_per_worker, num_gpus=gpus_per_worker, max_retries=max_retries
        )
        shared = ray.put(settings)
        queue, pending = deque(jobs), {}
        while queue or pending:
            while queue and len(pending) < workers:
                job = queue.popleft()
                pending[task.remote(shared, job)] = job
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                job = pending.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as error:
                    outcome = JobOutcome(job, "failed", error=str(error))
                bar.update(1)
                yield outcome
    finally:
        bar.close()
        if started:
            ray.shutdown()


def _predict_task(settings: PredictSettings, job: PredictionJob) -> JobOutcome:
    """The body of a Ray task: the worker's loaded run (loaded on first use) predicts ``job``."""
    return predict_one(_predictor(settings), job)


def _predictor(settings: PredictSettings) -> Predictor:
    """The run loaded in this worker for ``settings`` (loaded again only when they change)."""
    key = repr(settings)
    if _LOADED.get("key") != key:
        _LOADED.clear()
        _LOADED.update(key=key, predictor=Predictor(settings))
    return _LOADED["predictor"]


def _progress_bar(total: int, enabled: bool):
    from tqdm import tqdm  # not tqdm.auto: it warns in a notebook kernel without ipywidgets

    return tqdm(total=total, desc="videos", unit="video", disable=not (enabled and sys.stderr.isatty()))
