"""The ``dgp-pyro`` command line.

Each verb lives in its own module of this package with two functions, ``add_parser(subparsers)``
and ``run(args) -> int``; this module only dispatches. A :class:`~dgp_pyro.errors.DGPError`
(anything the user can fix) is printed as one line on stderr with exit code 2; any other
exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from dgp_pyro import __version__
from dgp_pyro.cli import calibrate, compare, demo, evaluate, info, predict, synth, train
from dgp_pyro.errors import DGPError

#: The verbs' modules, in the order ``--help`` lists them.
VERBS = (synth, info, calibrate, train, predict, evaluate, compare, demo)


class OneLineParser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (exit code 2), as every other error.

    argparse's own prints the usage first; the usage stays one ``--help`` away.
    """

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dgp-pyro",
        description="Semi-supervised animal pose tracking (Deep Graph Pose in Pyro), 2D and multi-view 3D.",
    )
    parser.add_argument("--version", action="version", version=f"dgp-pyro {__version__}")
    subparsers = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for module in VERBS:
        sub = module.add_parser(subparsers)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except DGPError as error:
        print(f"dgp-pyro {args.verb}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dgp-pyro {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
