"""Keypoint posteriors read back from NWB files: those :mod:`dgp_pyro.export.nwb` writes, or ndx-pose's.

:func:`read_nwb_posterior` returns the pose container's means and confidences and, from its
``<name>_spread`` container, the spreads and interval bounds, exactly as written (float64).
Needs ``pynwb`` and ``ndx-pose`` like the writers.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dgp_pyro.errors import DGPError
from dgp_pyro.export.nwb import LEVEL_COMMENT, MODULE_NAME, SPREAD_SUFFIX, import_nwb

__all__ = ["read_nwb_posterior"]


def read_nwb_posterior(path: str | Path, name: str | None = None) -> dict[str, Any]:
    """Read a keypoint posterior written by :func:`write_nwb_2d` or :func:`write_nwb_3d`.

    Args:
        path: the ``.nwb`` file.
        name: the pose container in ``processing/behavior`` (default: the only one).

    Returns:
        ``{"name", "keypoints", "edges" (E, 2), "frame_index" (T,), "timestamps" (T,), "fps",
        "unit", "source_video", "mean" (T, K, D), "confidence" (T, K) or None, "std" (T, K, D),
        "cov" (T, K, D, D), "lower", "upper" ({level: (T, K, D)})}``. Without a
        ``<name>_spread`` container (a file from another tool) ``std``, ``cov`` and
        ``frame_index`` are None and the bounds empty; ``fps`` is None where the timing is
        irregular and no source video gives it.

    Raises:
        DGPError: pynwb/ndx-pose missing, no such file, no or several pose containers.
    """
    path = Path(path)
    if not path.is_file():
        raise DGPError("NWB file not found", path)
    pynwb, ndx_pose = import_nwb(path)
    pose_types = (ndx_pose.PoseEstimation, ndx_pose.MultiCameraPoseEstimation)
    with pynwb.NWBHDF5IO(str(path), mode="r") as io:
        nwbfile = io.read()
        module = nwbfile.processing.get(MODULE_NAME)
        found = (
            []
            if module is None
            else [k for k, v in module.data_interfaces.items() if isinstance(v, pose_types)]
        )
        if name is None:
            if len(found) != 1:
                listed = ", ".join(found) or "none"
                raise DGPError(
                    f"{len(found)} pose containers in processing/{MODULE_NAME} ({listed})",
                    path,
                    hint="pass name= to choose one" if found else None,
                )
            name = found[0]
        elif name not in found:
            raise DGPError(
                f"no pose container {name!r} in processing/{MODULE_NAME}", path, hint=f"found: {found}"
            )
        pose = module[name]
        skeleton = pose.skeleton
        keypoints = (
            [str(n) for n in skeleton.nodes[:]] if skeleton is not None else list(pose.pose_estimation_series)
        )
        edges = (
            np.asarray(skeleton.edges[:], dtype=np.int64).reshape(-1, 2)
            if skeleton is not None and skeleton.edges is not None
            else np.zeros((0, 2), dtype=np.int64)
        )
        series = [pose.pose_estimation_series[k] for k in keypoints]
        mean = np.stack([np.asarray(s.data[()]) for s in series], axis=1)
        confidence = (
            np.stack([np.asarray(s.confidence[()]) for s in series], axis=1)
            if all(s.confidence is not None for s in series)
            else None
        )
        first = series[0]
        if first.timestamps is not None:
            timestamps = np.asarray(first.timestamps[()], dtype=np.float64)
            fps = None
        else:
            fps = float(first.rate)
            timestamps = first.starting_time + np.arange(len(mean)) / fps
        video = getattr(pose, "source_video", None)
        if fps is None and video is not None and video.rate is not None:
            fps = float(video.rate)
        out: dict[str, Any] = {
            "name": name,
            "keypoints": keypoints,
            "edges": edges,
            "frame_index": None,
            "timestamps": timestamps,
            "fps": fps,
            "unit": first.unit,
            "source_video": None if video is None else str(video.external_file[0]),
            "mean": mean,
            "confidence": confidence,
            "std": None,
            "cov": None,
            "lower": {},
            "upper": {},
        }
        spread_name = f"{name}{SPREAD_SUFFIX}"
        if spread_name in module.data_interfaces:
            out.update(_read_spread(module[spread_name].time_series, keypoints))
    return out


def _read_spread(time_series: dict[str, Any], keypoints: Sequence[str]) -> dict[str, Any]:
    def stack(suffix: str) -> np.ndarray | None:
        names = [f"{k}{suffix}" for k in keypoints]
        if not all(n in time_series for n in names):
            return None
        return np.stack([np.asarray(time_series[n].data[()]) for n in names], axis=1)

    levels: dict[str, float] = {}
    first = keypoints[0]
    for series_name, series in time_series.items():
        if series_name.startswith(f"{first}_lo"):
            match = LEVEL_COMMENT.search(series.comments or "")
            tag = series_name[len(f"{first}_lo") :]
            levels[tag] = float(match.group(1)) if match else float(tag) / 100
    lower, upper = {}, {}
    for tag, level in sorted(levels.items(), key=lambda item: item[1]):
        lo, hi = stack(f"_lo{tag}"), stack(f"_hi{tag}")
        if lo is not None and hi is not None:
            lower[level], upper[level] = lo, hi
    frame_index = time_series.get("frame_index")
    return {
        "frame_index": None if frame_index is None else np.asarray(frame_index.data[()], dtype=np.int64),
        "std": stack("_std"),
        "cov": stack("_cov"),
        "lower": lower,
        "upper": upper,
    }
