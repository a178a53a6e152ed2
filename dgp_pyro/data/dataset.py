"""Labeled images for training the heatmap network, and the train/test split by frame.

:class:`LabeledImages` reads every labeled image once, resizes it to the training size with
:func:`~dgp_pyro.data.augment.resize_frames` and keeps it in memory as ``uint8`` (projects are
a few hundred images at most: 400 images of 384 x 384 are 180 MB). Labels are scaled with the
same factors (:func:`~dgp_pyro.data.augment.scale_points`). Batches are drawn and augmented
on the fly with a ``torch.Generator`` (:meth:`LabeledImages.sample_batch`), in the training
process itself: on a 2-core machine worker processes would only compete with the network.

:func:`split_frames` holds frames out *by frame*: in a multi-view project every view of a
held-out frame is held out, so a test frame is never seen by the network from another camera.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float, UInt8
from PIL import Image, UnidentifiedImageError
from torch import Tensor

from dgp_pyro.data.augment import AugmentConfig, augment_batch, resize_frames, scale_points
from dgp_pyro.errors import DGPError

__all__ = ["LabeledImages", "read_image", "image_size", "split_frames", "read_split_file"]


def read_image(path: str | Path) -> UInt8[np.ndarray, "h w 3"]:
    """An image file as RGB ``uint8`` ``(H, W, 3)``; a missing or unreadable file is a DGPError."""
    path = Path(path)
    if not path.is_file():
        raise DGPError(
            "labeled image not found",
            path,
            hint="the label file lists this image; restore the project's labeled-data folder",
        )
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, UnidentifiedImageError) as error:
        raise DGPError(f"cannot read the image ({error})", path) from error


def image_size(path: str | Path) -> tuple[int, int]:
    """``(W, H)`` of an image file, read from its header only."""
    path = Path(path)
    if not path.is_file():
        raise DGPError(
            "labeled image not found",
            path,
            hint="the label file lists this image; restore the project's labeled-data folder",
        )
    try:
        with Image.open(path) as image:
            return int(image.width), int(image.height)
    except (OSError, UnidentifiedImageError) as error:
        raise DGPError(f"cannot read the image ({error})", path) from error


class LabeledImages(torch.utils.data.Dataset):
    """Labeled images at training size, cached in memory.

    Args:
        image_paths: M image files.
        labels: ``(M, K, 2)`` pixel labels in the images' own coordinates, NaN = missing.
        size: training size ``(W, H)``.
        keys: M image keys (for messages and bookkeeping); default: the paths.

    Attributes:
        images: ``(M, H, W, 3)`` uint8 tensor at training size.
        points: ``(M, K, 2)`` float32 tensor of labels at training size, NaN = missing.
        original_sizes: ``(W0, H0)`` of each image as stored.
    """

    def __init__(
        self,
        image_paths: Sequence[str | Path],
        labels: Float[np.ndarray, "m k 2"],
        size: Sequence[int],
        keys: Sequence[str] | None = None,
    ):
        self.size = (int(size[0]), int(size[1]))
        self.image_paths = [Path(p) for p in image_paths]
        self.keys = list(keys) if keys is not None else [str(p) for p in self.image_paths]
        labels = np.asarray(labels, dtype=np.float64)
        if labels.ndim != 3 or labels.shape[0] != len(self.image_paths) or labels.shape[2] != 2:
            raise ValueError(f"labels {labels.shape} must be ({len(self.image_paths)}, K, 2)")
        w, h = self.size
        images = torch.empty((len(self.image_paths), h, w, 3), dtype=torch.uint8)
        points = np.empty_like(labels)
        self.original_sizes: list[tuple[int, int]] = []
        for i, path in enumerate(self.image_paths):
            pixels = read_image(path)
            original = (pixels.shape[1], pixels.shape[0])
            self.original_sizes.append(original)
            images[i] = resize_frames(torch.from_numpy(pixels)[None], self.size)[0]
            points[i] = scale_points(labels[i], original, self.size)
        self.images = images
        self.points = torch.from_numpy(points).float()

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> tuple[UInt8[Tensor, "h w 3"], Float[Tensor, "k 2"]]:
        return self.images[index], self.points[index]

    def sample_batch(
        self,
        batch_size: int,
        generator: torch.Generator,
        augment: AugmentConfig | None = None,
        flip_perm: Tensor | None = None,
    ) -> tuple[UInt8[Tensor, "b h w 3"], Float[Tensor, "b k 2"]]:
        """Draw ``batch_size`` images uniformly (with replacement) and augment them.

        Every call draws ``batch_size`` indices and ``7 * batch_size`` augmentation uniforms
        from ``generator``, whatever the ranges of ``augment`` are, so the random stream is the
        same shape for every setting (occlusion and motion blur, when on, draw ``9 * batch_size``
        more).
        """
        index = torch.randint(len(self), (batch_size,), generator=generator)
        images, points = self.images[index], self.points[index]
        return augment_batch(images, points, augment or AugmentConfig.none(), generator, flip_perm)


# --------------------------------------------------------------------------- splitting


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """Read a holdout file ``{"test": [...], "train": [...]}`` (``train`` optional)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise DGPError(f"cannot read the holdout file ({error.strerror or error})", path) from error
    except ValueError as error:
        raise DGPError(f"the holdout file is not valid JSON ({error})", path) from error
    if not isinstance(data, dict) or "test" not in data:
        raise DGPError(
            'the holdout file must be a JSON object with a "test" list (and optionally "train")',
            path,
            hint='e.g. {"test": ["labeled-data/video1/img005.png"]}',
        )
    out: dict[str, list[str]] = {}
    for name in ("test", "train"):
        if name in data:
            if not isinstance(data[name], list) or not all(isinstance(k, str) for k in data[name]):
                raise DGPError(f'"{name}" in the holdout file must be a list of image paths', path)
            out[name] = list(data[name])
    unknown = sorted(set(data) - {"test", "train"})
    if unknown:
        raise DGPError(f"unknown entries {unknown} in the holdout file", path, hint='use "test" and "train"')
    return out


def _normalise_key(key: str) -> str:
    key = key.replace("\\", "/").strip()
    return key[2:] if key.startswith("./") else key


def split_frames(
    image_keys: Sequence[str],
    frame_index: np.ndarray,
    labels: np.ndarray,
    holdout: float | str | Path,
    seed: int,
) -> dict[str, list[str]]:
    """Split samples into train and test *by frame* (all views of a frame on the same side).

    Args:
        image_keys: M sample keys, as in the label files.
        frame_index: ``(M,)`` the frame of each sample (samples of one frame share it).
        labels: ``(M, K, 2)`` labels; frames with no finite label at all are left out of both sides.
        holdout: a fraction of the labeled frames to hold out (drawn with ``seed``; at least one
            frame when positive, and at least one frame always trains), or a JSON file
            ``{"test": [...], "train": [...]}`` of image keys: the listed frames are held out;
            with ``train`` given only those frames train (the rest is unused).
        seed: seeds the random draw of a fractional holdout.

    Returns:
        ``{"train": [keys], "test": [keys]}`` listing every sample (every view) of each frame.

    Raises:
        DGPError: fewer than two labeled frames, a holdout outside [0, 1), a holdout file
            naming an unknown image, a frame both in ``train`` and ``test``, or no frame left
            to train on.
    """
    keys = [str(k) for k in image_keys]
    frame_index = np.asarray(frame_index)
    labeled_sample = np.isfinite(np.asarray(labels)).all(axis=-1).any(axis=-1)
    frames = sorted({int(f) for f, ok in zip(frame_index, labeled_sample, strict=True) if ok})
    if len(frames) < 2:
        raise DGPError(
            f"the project has {len(frames)} labeled frame{'s' if len(frames) != 1 else ''}; "
            "training needs at least 2",
            hint="label more frames",
        )
    samples_of: dict[int, list[int]] = {}
    for i, f in enumerate(frame_index):
        samples_of.setdefault(int(f), []).append(i)

    if isinstance(holdout, str | Path) and not _is_number(holdout):
        path = Path(holdout)
        spec = read_split_file(path)
        frame_of = {_normalise_key(k): int(f) for k, f in zip(keys, frame_index, strict=True)}

        def frames_named(names: list[str], what: str) -> set[int]:
            unknown = [n for n in names if _normalise_key(n) not in frame_of]
            if unknown:
                shown = ", ".join(unknown[:3]) + (" ..." if len(unknown) > 3 else "")
                raise DGPError(
                    f'the holdout file\'s "{what}" lists {len(unknown)} image(s) that are not labeled '
                    f"images of the project: {shown}",
                    path,
                    hint=f"use image paths as in the label file, e.g. {keys[0]!r}",
                )
            return {frame_of[_normalise_key(n)] for n in names}

        test = frames_named(spec["test"], "test") & set(frames)
        if "train" in spec:
            train = frames_named(spec["train"], "train")
            both = train & test
            if both:
                shown = ", ".join(keys[samples_of[f][0]] for f in sorted(both)[:3])
                raise DGPError(f"frames listed both in train and test: {shown}", path)
            train &= set(frames)
        else:
            train = set(frames) - test
        if not train:
            raise DGPError("the holdout file leaves no labeled frame to train on", path)
    else:
        fraction = float(holdout)
        if not 0.0 <= fraction < 1.0:
            raise DGPError(f"--holdout {fraction} must be a fraction in [0, 1) or a JSON file")
        n_test = 0 if fraction == 0 else min(len(frames) - 1, max(1, int(round(fraction * len(frames)))))
        order = np.random.default_rng(seed).permutation(len(frames))
        test = {frames[i] for i in order[:n_test]}
        train = set(frames) - test
    return {
        "train": [keys[i] for f in sorted(train) for i in samples_of[f]],
        "test": [keys[i] for f in sorted(test) for i in samples_of[f]],
    }


def _is_number(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
