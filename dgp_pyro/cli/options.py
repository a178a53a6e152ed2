"""Argument types shared by the CLI verbs."""

from __future__ import annotations

import argparse
import json


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``WxH`` (e.g. ``160x128``) into ``(width, height)``."""
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WxH, e.g. 160x128") from None
    if width <= 0 or height <= 0:
        raise argparse.ArgumentTypeError(f"size {text!r} must be positive")
    return width, height


def holdout_argument(text: str) -> float | str:
    """``--holdout FRACTION|FILE``: a number is a share of the labeled frames, anything else a split file."""
    try:
        return float(text)
    except ValueError:
        return text


def parse_model_option(text: str) -> tuple[str, object]:
    """Parse ``NAME=VALUE`` (a model option); the value is read as JSON when it is JSON, else kept as text."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"option {text!r} is not NAME=VALUE, e.g. temporal_strength=2")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value


def add_model_option_argument(parser: argparse.ArgumentParser, help: str = "a model option") -> None:
    """``--option NAME=VALUE`` (repeatable), collected as a list of ``(name, value)`` pairs."""
    parser.add_argument(
        "--option", action="append", type=parse_model_option, default=[], metavar="NAME=VALUE", help=help
    )


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


def suggestion(views: list[str]) -> str:
    """The hint for a single-view project whose keypoint names look like views of one image."""
    names = " ".join(views)
    return (
        f"the keypoint names look like views of one image ({names}): --views {names} "
        "reads them as views, for `calibrate` and the 3D models (dgp3d)"
    )
