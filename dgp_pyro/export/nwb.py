r"""Keypoint posteriors as NWB files, with the ndx-pose extension, spreads included.

Optional: this module needs ``pynwb`` and ``ndx-pose`` (``pip install "dgp-pyro[nwb]"``). They are
imported inside the functions, so ``dgp_pyro`` imports without them; a call without them raises
:class:`~dgp_pyro.errors.DGPError`.

Layout
------

:func:`write_nwb_2d` (one camera view, a
:class:`~dgp_pyro.posterior.marginals.KeypointPosterior`) writes::

    /general/devices/<view>                       Device: the camera of the view
    /acquisition/video_<view>                     ImageSeries, format "external": the source video
                                                  (path, frame count, width x height, frame rate)
    /processing/behavior/                         ProcessingModule "behavior"
        Skeletons/subject                         Skeleton: nodes = keypoint names, edges (uint8 pairs)
        PoseEstimation_<view>                     PoseEstimation (ndx-pose), linking the skeleton,
                                                  device and source video
            <keypoint>                            PoseEstimationSeries, one per keypoint:
                                                  data (T, 2) posterior mean x, y in frame pixels,
                                                  confidence (T,) heatmap peak probability
        PoseEstimation_<view>_spread              BehavioralTimeSeries (NWB core): the spreads
            frame_index                           (T,) int64 video frame number of each sample
            <keypoint>_std                        (T, 2) marginal posterior standard deviation of x, y
            <keypoint>_cov                        (T, 2, 2) marginal posterior covariance
            <keypoint>_lo<tag>, _hi<tag>          (T, 2) equal-tailed credible interval bounds of x, y
                                                  per level (tag 90 = level 0.9; the exact level is in
                                                  the series' ``comments``: ``credible_level=0.9``)

:func:`write_nwb_3d` (a :class:`~dgp_pyro.posterior.marginals.Posterior3D`) writes the same with
a ``MultiCameraPoseEstimation`` (ndx-pose's container for triangulated, world-space estimates)
named ``MultiCameraPoseEstimation`` holding one (T, 3) x, y, z ``PoseEstimationSeries`` per
keypoint, its spreads in ``MultiCameraPoseEstimation_spread`` (std (T, 3), cov (T, 3, 3), bounds
(T, 3)); no device or video.

So the spreads of the pose container ``<name>`` are always in ``<name>_spread`` next to it, as
plain ``TimeSeries`` any NWB reader lists (``nwbfile.processing["behavior"]["<name>_spread"]``).
Every series has the same timing: ``starting_time = frame_index[0] / fps`` and ``rate = fps`` when
the frames are consecutive, otherwise ``timestamps = frame_index / fps`` (stored once, linked from
the others). Frames without a posterior stay NaN rows. Floats are stored as float64 (ndx-pose's
float32 is a minimum), so :func:`~dgp_pyro.export.nwb_read.read_nwb_posterior` gives back exactly
what was written.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from dgp_pyro import __version__
from dgp_pyro.atomic import atomic_path
from dgp_pyro.data.video import video_info
from dgp_pyro.errors import DGPError
from dgp_pyro.posterior.marginals import KeypointPosterior, Posterior3D
from dgp_pyro.posterior.predict_run import VideoPrediction

__all__ = ["write_nwb_2d", "write_nwb_3d", "write_prediction_nwb", "SPREAD_SUFFIX", "NWB_INSTALL_HINT"]

NWB_INSTALL_HINT = 'pip install "dgp-pyro[nwb]"'
#: the spreads of the pose container ``<name>`` are in ``<name>_spread``
SPREAD_SUFFIX = "_spread"
MODULE_NAME = "behavior"
SKELETON_NAME = "subject"
POSE_3D_NAME = "MultiCameraPoseEstimation"
SOURCE_SOFTWARE = "dgp-pyro"
REFERENCE_FRAME_2D = "(0, 0) is the centre of the top-left pixel of the video frame; x right, y down"
CONFIDENCE_DEFINITION = "peak probability of the keypoint's heatmap (DeepLabCut's likelihood)"
LEVEL_COMMENT = re.compile(r"credible_level=(\S+)")


def import_nwb(path: str | Path) -> tuple[Any, Any]:
    """``(pynwb, ndx_pose)``, or a :class:`DGPError` saying how to install them."""
    try:
        import ndx_pose
        import pynwb
    except ImportError as err:
        raise DGPError(
            f"NWB export needs pynwb and ndx-pose, which do not import ({err})", path, hint=NWB_INSTALL_HINT
        ) from err
    return pynwb, ndx_pose


def _level_tag(level: float) -> str:
    """``0.9 -> "90"``, ``0.975 -> "97.5"`` (as :func:`dgp_pyro.posterior.marginals.level_tag`)."""
    return f"{level * 100:g}"


def _check_target(path: Path, overwrite: bool) -> None:
    if path.is_dir():
        raise DGPError("is a folder, not an NWB file name", path)
    if path.exists() and not overwrite:
        raise DGPError("file exists", path, hint="pass overwrite=True to replace it, or choose another name")


def _check_names(
    path: Path, keypoints: Sequence[str], skeleton_edges: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Validate keypoint names and edges; return the edges as a ``(E, 2)`` uint8 array."""
    names = list(keypoints)
    if not names:
        raise DGPError("no keypoints to write", path)
    if len(set(names)) != len(names):
        raise DGPError(f"keypoint names must be unique: {names}", path)
    bad = [n for n in names if not n or "/" in n]
    if bad:
        raise DGPError(f"keypoint names must be non-empty and contain no '/': {bad}", path)
    if len(names) > 256:
        raise DGPError(f"{len(names)} keypoints: an ndx-pose Skeleton indexes at most 256 nodes", path)
    edges = np.asarray(list(skeleton_edges), dtype=np.int64).reshape(-1, 2)
    if edges.size and (edges.min() < 0 or edges.max() >= len(names)):
        raise DGPError(f"skeleton edges {edges.tolist()} index outside the {len(names)} keypoints", path)
    return edges.astype(np.uint8)


def _check_posterior(
    path: Path, mean: np.ndarray, n_keypoints: int, dim: int, frame_index: np.ndarray, fps: float
) -> None:
    if mean.ndim != 3 or mean.shape[1:] != (n_keypoints, dim):
        raise DGPError(
            f"posterior mean has shape {mean.shape}; expected (frames, {n_keypoints} keypoints, {dim})", path
        )
    if frame_index.shape != (mean.shape[0],):
        raise DGPError(f"frame_index has shape {frame_index.shape}; expected ({mean.shape[0]},)", path)
    if not (np.isfinite(fps) and fps > 0):
        raise DGPError(f"fps must be a positive number, got {fps}", path)


def _frame_index(frame_index: np.ndarray, path: Path) -> np.ndarray:
    index = np.asarray(frame_index)
    out = index.astype(np.int64)
    if not np.array_equal(out, index):
        raise DGPError("frame_index must hold whole frame numbers", path)
    return out


def _timing(frame_index: np.ndarray, fps: float) -> dict[str, Any]:
    """TimeSeries timing keywords: starting_time + rate for consecutive frames, else timestamps."""
    if len(frame_index) == 0 or np.all(np.diff(frame_index) == 1):
        start = float(frame_index[0]) / fps if len(frame_index) else 0.0
        return {"starting_time": start, "rate": float(fps)}
    return {"timestamps": frame_index.astype(np.float64) / fps}


def _levels(lower: dict[float, np.ndarray], upper: dict[float, np.ndarray], path: Path) -> list[float]:
    if set(lower) != set(upper):
        raise DGPError(f"interval levels differ: lower {sorted(lower)}, upper {sorted(upper)}", path)
    levels = sorted(float(lv) for lv in lower)
    tags = [_level_tag(lv) for lv in levels]
    if len(set(tags)) != len(tags):
        raise DGPError(f"credible levels {levels} give the same name tag", path)
    return levels


def _spread_series(
    pynwb: Any,
    *,
    keypoints: Sequence[str],
    axes: str,
    std: np.ndarray,
    cov: np.ndarray | None,
    lower: dict[float, np.ndarray],
    upper: dict[float, np.ndarray],
    levels: Sequence[float],
    frame_index: np.ndarray,
    unit: str,
    pose_name: str,
    timing: dict[str, Any],
) -> list[Any]:
    """The TimeSeries of the ``<pose_name>_spread`` container (module docstring)."""
    TimeSeries = pynwb.TimeSeries
    axis_list = ", ".join(axes)
    series = [
        TimeSeries(
            name="frame_index",
            data=frame_index,
            unit="frames",
            description=f"video frame number of each sample of {pose_name}",
            **timing,
        )
    ]
    for k, name in enumerate(keypoints):
        series.append(
            TimeSeries(
                name=f"{name}_std",
                data=np.ascontiguousarray(std[:, k], dtype=np.float64),
                unit=unit,
                description=f"marginal posterior standard deviation of {name} ({axis_list}) in {pose_name}",
                **timing,
            )
        )
        if cov is not None:
            series.append(
                TimeSeries(
                    name=f"{name}_cov",
                    data=np.ascontiguousarray(cov[:, k], dtype=np.float64),
                    unit=f"({unit})^2",
                    description=f"marginal posterior covariance of {name} ({axis_list} x {axis_list}) "
                    f"in {pose_name}",
                    **timing,
                )
            )
        for level in levels:
            tag = _level_tag(level)
            for side, bounds, word in (("lo", lower, "lower"), ("hi", upper, "upper")):
                series.append(
                    TimeSeries(
                        name=f"{name}_{side}{tag}",
                        data=np.ascontiguousarray(_get_level(bounds, level)[:, k], dtype=np.float64),
                        unit=unit,
                        description=f"{word} bound of the equal-tailed {level:.4g} credible interval "
                        f"of {name} ({axis_list}) in {pose_name}",
                        comments=f"credible_level={level!r}",
                        **timing,
                    )
                )
    return series


def _get_level(bounds: dict[float, np.ndarray], level: float) -> np.ndarray:
    for key, value in bounds.items():
        if float(key) == level:
            return np.asarray(value)
    raise KeyError(level)


def _linked(timing: dict[str, Any], first: Any) -> dict[str, Any]:
    """Timing of the series after ``first``: irregular timestamps are stored once and linked."""
    return {"timestamps": first} if "timestamps" in timing else timing


def _new_file(
    pynwb: Any,
    session_description: str,
    identifier: str | None,
    session_start_time: datetime | None,
) -> Any:
    start = datetime.now().astimezone() if session_start_time is None else session_start_time
    if start.tzinfo is None:
        start = start.astimezone()
    return pynwb.NWBFile(
        session_description=session_description,
        identifier=str(uuid.uuid4()) if identifier is None else identifier,
        session_start_time=start,
    )


def _write(pynwb: Any, nwbfile: Any, path: Path) -> None:
    with atomic_path(path) as tmp, pynwb.NWBHDF5IO(str(tmp), mode="w") as io:
        io.write(nwbfile)


def write_nwb_2d(
    path: str | Path,
    posterior: KeypointPosterior,
    keypoints: Sequence[str],
    skeleton_edges: Sequence[tuple[int, int]],
    *,
    view_name: str,
    fps: float,
    source_video: str | Path | None,
    video_frames: int | None = None,
    session_description: str = "Keypoint posterior of Deep Graph Pose (dgp-pyro)",
    identifier: str | None = None,
    session_start_time: datetime | None = None,
    scorer: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a 2D keypoint posterior of one camera view to an NWB file (layout: module docstring).

    Args:
        path: the ``.nwb`` file to write (atomically: an interrupted write leaves nothing).
        posterior: means, covariances, confidences and interval bounds in frame pixels.
        keypoints: the K keypoint names, in the posterior's order.
        skeleton_edges: pairs of keypoint indices (0-based).
        view_name: the camera view (names the device, the video and the pose container).
        fps: the video's frame rate; sample times are ``frame_index / fps``.
        source_video: the video the posterior is of, stored as a path (None: no video entry).
        video_frames: the video's frame count; default: read from ``source_video``.
        session_description, identifier, session_start_time: NWB file metadata (defaults: a
            generic description, a random UUID, now).
        scorer: the model that produced the posterior (e.g. the run's scorer name).
        overwrite: replace an existing file.

    Returns:
        ``path``.

    Raises:
        DGPError: pynwb/ndx-pose missing, ``path`` exists without ``overwrite``, shapes or names
            that do not fit, a source video that cannot be read for its frame count.
    """
    path = Path(path)
    _check_target(path, overwrite)
    pynwb, ndx_pose = import_nwb(path)
    edges = _check_names(path, keypoints, skeleton_edges)
    if not view_name or "/" in view_name:
        raise DGPError(f"view_name must be non-empty and contain no '/': {view_name!r}", path)
    mean = np.asarray(posterior.mean, dtype=np.float64)
    frame_index = np.asarray(posterior.frame_index)
    _check_posterior(path, mean, len(keypoints), 2, frame_index, fps)
    frame_index = _frame_index(frame_index, path)
    confidence = np.asarray(posterior.confidence, dtype=np.float64)
    cov = np.asarray(posterior.cov, dtype=np.float64)
    std = np.asarray(posterior.std, dtype=np.float64)
    levels = _levels(posterior.lower, posterior.upper, path)

    nwbfile = _new_file(pynwb, session_description, identifier, session_start_time)
    device = nwbfile.create_device(name=view_name, description=f"camera of view {view_name}")
    video = None
    if source_video is not None:
        video = _video_series(pynwb, path, Path(source_video), view_name, fps, video_frames, device)
        nwbfile.add_acquisition(video)
    skeleton = ndx_pose.Skeleton(
        name=SKELETON_NAME, nodes=list(keypoints), edges=edges if len(edges) else None
    )
    timing = _timing(frame_index, fps)
    pose_name = f"PoseEstimation_{view_name}"
    series: list[Any] = []
    for k, name in enumerate(keypoints):
        series.append(
            ndx_pose.PoseEstimationSeries(
                name=name,
                description=f"posterior mean of {name} (x, y)",
                data=np.ascontiguousarray(mean[:, k]),
                unit="pixels",
                reference_frame=REFERENCE_FRAME_2D,
                confidence=np.ascontiguousarray(confidence[:, k]),
                confidence_definition=CONFIDENCE_DEFINITION,
                **(_linked(timing, series[0]) if series else timing),
            )
        )
    spread = _spread_series(
        pynwb,
        keypoints=keypoints,
        axes="xy",
        std=std,
        cov=cov,
        lower=posterior.lower,
        upper=posterior.upper,
        levels=levels,
        frame_index=frame_index,
        unit="pixels",
        pose_name=pose_name,
        timing=_linked(timing, series[0]) if series else timing,
    )
    pose = ndx_pose.PoseEstimation(
        name=pose_name,
        pose_estimation_series=series,
        description=f"Deep Graph Pose keypoint posterior of view {view_name}: posterior means; "
        f"standard deviations, covariances and credible intervals in {pose_name}{SPREAD_SUFFIX}",
        scorer=scorer,
        source_software=SOURCE_SOFTWARE,
        source_software_version=__version__,
        skeleton=skeleton,
        device=device,
        source_video=video,
    )
    _add_to_module(pynwb, ndx_pose, nwbfile, skeleton, pose, pose_name, spread)
    _write(pynwb, nwbfile, path)
    return path


def _video_series(
    pynwb: Any,
    path: Path,
    video: Path,
    view_name: str,
    fps: float,
    video_frames: int | None,
    device: Any,
) -> Any:
    dimension = None
    if video_frames is None:
        if not video.is_file():
            raise DGPError(
                "source video not found, so its frame count is unknown",
                video,
                hint="pass video_frames=N, or source_video=None",
            )
        info = video_info(video)
        video_frames = int(info["n_frames"])
        dimension = [int(info["width"]), int(info["height"])]
    return pynwb.image.ImageSeries(
        name=f"video_{view_name}",
        description=f"source video of view {view_name}",
        external_file=[str(video)],
        format="external",
        starting_frame=[0],
        num_samples=int(video_frames),
        dimension=dimension,
        starting_time=0.0,
        rate=float(fps),
        device=device,
    )


def _add_to_module(
    pynwb: Any, ndx_pose: Any, nwbfile: Any, skeleton: Any, pose: Any, pose_name: str, spread: list[Any]
) -> None:
    module = nwbfile.create_processing_module(
        name=MODULE_NAME, description="keypoint posteriors of Deep Graph Pose (dgp-pyro)"
    )
    module.add(ndx_pose.Skeletons(skeletons=[skeleton]))
    module.add(pose)
    module.add(pynwb.behavior.BehavioralTimeSeries(name=f"{pose_name}{SPREAD_SUFFIX}", time_series=spread))


def write_nwb_3d(
    path: str | Path,
    posterior3d: Posterior3D,
    keypoints: Sequence[str],
    skeleton_edges: Sequence[tuple[int, int]],
    *,
    fps: float,
    unit: str = "calibration units",
    reference_frame: str = "world coordinates of the camera calibration",
    confidence: np.ndarray | None = None,
    session_description: str = "3D keypoint posterior of Deep Graph Pose (dgp-pyro)",
    identifier: str | None = None,
    session_start_time: datetime | None = None,
    scorer: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a 3D keypoint posterior to an NWB file (layout: module docstring).

    Uses ``mean`` ``(T, J, 3)``, ``cov`` ``(T, J, 3, 3)`` (or, without it, ``std``),
    ``frame_index``, ``lower`` and ``upper`` of ``posterior3d``.

    Args:
        path: the ``.nwb`` file to write (atomically).
        posterior3d: the 3D posterior.
        keypoints, skeleton_edges: the J keypoint names and pairs of their indices.
        fps: the videos' frame rate; sample times are ``frame_index / fps``.
        unit: the world unit of the calibration (e.g. ``"millimeters"``).
        reference_frame: what the world origin and axes are.
        confidence: ``(T, J)`` confidence in [0, 1]; default: the highest heatmap peak
            probability over the views where ``posterior3d.confidence`` is ``(T, V, J)``, else none.
        session_description, identifier, session_start_time, scorer, overwrite: as
            :func:`write_nwb_2d`.

    Returns:
        ``path``.

    Raises:
        DGPError: as :func:`write_nwb_2d`.
    """
    path = Path(path)
    _check_target(path, overwrite)
    pynwb, ndx_pose = import_nwb(path)
    edges = _check_names(path, keypoints, skeleton_edges)
    mean = np.asarray(posterior3d.mean, dtype=np.float64)
    frame_index = np.asarray(posterior3d.frame_index)
    _check_posterior(path, mean, len(keypoints), 3, frame_index, fps)
    frame_index = _frame_index(frame_index, path)
    cov = getattr(posterior3d, "cov", None)
    cov = None if cov is None else np.asarray(cov, dtype=np.float64)
    if hasattr(posterior3d, "std"):
        std = np.asarray(posterior3d.std, dtype=np.float64)
    elif cov is not None:
        std = np.sqrt(np.clip(np.diagonal(cov, axis1=-2, axis2=-1), 0, None))
    else:
        raise DGPError("the 3D posterior has neither cov nor std", path)
    levels = _levels(posterior3d.lower, posterior3d.upper, path)
    confidence = _confidence3d(posterior3d, confidence, mean.shape[:2], path)

    nwbfile = _new_file(pynwb, session_description, identifier, session_start_time)
    skeleton = ndx_pose.Skeleton(
        name=SKELETON_NAME, nodes=list(keypoints), edges=edges if len(edges) else None
    )
    timing = _timing(frame_index, fps)
    series: list[Any] = []
    for k, name in enumerate(keypoints):
        series.append(
            ndx_pose.PoseEstimationSeries(
                name=name,
                description=f"posterior mean of {name} (x, y, z)",
                data=np.ascontiguousarray(mean[:, k]),
                unit=unit,
                reference_frame=reference_frame,
                confidence=None if confidence is None else np.ascontiguousarray(confidence[:, k]),
                confidence_definition=None
                if confidence is None
                else f"highest {CONFIDENCE_DEFINITION} over views",
                **(_linked(timing, series[0]) if series else timing),
            )
        )
    spread = _spread_series(
        pynwb,
        keypoints=keypoints,
        axes="xyz",
        std=std,
        cov=cov,
        lower=posterior3d.lower,
        upper=posterior3d.upper,
        levels=levels,
        frame_index=frame_index,
        unit=unit,
        pose_name=POSE_3D_NAME,
        timing=_linked(timing, series[0]) if series else timing,
    )
    pose = ndx_pose.MultiCameraPoseEstimation(
        name=POSE_3D_NAME,
        pose_estimation_series=series,
        description="Deep Graph Pose 3D keypoint posterior: posterior means; standard deviations, "
        f"covariances and credible intervals in {POSE_3D_NAME}{SPREAD_SUFFIX}",
        scorer=scorer,
        source_software=SOURCE_SOFTWARE,
        source_software_version=__version__,
        skeleton=skeleton,
    )
    _add_to_module(pynwb, ndx_pose, nwbfile, skeleton, pose, POSE_3D_NAME, spread)
    _write(pynwb, nwbfile, path)
    return path


def _confidence3d(
    posterior3d: Any, confidence: np.ndarray | None, shape: tuple[int, ...], path: Path
) -> np.ndarray | None:
    if confidence is not None:
        confidence = np.asarray(confidence, dtype=np.float64)
        if confidence.shape != tuple(shape):
            raise DGPError(f"confidence has shape {confidence.shape}; expected {tuple(shape)}", path)
        return confidence
    views = getattr(posterior3d, "confidence", None)
    if views is None:
        return None
    views = np.asarray(views, dtype=np.float64)
    if views.ndim != 3 or views.shape[0] != shape[0] or views.shape[2] != shape[1]:
        return None
    best = np.max(np.where(np.isnan(views), -np.inf, views), axis=1)
    return np.where(np.isfinite(best), best, np.nan)


def write_prediction_nwb(prediction: VideoPrediction, scorer: str) -> Path:
    """Write a prediction of :func:`~dgp_pyro.posterior.predict_run.predict_run` as an NWB file.

    ``<stem>.nwb`` (2D: the video's posterior, its source video linked) or ``<stem>_3d.nwb`` (3D:
    the session's 3D posterior) beside its prediction files, at the first video's frame rate; an
    existing file is replaced.
    """
    out_dir = prediction.out_dir
    video = prediction.videos[0]
    fps = float(video_info(video)["fps"])
    if prediction.is_3d:
        return write_nwb_3d(
            out_dir / f"{prediction.stem}_3d.nwb", prediction.posterior, prediction.keypoints,
            prediction.edges, fps=fps, scorer=scorer, overwrite=True,
        )  # fmt: skip
    return write_nwb_2d(
        out_dir / f"{prediction.stem}.nwb", prediction.posterior, prediction.keypoints, prediction.edges,
        view_name=video.stem, fps=fps, source_video=video, scorer=scorer, overwrite=True,
    )  # fmt: skip
