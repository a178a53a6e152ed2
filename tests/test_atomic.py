"""Atomic outputs: a failed write leaves the old file, and a finished one has the mode a plain
open() would have given it (mkstemp's private 0600 would hide a lab's outputs from colleagues)."""

from __future__ import annotations

import os

import pytest

from dgp_pyro.atomic import atomic_path, atomic_write_text


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_a_new_output_gets_the_mode_open_would_give_it(tmp_path):
    atomic_write_text(tmp_path / "new.json", "{}")
    (tmp_path / "plain.json").write_text("{}")
    expected = 0o666 & ~_umask()
    assert (tmp_path / "new.json").stat().st_mode & 0o777 == expected
    assert (tmp_path / "plain.json").stat().st_mode & 0o777 == expected


def test_a_replaced_output_keeps_its_mode_and_a_failed_write_keeps_the_file(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("old")
    os.chmod(path, 0o640)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o640
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert path.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv"]
