"""A project's ``config.yaml`` (DeepLabCut, optional for Lightning Pose): body parts, skeleton, views.

:func:`read_config` parses the file (YAML errors name their line; multi-animal projects are
refused); the ``config_*`` functions check and return one setting each, and
:func:`project_skeleton` maps the skeleton's edges onto the loaded body parts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from dgp_pyro.data.view_layout import LAYOUTS
from dgp_pyro.errors import DGPError

__all__ = [
    "check_views",
    "config_bodyparts",
    "config_multiview",
    "config_skeleton",
    "project_skeleton",
    "read_config",
]


def read_config(path: Path) -> dict[str, Any]:
    """Parse ``config.yaml``; a YAML error is reported with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DGPError(f"cannot read config.yaml ({exc})", path) from exc
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise DGPError(f"config.yaml is not valid YAML{where}: {problem}", path) from exc
    if config is None:
        raise DGPError("config.yaml is empty", path)
    if not isinstance(config, dict):
        raise DGPError(f"config.yaml must be a mapping of settings, found a {type(config).__name__}", path)
    if config.get("multianimalproject") is True:
        raise DGPError("multi-animal projects are not supported yet (multianimalproject: true)", path)
    return config


def config_bodyparts(config: dict[str, Any], path: Path, required: bool) -> list[str] | None:
    parts = config.get("bodyparts")
    if parts is None:
        if required:
            raise DGPError("config.yaml has no 'bodyparts' list", path, hint="list the body parts")
        return None
    if parts == "MULTI!":  # what multi-animal DeepLabCut writes here
        raise DGPError("multi-animal projects are not supported yet (bodyparts: MULTI!)", path)
    if not isinstance(parts, list) or not parts or not all(isinstance(p, str | int) for p in parts):
        raise DGPError("'bodyparts' in config.yaml must be a non-empty list of names", path)
    parts = [str(p) for p in parts]
    repeated = sorted({p for p in parts if parts.count(p) > 1})
    if repeated:
        raise DGPError(f"'bodyparts' in config.yaml repeats {', '.join(repeated)}", path)
    return parts


def config_skeleton(config: dict[str, Any], path: Path | None) -> list[tuple[str, str]]:
    edges = config.get("skeleton")
    if edges is None:
        return []
    if not isinstance(edges, list):
        raise DGPError("'skeleton' in config.yaml must be a list of [part, part] pairs", path)
    out = []
    for edge in edges:
        if not (isinstance(edge, list | tuple) and len(edge) == 2 and all(isinstance(p, str) for p in edge)):
            raise DGPError(f"skeleton entry {edge!r} in config.yaml is not a pair of body part names", path)
        out.append((edge[0], edge[1]))
    return out


def config_multiview(config: dict[str, Any], path: Path | None) -> tuple[list[str] | None, str | None]:
    section = config.get("multiview")
    if section is None:
        return None, None
    if not isinstance(section, dict):
        raise DGPError("'multiview' in config.yaml must be a mapping with 'views' (and 'layout')", path)
    views = section.get("views")
    layout = section.get("layout")
    if views is not None and (not isinstance(views, list) or not all(isinstance(v, str) for v in views)):
        raise DGPError("'multiview.views' in config.yaml must be a list of view names", path)
    if layout is not None and layout not in LAYOUTS:
        raise DGPError(
            f"'multiview.layout' in config.yaml must be one of {', '.join(LAYOUTS)}, found {layout!r}", path
        )
    return views, layout


def check_views(views: list[str], where: Path | None) -> list[str]:
    views = [str(v) for v in views]
    if not views:
        raise DGPError("the list of views is empty", where)
    bad = [v for v in views if not v or "/" in v or "\\" in v]
    if bad:
        raise DGPError(f"invalid view name(s) {bad}", where)
    repeated = sorted({v for v in views if views.count(v) > 1})
    if repeated:
        raise DGPError(f"view(s) {', '.join(repeated)} given twice", where)
    return views


def project_skeleton(
    edges: list[tuple[str, str]], bodyparts: list[str], base: dict[str, str], path: Path | None
) -> list[tuple[str, str]]:
    """Config edges over body parts; column names (``nose_top``) map to their base name."""
    out: list[tuple[str, str]] = []
    for a, b in edges:
        if a == b:
            raise DGPError(
                f"skeleton edge [{a}, {b}] in config.yaml joins a body part to itself",
                path,
                hint="a bone joins two different body parts: remove this edge",
            )
        ends = []
        for name in (a, b):
            if name in bodyparts:
                ends.append(name)
            elif name in base:
                ends.append(base[name])
            else:
                raise DGPError(
                    f"skeleton edge [{a}, {b}] in config.yaml names {name!r}, which is not a body part",
                    path,
                    hint=f"body parts: {', '.join(bodyparts)}",
                )
        ea, eb = ends
        # In the suffix layout an edge written per view appears once per view; an edge
        # between a keypoint and itself seen in another view is no skeleton edge.
        if ea != eb and (ea, eb) not in out and (eb, ea) not in out:
            out.append((ea, eb))
    return out
