r"""Jumps in a keypoint track, and how far a posterior follows them.

A heatmap network sometimes puts its peak on the wrong blob for a frame or two (the other paw,
a shadow) and then comes back. At video rates a body part cannot leave and return like that, so
such a *jump* is a network error that needs no label to be found: keypoint :math:`j` jumps at
frames :math:`t, \dots, t + n - 1` (:math:`1 \le n \le N`) when the frames on either side agree,

.. math::
    \lVert x_{t-1,j} - x_{t+n,j} \rVert \le D / 2,

and every frame between them lies more than :math:`D` from the straight line joining them,

.. math::
    e_{s} = \lVert x_{sj} - \ell_{sj} \rVert > D, \qquad
    \ell_{sj} = x_{t-1,j} + \tfrac{s - t + 1}{n + 1} (x_{t+n,j} - x_{t-1,j}),
    \quad s = t, \dots, t + n - 1.

The jump's size is :math:`\max_s e_s`. Another track :math:`z` (the posterior mean) *follows*
the jump by its own largest distance from the same line, :math:`\max_s \lVert z_{sj} -
\ell_{sj} \rVert`, reported as a share of the jump's size: 0 where the posterior stayed on the
line, 1 where it went all the way. (The line is the detections' own, so a posterior that
smooths the neighbouring frames too can sit a little off it.)

Symbols: :math:`x` the network's detections, :math:`z` the track compared, :math:`t` frame,
:math:`j` keypoint, :math:`n` the jump's length, :math:`N` the longest length looked for,
:math:`D` the smallest jump, pixels.

Choose :math:`D` well above what a part moves in :math:`n + 1` frames at the video's rate
(at 250 frames per second a mouse's paw moves a few pixels a frame); at low frame rates real
fast movements look like jumps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

__all__ = ["Jump", "find_jumps", "follow_shares", "jump_excursion"]


@dataclass(frozen=True)
class Jump:
    """Keypoint ``keypoint`` leaves its path at frame ``start`` for ``frames`` frames, by ``size`` pixels."""

    keypoint: int
    start: int
    frames: int
    size: float

    @property
    def stop(self) -> int:
        """One past the jump's last frame."""
        return self.start + self.frames


def _line(track: np.ndarray, keypoint: int, start: int, frames: int) -> np.ndarray:
    """The straight line between the frames either side of a jump, at the jump's frames."""
    before, after = track[start - 1, keypoint], track[start + frames, keypoint]
    steps = np.arange(1, frames + 1)[:, None] / (frames + 1)
    return before + steps * (after - before)


def find_jumps(track: Float[np.ndarray, "T K 2"], min_px: float, max_frames: int = 2) -> list[Jump]:
    """The jumps of every keypoint of ``track`` (see the module doc), in order of keypoint and frame.

    Where jumps of several lengths start at one frame, the shortest is taken; jumps do not
    overlap. NaN frames never make or end a jump.
    """
    track = np.asarray(track, dtype=float)
    if track.ndim != 3 or track.shape[-1] != 2:
        raise ValueError(f"track must be (frames, keypoints, 2), got shape {track.shape}")
    if min_px <= 0 or max_frames < 1:
        raise ValueError(f"need min_px > 0 and max_frames >= 1, got {min_px} and {max_frames}")
    T, K, _ = track.shape
    # candidates[n][t, j]: a jump of length n starts at t (vectorised over frames and keypoints)
    candidates: dict[int, np.ndarray] = {}
    for n in range(1, max_frames + 1):
        found = np.zeros((T, K), dtype=bool)
        starts = np.arange(1, T - n)
        if len(starts):
            before, after = track[starts - 1], track[starts + n]
            ends_agree = np.linalg.norm(after - before, axis=-1) <= min_px / 2
            away = np.ones_like(ends_agree)
            for s in range(n):
                line = before + (s + 1) / (n + 1) * (after - before)
                away &= np.linalg.norm(track[starts + s] - line, axis=-1) > min_px
            found[starts] = ends_agree & away  # NaN compares False: no jump
        candidates[n] = found
    jumps = []
    for j in range(K):
        t = 1
        while t < T - 1:
            n = next((n for n in range(1, max_frames + 1) if candidates[n][t, j]), 0)
            if n:
                size = float(np.linalg.norm(track[t : t + n, j] - _line(track, j, t, n), axis=-1).max())
                jumps.append(Jump(j, t, n, size))
                t += n + 1  # the frame after a jump is its end, not a new start
            else:
                t += 1
    return jumps


def jump_excursion(
    track: Float[np.ndarray, "T K 2"], anchor: Float[np.ndarray, "T K 2"], jump: Jump
) -> float:
    """How far ``track`` goes from the line of ``anchor`` (the detections) over ``jump``'s frames, pixels."""
    line = _line(np.asarray(anchor, dtype=float), jump.keypoint, jump.start, jump.frames)
    moved = np.asarray(track, dtype=float)[jump.start : jump.stop, jump.keypoint] - line
    return float(np.linalg.norm(moved, axis=-1).max())


def follow_shares(
    track: Float[np.ndarray, "T K 2"], anchor: Float[np.ndarray, "T K 2"], jumps: list[Jump]
) -> Float[np.ndarray, " n"]:
    """For each jump of ``anchor``, the share of it that ``track`` follows (0: none, 1: all)."""
    return np.array([jump_excursion(track, anchor, jump) / jump.size for jump in jumps])
