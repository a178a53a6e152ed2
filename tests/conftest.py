"""Shared fixtures: the real labeled data in ../shared/data and small synthetic projects."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dgp_pyro.paths import shared_data_dir


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.exists():
        pytest.skip(f"real-data fixtures not found at {path} (set DGP_PYRO_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def reaching_project(shared_data: Path) -> Path:
    return shared_data / "reaching-mackenzie"


@pytest.fixture(scope="session")
def mirror_project(shared_data: Path) -> Path:
    return shared_data / "mirror-mouse-example"
