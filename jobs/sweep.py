"""Entry point for ``ray job submit -- python jobs/sweep.py SWEEP.yaml``: run a cost sweep."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

# `ray job submit --working-dir .` runs this file from the repository root without
# installing the package: make the package importable from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costsched.cli.main import run_script  # noqa: E402
from costsched.cli.sweep import add_arguments  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("jobs/sweep.py", __doc__, add_arguments, argv)


if __name__ == "__main__":
    sys.exit(main())
