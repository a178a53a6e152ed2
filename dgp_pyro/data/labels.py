"""DeepLabCut label files: ``CollectedData_<scorer>.csv`` / ``.h5``.

A label file is a table with three column header rows (``scorer``, ``bodyparts``, ``coords``)
and one row per labeled image. ``coords`` alternates ``x`` and ``y`` for every body part; an
empty cell (NaN in the HDF file) means the keypoint was not labeled in that image.

Two index layouts exist in the wild and both are read:

- the classic one, where the first column holds the image path
  (``labeled-data/reachingvideo1/img005.png``);
- DeepLabCut >= 2.3, where the index is three columns (``labeled-data``, ``<video>``,
  ``<img.png>``) with empty header cells. The parts are joined with ``/``.

Files are always written in the classic layout, which every DeepLabCut version reads.

The low-level table readers here (``_read_table``, ``_write_table``) are shared with
:mod:`dgp_pyro.data.predictions`, which uses the same header with other ``coords``.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from jaxtyping import Float

from dgp_pyro.atomic import atomic_path
from dgp_pyro.errors import DGPError

#: The HDF5 key DeepLabCut reads and writes.
H5_KEY = "df_with_missing"
HEADER_NAMES = ("scorer", "bodyparts", "coords")
CSV_SUFFIXES = (".csv",)
H5_SUFFIXES = (".h5", ".hdf5", ".hdf")

__all__ = ["LabelTable", "read_labels", "write_labels", "H5_KEY"]


@dataclass
class LabelTable:
    """The contents of one DeepLabCut label file.

    Attributes:
        scorer: the scorer name of the header's first row.
        image_keys: the image paths as written in the file (a three-column index is joined
            with ``/``), one per row.
        keypoints: body part column names in file order.
        coords: ``(N, K, 2)`` float64 pixel coordinates, NaN where not labeled.
    """

    scorer: str
    image_keys: list[str]
    keypoints: list[str]
    coords: Float[np.ndarray, "n k 2"]

    def __post_init__(self) -> None:
        self.image_keys = [str(k) for k in self.image_keys]
        self.keypoints = [str(k) for k in self.keypoints]
        self.coords = np.asarray(self.coords, dtype=np.float64)
        expected = (len(self.image_keys), len(self.keypoints), 2)
        if self.coords.shape != expected:
            raise ValueError(f"coords has shape {self.coords.shape}, expected {expected} (N, K, 2)")


# --------------------------------------------------------------------------------------------
# Raw tables: header levels, index and a float matrix, shared by labels and predictions.


@dataclass
class _RawTable:
    """A DeepLabCut-style table before its columns are interpreted."""

    scorers: list[str]  # per value column
    bodyparts: list[str]  # per value column
    coords: list[str]  # per value column
    keys: list[str]  # row keys, multi-part indices joined with "/"
    int_index: np.ndarray | None  # the row index as integers, when every key is an integer
    values: np.ndarray  # (rows, columns) float64


def _file_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in H5_SUFFIXES:
        return "h5"
    raise DGPError(
        f"unsupported file type {path.suffix!r}", path, hint="use a .csv or .h5 file in the DeepLabCut layout"
    )


def _multi_animal_error(path: Path) -> DGPError:
    return DGPError(
        "multi-animal projects are not supported yet: the file has an 'individuals' header row",
        path,
        hint="export one animal's labels to a single-animal file",
    )


def _join_index(parts: tuple | list) -> str:
    # DeepLabCut >= 2.3 splits "labeled-data/<video>/<img>" over three index columns.
    return "/".join(str(p) for p in parts if p is not None and str(p) != "" and not _is_nan(p))


def _is_nan(value: object) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _int_index(keys: list[str]) -> np.ndarray | None:
    """The keys as integers if every one is written as an integer (a video frame index)."""
    if not keys:
        return None
    try:
        return np.array([int(k) for k in keys], dtype=np.int64)
    except ValueError:
        return None


def _parse_float(cell: str) -> float:
    cell = cell.strip()
    return math.nan if cell == "" else float(cell)


def _read_csv_table(path: Path) -> _RawTable:
    """Read a three-row-header CSV into a :class:`_RawTable` (cells parsed exactly with ``float``)."""
    try:
        handle = open(path, newline="", encoding="utf-8-sig")  # utf-8-sig: tolerate a BOM
    except OSError as exc:
        raise DGPError(f"cannot open the file ({exc.strerror or exc})", path) from exc
    with handle:
        reader = csv.reader(handle)
        try:
            header = _read_header(path, reader)
            n_cols = len(header[0])
            # Index columns: the first one, plus the empty header cells that follow it
            # (DeepLabCut >= 2.3 writes a three-column index with empty header cells).
            n_index = 1
            while n_index < n_cols and all(row[n_index] == "" for row in header):
                n_index += 1
            if n_index == n_cols:
                raise DGPError("the header names no keypoint columns", path)
            scorers, bodyparts, coords = (row[n_index:] for row in header)

            keys: list[str] = []
            rows: list[np.ndarray] = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue  # blank line
                line = reader.line_num
                if len(row) != n_cols:
                    raise DGPError(f"line {line} has {len(row)} cells, the header has {n_cols}", path)
                key = _join_index([cell.strip() for cell in row[:n_index]])
                cells = row[n_index:]
                try:
                    rows.append(np.array([_parse_float(c) for c in cells], dtype=np.float64))
                except ValueError:
                    i = next(i for i, c in enumerate(cells) if not _is_number(c))
                    raise DGPError(
                        f"non-numeric value {cells[i]!r} in row {key!r} (line {line}), "
                        f"column {bodyparts[i]}/{coords[i]}",
                        path,
                        hint="coordinates must be numbers; leave the cell empty for a missing label",
                    ) from None
                keys.append(key)
        except csv.Error as exc:
            raise DGPError(f"cannot be parsed as CSV (line {reader.line_num}: {exc})", path) from exc
        except UnicodeDecodeError as exc:
            raise DGPError(f"cannot be parsed as CSV: not UTF-8 text ({exc.reason})", path) from exc
    values = np.stack(rows) if rows else np.zeros((0, len(bodyparts)), dtype=np.float64)
    return _RawTable(scorers, bodyparts, coords, keys, _int_index(keys) if n_index == 1 else None, values)


def _is_number(cell: str) -> bool:
    try:
        _parse_float(cell)
    except ValueError:
        return False
    return True


def _read_header(path: Path, reader) -> list[list[str]]:
    """The three header rows, checked: first cells ``scorer``, ``bodyparts``, ``coords``."""
    header: list[list[str]] = []
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue  # blank line
        header.append([cell.strip() for cell in row])
        if len(header) == 3:
            break
    first = [row[0].lower() for row in header]
    # A multi-animal file has four header rows: scorer, individuals, bodyparts, coords.
    if "individuals" in first:
        raise _multi_animal_error(path)
    if tuple(first) != HEADER_NAMES:
        found = ", ".join(repr(row[0]) for row in header) if header else "an empty file"
        raise DGPError(
            "not a DeepLabCut table: expected three header rows named 'scorer', 'bodyparts', "
            f"'coords' in the first column, found {found}",
            path,
        )
    if len({len(row) for row in header}) != 1:
        raise DGPError(
            "the three header rows have different numbers of cells "
            f"({', '.join(str(len(row)) for row in header)})",
            path,
        )
    return header


def _read_h5_table(path: Path) -> _RawTable:
    """Read a pandas HDF5 table (key ``df_with_missing``, or the file's only key)."""
    if not path.is_file():
        raise DGPError("file not found", path)
    try:
        with pd.HDFStore(path, mode="r") as store:
            keys = store.keys()
            if f"/{H5_KEY}" in keys:
                key = H5_KEY
            elif len(keys) == 1:
                key = keys[0]
            else:
                found = ", ".join(keys) or "nothing"
                raise DGPError(f"no {H5_KEY!r} table in the HDF5 file (found {found})", path)
            frame = store.get(key)
    except DGPError:
        raise
    except Exception as exc:  # PyTables and pandas raise many types for a corrupt file
        raise DGPError(f"cannot be read as a pandas HDF5 file ({_short_reason(exc)})", path) from exc
    if not isinstance(frame, pd.DataFrame):
        raise DGPError(f"the HDF5 table is a {type(frame).__name__}, not a DataFrame", path)

    columns = frame.columns
    names = [None if n is None else str(n).lower() for n in columns.names]
    if "individuals" in names or columns.nlevels == 4:
        raise _multi_animal_error(path)
    if not isinstance(columns, pd.MultiIndex) or columns.nlevels != 3:
        raise DGPError(
            "not a DeepLabCut table: expected three column levels (scorer, bodyparts, coords), "
            f"found {columns.nlevels} ({', '.join(str(n) for n in columns.names)})",
            path,
        )
    scorers = [str(c[0]) for c in columns]
    bodyparts = [str(c[1]) for c in columns]
    coords = [str(c[2]) for c in columns]

    index = frame.index
    int_index = None
    if isinstance(index, pd.MultiIndex):
        keys = [_join_index(parts) for parts in index]
    else:
        keys = [str(k) for k in index]
        if pd.api.types.is_integer_dtype(index.dtype):
            int_index = np.asarray(index, dtype=np.int64)

    try:
        values = frame.to_numpy(dtype=np.float64)
    except (TypeError, ValueError):
        for j in range(frame.shape[1]):
            for i, cell in enumerate(frame.iloc[:, j]):
                try:
                    float(cell)
                except (TypeError, ValueError):
                    raise DGPError(
                        f"non-numeric value {cell!r} in row {keys[i]!r}, column {bodyparts[j]}/{coords[j]}",
                        path,
                        hint="coordinates must be numbers; NaN for a missing label",
                    ) from None
        raise  # pragma: no cover - the loops above always find the bad cell
    return _RawTable(scorers, bodyparts, coords, keys, int_index, values)


def _short_reason(exc: Exception) -> str:
    """One line out of an exception whose text may be a whole HDF5 back trace."""
    text = str(exc)
    if "file signature not found" in text:
        return "not an HDF5 file"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else 'unknown error'}"


def _read_table(path: str | Path) -> tuple[Path, _RawTable]:
    path = Path(path)
    kind = _file_kind(path)
    if kind == "csv" and not path.is_file():
        raise DGPError("file not found", path)
    return path, (_read_csv_table(path) if kind == "csv" else _read_h5_table(path))


def _single_scorer(path: Path, scorers: list[str]) -> str:
    distinct = list(dict.fromkeys(scorers))
    if len(distinct) > 1:
        raise DGPError(
            f"the table mixes several scorers ({', '.join(map(repr, distinct))})",
            path,
            hint="keep one scorer per file",
        )
    return distinct[0] if distinct else ""


def _group_columns(path: Path, raw: _RawTable) -> tuple[list[str], list[dict[str, int]]]:
    """Body parts in file order and, for each, its coord name -> column number.

    Raises on an empty body part name and on a (body part, coord) column given twice.
    """
    order: list[str] = []
    groups: dict[str, dict[str, int]] = {}
    for col, (part, coord) in enumerate(zip(raw.bodyparts, raw.coords, strict=True)):
        if part == "":
            raise DGPError(f"column {col + 2} has an empty body part name", path)
        group = groups.setdefault(part, {})
        if not group:
            order.append(part)
        if coord in group:
            raise DGPError(
                f"duplicate body part columns: {part!r} has more than one {coord!r} column",
                path,
                hint="every body part must appear once",
            )
        group[coord] = col
    return order, [groups[p] for p in order]


# --------------------------------------------------------------------------------------------
# Public API.


def read_labels(path: str | Path) -> LabelTable:
    """Read a DeepLabCut label file (``.csv`` or ``.h5``, chosen by suffix).

    Raises:
        DGPError: the file is missing, cannot be parsed, is not a three-row-header table, is a
            multi-animal file, has coords other than x/y pairs, repeats a body part or an
            image, or holds a non-numeric cell.
    """
    path, raw = _read_table(path)
    scorer = _single_scorer(path, raw.scorers)
    keypoints, groups = _group_columns(path, raw)
    for part, group in zip(keypoints, groups, strict=True):
        if set(group) != {"x", "y"}:
            other = sorted(set(group) - {"x", "y"})
            found = ", ".join(map(repr, other)) if other else f"only {', '.join(group)}"
            hint = (
                "this looks like a predictions file: read it with read_predictions"
                if "likelihood" in group
                else "each body part needs one x and one y column"
            )
            raise DGPError(f"coords must be x/y pairs: body part {part!r} has {found}", path, hint=hint)
    seen: dict[str, int] = {}
    for i, key in enumerate(raw.keys):
        if key in seen:
            raise DGPError(f"image {key!r} is listed twice (rows {seen[key] + 1} and {i + 1})", path)
        seen[key] = i
    ix = [g["x"] for g in groups]
    iy = [g["y"] for g in groups]
    coords = np.stack([raw.values[:, ix], raw.values[:, iy]], axis=-1)
    return LabelTable(scorer=scorer, image_keys=raw.keys, keypoints=keypoints, coords=coords)


def _frame(scorer: str, columns: list[tuple[str, str]], values: np.ndarray, index: pd.Index) -> pd.DataFrame:
    """A DataFrame with DeepLabCut's (scorer, bodyparts, coords) column levels."""
    levels = pd.MultiIndex.from_tuples(
        [(scorer, part, coord) for part, coord in columns], names=list(HEADER_NAMES)
    )
    return pd.DataFrame(np.asarray(values, dtype=np.float64), columns=levels, index=index)


def _write_table(path: str | Path, frame: pd.DataFrame) -> None:
    """Write ``frame`` as CSV (three header rows) or HDF5 (key ``df_with_missing``), atomically."""
    path = Path(path)
    kind = _file_kind(path)
    with atomic_path(path) as tmp:
        if kind == "csv":
            # pandas writes float64 with the shortest repr that round-trips, so a re-read is exact.
            frame.to_csv(tmp)
        else:
            # "table" is the format DeepLabCut itself writes; pandas writes nothing at all for
            # an empty frame in that format, so an empty table goes out as "fixed".
            fmt = "table" if len(frame) else "fixed"
            frame.to_hdf(tmp, key=H5_KEY, mode="w", format=fmt)


def write_labels(path: str | Path, table: LabelTable) -> None:
    """Write ``table`` as a DeepLabCut label file (``.csv`` or ``.h5`` by suffix), atomically.

    The classic layout is written: one index column holding the image key. Reading the file
    back gives the same table, float64 bits included.
    """
    path = Path(path)
    _file_kind(path)
    if len(set(table.keypoints)) != len(table.keypoints):
        raise ValueError(f"keypoint names repeat: {table.keypoints}")
    n, k, _ = table.coords.shape
    columns = [(part, coord) for part in table.keypoints for coord in ("x", "y")]
    index = pd.Index(list(table.image_keys), dtype=object)
    _write_table(path, _frame(table.scorer, columns, table.coords.reshape(n, 2 * k), index))
