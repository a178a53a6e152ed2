"""The files of a project folder: its label files (read, with their images resolved) and its videos.

DeepLabCut keeps ``labeled-data/<folder>/CollectedData_<scorer>.csv`` (or ``.h5``); Lightning Pose
keeps ``CollectedData*.csv`` at the root. Each label file read becomes a :class:`LabelSource`;
:func:`check_against_config` checks their columns against ``config.yaml``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dgp_pyro.data.labels import LabelTable, read_labels
from dgp_pyro.errors import DGPError

__all__ = [
    "VIDEO_SUFFIXES",
    "LabelSource",
    "check_against_config",
    "dlc_label_files",
    "ordered_union",
    "read_source",
    "video_files",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def video_files(root: Path, config: dict[str, Any]) -> list[Path]:
    """Videos in ``<root>/videos`` plus ``video_sets`` entries that exist (placeholders are skipped)."""
    found: list[Path] = []
    folder = root / "videos"
    if folder.is_dir():
        found += sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    video_sets = config.get("video_sets")
    entries = list(video_sets) if isinstance(video_sets, dict | list) else []
    for entry in entries:
        if not isinstance(entry, str):
            continue
        try:
            candidate = Path(entry).expanduser()
            candidate = candidate if candidate.is_absolute() else root / candidate
            if candidate.is_file() and candidate.suffix.lower() in VIDEO_SUFFIXES:
                found.append(candidate.absolute())
        except (OSError, ValueError):  # a placeholder that is not even a valid path
            continue
    # One entry per file, even when video_sets repeats a file of videos/.
    unique: dict[str, Path] = {}
    for video in found:
        unique.setdefault(os.path.realpath(video), video)
    return list(unique.values())


def dlc_label_files(root: Path) -> list[Path]:
    """``labeled-data/<folder>/CollectedData_*.csv`` (or ``.h5`` where no CSV of the same name)."""
    folder = root / "labeled-data"
    if not folder.is_dir():
        return []
    files = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        stems = sorted({p.stem for p in sub.glob("CollectedData_*") if p.suffix.lower() in (".csv", ".h5")})
        for stem in stems:
            csv_file = sub / f"{stem}.csv"
            files.append(csv_file if csv_file.is_file() else sub / f"{stem}.h5")
    return files


def _resolve_image(root: Path, label_file: Path, key: str) -> Path:
    """Where the image of a label row lives: relative to the project root.

    Windows separators are accepted. A bare file name (some tools write only ``img005.png``)
    is looked up beside the label file.
    """
    rel = key.replace("\\", "/")
    path = Path(rel)
    if path.is_absolute():
        return path
    candidate = root / rel
    if "/" not in rel and not candidate.is_file() and (label_file.parent / rel).is_file():
        return label_file.parent / rel
    return candidate


@dataclass
class LabelSource:
    """One label file as read, with its resolved image paths."""

    path: Path
    table: LabelTable
    images: list[Path]
    view: str | None = None  # the file's view when known from its name (folders layout)
    label_folder: str | None = None  # DeepLabCut: the labeled-data/<folder> holding the file


def read_source(
    root: Path, path: Path, view: str | None = None, label_folder: str | None = None
) -> LabelSource:
    """Read one label file; an infinite coordinate or a missing image is an error."""
    table = read_labels(path)
    bad = np.isinf(table.coords)
    if bad.any():
        n, k, _ = np.argwhere(bad)[0]
        raise DGPError(
            f"infinite coordinate in row {table.image_keys[n]!r}, body part {table.keypoints[k]!r}",
            path,
            hint="leave the cell empty (NaN) for a keypoint that is not labeled",
        )
    images = [_resolve_image(root, path, key) for key in table.image_keys]
    missing = [
        (key, image) for key, image in zip(table.image_keys, images, strict=True) if not image.is_file()
    ]
    if missing:
        key, image = missing[0]
        more = f" (and {len(missing) - 1} more rows)" if len(missing) > 1 else ""
        raise DGPError(
            f"the image of row {key!r} is missing: expected {image}{more}",
            path,
            hint="image paths in label files are relative to the project folder",
        )
    return LabelSource(path=path, table=table, images=images, view=view, label_folder=label_folder)


def ordered_union(lists: list[list[str]]) -> list[str]:
    return list(dict.fromkeys(name for names in lists for name in names))


def check_against_config(
    columns: list[str], sources: list[LabelSource], config_parts: list[str] | None, config_path: Path | None
) -> list[str]:
    """The label columns, in config order when config.yaml lists them (and both lists agree)."""
    if config_parts is None:
        return columns
    for source in sources:
        unknown = [c for c in source.table.keypoints if c not in config_parts]
        if unknown:
            raise DGPError(
                f"body part(s) {', '.join(unknown)} in the labels are not listed in config.yaml",
                source.path,
                hint=f"add them to 'bodyparts' in {config_path} or remove their columns",
            )
    absent = [p for p in config_parts if p not in columns]
    if absent:
        raise DGPError(
            f"config.yaml lists body part(s) {', '.join(absent)} that no label file has",
            config_path,
            hint="remove them from 'bodyparts' or label them",
        )
    return list(config_parts)
