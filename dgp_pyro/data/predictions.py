"""DeepLabCut-format prediction files, with extra columns for the posterior spread.

DeepLabCut writes its predictions as a table with column levels (scorer, bodyparts, coords),
coords ``x, y, likelihood`` per body part, an integer frame index (or image paths, when it
analyses labeled images) and, for HDF5, the key ``df_with_missing``. We write exactly that,
then append our own coords to every body part (``x_std``, ``y_std``, ``x_lo90``, ...), so
tools that read DeepLabCut output by body part and coord name keep working unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from jaxtyping import Float, Int

from dgp_pyro.data.labels import _file_kind, _frame, _group_columns, _read_table, _single_scorer, _write_table
from dgp_pyro.errors import DGPError

__all__ = ["PredictionTable", "read_predictions", "write_predictions"]

#: The coords DeepLabCut itself writes for every body part, in this order.
BASE_COORDS = ("x", "y", "likelihood")


@dataclass
class PredictionTable:
    """Per-frame predictions for K keypoints.

    Attributes:
        scorer: the scorer (model) name, the header's first row.
        keypoints: body part names, in column order.
        xy: ``(T, K, 2)`` pixel coordinates.
        likelihood: ``(T, K)`` confidence in [0, 1] (NaN allowed).
        extras: extra per-keypoint columns, name -> ``(T, K)``, written after ``likelihood``
            in insertion order (e.g. ``x_std``, ``y_std``, ``x_lo90``, ``x_hi90``).
        frame_index: ``(T,)`` int video frame numbers; defaults to ``0..T-1``.
        image_keys: for predictions on labeled images, the image paths of the rows (the
            file's index); ``None`` for a video. When set, it is written as the index instead
            of ``frame_index``, and ``frame_index`` reads back as ``0..T-1``.
    """

    scorer: str
    keypoints: list[str]
    xy: Float[np.ndarray, "t k 2"]
    likelihood: Float[np.ndarray, "t k"]
    extras: dict[str, Float[np.ndarray, "t k"]] = field(default_factory=dict)
    frame_index: Int[np.ndarray, " t"] | None = None
    image_keys: list[str] | None = None

    def __post_init__(self) -> None:
        self.keypoints = [str(k) for k in self.keypoints]
        self.xy = np.asarray(self.xy, dtype=np.float64)
        self.likelihood = np.asarray(self.likelihood, dtype=np.float64)
        t, k = self.xy.shape[0], len(self.keypoints)
        if self.xy.shape != (t, k, 2):
            raise ValueError(f"xy has shape {self.xy.shape}, expected (T, {k}, 2)")
        if self.likelihood.shape != (t, k):
            raise ValueError(f"likelihood has shape {self.likelihood.shape}, expected ({t}, {k})")
        extras = {}
        for name, value in self.extras.items():
            if name in BASE_COORDS or not name:
                raise ValueError(f"extra column name {name!r} is empty or clashes with {BASE_COORDS}")
            value = np.asarray(value, dtype=np.float64)
            if value.shape != (t, k):
                raise ValueError(f"extra {name!r} has shape {value.shape}, expected ({t}, {k})")
            extras[str(name)] = value
        self.extras = extras
        if self.frame_index is None:
            self.frame_index = np.arange(t, dtype=np.int64)
        self.frame_index = np.asarray(self.frame_index).astype(np.int64)
        if self.frame_index.shape != (t,):
            raise ValueError(f"frame_index has shape {self.frame_index.shape}, expected ({t},)")
        if self.image_keys is not None:
            self.image_keys = [str(key) for key in self.image_keys]
            if len(self.image_keys) != t:
                raise ValueError(f"{len(self.image_keys)} image keys for {t} rows")


def write_predictions(path: str | Path, table: PredictionTable) -> None:
    """Write ``table`` as a DeepLabCut prediction file (``.csv`` or ``.h5`` by suffix), atomically.

    Columns per body part: ``x, y, likelihood`` then the extras in insertion order. The index
    is ``frame_index`` (or ``image_keys`` when set). A re-read gives the same float64 bits.
    """
    path = Path(path)
    _file_kind(path)
    if len(set(table.keypoints)) != len(table.keypoints):
        raise ValueError(f"keypoint names repeat: {table.keypoints}")
    names = list(BASE_COORDS) + list(table.extras)
    # (T, K, C): for every body part its coords side by side, as DeepLabCut lays them out.
    stacked = np.concatenate(
        [table.xy, table.likelihood[..., None]] + [v[..., None] for v in table.extras.values()], axis=-1
    )
    t, k, c = stacked.shape
    columns = [(part, name) for part in table.keypoints for name in names]
    if table.image_keys is not None:
        index = pd.Index(list(table.image_keys), dtype=object)
    else:
        index = pd.Index(table.frame_index, dtype=np.int64)
    _write_table(path, _frame(table.scorer, columns, stacked.reshape(t, k * c), index))


def read_predictions(path: str | Path) -> PredictionTable:
    """Read a DeepLabCut-format prediction file (``.csv`` or ``.h5``).

    Files DeepLabCut writes itself (``x, y, likelihood`` only) read with empty ``extras``. A
    row index of image paths (predictions on labeled images) is kept as ``image_keys``.

    Raises:
        DGPError: the file cannot be parsed, is a multi-animal file, or a body part lacks
            ``x``, ``y`` or ``likelihood`` or has a different set of columns from the others.
    """
    path, raw = _read_table(path)
    scorer = _single_scorer(path, raw.scorers)
    keypoints, groups = _group_columns(path, raw)
    # Extra coords in order of first appearance; every body part must have the same set.
    names: list[str] = []
    for group in groups:
        names.extend(name for name in group if name not in names)
    for part, group in zip(keypoints, groups, strict=True):
        missing = [name for name in BASE_COORDS if name not in group]
        if missing:
            hint = (
                "this looks like a label file: read it with read_labels"
                if "likelihood" in missing and "x" in group and "y" in group
                else "DeepLabCut predictions have x, y and likelihood for every body part"
            )
            raise DGPError(
                f"body part {part!r} has no {', '.join(map(repr, missing))} column", path, hint=hint
            )
        absent = [name for name in names if name not in group]
        if absent:
            raise DGPError(
                f"body part {part!r} lacks the column(s) {', '.join(map(repr, absent))} that others have",
                path,
            )

    def column(name: str) -> np.ndarray:
        return raw.values[:, [group[name] for group in groups]]

    extras = {name: column(name) for name in names if name not in BASE_COORDS}
    t = raw.values.shape[0]
    if raw.int_index is not None:
        frame_index, image_keys = raw.int_index, None
    elif t == 0:
        frame_index, image_keys = np.zeros(0, dtype=np.int64), None
    else:
        frame_index, image_keys = np.arange(t, dtype=np.int64), list(raw.keys)
    return PredictionTable(
        scorer=scorer,
        keypoints=keypoints,
        xy=np.stack([column("x"), column("y")], axis=-1),
        likelihood=column("likelihood"),
        extras=extras,
        frame_index=frame_index,
        image_keys=image_keys,
    )
