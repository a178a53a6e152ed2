"""Windows of synchronous frames for the 3D trainer (:mod:`dgp_pyro.train.dgp3d`).

A window holds ``window`` consecutive synchronous frames of one session, every image of every
frame decoded at training size: one window around each labeled frame found in a session video
(holding its training labels in every view), and seeded random ones spread over the sessions
in proportion to their length. The 2D trainer's windows (one video each) are
:class:`~dgp_pyro.data.windows.WindowPool`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Bool, Float, UInt8
from torch import Tensor

from dgp_pyro.data.augment import resize_frames
from dgp_pyro.data.sessions import SessionVideos
from dgp_pyro.data.video import VideoReader
from dgp_pyro.data.windows import to_training_pixels, video_frame_of_image
from dgp_pyro.model.views3d import ViewChannels

__all__ = ["SyncWindowPool", "build_sync_window_pool", "training_samples_in_sessions"]


@dataclass
class SyncWindowPool:
    """Decoded windows of synchronous frames, at training size.

    Attributes:
        frames: ``(P, T, I, H, W, 3)`` uint8, the ``I`` images of each frame (one per view in
            the folders layout, the one image holding every view in the suffix layout).
        labels: ``(P, T, V, J, 2)`` training labels in training pixels, NaN where missing.
        sources: ``P`` (session, first frame) pairs.
    """

    frames: UInt8[Tensor, "pool time images height width 3"]
    labels: Float[Tensor, "pool time views keypoints 2"]
    sources: list[tuple[str, int]]

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def mask(self) -> Bool[Tensor, "pool time views keypoints"]:
        return torch.isfinite(self.labels).all(-1)

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``count`` windows drawn uniformly with replacement: frames, labels, mask."""
        index = torch.randint(len(self), (count,), generator=generator)
        return self.frames[index], self.labels[index], self.mask[index]


def build_sync_window_pool(
    sessions: list[SessionVideos],
    size: tuple[int, int],
    window: int,
    num_random: int,
    seed: int,
    num_keypoints: int,
    labeled: list[tuple[str, int, int, np.ndarray]] = (),
    channels: ViewChannels | None = None,
) -> SyncWindowPool:
    """Choose and decode the windows of a 3D run.

    Args:
        sessions: the sessions (:func:`~dgp_pyro.data.sessions.session_videos`).
        size: training size ``(W, H)``.
        window: frames per window.
        num_random: random windows, spread over the sessions in proportion to their length.
        seed: seeds the placement.
        num_keypoints: ``J``.
        labeled: ``(session, frame, view index, labels (J, 2) frame pixels)`` of the training
            samples; one window is centred (with a seeded jitter) on each labeled frame and
            holds that frame's labels in every view.
        channels: which image of a frame holds each view (default: one per view); each image
            (video) is decoded once.
    """
    rng = np.random.default_rng(seed)
    by_name = {s.name: s for s in sessions}
    V = len(sessions[0].videos) if sessions else 0
    image_of = list(range(V)) if channels is None else list(channels.image)
    n_images = max(image_of, default=-1) + 1
    grouped: dict[tuple[str, int], dict[int, np.ndarray]] = defaultdict(dict)
    for session, frame, view, points in labeled:
        if session in by_name and 0 <= frame < by_name[session].n_frames:
            grouped[(session, frame)][view] = points
    plan: list[tuple[SessionVideos, int, dict[int, dict[int, np.ndarray]]]] = []
    for (name, frame), views in sorted(grouped.items()):
        session = by_name[name]
        if session.n_frames < window:
            continue
        start = int(np.clip(frame - rng.integers(0, window), 0, session.n_frames - window))
        plan.append((session, start, {frame - start: views}))
    usable = [s for s in sessions if s.n_frames >= window]
    if usable and num_random > 0:
        weights = np.array([s.n_frames - window + 1 for s in usable], dtype=float)
        for c in rng.choice(len(usable), size=num_random, p=weights / weights.sum()):
            session = usable[c]
            plan.append((session, int(rng.integers(0, session.n_frames - window + 1)), {}))
    W, H = int(size[0]), int(size[1])
    frames = torch.zeros(len(plan), window, n_images, H, W, 3, dtype=torch.uint8)
    labels = torch.full((len(plan), window, V, num_keypoints, 2), float("nan"), dtype=torch.float32)
    readers: dict[Path, VideoReader] = {}
    order = sorted(range(len(plan)), key=lambda i: (plan[i][0].name, plan[i][1]))
    try:
        for i in order:
            session, start, window_labels = plan[i]
            for image in range(n_images):
                video = session.videos[image_of.index(image)]
                reader = readers.get(video) or readers.setdefault(video, VideoReader(video))
                decoded = [b for b, _ in reader.iter_batches(window, start=start, stop=start + window)]
                frames[i, :, image] = resize_frames(torch.from_numpy(np.concatenate(decoded)), (W, H))
            for offset, views in window_labels.items():
                for v, points in views.items():
                    pixels = to_training_pixels(points, session.frame_sizes[v], (W, H))
                    labels[i, offset, v] = torch.from_numpy(pixels).float()
    finally:
        for reader in readers.values():
            reader.close()
    return SyncWindowPool(frames, labels, [(plan[i][0].name, plan[i][1]) for i in range(len(plan))])


def training_samples_in_sessions(
    setup: Any, sessions: list[SessionVideos], channels: ViewChannels
) -> list[tuple[str, int, int, np.ndarray]]:
    """``(session, frame, view, labels (J, 2) in frame pixels)`` of the training samples found in a video.

    ``setup``: the run's :class:`~dgp_pyro.train.supervised.TrainingSetup` (project and split).

    A sample is one image; it gives labels in every view it holds (all of them in the suffix layout).
    """
    project = setup.project
    samples = project.network_samples()
    video_of = {
        video: (s.name, image)
        for s in sessions
        for image, video in enumerate(channels.image_sources(s.videos))
    }
    videos = list(video_of)
    out = []
    for i in setup.train_index:
        found = video_frame_of_image(samples.image_keys[i], videos)
        if found is None:
            continue
        session, image = video_of[found[0]]
        for view in channels.views_of_image(image):
            out.append((session, int(found[1]), view, project.labels[samples.frame_index[i], view]))
    return out
