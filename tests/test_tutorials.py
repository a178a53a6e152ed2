"""The tutorial notebooks run end to end (tiny budgets), so they cannot rot.

Every ``tutorials/*.ipynb`` is executed top to bottom with nbclient in a fresh kernel of *this*
interpreter (``sys.executable -m ipykernel_launcher``, not whatever ``python3`` kernelspec is
installed on the machine), with the working directory set to ``tutorials/`` and the budget
knobs of the notebooks' first code cell set tiny through environment variables. A notebook
that needs the real-data fixtures in ``../shared/data`` is skipped when they are absent.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dgp_pyro.paths import BUNDLED_PROJECT, REPO_ROOT, shared_data_dir

TUTORIALS = REPO_ROOT / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
#: Notebooks that read the real-data fixtures (``shared_data_dir()``), skipped without them.
NEEDS_SHARED_DATA = {"04_your_own_project.ipynb"}
#: Seconds one cell may run before the notebook fails.
CELL_TIMEOUT = 300

#: The tiny budget every notebook reads from its first code cell.
TINY_BUDGET = {
    "DGP_PYRO_TUTORIAL_STEPS": "4",  # optimizer steps per model
    "DGP_PYRO_TUTORIAL_FRAMES": "24",  # video frames predicted
    "DGP_PYRO_TUTORIAL_SIZE": "64x64",  # training size
    "DGP_PYRO_TUTORIAL_WINDOWS": "4",  # unlabeled video windows in the pool
    "DGP_PYRO_TUTORIAL_WINDOW": "2",  # consecutive frames per window
    "DGP_PYRO_TUTORIAL_DRAWS": "20",  # ArviZ draws per chain
    "DGP_PYRO_TUTORIAL_SWEEP": "0.1,1",  # strengths tried in a sweep
    "DGP_PYRO_TUTORIAL_THREADS": "1",
}

_CHECK_INTERPRETER = "import sys\nprint(sys.executable)"


def test_the_tutorials_are_there():
    names = [path.name for path in NOTEBOOKS]
    assert len(NOTEBOOKS) >= 4, f"expected at least 4 tutorial notebooks in {TUTORIALS}, found {names}"


def test_the_tutorials_are_saved_without_outputs():
    """Outputs are never committed: they would go stale and bloat the history."""
    for path in NOTEBOOKS:
        notebook = json.loads(path.read_text())
        for index, cell in enumerate(notebook["cells"]):
            if cell["cell_type"] != "code":
                continue
            assert not cell.get("outputs"), f"{path.name} cell {index} was saved with outputs"
            assert cell.get("execution_count") is None, f"{path.name} cell {index} has an execution count"


def _listing(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.is_dir() else set()


def _this_interpreters_kernel_manager() -> type:
    """A kernel manager class that starts ``sys.executable -m ipykernel_launcher``, whatever is installed."""
    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.manager import AsyncKernelManager

    spec = KernelSpec(
        argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        display_name="Python 3 (this interpreter)",
        language="python",
        name="python3",
    )

    class ThisInterpreter(AsyncKernelManager):
        @property
        def kernel_spec(self) -> KernelSpec:
            return spec

    return ThisInterpreter


# Older jupyter_core releases announce their move to platformdirs with a DeprecationWarning when
# jupyter_client is imported (unless JUPYTER_PLATFORM_DIRS=1); the current one does not. It is a
# notice about the machinery that runs the notebooks, not about this project's code, so that one
# message alone is let through (warnings are errors otherwise, pyproject.toml).
@pytest.mark.filterwarnings("ignore:Jupyter is migrating its paths:DeprecationWarning")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[path.stem for path in NOTEBOOKS])
def test_tutorial_runs(path: Path, tmp_path: Path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    if path.name in NEEDS_SHARED_DATA and not shared_data_dir().exists():
        pytest.skip(f"real-data fixtures not found at {shared_data_dir()} (set DGP_PYRO_SHARED_DATA)")

    for name, value in TINY_BUDGET.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("DGP_PYRO_TUTORIAL_OUT", str(tmp_path / "out"))
    watched = (TUTORIALS, BUNDLED_PROJECT)
    before = {folder: _listing(folder) for folder in watched}

    notebook = nbformat.read(path, as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(_CHECK_INTERPRETER))
    client = nbclient.NotebookClient(
        notebook,
        kernel_name="python3",
        kernel_manager_class=_this_interpreters_kernel_manager(),
        timeout=CELL_TIMEOUT,
        resources={"metadata": {"path": str(TUTORIALS)}},
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on any failure

    printed = "".join(output.get("text", "") for output in notebook.cells[-1].outputs).strip()
    assert Path(printed).resolve() == Path(sys.executable).resolve(), "the kernel ran another Python"
    for folder in watched:
        # (A new notebook is someone writing a tutorial meanwhile, not an output of this one.)
        added = sorted(name for name in _listing(folder) - before[folder] if not name.endswith(".ipynb"))
        assert not added, f"the notebook wrote into {folder}: {added[:5]}"
