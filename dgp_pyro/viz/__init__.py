"""Plots of the posterior (matplotlib figures, no pyplot state) and the labeled video."""

from dgp_pyro.viz.comparison import plot_comparison, plot_coverage
from dgp_pyro.viz.frames import plot_contact_sheet, plot_frame
from dgp_pyro.viz.labeled_video import draw_pose, ellipse_polygon, write_labeled_video
from dgp_pyro.viz.plot_parts import credible_ellipse, keypoint_colors, save_figure
from dgp_pyro.viz.skeleton_3d import plot_skeleton_3d
from dgp_pyro.viz.trajectories import plot_trajectories

__all__ = [
    "credible_ellipse",
    "draw_pose",
    "ellipse_polygon",
    "keypoint_colors",
    "plot_comparison",
    "plot_contact_sheet",
    "plot_coverage",
    "plot_frame",
    "plot_skeleton_3d",
    "plot_trajectories",
    "save_figure",
    "write_labeled_video",
]
