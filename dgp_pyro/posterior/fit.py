"""Fit a run end to end: train the model, then calibrate its posterior on the held-out labels.

This is what ``dgp-pyro train`` runs. The trainers (:mod:`dgp_pyro.train`) stop at their last
checkpoint; the calibration (:func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`) needs
the posterior, which sits above training, so the two meet here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from dgp_pyro.posterior.calibrate import calibrate_posterior
from dgp_pyro.run import Run, RunConfig
from dgp_pyro.train.registry import trainer_for


def fit_run(
    config: RunConfig,
    out_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_step: Callable[[int, float], None] | None = None,
) -> Run:
    """Train ``config.model`` into ``out_dir`` and recalibrate its posterior; return the run.

    Args:
        config: the run's settings.
        out_dir: the run folder (created; refused if it holds a run, unless ``resume``).
        resume: continue the run in ``out_dir`` from its last checkpoint, exactly.
        progress: show a progress bar (only on a terminal).
        on_step: called as ``on_step(step, loss)`` after every step (tests, monitoring).
    """
    run = trainer_for(config.model)(config, out_dir, resume=resume, progress=progress, on_step=on_step)
    calibrate_posterior(run)
    return run
