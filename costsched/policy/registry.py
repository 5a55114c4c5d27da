"""Policy names (as the CLI spells them) -> policy classes."""

from __future__ import annotations

from typing import Protocol

from costsched.config.strict import closest_hint
from costsched.errors import ConfigError
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.policy.fifo import FifoPolicy
from costsched.policy.las import LasPolicy
from costsched.policy.snapshot import ClusterSnapshot, Decision


class Policy(Protocol):
    """Anything that turns a snapshot into a decision; it must not read a clock."""

    name: str

    def decide(self, snapshot: ClusterSnapshot) -> Decision: ...


POLICIES: dict[str, type] = {
    "fifo": FifoPolicy,
    "las": LasPolicy,
    "cost-aware": CostAwarePolicy,
}

# Which policies choose job sizes themselves (the simulator then offers each
# job its elastic range instead of the size the user asked for).
ELASTIC: frozenset[str] = frozenset({"cost-aware"})


def make_policy(name: str) -> Policy:
    """A policy with its default settings, by CLI name."""
    try:
        return POLICIES[name]()
    except KeyError:
        raise ConfigError(f"unknown policy `{name}`{closest_hint(name, POLICIES)}") from None
