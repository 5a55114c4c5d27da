"""Entry point for ``ray job submit --working-dir . -- python jobs/scheduler.py``: start the
live scheduler (a detached actor that outlives this job) on the running cluster."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

# `ray job submit --working-dir .` runs this file from the repository root without
# installing the package: make the package importable from there.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costsched.cli.main import run_script  # noqa: E402
from costsched.cli.scheduler import add_arguments  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    return run_script("jobs/scheduler.py", __doc__, add_arguments,
                      ["start", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
