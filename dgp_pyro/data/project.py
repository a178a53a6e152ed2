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

The pieces: :mod:`~dgp_pyro.data.project_config` (config.yaml),
:mod:`~dgp_pyro.data.label_sources` (label files and videos) and
:mod:`~dgp_pyro.data.view_layout` (layout detection and the labels arranged by view).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Bool, Float, Int

from dgp_pyro.data.label_bounds import check_labels_inside_images
from dgp_pyro.data.label_sources import (
    check_against_config,
    dlc_label_files,
    ordered_union,
    read_source,
    video_files,
)
from dgp_pyro.data.project_config import (
    check_views,
    config_bodyparts,
    config_multiview,
    config_skeleton,
    project_skeleton,
    read_config,
)
from dgp_pyro.data.view_layout import (
    ANIPOSE_CAM_REGEX,
    LAYOUTS,
    SINGLE_VIEW,
    build_folders,
    build_single,
    build_suffix,
    check_cam_regex,
    detect_views,
    label_folder_names,
    pick_layout,
    sessions_of_videos,
    suggest_suffix_views,
)
from dgp_pyro.errors import DGPError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["NetworkSamples", "Project", "load_project"]


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
        label_file_of: each labeled image -> the label file that labels it.
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
    label_file_of: dict[Path, Path] = field(default_factory=dict)

    def check_labels_inside_images(self) -> None:
        """Refuse labels outside their image (reads each labeled image's header; see
        :mod:`dgp_pyro.data.label_bounds`): a damaged label file or a resized image."""
        check_labels_inside_images(self.image_paths, self.labels, self.label_file_of, self.bodyparts)

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
        ``calibration`` (path or None), ``cameras`` (camera names or None), ``ground_truth``,
        ``suggested_views`` (views the keypoint names of a single-view project suggest,
        :func:`~dgp_pyro.data.view_layout.suggest_suffix_views`).
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
            "suggested_views": (
                suggest_suffix_views(list(self.bodyparts)) if self.view_layout == "single" else []
            ),
        }


# --------------------------------------------------------------------------------------------
# The calibration file's camera names.


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


# --------------------------------------------------------------------------------------------
# Entry point.


def project_cam_regex(root: Path, config: dict[str, Any], config_path: Path | None) -> str | None:
    """The project's ``cam_regex``: ``multiview.cam_regex`` of config.yaml, else Anipose's config.toml.

    Anipose keeps it in its project's ``config.toml`` (``[triangulation] cam_regex``, or at the
    top level); ``None`` when neither names one (views are then ``_``/``-``-separated tokens).
    """
    section = config.get("multiview")
    if isinstance(section, dict) and section.get("cam_regex") is not None:
        return check_cam_regex(section["cam_regex"], config_path)
    anipose = root / "config.toml"
    if not anipose.is_file():
        return None
    try:
        data = tomllib.loads(anipose.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise DGPError(f"the Anipose config cannot be read ({error})", anipose) from None
    triangulation = data.get("triangulation")
    value = triangulation.get("cam_regex") if isinstance(triangulation, dict) else None
    value = data.get("cam_regex", value) if value is None else value
    return None if value is None else check_cam_regex(value, anipose)


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
    config = read_config(config_path) if config_path else {}
    cfg_views, cfg_layout = config_multiview(config, config_path)
    if isinstance(views, str):  # views="top" means one view, not three one-letter ones
        views = [views]
    if views is not None:
        views = check_views(list(views), root)
    elif cfg_views is not None:
        views = check_views(cfg_views, config_path)
    if view_layout is None:
        view_layout = cfg_layout
    if view_layout is not None and view_layout not in LAYOUTS:
        raise DGPError(f"unknown view layout {view_layout!r}", root, hint=f"use one of {', '.join(LAYOUTS)}")

    # Which kind of project, and its label files.
    dlc_files = dlc_label_files(root)
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
        read_source(root, p, view_of.get(p), p.parent.name if fmt == "deeplabcut" else None)
        for p in label_files
    ]
    if sum(len(s.table.image_keys) for s in sources) == 0:
        raise DGPError(
            "the project has no labeled rows",
            label_files[0] if len(label_files) == 1 else root,
            hint="label some frames first",
        )
    if not any(np.isfinite(s.table.coords).any() for s in sources):
        rows = sum(len(s.table.image_keys) for s in sources)
        raise DGPError(
            f"the project has 0 labeled frames: all {rows} rows of its label file(s) are empty",
            label_files[0] if len(label_files) == 1 else root,
            hint="label some keypoints (an empty cell means not labeled)",
        )
    columns = ordered_union([s.table.keypoints for s in sources])
    config_parts = (
        config_bodyparts(config, config_path, required=fmt == "deeplabcut") if config_path else None
    )
    columns = check_against_config(columns, sources, config_parts, config_path)

    # Views and layout; Anipose-style names (session0-camA) give their views without --views.
    cam_regex = project_cam_regex(root, config, config_path)
    if cam_regex is None and view_layout in (None, "folders"):
        # Anipose's default naming when it finds the views (or the views given are its cameras)
        detected = detect_views(label_folder_names(sources), ANIPOSE_CAM_REGEX)
        if (views is None and len(detected) >= 2) or (views is not None and set(views) <= set(detected)):
            cam_regex = ANIPOSE_CAM_REGEX
    if views is None and view_layout in (None, "folders") and cam_regex is not None:
        detected = detect_views(label_folder_names(sources), cam_regex)
        if len(detected) >= 2:
            views = detected
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
        layout = pick_layout(views, view_layout, sources, columns, root, cam_regex)

    base = {c: c for c in columns}
    if layout == "single":
        bodyparts = columns
        built = build_single(sources, bodyparts)
    elif layout == "suffix":
        bodyparts, base, built = build_suffix(sources, columns, views, root)
    else:
        bodyparts = columns
        built = build_folders(sources, bodyparts, views, cam_regex)

    skeleton = project_skeleton(config_skeleton(config, config_path), bodyparts, base, config_path)
    sessions, extra = sessions_of_videos(video_files(root, config), views, layout, cam_regex)
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
        label_file_of={image: source.path for source in sources for image in source.images},
        **built,
    )
