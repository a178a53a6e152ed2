"""Image resizing and label-consistent augmentation for training the heatmap network.

Coordinates follow the project convention: x right, y down, the origin at the *centre* of
the top-left pixel. Resizing an image of width ``W0`` to width ``W`` therefore maps a point by

    x' = (x + 0.5) * W / W0 - 0.5

(pixel *edges* scale, not pixel centres), the same mapping as ``F.interpolate`` and
``F.affine_grid`` with ``align_corners=False``; :func:`scale_points` and
:func:`unscale_points` are exact inverses, so predictions map back to the original frame
without a half-pixel shift.

**Training size.** The network sees every image at one size ``W x H``, both multiples of 32
(the backbone's total downsampling). :func:`default_size` picks it from the project's image
size: each side is scaled by one factor so that the long side is at most 320 pixels (images
smaller than that are not enlarged), then rounded to the nearest multiple of 32 (at least 32).
The size is stored in the run's ``config.json`` and reused by prediction.

**Augmentation** (:func:`augment_batch`) draws, per image, a random affine transform about
the image centre (rotation, isotropic scale, translation, and an optional horizontal flip that
swaps the channels of user-given left/right keypoint pairs) plus a brightness and contrast
change. Images are warped with ``F.affine_grid`` / ``F.grid_sample`` (bilinear, black
padding) and the labels are moved by exactly the same matrix; a label pushed outside the
image becomes missing (NaN). All randomness comes from a ``torch.Generator`` passed in, and
each batch draws the same number of random numbers whatever the ranges, so a run is
reproducible and resumable.

Two optional corruptions, off by default, are the ones DeepLabCut and Lightning Pose add for
hard frames: an **occluding patch** (:func:`occlude`, a flat grey rectangle over part of the
image; the labels under it stay, so the network learns to place a hidden part from its
context) and **motion blur** (:func:`motion_blur`, a line kernel of random length and angle).
They draw their own ``9 * B`` uniforms only when one of them is switched on, so runs without
them keep the random stream they always had.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, UInt8
from torch import Tensor

from dgp_pyro.errors import DGPError

#: Both sides of a training image must be multiples of this (ResNet's total downsampling).
SIZE_MULTIPLE = 32
#: :func:`default_size` scales images down so that their long side is at most this.
DEFAULT_MAX_SIDE = 320


# --------------------------------------------------------------------------- sizes


def _round_to(value: float, multiple: int) -> int:
    return max(multiple, int(round(value / multiple)) * multiple)


def default_size(width: int, height: int, max_side: int = DEFAULT_MAX_SIDE) -> tuple[int, int]:
    """The default training size ``(W, H)`` for images of ``width x height`` (see module doc)."""
    scale = min(1.0, max_side / max(width, height))
    w, h = _round_to(width * scale, SIZE_MULTIPLE), _round_to(height * scale, SIZE_MULTIPLE)
    while max(w, h) > max(max_side, SIZE_MULTIPLE):  # rounding up may overshoot by one step
        if w >= h:
            w -= SIZE_MULTIPLE
        else:
            h -= SIZE_MULTIPLE
    return w, h


def check_size(size: Sequence[int], multiple: int = SIZE_MULTIPLE, flag: str = "--size") -> tuple[int, int]:
    """Raise :class:`DGPError` unless both sides of ``size = (W, H)`` are multiples of ``multiple``."""
    w, h = (int(v) for v in size)
    if w <= 0 or h <= 0 or w % multiple or h % multiple:
        suggestion = f"{_round_to(w, multiple)}x{_round_to(h, multiple)}"
        raise DGPError(f"{flag} {w}x{h} does not fit the network's stride {multiple}; try {suggestion}")
    return w, h


def scale_points(
    points: Float[np.ndarray, "... 2"], from_size: Sequence[int], to_size: Sequence[int]
) -> Float[np.ndarray, "... 2"]:
    """Map pixel coordinates from an image of ``from_size=(W0, H0)`` to one of ``to_size=(W, H)``."""
    factor = np.array([to_size[0] / from_size[0], to_size[1] / from_size[1]])
    return (np.asarray(points, dtype=float) + 0.5) * factor - 0.5


def unscale_points(
    points: Float[np.ndarray, "... 2"], from_size: Sequence[int], to_size: Sequence[int]
) -> Float[np.ndarray, "... 2"]:
    """Inverse of :func:`scale_points`: from ``to_size`` coordinates back to ``from_size``."""
    return scale_points(points, to_size, from_size)


def resize_frames(frames: UInt8[Tensor, "b h w 3"], size: Sequence[int]) -> UInt8[Tensor, "b H W 3"]:
    """Resize uint8 frames to ``size=(W, H)`` (bilinear, antialiased when shrinking).

    Training images and video frames both go through this one function, so the network sees
    the same pixels at training and at prediction time. On the CPU it uses PyTorch's uint8
    channels-last kernel (an order of magnitude faster than going through float); elsewhere,
    or where that kernel is missing, the float path, which agrees to within one grey level.
    """
    w, h = int(size[0]), int(size[1])
    if frames.shape[1] == h and frames.shape[2] == w:
        return frames
    x = frames.permute(0, 3, 1, 2)  # a channels-last view, no copy
    if x.device.type == "cpu":
        try:
            out = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
            return out.permute(0, 2, 3, 1).contiguous()
        except (RuntimeError, NotImplementedError):  # pragma: no cover - older PyTorch
            pass
    out = F.interpolate(x.float(), size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


# --------------------------------------------------------------------------- augmentation

#: The settings that switch every augmentation off (:meth:`AugmentConfig.none`, ``--no-augment``).
AUGMENT_OFF = {
    "rotation": 0.0,
    "scale": 0.0,
    "translate": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
    "flip": 0.0,
    "occlusion": 0.0,
    "motion_blur": 0.0,
}


@dataclass
class AugmentConfig:
    """Ranges of the random augmentation (all drawn uniformly, independently per image).

    Attributes:
        rotation: maximum rotation, degrees (drawn in ``[-rotation, rotation]``).
        scale: maximum relative zoom (``s`` in ``[1 - scale, 1 + scale]``).
        translate: maximum shift as a fraction of the image side.
        brightness: maximum brightness offset as a fraction of the full range (255).
        contrast: maximum relative contrast change (``c`` in ``[1 - contrast, 1 + contrast]``).
        flip: probability of a horizontal flip; needs ``flip_pairs`` to be meaningful for
            keypoints that have a left and a right side (a flip with no pairs keeps every
            keypoint's name, which is right only for symmetric keypoints such as a nose).
        flip_pairs: left/right keypoint name pairs whose channels swap under a flip.
        occlusion: probability of one occluding patch per image (:func:`occlude`).
        occlusion_size: largest side of a patch as a fraction of the image's short side (each
            side drawn in ``[occlusion_size / 4, occlusion_size]``).
        motion_blur: probability of motion blur per image (:func:`motion_blur`).
        blur_length: longest blur, training pixels (drawn in ``[1, blur_length]``).
    """

    rotation: float = 15.0
    scale: float = 0.15
    translate: float = 0.05
    brightness: float = 0.15
    contrast: float = 0.2
    flip: float = 0.0
    flip_pairs: list[tuple[str, str]] = field(default_factory=list)
    occlusion: float = 0.0
    occlusion_size: float = 0.4
    motion_blur: float = 0.0
    blur_length: float = 9.0

    def __post_init__(self) -> None:
        for name in (f.name for f in fields(self) if f.name != "flip_pairs"):  # the numbers
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise DGPError(f"augmentation {name}={value!r} is not a number")
            if value < 0:
                raise DGPError(f"augmentation {name}={value} must not be negative")
        for name in ("flip", "occlusion", "motion_blur"):
            if getattr(self, name) > 1:
                raise DGPError(
                    f"augmentation {name}={getattr(self, name)} is a probability: give one in [0, 1]"
                )
        if not 0.0 < self.occlusion_size <= 1.0:
            raise DGPError(f"augmentation occlusion_size={self.occlusion_size} must be in (0, 1]")

    @property
    def corrupts(self) -> bool:
        """Whether the occlusion or the blur is on (they then draw their own uniforms)."""
        return self.occlusion > 0 or self.motion_blur > 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["flip_pairs"] = [list(pair) for pair in self.flip_pairs]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> AugmentConfig:
        data = dict(data or {})
        data["flip_pairs"] = [tuple(pair) for pair in data.get("flip_pairs", [])]
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise DGPError(f"unknown augmentation settings {sorted(unknown)}", hint=f"known: {sorted(known)}")
        return cls(**data)

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (identity transform, unchanged pixels)."""
        return cls(**AUGMENT_OFF)


def flip_permutation(keypoints: Sequence[str], pairs: Sequence[Sequence[str]]) -> Tensor:
    """Channel permutation of a horizontal flip: ``perm[i]`` is the keypoint that ``i`` becomes."""
    index = {name: i for i, name in enumerate(keypoints)}
    perm = list(range(len(keypoints)))
    for pair in pairs:
        if len(pair) != 2:
            raise DGPError(f"flip pair {list(pair)} must name exactly two keypoints, e.g. left_paw:right_paw")
        a, b = pair
        for name in (a, b):
            if name not in index:
                raise DGPError(f"flip pair names keypoint {name!r}, which is not one of {list(keypoints)}")
        if perm[index[a]] != index[a] or perm[index[b]] != index[b]:
            raise DGPError(f"flip pair {a}:{b} uses a keypoint that is already paired")
        perm[index[a]], perm[index[b]] = index[b], index[a]
    return torch.tensor(perm, dtype=torch.long)


def random_affine(
    batch: int, size: Sequence[int], config: AugmentConfig, generator: torch.Generator
) -> tuple[Float[Tensor, "b 3 3"], torch.BoolTensor, Float[Tensor, "b 2"]]:
    """Draw per-image forward transforms (input pixel -> output pixel) and photometric factors.

    Returns:
        ``(matrices (B, 3, 3), flipped (B,), photometric (B, 2) = [brightness offset in 0..255,
        contrast factor])``. Always draws ``7 * B`` uniforms from ``generator``.
    """
    w, h = float(size[0]), float(size[1])
    u = torch.rand(batch, 7, generator=generator, dtype=torch.float64) * 2.0 - 1.0  # in [-1, 1)
    angle = torch.deg2rad(u[:, 0] * config.rotation)
    scale = 1.0 + u[:, 1] * config.scale
    tx, ty = u[:, 2] * config.translate * w, u[:, 3] * config.translate * h
    brightness = u[:, 4] * config.brightness * 255.0
    contrast = 1.0 + u[:, 5] * config.contrast
    flipped = (u[:, 6] + 1.0) / 2.0 < config.flip

    cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    m = torch.zeros(batch, 3, 3, dtype=torch.float64)
    # p' = R S (p - c) + c + t   (rotation in image coordinates, y down)
    m[:, 0, 0], m[:, 0, 1] = cos, -sin
    m[:, 1, 0], m[:, 1, 1] = sin, cos
    m[:, 0, 2] = cx + tx - (cos * cx - sin * cy)
    m[:, 1, 2] = cy + ty - (sin * cx + cos * cy)
    m[:, 2, 2] = 1.0
    flip = torch.tensor([[-1.0, 0.0, w - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    m = torch.where(flipped[:, None, None], m @ flip, m)
    return m, flipped, torch.stack([brightness, contrast], dim=1)


def _pixel_to_normalized(w: float, h: float) -> Tensor:
    # u = (2 x + 1) / W - 1   (align_corners=False)
    return torch.tensor(
        [[2.0 / w, 0.0, 1.0 / w - 1.0], [0.0, 2.0 / h, 1.0 / h - 1.0], [0.0, 0.0, 1.0]], dtype=torch.float64
    )


def warp_images(
    images: UInt8[Tensor, "b h w 3"] | Float[Tensor, "b h w 3"], matrices: Float[Tensor, "b 3 3"]
) -> Float[Tensor, "b h w 3"]:
    """Warp images by forward pixel transforms (output(p') = input(M^-1 p')), bilinear, zero padding."""
    b, h, w, _ = images.shape
    n = _pixel_to_normalized(w, h)
    theta = (n @ torch.linalg.inv(matrices) @ torch.linalg.inv(n))[:, :2, :].float()
    grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
    x = images.permute(0, 3, 1, 2).float()
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.permute(0, 2, 3, 1)


def transform_points(
    points: Float[Tensor, "b k 2"], matrices: Float[Tensor, "b 3 3"], size: Sequence[int]
) -> Float[Tensor, "b k 2"]:
    """Apply forward transforms to points; points that leave the image become NaN."""
    m = matrices.to(points.dtype)
    out = points @ m[:, :2, :2].transpose(1, 2) + m[:, None, :2, 2]
    w, h = float(size[0]), float(size[1])
    outside = (out[..., 0] < -0.5) | (out[..., 0] > w - 0.5) | (out[..., 1] < -0.5) | (out[..., 1] > h - 0.5)
    return out.masked_fill(outside[..., None], float("nan"))


def augment_batch(
    images: UInt8[Tensor, "b h w 3"],
    points: Float[Tensor, "b k 2"],
    config: AugmentConfig,
    generator: torch.Generator,
    flip_perm: Tensor | None = None,
) -> tuple[UInt8[Tensor, "b h w 3"], Float[Tensor, "b k 2"]]:
    """Randomly warp and recolour a batch, moving the labels with the pixels.

    Args:
        images: uint8 images at training size, ``(B, H, W, 3)``.
        points: their labels in pixels, ``(B, K, 2)``, NaN = missing.
        config: augmentation ranges.
        generator: the source of all randomness.
        flip_perm: channel permutation of a flip (:func:`flip_permutation`); identity if None.

    Returns:
        augmented uint8 images and labels (NaN where a label was missing or left the image).
    """
    b, h, w, _ = images.shape
    matrices, flipped, photo = random_affine(b, (w, h), config, generator)
    out = warp_images(images, matrices)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    contrast = photo[:, 1].float().view(b, 1, 1, 1)
    brightness = photo[:, 0].float().view(b, 1, 1, 1)
    out = (out - mean) * contrast + mean + brightness
    if config.corrupts:
        u = torch.rand(b, 9, generator=generator, dtype=torch.float64)
        out = occlude(out, u[:, :6], config)
        out = motion_blur(out, u[:, 6:], config)
    out = out.round_().clamp_(0, 255).to(torch.uint8)

    new_points = transform_points(points.double(), matrices, (w, h)).to(points.dtype)
    if flip_perm is not None and bool(flipped.any()):
        swapped = new_points[:, flip_perm]
        new_points = torch.where(flipped[:, None, None], swapped, new_points)
    return out, new_points


def occlude(
    images: Float[Tensor, "b h w 3"], uniforms: Float[Tensor, "b 6"], config: AugmentConfig
) -> Float[Tensor, "b h w 3"]:
    """Paint one flat grey rectangle over each image whose first uniform is below ``config.occlusion``.

    ``uniforms`` per image: [switch, centre x, centre y, size, aspect, grey level], all in
    [0, 1): the rectangle's area is that of a square of side ``[size / 4, size]`` times the
    short side, its aspect 1:2 to 2:1. Labels are not changed.
    """
    b, h, w, _ = images.shape
    on = uniforms[:, 0] < config.occlusion
    if not bool(on.any()):
        return images
    short = min(w, h)
    side = short * config.occlusion_size * (0.25 + 0.75 * uniforms[:, 3])
    aspect = 2.0 ** (2.0 * uniforms[:, 4] - 1.0)  # width / height
    half_w, half_h = side * aspect.sqrt() / 2.0, side / aspect.sqrt() / 2.0
    cx, cy = uniforms[:, 1] * w, uniforms[:, 2] * h
    xs = torch.arange(w, dtype=torch.float64)
    ys = torch.arange(h, dtype=torch.float64)
    inside_x = (xs[None, :] - cx[:, None]).abs() <= half_w[:, None]
    inside_y = (ys[None, :] - cy[:, None]).abs() <= half_h[:, None]
    mask = (inside_y[:, :, None] & inside_x[:, None, :] & on[:, None, None])[..., None]
    grey = (255.0 * uniforms[:, 5]).float().view(b, 1, 1, 1)
    return torch.where(mask, grey, images)


def motion_blur(
    images: Float[Tensor, "b h w 3"], uniforms: Float[Tensor, "b 3"], config: AugmentConfig
) -> Float[Tensor, "b h w 3"]:
    """Blur each image whose first uniform is below ``config.motion_blur`` along a random line.

    ``uniforms`` per image: [switch, length, angle]; the kernel is a line of length in
    ``[1, blur_length]`` pixels through the centre (a pixel's weight falls linearly to zero
    one pixel off the line), normalised to sum 1, so the brightness is kept and a keypoint's
    blurred image stays centred on its label. Edges are padded by replication.
    """
    b, h, w, _ = images.shape
    on = uniforms[:, 0] < config.motion_blur
    if not bool(on.any()) or config.blur_length <= 1:
        return images
    radius = int(math.ceil(config.blur_length / 2.0))
    grid = torch.arange(-radius, radius + 1, dtype=torch.float64)
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    length = 1.0 + (config.blur_length - 1.0) * uniforms[:, 1]
    angle = math.pi * uniforms[:, 2]
    dx, dy = torch.cos(angle)[:, None, None], torch.sin(angle)[:, None, None]
    along = gx * dx + gy * dy
    across = (gx * dy - gy * dx).abs()
    inside = (along.abs() <= length[:, None, None] / 2.0).double()
    kernel = (1.0 - across).clamp(min=0.0) * inside
    identity = torch.zeros_like(kernel[0])
    identity[radius, radius] = 1.0
    kernel = torch.where(on[:, None, None], kernel / kernel.sum(dim=(1, 2), keepdim=True), identity)
    x = images.permute(0, 3, 1, 2).reshape(1, b * 3, h, w)
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    weight = kernel.float().repeat_interleave(3, dim=0)[:, None]
    out = F.conv2d(x, weight, groups=b * 3)
    return out.reshape(b, 3, h, w).permute(0, 2, 3, 1)
