"""Projects: DeepLabCut and Lightning Pose folders, single and multi-view.

:func:`load_project` reads a project folder into a :class:`Project`: the labeled frames of
every view as one ``(N, V, J, 2)`` array, the skeleton, the videos, and the calibration and
ground-truth files if present. It only reads; nothing in the folder is modified.

Supported folders:

- **DeepLabCut**: ``config.yaml`` (``bodyparts``, ``skeleton``, ``video_sets``) and
  ``labeled-data/<folder>/CollectedData_<scorer>.csv`` (or ``.h5``). ``project_path`` is never
  used, and ``video_sets`` entries are only used when the file exists, since DeepLabCut ships
  example projects with placeholders there.
- **Lightning Pose**: ``CollectedData.csv`` at the root (``CollectedData_<view>.csv`` per view
  for a multi-view project), images under ``labeled-data/``, videos under ``videos/``. A
  ``config.yaml`` is optional (it can add ``bodyparts`` to check against and a ``skeleton``).

Views (``views`` argument, else ``multiview: {views: [...], layout: ...}`` in config.yaml, else
one view called ``"main"``) are stored in one of two layouts:

- ``suffix``: one image holds every view (a mirror), and keypoint columns end with
  ``_<view>`` (``nose_top``, ``nose_bot``). A view may lack some body parts.
- ``folders``: one label folder and one video per camera, whose names contain the view as a
  ``_``-separated token (``labeled-data/session0_cam0/``, ``videos/session0_cam0.mp4``). The
  session is the name with the view token removed, and frames are matched across views by
  session and image file name.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from jaxtyping import Bool, Float, Int

from dgp_pyro.data.labels import LabelTable, read_labels
from dgp_pyro.errors import DGPError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["NetworkSamples", "Project", "load_project", "VIDEO_SUFFIXES", "LAYOUTS"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")
LAYOUTS = ("single", "folders", "suffix")
SINGLE_VIEW = "main"


@dataclass
class NetworkSamples:
    """What a 2D heatmap network trains on: one image and its K keypoints per sample.

    Attributes:
        image_paths: M absolute image paths.
        image_keys: M keys as written in the label files.
        frame_index: ``(M,)`` int, the labeled frame n of each sample.
        view_index: ``(M,)`` int, the view v of each sample (0 in the suffix layout, where
            one image holds every view).
        labels: ``(M, K, 2)`` float64, NaN = missing, K = ``len(project.network_keypoints())``.
    """

    image_paths: list[Path]
    image_keys: list[str]
    frame_index: Int[np.ndarray, " m"]
    view_index: Int[np.ndarray, " m"]
    labels: Float[np.ndarray, "m k 2"]


@dataclass
class Project:
    """A loaded project. See :func:`load_project`.

    Attributes:
        root: the project folder (absolute).
        format: ``"deeplabcut"`` or ``"lightning-pose"``.
        bodyparts: the J body parts (view suffixes stripped): the 3D keypoints.
        skeleton: edges between body parts.
        views: the V view names (``["main"]`` for a single-view project).
        view_layout: ``"single"``, ``"folders"`` or ``"suffix"``.
        frame_keys: one key per labeled frame: ``"<session>/<image file name>"`` in the
            folders layout, the image key otherwise.
        image_paths: N x V absolute image paths (the same image V times in the suffix layout).
            In the folders layout an entry is ``None`` where a frame has no image in a view.
        image_keys: N x V image keys as in the label files (``None`` where ``image_paths`` is).
        labels: ``(N, V, J, 2)`` float64, NaN = not labeled or body part absent from the view.
        keypoint_in_view: ``(V, J)`` bool, whether view v has body part j at all.
        sessions: session name -> view -> video path. In the single and suffix layouts the
            session is the video's file stem and every view maps to that one video.
        label_files: the label files read.
        calibration: ``<root>/calibration.toml`` if present.
        ground_truth: ``<root>/ground_truth.npz`` if present (synthetic projects).
        config_path: ``<root>/config.yaml`` if present.
        extra_videos: videos found that belong to no session (folders layout: no view token
            in the name); listed by :meth:`videos` too.
    """

    root: Path
    format: str
    bodyparts: list[str]
    skeleton: list[tuple[str, str]]
    views: list[str]
    view_layout: str
    frame_keys: list[str]
    image_paths: list[list[Path | None]]
    image_keys: list[list[str | None]]
    labels: Float[np.ndarray, "n v j 2"]
    keypoint_in_view: Bool[np.ndarray, "v j"]
    sessions: dict[str, dict[str, Path]]
    label_files: list[Path]
    calibration: Path | None
    ground_truth: Path | None
    config_path: Path | None
    extra_videos: list[Path] = field(default_factory=list)

    # ----------------------------------------------------------------------------------------
    # The 2D network's view of the project.

    def _network_columns(self) -> list[tuple[int, int]]:
        """(view, body part) of each network output channel, in channel order."""
        if self.view_layout == "suffix":
            # View-major: all keypoints of the first view, then the second, ... For a file
            # written view by view (the mirror fixture) this is the file's column order.
            return [
                (v, j)
                for v in range(len(self.views))
                for j in range(len(self.bodyparts))
                if self.keypoint_in_view[v, j]
            ]
        return [(0, j) for j in range(len(self.bodyparts))]

    def network_keypoints(self) -> list[str]:
        """Output channels of the 2D network.

        The body parts in the single and folders layouts (one image per view); in the suffix
        layout, every ``<bodypart>_<view>`` column present, view by view.
        """
        if self.view_layout == "suffix":
            return [f"{self.bodyparts[j]}_{self.views[v]}" for v, j in self._network_columns()]
        return list(self.bodyparts)

    def network_skeleton(self) -> list[tuple[int, int]]:
        """Skeleton edges as indices into :meth:`network_keypoints` (per view in the suffix layout)."""
        index = {name: i for i, name in enumerate(self.bodyparts)}
        if self.view_layout != "suffix":
            return [(index[a], index[b]) for a, b in self.skeleton]
        channel = {vj: c for c, vj in enumerate(self._network_columns())}
        edges = []
        for v in range(len(self.views)):
            for a, b in self.skeleton:
                ia, ib = (v, index[a]), (v, index[b])
                if ia in channel and ib in channel:
                    edges.append((channel[ia], channel[ib]))
        return edges

    def network_samples(self) -> NetworkSamples:
        """Training samples for the 2D network.

        Single and suffix layouts: one sample per labeled frame. Folders layout: one sample
        per (frame, view) that has an image, frames first then views.
        """
        n_frames = len(self.frame_keys)
        if self.view_layout == "folders":
            pairs = [
                (n, v) for n in range(n_frames) for v in range(len(self.views)) if self.image_paths[n][v]
            ]
            frames = np.array([n for n, _ in pairs], dtype=np.int64)
            views = np.array([v for _, v in pairs], dtype=np.int64)
            labels = self.labels[frames, views] if pairs else np.zeros((0, len(self.bodyparts), 2))
            return NetworkSamples(
                image_paths=[self.image_paths[n][v] for n, v in pairs],
                image_keys=[self.image_keys[n][v] for n, v in pairs],
                frame_index=frames,
                view_index=views,
                labels=np.asarray(labels, dtype=np.float64),
            )
        columns = self._network_columns()
        vs = np.array([v for v, _ in columns], dtype=np.int64)
        js = np.array([j for _, j in columns], dtype=np.int64)
        return NetworkSamples(
            image_paths=[paths[0] for paths in self.image_paths],
            image_keys=[keys[0] for keys in self.image_keys],
            frame_index=np.arange(n_frames, dtype=np.int64),
            view_index=np.zeros(n_frames, dtype=np.int64),
            labels=self.labels[:, vs, js].astype(np.float64),
        )

    # ----------------------------------------------------------------------------------------
    # Videos and summary.

    def videos(self) -> list[Path]:
        """Every distinct video of the project, sessions first (sorted), then the others."""
        seen: dict[Path, None] = {}
        for session in sorted(self.sessions):
            for view in self.views:
                if view in self.sessions[session]:
                    seen.setdefault(self.sessions[session][view])
        for video in self.extra_videos:
            seen.setdefault(video)
        return list(seen)

    def camera_names(self) -> list[str] | None:
        """Camera names of the calibration file (``[cam_N] name = ...``), or None without one."""
        if self.calibration is None:
            return None
        return _camera_names(self.calibration)

    def summary(self) -> dict[str, Any]:
        """What was loaded, as a JSON-able dict (what ``dgp-pyro info`` prints).

        Keys: ``root``, ``format``, ``n_labeled_frames``, ``n_labeled_keypoints`` (finite
        labels), ``keypoints`` (the body parts), ``network_keypoints``, ``skeleton``,
        ``views``, ``view_layout``, ``videos`` (``[{path, view, session}]``; ``view`` is None
        for a video holding every view, the suffix layout), ``label_files``,
        ``calibration`` (path or None), ``cameras`` (camera names or None), ``ground_truth``.
        """
        videos = []
        for video in self.videos():
            session, view = None, None
            for name, by_view in self.sessions.items():
                hits = [v for v, p in by_view.items() if p == video]
                if hits:
                    session = name
                    view = hits[0] if len(hits) == 1 else None
                    break
            videos.append({"path": str(video), "view": view, "session": session})
        return {
            "root": str(self.root),
            "format": self.format,
            "n_labeled_frames": len(self.frame_keys),
            "n_labeled_keypoints": int(np.isfinite(self.labels[..., 0]).sum()),
            "keypoints": list(self.bodyparts),
            "network_keypoints": self.network_keypoints(),
            "skeleton": [[a, b] for a, b in self.skeleton],
            "views": list(self.views),
            "view_layout": self.view_layout,
            "videos": videos,
            "label_files": [str(p) for p in self.label_files],
            "calibration": None if self.calibration is None else str(self.calibration),
            "cameras": self.camera_names(),
            "ground_truth": None if self.ground_truth is None else str(self.ground_truth),
        }


# --------------------------------------------------------------------------------------------
# Helpers: config, files, views.


def _camera_names(path: Path) -> list[str]:
    """Camera names of an Anipose calibration TOML, in ``cam_N`` order."""
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise DGPError(f"not valid TOML ({exc})", path) from exc
    except OSError as exc:
        raise DGPError(f"cannot read the calibration ({exc.strerror or exc})", path) from exc
    cams = []
    for key, value in data.items():
        match = re.fullmatch(r"cam_(\d+)", key)
        if match and isinstance(value, dict):
            cams.append((int(match.group(1)), str(value.get("name", key))))
    return [name for _, name in sorted(cams)]


def _read_config(path: Path) -> dict[str, Any]:
    """Parse ``config.yaml``; a YAML error is reported with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DGPError(f"cannot read config.yaml ({exc})", path) from exc
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DGPError(f"config.yaml is not valid YAML{where}: {problem}", path) from exc
    if config is None:
        raise DGPError("config.yaml is empty", path)
    if not isinstance(config, dict):
        raise DGPError(f"config.yaml must be a mapping of settings, found a {type(config).__name__}", path)
    if config.get("multianimalproject") is True:
        raise DGPError("multi-animal projects are not supported yet (multianimalproject: true)", path)
    return config


def _config_bodyparts(config: dict[str, Any], path: Path, required: bool) -> list[str] | None:
    parts = config.get("bodyparts")
    if parts is None:
        if required:
            raise DGPError("config.yaml has no 'bodyparts' list", path, hint="list the body parts")
        return None
    if parts == "MULTI!":  # what multi-animal DeepLabCut writes here
        raise DGPError("multi-animal projects are not supported yet (bodyparts: MULTI!)", path)
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str | int) for p in parts):
        raise DGPError("'bodyparts' in config.yaml must be a non-empty list of names", path)
    parts = [str(p) for p in parts]
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    if repeated:
        raise DGPError(f"'bodyparts' in config.yaml repeats {', '.join(repeated)}", path)
    return parts


def _config_skeleton(config: dict[str, Any], path: Path | None) -> list[tuple[str, str]]:
    edges = config.get("skeleton")
    if edges is None:
        return []
    if not isinstance(edges, list):
        raise DGPError("'skeleton' in config.yaml must be a list of [part, part] pairs", path)
    out = []
    for edge in edges:
        if not (isinstance(edge, list | tuple) and len(edge) == 2 and all(isinstance(p, str) for p in edge)):
            raise DGPError(f"skeleton entry {edge!r} in config.yaml is not a pair of body part names", path)
        out.append((edge[0], edge[1]))
    return out


def _config_multiview(config: dict[str, Any], path: Path | None) -> tuple[list[str] | None, str | None]:
    section = config.get("multiview")
    if section is None:
        return None, None
    if not isinstance(section, dict):
        raise DGPError("'multiview' in config.yaml must be a mapping with 'views' (and 'layout')", path)
    views = section.get("views")
    layout = section.get("layout")
    if views is not None and (not isinstance(views, list) or not all(isinstance(v, str) for v in views)):
        raise DGPError("'multiview.views' in config.yaml must be a list of view names", path)
    if layout is not None and layout not in LAYOUTS:
        raise DGPError(
            f"'multiview.layout' in config.yaml must be one of {', '.join(LAYOUTS)}, found {layout!r}", path
        )
    return views, layout


def _check_views(views: list[str], where: Path | None) -> list[str]:
    views = [str(v) for v in views]
    if not views:
        raise DGPError("the list of views is empty", where)
    bad = [v for v in views if not v or "/" in v or "\\" in v]
    if bad:
        raise DGPError(f"invalid view name(s) {bad}", where)
    repeated = sorted({v for v in views if views.count(v) > 1})
    if repeated:
        raise DGPError(f"view(s) {', '.join(repeated)} given twice", where)
    return views


def _tokens(name: str) -> list[str]:
    return name.split("_")


def _find_token(name: str, view: str) -> int | None:
    """Where the view's tokens sit among the ``_``-separated tokens of ``name``."""
    tokens, sub = _tokens(name), _tokens(view)
    for i in range(len(tokens) - len(sub) + 1):
        if tokens[i : i + len(sub)] == sub:
            return i
    return None


def _views_in_name(name: str, views: list[str]) -> list[str]:
    return [v for v in views if _find_token(name, v) is not None]


def _strip_view(name: str, view: str) -> str:
    """``name`` with the view token removed: the session (``session0_cam0`` -> ``session0``)."""
    i = _find_token(name, view)
    if i is None:
        return name
    tokens = _tokens(name)
    return "_".join(tokens[:i] + tokens[i + len(_tokens(view)) :])


def _video_files(root: Path, config: dict[str, Any]) -> list[Path]:
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


def _dlc_label_files(root: Path) -> list[Path]:
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
class _Source:
    """One label file as read, with its resolved image paths."""

    path: Path
    table: LabelTable
    images: list[Path]
    view: str | None = None  # the file's view when known from its name (folders layout)
    label_folder: str | None = None  # DeepLabCut: the labeled-data/<folder> holding the file


def _read_source(root: Path, path: Path, view: str | None = None, label_folder: str | None = None) -> _Source:
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
    return _Source(path=path, table=table, images=images, view=view, label_folder=label_folder)


def _ordered_union(lists: list[list[str]]) -> list[str]:
    return list(dict.fromkeys(name for names in lists for name in names))


def _check_against_config(
    columns: list[str], sources: list[_Source], config_parts: list[str] | None, config_path: Path | None
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


def _suffix_view(column: str, views: list[str]) -> str | None:
    hits = [v for v in views if column.endswith(f"_{v}") and len(column) > len(v) + 1]
    return max(hits, key=len) if hits else None


def _label_folder_names(sources: list[_Source]) -> list[str]:
    """Folder names the label rows' images sit in (the candidates for view tokens)."""
    names = []
    for source in sources:
        if source.label_folder is not None:
            names.append(source.label_folder)
        names.extend(Path(key.replace("\\", "/")).parent.name for key in source.table.image_keys)
    return list(dict.fromkeys(n for n in names if n))


def _pick_layout(
    views: list[str], layout: str | None, sources: list[_Source], columns: list[str], root: Path
) -> str:
    """The layout the views fit: keypoint suffixes (``nose_top``) or label folder names."""
    suffix_fit = {v: any(_suffix_view(c, [v]) for c in columns) for v in views}
    folder_names = _label_folder_names(sources)
    folder_fit = {
        v: any(s.view == v for s in sources) or any(_find_token(n, v) is not None for n in folder_names)
        for v in views
    }
    if layout in (None, "suffix") and all(suffix_fit.values()):
        return "suffix"
    if layout in (None, "folders") and all(folder_fit.values()):
        return "folders"
    found_columns = f"keypoint columns: {', '.join(columns)}"
    found_folders = f"label folders: {', '.join(folder_names) or 'none'}"
    if layout == "suffix":
        unmatched = [v for v in views if not suffix_fit[v]]
        problem = (
            f"no keypoint column ends with '_<view>' for view(s) {', '.join(unmatched)}; "
            f"found {found_columns}"
        )
    elif layout == "folders":
        unmatched = [v for v in views if not folder_fit[v]]
        problem = (
            f"no label folder name contains view(s) {', '.join(unmatched)} as a '_'-separated part; "
            f"found {found_folders}"
        )
    else:
        unmatched = [v for v in views if not (suffix_fit[v] or folder_fit[v])] or list(views)
        problem = (
            f"view(s) {', '.join(unmatched)} match no keypoint suffix '_<view>' and no label folder "
            f"name part (views must all fit one layout); found {found_columns}; {found_folders}"
        )
    raise DGPError(problem, root, hint="check the view names (--views) and the layout (--view-layout)")


# --------------------------------------------------------------------------------------------
# Layout builders.


def _empty_labels(n: int, v: int, j: int) -> np.ndarray:
    return np.full((n, v, j, 2), np.nan, dtype=np.float64)


def _collect_rows(sources: list[_Source]) -> list[tuple[_Source, int]]:
    """Every row once; the same image labeled in two files is an error."""
    rows: list[tuple[_Source, int]] = []
    seen: dict[str, Path] = {}
    for source in sources:
        for i, key in enumerate(source.table.image_keys):
            image = str(source.images[i])
            if image in seen:
                raise DGPError(
                    f"image {key!r} is labeled in two files ({seen[image]} and {source.path})",
                    source.path,
                    hint="keep one label file per image folder",
                )
            seen[image] = source.path
            rows.append((source, i))
    return rows


def _build_single(sources: list[_Source], bodyparts: list[str]) -> dict[str, Any]:
    rows = _collect_rows(sources)
    index = {name: j for j, name in enumerate(bodyparts)}
    labels = _empty_labels(len(rows), 1, len(bodyparts))
    for n, (source, i) in enumerate(rows):
        cols = [index[k] for k in source.table.keypoints]
        labels[n, 0, cols] = source.table.coords[i]
    keys = [source.table.image_keys[i] for source, i in rows]
    return dict(
        frame_keys=keys,
        image_paths=[[source.images[i]] for source, i in rows],
        image_keys=[[key] for key in keys],
        labels=labels,
        keypoint_in_view=np.ones((1, len(bodyparts)), dtype=bool),
    )


def _build_suffix(
    sources: list[_Source], columns: list[str], views: list[str], root: Path
) -> tuple[list[str], dict[str, str], dict[str, Any]]:
    owner = {c: _suffix_view(c, views) for c in columns}
    orphans = [c for c, v in owner.items() if v is None]
    if orphans:
        raise DGPError(
            f"keypoint column(s) {', '.join(orphans)} end with none of the view suffixes "
            f"{', '.join('_' + v for v in views)}",
            root,
            hint="in the suffix layout every column is named <bodypart>_<view>",
        )
    base = {c: c[: -len(owner[c]) - 1] for c in columns}
    bodyparts = _ordered_union([[base[c] for c in columns]])
    j_of = {name: j for j, name in enumerate(bodyparts)}
    v_of = {name: v for v, name in enumerate(views)}
    present = np.zeros((len(views), len(bodyparts)), dtype=bool)
    for c in columns:
        present[v_of[owner[c]], j_of[base[c]]] = True
    rows = _collect_rows(sources)
    labels = _empty_labels(len(rows), len(views), len(bodyparts))
    for n, (source, i) in enumerate(rows):
        for k, c in enumerate(source.table.keypoints):
            labels[n, v_of[owner[c]], j_of[base[c]]] = source.table.coords[i, k]
    keys = [source.table.image_keys[i] for source, i in rows]
    return (
        bodyparts,
        base,
        dict(
            frame_keys=keys,
            image_paths=[[source.images[i]] * len(views) for source, i in rows],
            image_keys=[[key] * len(views) for key in keys],
            labels=labels,
            keypoint_in_view=present,
        ),
    )


def _row_view_session(source: _Source, key: str, views: list[str]) -> tuple[str, str]:
    folder = Path(key.replace("\\", "/")).parent.name
    if source.view is not None:
        return source.view, _strip_view(folder, source.view)
    hits = _views_in_name(folder, views)
    if len(hits) == 1:
        return hits[0], _strip_view(folder, hits[0])
    found = f"several views ({', '.join(hits)})" if hits else f"none of the views {', '.join(views)}"
    raise DGPError(
        f"image folder {folder!r} of row {key!r} names {found}",
        source.path,
        hint="in the folders layout each image folder name contains its view, e.g. session0_cam0",
    )


def _build_folders(sources: list[_Source], bodyparts: list[str], views: list[str]) -> dict[str, Any]:
    # A DeepLabCut label folder names its view (labeled-data/session0_cam0/CollectedData_x.csv).
    for source in sources:
        if source.view is None and source.label_folder is not None:
            hits = _views_in_name(source.label_folder, views)
            if len(hits) != 1:
                found = (
                    f"several views ({', '.join(hits)})" if hits else f"none of the views {', '.join(views)}"
                )
                raise DGPError(
                    f"label folder {source.label_folder!r} names {found}",
                    source.path,
                    hint="in the folders layout each label folder name contains its view, e.g. session0_cam0",
                )
            source.view = hits[0]
    v_of = {name: v for v, name in enumerate(views)}
    j_of = {name: j for j, name in enumerate(bodyparts)}
    present = np.zeros((len(views), len(bodyparts)), dtype=bool)
    frames: dict[tuple[str, str], int] = {}
    cells: dict[tuple[int, int], tuple[_Source, int]] = {}
    folders: dict[tuple[str, int], tuple[Path, str]] = {}  # (session, view) -> image folder, key prefix
    for source in sources:
        for i, key in enumerate(source.table.image_keys):
            view, session = _row_view_session(source, key, views)
            v = v_of[view]
            for name in source.table.keypoints:
                present[v, j_of[name]] = True
            name = source.images[i].name
            n = frames.setdefault((session, name), len(frames))
            if (n, v) in cells:
                other, k = cells[(n, v)]
                raise DGPError(
                    f"frame {name!r} of session {session!r} has two rows in view {view!r}: "
                    f"{other.table.image_keys[k]!r} and {key!r}",
                    source.path,
                )
            cells[(n, v)] = (source, i)
            prefix = key.replace("\\", "/").rsplit("/", 1)[0] if "/" in key.replace("\\", "/") else ""
            folders.setdefault((session, v), (source.images[i].parent, prefix))
    n_frames = len(frames)
    labels = _empty_labels(n_frames, len(views), len(bodyparts))
    image_paths: list[list[Path | None]] = [[None] * len(views) for _ in range(n_frames)]
    image_keys: list[list[str | None]] = [[None] * len(views) for _ in range(n_frames)]
    for (n, v), (source, i) in cells.items():
        cols = [j_of[k] for k in source.table.keypoints]
        labels[n, v, cols] = source.table.coords[i]
        image_paths[n][v] = source.images[i]
        image_keys[n][v] = source.table.image_keys[i]
    # A frame labeled in one view but not in another: use the other view's image when it is
    # there (its keypoints stay NaN), so the network still sees it.
    for (session, name), n in frames.items():
        for v in range(len(views)):
            if image_paths[n][v] is None and (session, v) in folders:
                folder, prefix = folders[(session, v)]
                if (folder / name).is_file():
                    image_paths[n][v] = folder / name
                    image_keys[n][v] = f"{prefix}/{name}" if prefix else name
    frame_keys = [f"{session}/{name}" if session else name for session, name in frames]
    return dict(
        frame_keys=frame_keys,
        image_paths=image_paths,
        image_keys=image_keys,
        labels=labels,
        keypoint_in_view=present,
    )


def _project_skeleton(
    edges: list[tuple[str, str]], bodyparts: list[str], base: dict[str, str], path: Path | None
) -> list[tuple[str, str]]:
    """Config edges over body parts; column names (``nose_top``) map to their base name."""
    out: list[tuple[str, str]] = []
    for a, b in edges:
        if a == b:
            raise DGPError(
                f"skeleton edge [{a}, {b}] in config.yaml joins a body part to itself",
                path,
                hint="a bone joins two different body parts: remove this edge",
            )
        ends = []
        for name in (a, b):
            if name in bodyparts:
                ends.append(name)
            elif name in base:
                ends.append(base[name])
            else:
                raise DGPError(
                    f"skeleton edge [{a}, {b}] in config.yaml names {name!r}, which is not a body part",
                    path,
                    hint=f"body parts: {', '.join(bodyparts)}",
                )
        ea, eb = ends
        # In the suffix layout an edge written per view appears once per view; an edge
        # between a keypoint and itself seen in another view is no skeleton edge.
        if ea != eb and (ea, eb) not in out and (eb, ea) not in out:
            out.append((ea, eb))
    return out


def _sessions(
    videos: list[Path], views: list[str], layout: str
) -> tuple[dict[str, dict[str, Path]], list[Path]]:
    sessions: dict[str, dict[str, Path]] = {}
    extra: list[Path] = []
    for video in videos:
        if layout == "folders":
            hits = _views_in_name(video.stem, views)
            if len(hits) != 1:
                extra.append(video)
                continue
            view_map = sessions.setdefault(_strip_view(video.stem, hits[0]), {})
            if hits[0] in view_map:
                extra.append(video)
            else:
                view_map[hits[0]] = video
        else:
            name = video.stem if video.stem not in sessions else video.name
            sessions[name] = {view: video for view in views}
    return sessions, extra


# --------------------------------------------------------------------------------------------
# Entry point.


def load_project(path: str | Path, views: list[str] | None = None, view_layout: str | None = None) -> Project:
    """Load a DeepLabCut or Lightning Pose project.

    Args:
        path: the project folder (or its ``config.yaml``).
        views: view names of a multi-view project; default: ``multiview.views`` of
            config.yaml, else a single view.
        view_layout: ``"single"``, ``"folders"`` or ``"suffix"``; default: ``multiview.layout``
            of config.yaml, else detected from the views (keypoint suffixes first, then
            label folder names).

    Raises:
        DGPError: with the file and the problem, for a missing or empty folder, a missing or
            malformed config.yaml, label files that disagree with config.yaml, a label row
            whose image is missing, an infinite coordinate, a multi-animal file, views that
            match nothing, or a project with no labeled rows.
    """
    root = Path(path).expanduser()
    if root.is_file() and root.suffix.lower() in (".yaml", ".yml"):
        root = root.parent
    if not root.exists():
        raise DGPError("project folder not found", root)
    if not root.is_dir():
        raise DGPError(
            "not a folder",
            root,
            hint="pass the project folder, the one holding config.yaml or CollectedData.csv",
        )
    root = root.absolute()

    config_path = root / "config.yaml" if (root / "config.yaml").is_file() else None
    config = _read_config(config_path) if config_path else {}
    cfg_views, cfg_layout = _config_multiview(config, config_path)
    if isinstance(views, str):  # views="top" means one view, not three one-letter ones
        views = [views]
    if views is not None:
        views = _check_views(list(views), root)
    elif cfg_views is not None:
        views = _check_views(cfg_views, config_path)
    if view_layout is None:
        view_layout = cfg_layout
    if view_layout is not None and view_layout not in LAYOUTS:
        raise DGPError(f"unknown view layout {view_layout!r}", root, hint=f"use one of {', '.join(LAYOUTS)}")

    # Which kind of project, and its label files.
    dlc_files = _dlc_label_files(root)
    lp_files = sorted(root.glob("CollectedData*.csv"))
    per_view: dict[str, Path] = {}
    if dlc_files and ((config_path is not None and "bodyparts" in config) or not lp_files):
        if config_path is None:
            raise DGPError(
                "config.yaml is missing",
                root / "config.yaml",
                hint="a DeepLabCut project needs its config.yaml",
            )
        fmt = "deeplabcut"
        label_files = dlc_files
    elif lp_files:
        fmt = "lightning-pose"
        if (
            views
            and view_layout in (None, "folders")
            and all((root / f"CollectedData_{v}.csv").is_file() for v in views)
        ):
            per_view = {v: root / f"CollectedData_{v}.csv" for v in views}
            label_files = list(per_view.values())
        elif (root / "CollectedData.csv").is_file():
            label_files = [root / "CollectedData.csv"]
        elif len(lp_files) == 1:
            label_files = lp_files
        else:
            names = ", ".join(p.name for p in lp_files)
            raise DGPError(
                f"several label files ({names}) and no CollectedData.csv",
                root,
                hint="for a multi-view project name the views (CollectedData_<view>.csv) with --views",
            )
    elif config_path is not None:
        raise DGPError(
            "no label files found",
            root / "labeled-data",
            hint="expected labeled-data/<video>/CollectedData_<scorer>.csv or .h5",
        )
    else:
        empty = not any(root.iterdir())
        raise DGPError(
            "the project folder is empty" if empty else "not a DeepLabCut or Lightning Pose project",
            root,
            hint="expected config.yaml with labeled-data/, or CollectedData.csv",
        )

    view_of = {p: v for v, p in per_view.items()}
    sources = [
        _read_source(root, p, view_of.get(p), p.parent.name if fmt == "deeplabcut" else None)
        for p in label_files
    ]
    if sum(len(s.table.image_keys) for s in sources) == 0:
        raise DGPError(
            "the project has no labeled rows",
            label_files[0] if len(label_files) == 1 else root,
            hint="label some frames first",
        )
    columns = _ordered_union([s.table.keypoints for s in sources])
    config_parts = (
        _config_bodyparts(config, config_path, required=fmt == "deeplabcut") if config_path else None
    )
    columns = _check_against_config(columns, sources, config_parts, config_path)

    # Views and layout.
    if views is None:
        if view_layout in ("suffix", "folders"):
            raise DGPError(f"the {view_layout} layout needs the view names", root, hint="pass --views")
        views, layout = [SINGLE_VIEW], "single"
    elif per_view:
        layout = "folders"
    elif view_layout == "single":
        if len(views) != 1:
            raise DGPError(f"the single layout has one view, {len(views)} given ({', '.join(views)})", root)
        layout = "single"
    else:
        layout = _pick_layout(views, view_layout, sources, columns, root)

    base = {c: c for c in columns}
    if layout == "single":
        bodyparts = columns
        built = _build_single(sources, bodyparts)
    elif layout == "suffix":
        bodyparts, base, built = _build_suffix(sources, columns, views, root)
    else:
        bodyparts = columns
        built = _build_folders(sources, bodyparts, views)

    skeleton = _project_skeleton(_config_skeleton(config, config_path), bodyparts, base, config_path)
    sessions, extra = _sessions(_video_files(root, config), views, layout)
    calibration = root / "calibration.toml"
    ground_truth = root / "ground_truth.npz"
    return Project(
        root=root,
        format=fmt,
        bodyparts=bodyparts,
        skeleton=skeleton,
        views=views,
        view_layout=layout,
        sessions=sessions,
        label_files=label_files,
        calibration=calibration if calibration.is_file() else None,
        ground_truth=ground_truth if ground_truth.is_file() else None,
        config_path=config_path,
        extra_videos=extra,
        **built,
    )
