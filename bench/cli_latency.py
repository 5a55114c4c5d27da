"""Wall time of the command line: help, status without a cluster, a dry run.

    .venv/bin/python bench/cli_latency.py [--runs 5] [--only help,status,dry-run]

Each command runs ``--runs`` times as a fresh process (the installed ``costsched``
script next to this Python); the median, the fastest and the slowest are printed.
``status`` runs without RAY_ADDRESS and must find no Ray cluster (exit 3); when a
local Ray is running it is skipped with a note. Targets: ``--help`` under 0.5 s,
``status`` with no cluster under 2 s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COSTSCHED = Path(sys.executable).with_name("costsched")
TIMEOUT_S = 120.0
COMMANDS: dict[str, tuple[list[str], int]] = {
    "help": (["--help"], 0),
    "status": (["status"], 3),
    "dry-run": (["train", str(REPO / "configs" / "quickstart.yaml"), "--dry-run"], 0),
}
"""Name -> (arguments, expected exit code)."""


class Skipped(Exception):
    """A command that could not be measured here; the message says why."""


def time_once(argv: list[str], expected_rc: int) -> float:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    started = time.perf_counter()
    proc = subprocess.run([str(COSTSCHED), *argv], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    took = time.perf_counter() - started
    if argv == ["status"] and "no Ray cluster" not in proc.stderr:
        raise Skipped("a Ray cluster is running on this machine; stop it to time "
                      "`status` with no cluster")
    if proc.returncode != expected_rc:
        sys.exit(f"costsched {' '.join(argv)}: exit {proc.returncode}, expected "
                 f"{expected_rc}:\n{proc.stdout}{proc.stderr}")
    return took


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--only", default=None,
                        help="comma-separated subset of: help, status, dry-run")
    args = parser.parse_args(argv)
    if not COSTSCHED.is_file():
        sys.exit(f"no costsched script at {COSTSCHED}; install the package first")
    names = args.only.split(",") if args.only else list(COMMANDS)
    print(f"{'command':<10} {'median s':>9} {'min s':>7} {'max s':>7}  ({args.runs} runs)")
    for name in names:
        cmd, rc = COMMANDS[name]
        try:
            times = [time_once(cmd, rc) for _ in range(args.runs)]
        except Skipped as why:
            print(f"{name:<10} skipped: {why}")
            continue
        print(f"{name:<10} {statistics.median(times):9.2f} {min(times):7.2f} "
              f"{max(times):7.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
