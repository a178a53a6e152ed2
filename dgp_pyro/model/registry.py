"""Every model a run can be trained with, and what kind of model it is.

The one place that answers "is this model 3D?" and "does it have potentials?": trainers
(:mod:`dgp_pyro.train.registry`), posteriors and the command line look a model's name up here
instead of keeping their own lists. A model's switches (which potentials it turns on) stay
with its model function (:data:`dgp_pyro.model.dgp.VARIANTS`,
:data:`dgp_pyro.model.dgp3d.VARIANTS_3D`).

Families:
    ``supervised``: the heatmap network on the labels alone.
    ``dgp``: Deep Graph Pose in the image plane (2D latent keypoints, structured guide, SVI).
    ``dgp3d``: latent 3D keypoints seen through calibrated cameras.
"""

from __future__ import annotations

from dataclasses import dataclass

from dgp_pyro.errors import DGPError


@dataclass(frozen=True)
class ModelSpec:
    """A model's name, family and what it does, in one line for ``--help``."""

    name: str
    family: str
    summary: str

    @property
    def is_3d(self) -> bool:
        """Latent keypoints in world coordinates, seen through calibrated cameras."""
        return self.family == "dgp3d"

    @property
    def graphical(self) -> bool:
        """Fitted by SVI with a structured guide (not the network alone)."""
        return self.family != "supervised"


#: Every model, in the order ``dgp-pyro train --model`` lists them.
MODEL_SPECS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("supervised", "supervised", "the heatmap network trained on the labels alone"),
        ModelSpec("temporal", "dgp", "2D, temporal potential only"),
        ModelSpec("skeletal", "dgp", "2D, skeletal potential only"),
        ModelSpec("dgp", "dgp", "2D Deep Graph Pose: temporal and skeletal potentials"),
        ModelSpec("dgp3d", "dgp3d", "3D: latent world keypoints, temporal and bone-vector potentials"),
        ModelSpec("dgp3d_temporal", "dgp3d", "3D, temporal potential only"),
        ModelSpec("dgp3d_skeletal", "dgp3d", "3D, bone-vector potential only"),
        ModelSpec("dgp3d_bones", "dgp3d", "3D, temporal potential and bone lengths"),
    )
}
#: Every model name.
MODELS: tuple[str, ...] = tuple(MODEL_SPECS)
#: The multi-view 3D models (latent world keypoints seen through calibrated cameras).
MODELS_3D: tuple[str, ...] = tuple(name for name, spec in MODEL_SPECS.items() if spec.is_3d)


def model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of ``name``; an unknown name raises :class:`DGPError`."""
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise DGPError(f"unknown model {name!r}", hint=f"models: {', '.join(MODELS)}") from None


def is_3d(name: str) -> bool:
    """Whether model ``name`` is one of the multi-view 3D models."""
    return model_spec(name).is_3d


#: ``RunConfig.absent_weight`` when not given. Measured on the synthetic benchmarks: in one view,
#: empty maps for hidden parts cost their estimate (the network's guess of a part hidden under
#: the body was 5.7 px RMSE, the potentials' 6.8 px); with three cameras, they let a hidden
#: view drop out of the triangulation (supervised + DLT 7.81 -> 6.72 mm at 0.3, 6.79 at 0.1).
DEFAULT_ABSENT_WEIGHT = {"2d": 0.0, "3d": 0.3}


def default_absent_weight(model: str) -> float:
    """The ``absent_weight`` a run of ``model`` trains with when none is given."""
    return DEFAULT_ABSENT_WEIGHT["3d" if is_3d(model) else "2d"]
