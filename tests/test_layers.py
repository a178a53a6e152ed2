"""The package's layers import only downwards (CONTRIBUTING.md, "Layers").

Every ``import`` of ``dgp_pyro`` in every module, including imports written inside functions and
type-only ones, must name the module's own room or a room below it in :data:`LAYERS`. A new
sub-package must be given a place here before it can be imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import dgp_pyro

PACKAGE = Path(dgp_pyro.__file__).parent

#: Rooms from the bottom up; rooms on one row are side by side and may not import each other.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "atomic", "paths"),
    ("ops",),
    ("geometry",),
    ("data",),
    ("nets",),
    ("run",),
    ("model",),
    ("train",),
    ("posterior",),
    ("export",),
    ("viz",),
    ("eval",),
    ("scale",),
    ("cli",),
)
LEVEL = {room: level for level, rooms in enumerate(LAYERS) for room in rooms}


def room_of(module: str) -> str:
    """The room of a module: ``dgp_pyro.data.labels`` -> ``data``, ``dgp_pyro`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every import of the package in a file (relative ones resolved)."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                found.append((node.lineno, ".".join(base + ([node.module] if node.module else []))))
            elif node.module:
                found.append((node.lineno, node.module))
    return [(line, name) for line, name in found if name == "dgp_pyro" or name.startswith("dgp_pyro.")]


def upward_imports(root: Path = PACKAGE) -> list[str]:
    """Every import that goes up a layer or sideways, or names a room not in :data:`LAYERS`."""
    problems = []
    for path in sorted(root.rglob("*.py")):
        mine = room_of(module_name(path, root))
        for line, name in imported_modules(path, root):
            theirs = room_of(name)
            where = f"{path.relative_to(root.parent)}:{line} imports {name}"
            if mine not in LEVEL or theirs not in LEVEL:
                problems.append(f"{where}: room {mine if mine not in LEVEL else theirs!r} has no layer")
            elif theirs != mine and LEVEL[theirs] >= LEVEL[mine]:
                problems.append(f"{where}: {theirs} is not below {mine}")
    return problems


def test_every_import_goes_downwards():
    assert upward_imports() == []


def test_the_check_catches_an_upward_import(tmp_path):
    """The check itself: a data module importing the posterior, or a room with no layer, fails."""
    package = tmp_path / "dgp_pyro"
    (package / "data").mkdir(parents=True)
    (package / "posterior").mkdir()
    (package / "data" / "labels.py").write_text("from dgp_pyro.posterior.predict import x\n")
    (package / "posterior" / "predict.py").write_text(
        "def f():\n    from dgp_pyro.data.labels import y\n    from dgp_pyro.gadgets import z\n"
    )
    problems = upward_imports(package)
    assert len(problems) == 2
    assert "posterior is not below data" in problems[0]
    assert "'gadgets' has no layer" in problems[1]


@pytest.mark.parametrize("level", range(len(LAYERS)))
def test_every_room_exists(level):
    for room in LAYERS[level]:
        assert (PACKAGE / room).is_dir() or (PACKAGE / f"{room}.py").is_file(), room
