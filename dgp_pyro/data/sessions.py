"""A multi-view project's sessions (synchronous videos, one per view) and its calibration.

A 3D run needs both: :func:`load_calibration` reads the project's Anipose ``calibration.toml``
(or another file) with its cameras in the project's view order, :func:`session_videos` lists
every session with a video for every view, checked to be synchronous (same length and frame
rate), :func:`check_frame_sizes` checks that each view's videos are the size its camera was
calibrated at, and :func:`triangulate_labels` triangulates labeled frames with the cameras.
Either layout: in the suffix (mirror) layout one video holds every view, and each camera works
in the pixels of the whole image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dgp_pyro.data.video import video_info
from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.camera_group import CameraGroup

__all__ = [
    "SessionVideos",
    "check_frame_sizes",
    "load_calibration",
    "session_videos",
    "synchronous_videos",
    "triangulate_labels",
]


def load_calibration(project, path: str | Path | None = None) -> CameraGroup:
    """The calibration at ``path`` (default: the project's), cameras in the project's view order.

    Either layout: in the suffix (mirror) layout the camera names are the column suffixes
    (``top``, ``bot``) and every camera works in the pixels of the whole image.

    Raises:
        DGPError: no ``calibration.toml``, a single-view project, or cameras that do not match
            the views (fewer cameras, other names), naming the file.
    """
    if len(project.views) < 2:
        raise DGPError(
            f"3D models need at least 2 views; the project has {len(project.views)}",
            project.root,
            hint="name the views with --views, or set multiview: {views: [...]} in config.yaml",
        )
    if path is not None:
        if not Path(path).is_file():
            raise DGPError("calibration file not found", path)
        return CameraGroup.from_toml(path).match_views(list(project.views))
    if project.calibration is None:
        raise DGPError(
            "the project has no calibration.toml",
            project.root / "calibration.toml",
            hint="add an Anipose calibration (camera names = view names), pass --calibration FILE, "
            "or run `dgp-pyro calibrate`",
        )
    return CameraGroup.from_toml(project.calibration).match_views(list(project.views))


@dataclass
class SessionVideos:
    """One session's synchronous videos: ``videos[v]`` per view, their frame count and sizes.

    In the suffix layout every view's entry is the one video that holds them all
    (:meth:`~dgp_pyro.model.views3d.ViewChannels.image_sources` gives the distinct ones).
    """

    name: str
    videos: list[Path]
    n_frames: int
    frame_sizes: list[tuple[int, int]]


def synchronous_videos(name: str, videos: list[Path], labels: list[str]) -> SessionVideos:
    """One session's videos (one per view), checked to have the same number of frames and frame rate.

    Raises:
        DGPError: videos of different lengths or frame rates, naming each (by ``labels``) with
            its length or rate.
    """
    infos = [video_info(p) for p in videos]
    lengths = [int(i["n_frames"]) for i in infos]
    if len(set(lengths)) > 1:
        detail = ", ".join(f"{label} {n} frames" for label, n in zip(labels, lengths, strict=True))
        raise DGPError(
            f"the videos of session {name!r} have different lengths ({detail})",
            videos[int(np.argmin(lengths))],
            hint="the cameras must be synchronised: trim the videos to the same frames",
        )
    rates = [float(i["fps"]) for i in infos]
    # containers round their time base: a relative 0.1 % is the same rate
    if max(rates) - min(rates) > 1e-3 * max(rates):
        detail = ", ".join(f"{label} {fps:g} fps" for label, fps in zip(labels, rates, strict=True))
        odd = int(np.argmax([abs(r - float(np.median(rates))) for r in rates]))
        raise DGPError(
            f"the videos of session {name!r} have different frame rates ({detail})",
            videos[odd],
            hint="synchronous cameras share one frame rate: re-encode the odd one at the others' rate",
        )
    sizes = [(int(i["width"]), int(i["height"])) for i in infos]
    return SessionVideos(name, list(videos), lengths[0], sizes)


def session_videos(project) -> list[SessionVideos]:
    """Every session with a video for every view, checked to have equally long videos.

    Raises:
        DGPError: a session lacking a view's video, videos of different lengths in one session
            (naming the session and each view's length), or no session at all.
    """
    sessions = []
    for name in sorted(project.sessions):
        by_view = project.sessions[name]
        missing = [v for v in project.views if v not in by_view]
        if missing:
            raise DGPError(
                f"session {name!r} has no video for view(s) {', '.join(missing)}",
                project.root / "videos",
                hint="each session needs one video per view, named <session>_<view>.mp4",
            )
        videos = [Path(by_view[v]) for v in project.views]
        sessions.append(synchronous_videos(name, videos, list(project.views)))
    if not sessions:
        raise DGPError(
            "the project has no session with a video for every view",
            project.root / "videos",
            hint="add videos/<session>_<view>.mp4 for every view",
        )
    sizes = sessions[0].frame_sizes
    for session in sessions[1:]:
        if session.frame_sizes != sizes:
            raise DGPError(
                f"session {session.name!r} has frame sizes {session.frame_sizes}, "
                f"session {sessions[0].name!r} {sizes}",
                project.root / "videos",
                hint="every session of a view must have the frame size of the calibration",
            )
    return sessions


def check_frame_sizes(group: CameraGroup, sessions: list[SessionVideos]) -> None:
    """Raise :class:`DGPError` where a view's videos are not the size its camera was calibrated at.

    In the suffix layout (one video holds every view) each camera must be calibrated in the
    pixels of the whole image.
    """
    for session in sessions:
        shared = len(set(session.videos)) < len(session.videos)
        for camera, video, size in zip(group.cameras, session.videos, session.frame_sizes, strict=True):
            if tuple(camera.size) != tuple(size):
                raise DGPError(
                    f"video {video.name} is {size[0]}x{size[1]} but camera {camera.name!r} was calibrated "
                    f"at {camera.size[0]}x{camera.size[1]}",
                    video,
                    hint=(
                        "one image holds every view here: calibrate each camera in the pixels of the whole "
                        "image (its principal point shifted to its view), as `dgp-pyro calibrate` does"
                        if shared
                        else "use the videos the calibration was made for (same resolution and crop)"
                    ),
                )


def triangulate_labels(project, group: CameraGroup, frames: np.ndarray | None = None) -> np.ndarray:
    """Triangulated labels ``(N, J, 3)`` of labeled frames (NaN where fewer than 2 views are labeled)."""
    labels = project.labels if frames is None else project.labels[np.asarray(frames, dtype=np.int64)]
    if labels.shape[0] == 0:
        return np.zeros((0, labels.shape[2], 3))
    return group.triangulate(np.moveaxis(labels, 1, 0))
