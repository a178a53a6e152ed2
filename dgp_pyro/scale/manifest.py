"""The manifest written next to each video's prediction files: which run, checkpoint and videos made them.

``OUT/<stem>.manifest.json`` is written last, atomically, after every file of the video (or 3D
session) it describes, so its presence means the output is complete. It names the run folder,
the checkpoint (path, size and SHA-256), the model, the videos (path, size, modification time),
the credible levels and whether an NWB file was asked for, and lists the files written with
their sizes. :func:`is_complete` is the skip rule of ``dgp-pyro predict``: an output is complete
when its manifest says the same run, checkpoint, videos and settings, and every file it lists is
there with the size it had.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dgp_pyro.atomic import atomic_write_json

__all__ = ["MANIFEST_FORMAT", "checkpoint_identity", "is_complete", "manifest_header", "manifest_path",
           "write_manifest"]  # fmt: skip

#: Version of the manifest's layout; a manifest of another version never counts as complete.
MANIFEST_FORMAT = 1
_CHUNK = 1 << 20


def checkpoint_identity(path: str | Path) -> dict[str, Any]:
    """``{"path", "size", "sha256"}`` of a checkpoint file (the hash is read in 1 MiB chunks)."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return {"path": str(path), "size": path.stat().st_size, "sha256": digest.hexdigest()}


def manifest_header(
    run_path: str | Path,
    model: str,
    checkpoint: dict[str, Any],
    videos: Sequence[str | Path],
    levels: Sequence[float],
    nwb: bool,
) -> dict[str, Any]:
    """Everything that decides a video's output: compared field by field by :func:`is_complete`."""
    return {
        "format": MANIFEST_FORMAT,
        "run": str(Path(run_path).resolve()),
        "model": model,
        "checkpoint": dict(checkpoint),
        "videos": [_file_identity(v) for v in videos],
        "levels": [float(level) for level in levels],
        "nwb": bool(nwb),
    }


def manifest_path(out_dir: str | Path, stem: str) -> Path:
    """``OUT/<stem>.manifest.json``."""
    return Path(out_dir) / f"{stem}.manifest.json"


def write_manifest(out_dir: str | Path, stem: str, header: dict[str, Any], paths: Sequence[Path]) -> Path:
    """Write the manifest of the files ``paths`` (call it after they are all written)."""
    path = manifest_path(out_dir, stem)
    files = [{"name": Path(p).name, "size": Path(p).stat().st_size} for p in paths]
    atomic_write_json(path, {**header, "files": files})
    return path


def is_complete(out_dir: str | Path, stem: str, header: dict[str, Any]) -> bool:
    """Whether ``OUT/<stem>`` holds a complete output made with ``header``'s run, checkpoint and videos."""
    path = manifest_path(out_dir, stem)
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(manifest, dict) or any(manifest.get(key) != value for key, value in header.items()):
        return False
    files = manifest.get("files")
    if not isinstance(files, list) or not files:
        return False
    for entry in files:
        try:
            if (Path(out_dir) / entry["name"]).stat().st_size != entry["size"]:
                return False
        except (OSError, KeyError, TypeError):
            return False
    return True


def _file_identity(path: str | Path) -> dict[str, Any]:
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
