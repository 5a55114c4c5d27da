"""Paths and builders shared by the simulator tests."""

from __future__ import annotations

from pathlib import Path

from costsched.cost.prices import load_catalog
from costsched.policy.registry import ELASTIC, make_policy
from costsched.sim.profiles import load_profiles, pollux_dir
from costsched.sim.simulator import SimConfig, Simulator

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pollux_small"
FIXTURE_WORKLOAD = FIXTURE / "workloads" / "load-1.0" / "workload-9.csv"
SHARED = pollux_dir()  # $COSTSCHED_POLLUX_DIR, else ../shared/data/pollux
HAVE_SHARED = (SHARED / "profiles").is_dir()
NO_SHARED_REASON = f"needs the Pollux data at {SHARED} (../shared/data is absent)"

_PROFILES = {}


def fixture_profiles():
    if "fixture" not in _PROFILES:
        _PROFILES["fixture"] = load_profiles(FIXTURE)
    return _PROFILES["fixture"]


def simulate(workload, policy: str, *, num_nodes: int = 2, profiles=None, **config):
    instance = load_catalog().instance("g4dn.12xlarge")
    cfg = SimConfig(instance=instance, num_nodes=num_nodes, elastic=policy in ELASTIC, **config)
    sim = Simulator(config=cfg, profiles=profiles or fixture_profiles(), workload=workload,
                    policy=make_policy(policy))
    return sim.run()


class Recorder:
    """Wraps a policy and keeps every (snapshot, decision) it produced."""

    def __init__(self, inner):
        self.inner, self.name, self.rounds = inner, inner.name, []
        self.heterogeneity_aware = getattr(inner, "heterogeneity_aware", False)

    def decide(self, snapshot):
        decision = self.inner.decide(snapshot)
        self.rounds.append((snapshot, decision))
        return decision
