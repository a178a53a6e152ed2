"""Write outputs under a temporary name and rename, so nothing half-written is ever left behind.

Use :func:`atomic_path` for any writer that takes a path (pandas, torch.save, matplotlib, PyAV):
the writer writes to a temporary file in the same folder, and only a writer that returned
normally gets its file renamed to the final name (``os.replace`` is atomic on POSIX and
Windows). An interrupted or failed write leaves the previous file, if any, untouched; a write
killed outright (``kill -9``) leaves its hidden temporary file, which :func:`remove_stale_temporaries`
removes on the next run.

The temporary file is created private (``mkstemp`` makes it ``0600``); before the rename it gets
the mode a plain ``open()`` would have given the file (``0666`` less the process's umask), or
the mode of the file it replaces, so colleagues sharing a lab's storage can read the outputs.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: The names :func:`atomic_path` gives its temporary files (``mkstemp``'s 8 random characters).
_TEMPORARY = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\.[^.]+)?$")


def _read_umask() -> int:
    # os.umask can only be read by setting it; done once, at import, before any writer thread
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


#: The mode a new output file gets, as ``open()`` would have made it.
_NEW_FILE_MODE = 0o666 & ~_read_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    The temporary name keeps the suffix of ``path`` so writers that pick a format from the
    suffix (``.h5``, ``.png``, ``.mp4``) still do the right thing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        mode = path.stat().st_mode & 0o7777 if path.exists() else _NEW_FILE_MODE
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def remove_stale_temporaries(folder: str | Path, recursive: bool = False) -> list[Path]:
    """Remove the temporary files a killed :func:`atomic_path` left in ``folder``; return them.

    Only names of the form :func:`atomic_path` makes (``.<stem>.<8 characters>.tmp<suffix>``)
    are removed. Call it where a run starts, before its own writers start.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(".*") if recursive else folder.glob(".*")
    removed = [p for p in found if p.is_file() and _TEMPORARY.match(p.name)]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed
