"""Entry point for ``ray job submit -- python jobs/sweep.py SWEEP.yaml``: run a cost sweep."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costsched.commands.sweep import add_arguments  # noqa: E402
from costsched.errors import CostschedError  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobs/sweep.py", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CostschedError as exc:
        print(f"jobs/sweep.py: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
