"""The ``costsched`` command line: one subcommand per module, registered below."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from costsched.errors import CostschedError

# Each entry: a module exposing ``add_parser(subparsers)``; the parser it adds
# sets ``func(args) -> int`` as its default.
COMMANDS: tuple[str, ...] = (
    "costsched.cli.train",
    "costsched.cli.quickstart",
    "costsched.cli.report",
    "costsched.cli.sweep",
    "costsched.cli.simulate",
    "costsched.cli.scheduler",
    "costsched.cli.jobs",
    "costsched.cli.profile",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="costsched",
        description="Cost-aware elastic scheduling and training of PyTorch jobs on Ray.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMANDS:
        importlib.import_module(module_name).add_parser(sub)
    return parser


def run_script(prog: str, description: str | None, add_arguments,
               argv: Sequence[str] | None = None) -> int:
    """Entry point of a ``jobs/*.py`` script: parse with ``add_arguments``, run, and
    report a user error in one line (for ``ray job submit`` logs)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CostschedError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return exc.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except CostschedError as exc:
        print(f"costsched {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"costsched {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
