"""View layouts of a multi-view project: which one the views fit, and the labels arranged by view.

- ``single``: one view (called ``"main"``).
- ``suffix``: one image holds every view (a mirror); keypoint columns end with ``_<view>``.
- ``folders``: one label folder and one video per camera, whose names contain the view as a
  ``_``- or ``-``-separated token (``session0_cam0``, ``session0-cam0``); the session is the
  name without it. With a ``cam_regex`` (Anipose's option: a regular expression whose first
  group is the camera, Anipose's default :data:`ANIPOSE_CAM_REGEX`), the view of a name is that
  group and the session the name without the match; :func:`detect_views` finds the views of a
  project from its names.

:func:`pick_layout` detects the layout; :func:`build_single`, :func:`build_suffix` and
:func:`build_folders` turn the label sources into the ``(N, V, J, 2)`` labels and per-view
images of a :class:`~dgp_pyro.data.project.Project`; :func:`sessions_of_videos` groups videos.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any

import numpy as np

from dgp_pyro.data.label_sources import LabelSource, ordered_union
from dgp_pyro.errors import DGPError

__all__ = [
    "ANIPOSE_CAM_REGEX",
    "LAYOUTS",
    "check_cam_regex",
    "detect_views",
    "label_folder_names",
    "SINGLE_VIEW",
    "build_folders",
    "build_single",
    "build_suffix",
    "pick_layout",
    "sessions_of_videos",
    "suggest_suffix_views",
]

LAYOUTS = ("single", "folders", "suffix")
SINGLE_VIEW = "main"


#: Anipose's default ``cam_regex`` (digits allowed too): ``session0-camA`` is camera ``A``.
ANIPOSE_CAM_REGEX = r"-cam([A-Z0-9]+)$"
_SEPARATORS = re.compile(r"([_-])")


def check_cam_regex(cam_regex: str, where: Path | None) -> str:
    """``cam_regex`` if it compiles and has a group (the camera), else :class:`DGPError`."""
    try:
        compiled = re.compile(cam_regex)
    except (re.error, TypeError) as error:
        raise DGPError(f"cam_regex {cam_regex!r} is not a regular expression ({error})", where) from None
    if compiled.groups < 1:
        raise DGPError(
            f"cam_regex {cam_regex!r} has no group for the camera name",
            where,
            hint="put the camera part in parentheses, e.g. -cam([A-Z0-9]+)$",
        )
    return cam_regex


def _camera(name: str, cam_regex: str) -> re.Match[str] | None:
    match = re.search(cam_regex, name)
    return match if match is not None and match.group(1) else None


def detect_views(names: list[str], cam_regex: str) -> list[str]:
    """The cameras ``cam_regex`` finds in ``names`` (sorted); names it does not match are ignored."""
    return sorted({m.group(1) for m in (_camera(n, cam_regex) for n in names) if m is not None})


def _tokens(name: str) -> list[str]:
    """``name`` split at ``_`` and ``-``, separators kept at the odd places."""
    return _SEPARATORS.split(name)


def _find_token(name: str, view: str, cam_regex: str | None = None) -> int | None:
    """Where the view sits in ``name``: among its ``_``/``-``-separated tokens, or per ``cam_regex``."""
    if cam_regex is not None:
        match = _camera(name, cam_regex)
        return match.start() if match is not None and match.group(1) == view else None
    tokens, sub = _tokens(name)[::2], _tokens(view)[::2]
    for i in range(len(tokens) - len(sub) + 1):
        if tokens[i : i + len(sub)] == sub:
            return i
    return None


def _views_in_name(name: str, views: list[str], cam_regex: str | None = None) -> list[str]:
    return [v for v in views if _find_token(name, v, cam_regex) is not None]


def _strip_view(name: str, view: str, cam_regex: str | None = None) -> str:
    """``name`` without its view: the session (``session0_cam0`` and ``session0-cam0`` -> ``session0``)."""
    i = _find_token(name, view, cam_regex)
    if i is None:
        return name
    if cam_regex is not None:
        match = _camera(name, cam_regex)
        return name[: match.start()] + name[match.end() :]
    parts = _tokens(name)  # token k sits at 2k, the separator after it at 2k + 1
    n = len(_tokens(view)[::2])
    start, stop = 2 * i, 2 * (i + n) - 1  # the view's tokens and the separators between them
    if start > 0:
        start -= 1  # drop the separator before the view
    elif stop < len(parts):
        stop += 1  # a view at the start: drop the separator after it
    return "".join(parts[:start] + parts[stop:])


def _suffix_view(column: str, views: list[str]) -> str | None:
    hits = [v for v in views if column.endswith(f"_{v}") and len(column) > len(v) + 1]
    return max(hits, key=len) if hits else None


def suggest_suffix_views(columns: list[str]) -> list[str]:
    """The views a single-view project's keypoint names suggest (a mirror rig), else ``[]``.

    Every name must end in ``_<token>``, at least two tokens each ending three names or more
    (``left_paw``, ``right_paw``: sides of a part, not views), and some body part must appear
    under two of them (``paw_top`` and ``paw_bot``): then the tokens, in order of first
    appearance, are likely views of one image (``--views top bot``).
    """
    split = [column.rsplit("_", 1) for column in columns]
    if len(columns) < 4 or any(len(parts) != 2 or not all(parts) for parts in split):
        return []
    parts_by_token: dict[str, set[str]] = {}  # in order of first appearance
    for base, token in split:
        parts_by_token.setdefault(token, set()).add(base)
    tokens = list(parts_by_token)
    if len(tokens) < 2 or any(len(parts) < 3 for parts in parts_by_token.values()):
        return []
    repeated = any(parts_by_token[a] & parts_by_token[b] for a, b in itertools.combinations(tokens, 2))
    return tokens if repeated else []


def label_folder_names(sources: list[LabelSource]) -> list[str]:
    """Folder names the label rows' images sit in (the candidates for view tokens)."""
    names = []
    for source in sources:
        if source.label_folder is not None:
            names.append(source.label_folder)
        names.extend(Path(key.replace("\\", "/")).parent.name for key in source.table.image_keys)
    return list(dict.fromkeys(n for n in names if n))


def pick_layout(
    views: list[str],
    layout: str | None,
    sources: list[LabelSource],
    columns: list[str],
    root: Path,
    cam_regex: str | None = None,
) -> str:
    """The layout the views fit: keypoint suffixes (``nose_top``) or label folder names."""
    suffix_fit = {v: any(_suffix_view(c, [v]) for c in columns) for v in views}
    folder_names = label_folder_names(sources)
    folder_fit = {
        v: any(s.view == v for s in sources)
        or any(_find_token(n, v, cam_regex) is not None for n in folder_names)
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
            f"no label folder name contains view(s) {', '.join(unmatched)} as a '_'- or '-'-separated "
            f"part{'' if cam_regex is None else f' (cam_regex {cam_regex!r})'}; "
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


def _collect_rows(sources: list[LabelSource]) -> list[tuple[LabelSource, int]]:
    """Every row once; the same image labeled in two files is an error."""
    rows: list[tuple[LabelSource, int]] = []
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


def build_single(sources: list[LabelSource], bodyparts: list[str]) -> dict[str, Any]:
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


def build_suffix(
    sources: list[LabelSource], columns: list[str], views: list[str], root: Path
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
    bodyparts = ordered_union([[base[c] for c in columns]])
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


def _row_view_session(
    source: LabelSource, key: str, views: list[str], cam_regex: str | None = None
) -> tuple[str, str]:
    folder = Path(key.replace("\\", "/")).parent.name
    if source.view is not None:
        return source.view, _strip_view(folder, source.view, cam_regex)
    hits = _views_in_name(folder, views, cam_regex)
    if len(hits) == 1:
        return hits[0], _strip_view(folder, hits[0], cam_regex)
    found = f"several views ({', '.join(hits)})" if hits else f"none of the views {', '.join(views)}"
    raise DGPError(
        f"image folder {folder!r} of row {key!r} names {found}",
        source.path,
        hint="in the folders layout each image folder name contains its view, e.g. session0_cam0",
    )


def build_folders(
    sources: list[LabelSource], bodyparts: list[str], views: list[str], cam_regex: str | None = None
) -> dict[str, Any]:
    # A DeepLabCut label folder names its view (labeled-data/session0_cam0/CollectedData_x.csv).
    for source in sources:
        if source.view is None and source.label_folder is not None:
            hits = _views_in_name(source.label_folder, views, cam_regex)
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
    cells: dict[tuple[int, int], tuple[LabelSource, int]] = {}
    folders: dict[tuple[str, int], tuple[Path, str]] = {}  # (session, view) -> image folder, key prefix
    for source in sources:
        for i, key in enumerate(source.table.image_keys):
            view, session = _row_view_session(source, key, views, cam_regex)
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


def sessions_of_videos(
    videos: list[Path], views: list[str], layout: str, cam_regex: str | None = None
) -> tuple[dict[str, dict[str, Path]], list[Path]]:
    sessions: dict[str, dict[str, Path]] = {}
    extra: list[Path] = []
    for video in videos:
        if layout == "folders":
            hits = _views_in_name(video.stem, views, cam_regex)
            if len(hits) != 1:
                extra.append(video)
                continue
            view_map = sessions.setdefault(_strip_view(video.stem, hits[0], cam_regex), {})
            if hits[0] in view_map:
                extra.append(video)
            else:
                view_map[hits[0]] = video
        else:
            name = video.stem if video.stem not in sessions else video.name
            sessions[name] = {view: video for view in views}
    return sessions, extra
