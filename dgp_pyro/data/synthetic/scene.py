"""The synthetic world besides the animal: arena, moving occluder, lighting, and the calibrated cameras.

:func:`make_cameras` places V cameras around and above the arena (an ordinary
:class:`~dgp_pyro.geometry.camera_group.CameraGroup`); :func:`make_scene` adds an occluder
(:class:`Occluder`, an experimenter's arm) that passes in front of one of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dgp_pyro.data.synthetic.animal import ARENA, KEYPOINTS, Arena
from dgp_pyro.data.synthetic.camera_rays import camera_pose, camera_size, focal_length, project_points
from dgp_pyro.geometry.camera import Camera
from dgp_pyro.geometry.camera_group import CameraGroup

__all__ = ["DISTORTION", "Occluder", "Scene", "make_cameras", "make_scene"]

_K = {name: i for i, name in enumerate(KEYPOINTS)}


#: The one directional light (unit vector towards it) and the ambient share of the shading.
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


def make_cameras(
    views: int = 3, size: tuple[int, int] = (160, 128), seed: int = 0, arena: Arena = ARENA
) -> CameraGroup:
    """V calibrated cameras around and above the arena, looking at its centre.

    Cameras sit on a circle (azimuths evenly spaced, with a few degrees of seeded jitter), about
    430 mm from the arena centre horizontally and 380 mm up (a single camera looks from higher
    up, 500 mm). Each camera's focal length is the largest that keeps the region the animal can
    reach (``[35, size - 35]^2``, 0 to 60 mm high) inside its image, so the animal fills as much
    of the frame as it can. Names are ``cam0, cam1, ...``; lenses have a mild distortion
    (:data:`DISTORTION`).

    Returns a :class:`~dgp_pyro.geometry.camera_group.CameraGroup`.
    """
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
    C, R = camera_pose(cam)
    centre = arena.centre + np.array([0.0, 0.0, 15.0])
    dist = float(np.linalg.norm(centre - C))
    near = C + (centre - C) * 0.33
    right = R[0] * np.array([1.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    W, H = camera_size(cam)
    focal = focal_length(cam)
    half_width = (W / 2.0) * (0.33 * dist) / focal
    sweep = 1.3 * half_width + 20.0
    side = float(rng.choice([-1.0, 1.0]))

    def image_y(z: float) -> tuple[float, float]:
        q = np.array([near[0], near[1], z])
        return float(project_points(cam, q[None])[0, 1]), float((q - C) @ R[2])

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
        line = near[None] + grid[:, None] * right + np.array([0.0, 0.0, mid_z - near[2]])
        xs = project_points(cam, line)[:, 0]
        x_hip = project_points(cam, points_3d[t_mid, _K["hip"]][None])[0, 0]
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
