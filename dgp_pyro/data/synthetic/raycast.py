"""Exact first hits of camera rays with the body's primitives, and their screen bounding boxes.

:func:`cast_primitives` tests every ray against every primitive's bounding sphere (broad phase),
then intersects the remaining pairs exactly (:func:`intersect_pairs`); the renderer instead casts
only the pixels inside each primitive's conservative screen box (:func:`screen_boxes`).
"""

from __future__ import annotations

import numpy as np
from jaxtyping import Float

from dgp_pyro.data.synthetic.body import Primitives, unit
from dgp_pyro.data.synthetic.camera_rays import project_points

__all__ = ["cast_primitives", "enumerate_boxes", "intersect_pairs", "nearest_hits", "screen_boxes"]


_INF = np.inf


def _bounding_spheres(prims: Primitives) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (B, N, 3), radii (B, N) and on-mask (B, N) of spheres enclosing every primitive,
    spheres first, then capsule bodies, then ellipsoids (the order of the primitive index)."""
    B = prims.sph_c.shape[0]
    half = 0.5 * (prims.cyl_b - prims.cyl_a)
    centres = np.concatenate([prims.sph_c, prims.cyl_a + half, prims.ell_c], 1)
    radii = np.concatenate(
        [
            np.broadcast_to(prims.sph_r, (B, len(prims.sph_r))),
            np.linalg.norm(half, axis=-1) + prims.cyl_r[None],
            prims.ell_s.max(-1) if prims.ell_s.shape[1] else np.zeros((B, 0)),
        ],
        1,
    )
    on = np.concatenate(
        [
            np.ones((B, prims.sph_c.shape[1]), bool) if prims.sph_on is None else prims.sph_on,
            np.ones((B, prims.cyl_a.shape[1]), bool) if prims.cyl_on is None else prims.cyl_on,
            np.ones((B, prims.ell_c.shape[1]), bool),
        ],
        1,
    )
    return centres, radii, on


def intersect_pairs(
    origin: np.ndarray, d: np.ndarray, bi: np.ndarray, ni: np.ndarray, prims: Primitives
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact first hits of rays ``origin + t d`` (d: (M, 3) unit) with primitive ``ni`` (M,) of
    frame ``bi`` (M,). Returns t (M,) (inf: no hit), unnormalised normals (M, 3), part ids (M,)."""
    eps = 1e-6
    Ns, Nc = prims.sph_c.shape[1], prims.cyl_a.shape[1]
    o = origin[None]
    t = np.full(len(bi), _INF)
    normal = np.zeros((len(bi), 3))
    ids = np.zeros(len(bi), dtype=np.int64)
    m = np.flatnonzero(ni < Ns)
    if len(m):
        j = ni[m]
        c = prims.sph_c[bi[m], j]
        ocm = o - c
        bb = (d[m] * ocm).sum(-1)
        disc = bb * bb - ((ocm * ocm).sum(-1) - prims.sph_r[j] ** 2)
        tm = -bb - np.sqrt(np.maximum(disc, 0.0))
        ok = (disc > 0) & (tm > eps)
        if prims.sph_on is not None:
            ok &= prims.sph_on[bi[m], j]
        t[m] = np.where(ok, tm, _INF)
        normal[m] = o + tm[:, None] * d[m] - c
        ids[m] = prims.sph_id[j]
    m = np.flatnonzero((ni >= Ns) & (ni < Ns + Nc))
    if len(m):
        j = ni[m] - Ns
        a0 = prims.cyl_a[bi[m], j]
        ba = prims.cyl_b[bi[m], j] - a0
        oa = o - a0
        dm = d[m]
        baba = (ba * ba).sum(-1)
        bard = (ba * dm).sum(-1)
        baoa = (ba * oa).sum(-1)
        rdoa = (dm * oa).sum(-1)
        oaoa = (oa * oa).sum(-1)
        A = baba - bard * bard
        Bq = baba * rdoa - baoa * bard
        Cq = baba * oaoa - baoa * baoa - prims.cyl_r[j] ** 2 * baba
        h = Bq * Bq - A * Cq
        with np.errstate(divide="ignore", invalid="ignore"):
            tm = (-Bq - np.sqrt(np.maximum(h, 0.0))) / A
            y = baoa + tm * bard
            ok = (h > 0) & (A > 1e-9) & (y > 0) & (y < baba) & (tm > eps)
            if prims.cyl_on is not None:
                ok &= prims.cyl_on[bi[m], j]
            tm = np.where(ok, tm, _INF)
            pnt = o + np.where(ok, tm, 0.0)[:, None] * dm
            sfrac = np.clip(((pnt - a0) * ba).sum(-1) / np.maximum(baba, 1e-12), 0.0, 1.0)
        t[m] = tm
        normal[m] = pnt - a0 - sfrac[:, None] * ba
        ids[m] = prims.cyl_id[j]
    m = np.flatnonzero(ni >= Ns + Nc)
    if len(m):
        j = ni[m] - Ns - Nc
        u = prims.ell_u[bi[m], j]  # (M, 3, 3) rows: axes
        sc = prims.ell_s[bi[m], j]
        c = prims.ell_c[bi[m], j]
        ol = np.einsum("mik,mk->mi", u, o - c) / sc
        dl = np.einsum("mik,mk->mi", u, d[m]) / sc
        aa = (dl * dl).sum(-1)
        bb = (dl * ol).sum(-1)
        disc = bb * bb - aa * ((ol * ol).sum(-1) - 1.0)
        tm = (-bb - np.sqrt(np.maximum(disc, 0.0))) / aa
        ok = (disc > 0) & (tm > eps)
        t[m] = np.where(ok, tm, _INF)
        q = (ol + np.where(ok, tm, 0.0)[:, None] * dl) / sc
        normal[m] = np.einsum("mik,mi->mk", u, q)
        ids[m] = prims.ell_id[j]
    return t, normal, ids


def nearest_hits(key: np.ndarray, t: np.ndarray, *values: np.ndarray):
    """For every distinct ``key``, the entry with the smallest finite ``t``: (keys, t, *values)."""
    hit = np.isfinite(t)
    key, t = key[hit], t[hit]
    values = [v[hit] for v in values]
    if len(key) == 0:
        return (key, t, *values)
    order = np.lexsort((t, key))
    ks = key[order]
    first = order[np.r_[True, ks[1:] != ks[:-1]]]
    return (key[first], t[first], *[v[first] for v in values])


def cast_primitives(
    origin: np.ndarray, dirs: Float[np.ndarray, "B P 3"], prims: Primitives
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """First hits of rays ``origin + t dirs`` (unit dirs) with the primitives of each frame.

    A broad phase keeps the (ray, primitive) pairs whose ray meets the primitive's bounding
    sphere; the exact intersections are computed for those pairs only.

    Returns ``t`` (B, P) (inf where nothing is hit), the unit normal (B, P, 3) and the part id
    (B, P) (0 where nothing is hit).
    """
    B, Pn, _ = dirs.shape
    best_t = np.full((B, Pn), _INF)
    best_n = np.zeros((B, Pn, 3))
    best_id = np.zeros((B, Pn), dtype=np.int64)
    centres, radii, on = _bounding_spheres(prims)
    if centres.shape[1] == 0:
        return best_t, best_n, best_id
    oc = origin[None, None] - centres  # (B, N, 3)
    proj = dirs @ oc.transpose(0, 2, 1)  # (B, P, N) = d . (o - c)
    perp2 = (oc * oc).sum(-1)[:, None] - proj * proj
    cand = (perp2 < (radii**2)[:, None]) & (proj < radii[:, None]) & on[:, None]
    bi, pi, ni = np.nonzero(cand)
    t, normal, ids = intersect_pairs(origin, dirs[bi, pi], bi, ni, prims)
    key, t, normal, ids = nearest_hits(bi * Pn + pi, t, normal, ids)
    rb, rp = np.divmod(key, Pn)
    best_t[rb, rp] = t
    best_n[rb, rp] = unit(normal)
    best_id[rb, rp] = ids
    return best_t, best_n, best_id


def enumerate_boxes(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray):
    """All pixels of K boxes (exclusive ends): (owner (M,), y (M,), x (M,))."""
    w = np.maximum(x1 - x0, 0)
    h = np.maximum(y1 - y0, 0)
    count = w * h
    owner = np.repeat(np.arange(len(count)), count)
    start = np.cumsum(count) - count
    local = np.arange(int(count.sum())) - start[owner]
    ww = w[owner]
    return owner, y0[owner] + local // ww, x0[owner] + local % ww


def screen_boxes(camera, prims: Primitives, origin: np.ndarray, R: np.ndarray, focal: float, W: int, H: int):
    """Conservative pixel boxes (B, N, 4) (x0, y0, x1, y1 exclusive) of every primitive."""
    B = prims.sph_c.shape[0]
    # anchors: both ends of a capsule, the centre of a sphere or ellipsoid; radius around them
    ends_a = np.concatenate([prims.sph_c, prims.cyl_a, prims.ell_c], 1)
    ends_b = np.concatenate([prims.sph_c, prims.cyl_b, prims.ell_c], 1)
    rad = np.concatenate(
        [
            np.broadcast_to(prims.sph_r, (B, len(prims.sph_r))),
            np.broadcast_to(prims.cyl_r, (B, len(prims.cyl_r))),
            prims.ell_s.max(-1) if prims.ell_s.shape[1] else np.zeros((B, 0)),
        ],
        1,
    )
    ends = np.stack([ends_a, ends_b], 2)  # (B, N, 2, 3)
    uv = project_points(camera, ends.reshape(-1, 3)).reshape(ends.shape[:-1] + (2,))
    z = (ends - origin) @ R[2]
    zmin = z - rad[..., None]
    rad_px = np.where(zmin > 1.0, 1.3 * focal * rad[..., None] / np.maximum(zmin, 1.0) + 2.0, np.inf)
    with np.errstate(invalid="ignore"):
        x0 = np.floor((uv[..., 0] - rad_px).min(-1))
        x1 = np.ceil((uv[..., 0] + rad_px).max(-1)) + 1
        y0 = np.floor((uv[..., 1] - rad_px).min(-1))
        y1 = np.ceil((uv[..., 1] + rad_px).max(-1)) + 1
    box = np.stack([x0, y0, x1, y1], -1)
    box = np.nan_to_num(box, nan=0.0, posinf=1e6, neginf=-1e6)
    box = np.clip(box, 0, [W, H, W, H]).astype(np.int64)
    return box
