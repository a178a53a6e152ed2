"""A copy of a video with the posterior keypoints, skeleton and uncertainty ellipses drawn on.

Frames are streamed (:meth:`VideoReader.iter_batches`, one batch in memory at a time), drawn
on with Pillow's ``ImageDraw`` (fast; matplotlib per frame would be ~100x slower) and written
with :func:`~dgp_pyro.data.video.write_video`, atomically.

Indexing convention: row ``i`` of ``mean`` (and ``cov``) is drawn on frame ``frames[i]``,
so the arrays are aligned with ``frames`` and ``len(mean) == len(frames)``. With
``frames=None`` (the whole video) that means one row per video frame, indexed by absolute
frame number. To label part of a whole-video posterior, slice it the same way:
``write_labeled_video(video, out, mean[a:b], cov[a:b], names, frames=range(a, b))``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from jaxtyping import Float, UInt8
from PIL import Image, ImageDraw

from dgp_pyro.data.video import VideoReader, write_video
from dgp_pyro.errors import DGPError
from dgp_pyro.viz.plot_parts import Skeleton, bone_pairs, check_level, chi2_2dof, keypoint_colors

__all__ = ["draw_pose", "ellipse_polygon", "write_labeled_video"]

#: Points on the outline of each ellipse polygon.
ELLIPSE_POINTS = 48
_DEFAULT_FPS = 30.0


def ellipse_polygon(
    center: Float[np.ndarray, "2"], cov: Float[np.ndarray, "2 2"], level: float = 0.9, n: int = ELLIPSE_POINTS
) -> Float[np.ndarray, "n 2"] | None:
    """``n`` points on the boundary of the ``level`` region of ``N(center, cov)``, or None.

    From the eigen-decomposition ``cov = V diag(l) V^T``: ``center + V diag(sqrt(q l)) u`` for
    ``u`` on the unit circle, ``q = chi2.ppf(level, 2)``. None for a non-finite centre or
    covariance. Negative eigenvalues (round-off) are clipped to 0.
    """
    center = np.asarray(center, dtype=float)
    cov = np.asarray(cov, dtype=float)
    if not (np.all(np.isfinite(center)) and np.all(np.isfinite(cov))):
        return None
    values, vectors = np.linalg.eigh(0.5 * (cov + cov.T))
    radii = np.sqrt(chi2_2dof(level) * np.clip(values, 0.0, None))
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    circle = np.stack([np.cos(t), np.sin(t)])  # (2, n)
    return center + (vectors @ (radii[:, None] * circle)).T


def draw_pose(
    frame: UInt8[np.ndarray, "H W 3"],
    mean: Float[np.ndarray, "K 2"],
    cov: Float[np.ndarray, "K 2 2"] | None,
    bones: Sequence[tuple[int, int]],
    colors: Sequence[tuple[int, int, int]],
    level: float = 0.9,
    radius: float | None = None,
    line_width: int | None = None,
) -> UInt8[np.ndarray, "H W 3"]:
    """A copy of ``frame`` with the skeleton, the ellipses and the keypoints drawn on it.

    Bones are white lines, ellipses outlines in the keypoint's colour, keypoints discs in their
    colour with a black rim. Point ``(x, y)`` is pixel column ``x``, row ``y``. NaN keypoints,
    NaN covariances and bones with a NaN end are skipped.
    """
    h, w = frame.shape[:2]
    radius = max(2.0, min(h, w) / 90) if radius is None else float(radius)
    line_width = max(1, round(min(h, w) / 220)) if line_width is None else int(line_width)
    limit = 4.0 * max(h, w)  # keep huge ellipses / far points within what Pillow handles well
    image = Image.fromarray(np.ascontiguousarray(frame[..., :3]), mode="RGB")
    draw = ImageDraw.Draw(image)
    finite = np.all(np.isfinite(mean), axis=1)
    for i, j in bones:
        if finite[i] and finite[j]:
            a, b = np.clip(mean[i], -limit, limit), np.clip(mean[j], -limit, limit)
            draw.line([tuple(a), tuple(b)], fill=(255, 255, 255), width=line_width)
    if cov is not None:
        for k in np.flatnonzero(finite):
            poly = ellipse_polygon(mean[k], cov[k], level)
            if poly is None:
                continue
            poly = np.clip(poly, -limit, limit)
            outline = [tuple(p) for p in poly]
            draw.line(outline + [outline[0]], fill=tuple(colors[k]), width=line_width, joint="curve")
    for k in np.flatnonzero(finite):
        x, y = mean[k]
        if not (-limit < x < limit and -limit < y < limit):
            continue
        draw.ellipse(
            [x - radius, y - radius, x + radius, y + radius], fill=tuple(colors[k]), outline=(0, 0, 0)
        )
    return np.asarray(image)


def write_labeled_video(
    video_path: str | Path,
    out_path: str | Path,
    mean: Float[np.ndarray, "T K 2"],
    cov: Float[np.ndarray, "T K 2 2"] | None,
    keypoint_names: Sequence[str],
    skeleton: Skeleton = (),
    frames: range | None = None,
    level: float = 0.9,
    fps: float | None = None,
    batch_size: int = 32,
    radius: float | None = None,
    line_width: int | None = None,
) -> Path:
    """Write ``out_path``: the frames ``frames`` of ``video_path`` with the pose drawn on.

    Args:
        video_path: the source video.
        out_path: the labeled video (``.mp4``, ``.mov``, ``.mkv`` or ``.avi``), written
            atomically.
        mean: ``(T, K, 2)`` posterior means in pixels; row ``i`` is drawn on frame
            ``frames[i]`` (see the module docstring), so ``T == len(frames)``.
        cov: ``(T, K, 2, 2)`` posterior covariances aligned the same way, or None for no
            ellipses.
        keypoint_names: the ``K`` names (they fix the colours, the same as in the plots).
        skeleton: bones as keypoint index pairs or name pairs.
        frames: the frames to write, a ``range`` with a positive step (default all).
        level: credible level of the ellipses.
        fps: output frame rate (default: the source's, or 30 if it has none).
        batch_size: frames decoded per batch (memory is one batch, whatever the length).
        radius, line_width: keypoint disc radius and line width in pixels (default: scaled
            with the frame size).

    Returns:
        the path written.

    Raises:
        DGPError: the video cannot be read, the frame range is outside it or empty, or the
            arrays do not have one row per frame written.
    """
    video_path, out_path = Path(video_path), Path(out_path)
    mean = np.asarray(mean, dtype=float)
    if mean.ndim != 3 or mean.shape[2] != 2:
        raise ValueError(f"mean must have shape (T, K, 2), got {mean.shape}")
    t, k = mean.shape[:2]
    names = list(keypoint_names)
    if len(names) != k:
        raise ValueError(f"{len(names)} keypoint names for {k} keypoints in mean")
    if cov is not None:
        cov = np.asarray(cov, dtype=float)
        if cov.shape != (t, k, 2, 2):
            raise ValueError(f"cov must have shape ({t}, {k}, 2, 2), got {cov.shape}")
    level = check_level(level)
    bones = bone_pairs(skeleton, names)
    colors = [tuple(int(round(255 * c)) for c in rgba[:3]) for rgba in keypoint_colors(k)]

    with VideoReader(video_path) as video:
        frames = range(video.n_frames) if frames is None else frames
        if not isinstance(frames, range) or frames.step < 1:
            raise ValueError(f"frames must be a range with a positive step, got {frames!r}")
        if len(frames) == 0:
            raise DGPError(f"the frame range {frames.start}:{frames.stop} is empty", video_path)
        if frames.start < 0 or frames[-1] >= video.n_frames:
            raise DGPError(
                f"frames {frames.start}..{frames[-1]} are outside the video (it has {video.n_frames} frames)",
                video_path,
            )
        if t != len(frames):
            hint = "row i of mean/cov is drawn on frame frames[i]"
            if t == video.n_frames:
                hint = f"mean covers the whole video: pass mean[{frames.start}:{frames.stop}:{frames.step}]"
            raise DGPError(f"mean has {t} rows for {len(frames)} frames to write", hint=hint)
        rate = fps if fps is not None else (video.fps if math.isfinite(video.fps) and video.fps > 0 else None)
        rate = _DEFAULT_FPS if rate is None else float(rate)

        def drawn() -> Iterator[np.ndarray]:
            for batch, indices in video.iter_batches(batch_size, frames.start, frames[-1] + 1):
                for image, index in zip(batch, indices, strict=True):
                    offset = int(index) - frames.start
                    if offset % frames.step:
                        continue
                    row = offset // frames.step
                    yield draw_pose(
                        image,
                        mean[row],
                        None if cov is None else cov[row],
                        bones,
                        colors,
                        level,
                        radius,
                        line_width,
                    )

        write_video(out_path, drawn(), fps=rate, pad=True)
    return out_path
