"""Which function trains which model: one trainer per model family (:mod:`dgp_pyro.model.registry`).

Every trainer has the signature
``trainer(config: RunConfig, out_dir, resume=False, progress=True, on_step=None) -> Run`` and
stops at the last checkpoint; :func:`dgp_pyro.posterior.fit.fit_run` then calibrates the
posterior on the held-out labels, which finishes the run.
"""

from __future__ import annotations

from collections.abc import Callable

from dgp_pyro.model.registry import model_spec
from dgp_pyro.train.dgp import train_dgp
from dgp_pyro.train.dgp3d import train_dgp3d
from dgp_pyro.train.supervised import train_supervised

#: Model family -> its trainer.
TRAINERS: dict[str, Callable] = {"supervised": train_supervised, "dgp": train_dgp, "dgp3d": train_dgp3d}


def trainer_for(model: str) -> Callable:
    """The training function of model ``model`` (an unknown name raises :class:`DGPError`)."""
    return TRAINERS[model_spec(model).family]
