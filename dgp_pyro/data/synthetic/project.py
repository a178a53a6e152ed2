"""Write the synthetic animal as an ordinary DeepLabCut-style multi-view project.

:func:`write_synthetic_project` simulates the animal (:func:`~.animal.simulate_motion`), builds
V calibrated cameras (:func:`~.scene.make_cameras`) and a scene with a pillar and an occluder
(:func:`~.scene.make_scene`), renders every view (:func:`~.render.iter_view`) and writes::

    <out>/
      config.yaml                      Task, scorer "synthetic", bodyparts, skeleton, video_sets,
                                       multiview: {views: [cam0, ...], layout: folders} (V > 1)
      calibration.toml                 Anipose calibration of the V cameras
      ground_truth.npz                 the truth (below)
      README.md                        what this is, with the seed
      videos/session0_cam0.mp4 ...     one video per session and view (libx264, crf 18)
      labeled-data/session0_cam0/
        img00042.png ...               the labeled frames (the rendered frames that went into
                                       the video, before compression)
        CollectedData_synthetic.csv    labels (DeepLabCut layout), and the same as .h5

With one view the view token is left out of the names: ``videos/session0.mp4``,
``labeled-data/session0/`` and config.yaml has no ``multiview`` section.

``layout="suffix"`` (V >= 2) writes the views as a mirror rig stores them: the V renderings of
a frame side by side in one image (view ``v`` at ``x`` offset ``v W``), one video per session
(``videos/session0.mp4``), one label folder (``labeled-data/session0/``) whose columns are
``<keypoint>_<view>`` (view by view), and ``multiview: {views, layout: suffix}``. Its cameras
work in the pixels of the whole image: each camera of ``calibration.toml`` has the composite
size ``(V W, H)`` and its principal point shifted by its view's offset, so projecting the true
3D points with it gives exactly the composite image's labels (and ``points_2d`` of the ground
truth, which is in composite pixels too).

Labels hold only the keypoints *visible* in that view (in the image and not hidden by the body,
a pillar or the occluder); hidden keypoints are empty (NaN), as a human labeler would leave
them. The labeled frames are spread over the video: evenly spaced with a seeded jitter, the
same frames in every view.

``ground_truth.npz`` (read it with ``numpy.load``; no pickles):

==================  ===============  ========================================================
key                 shape, dtype     meaning
==================  ===============  ========================================================
``points_3d``       (T, J, 3) f8     3D keypoints, world millimetres (floor z = 0)
``points_2d``       (T, V, J, 2) f8  their projections in every view (pixels, lens distortion
                                     included; DeepLabCut convention, origin at the centre of
                                     the top-left pixel); also where hidden
``visible``         (T, V, J) bool   inside the image and not occluded
``labeled_frames``  (N,) i8          the frames written to labeled-data (same in every view)
``states``          (T,) i8          behaviour: 0 walk, 1 turn, 2 rear, 3 pause, 4 scan
``keypoints``       (J,) str         keypoint names
``views``           (V,) str         view (camera) names
``skeleton``        (E, 2) i8        bones as keypoint indices
``bone_lengths``    (E,) f8          the fixed bone lengths (mm)
``fps``             () f8            frame rate
``image_size``      (2,) i8          (W, H) of the video frames (``(V W, H)`` in the suffix
                                     layout)
``view_offsets``    (V, 2) f8        where each view's image starts in a frame (pixels; all
                                     zero but in the suffix layout)
``layout``          () str           ``folders`` (one view per video) or ``suffix``
``seed``            () i8            the seed of the project
``sessions``        (S,) str         session names (``session0``, ...)
==================  ===============  ========================================================

With several sessions, the per-session arrays (``points_3d``, ``points_2d``, ``visible``,
``labeled_frames``, ``states``) are stored under ``<session>/<key>`` (``session1/points_3d``);
the others are shared. With one session they have no prefix.

Determinism: the same arguments give byte-identical label CSVs, PNGs, ``calibration.toml``,
``config.yaml`` and ``ground_truth.npz`` (written with fixed zip timestamps): the rendered
frames are identical. The videos are NOT byte-identical from run to run: the libx264 encoder
of the PyAV wheels gives slightly different bitstreams for the same frames (checked: even
with one thread and the same input), so decoded video frames can differ between runs by
codec-noise amounts. The ``.h5`` label files hold the same table but are not byte-identical
(HDF5 metadata), so compare them by content.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from dgp_pyro.atomic import atomic_path, atomic_write_text
from dgp_pyro.data.labels import LabelTable, write_labels
from dgp_pyro.data.synthetic.animal import (
    ARENA,
    BONE_LENGTHS,
    KEYPOINTS,
    SKELETON,
    SKELETON_INDEX,
    simulate_motion,
)
from dgp_pyro.data.synthetic.nuisances import HARD
from dgp_pyro.data.synthetic.render import iter_view, keypoint_visibility
from dgp_pyro.data.synthetic.scene import make_cameras, make_scene
from dgp_pyro.data.video import write_video
from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.camera import Camera
from dgp_pyro.geometry.camera_group import CameraGroup

SCORER = "synthetic"
#: Per-session arrays of ground_truth.npz (prefixed with ``<session>/`` when there are several).
SESSION_KEYS = ("points_3d", "points_2d", "visible", "labeled_frames", "states")


def session_seed(seed: int, session: int) -> int:
    """The motion and scene seed of session ``session`` of a project with ``seed``."""
    return int(seed) + 1000 * int(session)


def choose_labeled_frames(frames: int, labeled: int, seed: int) -> np.ndarray:
    """``labeled`` distinct frames spread over ``frames``: evenly spaced with a seeded jitter."""
    if labeled <= 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([seed, 31337])
    step = frames / labeled
    centres = (np.arange(labeled) + 0.5) * step
    jitter = rng.uniform(-0.35, 0.35, labeled) * step
    picked = np.clip(np.round(centres + jitter), 0, frames - 1).astype(np.int64)
    # keep them distinct (only matters when labeled is close to frames)
    for i in range(1, labeled):
        if picked[i] <= picked[i - 1]:
            picked[i] = picked[i - 1] + 1
    for i in range(labeled - 1, -1, -1):  # and back inside the video
        limit = frames - (labeled - i)
        if picked[i] > limit:
            picked[i] = limit
    return picked


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``numpy.savez`` with fixed zip timestamps, so equal arrays give equal bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
        for name, value in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(value), allow_pickle=False)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def _save_frames(frames: Iterator[np.ndarray], folder: Path, images: dict[int, str]) -> Iterator[np.ndarray]:
    """Pass ``frames`` through, saving frame ``t`` as ``folder / images[t]`` (PNG) on the way."""
    for t, frame in enumerate(frames):
        if t in images:
            with atomic_path(folder / images[t]) as tmp:
                Image.fromarray(frame).save(tmp, format="PNG")
        yield frame


def _view_name(session: str, view: str, views: int) -> str:
    return f"{session}_{view}" if views > 1 else session


#: How :func:`write_synthetic_project` stores the views.
LAYOUTS = ("folders", "suffix")


def side_by_side_cameras(cams: CameraGroup) -> CameraGroup:
    """The cameras of a composite image holding every view side by side (view ``v`` at ``x = v W``).

    Each camera keeps its pose, lens and focal length; its image is the composite ``(V W, H)``
    and its principal point moves right by its view's offset, so it projects into the view's
    part of the composite exactly where the view's own image would have the point, shifted.
    """
    widths = [int(c.size[0]) for c in cams.cameras]
    height = int(cams.cameras[0].size[1])
    if any(int(c.size[1]) != height for c in cams.cameras):
        raise ValueError("side by side views need equal heights")
    offsets = np.concatenate([[0], np.cumsum(widths)[:-1]])
    out = []
    for cam, offset in zip(cams.cameras, offsets, strict=True):
        matrix = np.array(cam.matrix, dtype=np.float64)
        matrix[0, 2] += float(offset)
        out.append(Camera(cam.name, (int(sum(widths)), height), matrix, cam.dist, cam.rvec, cam.tvec))
    return CameraGroup(out, metadata=dict(cams.metadata))


def _write_composite(
    root: Path,
    session: str,
    points_3d: np.ndarray,
    cams: CameraGroup,
    scene,
    seed: int,
    images: dict[int, str],
    fps: float,
) -> None:
    """The suffix layout's video: every view rendered, then put side by side frame by frame."""
    streams = [iter_view(points_3d, cam, scene, seed, v) for v, cam in enumerate(cams.cameras)]
    composite = (np.concatenate(parts, axis=1) for parts in zip(*streams, strict=True))
    folder = root / "labeled-data" / session
    write_video(
        root / "videos" / f"{session}.mp4",
        _save_frames(composite, folder, images),
        fps,
        codec="libx264",
        crf=18,
    )


def _readme(
    seed: int, views: int, frames: int, labeled: int, size, fps: float, sessions: int, layout: str = "folders"
) -> str:
    names = ", ".join(f"cam{v}" for v in range(views))
    return f"""# Synthetic multi-view mouse (dgp-pyro)

A rendered, rodent-like animal ({len(KEYPOINTS)} keypoints: {", ".join(KEYPOINTS)})
walking, turning, rearing, pausing and scanning in a 400 x 400 mm arena with a pillar, seen by {views}
calibrated camera(s) ({names}); a dark bar (an experimenter's arm) passes in front of one
camera for a while. Written by `dgp_pyro.data.synthetic.write_synthetic_project` with

    seed={seed} views={views} frames={frames} labeled={labeled}
    size={size[0]}x{size[1]} fps={fps:g} sessions={sessions} layout={layout}

- `videos/`: one video per session and camera; `labeled-data/`: {labeled} labeled frames per
  session and camera (DeepLabCut layout, scorer `{SCORER}`). Only keypoints visible in a view
  are labeled; hidden ones are empty.
- `calibration.toml`: Anipose calibration (world units: millimetres, floor at z = 0).
- `ground_truth.npz`: the true 3D and 2D keypoints of every frame, their visibility, the
  labeled frames and the behaviour (see the `dgp_pyro.data.synthetic.project` docstring).

The same arguments always give the same labels, images and ground truth (the video files
can differ in their bytes: the H.264 encoder is not bit-exact from run to run).
"""


def write_synthetic_project(
    out: str | Path,
    views: int = 3,
    frames: int = 600,
    labeled: int = 20,
    seed: int = 0,
    size: tuple[int, int] = (160, 128),
    fps: float = 30.0,
    sessions: int = 1,
    layout: str = "folders",
    hard: bool = False,
) -> Path:
    """Render the synthetic animal and write it as a DeepLabCut-style project at ``out``.

    Args:
        out: the project folder to create; it must not exist or be empty.
        views: number of cameras V (>= 1).
        frames: frames per video T.
        labeled: labeled frames per session (the same frames in every view), 0 .. T.
        seed: the seed of everything (motion, cameras, scene, noise, labeled frames).
        size: frame size (W, H) of each view, both even (the video format needs it).
        fps: frame rate.
        sessions: number of sessions (separate recordings with the same cameras).
        layout: ``"folders"`` (one video and label folder per view) or ``"suffix"`` (V >= 2:
            every view side by side in one image, a mirror rig's layout; module docstring).
        hard: render with the nuisances of real videos (:data:`~dgp_pyro.data.synthetic.nuisances.HARD`:
            look-alike left and right limbs, a textured floor, part-like distractors, motion
            blur, lighting changes); the poses, cameras and labels are the same as without.

    Returns:
        The project folder (absolute).

    The project is written into a temporary folder beside ``out`` and renamed at the end, so an
    interrupted run leaves nothing half-written. See the module docstring for the layout.
    """
    out = Path(out).absolute()
    views, frames, labeled, sessions = int(views), int(frames), int(labeled), int(sessions)
    W, H = (int(v) for v in size)
    if views < 1:
        raise DGPError(f"views must be at least 1, got {views}")
    if frames < 1:
        raise DGPError(f"frames must be at least 1, got {frames}")
    if not 0 <= labeled <= frames:
        raise DGPError(f"labeled must be between 0 and frames ({frames}), got {labeled}")
    if sessions < 1:
        raise DGPError(f"sessions must be at least 1, got {sessions}")
    if layout not in LAYOUTS:
        raise DGPError(f"unknown layout {layout!r}", hint=f"use one of {', '.join(LAYOUTS)}")
    if layout == "suffix" and views < 2:
        raise DGPError(f"the suffix layout needs at least 2 views, got {views}")
    if W < 16 or H < 16 or W % 2 or H % 2:
        raise DGPError(f"frame size {W}x{H} is not supported", hint="use an even width and height >= 16")
    if not (fps > 0 and np.isfinite(fps)):
        raise DGPError(f"fps must be positive, got {fps}")
    if out.exists():
        if not out.is_dir():
            raise DGPError("exists and is not a folder", out, hint="pick another --out")
        if any(out.iterdir()):
            raise DGPError("the folder is not empty", out, hint="pick a new folder or empty this one")
    out.parent.mkdir(parents=True, exist_ok=True)

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write(tmp, views, frames, labeled, int(seed), (W, H), float(fps), sessions, layout, hard)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write(
    root: Path,
    views: int,
    frames: int,
    labeled: int,
    seed: int,
    size: tuple[int, int],
    fps: float,
    sessions: int,
    layout: str = "folders",
    hard: bool = False,
) -> None:
    W, H = size
    nuisances = HARD if hard else None
    cams = make_cameras(views, size, seed)
    view_names = list(cams.names)
    suffix = layout == "suffix"
    # the cameras of the files: per view, or of the composite image in the suffix layout
    written = side_by_side_cameras(cams) if suffix else cams
    offsets = np.array([[v * W if suffix else 0, 0] for v in range(views)], dtype=np.float64)
    columns = [f"{kp}_{view}" for view in view_names for kp in KEYPOINTS] if suffix else list(KEYPOINTS)
    session_names = [f"session{s}" for s in range(sessions)]
    digits = max(5, len(str(frames - 1)))
    truth: dict[str, np.ndarray] = {}
    video_sets: dict[str, dict[str, str]] = {}
    for s, session in enumerate(session_names):
        s_seed = session_seed(seed, s)
        points_3d, states = simulate_motion(frames, fps, s_seed, ARENA, return_states=True)
        scene = make_scene(cams, frames, s_seed, ARENA, fps=fps, points_3d=points_3d)
        points_2d, visible = keypoint_visibility(points_3d, cams, scene)  # each view in its own image
        if suffix:  # composite pixels: exactly the composite cameras' projections
            points_2d = np.moveaxis(written.project(points_3d), 0, 1)
        chosen = choose_labeled_frames(frames, labeled, s_seed)
        per_session = {
            "points_3d": points_3d,
            "points_2d": points_2d,
            "visible": visible,
            "labeled_frames": chosen,
            "states": states.astype(np.int64),
        }
        for key, value in per_session.items():
            truth[key if sessions == 1 else f"{session}/{key}"] = value
        images = {int(t): f"img{int(t):0{digits}d}.png" for t in chosen}
        if suffix:
            _write_composite(root, session, points_3d, cams, scene, s_seed, images, fps)
            video_sets[f"videos/{session}.mp4"] = {"crop": f"0, {views * W}, 0, {H}"}
            if len(chosen):
                keys = [f"labeled-data/{session}/{images[int(t)]}" for t in chosen]
                coords = np.where(visible[chosen][..., None], points_2d[chosen], np.nan)
                table = LabelTable(
                    scorer=SCORER,
                    image_keys=keys,
                    keypoints=columns,
                    coords=coords.reshape(len(chosen), -1, 2),
                )
                folder = root / "labeled-data" / session
                write_labels(folder / f"CollectedData_{SCORER}.csv", table)
                write_labels(folder / f"CollectedData_{SCORER}.h5", table)
            continue
        for v, cam in enumerate(cams.cameras):
            name = _view_name(session, view_names[v], views)
            video = root / "videos" / f"{name}.mp4"
            folder = root / "labeled-data" / name
            rendered = iter_view(points_3d, cam, scene, s_seed, v, nuisances=nuisances)
            write_video(video, _save_frames(rendered, folder, images), fps, codec="libx264", crf=18)
            video_sets[f"videos/{name}.mp4"] = {"crop": f"0, {W}, 0, {H}"}
            if len(chosen) == 0:
                continue
            keys = [f"labeled-data/{name}/{images[int(t)]}" for t in chosen]
            coords = np.where(visible[chosen, v][..., None], points_2d[chosen, v], np.nan)
            table = LabelTable(scorer=SCORER, image_keys=keys, keypoints=list(KEYPOINTS), coords=coords)
            write_labels(folder / f"CollectedData_{SCORER}.csv", table)
            write_labels(folder / f"CollectedData_{SCORER}.h5", table)

    truth.update(
        keypoints=np.array(KEYPOINTS),
        views=np.array(view_names),
        skeleton=SKELETON_INDEX.astype(np.int64),
        bone_lengths=BONE_LENGTHS.copy(),
        fps=np.float64(fps),
        image_size=np.array([views * W if suffix else W, H], dtype=np.int64),
        view_offsets=offsets,
        layout=np.array(layout),
        seed=np.int64(seed),
        sessions=np.array(session_names),
    )
    _write_npz(root / "ground_truth.npz", truth)
    written.to_toml(root / "calibration.toml")

    config: dict = {
        "Task": "synthetic",
        "scorer": SCORER,
        "date": f"seed{seed}",
        "multianimalproject": False,
        "identity": None,
        "video_sets": video_sets,
        "bodyparts": columns,
        "skeleton": (
            [[f"{a}_{view}", f"{b}_{view}"] for view in view_names for a, b in SKELETON]
            if suffix
            else [[a, b] for a, b in SKELETON]
        ),
        "start": 0,
        "stop": 1,
        "numframes2pick": labeled,
        "skeleton_color": "black",
        "pcutoff": 0.6,
        "dotsize": 3,
        "alphavalue": 0.7,
        "colormap": "rainbow",
        "TrainingFraction": [0.95],
        "iteration": 0,
        "default_net_type": "resnet_50",
    }
    if views > 1:
        config["multiview"] = {"views": view_names, "layout": layout}
    config["synthetic"] = {
        "generator": "dgp_pyro.data.synthetic.write_synthetic_project",
        "seed": int(seed),
        "views": views,
        "frames": frames,
        "labeled": labeled,
        "size": [W, H],
        "fps": float(fps),
        "sessions": sessions,
        "layout": layout,
        "hard": bool(hard),
        "units": "mm",
    }
    atomic_write_text(root / "config.yaml", yaml.safe_dump(config, sort_keys=False, default_flow_style=None))
    atomic_write_text(root / "README.md", _readme(seed, views, frames, labeled, size, fps, sessions, layout))
