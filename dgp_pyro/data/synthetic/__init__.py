"""The synthetic multi-view animal: skeleton, motion, renderer and project writer.

- :mod:`.animal`: the 13-keypoint rodent skeleton (:data:`KEYPOINTS`, :data:`SKELETON`, fixed
  :data:`BONE_LENGTHS`) and :func:`simulate_motion` (walk, turn, rear, pause, scan in an arena).
- :mod:`.scene`: :func:`make_cameras`, :func:`make_scene` (arena, moving occluder, light).
- :mod:`.render`: the ray-cast renderer (:func:`render_views`, :func:`iter_view`) and
  :func:`keypoint_visibility`, built on :mod:`.camera_rays`, :mod:`.body` (the body as
  primitives), :mod:`.raycast` and :mod:`.static_scene`.
- :mod:`.project`: :func:`write_synthetic_project`, the animal written as an ordinary
  DeepLabCut-style multi-view project with an Anipose calibration and a ground-truth file.
"""

from dgp_pyro.data.synthetic.animal import (
    ARENA,
    BONE_LENGTHS,
    KEYPOINTS,
    SKELETON,
    SKELETON_INDEX,
    Arena,
    bone_lengths,
    simulate_motion,
)
from dgp_pyro.data.synthetic.project import write_synthetic_project
from dgp_pyro.data.synthetic.render import iter_view, keypoint_visibility, render_views
from dgp_pyro.data.synthetic.scene import Occluder, Scene, make_cameras, make_scene

__all__ = [
    "ARENA",
    "BONE_LENGTHS",
    "KEYPOINTS",
    "SKELETON",
    "SKELETON_INDEX",
    "Arena",
    "Occluder",
    "Scene",
    "bone_lengths",
    "iter_view",
    "keypoint_visibility",
    "make_cameras",
    "make_scene",
    "render_views",
    "simulate_motion",
    "write_synthetic_project",
]
