"""Output paths checked before any work starts: a folder or file that cannot be written is refused.

A command that works for minutes and then fails to write its result wastes those minutes and
may leave half its outputs; :func:`check_output_folder` (``train``, ``predict``, ``demo``
``--out``) and :func:`check_output_file` (``calibrate --out``) refuse, up front, an output that
names a file where a folder is wanted (or the reverse), lies under a file, or sits in a folder
that cannot be written (read-only, a pseudo-filesystem such as ``/proc``). They create nothing:
the nearest existing folder is probed with a temporary file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dgp_pyro.errors import DGPError

__all__ = ["check_output_file", "check_output_folder"]


def _first_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_can_create_in(folder: Path, path: Path, option: str) -> None:
    """Raise unless a file can be created in the existing ``folder`` (tried, then removed)."""
    if not folder.is_dir():
        raise DGPError(f"{option} cannot be written: {folder} is a file, not a folder", path)
    try:
        fd, probe = tempfile.mkstemp(prefix=".dgp-pyro-probe.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        reason = error.strerror or type(error).__name__
        raise DGPError(
            f"{option} cannot be written ({reason} in {folder})",
            path,
            hint="choose a folder you can write to",
        ) from None


def check_output_folder(path: str | Path, option: str = "--out") -> Path:
    """Refuse, before any work, an output folder that is a file or cannot be created or written.

    Nothing is created: the folder's nearest existing ancestor is probed with a temporary file.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise DGPError(f"{option} is a file, not a folder", path, hint="choose a folder name")
    _check_can_create_in(_first_existing(path.absolute()), path, option)
    return path


def check_output_file(path: str | Path, option: str = "--out") -> Path:
    """Refuse, before any work, an output file that is a folder or whose folder cannot be written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise DGPError(f"{option} is a folder, not a file", path, hint="name the file to write")
    _check_can_create_in(_first_existing(path.absolute().parent), path, option)
    return path
