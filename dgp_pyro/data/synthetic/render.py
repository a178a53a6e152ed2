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
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from jaxtyping import Bool, Float

from dgp_pyro.data.synthetic.animal import ARENA, KEYPOINTS, PAW_RADIUS, Arena

_K = {name: i for i, name in enumerate(KEYPOINTS)}

# ---- body part regions and their colours --------------------------------------------------

NONE = 0
HEAD, NOSE, EAR_LEFT, EAR_RIGHT, TRUNK_FRONT, TRUNK_REAR, TAIL, EYE = 1, 2, 3, 4, 5, 6, 7, 8
LEG_FRONT_LEFT, LEG_FRONT_RIGHT, LEG_HIND_LEFT, LEG_HIND_RIGHT = 9, 10, 11, 12
OCCLUDER = 13

#: Part region names, indexed by part id (0: no body part).
PART_NAMES: tuple[str, ...] = (
    "none",
    "head",
    "nose",
    "ear_left",
    "ear_right",
    "trunk_front",
    "trunk_rear",
    "tail",
    "eye",
    "leg_front_left",
    "leg_front_right",
    "leg_hind_left",
    "leg_hind_right",
    "occluder",
)

#: Base RGB colour (0..1) of every part region, indexed by part id.
PART_COLOURS: np.ndarray = (
    np.array(
        [
            [0, 0, 0],
            [222, 186, 128],  # head: sand
            [235, 70, 95],  # nose: red-pink
            [250, 120, 175],  # left ear: pink
            [170, 95, 235],  # right ear: violet
            [150, 112, 78],  # front trunk: light brown
            [112, 82, 58],  # rear trunk: dark brown
            [225, 165, 150],  # tail: pale pink
            [15, 12, 12],  # eyes
            [60, 200, 70],  # front left leg: green
            [40, 150, 235],  # front right leg: blue
            [240, 215, 40],  # hind left leg: yellow
            [245, 110, 30],  # hind right leg: orange
            [60, 62, 70],  # moving occluder: dark grey
        ],
        dtype=np.float64,
    )
    / 255.0
)

#: For every keypoint, the part regions whose surface it lies on or under.
KEYPOINT_PARTS: tuple[tuple[int, ...], ...] = (
    (NOSE, HEAD),  # snout
    (EAR_LEFT,),  # ear_left
    (EAR_RIGHT,),  # ear_right
    (HEAD, TRUNK_FRONT, EAR_LEFT, EAR_RIGHT),  # neck
    (TRUNK_FRONT, TRUNK_REAR),  # spine_mid
    (TRUNK_REAR,),  # hip
    (TRUNK_REAR, TAIL),  # tail_base
    (TAIL,),  # tail_mid
    (TAIL,),  # tail_tip
    (LEG_FRONT_LEFT,),
    (LEG_FRONT_RIGHT,),
    (LEG_HIND_LEFT,),
    (LEG_HIND_RIGHT,),
)

#: Depth (mm) of each keypoint under the surface of its own body part: a keypoint is visible
#: when the first hit along its camera ray is at most this much (plus a tolerance) nearer.
KEYPOINT_RADII: np.ndarray = np.array(
    [3.5, 6.0, 6.0, 12.0, 13.0, 14.0, 9.0, 2.8, 2.0, PAW_RADIUS, PAW_RADIUS, PAW_RADIUS, PAW_RADIUS]
)
#: Extra slack (mm) of the visibility test: ``2 mm + 25 %`` of the radius.
VISIBILITY_TOLERANCE = 2.0

LIGHT_DIRECTION: np.ndarray = np.array([-0.35, -0.45, 1.0]) / np.linalg.norm([-0.35, -0.45, 1.0])
AMBIENT = 0.38


# ---- the scene ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Occluder:
    """A vertical bar (a capsule of ``radius``): an experimenter's arm passing in front of a camera.

    Its bottom end follows the waypoints ``path`` (K, 3) in mm, reached at the frames ``times``
    (K,) (increasing), easing in and out between them; before the first and after the last
    time it is absent. The bar reaches from its bottom end up to ``height`` above it.
    """

    times: tuple[int, ...]
    path: tuple[tuple[float, float, float], ...]
    radius: float = 12.0
    height: float = 300.0

    def segment(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bottom and top ends (B, 3) and whether it is present (B,) at the given frames."""
        frames = np.asarray(frames, dtype=np.float64)
        times = np.asarray(self.times, dtype=np.float64)
        path = np.asarray(self.path, dtype=np.float64)
        active = (frames >= times[0]) & (frames <= times[-1])
        k = np.clip(np.searchsorted(times, frames, side="right") - 1, 0, len(times) - 2)
        u = np.clip((frames - times[k]) / np.maximum(times[k + 1] - times[k], 1e-9), 0.0, 1.0)
        u = 0.5 - 0.5 * np.cos(np.pi * u)  # ease in and out
        bottom = path[k] * (1 - u[:, None]) + path[k + 1] * u[:, None]
        top = bottom + np.array([0.0, 0.0, self.height])
        return bottom, top, active


@dataclass(frozen=True)
class Scene:
    """What is in the arena besides the animal: the arena (walls, pillars) and moving occluders."""

    arena: Arena = ARENA
    occluders: tuple[Occluder, ...] = field(default_factory=tuple)
    texture_seed: int = 0


# ---- cameras and scene construction ---------------------------------------------------------

#: Default lens distortion of the synthetic cameras (OpenCV k1 k2 p1 p2 k3): mild barrel.
DISTORTION = (-0.12, 0.03, 0.0008, -0.0005, 0.0)


def make_cameras(views: int = 3, size: tuple[int, int] = (160, 128), seed: int = 0, arena: Arena = ARENA):
    """V calibrated cameras around and above the arena, looking at its centre.

    Cameras sit on a circle (azimuths evenly spaced, with a few degrees of seeded jitter), about
    430 mm from the arena centre horizontally and 380 mm up (a single camera looks from higher
    up, 500 mm). Each camera's focal length is the largest that keeps the region the animal can
    reach (``[35, size - 35]^2``, 0 to 60 mm high) inside its image, so the animal fills as much
    of the frame as it can. Names are ``cam0, cam1, ...``; lenses have a mild distortion
    (:data:`DISTORTION`).

    Returns a :class:`dgp_pyro.geometry.cameras.CameraGroup`.
    """
    from dgp_pyro.geometry.cameras import Camera, CameraGroup

    if views < 1:
        raise ValueError("views must be >= 1")
    rng = np.random.default_rng([seed, 4242])
    W, H = int(size[0]), int(size[1])
    centre = arena.centre
    lo, hi = 75.0, arena.size - 75.0
    box = np.array([[x, y, z] for x in (lo, hi) for y in (lo, hi) for z in (0.0, 60.0)])
    # a dense outline too (distortion bends the edges)
    edge = np.linspace(lo, hi, 9)
    outline = np.concatenate(
        [np.stack([edge, np.full(9, c), np.full(9, z)], -1) for c in (lo, hi) for z in (0.0, 60.0)]
        + [np.stack([np.full(9, c), edge, np.full(9, z)], -1) for c in (lo, hi) for z in (0.0, 60.0)]
    )
    fit_points = np.concatenate([box, outline])
    cams = []
    for k in range(views):
        az = np.deg2rad(-120.0) + 2 * np.pi * k / views + np.deg2rad(rng.uniform(-6, 6))
        radius = (400.0 if views > 1 else 300.0) + rng.uniform(-20, 20)
        height = (430.0 if views > 1 else 520.0) + rng.uniform(-20, 20)
        position = centre + np.array([radius * np.cos(az), radius * np.sin(az), height])
        target = centre + np.array([rng.uniform(-10, 10), rng.uniform(-10, 10), 15.0])
        dist = np.array(DISTORTION) * (1.0 + 0.2 * rng.uniform(-1, 1, 5))
        # the largest focal length that keeps the reachable region inside the image
        cam = Camera.look_at(f"cam{k}", (W, H), 100.0, position, target, dist=dist)
        pc = cam.world_to_camera(fit_points)
        n = pc[:, :2] / pc[:, 2:3]
        d = cam.distort(n)
        # distortion is nearly scale-free for small focal changes: use the distorted extent
        fx = ((W - 1) / 2.0 - 1.0) / np.abs(d[:, 0]).max()
        fy = ((H - 1) / 2.0 - 1.0) / np.abs(d[:, 1]).max()
        focal = float(np.floor(min(fx, fy) * 1000.0) / 1000.0)
        cams.append(Camera.look_at(f"cam{k}", (W, H), focal, position, target, dist=dist))
    return CameraGroup(cams)


def make_scene(
    cameras,
    frames: int,
    seed: int = 0,
    arena: Arena = ARENA,
    fps: float = 30.0,
    points_3d: np.ndarray | None = None,
) -> Scene:
    """The arena plus one moving occluder that passes in front of one camera for a while.

    The occluder (a dark vertical bar, like an experimenter's arm reaching in) crosses the view
    of a camera picked from the seed, a third of the way from the camera to the arena centre,
    during about a fifth of the video (at most 4 s): it comes in from one side, lingers in the
    middle third of that time, and leaves on the other side. With ``points_3d`` it lingers
    where it hides the animal's hip in that camera.
    """
    cams = list(getattr(cameras, "cameras", cameras))
    rng = np.random.default_rng([seed, 99])
    v = int(rng.integers(len(cams)))
    cam = cams[v]
    C, R = _camera_pose(cam)
    centre = arena.centre + np.array([0.0, 0.0, 15.0])
    dist = float(np.linalg.norm(centre - C))
    near = C + (centre - C) * 0.33
    right = R[0] * np.array([1.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    W, H = camera_size(cam)
    focal = _focal(cam)
    half_width = (W / 2.0) * (0.33 * dist) / focal
    sweep = 1.3 * half_width + 20.0
    side = float(rng.choice([-1.0, 1.0]))

    def image_y(z: float) -> tuple[float, float]:
        q = np.array([near[0], near[1], z])
        return float(_project(cam, q[None])[0, 1]), float((q - C) @ R[2])

    # the bar spans the image from below its bottom edge to above its top edge, both ends in
    # front of the camera
    bottom_z = near[2]
    while image_y(bottom_z)[0] < H + 25 and bottom_z > -500:
        bottom_z -= 5.0
    top_z = near[2]
    while image_y(top_z)[0] > -25 and image_y(top_z + 5.0)[1] > 0.1 * dist:
        top_z += 5.0
    duration = int(min(4.0 * fps, max(6, round(0.2 * frames))))
    start = int(rng.integers(0, max(1, frames - duration)))
    t_mid = start + duration // 2
    offset = rng.uniform(-0.3, 0.3) * half_width
    if points_3d is not None and 0 <= t_mid < len(points_3d):
        # where along the sweep line the bar hides the hip at the middle frame
        grid = np.linspace(-sweep, sweep, 201)
        mid_z = near[2]
        xs = _project(cam, near[None] + grid[:, None] * right + np.array([0.0, 0.0, mid_z - near[2]]))[:, 0]
        x_hip = _project(cam, points_3d[t_mid, _K["hip"]][None])[0, 0]
        offset = float(grid[np.argmin(np.abs(xs - x_hip))])
    base = near.copy()
    base[2] = bottom_z
    path = [
        base + (-side * sweep) * right,
        base + (offset - 8.0 * side) * right,
        base + (offset + 8.0 * side) * right,
        base + side * sweep * right,
    ]
    times = [start, start + duration // 3, start + 2 * duration // 3, start + duration]
    occ = Occluder(
        times=tuple(int(t) for t in times),
        path=tuple(tuple(float(x) for x in p) for p in path),
        radius=12.0,
        height=float(top_z - bottom_z),
    )
    return Scene(arena=arena, occluders=(occ,))


# ---- camera helpers (only the public Camera API is used) ---------------------------------


def _camera_pose(camera) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre C (3,) and rotation R (3, 3), with ``world_to_camera(p) = R p + t``."""
    t = np.asarray(camera.world_to_camera(np.zeros((1, 3))), dtype=np.float64).reshape(3)
    R = np.asarray(camera.world_to_camera(np.eye(3)), dtype=np.float64).reshape(3, 3).T - t[:, None]
    C = -R.T @ t
    return C, R


def _project(camera, points: np.ndarray) -> np.ndarray:
    return np.asarray(camera.project(np.asarray(points, dtype=np.float64)), dtype=np.float64)


def camera_size(camera) -> tuple[int, int]:
    """(W, H) of a camera's images."""
    size = getattr(camera, "size", None)
    if size is None:
        size = (camera.width, camera.height)
    return int(size[0]), int(size[1])


def pixel_rays(camera, iterations: int = 12) -> Float[np.ndarray, "H W 3"]:
    """Unit world directions of the rays through every pixel centre, lens distortion included.

    The undistortion inverts ``camera.project`` by Gauss-Newton on the normalised image
    coordinates, so rays and projections agree to well under a hundredth of a pixel.
    """
    W, H = camera_size(camera)
    C, R = _camera_pose(camera)
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float64)
    target = np.stack([xs, ys], axis=-1).reshape(-1, 2)

    def proj(q: np.ndarray) -> np.ndarray:
        cam = np.concatenate([q, np.ones((len(q), 1))], axis=1)
        return _project(camera, C[None] + cam @ R)

    p0 = proj(np.zeros((1, 2)))[0]
    eps = 1e-3
    f = (proj(np.array([[eps, 0.0]]))[0, 0] - p0[0]) / eps, (proj(np.array([[0.0, eps]]))[0, 1] - p0[1]) / eps
    q = (target - p0) / np.array(f)
    h = 1e-6
    for _ in range(iterations):
        r = proj(q) - target
        jx = (proj(q + [h, 0.0]) - proj(q)) / h
        jy = (proj(q + [0.0, h]) - proj(q)) / h
        det = jx[:, 0] * jy[:, 1] - jx[:, 1] * jy[:, 0]
        dx = (jy[:, 1] * r[:, 0] - jy[:, 0] * r[:, 1]) / det
        dy = (-jx[:, 1] * r[:, 0] + jx[:, 0] * r[:, 1]) / det
        q = q - np.stack([dx, dy], axis=-1)
        if np.abs(r).max() < 1e-7:
            break
    cam = np.concatenate([q, np.ones((len(q), 1))], axis=1)
    d = cam @ R
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    return d.reshape(H, W, 3)


# ---- primitives --------------------------------------------------------------------------


@dataclass
class Primitives:
    """Body primitives of B frames. Arrays are per frame (B, N, ...); radii and ids per primitive.

    ``*_on`` (B, N) bool switch a primitive off in a frame (a moving occluder that is absent).
    """

    sph_c: np.ndarray  # (B, Ns, 3)
    sph_r: np.ndarray  # (Ns,)
    sph_id: np.ndarray  # (Ns,)
    cyl_a: np.ndarray  # (B, Nc, 3)
    cyl_b: np.ndarray  # (B, Nc, 3)
    cyl_r: np.ndarray  # (Nc,)
    cyl_id: np.ndarray  # (Nc,)
    ell_c: np.ndarray  # (B, Ne, 3)
    ell_u: np.ndarray  # (B, Ne, 3, 3) rows: unit axes
    ell_s: np.ndarray  # (B, Ne, 3) semi-axes
    ell_id: np.ndarray  # (Ne,)
    sph_on: np.ndarray | None = None
    cyl_on: np.ndarray | None = None


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def _frame_from(fwd: np.ndarray, up_hint: np.ndarray | None = None) -> np.ndarray:
    """Orthonormal rows (fwd, left, up) with fwd given and up as close to ``up_hint`` as possible."""
    fwd = _unit(fwd)
    if up_hint is None:
        up_hint = np.broadcast_to(np.array([0.0, 0.0, 1.0]), fwd.shape)
    left = np.cross(up_hint, fwd)
    bad = np.linalg.norm(left, axis=-1) < 1e-6
    if np.any(bad):
        left[bad] = np.cross(np.array([1.0, 0.0, 0.0]), fwd[bad])
    left = _unit(left)
    up = np.cross(fwd, left)
    return np.stack([fwd, left, up], axis=-2)


def body_primitives(points: Float[np.ndarray, "B J 3"]) -> Primitives:
    """The body's spheres, capsules and ellipsoids for poses ``points`` (B, J, 3) in mm."""
    P = {name: points[:, i] for name, i in _K.items()}
    B = points.shape[0]
    hip, spine, neck, snout = P["hip"], P["spine_mid"], P["neck"], P["snout"]
    body_fwd = _unit(neck - hip)
    # lateral axis of the body (the animal's left), from the horizontal heading
    flat = body_fwd * np.array([1.0, 1.0, 0.0])
    flat_norm = np.linalg.norm(flat, axis=-1, keepdims=True)
    flat = np.where(flat_norm > 1e-6, flat / np.maximum(flat_norm, 1e-12), np.array([1.0, 0.0, 0.0]))
    left = np.cross(np.array([0.0, 0.0, 1.0]), flat)
    down = np.array([0.0, 0.0, -1.0])

    # ellipsoids: rear trunk, front trunk, head, ears
    rear_axis = spine - hip
    rear_len = np.linalg.norm(rear_axis, axis=-1)
    front_axis = neck - spine
    front_len = np.linalg.norm(front_axis, axis=-1)
    head_axis = snout - neck
    head_len = np.linalg.norm(head_axis, axis=-1)
    rear_u = _frame_from(rear_axis)
    front_u = _frame_from(front_axis)
    head_u = _frame_from(head_axis, np.cross(head_axis, -left))
    ear_l_u = _frame_from(head_u[:, 0], head_u[:, 2])
    ells_c = [
        hip + 0.5 * rear_axis - 0.05 * rear_axis,
        spine + 0.5 * front_axis,
        neck + 0.42 * head_axis,
        P["ear_left"],
        P["ear_right"],
    ]
    ells_u = [rear_u, front_u, head_u, ear_l_u, ear_l_u]
    ones = np.ones(B)
    ells_s = [
        np.stack([0.5 * rear_len + 13.0, 14.5 * ones, 12.5 * ones], -1),
        np.stack([0.5 * front_len + 8.0, 12.0 * ones, 11.0 * ones], -1),
        np.stack([0.58 * head_len + 0.2, 8.5 * ones, 7.5 * ones], -1),
        np.stack([1.4 * ones, 5.5 * ones, 6.0 * ones], -1),
        np.stack([1.4 * ones, 5.5 * ones, 6.0 * ones], -1),
    ]
    ell_id = np.array([TRUNK_REAR, TRUNK_FRONT, HEAD, EAR_LEFT, EAR_RIGHT])

    # legs: shoulders and hip joints to the paws
    shoulder = spine + 0.72 * front_axis
    hipjoint = hip + 0.15 * rear_axis
    legs = [
        (shoulder + 7.0 * left + 5.0 * down, P["paw_front_left"], 2.3, LEG_FRONT_LEFT),
        (shoulder - 7.0 * left + 5.0 * down, P["paw_front_right"], 2.3, LEG_FRONT_RIGHT),
        (hipjoint + 9.0 * left + 4.0 * down, P["paw_hind_left"], 2.8, LEG_HIND_LEFT),
        (hipjoint - 9.0 * left + 4.0 * down, P["paw_hind_right"], 2.8, LEG_HIND_RIGHT),
    ]
    # tail: a chain of capsules, radius tapering from 3.8 to 1.2 mm
    tb, tm, tt = P["tail_base"], P["tail_mid"], P["tail_tip"]
    tail_pts = [hip + 0.6 * (tb - hip), tb, 0.5 * (tb + tm), tm, 0.5 * (tm + tt), tt]
    tail_r = [4.2, 3.6, 3.0, 2.5, 2.0, 1.4]

    cyl_a, cyl_b, cyl_r, cyl_id = [], [], [], []
    sph_c, sph_r, sph_id = [], [], []
    for a, b, r, pid in legs:
        cyl_a.append(a)
        cyl_b.append(b)
        cyl_r.append(r)
        cyl_id.append(pid)
        sph_c.append(a)
        sph_r.append(r)
        sph_id.append(pid)
        sph_c.append(b)  # the paw
        sph_r.append(PAW_RADIUS)
        sph_id.append(pid)
    for i in range(len(tail_pts) - 1):
        cyl_a.append(tail_pts[i])
        cyl_b.append(tail_pts[i + 1])
        cyl_r.append(min(tail_r[i], tail_r[i + 1]))
        cyl_id.append(TAIL)
    for p, r in zip(tail_pts[1:], tail_r[1:], strict=True):
        sph_c.append(p)
        sph_r.append(r - 0.6 if r > 1.4 else r)
        sph_id.append(TAIL)
    # nose and eyes
    sph_c.append(snout)
    sph_r.append(3.5)
    sph_id.append(NOSE)
    eye_base = neck + 0.62 * head_axis + 3.5 * head_u[:, 2]
    for side in (1.0, -1.0):
        sph_c.append(eye_base + side * 6.2 * head_u[:, 1])
        sph_r.append(1.8)
        sph_id.append(EYE)
    return Primitives(
        sph_c=np.stack(sph_c, 1),
        sph_r=np.array(sph_r),
        sph_id=np.array(sph_id),
        cyl_a=np.stack(cyl_a, 1),
        cyl_b=np.stack(cyl_b, 1),
        cyl_r=np.array(cyl_r),
        cyl_id=np.array(cyl_id),
        ell_c=np.stack(ells_c, 1),
        ell_u=np.stack(ells_u, 1),
        ell_s=np.stack(ells_s, 1),
        ell_id=ell_id,
    )


def occluder_primitives(scene: Scene, frames: np.ndarray) -> Primitives | None:
    """The moving occluders at the given frames as capsules (None if the scene has none)."""
    if not scene.occluders:
        return None
    frames = np.asarray(frames)
    B = len(frames)
    a, b, on, r = [], [], [], []
    for occ in scene.occluders:
        bottom, top, active = occ.segment(frames)
        a.append(bottom)
        b.append(top)
        on.append(active)
        r.append(occ.radius)
    a, b, on = np.stack(a, 1), np.stack(b, 1), np.stack(on, 1)
    n = len(r)
    return Primitives(
        sph_c=a,
        sph_r=np.array(r),
        sph_id=np.full(n, OCCLUDER),
        cyl_a=a,
        cyl_b=b,
        cyl_r=np.array(r),
        cyl_id=np.full(n, OCCLUDER),
        ell_c=np.zeros((B, 0, 3)),
        ell_u=np.zeros((B, 0, 3, 3)),
        ell_s=np.zeros((B, 0, 3)),
        ell_id=np.zeros(0, dtype=np.int64),
        sph_on=on,
        cyl_on=on,
    )


# ---- ray casting -------------------------------------------------------------------------

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


def _intersect_pairs(
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


def _nearest(key: np.ndarray, t: np.ndarray, *values: np.ndarray):
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
    t, normal, ids = _intersect_pairs(origin, dirs[bi, pi], bi, ni, prims)
    key, t, normal, ids = _nearest(bi * Pn + pi, t, normal, ids)
    rb, rp = np.divmod(key, Pn)
    best_t[rb, rp] = t
    best_n[rb, rp] = _unit(normal)
    best_id[rb, rp] = ids
    return best_t, best_n, best_id


def _enumerate_boxes(x0: np.ndarray, y0: np.ndarray, x1: np.ndarray, y1: np.ndarray):
    """All pixels of K boxes (exclusive ends): (owner (M,), y (M,), x (M,))."""
    w = np.maximum(x1 - x0, 0)
    h = np.maximum(y1 - y0, 0)
    count = w * h
    owner = np.repeat(np.arange(len(count)), count)
    start = np.cumsum(count) - count
    local = np.arange(int(count.sum())) - start[owner]
    ww = w[owner]
    return owner, y0[owner] + local // ww, x0[owner] + local % ww


def _screen_boxes(camera, prims: Primitives, origin: np.ndarray, R: np.ndarray, focal: float, W: int, H: int):
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
    uv = _project(camera, ends.reshape(-1, 3)).reshape(ends.shape[:-1] + (2,))
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


# ---- the static scene --------------------------------------------------------------------


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


class _Textures:
    def __init__(self, seed: int):
        rng = np.random.default_rng([seed, 777])
        self.coarse = _value_noise(rng, 12)
        self.fine = _value_noise(rng, 60)
        self.table = _value_noise(rng, 30)


def cast_static(
    origin: np.ndarray, dirs: Float[np.ndarray, "P 3"], arena: Arena, textures: _Textures | None = None
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


def _static_scene(origin: np.ndarray, dirs: np.ndarray, scene: Scene):
    return cast_static(origin, dirs, scene.arena, _Textures(scene.texture_seed))


# ---- shading -----------------------------------------------------------------------------


def _shade_parts(ids: np.ndarray, normals: np.ndarray, dirs: np.ndarray) -> np.ndarray:
    """Lambertian colour (..., 3) of body hits, with a little specular highlight."""
    base = PART_COLOURS[ids]
    diffuse = np.clip(np.einsum("...k,k->...", normals, LIGHT_DIRECTION), 0, 1)
    half = _unit(LIGHT_DIRECTION - dirs)
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


# ---- per-view rendering --------------------------------------------------------------------


def _focal(camera) -> float:
    C, R = _camera_pose(camera)
    p0 = _project(camera, (C + R[2] * 1000.0)[None])[0]
    p1 = _project(camera, (C + R[2] * 1000.0 + R[0] * 1.0)[None])[0]
    return float(np.linalg.norm(p1 - p0) * 1000.0)


def _draw(rgb, depth, parts, rays, origin, R, focal, camera, prims: Primitives) -> None:
    """Ray cast ``prims`` (B frames) at the pixels their screen boxes cover; composite by depth."""
    B, H, W = depth.shape
    boxes = _screen_boxes(camera, prims, origin, R, focal, W, H)  # (B, N, 4)
    N = boxes.shape[1]
    flat = boxes.reshape(-1, 4)
    owner, yy, xx = _enumerate_boxes(flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3])
    if len(owner) == 0:
        return
    bi, ni = np.divmod(owner, N)
    d = rays[yy, xx]
    t, normal, ids = _intersect_pairs(origin, d, bi, ni, prims)
    key, t, normal, ids = _nearest((bi * H + yy) * W + xx, t, normal, ids)
    b, rest = np.divmod(key, H * W)
    y, x = np.divmod(rest, W)
    front = t < depth[b, y, x]
    b, y, x, t, normal, ids = b[front], y[front], x[front], t[front], normal[front], ids[front]
    rgb[b, y, x] = _shade_parts(ids, _unit(normal), rays[y, x])
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
    C, R = _camera_pose(camera)
    box = _screen_boxes(camera, fake, origin, R, focal, W, H)[:, 0]
    bi, yy, xx = _enumerate_boxes(box[:, 0], box[:, 1], box[:, 2], box[:, 3])
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
) -> Iterator[np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """Render the frames of one view, one by one (streamed in chunks of ``chunk`` frames).

    Yields uint8 (H, W, 3) RGB frames, or with ``return_parts`` pairs ``(frame, parts)`` where
    ``parts`` (H, W) int8 is the body part id of each pixel before noise (0: scene,
    :data:`OCCLUDER` for the moving occluder).

    ``frame_index`` (T,) gives the video frame number of each pose (default ``0 .. T-1``); the
    moving occluders and the noise depend on it. The noise of frame t of view ``view_index``
    depends only on (seed, view_index, t), so any chunking gives the same frames.
    """
    scene = Scene() if scene is None else scene
    W, H = camera_size(camera)
    origin, _ = _camera_pose(camera)
    rays = pixel_rays(camera)
    t_static, col_static, floor = _static_scene(origin, rays.reshape(-1, 3), scene)
    t_static, col_static, floor = t_static.reshape(H, W), col_static.reshape(H, W, 3), floor.reshape(H, W)
    focal = _focal(camera)
    T = points_3d.shape[0]
    frame_index = np.arange(T) if frame_index is None else np.asarray(frame_index, dtype=np.int64)
    _, R = _camera_pose(camera)
    for s in range(0, T, chunk):
        pts = points_3d[s : s + chunk]
        idx = frame_index[s : s + chunk]
        B = len(idx)
        rgb = np.broadcast_to(col_static, (B, H, W, 3)).copy()
        depth = np.broadcast_to(t_static, (B, H, W)).copy()
        parts = np.zeros((B, H, W), dtype=np.int8)
        _draw_shadow(rgb, depth, floor, rays, origin, camera, focal, pts)
        _draw(rgb, depth, parts, rays, origin, R, focal, camera, body_primitives(pts))
        occ = occluder_primitives(scene, idx)
        if occ is not None and occ.cyl_on.any():
            _draw(rgb, depth, parts, rays, origin, R, focal, camera, occ)
        for b in range(B):
            rng = np.random.default_rng([seed, view_index, int(idx[b]), 1])
            gain = np.float32(255.0 * (1.0 + 0.015 * rng.standard_normal()))
            img = rgb[b].astype(np.float32) * gain
            img += np.float32(noise_std) * rng.standard_normal((H, W, 3), dtype=np.float32)
            frame = np.clip(np.rint(img), 0, 255).astype(np.uint8)
            yield (frame, parts[b]) if return_parts else frame


def render_views(
    points_3d: Float[np.ndarray, "T J 3"],
    cameras: Sequence,
    scene: Scene | None = None,
    seed: int = 0,
    noise_std: float = 3.0,
    return_parts: bool = False,
    frame_index: np.ndarray | None = None,
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
            points_3d, cam, scene, seed, v, noise_std, return_parts=True, frame_index=frame_index
        )
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
        origin, R = _camera_pose(cam)
        uv = _project(cam, points_3d.reshape(-1, 3)).reshape(T, J, 2)
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
