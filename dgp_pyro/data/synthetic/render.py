"""Ray-cast renderer of the synthetic animal, and keypoint visibility.

The body is a set of shaded primitives built from the keypoints of each frame
(:func:`body_primitives`): two trunk ellipsoids along the spine, a head ellipsoid with a nose
sphere and eyes, two flat ear ellipsoids, a tapered tail (a chain of capsules of decreasing
radius), legs as thin capsules from the shoulders and hips to the paws, and paws as spheres.
Each region has its own colour (:data:`PART_COLOURS`; left and right limbs differ) so a network
can tell them apart.

The static scene of a view (the tiled floor, the arena walls, the pillars, the table and the
room around) is ray cast once per view; the body (and any moving occluder) is ray cast per
frame inside its screen bounding box only, in batches of frames, and composited by depth. Every
pixel is an exact first hit along its ray (no painter's ordering), so self-occlusion and
occlusion by the pillars are real. Shading is Lambertian with one directional light plus
ambient; the body casts a soft contact shadow on the floor; sensor noise is seeded.

A keypoint is *visible* in a view when it projects inside the image and the first surface
along the ray from the camera centre to the keypoint is no nearer than the keypoint's own
surface: ``t_hit >= distance - radius_j - tolerance`` (:data:`KEYPOINT_RADII`). A keypoint
behind a pillar, the occluder or another body part is hidden.

The pieces: :mod:`.scene` (cameras, arena, occluder, light), :mod:`.camera_rays` (pixel rays),
:mod:`.body` (the body as primitives), :mod:`.raycast` (hits with primitives) and
:mod:`.static_scene` (floor, walls, pillars), :mod:`.nuisances` (what the hard renderer adds:
look-alike limbs, texture, distractors, motion blur, lighting changes); this module shades,
composites and adds noise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from jaxtyping import Bool, Float

from dgp_pyro.data.synthetic.animal import KEYPOINTS, PAW_RADIUS
from dgp_pyro.data.synthetic.body import (
    KEYPOINT_RADII,
    OCCLUDER,
    PART_COLOURS,
    VISIBILITY_TOLERANCE,
    Primitives,
    body_primitives,
    occluder_primitives,
    unit,
)
from dgp_pyro.data.synthetic.camera_rays import (
    camera_pose,
    camera_size,
    focal_length,
    pixel_rays,
    project_points,
)
from dgp_pyro.data.synthetic.nuisances import (
    Nuisances,
    blur_body,
    draw_distractors,
    light_field,
    part_colours,
    texture_scene,
)
from dgp_pyro.data.synthetic.raycast import (
    cast_primitives,
    enumerate_boxes,
    intersect_pairs,
    nearest_hits,
    screen_boxes,
)
from dgp_pyro.data.synthetic.scene import AMBIENT, LIGHT_DIRECTION, Scene
from dgp_pyro.data.synthetic.static_scene import cast_static, static_scene

__all__ = ["iter_view", "keypoint_visibility", "render_views"]

_K = {name: i for i, name in enumerate(KEYPOINTS)}


# ---- shading -----------------------------------------------------------------------------


def _shade_parts(ids: np.ndarray, normals: np.ndarray, dirs: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Lambertian colour (..., 3) of body hits, with a little specular highlight."""
    base = palette[ids]
    diffuse = np.clip(np.einsum("...k,k->...", normals, LIGHT_DIRECTION), 0, 1)
    half = unit(LIGHT_DIRECTION - dirs)
    spec = np.clip(np.einsum("...k,...k->...", normals, half), 0, 1) ** 24
    return base * (AMBIENT + (1 - AMBIENT) * diffuse)[..., None] + 0.12 * spec[..., None]


def _contact_shadow(floor_points: np.ndarray, frame: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Darkening factor (M,) of floor points (M, 3) of frames ``frame`` (M,) under the body
    ``points`` (B, J, 3) (soft, shifted away from the light)."""
    hip, spine, neck = points[:, _K["hip"]], points[:, _K["spine_mid"]], points[:, _K["neck"]]
    shift = -LIGHT_DIRECTION[:2] / LIGHT_DIRECTION[2]
    centres = np.stack([hip, 0.5 * (hip + spine), spine, 0.5 * (spine + neck), neck], 1)  # (B, 5, 3)
    xy = (centres[..., :2] + centres[..., 2:3] * shift)[frame]  # (M, 5, 2)
    d2 = ((floor_points[:, None, :2] - xy) ** 2).sum(-1)  # (M, 5)
    sigma = 12.0 + 0.25 * centres[frame, :, 2]
    dark = np.exp(-0.5 * d2 / sigma**2).max(-1)
    return 1.0 - 0.45 * dark


def _draw(rgb, depth, parts, rays, origin, R, focal, camera, prims: Primitives, palette=PART_COLOURS) -> None:
    """Ray cast ``prims`` (B frames) at the pixels their screen boxes cover; composite by depth."""
    B, H, W = depth.shape
    boxes = screen_boxes(camera, prims, origin, R, focal, W, H)  # (B, N, 4)
    N = boxes.shape[1]
    flat = boxes.reshape(-1, 4)
    owner, yy, xx = enumerate_boxes(flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3])
    if len(owner) == 0:
        return
    bi, ni = np.divmod(owner, N)
    d = rays[yy, xx]
    t, normal, ids = intersect_pairs(origin, d, bi, ni, prims)
    key, t, normal, ids = nearest_hits((bi * H + yy) * W + xx, t, normal, ids)
    b, rest = np.divmod(key, H * W)
    y, x = np.divmod(rest, W)
    front = t < depth[b, y, x]
    b, y, x, t, normal, ids = b[front], y[front], x[front], t[front], normal[front], ids[front]
    rgb[b, y, x] = _shade_parts(ids, unit(normal), rays[y, x], palette)
    depth[b, y, x] = t
    parts[b, y, x] = ids


def _draw_shadow(rgb, depth, floor, rays, origin, camera, focal, points: np.ndarray) -> None:
    """Darken the arena floor under the body (before the body is drawn)."""
    B, H, W = depth.shape
    hip, neck = points[:, _K["hip"]], points[:, _K["neck"]]
    shift = -LIGHT_DIRECTION[:2] / LIGHT_DIRECTION[2]
    ground = np.stack([hip, neck], 1).copy()
    ground[..., :2] += ground[..., 2:3] * shift
    ground[..., 2] = 0.0
    fake = Primitives(
        sph_c=np.zeros((B, 0, 3)), sph_r=np.zeros(0), sph_id=np.zeros(0, np.int64),
        cyl_a=ground[:, :1], cyl_b=ground[:, 1:], cyl_r=np.array([32.0]), cyl_id=np.zeros(1, np.int64),
        ell_c=np.zeros((B, 0, 3)), ell_u=np.zeros((B, 0, 3, 3)), ell_s=np.zeros((B, 0, 3)),
        ell_id=np.zeros(0, np.int64),
    )  # fmt: skip
    C, R = camera_pose(camera)
    box = screen_boxes(camera, fake, origin, R, focal, W, H)[:, 0]
    bi, yy, xx = enumerate_boxes(box[:, 0], box[:, 1], box[:, 2], box[:, 3])
    keep = floor[yy, xx]
    bi, yy, xx = bi[keep], yy[keep], xx[keep]
    fpts = origin + depth[bi, yy, xx][:, None] * rays[yy, xx]
    rgb[bi, yy, xx] *= _contact_shadow(fpts, bi, points)[:, None]


def iter_view(
    points_3d: Float[np.ndarray, "T J 3"],
    camera,
    scene: Scene | None = None,
    seed: int = 0,
    view_index: int = 0,
    noise_std: float = 3.0,
    chunk: int = 24,
    return_parts: bool = False,
    frame_index: np.ndarray | None = None,
    nuisances: Nuisances | None = None,
) -> Iterator[np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Render the frames of one view, one by one (streamed in chunks of ``chunk`` frames).

    ``nuisances``: what makes the images hard (:mod:`.nuisances`; default none: the plain renderer).

    Yields uint8 (H, W, 3) RGB frames, or with ``return_parts`` pairs ``(frame, parts)`` where
    ``parts`` (H, W) int8 is the body part id of each pixel before noise (0: scene,
    :data:`OCCLUDER` for the moving occluder).

    ``frame_index`` (T,) gives the video frame number of each pose (default ``0 .. T-1``); the
    moving occluders and the noise depend on it. The noise of frame t of view ``view_index``
    depends only on (seed, view_index, t), so any chunking gives the same frames.
    """
    scene = Scene() if scene is None else scene
    W, H = camera_size(camera)
    origin, _ = camera_pose(camera)
    rays = pixel_rays(camera)
    t_static, col_static, floor = static_scene(origin, rays.reshape(-1, 3), scene)
    t_static, col_static, floor = t_static.reshape(H, W), col_static.reshape(H, W, 3), floor.reshape(H, W)
    focal = focal_length(camera)
    nuisances = Nuisances() if nuisances is None else nuisances
    palette = part_colours(nuisances)
    col_static = texture_scene(col_static, nuisances, seed, view_index)
    paw_px = PAW_RADIUS * focal / np.maximum(t_static, 1e-6)
    col_static = draw_distractors(col_static, floor, paw_px, nuisances, seed, view_index)
    T = points_3d.shape[0]
    frame_index = np.arange(T) if frame_index is None else np.asarray(frame_index, dtype=np.int64)
    _, R = camera_pose(camera)
    for s in range(0, T, chunk):
        pts = points_3d[s : s + chunk]
        idx = frame_index[s : s + chunk]
        B = len(idx)
        rgb = np.broadcast_to(col_static, (B, H, W, 3)).copy()
        depth = np.broadcast_to(t_static, (B, H, W)).copy()
        parts = np.zeros((B, H, W), dtype=np.int8)
        _draw_shadow(rgb, depth, floor, rays, origin, camera, focal, pts)
        _draw(rgb, depth, parts, rays, origin, R, focal, camera, body_primitives(pts), palette)
        occ = occluder_primitives(scene, idx)
        if occ is not None and occ.cyl_on.any():
            _draw(rgb, depth, parts, rays, origin, R, focal, camera, occ)
        for b in range(B):
            frame_rgb = rgb[b]
            if nuisances.motion_blur:
                body = (parts[b] > 0) & (parts[b] != OCCLUDER)
                velocity = _image_velocity(points_3d, s + b, camera)
                frame_rgb = blur_body(frame_rgb, body, col_static, velocity, nuisances)
            if nuisances.lighting:
                frame_rgb = frame_rgb * light_field(nuisances, seed, view_index, int(idx[b]), H, W)[..., None]
            rng = np.random.default_rng([seed, view_index, int(idx[b]), 1])
            gain = np.float32(255.0 * (1.0 + 0.015 * rng.standard_normal()))
            img = frame_rgb.astype(np.float32) * gain
            img += np.float32(noise_std) * rng.standard_normal((H, W, 3), dtype=np.float32)
            frame = np.clip(np.rint(img), 0, 255).astype(np.uint8)
            yield (frame, parts[b]) if return_parts else frame


def _image_velocity(points_3d: np.ndarray, t: int, camera) -> np.ndarray:
    """The body's mean image displacement per frame around pose ``t`` (central difference)."""
    before, after = max(0, t - 1), min(len(points_3d) - 1, t + 1)
    if after == before:
        return np.zeros(2)
    uv = project_points(camera, points_3d[[before, after]].reshape(-1, 3)).reshape(2, -1, 2)
    return (uv[1] - uv[0]).mean(0) / (after - before)


def render_views(
    points_3d: Float[np.ndarray, "T J 3"],
    cameras: Sequence,
    scene: Scene | None = None,
    seed: int = 0,
    noise_std: float = 3.0,
    return_parts: bool = False,
    frame_index: np.ndarray | None = None,
    nuisances: Nuisances | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Render every frame of every view into memory: uint8 (T, V, H, W, 3).

    For long videos stream one view at a time with :func:`iter_view` instead. With
    ``return_parts``, also the part id maps (T, V, H, W) int8. ``frame_index``: see
    :func:`iter_view`.
    """
    cams = list(getattr(cameras, "cameras", cameras))
    W, H = camera_size(cams[0])
    T = points_3d.shape[0]
    out = np.zeros((T, len(cams), H, W, 3), dtype=np.uint8)
    parts = np.zeros((T, len(cams), H, W), dtype=np.int8)
    for v, cam in enumerate(cams):
        items = iter_view(
            points_3d, cam, scene, seed, v, noise_std, return_parts=True, frame_index=frame_index,
            nuisances=nuisances,
        )  # fmt: skip
        for t, item in enumerate(items):
            out[t, v], parts[t, v] = item
    return (out, parts) if return_parts else out


# ---- visibility --------------------------------------------------------------------------


def keypoint_visibility(
    points_3d: Float[np.ndarray, "T J 3"],
    cameras: Sequence,
    scene: Scene | None = None,
    frame_index: np.ndarray | None = None,
) -> tuple[Float[np.ndarray, "T V J 2"], Bool[np.ndarray, "T V J"]]:
    """Projections (T, V, J, 2) and visibility (T, V, J) of every keypoint in every view.

    Visible: inside the image (``-0.5 <= x <= W - 0.5``, same for y), in front of the camera,
    and the first surface along the ray from the camera centre to the keypoint (body, pillars,
    walls, moving occluders) is no nearer than ``distance - radius_j - tolerance`` with
    ``tolerance = VISIBILITY_TOLERANCE + 0.25 radius_j``.
    """
    scene = Scene() if scene is None else scene
    cams = list(getattr(cameras, "cameras", cameras))
    T, J, _ = points_3d.shape
    frames = np.arange(T) if frame_index is None else np.asarray(frame_index, dtype=np.int64)
    body = body_primitives(points_3d)
    occ = occluder_primitives(scene, frames)
    points_2d = np.zeros((T, len(cams), J, 2))
    visible = np.zeros((T, len(cams), J), dtype=bool)
    for v, cam in enumerate(cams):
        W, H = camera_size(cam)
        origin, R = camera_pose(cam)
        uv = project_points(cam, points_3d.reshape(-1, 3)).reshape(T, J, 2)
        points_2d[:, v] = uv
        z_cam = (points_3d - origin) @ R[2]
        vec = points_3d - origin
        dist = np.linalg.norm(vec, axis=-1)
        dirs = vec / dist[..., None]
        t_hit, _, _ = cast_primitives(origin, dirs, body)
        if occ is not None:
            t_occ, _, _ = cast_primitives(origin, dirs, occ)
            t_hit = np.minimum(t_hit, t_occ)
        t_st, _, _ = cast_static(origin, dirs.reshape(-1, 3), scene.arena)
        t_hit = np.minimum(t_hit, t_st.reshape(T, J))
        slack = KEYPOINT_RADII * 1.25 + VISIBILITY_TOLERANCE
        clear = t_hit >= dist - slack[None]
        inside = (uv[..., 0] >= -0.5) & (uv[..., 0] <= W - 0.5)
        inside &= (uv[..., 1] >= -0.5) & (uv[..., 1] <= H - 0.5)
        visible[:, v] = clear & inside & (z_cam > 1.0)
    return points_2d, visible
