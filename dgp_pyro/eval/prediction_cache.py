"""Cached predictions of a run: read back when fresh, written when not.

``dgp-pyro evaluate`` writes the posteriors it scores to ``RUN/predictions/`` (videos:
``<stem>_<scorer>.h5``; held-out images: ``labeled_test_<scorer>.h5``) with their interval columns
and reads them back instead of predicting again when they are newer than the run's last
checkpoint and its posterior calibration and were written by this very code
(:func:`is_fresh`, :func:`cached_table`). The code is identified by a hash of the package's
source files (:func:`code_fingerprint`), kept beside each cached table in a hidden
``.<name>.code`` file (:func:`mark_fresh`): a run evaluated before an upgrade that changed the
decoding or the posterior is predicted again, not scored from its old tables. Tables without
the mark (``dgp-pyro predict``'s, or an older version's) are predicted again too.
:class:`NetworkOnce` loads the network only when something must be predicted;
:func:`ensure_3d_tables` writes a 3D run's per-session tables.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

import torch

from dgp_pyro.atomic import atomic_write_text
from dgp_pyro.data.predictions import PredictionTable, read_predictions
from dgp_pyro.data.project import Project
from dgp_pyro.data.sessions import session_videos
from dgp_pyro.errors import DGPError
from dgp_pyro.posterior.calibration_file import POSTERIOR_CALIBRATION
from dgp_pyro.posterior.files3d import write_posterior3d
from dgp_pyro.posterior.posterior3d import PosteriorModel3D, videos_posterior3d
from dgp_pyro.posterior.predict import prediction_stem
from dgp_pyro.run.folder import Run

__all__ = ["NetworkOnce", "cached_table", "code_fingerprint", "ensure_3d_tables", "is_fresh", "mark_fresh"]

#: the package whose source identifies the code that wrote a cached table
_PACKAGE = Path(__file__).resolve().parents[1]


@functools.cache
def code_fingerprint() -> str:
    """A hash of every Python source file of the installed ``dgp_pyro`` package (paths and bytes)."""
    digest = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")):
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _mark(path: Path) -> Path:
    return path.with_name(f".{path.name}.code")


def mark_fresh(path: Path) -> None:
    """Record that the table at ``path`` was written by this code (:func:`code_fingerprint`)."""
    atomic_write_text(_mark(path), code_fingerprint() + "\n")


def is_fresh(path: Path, run: Run) -> bool:
    """A cached table this code wrote, newer than the run's last checkpoint and its calibration."""
    if not path.is_file():
        return False
    mark = _mark(path)
    if not mark.is_file() or mark.read_text().strip() != code_fingerprint():
        return False
    inputs = [run.last_checkpoint, run.path / POSTERIOR_CALIBRATION]
    return all(not p.is_file() or path.stat().st_mtime >= p.stat().st_mtime for p in inputs)


def cached_table(path: Path, run: Run, keypoints: list[str], use_cache: bool) -> PredictionTable | None:
    """The prediction table at ``path`` if caching is on, it is fresh and has ``keypoints``; else None."""
    if not use_cache or not is_fresh(path, run):
        return None
    try:
        table = read_predictions(path)
    except DGPError:
        return None
    return table if table.keypoints == keypoints else None


class NetworkOnce:
    """Loads the run's network on first use (cached predictions may make it unnecessary)."""

    def __init__(self, run: Run, device: str):
        self.run, self.device, self.network = run, device, None

    def __call__(self) -> torch.nn.Module:
        if self.network is None:
            self.network = self.run.network(self.device)
        return self.network


def ensure_3d_tables(
    run: Run,
    project: Project,
    network: NetworkOnce,
    levels: Sequence[float],
    batch_size: int,
    use_cache: bool,
    progress: bool,
) -> None:
    """3D runs: write (or reuse) every session's reprojected per-view tables in ``RUN/predictions``.

    A 3D posterior is computed for a whole session at once; its per-view DeepLabCut tables are
    then read like a 2D run's video predictions.
    """
    model = None
    for session in session_videos(project):
        stems = [prediction_stem(video, run.scorer) for video in session.videos]
        if use_cache and all(is_fresh(run.predictions_dir / f"{stem}.h5", run) for stem in stems):
            continue
        model = PosteriorModel3D.from_run(run) if model is None else model
        posterior = videos_posterior3d(
            run, session.videos, levels, network(), batch_size=batch_size, progress=progress, model=model
        )
        write_posterior3d(
            posterior, run.predictions_dir, f"{session.name}_{run.scorer}", run.scorer, videos=session.videos
        )
        for stem in stems:
            mark_fresh(run.predictions_dir / f"{stem}.h5")
