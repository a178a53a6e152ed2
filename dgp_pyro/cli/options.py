"""Argument types shared by the CLI verbs."""

from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``160x128``) into ``(width, height)``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WxH, e.g. 160x128") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r} must be positive")
    return width, height


def parse_level(text: str) -> float:
    """Parse a credible level strictly between 0 and 1."""
    try:
        level = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"level {text!r} is not a number") from None
    if not 0.0 < level < 1.0:
        raise argparse.ArgumentTypeError(f"level {text} must lie strictly between 0 and 1, e.g. 0.9")
    return level


def add_view_arguments(parser: argparse.ArgumentParser) -> None:
    """``--views`` and ``--view-layout``: how a multi-view project's views are named and stored."""
    parser.add_argument(
        "--views",
        nargs="+",
        default=None,
        help="view names of a multi-view project, e.g. --views top bot (default: detected)",
    )
    parser.add_argument(
        "--view-layout",
        choices=("single", "folders", "suffix"),
        default=None,
        help="how views are stored: one folder per view, or <keypoint>_<view> columns of one image "
        "(suffix: a mirror rig) (default: detected)",
    )
