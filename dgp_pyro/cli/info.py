"""``dgp-pyro info``: print what a project holds, as a table or one JSON object."""

from __future__ import annotations

import argparse
import json

from dgp_pyro.cli.options import add_view_arguments, suggestion
from dgp_pyro.data.project import load_project
from dgp_pyro.data.video import video_info


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "info",
        help="show what was loaded from a project (labels, keypoints, skeleton, views, videos, cameras)",
        description="Load a DeepLabCut or Lightning Pose project and print what was found.",
    )
    parser.add_argument("project", help="project folder")
    add_view_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def run(args: argparse.Namespace) -> int:
    project = load_project(args.project, views=args.views, view_layout=args.view_layout)
    summary = project.summary()
    for video in summary["videos"]:
        info = video_info(video["path"])
        video["n_frames"] = info["n_frames"]
        video["fps"] = info["fps"]
    if args.json:
        print(json.dumps(summary))
        return 0
    print(f"project      {summary['root']} ({summary['format']})")
    print(f"labeled      {summary['n_labeled_frames']} frames")
    print(f"keypoints    {', '.join(summary['keypoints'])}")
    edges = ", ".join(f"{a}-{b}" for a, b in summary["skeleton"])
    edges = edges or "none (the 2D dgp and skeletal models learn one from the labels)"
    print(f"skeleton     {edges}")
    print(f"views        {', '.join(summary['views'])} ({summary['view_layout']})")
    if summary["suggested_views"]:
        print(f"             {suggestion(summary['suggested_views'])}")
    if summary["videos"]:
        for video in summary["videos"]:
            print(f"video        {video['path']}: {video['n_frames']} frames at {video['fps']:.2f} fps")
    else:
        print("video        none")
    cameras = summary.get("cameras") or []
    print(f"cameras      {', '.join(cameras) if cameras else 'no calibration'}")
    return 0
