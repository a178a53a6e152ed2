"""The synthetic animal's body as primitives (spheres, capsules, ellipsoids), with part ids and colours.

The body is a set of shaded primitives built from the keypoints of each frame
(:func:`body_primitives`): two trunk ellipsoids along the spine, a head ellipsoid with a nose
sphere and eyes, two flat ear ellipsoids, a tapered tail (a chain of capsules of decreasing
radius), legs as thin capsules from the shoulders and hips to the paws, and paws as spheres.
Each region has its own colour (:data:`PART_COLOURS`; left and right limbs differ) so a network
can tell them apart.

The moving occluders become capsules too (:func:`occluder_primitives`), with the part id
:data:`OCCLUDER`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

from dgp_pyro.data.synthetic.animal import KEYPOINTS, PAW_RADIUS
from dgp_pyro.data.synthetic.scene import Scene

__all__ = [
    "KEYPOINT_PARTS",
    "KEYPOINT_RADII",
    "OCCLUDER",
    "PART_COLOURS",
    "PART_NAMES",
    "VISIBILITY_TOLERANCE",
    "Primitives",
    "body_primitives",
    "occluder_primitives",
]

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


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def frame_from(fwd: np.ndarray, up_hint: np.ndarray | None = None) -> np.ndarray:
    """Orthonormal rows (fwd, left, up) with fwd given and up as close to ``up_hint`` as possible."""
    fwd = unit(fwd)
    if up_hint is None:
        up_hint = np.broadcast_to(np.array([0.0, 0.0, 1.0]), fwd.shape)
    left = np.cross(up_hint, fwd)
    bad = np.linalg.norm(left, axis=-1) < 1e-6
    if np.any(bad):
        left[bad] = np.cross(np.array([1.0, 0.0, 0.0]), fwd[bad])
    left = unit(left)
    up = np.cross(fwd, left)
    return np.stack([fwd, left, up], axis=-2)


def body_primitives(points: Float[np.ndarray, "B J 3"]) -> Primitives:
    """The body's spheres, capsules and ellipsoids for poses ``points`` (B, J, 3) in mm."""
    P = {name: points[:, i] for name, i in _K.items()}
    B = points.shape[0]
    hip, spine, neck, snout = P["hip"], P["spine_mid"], P["neck"], P["snout"]
    body_fwd = unit(neck - hip)
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
    rear_u = frame_from(rear_axis)
    front_u = frame_from(front_axis)
    head_u = frame_from(head_axis, np.cross(head_axis, -left))
    ear_l_u = frame_from(head_u[:, 0], head_u[:, 2])
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
