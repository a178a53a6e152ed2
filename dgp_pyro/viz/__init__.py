"""Plots of the posterior (matplotlib figures, no pyplot state) and the labeled video."""

from dgp_pyro.viz.labeled_video import draw_pose, ellipse_polygon, write_labeled_video
from dgp_pyro.viz.plots import (
    credible_ellipse,
    keypoint_colors,
    plot_comparison,
    plot_contact_sheet,
    plot_coverage,
    plot_frame,
    plot_skeleton_3d,
    plot_trajectories,
    save_figure,
)

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
