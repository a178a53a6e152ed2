"""Cameras from labels: bundle adjustment for multi-view setups that have no calibration.

A mirror rig (one camera, one image holding a direct view and a mirror view), or any rig whose
calibration was never recorded, still has labeled keypoints seen in two or more views. Those
correspondences determine the cameras up to a similarity transform of the world;
:func:`estimate_cameras` finds them and returns a :class:`~dgp_pyro.geometry.camera_group.CameraGroup`
that is written as an ordinary Anipose TOML, so the 3D model uses it like a real calibration.

Method
------

1. **Points.** Every (frame, body part) labeled in two or more views of the same frame is one
   3D point; every label of it in a view is one observation. Body parts never labeled in two
   views of a frame (the mirror mouse's ``obs``, ``obsHigh``, ``obsLow``) cannot be used and
   are named in :attr:`CameraEstimate.notes`.
2. **Affine initialisation** (Tomasi-Kanade). The ``2V x P`` measurement matrix of the tracks
   is centred and factored to rank 3, ``W - b = M S``; missing entries (points seen in some of
   the views only) are imputed by alternating the rank-3 fit and refilling. The metric upgrade
   finds the symmetric positive definite ``Q = A A^T`` that makes each camera's two rows of
   ``M A`` orthogonal and of equal length (scaled orthographic cameras): a linear null-space
   problem in the 6 entries of ``Q``. With three or more views ``Q`` is unique up to scale.
   With **two views it is not**: two affine views do not determine the angle between the
   viewing directions (the depth of every point scales with ``1 / sin(angle)`` and the images
   do not change), so the member of the one-parameter family whose two viewing directions are
   perpendicular is taken, the geometry of a side view plus a mirror view from below. The
   perspective model can move away from it where perspective effects tell it to.
3. **Bundle adjustment** (``scipy.optimize.least_squares``, trust-region reflective, analytic
   sparse Jacobian, ``soft_l1`` robust loss with a scale of ``robust_scale_px``) over the
   cameras and the 3D points, minimising reprojection error in pixels. Each camera ``v`` maps a
   world point ``X`` to::

       Y = R_v X,    (u, v) = s_v (Y_x + t_x, Y_y + t_y) / (1 + kappa_v Y_z) + c_v

   with ``c_v`` the image centre (principal point), ``s_v > 0`` a scale (pixels per world
   unit), and ``kappa_v = 1 / t_z`` the inverse distance of the camera: ``kappa = 0`` is an
   affine (scaled orthographic) camera, so one parametrisation covers both models and passes
   smoothly from one to the other. In pinhole terms ``f_v = s_v / kappa_v`` and
   ``t_z = 1 / kappa_v``: a per-camera focal length, principal point at the image centre, no
   distortion. The affine model fixes ``kappa`` (first at 0, then at ``1 / D``, see below);
   the perspective model frees it (bounded so that every point stays on one side of the
   camera plane) and starts from the refined affine solution. Its exact mirror twin
   (``X -> -X``, every camera turned half a turn about its axis, ``kappa -> -kappa``: the same
   pixels) is resolved by cheirality: the twin with the scene in front of most cameras is
   kept (ties, one direct view and one mirror view, keep the first camera in front).
4. **Handedness of the affine model.** Affine views cannot tell the scene from its mirror
   image (the Necker reversal: ``z -> -z`` with ``R -> F R F``, ``F = diag(1, 1, -1)``, gives
   the same images). The perspective fit can, if weakly: the affine solution takes the
   handedness the perspective fit chose. Where perspective effects are below the labeling
   noise, the handedness of an affine calibration is a guess; projections and triangulation
   do not depend on it.
5. **Choice** (``model="auto"``): both models are fitted; perspective is kept only if it lowers
   the held-out RMSE by at least ``AUTO_MIN_RELATIVE_GAIN`` (5 %) and ``AUTO_MIN_GAIN_PX``
   (0.05 px); mirror rigs are near-affine and usually stay affine.

Limits of two views: besides the affine angle above, a camera and its mirror image are the
configuration (optical axes that intersect: a line and its reflection are coplanar) in which
two perspective views do not determine the focal lengths; a one-parameter family of rigs
(focal length against distance) reprojects equally well, so the perspective model's focal
lengths and distances of a mirror rig are not to be trusted, only its projections.

Anipose format
--------------

- ``perspective``: ``K = [[f, 0, cx], [0, f, cy], [0, 0, 1]]``, ``t = (t_x, t_y, 1 / kappa)``.
  A negative ``kappa`` is a camera that sees the points from behind its image plane, which is
  what a **mirror view** is (the reflection of a camera through the mirror has the wrong
  handedness; with a proper rotation it becomes a camera with the scene behind it, turned by
  half a turn about its axis). It is written with ``R`` turned by 180 degrees about the
  optical axis, ``t = (-t_x, -t_y, 1 / kappa)`` and ``f = s / |kappa|``, which projects
  exactly the same pixels. Projection (NumPy, torch) and DLT triangulation work unchanged;
  only :meth:`Camera.check_in_front` says ``False``. A note names such cameras.
- ``affine``: an affine camera is the limit of a pinhole camera moved far away along its axis
  while its focal length grows with the distance. It is written as a pinhole camera at
  distance ``D`` (``t_z = D``) with focal length ``f = s D``: ``f (Y + t) / (Y_z + D) =
  s (Y + t) / (1 + Y_z / D)`` differs from the affine projection by at most
  ``s |Y_xy + t_xy| |Y_z| / D``. After the affine fit, ``D`` is chosen (1, 2 or 5 times a
  power of 10, the same for every camera) so that this deviation stays below
  ``AFFINE_MAX_DEVIATION_PX`` (0.1 px) over the fitted points and ``D`` is at least
  ``AFFINE_MIN_DISTANCE`` (1000) times the points' RMS radius; then ``kappa = 1 / D`` is
  fixed and the bundle adjustment polishes the other parameters, so the reported errors are
  exactly those of the written pinhole cameras. ``D`` is written to the TOML metadata
  (``affine_distance``). ``D`` is kept no larger than needed because float32 DLT
  triangulation with very distant cameras loses about ``D * 6e-8`` world units of precision
  (0.03 units for ``D = 5e5``, against 3.5 units for ``D = 1e7``).

World frame and units
---------------------

Arbitrary, fixed by convention (the similarity gauge): the world axes are those of the first
camera (``R_0 = I``: x right and y down in its image, z along its viewing direction), the
origin is the centroid of the fitted 3D points, and the scale makes the RMS distance of the
fitted points from the origin equal to ``WORLD_RMS`` (100). Distances are therefore in
"keypoint spread" units, not millimetres: multiply by a known length (a body length, a
treadmill width) divided by its value in these units to get a metric calibration.

Held-out error
--------------

A seeded fraction of the usable labeled frames (those with a body part in two or more views)
is held out. After fitting on the others, every held-out body part labeled in two or more
views is triangulated (DLT, :meth:`CameraGroup.triangulate`) with the estimated cameras,
reprojected into every view that labels it, and compared with its labels. With two views a
point has four measured numbers and three unknowns, so the held-out error measures the
consistency of the views with the epipolar geometry (one number per point); the fit error
on the frames used for fitting is smaller than the labeling noise for the same reason. RMSE
everywhere is the root mean square of the Euclidean pixel distance over observations
(view, keypoint, frame).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float

from dgp_pyro.errors import DGPError
from dgp_pyro.geometry.affine_factorisation import affine_init
from dgp_pyro.geometry.bundle_adjustment import bundle_adjust
from dgp_pyro.geometry.camera_group import CameraGroup
from dgp_pyro.geometry.camera_rig import (
    WORLD_RMS,
    Observations,
    Rig,
    affine_distance,
    cheirality,
    necker,
    needs_mirror,
    normalise,
    residuals_px,
    to_camera_group,
)

__all__ = ["MODELS", "CameraEstimate", "estimate_cameras"]


#: Camera models :func:`estimate_cameras` accepts.
MODELS = ("auto", "affine", "perspective")
#: Fewest (frame, body part) correspondences that link a view to another one.
MIN_CORRESPONDENCES = 6
#: ``"auto"`` takes the perspective model only if it lowers the held-out RMSE by this share...
AUTO_MIN_RELATIVE_GAIN = 0.05
#: ... and by at least this many pixels.
AUTO_MIN_GAIN_PX = 0.05
#: A label whose reprojection error exceeds this many times the robust scale is listed as a
#: likely mislabel in the notes.
OUTLIER_FACTOR = 4.0


# --------------------------------------------------------------------------------------------
# Result


@dataclass
class CameraEstimate:
    """Cameras estimated from labels, with their fit. See :func:`estimate_cameras`.

    Attributes:
        cameras: the estimated cameras, named after the views, in view order; ``metadata``
            records the model, the world units and the errors.
        points_3d: ``(N, J, 3)`` 3D keypoints of every labeled frame, triangulated (DLT, as
            :meth:`CameraGroup.triangulate`) with the estimated cameras; NaN where a body part
            is labeled in fewer than 2 views.
        reprojection_rmse_px: RMSE on the frames used for fitting, measured like the held-out
            one (triangulate the labels with the estimated cameras, reproject, compare), so
            the two are comparable.
        heldout_reprojection_rmse_px: RMSE on the held-out frames (triangulate, reproject,
            compare), or None without held-out frames.
        model: ``"affine"`` or ``"perspective"``, the model of :attr:`cameras`.
        notes: warnings for the user (unusable body parts, the two-view angle convention,
            mirror cameras, likely mislabels, the ``auto`` decision).
        fit_frames: indices of the frames used for fitting.
        heldout_frames: indices of the held-out frames.
        per_view_rmse_px: fit RMSE of each view (same protocol).
        candidates: per model tried, ``{"reprojection_rmse_px", "heldout_reprojection_rmse_px"}``
            (both models with ``model="auto"``).
    """

    cameras: CameraGroup
    points_3d: Float[np.ndarray, "n j 3"]
    reprojection_rmse_px: float
    heldout_reprojection_rmse_px: float | None
    model: str
    notes: list[str] = field(default_factory=list)
    fit_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    heldout_frames: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    per_view_rmse_px: dict[str, float] = field(default_factory=dict)
    candidates: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able summary (what ``dgp-pyro calibrate --json`` prints)."""
        return {
            "model": self.model,
            "reprojection_rmse_px": self.reprojection_rmse_px,
            "heldout_reprojection_rmse_px": self.heldout_reprojection_rmse_px,
            "per_view_rmse_px": dict(self.per_view_rmse_px),
            "n_fit_frames": int(len(self.fit_frames)),
            "n_heldout_frames": int(len(self.heldout_frames)),
            "candidates": {k: dict(v) for k, v in self.candidates.items()},
            "cameras": [c.to_dict() for c in self.cameras.cameras],
            "notes": list(self.notes),
        }


# --------------------------------------------------------------------------------------------
# Public API


def estimate_cameras(
    labels: Float[np.ndarray, "n v j 2"],
    view_names: list[str],
    image_size: tuple[int, int] | list,
    model: str = "auto",
    holdout_fraction: float = 0.2,
    seed: int = 0,
    source: Path | None = None,
    bodyparts: list[str] | None = None,
    frame_keys: list[str] | None = None,
    robust_scale_px: float = 3.0,
    heldout_frames: Sequence[int] | None = None,
) -> CameraEstimate:
    """Estimate the cameras of a multi-view rig from its labeled keypoints.

    Args:
        labels: ``(N, V, J, 2)`` pixel labels, NaN = not labeled.
        view_names: the V view names; they become the camera names.
        image_size: ``(width, height)`` of every view, or one ``(width, height)`` per view.
            The principal point is the image centre ``((w - 1) / 2, (h - 1) / 2)``.
        model: ``"affine"``, ``"perspective"`` or ``"auto"`` (both are fitted; perspective is
            kept only if it lowers the held-out RMSE by at least 5 % and 0.05 px, or the fit
            RMSE when nothing is held out).
        holdout_fraction: share of the usable labeled frames held out, in ``[0, 1)``.
        seed: seed of the held-out draw.
        source: the label file or project, for error messages and the TOML metadata.
        bodyparts: the J body part names, for the notes (default ``keypoint <j>``).
        frame_keys: the N frame names (image keys), for the notes (default ``frame <n>``).
        robust_scale_px: scale of the ``soft_l1`` loss: residuals beyond it count linearly.
        heldout_frames: the frames to hold out (indices into ``labels``), instead of a random
            ``holdout_fraction`` of them: a run's held-out frames, so that the cameras never see
            the frames its accuracy is measured on.

    Raises:
        DGPError: fewer than 2 views; no keypoint labeled in two views of one frame; a view
            that shares fewer than ``MIN_CORRESPONDENCES`` points with the others; degenerate
            geometry (points nearly collinear or coplanar, views that see the same
            projection); bad arguments.
    """
    labels = np.asarray(labels, dtype=np.float64)
    if labels.ndim != 4 or labels.shape[-1] != 2:
        raise DGPError(f"labels must have shape (frames, views, keypoints, 2), got {labels.shape}", source)
    n_frames, n_views, n_joints, _ = labels.shape
    view_names = [str(v) for v in view_names]
    if len(view_names) != n_views:
        raise DGPError(f"{len(view_names)} view names for {n_views} views in the labels", source)
    if n_views < 2:
        raise DGPError(
            f"camera estimation needs at least 2 views, got {n_views}"
            + (f" ({view_names[0]!r})" if view_names else ""),
            source,
            hint="pass the views of a multi-view project, e.g. --views top bot",
        )
    if model not in MODELS:
        raise DGPError(f"unknown camera model {model!r}", hint=f"use one of {', '.join(MODELS)}")
    if not (0.0 <= float(holdout_fraction) < 1.0):
        raise DGPError(f"--holdout {holdout_fraction}: the held-out fraction must be in [0, 1)")
    if not robust_scale_px > 0:
        raise DGPError(f"robust_scale_px must be positive, got {robust_scale_px}")
    sizes = _parse_sizes(image_size, n_views)
    centres = np.array([[(w - 1) / 2.0, (h - 1) / 2.0] for w, h in sizes])
    names = list(bodyparts) if bodyparts is not None else [f"keypoint {j}" for j in range(n_joints)]
    if len(names) != n_joints:
        raise DGPError(f"{len(names)} body part names for {n_joints} keypoints in the labels", source)
    keys = range(n_frames) if frame_keys is None else frame_keys
    frames = [f"frame {k}" for k in keys]
    if len(frames) != n_frames:
        raise DGPError(f"{len(frames)} frame keys for {n_frames} frames in the labels", source)

    seen = np.isfinite(labels).all(-1)  # (N, V, J)
    labels = np.where(seen[..., None], labels, np.nan)
    multi = seen.sum(1) >= 2  # (N, J)
    if not multi.any():
        raise DGPError(
            "no keypoint is labeled in two or more views of the same frame; camera estimation "
            "needs shared keypoints",
            source,
            hint="label the same body parts in every view of some frames",
        )
    notes: list[str] = []
    unusable = [names[j] for j in range(n_joints) if not multi[:, j].any()]
    if unusable:
        notes.append(
            f"body part(s) {', '.join(unusable)} are never labeled in two views of one frame and "
            "were not used for camera estimation (they cannot be triangulated either)"
        )
    _check_correspondences(seen & multi[:, None, :], view_names, source, "")

    # Held-out split over the usable frames.
    usable = np.flatnonzero(multi.any(1))
    if heldout_frames is not None:
        hold = np.intersect1d(usable, np.asarray(list(heldout_frames), dtype=np.int64))
        if len(hold) == len(usable):
            raise DGPError("every frame with shared keypoints is held out: none is left to fit", source)
    else:
        rng = np.random.default_rng(seed)
        n_hold = int(math.floor(float(holdout_fraction) * len(usable) + 0.5))
        n_hold = min(n_hold, len(usable) - 1)
        drawn = rng.choice(usable, size=n_hold, replace=False) if n_hold > 0 else np.zeros(0, np.int64)
        hold = np.sort(drawn)
    fit_mask = np.zeros(n_frames, dtype=bool)
    fit_mask[usable] = True
    fit_mask[hold] = False
    fit = np.flatnonzero(fit_mask)
    fit_seen = seen & multi[:, None, :] & fit_mask[:, None, None]
    _check_correspondences(
        fit_seen, view_names, source,
        f" among the {len(fit)} frames used for fitting ({len(hold)} held out)",
    )

    # Observations of the fit points.
    pts_nj = np.argwhere(multi & fit_mask[:, None])  # (P, 2): frame, joint
    obs_pt, obs_cam = [], []
    for v in range(n_views):
        hit = seen[pts_nj[:, 0], v, pts_nj[:, 1]]
        obs_pt.append(np.flatnonzero(hit))
        obs_cam.append(np.full(int(hit.sum()), v))
    obs = Observations(
        pt=np.concatenate(obs_pt),
        cam=np.concatenate(obs_cam),
        uv=None,  # filled below
        n_points=len(pts_nj),
        n_views=n_views,
        centres=centres,
    )
    obs.uv = labels[pts_nj[obs.pt, 0], obs.cam, pts_nj[obs.pt, 1]]

    rig0 = affine_init(obs, source)

    wanted = ["affine", "perspective"] if model == "auto" else [model]
    fits: dict[str, Rig] = {}
    affine = normalise(bundle_adjust(obs, rig0, perspective=False, robust=robust_scale_px))
    # The affine cameras as distant pinhole cameras (kappa = 1 / D fixed), polished so that the
    # reported errors are those of the written cameras exactly.
    affine.kappa[:] = 1.0 / affine_distance(affine)
    affine = bundle_adjust(obs, affine, perspective=False, robust=robust_scale_px, max_nfev=30)
    perspective = bundle_adjust(obs, affine, perspective=True, robust=robust_scale_px)
    if "affine" in wanted:
        if needs_mirror(perspective.kappa):
            # Affine views cannot tell the scene from its mirror image (the Necker reversal);
            # the perspective fit, however weak its evidence, can: follow it.
            affine = bundle_adjust(obs, necker(affine), perspective=False, robust=robust_scale_px,
                                    max_nfev=30)
        fits["affine"] = affine
    if "perspective" in wanted:
        fits["perspective"] = cheirality(perspective)

    results: dict[str, tuple[Rig, CameraGroup, float, float | None]] = {}
    for name, rig in fits.items():
        rig = normalise(rig)
        group = to_camera_group(rig, view_names, sizes, name)
        fit_rmse = _rmse_of(*_triangulated_errors(group, labels[fit]))
        held = _rmse_of(*_triangulated_errors(group, labels[hold])) if len(hold) else None
        results[name] = (rig, group, fit_rmse, held)

    candidates = {
        k: {"reprojection_rmse_px": r[2], "heldout_reprojection_rmse_px": r[3]} for k, r in results.items()
    }
    if model == "auto":
        chosen = _choose(results["affine"][2:], results["perspective"][2:])
        a, p = results["affine"], results["perspective"]
        which = "held-out" if a[3] is not None else "fit"
        ea, ep = (a[3], p[3]) if a[3] is not None else (a[2], p[2])
        notes.append(
            f"auto: {which} reprojection RMSE {ep:.3g} px (perspective) vs {ea:.3g} px (affine); "
            f"chose {chosen}"
        )
    else:
        chosen = model
    rig, group, fit_rmse, held = results[chosen]
    if n_views == 2:
        d0, d1 = (c.rotation_matrix()[2] for c in group.cameras)
        angle = math.degrees(math.acos(min(1.0, abs(float(d0 @ d1)))))
        if chosen == "affine":
            notes.append(
                "two affine views do not determine the angle between their viewing directions (depth "
                "scales with 1/sin of it and the images do not change): it was set to 90 degrees "
                f"(now {angle:.1f}), so depths hold only up to that convention"
            )
        else:
            notes.append(
                "with two views the angle between the viewing directions is set by perspective "
                f"effects only (weakly): it started at 90 degrees and ended at {angle:.1f} degrees; "
                "focal lengths and distances are weakly determined too (not at all for a camera and "
                "its mirror image), only the projections are reliable"
            )

    # Mirror cameras, likely mislabels (from the robust fit's residuals).
    for cam, k in zip(group.cameras, rig.kappa, strict=True):
        if k < 0:
            notes.append(
                f"camera {cam.name!r} sees the points from behind its image plane, as a mirror view "
                "does (a reflected camera); projection and triangulation are exact, but "
                "Camera.check_in_front is False for it"
            )
    err = np.sqrt((residuals_px(obs, rig) ** 2).sum(-1))
    threshold = OUTLIER_FACTOR * robust_scale_px
    bad = np.flatnonzero(err > threshold)
    if len(bad):
        order = bad[np.argsort(-err[bad])][:3]
        worst = ", ".join(
            f"{names[pts_nj[obs.pt[i], 1]]} in {view_names[obs.cam[i]]} of {frames[pts_nj[obs.pt[i], 0]]} "
            f"({err[i]:.1f} px)"
            for i in order
        )
        notes.append(
            f"{len(bad)} of {len(err)} labels used for fitting are more than {threshold:g} px from "
            f"the bundle-adjusted fit (likely mislabels or swapped body parts; largest: {worst})"
        )

    # 3D points and per-view errors: DLT triangulation with the estimated cameras.
    points = np.full((n_frames, n_joints, 3), np.nan)
    rows = np.flatnonzero(multi.any(1))
    tri = group.triangulate(np.moveaxis(labels[rows], 1, 0))  # (n, J, 3)
    points[rows] = np.where(multi[rows][..., None], tri, np.nan)
    err_fit, seen_fit = _triangulated_errors(group, labels[fit])
    per_view = {view_names[v]: _rmse_of(err_fit[v], seen_fit[v]) for v in range(n_views) if seen_fit[v].any()}

    group.metadata.update(
        _metadata(chosen, fit_rmse, held, source, len(fit), len(hold))
    )
    return CameraEstimate(
        cameras=group,
        points_3d=points,
        reprojection_rmse_px=fit_rmse,
        heldout_reprojection_rmse_px=held,
        model=chosen,
        notes=notes,
        fit_frames=fit,
        heldout_frames=hold,
        per_view_rmse_px=per_view,
        candidates=candidates,
    )


# --------------------------------------------------------------------------------------------
# Input checks


def _parse_sizes(image_size: Any, n_views: int) -> list[tuple[int, int]]:
    arr = np.asarray(image_size, dtype=np.float64)
    if arr.shape == (2,):
        arr = np.broadcast_to(arr, (n_views, 2))
    if arr.shape != (n_views, 2) or not np.isfinite(arr).all() or (arr <= 0).any():
        raise DGPError(
            f"image_size must be (width, height) or one (width, height) per view, got {image_size!r}"
        )
    return [(int(w), int(h)) for w, h in arr]


def _check_correspondences(seen: np.ndarray, views: list[str], source: Path | None, where: str) -> None:
    """Every view must be linked to the others by >= MIN_CORRESPONDENCES shared points."""
    n_views = seen.shape[1]
    counts = np.zeros((n_views, n_views), dtype=np.int64)
    for a in range(n_views):
        for b in range(a + 1, n_views):
            counts[a, b] = counts[b, a] = int((seen[:, a] & seen[:, b]).sum())
    linked = counts >= MIN_CORRESPONDENCES
    reached = {0}
    frontier = [0]
    while frontier:
        a = frontier.pop()
        for b in np.flatnonzero(linked[a]):
            if int(b) not in reached:
                reached.add(int(b))
                frontier.append(int(b))
    if len(reached) == n_views:
        return
    pairs = ", ".join(
        f"{views[a]}-{views[b]}: {counts[a, b]}" for a in range(n_views) for b in range(a + 1, n_views)
    )
    lonely = [views[v] for v in range(n_views) if v not in reached]
    raise DGPError(
        f"too few correspondences{where}: view(s) {', '.join(lonely)} share fewer than "
        f"{MIN_CORRESPONDENCES} labeled (frame, body part) points with the other views ({pairs})",
        source,
        hint="label the same body parts in several views of more frames"
        + (", or hold out fewer frames (--holdout)" if where else ""),
    )


# --------------------------------------------------------------------------------------------
# The TOML metadata


def _metadata(
    model: str, fit: float, held: float | None, source: Path | None, n_fit: int, n_hold: int
) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "estimated_by": "dgp-pyro calibrate (bundle adjustment on labeled keypoints)",
        "model": model,
        "world_units": f"arbitrary: first camera's axes, origin at the centroid of the labeled keypoints, "
        f"RMS distance {WORLD_RMS:g} from it",
        "reprojection_rmse_px": float(fit),
        "n_fit_frames": int(n_fit),
        "n_heldout_frames": int(n_hold),
    }
    if held is not None:
        meta["heldout_reprojection_rmse_px"] = float(held)
    if source is not None:
        meta["labels"] = str(source)
    return meta


# --------------------------------------------------------------------------------------------
# Evaluation


def _triangulated_errors(group: CameraGroup, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Triangulate labels ``(n, V, J, 2)`` seen in >= 2 views (DLT), reproject into every view.

    Returns the pixel errors ``(V, P)`` of the ``P`` points labeled in two or more views and
    the mask ``(V, P)`` of the views that label them. A point DLT cannot triangulate counts
    as an infinite error.
    """
    seen = np.isfinite(labels).all(-1)  # (n, V, J)
    multi = seen.sum(1) >= 2  # (n, J)
    pts2d = np.moveaxis(labels, 1, 0)[:, multi]  # (V, P, 2)
    mask = np.moveaxis(seen, 1, 0)[:, multi]  # (V, P)
    if not multi.any():
        return np.zeros(mask.shape), mask
    err = group.reprojection_error(group.triangulate(pts2d), pts2d)  # (V, P)
    return np.where(np.isfinite(err) | ~mask, err, np.inf), mask


def _rmse_of(errors: np.ndarray, mask: np.ndarray) -> float | None:
    """Root mean square of the masked pixel errors (None without any)."""
    values = errors[mask]
    return float(np.sqrt(np.mean(values**2))) if values.size else None


def _choose(affine: tuple[float, float | None], perspective: tuple[float, float | None]) -> str:
    """``auto``: perspective only if it lowers the (held-out, else fit) RMSE meaningfully."""
    ea, ep = (affine[1], perspective[1]) if affine[1] is not None else (affine[0], perspective[0])
    if ep is None or ea is None:
        return "affine"
    if ep < ea * (1 - AUTO_MIN_RELATIVE_GAIN) and ep < ea - AUTO_MIN_GAIN_PX:
        return "perspective"
    return "affine"
