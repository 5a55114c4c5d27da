"""Most GPUs cost-aware gives each job, by app, with learned models and with the oracle.

    python bench/policy_growth.py [WORKLOAD_CSV]   (default: load-0.5 workload 3)

Prints, per app, the mean and largest of each job's most GPUs at any round: where the
learned models grow a job further, or less far, than the measured profiles would.
"""

from __future__ import annotations

import collections
import sys

import numpy as np

from costsched.cost.prices import load_catalog
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.sim.profiles import load_profiles, pollux_dir
from costsched.sim.simulator import SimConfig, Simulator
from costsched.sim.workload import load_workload


class MostGpus:
    """cost-aware, remembering the most GPUs it gave each job."""

    name = "cost-aware"

    def __init__(self) -> None:
        self.policy = CostAwarePolicy()
        self.most: collections.Counter = collections.Counter()

    def decide(self, snapshot):
        decision = self.policy.decide(snapshot)
        for job, placement in decision.placements.items():
            self.most[job] = max(self.most[job], sum(placement.values()))
        return decision


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    data = pollux_dir()
    path = argv[0] if argv else data / "workloads" / "load-0.5" / "workload-3.csv"
    jobs, profiles = load_workload(path), load_profiles(data)
    instance = load_catalog().instance("g4dn.12xlarge")
    for oracle in (False, True):
        recorder = MostGpus()
        Simulator(config=SimConfig(instance=instance, elastic=True, oracle=oracle),
                  profiles=profiles, workload=jobs, policy=recorder).run()
        by_app = collections.defaultdict(list)
        for job in jobs:
            by_app[job.application].append(recorder.most[job.name])
        figures = ", ".join(f"{app} mean {np.mean(v):.1f} max {max(v)}"
                            for app, v in sorted(by_app.items()))
        print(f"{'oracle' if oracle else 'learned'}: {figures}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
