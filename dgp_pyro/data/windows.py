"""Windows of consecutive video frames for the unlabeled half of the objective.

Deep Graph Pose learns from video: each training step sees a few windows of ``T`` consecutive
frames, and the temporal and skeletal potentials tie the frames of a window together. This
module picks those windows once per run (a seeded *pool*), decodes their frames at the
training size and keeps them in memory as uint8, so a step costs no decoding and memory is
bounded by the pool (``windows * T`` frames), not by the videos' length.

Two kinds of windows go into the pool:

- *around labeled frames*: a labeled image ``labeled-data/<video stem>/img00042.png`` is frame
  42 of the video ``<video stem>`` (DeepLabCut's naming); its window holds the frame's labels
  (the other frames' labels are missing), so labeled and unlabeled frames share windows, as in
  the original Deep Graph Pose schedule;
- *unlabeled*: windows at seeded random places of every video (and of extra videos).

Only frames of the training split contribute labels; held-out frames may appear as unlabeled
frames of a window (their labels never do).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Bool, Float, UInt8
from torch import Tensor

from dgp_pyro.data.augment import resize_frames
from dgp_pyro.data.video import VideoReader, video_info

_FRAME_NUMBER = re.compile(r"(\d+)(?=\.[A-Za-z0-9]+$)")


@dataclass
class WindowPool:
    """Decoded windows at training size, with the training labels that fall inside them.

    Attributes:
        frames: ``(P, T, H, W, 3)`` uint8 frames.
        labels: ``(P, T, K, 2)`` labels in training pixels, NaN where missing.
        sources: ``P`` (video path, first frame) pairs, for the record.
    """

    frames: UInt8[Tensor, "pool time height width 3"]
    labels: Float[Tensor, "pool time keypoints 2"]
    sources: list[tuple[str, int]]

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    @property
    def mask(self) -> Bool[Tensor, "pool time keypoints"]:
        return torch.isfinite(self.labels).all(-1)

    def sample(self, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """``count`` windows drawn uniformly with replacement: frames, labels, mask."""
        index = torch.randint(len(self), (count,), generator=generator)
        return self.frames[index], self.labels[index], self.mask[index]


def video_frame_of_image(image_key: str, videos: list[Path]) -> tuple[Path, int] | None:
    """The video and frame a labeled image was extracted from, by DeepLabCut's naming.

    ``labeled-data/<stem>/img00042.png`` is frame 42 of the video whose file stem is ``<stem>``;
    ``None`` when no such video exists or the image name carries no frame number.
    """
    parts = image_key.replace("\\", "/").split("/")
    match = _FRAME_NUMBER.search(parts[-1])
    if match is None or len(parts) < 2:
        return None
    by_stem = {Path(v).stem: Path(v) for v in videos}
    video = by_stem.get(parts[-2])
    return None if video is None else (video, int(match.group(1)))


def to_training_pixels(points: np.ndarray, frame_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Frame pixels -> training pixels (the inverse of the mapping in :mod:`dgp_pyro.posterior.predict`)."""
    factor = np.array([frame_size[0] / size[0], frame_size[1] / size[1]])
    return (points + 0.5) / factor - 0.5


def build_window_pool(
    videos: list[Path],
    size: tuple[int, int],
    window: int,
    num_random: int,
    seed: int,
    num_keypoints: int,
    labeled: list[tuple[str, np.ndarray]] = (),
) -> WindowPool:
    """Choose and decode the windows of a run.

    Args:
        videos: the videos to draw windows from.
        size: training size ``(W, H)``.
        window: frames per window ``T``.
        num_random: unlabeled windows to draw, spread over the videos in proportion to length.
        seed: seeds the window placement.
        num_keypoints: ``K``, the network's keypoints.
        labeled: ``(image key, labels (K, 2) in frame pixels)`` of the training frames; a window
            is centred on each one that maps to a video frame (:func:`video_frame_of_image`).
    """
    rng = np.random.default_rng(seed)
    lengths = {Path(v): video_info(v)["n_frames"] for v in videos}
    usable = [v for v, n in lengths.items() if n >= window]
    plan: list[tuple[Path, int, dict[int, np.ndarray]]] = []
    for key, points in labeled:
        found = video_frame_of_image(key, usable)
        if found is None or found[1] >= lengths[found[0]]:
            continue
        video, frame = found
        start = int(np.clip(frame - rng.integers(0, window), 0, lengths[video] - window))
        plan.append((video, start, {frame - start: points}))
    if usable and num_random > 0:
        weights = np.array([lengths[v] - window + 1 for v in usable], dtype=float)
        choice = rng.choice(len(usable), size=num_random, p=weights / weights.sum())
        for c in choice:
            video = usable[c]
            plan.append((video, int(rng.integers(0, lengths[video] - window + 1)), {}))
    if not plan:
        empty = torch.zeros(0, window, size[1], size[0], 3, dtype=torch.uint8)
        return WindowPool(empty, torch.zeros(0, window, num_keypoints, 2, dtype=torch.float32), [])

    frames = torch.empty(len(plan), window, size[1], size[0], 3, dtype=torch.uint8)
    labels = torch.full((len(plan), window, num_keypoints, 2), float("nan"), dtype=torch.float32)
    order = sorted(range(len(plan)), key=lambda i: (str(plan[i][0]), plan[i][1]))
    readers: dict[Path, VideoReader] = {}
    try:
        for i in order:
            video, start, window_labels = plan[i]
            reader = readers.get(video) or readers.setdefault(video, VideoReader(video))
            decoded = [batch for batch, _ in reader.iter_batches(window, start=start, stop=start + window)]
            clip = torch.from_numpy(np.concatenate(decoded))
            frames[i] = resize_frames(clip, size)
            frame_size = (reader.width, reader.height)
            for offset, points in window_labels.items():
                labels[i, offset] = torch.from_numpy(to_training_pixels(points, frame_size, size)).float()
    finally:
        for reader in readers.values():
            reader.close()
    return WindowPool(frames, labels, [(str(plan[i][0]), plan[i][1]) for i in range(len(plan))])
