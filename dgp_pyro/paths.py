"""Where the real-data fixtures and the bundled synthetic project live."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: The bundled synthetic project used by the demo and the tutorials.
BUNDLED_PROJECT = REPO_ROOT / "data" / "synthetic-mouse"


def shared_data_dir() -> Path:
    """The real labeled fixtures: ``$DGP_PYRO_SHARED_DATA`` or ``../shared/data`` beside the repo."""
    return Path(os.environ.get("DGP_PYRO_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
