"""One bench on several floating-point code paths of this machine, to see how far rounding
alone moves its figures.

    python bench/float_paths.py [--grep REGEX] [--parallel N] -- COMMAND [ARG ...]

for example ``python bench/float_paths.py -- python bench/hetero.py --policies cost-aware``.

A simulation is deterministic on one machine, but NumPy and OpenBLAS pick their kernels
by CPU, and kernels that round differently change a fitted model in its last bits. A
greedy policy can then break a near-tie the other way, and that one decision changes the
rest of the run. So a figure measured on one CPU can differ on another. This runs
COMMAND once on each path below (NumPy's runtime features limited by
``NPY_DISABLE_CPU_FEATURES``, OpenBLAS's kernels chosen by ``OPENBLAS_CORETYPE``),
``--parallel`` at a time, and prints the lines of each run's output that match
``--grep`` (by default, the summary rows of the simulation benches: ``bench/hetero.py``'s
and ``costsched simulate``'s rows start with a policy's name, ``bench/policy_tuning.py``
prints ``load ...`` lines and a JSON line, ``bench/autoscale.py`` a table from ``run``,
``bench/spot.py`` one from ``cluster`` and its ``ratio`` lines). A path this CPU cannot
take (kernels it lacks) may warn or fail; a failed run prints its exit status and last
lines, and the others still run. Exits 1 when any run failed.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

PATHS: dict[str, dict[str, str]] = {
    "default": {},
    "numpy AVX2": {"NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR"},
    "openblas Haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "numpy SSE4.2, openblas Sandybridge": {
        "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4 AVX512_ICL AVX512_SPR",
        "OPENBLAS_CORETYPE": "Sandybridge"},
}
"""Name -> environment added to the run. The default is this machine's own choice."""

DEFAULT_GREP = (r"^(cost-aware|fifo|las|tiresias|pollux|spot|on-demand|cluster |ratio |"
                r"run |fixed |\$|load |\{)")


def run(command: list[str], extra: dict[str, str]) -> tuple[int, str, float]:
    """(exit status, output, seconds) of ``command`` with ``extra`` in its environment."""
    started = time.monotonic()
    done = subprocess.run(command, env=os.environ | extra, capture_output=True, text=True,
                          check=False)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        usage="%(prog)s [--grep REGEX] [--parallel N] -- COMMAND [ARG ...]")
    parser.add_argument("--grep", default=DEFAULT_GREP,
                        help="print the output lines that match this (default: summary rows)")
    parser.add_argument("--parallel", type=int, default=2,
                        help="runs at a time (default 2)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the bench to run after --")
    if args.parallel < 1:
        parser.error("--parallel must be at least 1")
    try:
        pattern = re.compile(args.grep)
    except re.error as exc:
        parser.error(f"--grep is not a regular expression: {exc}")
    print(f"running {' '.join(command)} on {len(PATHS)} code paths, "
          f"{args.parallel} at a time", flush=True)
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = {name: pool.submit(run, command, extra) for name, extra in PATHS.items()}
        failed = 0
        for name, future in futures.items():
            status, output, seconds = future.result()
            settings = " ".join(f"{k}={v!r}" for k, v in PATHS[name].items()) or "(none)"
            print(f"\n== {name}: {settings} ({seconds:.0f} s)")
            if status != 0:
                failed += 1
                print(f"exited {status}; its last lines:")
                print("\n".join(output.splitlines()[-10:]))
                continue
            for line in output.splitlines():
                if pattern.search(line):
                    print(line)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
