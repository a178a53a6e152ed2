"""Ground-truth files (``ground_truth.npz``) and how their points map onto a project's videos.

:func:`load_truth` reads one (synthetic projects: ``points_2d (T, V, J, 2)``, ``visible (T, V,
J)``, ``keypoints``, ``views``, ``labeled_frames``, optionally ``points_3d``; one session, or
several as ``<session>/<key>``); :func:`channel_map` says which ground-truth view and keypoint
each network channel of each video is; :func:`truth_session` finds the project session a
ground-truth session belongs to.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dgp_pyro.data.project import Project
from dgp_pyro.data.video import VideoReader
from dgp_pyro.errors import DGPError

__all__ = ["channel_map", "load_truth", "truth_session"]


def load_truth(path: Path) -> dict[str, Any]:
    """Read a ground-truth file into ``{"keypoints", "views", "sessions": {name: arrays}}``.

    Per-session arrays (``points_2d``, ``visible``, ``labeled_frames``) are either unprefixed
    (one session, its name from ``sessions`` if stored) or stored as ``<session>/<key>``.
    """
    if not path.is_file():
        raise DGPError("ground-truth file not found", path)
    try:
        with np.load(path, allow_pickle=False) as data:
            raw = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as error:
        # NumPy's own advice (allow_pickle=True: run the code a file holds) is wrong for a user
        if not zipfile.is_zipfile(path):
            reason = "not an .npz file (a zip of NumPy arrays)"
        elif "allow_pickle" in str(error):
            reason = "it holds Python objects, not plain arrays"
        else:
            reason = str(error).split(". ")[0][:160] or type(error).__name__
        raise DGPError(f"cannot read the ground truth as .npz ({reason})", path) from None
    if "keypoints" not in raw:
        raise DGPError("the ground truth lacks keypoints", path, hint="expected keypoints (J,)")
    names = [str(s) for s in raw.get("sessions", [])]
    if "points_2d" in raw:
        per_session = {(names[0] if len(names) == 1 else ""): ""}
    else:
        per_session = {name: f"{name}/" for name in names if f"{name}/points_2d" in raw}
        if not per_session:
            raise DGPError("the ground truth lacks points_2d", path, hint="expected points_2d (T, V, J, 2)")
    sessions = {}
    for name, prefix in per_session.items():
        points = np.asarray(raw[f"{prefix}points_2d"], dtype=float)
        if points.ndim == 3:  # (T, J, 2): a single view
            points = points[:, None]
        if points.ndim != 4 or points.shape[-1] != 2:
            raise DGPError(f"{prefix}points_2d has shape {points.shape}, expected (T, V, J, 2)", path)
        t, v, j, _ = points.shape
        visible = raw.get(f"{prefix}visible")
        visible = np.ones((t, v, j), bool) if visible is None else np.asarray(visible, bool).reshape(t, v, j)
        labeled = np.asarray(raw.get(f"{prefix}labeled_frames", np.zeros(0, np.int64)))
        mask = np.zeros(t, bool)
        if labeled.dtype == bool and labeled.shape == (t,):
            mask = labeled
        elif labeled.size:
            mask[labeled.astype(np.int64)] = True
        sessions[name] = {"points_2d": points, "visible": visible, "labeled_mask": mask}
        if f"{prefix}points_3d" in raw:
            sessions[name]["points_3d"] = np.asarray(raw[f"{prefix}points_3d"], dtype=float)
    n_views = next(iter(sessions.values()))["points_2d"].shape[1]
    return {
        "keypoints": [str(k) for k in raw["keypoints"]],
        "views": [str(x) for x in raw.get("views", [f"view{i}" for i in range(n_views)])],
        "sessions": sessions,
    }


def channel_map(
    project: Project, keypoints: list[str], truth: dict, path: Path
) -> dict[str, list[tuple[int, int]]]:
    """For each video role (a view name, or "" for a video holding every view): channel -> (v, j)."""
    gt_parts = list(truth["keypoints"])
    gt_views = list(truth["views"])

    def view_index(view: str) -> int:
        if view in gt_views:
            return gt_views.index(view)
        if len(gt_views) == 1 or (len(gt_views) == len(project.views) and view in project.views):
            return 0 if len(gt_views) == 1 else project.views.index(view)
        raise DGPError(f"the ground truth has no view {view!r} (it has {gt_views})", path)

    def part_index(name: str) -> int:
        if name not in gt_parts:
            raise DGPError(f"the ground truth has no keypoint {name!r} (it has {gt_parts})", path)
        return gt_parts.index(name)

    if project.view_layout == "suffix":
        names = {
            f"{bp}_{view}": (view_index(view), part_index(bp))
            for view in project.views
            for bp in project.bodyparts
            if f"{bp}_{view}" in keypoints
        }
        return {"": [names[k] for k in keypoints]}
    return {view: [(view_index(view), part_index(k)) for k in keypoints] for view in project.views}


def truth_session(project: Project, name: str, n_frames: int, path: Path) -> str:
    """The project session a ground-truth session belongs to (by name, else the only one, else by length)."""
    sessions = sorted(project.sessions)
    if not sessions:
        raise DGPError("the project has no videos to compare with the ground truth", project.root)
    if name in project.sessions:
        return name
    if len(sessions) == 1:
        return sessions[0]
    matching = []
    for candidate in sessions:
        with VideoReader(next(iter(project.sessions[candidate].values()))) as reader:
            if reader.n_frames == n_frames:
                matching.append(candidate)
    if len(matching) != 1:
        raise DGPError(
            f"cannot tell which of the sessions {sessions} the ground truth ({n_frames} frames) belongs to",
            path,
        )
    return matching[0]
