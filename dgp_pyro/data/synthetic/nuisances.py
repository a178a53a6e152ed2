"""What makes the hard synthetic renderer hard: the nuisances of real videos, each seeded.

The plain renderer is easy for any network: every body part has its own colour on a calm floor
under a steady light, so the graphical models have little to fix and the synthetic benchmarks
never showed the gross errors real projects have. :data:`HARD` adds, in the order applied:

- **look-alike limbs**: left and right legs and ears share one colour (as real left and right
  paws do), so only the body's geometry tells them apart;
- **a textured floor**: high-contrast value noise at a few pixels' scale on the floor and walls;
- **distractors**: blobs on the floor coloured and sized like paws and the nose (food pellets,
  droppings, markers), fixed in each view;
- **motion blur**: each frame's body is smeared along its image velocity (the nearby poses'
  mean displacement, times :attr:`Nuisances.motion_blur`) over the sharp background;
- **lighting changes**: a slow drift and a per-frame flicker of the light's gain, and a light
  gradient across the image whose direction turns over time.

Everything is drawn from ``(seed, view, frame)`` alone, so any chunking of a video gives the
same frames, as in the plain renderer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Bool, Float

from dgp_pyro.data.synthetic.body import (
    EAR_LEFT,
    EAR_RIGHT,
    LEG_FRONT_LEFT,
    LEG_FRONT_RIGHT,
    LEG_HIND_LEFT,
    LEG_HIND_RIGHT,
    NOSE,
    PART_COLOURS,
)

__all__ = [
    "HARD",
    "Nuisances",
    "blur_body",
    "draw_distractors",
    "light_field",
    "part_colours",
    "texture_scene",
]


@dataclass(frozen=True)
class Nuisances:
    """How hard the renderer makes the images (all zero / False: the plain renderer).

    Attributes:
        same_left_right: left and right legs (and ears) share the left one's colour.
        texture: contrast of the floor and wall texture (a factor on the pixel values, +-).
        distractors: part-like blobs on the floor of each view.
        motion_blur: length of the body's smear in frames of its image motion (0: sharp).
        lighting: amplitude of the gain drift and flicker (a fraction of the light).
    """

    same_left_right: bool = False
    texture: float = 0.0
    distractors: int = 0
    motion_blur: float = 0.0
    lighting: float = 0.0

    @property
    def any(self) -> bool:
        return self.same_left_right or bool(
            self.texture or self.distractors or self.motion_blur or self.lighting
        )


#: The hard renderer's nuisances (``dgp-pyro synth --hard``).
HARD = Nuisances(same_left_right=True, texture=0.3, distractors=8, motion_blur=1.5, lighting=0.3)

_PAIRS = ((LEG_FRONT_LEFT, LEG_FRONT_RIGHT), (LEG_HIND_LEFT, LEG_HIND_RIGHT), (EAR_LEFT, EAR_RIGHT))
_LOOK_ALIKES = (LEG_FRONT_LEFT, LEG_HIND_LEFT, NOSE, LEG_FRONT_RIGHT)


def part_colours(nuisances: Nuisances) -> Float[np.ndarray, "parts 3"]:
    """The base colour of every part region under ``nuisances``."""
    colours = PART_COLOURS.copy()
    if nuisances.same_left_right:
        for left, right in _PAIRS:
            colours[right] = colours[left]
    return colours


def _value_noise(rng: np.random.Generator, height: int, width: int, cell: int) -> np.ndarray:
    """Smooth noise in [-1, 1] at the scale of ``cell`` pixels (bilinear between random values)."""
    gh, gw = height // cell + 2, width // cell + 2
    grid = rng.uniform(-1.0, 1.0, (gh, gw))
    y = np.arange(height) / cell
    x = np.arange(width) / cell
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    a, b = grid[y0][:, x0], grid[y0][:, x0 + 1]
    c, d = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def texture_scene(
    colour: Float[np.ndarray, "H W 3"], nuisances: Nuisances, seed: int, view: int
) -> Float[np.ndarray, "H W 3"]:
    """The static scene's colours with a two-scale texture over the floor, walls and room."""
    if not nuisances.texture:
        return colour
    rng = np.random.default_rng([seed, view, 7])
    h, w = colour.shape[:2]
    noise = 0.6 * _value_noise(rng, h, w, 3) + 0.4 * _value_noise(rng, h, w, 11)
    return np.clip(colour * (1.0 + nuisances.texture * noise)[..., None], 0.0, 1.0)


def draw_distractors(
    colour: Float[np.ndarray, "H W 3"],
    floor: Bool[np.ndarray, "H W"],
    radius_px: Float[np.ndarray, "H W"],
    nuisances: Nuisances,
    seed: int,
    view: int,
) -> Float[np.ndarray, "H W 3"]:
    """Shaded discs on the floor with the colour and image size of a paw or the nose.

    ``radius_px`` is the image radius a paw would have at each pixel (from its depth).
    """
    if not nuisances.distractors or not floor.any():
        return colour
    rng = np.random.default_rng([seed, view, 11])
    out = colour.copy()
    ys, xs = np.nonzero(floor)
    palette = part_colours(nuisances)
    h, w = floor.shape
    yy, xx = np.mgrid[0:h, 0:w]
    for n in range(nuisances.distractors):
        k = rng.integers(len(ys))
        cy, cx = ys[k], xs[k]
        r = max(1.5, float(radius_px[cy, cx]) * rng.uniform(0.8, 1.3))
        d2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / r**2
        inside = d2 <= 1.0
        shade = 0.55 + 0.45 * np.sqrt(np.clip(1.0 - d2, 0.0, 1.0))  # a lit dome
        base = palette[_LOOK_ALIKES[n % len(_LOOK_ALIKES)]]
        out[inside] = base * shade[inside][:, None]
    return out


def _shift(image: np.ndarray, dy: int, dx: int, fill: np.ndarray) -> np.ndarray:
    """``image`` moved by ``(dy, dx)`` pixels, uncovered pixels taken from ``fill``."""
    out = fill.copy()
    h, w = image.shape[:2]
    ys, yd = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    xs, xd = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[yd, xd] = image[ys, xs]
    return out


def blur_body(
    rgb: Float[np.ndarray, "H W 3"],
    body: Bool[np.ndarray, "H W"],
    background: Float[np.ndarray, "H W 3"],
    velocity: Float[np.ndarray, "2"],
    nuisances: Nuisances,
    samples: int = 7,
) -> Float[np.ndarray, "H W 3"]:
    """The frame with its body smeared along ``velocity`` (image px per frame) over the background."""
    length = nuisances.motion_blur * np.asarray(velocity, dtype=np.float64)
    if not nuisances.motion_blur or np.hypot(*length) < 1.0 or not body.any():
        return rgb
    # the body alone over the background, seen at evenly spaced times of the exposure
    foreground = np.where(body[..., None], rgb, background)
    acc = np.zeros_like(rgb)
    for u in np.linspace(-0.5, 0.5, samples):
        dx, dy = (int(round(v)) for v in u * length)
        acc += np.where(
            _shift(body, dy, dx, np.zeros_like(body))[..., None],
            _shift(foreground, dy, dx, background),
            background,
        )
    return acc / samples


def light_field(
    nuisances: Nuisances, seed: int, view: int, frame: int, height: int, width: int
) -> np.ndarray:
    """The light's gain at every pixel of ``frame`` (H, W): drift, flicker and a turning gradient."""
    if not nuisances.lighting:
        return np.ones((height, width))
    rng = np.random.default_rng([seed, view, frame, 13])
    phase = np.random.default_rng([seed, view, 17]).uniform(0, 2 * np.pi, 2)
    drift = np.sin(2 * np.pi * frame / 240.0 + phase[0])
    flicker = rng.uniform(-1.0, 1.0)
    gain = 1.0 + nuisances.lighting * (0.7 * drift + 0.3 * flicker)
    angle = 2 * np.pi * frame / 600.0 + phase[1]
    yy, xx = np.mgrid[0:height, 0:width]
    ramp = ((xx / width - 0.5) * np.cos(angle) + (yy / height - 0.5) * np.sin(angle)) * 2.0
    return gain * (1.0 + 0.5 * nuisances.lighting * ramp)
