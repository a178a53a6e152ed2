"""The synthetic animal: a rodent-like 3D skeleton and its motion in an arena.

World units are millimetres. The arena is a square box ``[0, size] x [0, size]`` with its floor at
``z = 0`` and ``z`` pointing up.

Keypoints (:data:`KEYPOINTS`, 13 of them, in this order):

==================  ==================================================================
``snout``            tip of the nose
``ear_left``         centre of the left ear
``ear_right``        centre of the right ear
``neck``             back of the head, where the head meets the trunk
``spine_mid``        middle of the back
``hip``              the pelvis, root of the kinematic tree
``tail_base``        where the tail leaves the body
``tail_mid``         middle of the tail
``tail_tip``         end of the tail
``paw_front_left``   left forepaw
``paw_front_right``  right forepaw
``paw_hind_left``    left hind paw
``paw_hind_right``   right hind paw
==================  ==================================================================

"left" and "right" are the animal's own sides. The skeleton (:data:`SKELETON`) is a tree of 12
bones rooted at ``hip``; every bone has a FIXED length (:data:`BONE_LENGTHS`). Motion is built
as forward kinematics: a root position, and for every bone a direction given by two angles
(yaw around the vertical, pitch above the horizontal), so every frame has the exact bone lengths
whatever the angles are.

The behaviour is a small random state machine (walk, turn, rear, pause, scan) whose targets are
blended smoothly; a steering loop keeps the animal away from the walls and from the pillars
given as obstacles. Walking uses a trot-like gait: the paws move in diagonal pairs (front-left
with hind-right), sweep backwards on the floor during stance and are lifted during swing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import Float

#: Keypoint names, in the order of the keypoint axis of every array.
KEYPOINTS: tuple[str, ...] = (
    "snout",
    "ear_left",
    "ear_right",
    "neck",
    "spine_mid",
    "hip",
    "tail_base",
    "tail_mid",
    "tail_tip",
    "paw_front_left",
    "paw_front_right",
    "paw_hind_left",
    "paw_hind_right",
)
_K = {name: i for i, name in enumerate(KEYPOINTS)}

#: Bones as (parent, child) name pairs; a tree rooted at ``hip``.
SKELETON: tuple[tuple[str, str], ...] = (
    ("hip", "spine_mid"),
    ("spine_mid", "neck"),
    ("neck", "snout"),
    ("neck", "ear_left"),
    ("neck", "ear_right"),
    ("hip", "tail_base"),
    ("tail_base", "tail_mid"),
    ("tail_mid", "tail_tip"),
    ("neck", "paw_front_left"),
    ("neck", "paw_front_right"),
    ("hip", "paw_hind_left"),
    ("hip", "paw_hind_right"),
)

#: The bones as (E, 2) keypoint indices, in the order of :data:`SKELETON`.
SKELETON_INDEX: np.ndarray = np.array([(_K[a], _K[b]) for a, b in SKELETON], dtype=np.int64)

#: Bone lengths in millimetres, in the order of :data:`SKELETON` (a mouse-sized body:
#: snout to tail base about 80 mm, tail about 70 mm).
BONE_LENGTHS: np.ndarray = np.array(
    [
        25.0,  # hip -> spine_mid
        22.0,  # spine_mid -> neck
        24.0,  # neck -> snout
        11.0,  # neck -> ear (left)
        11.0,  # neck -> ear (right)
        11.0,  # hip -> tail_base
        30.0,  # tail_base -> tail_mid
        30.0,  # tail_mid -> tail_tip
        24.0,  # neck -> front paw (left)
        24.0,  # neck -> front paw (right)
        19.0,  # hip -> hind paw (left)
        19.0,  # hip -> hind paw (right)
    ]
)

#: Radius (mm) of the paw spheres: a paw on the floor has its keypoint this high.
PAW_RADIUS = 3.5

# Behaviour states of the state machine.
WALK, TURN, REAR, PAUSE, SCAN = range(5)
#: Names of the behaviour states, indexed by state.
STATE_NAMES = ("walk", "turn", "rear", "pause", "scan")


@dataclass(frozen=True)
class Arena:
    """A square box ``[0, size]^2`` (mm) with its floor at ``z = 0``, and round pillars.

    ``pillars`` holds ``(x, y, radius, height)`` rows; the animal steers around them.
    """

    size: float = 400.0
    wall_height: float = 60.0
    pillars: tuple[tuple[float, float, float, float], ...] = ((110.0, 290.0, 14.0, 140.0),)

    @property
    def centre(self) -> np.ndarray:
        return np.array([self.size / 2, self.size / 2, 0.0])


#: The default arena.
ARENA = Arena()


def _direction(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """Unit vectors with the given yaw (around z, from +x) and pitch (above the horizontal)."""
    cp = np.cos(pitch)
    return np.stack([cp * np.cos(yaw), cp * np.sin(yaw), np.sin(pitch)], axis=-1)


def _smooth(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing along axis 0 (edges padded by reflection); sigma in samples."""
    if sigma <= 0:
        return x
    radius = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    pad = [(radius, radius)] + [(0, 0)] * (x.ndim - 1)
    xp = np.pad(x, pad, mode="reflect" if x.shape[0] > radius else "edge")
    out = np.zeros_like(x, dtype=float)
    for i, w in enumerate(k):
        out += w * xp[i : i + x.shape[0]]
    return out


def _smooth_noise(rng: np.random.Generator, n: int, dims: int, sigma: float) -> np.ndarray:
    """Smooth noise with unit standard deviation, correlated over about ``sigma`` samples."""
    x = _smooth(rng.standard_normal((n, dims)), sigma)
    return x / max(float(x.std()), 1e-9)


def behaviour_sequence(frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """A random sequence of behaviour states, one per frame (a semi-Markov chain)."""
    # Transition probabilities between states (rows: from, columns: to).
    trans = np.array(
        [
            [0.00, 0.35, 0.20, 0.25, 0.20],  # walk
            [0.60, 0.00, 0.10, 0.15, 0.15],  # turn
            [0.35, 0.25, 0.00, 0.25, 0.15],  # rear
            [0.45, 0.25, 0.15, 0.00, 0.15],  # pause
            [0.45, 0.25, 0.20, 0.10, 0.00],  # scan
        ]
    )
    durations = {WALK: (1.2, 3.5), TURN: (0.6, 1.5), REAR: (1.0, 2.2), PAUSE: (0.6, 1.8), SCAN: (1.0, 2.5)}
    out = np.empty(frames, dtype=np.int64)
    state = WALK
    t = 0
    while t < frames:
        lo, hi = durations[state]
        n = max(1, int(round(rng.uniform(lo, hi) * fps)))
        out[t : t + n] = state
        t += n
        state = int(rng.choice(5, p=trans[state]))
    return out


def _wrap(a: np.ndarray | float) -> np.ndarray | float:
    return (a + np.pi) % (2 * np.pi) - np.pi


#: How far (mm) the hip keeps from the walls and from the pillars' surfaces: the snout reaches
#: about 71 mm in front of the hip and the tail tip about 71 mm behind it, so a turn on the spot
#: anywhere in the allowed region keeps the whole body inside the arena and out of the pillars.
HIP_MARGIN = 80.0


def _free_distance(p: np.ndarray, psi: np.ndarray, arena: Arena) -> np.ndarray:
    """Distance from the hip ``p`` along headings ``psi`` to the edge of its allowed region."""
    d = np.stack([np.cos(psi), np.sin(psi)], axis=-1)
    lo, hi = HIP_MARGIN, arena.size - HIP_MARGIN
    with np.errstate(divide="ignore", invalid="ignore"):
        tx = np.where(d[..., 0] > 0, (hi - p[0]) / d[..., 0], (lo - p[0]) / d[..., 0])
        ty = np.where(d[..., 1] > 0, (hi - p[1]) / d[..., 1], (lo - p[1]) / d[..., 1])
    free = np.minimum(np.where(np.isfinite(tx), tx, np.inf), np.where(np.isfinite(ty), ty, np.inf))
    free = np.maximum(free, 0.0)
    for px, py, pr, _ in arena.pillars:
        R = pr + HIP_MARGIN
        c = p - np.array([px, py])
        b = d @ c
        disc = b**2 - (c @ c - R**2)
        t_hit = -b - np.sqrt(np.maximum(disc, 0.0))
        hit = (disc > 0) & (t_hit > -R)
        free = np.where(hit, np.minimum(free, np.maximum(t_hit, 0.0)), free)
    return free


def _clearance(q: np.ndarray, arena: Arena) -> np.ndarray:
    """Signed distance (mm) from points ``q`` (..., 2) to the edge of the hip's allowed region
    (positive inside): a continuous function of the position."""
    lo, hi = HIP_MARGIN, arena.size - HIP_MARGIN
    d = np.minimum(np.minimum(q[..., 0] - lo, hi - q[..., 0]), np.minimum(q[..., 1] - lo, hi - q[..., 1]))
    for px, py, pr, _ in arena.pillars:
        d = np.minimum(d, np.hypot(q[..., 0] - px, q[..., 1] - py) - (pr + HIP_MARGIN))
    return d


def _steer(
    targets: dict[str, np.ndarray], fps: float, arena: Arena, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Integrate heading and position, keeping the hip in its allowed region.

    The speed is capped by the free distance ahead (so the animal slows down and stops before
    a wall or a pillar). The animal turns away when a point ahead of it comes near the edge of
    the allowed region (a continuous measure, so the turn rate has no jumps), to the side with
    more room, keeping that side until it is clear. The yaw rate follows its target through two
    first-order lags and the speed through one, so the path has bounded acceleration.

    Returns the hip's xy path (T, 2), the heading (T,), the yaw rate (T,) and the speed (T,).
    """
    T = len(targets["speed"])
    dt = 1.0 / fps
    pos = np.empty((T, 2))
    heading = np.empty(T)
    omega_out = np.empty(T)
    speed_out = np.empty(T)
    # start somewhere with room around
    for _ in range(1000):
        p = rng.uniform(HIP_MARGIN + 20, arena.size - HIP_MARGIN - 20, size=2)
        if _clearance(p, arena) > 30.0:
            break
    psi = rng.uniform(-np.pi, np.pi)
    omega, omega_cmd, v, side = 0.0, 0.0, 0.0, 0.0
    tau_w, tau_v = 0.12, 0.25
    for t in range(T):
        fwd = np.array([np.cos(psi), np.sin(psi)])
        reach = 20.0 + 0.4 * v
        ahead = _clearance(p + reach * fwd, arena)
        urgency = float(np.clip((40.0 - ahead) / 40.0, 0.0, 1.0))
        if urgency > 0 and side == 0.0:
            turned = [psi + 0.8, psi - 0.8]
            room = [_clearance(p + reach * np.array([np.cos(a), np.sin(a)]), arena) for a in turned]
            side = 1.0 if room[0] >= room[1] else -1.0
        elif ahead > 55.0:
            side = 0.0
        free = float(_free_distance(p, np.array([psi]), arena)[0])
        omega_target = float(np.clip(targets["omega"][t] * (1 - urgency) + side * 2.6 * urgency, -3.0, 3.0))
        v_target = min(float(targets["speed"][t]), 1.0 * max(free - 5.0, 0.0))
        omega_cmd += (omega_target - omega_cmd) * dt / tau_w
        omega += (omega_cmd - omega) * dt / tau_w
        v += (v_target - v) * dt / tau_v
        psi = psi + omega * dt
        p = p + v * dt * np.array([np.cos(psi), np.sin(psi)])
        pos[t], heading[t], omega_out[t], speed_out[t] = p, psi, omega, v
    return pos, heading, omega_out, speed_out


def _leg(parent: np.ndarray, yaw: np.ndarray, elevation: np.ndarray, length: float) -> np.ndarray:
    """A paw at ``length`` from ``parent``, in the direction (yaw, ``-elevation``)."""
    return parent + length * _direction(yaw, -elevation)


def _floor_elevation(parent_z: np.ndarray, target_z: np.ndarray, length: float) -> np.ndarray:
    """The angle below the horizontal that puts the end of a bone of ``length`` at ``target_z``."""
    return np.arcsin(np.clip((parent_z - target_z) / length, -1.0, 1.0))


def simulate_motion(
    frames: int = 600,
    fps: float = 30.0,
    seed: int = 0,
    arena: Arena = ARENA,
    return_states: bool = False,
) -> Float[np.ndarray, "time keypoints 3"] | tuple[np.ndarray, np.ndarray]:
    """Simulate the animal moving in the arena; deterministic for a seed.

    Args:
        frames: number of frames T.
        fps: frame rate; speeds, durations and gait frequencies are in real time (per second).
        seed: random seed of the behaviour sequence, the start pose and the noise.
        arena: the arena; its walls and pillars are avoided.
        return_states: also return the behaviour state per frame (0 walk, 1 turn, 2 rear,
            3 pause, 4 scan).

    Returns:
        ``points_3d`` of shape (T, J, 3) in mm, J = len(KEYPOINTS); with ``return_states``, the
        pair ``(points_3d, states)``.
    """
    if frames < 1:
        raise ValueError("frames must be >= 1")
    rng = np.random.default_rng(seed)
    T = frames
    dt = 1.0 / fps
    t = np.arange(T) * dt
    states = behaviour_sequence(T, fps, rng)
    onehot = np.eye(5)[states]  # (T, 5)
    # Behaviour weights blended over ~0.2 s so transitions are smooth.
    w = _smooth(onehot, 0.2 * fps)
    w_walk, w_turn, w_rear, w_pause, w_scan = w.T

    # Per-segment random parameters (speed, turning direction), then blended.
    seg_start = np.r_[0, np.flatnonzero(np.diff(states)) + 1]
    seg_id = np.cumsum(np.isin(np.arange(T), seg_start)) - 1
    n_seg = len(seg_start)
    seg_speed = rng.uniform(50.0, 115.0, n_seg)
    seg_turn = rng.choice([-1.0, 1.0], n_seg) * rng.uniform(1.2, 2.4, n_seg)
    seg_drift = rng.uniform(-0.5, 0.5, n_seg)
    speed_walk = seg_speed[seg_id]
    speed_target = _smooth(w_walk * speed_walk + w_turn * 0.35 * speed_walk + w_scan * 8.0, 0.15 * fps)
    omega_target = _smooth(
        w_walk * seg_drift[seg_id] + w_turn * seg_turn[seg_id], 0.15 * fps
    ) + 0.25 * _smooth_noise(rng, T, 1, 0.6 * fps)[:, 0] * (w_walk + w_scan)
    pos, heading, omega, speed = _steer({"speed": speed_target, "omega": omega_target}, fps, arena, rng)

    noise = _smooth_noise(rng, T, 12, 0.35 * fps)
    breath = np.sin(2 * np.pi * 2.5 * t + rng.uniform(0, 2 * np.pi))

    # ---- trunk: root (hip) height and spine angles ------------------------------------------
    crouch = w_pause
    hip_z = 16.5 + 2.0 * w_rear - 2.0 * crouch + 0.3 * breath + 0.4 * noise[:, 0]
    hip = np.stack([pos[:, 0], pos[:, 1], hip_z], axis=-1)
    bend = np.clip(0.16 * omega, -0.45, 0.45)  # the body curves into a turn
    pitch1 = np.deg2rad(8.0 + 50.0 * w_rear + 1.0 * breath + 1.5 * noise[:, 1])
    pitch2 = np.deg2rad(5.0 + 62.0 * w_rear - 3.0 * crouch + 2.0 * noise[:, 2])
    yaw1 = heading
    yaw2 = heading + bend + 0.05 * noise[:, 3]
    spine = hip + BONE_LENGTHS[0] * _direction(yaw1, pitch1)
    neck = spine + BONE_LENGTHS[1] * _direction(yaw2, pitch2)

    # ---- head: yaw and pitch, scanning ------------------------------------------------------
    scan_freq = 0.7 + 0.2 * np.sin(2 * np.pi * 0.1 * t)
    scan_phase = np.cumsum(2 * np.pi * scan_freq * dt)
    scan = np.deg2rad(38.0) * w_scan * np.sin(scan_phase) + np.deg2rad(10.0) * (w_pause + w_rear) * np.sin(
        0.6 * scan_phase + 1.0
    )
    yaw3 = yaw2 + 1.6 * bend + scan + 0.08 * noise[:, 4]
    pitch3 = np.deg2rad(
        -18.0 + 45.0 * w_rear + 12.0 * w_scan * np.sin(0.5 * scan_phase) - 6.0 * crouch + 4.0 * noise[:, 5]
    )
    roll3 = 0.15 * w_scan * np.sin(scan_phase + 0.7) + 0.05 * noise[:, 6]
    head_fwd = _direction(yaw3, pitch3)
    snout = neck + BONE_LENGTHS[2] * head_fwd
    # head frame: fwd, left, up (with a little roll)
    left0 = np.stack([-np.sin(yaw3), np.cos(yaw3), np.zeros(T)], axis=-1)
    up0 = np.cross(head_fwd, left0)
    cr, sr = np.cos(roll3)[:, None], np.sin(roll3)[:, None]
    left = cr * left0 + sr * up0
    up = -sr * left0 + cr * up0
    ears = []
    for side in (1.0, -1.0):
        d = 3.0 * head_fwd + side * 8.0 * left + 6.5 * up
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        ears.append(neck + BONE_LENGTHS[3] * d)

    # ---- tail: lags behind the heading, waves, rests on the floor ------------------------------
    tail_heading = np.unwrap(heading)
    lag = _smooth(tail_heading, 0.3 * fps)
    wave_phase = np.cumsum(2 * np.pi * (0.8 + 0.01 * speed) * dt)
    tail_yaw0 = lag + np.pi - 0.5 * bend
    tail_base = hip + BONE_LENGTHS[5] * _direction(tail_yaw0, np.full(T, np.deg2rad(-25.0)))
    yaw_mid = tail_yaw0 - 0.8 * bend + 0.25 * np.sin(wave_phase) + 0.1 * noise[:, 7]
    pitch_mid = -_floor_elevation(tail_base[:, 2], np.full(T, 2.5), BONE_LENGTHS[6])
    tail_mid = tail_base + BONE_LENGTHS[6] * _direction(yaw_mid, pitch_mid)
    yaw_tip = yaw_mid - 0.5 * bend + 0.4 * np.sin(wave_phase - 1.2) + 0.15 * noise[:, 8]
    pitch_tip = -_floor_elevation(tail_mid[:, 2], np.full(T, 1.5), BONE_LENGTHS[7])
    tail_tip = tail_mid + BONE_LENGTHS[7] * _direction(yaw_tip, pitch_tip)

    # ---- legs: a diagonal-pair gait ---------------------------------------------------------
    duty = 0.6
    turn_speed = np.abs(omega) * 25.0
    gait_speed = np.maximum(speed, turn_speed)
    step_freq = 1.3 + 0.01 * gait_speed
    gait_phase = np.cumsum(step_freq * dt) + rng.uniform()
    amp = np.clip(gait_speed / 80.0, 0.0, 1.2) * (1.0 - w_rear)  # gait amplitude, 0 when still
    sweep_len = gait_speed * duty / step_freq / 2.0  # half the stance sweep (mm): feet ~ still on floor
    lift_h = 5.0
    paws = {}
    for name, parent, parent_yaw, f0, s0, offset, length in (
        ("paw_front_left", neck, yaw2, -3.0, 8.5, 0.0, BONE_LENGTHS[8]),
        ("paw_front_right", neck, yaw2, -3.0, -8.5, 0.5, BONE_LENGTHS[9]),
        ("paw_hind_left", hip, yaw1, 3.0, 11.0, 0.5, BONE_LENGTHS[10]),
        ("paw_hind_right", hip, yaw1, 3.0, -11.0, 0.0, BONE_LENGTHS[11]),
    ):
        ph = (gait_phase + offset) % 1.0
        stance = ph < duty
        u = np.where(stance, 0.0, (ph - duty) / (1.0 - duty))
        sweep = np.where(stance, 1.0 - 2.0 * ph / duty, -np.cos(np.pi * u))
        lift = np.where(stance, 0.0, 0.5 * (1.0 - np.cos(2.0 * np.pi * u)))
        # smooth the sawtooth corners a little (the gait phase is smooth, the profile is C0)
        fwd = f0 + sweep_len * np.minimum(amp, 1.0) * sweep
        lat = s0 * (1.0 + 0.1 * crouch)
        yaw = parent_yaw + np.arctan2(lat, fwd)
        target_z = PAW_RADIUS + lift_h * amp * lift
        elev = _floor_elevation(parent[:, 2], target_z, length)
        if name.startswith("paw_front"):
            # rearing: forepaws held up in front of the chest
            side = np.sign(s0)
            yaw_rear = parent_yaw + side * np.deg2rad(28.0) + 0.1 * noise[:, 9 + (side > 0)]
            elev_rear = np.deg2rad(38.0) + 0.08 * noise[:, 11]
            rel = (1 - w_rear) * _wrap(yaw - parent_yaw) + w_rear * _wrap(yaw_rear - parent_yaw)
            yaw = parent_yaw + rel
            elev = np.minimum((1 - w_rear) * elev + w_rear * elev_rear, elev)
        paws[name] = _leg(parent, yaw, elev, length)

    names = {
        "snout": snout,
        "ear_left": ears[0],
        "ear_right": ears[1],
        "neck": neck,
        "spine_mid": spine,
        "hip": hip,
        "tail_base": tail_base,
        "tail_mid": tail_mid,
        "tail_tip": tail_tip,
        **paws,
    }
    points = np.stack([names[k] for k in KEYPOINTS], axis=1)
    if return_states:
        return points, states
    return points


def bone_lengths(points_3d: np.ndarray) -> np.ndarray:
    """Bone lengths (..., E) of a pose array (..., J, 3), in the order of :data:`SKELETON`."""
    a, b = SKELETON_INDEX[:, 0], SKELETON_INDEX[:, 1]
    return np.linalg.norm(points_3d[..., b, :] - points_3d[..., a, :], axis=-1)
