"""3D posteriors at a project's labeled images: what scores and calibrates a 3D run.

A labeled image is one image of a synchronous frame. One that is a frame of a session video gets
the posterior of its frame given the synchronous frames around it, as ``predict`` computes it;
any other labeled image gets the single-frame posterior of its labeled frame from every view's
image of that frame. :func:`image_posteriors3d` gives the reprojected 2D rows (one per image,
what :func:`~dgp_pyro.posterior.posterior2d.image_posteriors` gives for a 3D run);
:func:`labeled_posteriors3d` adds the 3D posterior at the labeled frames (what the 3D
calibration, :func:`~dgp_pyro.posterior.calibrate.calibrate_posterior`, fits).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float

from dgp_pyro.data.dataset import image_size
from dgp_pyro.data.sessions import session_videos
from dgp_pyro.data.windows import video_frame_of_image
from dgp_pyro.errors import DGPError
from dgp_pyro.model.views3d import ViewChannels
from dgp_pyro.posterior.marginals import DEFAULT_LEVELS, KeypointPosterior, Posterior3D
from dgp_pyro.posterior.posterior3d import PosteriorModel3D, videos_posterior3d
from dgp_pyro.posterior.predict import NetworkSummaries, predict_images
from dgp_pyro.run.folder import Run

__all__ = ["image_posteriors3d", "labeled_posteriors3d"]


def image_posteriors3d(
    run: Run,
    image_keys: Sequence[str],
    levels: Sequence[float] = DEFAULT_LEVELS,
    network: torch.nn.Module | None = None,
    context: int = 16,
    calibrated: bool = True,
) -> KeypointPosterior:
    """The reprojected 2D posterior at labeled images of a 3D run (one row per image).

    A labeled image is one image of a synchronous frame (one view's image in the folders layout,
    the image holding every view in the suffix layout); its row holds the network's channels
    (``run.config.keypoints``), each the reprojection of the 3D posterior into that channel's
    view. An image that is a frame of a session video (DeepLabCut naming) gets the posterior of
    its frame given ``context`` synchronous frames on each side, as ``predict`` computes it; any
    other labeled image (e.g. a mirror project's ``labeled-data/img07.png``) gets the
    single-frame posterior of its labeled frame from every view's image of that frame (no
    temporal context, the skeleton only). Rows are in frame pixels, like
    :func:`~dgp_pyro.posterior.posterior2d.image_posteriors` of a 2D run.

    Raises:
        DGPError: a key that is neither a frame of a session video nor a labeled image of the
            project, or a labeled image whose size is not its camera's.
    """
    return labeled_posteriors3d(run, image_keys, levels, network, context, calibrated)[0]


def labeled_posteriors3d(
    run: Run,
    image_keys: Sequence[str],
    levels: Sequence[float] = DEFAULT_LEVELS,
    network: torch.nn.Module | None = None,
    context: int = 16,
    calibrated: bool = True,
) -> tuple[KeypointPosterior, np.ndarray, Float[np.ndarray, "f j 3"], Float[np.ndarray, "f j 3"]]:
    """:func:`image_posteriors3d`'s 2D rows, and the 3D posterior at the same frames.

    Returns:
        ``(2D posterior per image, frames (F,), mean (F, J, 3), std (F, J, 3))``: the 3D rows
        are one per labeled frame of the project (``project.labels``' first axis) that any key
        is an image of, in increasing order; a key that is a video frame but no labeled image
        has a 2D row only.
    """
    channels, sources = _posteriors_at_images(run, image_keys, levels, network, context, calibrated)
    parts = [(posterior, row, channels.image_pairs(image)) for posterior, row, image, _ in sources]

    def gather(values, tail: tuple[int, ...]) -> np.ndarray:
        if not parts:
            return np.zeros((0, len(channels.channels), *tail))
        return np.stack([values(p)[r, [v for v, _ in pairs], [j for _, j in pairs]] for p, r, pairs in parts])

    reprojected = KeypointPosterior(
        mean=gather(lambda p: p.mean_2d, (2,)),
        cov=gather(lambda p: p.cov_2d, (2, 2)),
        confidence=gather(lambda p: p.confidence, ()),
        frame_index=np.arange(len(parts)),
        lower={lv: gather(lambda p, lv=lv: p.lower_2d[lv], (2,)) for lv in levels} if parts else {},
        upper={lv: gather(lambda p, lv=lv: p.upper_2d[lv], (2,)) for lv in levels} if parts else {},
    )
    at_frame: dict[int, tuple[Posterior3D, int]] = {}
    for posterior, row, _, frame in sources:
        if frame is not None:
            at_frame.setdefault(frame, (posterior, row))
    frames = sorted(at_frame)
    J = len(channels.keypoints)
    mean = np.stack([at_frame[f][0].mean[at_frame[f][1]] for f in frames]) if frames else np.zeros((0, J, 3))
    std = np.stack([at_frame[f][0].std[at_frame[f][1]] for f in frames]) if frames else np.zeros((0, J, 3))
    return reprojected, np.asarray(frames, dtype=np.int64), mean, std


def _posteriors_at_images(
    run: Run,
    image_keys: Sequence[str],
    levels: Sequence[float],
    network: torch.nn.Module | None,
    context: int,
    calibrated: bool,
) -> tuple[ViewChannels, list[tuple[Posterior3D, int, int, int | None]]]:
    """Per key: ``(3D posterior, its row, the key's image of the frame, the project's labeled frame)``.

    The labeled frame is None for a video frame that is not a labeled image of the project.
    See :func:`image_posteriors3d`.
    """
    project = run.project()
    model = PosteriorModel3D.from_run(run, calibrated=calibrated)
    channels = model.channels
    network = run.network() if network is None else network
    sessions = session_videos(project) if project.sessions else []
    where = {
        video: (session, image)
        for session in sessions
        for image, video in enumerate(channels.image_sources(session.videos))
    }
    samples = project.network_samples()
    index_of = {key: i for i, key in enumerate(samples.image_keys)}
    windows: dict[tuple[str, int], tuple[Posterior3D, int]] = {}
    rows: list[tuple[tuple[str, int] | int, int, int | None]] = []  # (window or frame, image, frame)
    single_frames: list[int] = []
    for key in image_keys:
        labeled = int(samples.frame_index[index_of[key]]) if key in index_of else None
        found = video_frame_of_image(key, list(where))
        if found is not None and found[1] < where[found[0]][0].n_frames:
            video, frame = found
            session, image = where[video]
            if (session.name, frame) not in windows:
                start, stop = max(0, frame - context), min(session.n_frames, frame + context + 1)
                posterior = videos_posterior3d(run, session.videos, levels, network, start, stop, model=model)
                windows[(session.name, frame)] = (posterior, frame - start)
            rows.append(((session.name, frame), image, labeled))
            continue
        if labeled is None:
            raise DGPError(
                f"image {key!r} is neither a frame of a session video nor a labeled image of the project",
                project.root,
                hint="a 3D run scores the project's labeled images",
            )
        if labeled not in single_frames:
            single_frames.append(labeled)
        rows.append((labeled, channels.image[int(samples.view_index[index_of[key]])], labeled))
    singles = _labeled_frame_posteriors(run, project, model, network, single_frames, levels)
    sources = []
    for source, image, labeled in rows:
        posterior, row = windows[source] if isinstance(source, tuple) else (singles[source], 0)
        sources.append((posterior, row, image, labeled))
    return channels, sources


def _labeled_frame_posteriors(
    run: Run,
    project,
    model: PosteriorModel3D,
    network: torch.nn.Module,
    frames: Sequence[int],
    levels: Sequence[float],
) -> dict[int, Posterior3D]:
    """The single-frame 3D posterior of labeled frames ``frames`` from every view's labeled image.

    All images go through the network in one batch; a view without an image of the frame
    (folders layout) observes nothing.
    """
    channels = model.channels
    wanted = []  # (frame, image, path)
    for frame in frames:
        for image, path in enumerate(channels.image_sources(project.image_paths[frame])):
            if path is None:
                continue
            size = tuple(image_size(path))
            for v in channels.views_of_image(image):
                camera = model.group.cameras[v] if model.group is not None else None
                if camera is not None and tuple(camera.size) != size:
                    raise DGPError(
                        f"image {Path(path).name} is {size[0]}x{size[1]} but camera {camera.name!r} was "
                        f"calibrated at {camera.size[0]}x{camera.size[1]}",
                        path,
                        hint="use the calibration made for these images (same resolution and crop)",
                    )
            wanted.append((frame, image, path))
    predicted = predict_images(
        network, [path for _, _, path in wanted], run.size, second_mode=model.agree_px is not None
    )
    row_of = {(frame, image): r for r, (frame, image, _) in enumerate(wanted)}
    K = len(channels.channels)
    out = {}
    for frame in frames:
        per_image = []
        for image in range(channels.num_images):
            r = row_of.get((frame, image))
            if r is None:
                per_image.append(NetworkSummaries.empty(1, K, second=predicted.second is not None))
            else:
                per_image.append(predicted.select([r]))
        mean, cov, confidence = model.summaries_of(per_image)
        confidence = np.nan_to_num(confidence, nan=0.0)
        second = model.second_modes_of(per_image)
        out[frame] = model.posterior(mean, cov, confidence, np.array([frame]), levels, second)
    return out
