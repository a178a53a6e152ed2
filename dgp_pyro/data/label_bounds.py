"""Labels that fall outside their image: refused with the label file, the image and how many.

A label far outside its image is a damaged label file or a resized image (an image halved in
size puts most of its labels outside it; a camera's images at half the calibrated size put a
third of them outside and the rest at the wrong scale). Training would silently drop them, so
:func:`check_labels_inside_images` refuses them, naming the label file, the first image, its size
and how many labels in how many images. Labels a little outside (up to
:data:`OUTSIDE_TOLERANCE` of the image's size, at least 2 px) are accepted: annotators click at
the border and DeepLabCut keeps such labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dgp_pyro.errors import DGPError

__all__ = ["OUTSIDE_TOLERANCE", "check_labels_inside_images", "read_image_size"]

#: How far outside its image a label may lie, as a fraction of the image's width or height.
OUTSIDE_TOLERANCE = 0.02


def read_image_size(path: Path) -> tuple[int, int]:
    """``(W, H)`` from the image's header; an unreadable image raises :class:`DGPError` naming it."""
    try:
        with Image.open(path) as image:
            return int(image.width), int(image.height)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        reason = "the file is empty" if path.stat().st_size == 0 else type(error).__name__
        raise DGPError(
            f"labeled image cannot be read ({reason})",
            path,
            hint="restore the image, or remove its row from the label file",
        ) from None


def check_labels_inside_images(
    image_paths: Sequence[Sequence[Path | None]],
    labels: np.ndarray,
    label_file_of: dict[Path, Path],
    keypoints: Sequence[str],
) -> None:
    """Refuse labels outside their image (see the module doc).

    Args:
        image_paths: ``[frame][view]`` image files (``None``: no image); missing files are skipped
            (training reports them).
        labels: ``(N, V, J, 2)`` pixel labels, NaN = not labeled.
        label_file_of: image path -> the label file that labels it (for the message).
        keypoints: the J keypoint names.

    Raises:
        DGPError: naming the label file, the first image outside which labels lie, its size, one
            such label, and how many labels in how many images.
    """
    sizes: dict[Path, tuple[int, int]] = {}
    bad: list[tuple[Path, int, tuple[int, int], str, np.ndarray]] = []
    total = 0
    for n, row in enumerate(image_paths):
        for v, image in enumerate(row):
            if image is None:
                continue
            points = np.asarray(labels[n, v], dtype=np.float64)
            labeled = np.isfinite(points).all(axis=-1)
            if not labeled.any() or not Path(image).is_file():
                continue
            if image not in sizes:
                sizes[image] = read_image_size(Path(image))
            width, height = sizes[image]
            margin = np.maximum(2.0, OUTSIDE_TOLERANCE * np.array([width, height], dtype=np.float64))
            low, high = -0.5 - margin, np.array([width, height]) - 0.5 + margin
            outside = labeled & ((points < low) | (points > high)).any(axis=-1)
            if outside.any():
                total += int(outside.sum())
                j = int(np.flatnonzero(outside)[0])
                bad.append((Path(image), int(outside.sum()), (width, height), keypoints[j], points[j]))
    if not bad:
        return
    image, count, (width, height), keypoint, point = bad[0]
    images = len({b[0] for b in bad})
    where = (
        f"in {images} image(s), first {image.name} ({width}x{height}: {count}, e.g. {keypoint} at "
        f"({point[0]:.0f}, {point[1]:.0f}))"
    )
    raise DGPError(
        f"{total} label(s) lie outside their image {where}",
        label_file_of.get(image, image.parent),
        hint="fix the labels, or restore the images at the size they were labeled at",
    )
