"""The static scene of a view, ray cast once: the tiled arena floor, the table, the walls and the pillars.

:func:`cast_static` gives the first hit of every ray with it (for rendering and for the
visibility test) and, with :class:`Textures`, its shaded, textured colour.
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from dgp_pyro.data.synthetic.animal import Arena
from dgp_pyro.data.synthetic.scene import AMBIENT, LIGHT_DIRECTION, Scene

__all__ = ["Textures", "cast_static", "static_scene"]

_INF = np.inf


def _value_noise(rng: np.random.Generator, cells: int) -> np.ndarray:
    return rng.uniform(-1.0, 1.0, size=(cells + 1, cells + 1))


def _sample_grid(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``grid`` at fractional cell coordinates (clamped)."""
    n = grid.shape[0] - 1
    u = np.clip(u, 0, n - 1e-9)
    v = np.clip(v, 0, n - 1e-9)
    i, j = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - i, v - j
    fu, fv = fu * fu * (3 - 2 * fu), fv * fv * (3 - 2 * fv)
    return (
        grid[i, j] * (1 - fu) * (1 - fv)
        + grid[i + 1, j] * fu * (1 - fv)
        + grid[i, j + 1] * (1 - fu) * fv
        + grid[i + 1, j + 1] * fu * fv
    )


class Textures:
    """Seeded value-noise grids of the floor stains and grain and the table's wood."""

    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 777])
        self.coarse = _value_noise(rng, 12)
        self.fine = _value_noise(rng, 60)
        self.table = _value_noise(rng, 30)


def cast_static(
    origin: np.ndarray, dirs: Float[np.ndarray, "P 3"], arena: Arena, textures: Textures | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First hits of rays with the static scene (floor, table, walls, pillars).

    Returns ``t`` (P,) (inf for the room behind), the shaded colour (P, 3) in 0..1 (when
    ``textures`` is given, else zeros) and a floor mask (P,) (the arena floor, where the
    animal's shadow can fall).
    """
    Pn = dirs.shape[0]
    S, Hw = arena.size, arena.wall_height
    t_best = np.full(Pn, _INF)
    colour = np.zeros((Pn, 3))
    normal = np.zeros((Pn, 3))
    kind = np.zeros(Pn, dtype=np.int64)  # 0 room, 1 floor, 2 table, 3 wall in, 4 wall out, 5 pillar
    aux = np.zeros((Pn, 3))
    with np.errstate(divide="ignore", invalid="ignore"):
        # floor / table plane z = 0
        t = -origin[2] / dirs[:, 2]
        p = origin + t[:, None] * dirs
        ok = (t > 0) & (dirs[:, 2] < 0)
        in_arena = (p[:, 0] >= 0) & (p[:, 0] <= S) & (p[:, 1] >= 0) & (p[:, 1] <= S)
        on_table = np.abs(p[:, :2] - S / 2).max(axis=1) <= S / 2 + 500.0
        hit = ok & (in_arena | on_table)
        t_best = np.where(hit, t, t_best)
        kind = np.where(hit, np.where(in_arena, 1, 2), kind)
        aux = np.where(hit[:, None], p, aux)
        normal = np.where(hit[:, None], np.array([0.0, 0.0, 1.0]), normal)
        # walls: planes x = 0, x = S, y = 0, y = S, 0 <= z <= wall height
        for axis, value, inward in ((0, 0.0, 1.0), (0, S, -1.0), (1, 0.0, 1.0), (1, S, -1.0)):
            t = (value - origin[axis]) / dirs[:, axis]
            p = origin + t[:, None] * dirs
            other = 1 - axis
            ok = (t > 0) & (p[:, other] >= 0) & (p[:, other] <= S) & (p[:, 2] >= 0) & (p[:, 2] <= Hw)
            ok &= t < t_best
            n = np.zeros(3)
            n[axis] = inward
            facing_in = (dirs @ n) < 0  # the ray comes from inside the arena
            t_best = np.where(ok, t, t_best)
            kind = np.where(ok, np.where(facing_in, 3, 4), kind)
            aux = np.where(ok[:, None], np.stack([p[:, other], p[:, 2], np.full(Pn, axis)], -1), aux)
            normal = np.where(ok[:, None], np.where(facing_in[:, None], n, -n), normal)
        # pillars: vertical cylinders with a flat top
        for px, py, pr, ph in arena.pillars:
            ox, oy = origin[0] - px, origin[1] - py
            a = dirs[:, 0] ** 2 + dirs[:, 1] ** 2
            b = ox * dirs[:, 0] + oy * dirs[:, 1]
            c = ox * ox + oy * oy - pr * pr
            disc = b * b - a * c
            t = (-b - np.sqrt(np.maximum(disc, 0))) / a
            z = origin[2] + t * dirs[:, 2]
            ok = (disc > 0) & (t > 0) & (z >= 0) & (z <= ph) & (t < t_best)
            pnt = origin + t[:, None] * dirs
            n = np.stack([pnt[:, 0] - px, pnt[:, 1] - py, np.zeros(Pn)], -1) / pr
            t_best = np.where(ok, t, t_best)
            kind = np.where(ok, 5, kind)
            aux = np.where(ok[:, None], np.stack([np.arctan2(n[:, 1], n[:, 0]), z, np.zeros(Pn)], -1), aux)
            normal = np.where(ok[:, None], n, normal)
            t = (ph - origin[2]) / dirs[:, 2]
            pnt = origin + t[:, None] * dirs
            ok = (t > 0) & ((pnt[:, 0] - px) ** 2 + (pnt[:, 1] - py) ** 2 <= pr * pr) & (t < t_best)
            t_best = np.where(ok, t, t_best)
            kind = np.where(ok, 5, kind)
            top = np.stack([np.zeros(Pn), np.full(Pn, ph + 1.0), np.zeros(Pn)], -1)
            aux = np.where(ok[:, None], top, aux)
            normal = np.where(ok[:, None], np.array([0.0, 0.0, 1.0]), normal)
    floor_mask = kind == 1
    if textures is None:
        return t_best, colour, floor_mask

    shade = AMBIENT + (1 - AMBIENT) * np.clip(normal @ LIGHT_DIRECTION, 0, 1)
    # room behind: dark, a vertical gradient
    colour[:] = np.array([0.16, 0.16, 0.19]) + 0.05 * np.clip(dirs[:, 2:3] + 0.3, 0, 1)
    # arena floor: light grey-blue tiles of 50 mm with grout lines and stains
    m = kind == 1
    if np.any(m):
        x, y = aux[m, 0], aux[m, 1]
        tile = ((np.floor(x / 50.0) + np.floor(y / 50.0)) % 2)[:, None]
        base = np.where(tile > 0, np.array([0.72, 0.74, 0.78]), np.array([0.62, 0.64, 0.69]))
        fx, fy = (x % 50.0), (y % 50.0)
        grout = (np.minimum(np.minimum(fx, 50 - fx), np.minimum(fy, 50 - fy)) < 1.2)[:, None]
        base = np.where(grout, np.array([0.45, 0.46, 0.5]), base)
        stain = _sample_grid(textures.coarse, x / S * 12, y / S * 12)[:, None]
        grain = _sample_grid(textures.fine, x / S * 60, y / S * 60)[:, None]
        colour[m] = base * (1 + 0.10 * stain + 0.06 * grain) * shade[m, None]
    m = kind == 2
    if np.any(m):
        x, y = aux[m, 0], aux[m, 1]
        wood = _sample_grid(textures.table, (x + 500) / (S + 1000) * 30, (y + 500) / (S + 1000) * 30)[:, None]
        rings = np.sin(x / 9.0 + 3 * wood[:, 0])[:, None]
        colour[m] = (np.array([0.42, 0.3, 0.2]) * (1 + 0.12 * wood + 0.06 * rings)) * shade[m, None]
    m = (kind == 3) | (kind == 4)
    if np.any(m):
        u, z = aux[m, 0], aux[m, 1]
        stripe = (np.floor(u / 25.0) % 2)[:, None]
        inner = (kind[m] == 3)[:, None]
        base = np.where(inner, np.array([0.35, 0.45, 0.58]), np.array([0.25, 0.28, 0.33]))
        base = base * (1 + 0.12 * stripe) * (0.85 + 0.15 * (z / Hw))[:, None]
        colour[m] = base * (0.6 + 0.4 * shade[m, None])
    m = kind == 5
    if np.any(m):
        ang, z = aux[m, 0], aux[m, 1]
        band = (np.floor(z / 20.0) % 2)[:, None]
        base = np.where(band > 0, np.array([0.93, 0.93, 0.9]), np.array([0.3, 0.62, 0.6]))
        colour[m] = base * shade[m, None] * (1 + 0.03 * np.sin(ang * 12))[:, None]
    return t_best, colour, floor_mask


def static_scene(origin: np.ndarray, dirs: np.ndarray, scene: Scene):
    return cast_static(origin, dirs, scene.arena, Textures(scene.texture_seed))
