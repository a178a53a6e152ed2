"""Atomic training checkpoints that resume a run exactly.

A checkpoint is one ``torch.save`` file holding everything needed to continue a run as if it
had never stopped: the model's, optimizer's and scheduler's state dicts, the step, the loss
log so far, the elapsed seconds, and every random state that training touches (torch's global
generator, NumPy's and Python's global generators and the data pipeline's own
``torch.Generator``). It also records the network's keypoints and architecture so a checkpoint
can be checked against a project before any weight is loaded.

The file is written through :func:`dgp_pyro.atomic.atomic_path` (temporary name, then rename),
so an interruption while saving leaves the previous checkpoint intact. Only plain containers,
numbers, strings and tensors are stored, so checkpoints load with ``weights_only=True`` (no
arbitrary code runs when a checkpoint is opened).

A run folder keeps ``checkpoints/last.pt`` (always the newest) and ``checkpoints/step_<N>.pt``
snapshots, of which the newest ``keep`` are kept.
"""

from __future__ import annotations

import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dgp_pyro.atomic import atomic_path
from dgp_pyro.errors import DGPError

#: Bumped when the layout of a checkpoint changes incompatibly.
CHECKPOINT_FORMAT = 1
LAST = "last.pt"
_STEP_RE = re.compile(r"^step_(\d+)\.pt$")


def capture_rng_state(data_generator: torch.Generator | None = None) -> dict[str, Any]:
    """Every random state training uses, as tensors and plain Python values."""
    kind, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(kind),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": _python_state_to_plain(random.getstate()),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if data_generator is not None:
        state["data"] = data_generator.get_state()
    return state


def restore_rng_state(state: dict[str, Any], data_generator: torch.Generator | None = None) -> None:
    """Put back the random states saved by :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state(
        (
            np_state["kind"],
            np_state["key"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    random.setstate(_python_state_from_plain(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if data_generator is not None and "data" in state:
        data_generator.set_state(state["data"])


def _python_state_to_plain(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _python_state_from_plain(plain: list) -> tuple:
    version, internal, gauss = plain
    return (version, tuple(internal), gauss)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (the old file survives any interruption)."""
    path = Path(path)
    state = {"format": CHECKPOINT_FORMAT, **state}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; a missing, truncated or foreign file raises :class:`DGPError`."""
    path = Path(path)
    if not path.is_file():
        raise DGPError("checkpoint not found", path, hint="train the run first, or check the run folder")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... by cause
        raise DGPError(
            f"checkpoint cannot be read ({_reason(error)})",
            path,
            hint="the file is corrupt or truncated; delete it and resume from a step_<N>.pt snapshot, "
            "or retrain",
        ) from error
    if not isinstance(state, dict) or "model" not in state:
        raise DGPError("not a dgp-pyro checkpoint (no model state)", path)
    if state.get("format", 0) > CHECKPOINT_FORMAT:
        raise DGPError(
            f"checkpoint format {state['format']} is newer than this dgp-pyro understands "
            f"({CHECKPOINT_FORMAT})",
            path,
            hint="upgrade dgp-pyro",
        )
    return state


def _reason(error: Exception) -> str:
    """Why torch could not load a file, without its advice to load untrusted pickles.

    torch suggests ``weights_only=False`` (running whatever code the file holds); a checkpoint
    of ours never needs that, so the advice is dropped.
    """
    text = " ".join(str(error).split())
    if "weights_only" in text or "Weights only load failed" in text:
        return "it holds objects other than tensors and plain values: not a dgp-pyro checkpoint"
    # the first sentence only: torch goes on with advice for its own developers
    first = text.split(". ")[0][:160] if text else ""
    if "central directory" in first or "zip archive" in first:
        first = "the file is truncated, or not a checkpoint"
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def check_keypoints(
    state: dict[str, Any], keypoints: list[str], path: str | Path, what: str = "project"
) -> None:
    """Raise :class:`DGPError` if the checkpoint was trained on other keypoints than ``keypoints``."""
    saved = list(state.get("keypoints", []))
    if saved != list(keypoints):
        raise DGPError(
            f"checkpoint has keypoints {saved}, {what} has {list(keypoints)}",
            path,
            hint="predict with a run trained on this project's keypoints, or retrain",
        )


class Checkpointer:
    """Writes ``last.pt`` and numbered snapshots into a folder, keeping the newest ``keep``.

    Args:
        folder: the run's ``checkpoints/`` folder (created on first save).
        keep: how many ``step_<N>.pt`` snapshots to keep (``last.pt`` is always kept); 0 keeps
            none.
    """

    def __init__(self, folder: str | Path, keep: int = 3):
        self.folder = Path(folder)
        self.keep = int(keep)

    @property
    def last(self) -> Path:
        return self.folder / LAST

    def snapshots(self) -> list[tuple[int, Path]]:
        """The ``step_<N>.pt`` files, oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for path in self.folder.iterdir():
            match = _STEP_RE.match(path.name)
            if match:
                found.append((int(match.group(1)), path))
        return sorted(found)

    def save(self, state: dict[str, Any], step: int, snapshot: bool = True) -> Path:
        """Write ``last.pt`` (and ``step_<step>.pt`` if ``snapshot``), then prune old snapshots."""
        save_checkpoint(self.last, state)
        if snapshot and self.keep > 0:
            target = self.folder / f"step_{step}.pt"
            target.unlink(missing_ok=True)
            try:  # a hard link costs no disk; replacing last.pt later leaves the link's data alone
                os.link(self.last, target)
            except OSError:
                with atomic_path(target) as tmp:
                    shutil.copyfile(self.last, tmp)
            for _, old in self.snapshots()[: -self.keep]:
                old.unlink(missing_ok=True)
        return self.last
