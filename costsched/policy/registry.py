"""Policy names (as the CLI spells them) -> policy classes.

The names are plain data so that the command line and config validation can list
them without importing the policies (and numpy); :func:`make_policy` imports the one
it builds.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Protocol

from costsched.errors import ConfigError

if TYPE_CHECKING:
    from costsched.policy.snapshot import ClusterSnapshot, Decision


class Policy(Protocol):
    """Anything that turns a snapshot into a decision; it must not read a clock."""

    name: str

    def decide(self, snapshot: ClusterSnapshot) -> Decision: ...


POLICIES: dict[str, str] = {
    "fifo": "costsched.policy.fifo:FifoPolicy",
    "las": "costsched.policy.las:LasPolicy",
    "cost-aware": "costsched.policy.cost_aware:CostAwarePolicy",
    "cost-aware-unaware": "costsched.policy.cost_aware:UnawareCostAwarePolicy",
}
"""Policy name -> ``module:class`` of its implementation."""

# Which policies choose job sizes themselves (the simulator then offers each
# job its elastic range instead of the size the user asked for).
ELASTIC: frozenset[str] = frozenset({"cost-aware", "cost-aware-unaware"})


def policy_class(name: str) -> type:
    """The class of the policy called ``name``."""
    try:
        module_name, class_name = POLICIES[name].split(":")
    except KeyError:
        from costsched.config.strict import closest_hint

        raise ConfigError(f"unknown policy `{name}`{closest_hint(name, POLICIES)}") from None
    return getattr(importlib.import_module(module_name), class_name)


def make_policy(name: str) -> Policy:
    """A policy with its default settings, by CLI name."""
    return policy_class(name)()
