"""Where restarts go on Sia's cluster: each change of a job's allocation by its kind.

    python bench/restart_causes.py [--workloads 1 2 ...] [--policy cost-aware] [--oracle]
                                   [--profiles DIR]

The cluster and workloads of ``bench/hetero.py`` (Philly workloads of
``../shared/data/sia``, 160 jobs each, Sia's per-app restart times). From each job's
recorded stretches (start, end, instance type, GPUs), every change between two
stretches is a start after a pause (a gap), a change of GPU type, a grow or a shrink on
the same type; its cost is the GPU-seconds of the restart that follows: GPUs after x the
app's restart time. A move to other nodes at the same type and count is one stretch and
is not seen here. Prints, per kind, changes per job and GPU-hours per job, beside the
runs' GPU-hours per job, and of the changes those made less than the policies'
``min_run_s`` (600 s) after the job's previous start or change; then, per app, type
changes per job and how many of them went back to a type the job had left the change
before.
"""

from __future__ import annotations

import argparse
from collections import Counter

from hetero import POLICIES, philly_workload, sia_cluster, simulate

from costsched.cost.prices import SECONDS_PER_HOUR
from costsched.policy.hysteresis import DEFAULT_MIN_RUN_S
from costsched.sim.gpu_types import SIA_RESTART_S

KINDS = ("first start", "start after a pause", "type change", "grow", "shrink")
CHANGES = KINDS[2:]
"""The kinds that change a running job's allocation."""


def causes(jobs, soon_s: float = DEFAULT_MIN_RUN_S) -> tuple[Counter, Counter, Counter]:
    """(changes, restart GPU-seconds) by kind, and (app, "type change" or "back") counts,
    over ``jobs``' stretches; the first two also by (kind, "soon"): the changes made less
    than ``soon_s`` after the job's previous start or change."""
    count, gpu_s, by_app = Counter(), Counter(), Counter()
    for job in jobs:
        restart_s = SIA_RESTART_S.get(job.application, 0.0)
        previous, left, since = None, None, 0.0
        for start, end, instance, gpus in job.intervals:
            if previous is None:
                kind = "first start"
            elif start > previous[1] + 1e-6:
                kind = "start after a pause"
            elif instance != previous[2]:
                kind = "type change"
                by_app[job.application, kind] += 1
                by_app[job.application, "back"] += instance == left
                left = previous[2]
            elif gpus > previous[3]:
                kind = "grow"
            elif gpus < previous[3]:
                kind = "shrink"
            else:  # the same type and count, contiguous: not a change (stretches merge so)
                kind = None
            if kind is not None:
                count[kind] += 1
                gpu_s[kind] += gpus * restart_s
                if kind in CHANGES and start - since < soon_s:
                    count[kind, "soon"] += 1
                    gpu_s[kind, "soon"] += gpus * restart_s
                since = start
            previous = (start, end, instance, gpus)
    return count, gpu_s, by_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", nargs="+", type=int, default=list(range(1, 9)))
    parser.add_argument("--policy", choices=POLICIES, default="cost-aware")
    parser.add_argument("--oracle", action="store_true")
    parser.add_argument("--profiles", default=None, metavar="DIR",
                        help="Sia data folder (default $COSTSCHED_SIA_DIR or ../shared/data/sia)")
    args = parser.parse_args(argv)
    count, gpu_s, by_app, jobs_of = Counter(), Counter(), Counter(), Counter()
    n, gpu_h = 0, 0.0
    data, pools, profiles = sia_cluster(args.profiles)
    for number in args.workloads:
        jobs = philly_workload(data, number)
        _, result = simulate(args.policy, jobs, pools, profiles, oracle=args.oracle)
        c, g, a = causes(result.jobs)
        count.update(c)
        gpu_s.update(g)
        by_app.update(a)
        jobs_of.update(j.application for j in result.jobs)
        n += len(result.jobs)
        gpu_h += sum(j.gpu_hours for j in result.jobs)
        print(f"workload {number}: {len(result.jobs)} jobs, "
              f"{sum(j.gpu_hours for j in result.jobs) / len(result.jobs):.3f} GPU-h/job",
              flush=True)
    print(f"\n{args.policy}, workloads {' '.join(map(str, args.workloads))}: "
          f"{gpu_h / n:.3f} GPU-h/job in all")
    soon = f"< {DEFAULT_MIN_RUN_S:.0f} s after the last"
    print(f"{'kind':22} {'per job':>8} {'GPU-h/job':>10}   {soon}: per job, GPU-h/job")
    for kind in KINDS:
        line = f"{kind:22} {count[kind] / n:8.2f} {gpu_s[kind] / SECONDS_PER_HOUR / n:10.3f}"
        if kind in CHANGES:
            line += (f"   {count[kind, 'soon'] / n:8.2f} "
                     f"{gpu_s[kind, 'soon'] / SECONDS_PER_HOUR / n:10.3f}")
        print(line)
    print(f"{'all':22} {sum(count[k] for k in KINDS) / n:8.2f} "
          f"{sum(gpu_s[k] for k in KINDS) / SECONDS_PER_HOUR / n:10.3f}")

    print(f"\n{'app':12} {'jobs':>5} {'type changes/job':>17} {'back to a type left':>20}")
    for app in sorted(jobs_of):
        changes = by_app[app, "type change"]
        print(f"{app:12} {jobs_of[app]:5d} {changes / jobs_of[app]:17.2f} "
              f"{by_app[app, 'back']:20d}")


if __name__ == "__main__":
    main()
