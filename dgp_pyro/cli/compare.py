"""``dgp-pyro compare``: runs (and DeepLabCut prediction files) side by side on held-out labels.

What each row holds is :mod:`dgp_pyro.eval.compare`'s module doc
(:func:`~dgp_pyro.eval.compare.compare_inputs`); this module parses the options and prints the
rows as a table (``--json``: a list of objects, non-finite numbers as null).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from dgp_pyro.cli.options import parse_level
from dgp_pyro.eval.compare import DEFAULT_COMPARE_LEVELS, compare_inputs


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare",
        help="compare runs (and DeepLabCut prediction files) on held-out labels: accuracy, "
        "coverage, ELBO and ArviZ LOO",
        description="Score each run's posterior on its held-out labeled images (RMSE, median error, "
        "PCK@5px, interval coverage), its final ELBO, and compare the runs by PSIS-LOO (az.compare). "
        "DeepLabCut prediction files are scored on the same held-out labels.",
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="RUN_OR_FILE", help="run folders and/or DeepLabCut prediction files"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per input")
    parser.add_argument(
        "--levels",
        nargs="+",
        type=parse_level,
        default=list(DEFAULT_COMPARE_LEVELS),
        metavar="LEVEL",
        help="credible levels for the coverage columns, strictly between 0 and 1 (default 0.5 0.9 0.95)",
    )
    parser.add_argument(
        "--labels",
        default=None,
        metavar="FILE",
        help="score DeepLabCut prediction files against this label file (default: the first run's "
        "held-out labels)",
    )
    parser.add_argument(
        "--draws", type=int, default=200, help="posterior draws per chain for LOO (default 200)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the posterior draws (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    return parser


_TABLE_COLUMNS = ("name", "model", "rmse_px", "median_px", "pck_5px")
_TAIL_COLUMNS = ("elbo_per_frame", "elpd_loo", "elpd_se", "loo_weight", "pareto_k_max", "elpd_heldout")


def _warn(message: str) -> None:
    print(f"dgp-pyro compare: warning: {message}", file=sys.stderr)


def format_rows(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned table, then each row's calibration verdict and notes."""
    coverage = [k for k in rows[0] if k.startswith("coverage_")] if rows else []
    header = [*_TABLE_COLUMNS, *coverage, *_TAIL_COLUMNS]

    def cell(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
        return str(value)

    def shown(row: dict[str, Any], key: str) -> str:
        if key == "pareto_k_max" and row.get(key) is None and row.get("n_high_k"):
            return "inf"
        return cell(row.get(key))

    text = [header] + [[shown(row, k) for k in header] for row in rows]
    widths = [max(len(r[i]) for r in text) for i in range(len(header))]
    lines = []
    for n, row in enumerate(text):
        pairs = enumerate(zip(row, widths, strict=True))
        lines.append("  ".join(c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in pairs))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        for key in ("calibration", "note"):
            if row.get(key):
                lines.append(f"{row['name']}: {row[key]}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    rows = compare_inputs(
        args.inputs,
        levels=args.levels,
        labels=args.labels,
        num_draws=args.draws,
        seed=args.seed,
        device=args.device,
        warn=_warn,
    )
    if args.json:
        print(json.dumps(rows))
        return 0
    print(format_rows(rows))
    return 0
