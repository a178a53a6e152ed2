"""Fit a run end to end: train the model, then calibrate its posterior on the held-out labels.

This is what ``dgp-pyro train`` runs. The trainers (:mod:`dgp_pyro.train`) stop at their last
checkpoint; the calibration (:func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`) needs
the posterior, which sits above training, so the two meet here.

The run is marked finished (``RUN/finished.json``, :func:`~dgp_pyro.run.folder.mark_finished`)
only once the calibration is written, so a run killed at any moment before reads as unfinished.
A run that fails before its first checkpoint leaves nothing behind: the folder is removed if
this call created it (or emptied if it was empty), and ``--out`` is checked to be writable
before any work starts.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from dgp_pyro.atomic import remove_stale_temporaries
from dgp_pyro.data.output_paths import check_output_folder
from dgp_pyro.posterior.calibrate import calibrate_posterior
from dgp_pyro.run.checkpoint import LAST
from dgp_pyro.run.config import RunConfig
from dgp_pyro.run.folder import CHECKPOINTS, FINISHED, Run, mark_finished
from dgp_pyro.train.registry import trainer_for


def fit_run(
    config: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
    trainer: Callable[..., Run] | None = None,
) -> Run:
    """Train ``config.model`` into ``out_dir`` and recalibrate its posterior; return the run.

    Args:
        config: the run's settings.
        out_dir: the run folder (created; refused if it holds a run, unless ``resume``).
        resume: continue the run in ``out_dir`` from its last checkpoint, exactly.
        progress: show a progress bar (only on a terminal).
        on_step: called as ``on_step(step, loss)`` after every step (tests, monitoring).
        trainer: the training function (default: the model's, :func:`~dgp_pyro.train.registry.trainer_for`;
            :func:`~dgp_pyro.train.data_parallel.data_parallel_trainer` for several devices).
    """
    out = check_output_folder(out_dir, "--out")
    fresh = not out.exists() or not any(out.iterdir())
    existed = out.exists()
    trainer = trainer_for(config.model) if trainer is None else trainer
    remove_stale_temporaries(out, recursive=True)  # left by a run killed while writing
    if not resume:
        (out / FINISHED).unlink(missing_ok=True)
    try:
        run = trainer(config, out, resume=resume, progress=progress, on_step=on_step)
    except BaseException:
        if fresh and not (out / CHECKPOINTS / LAST).is_file():
            _remove_new_run(out, keep_folder=existed)
        raise
    calibrate_posterior(run)
    mark_finished(run)
    return run


def _remove_new_run(out: Path, keep_folder: bool) -> None:
    """Undo a run that failed before its first checkpoint (nothing in it is worth keeping)."""
    if not out.is_dir():
        return
    if not keep_folder:
        shutil.rmtree(out, ignore_errors=True)
        return
    for path in out.iterdir():
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
