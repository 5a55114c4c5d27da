"""Hysteresis on the node count: act on a moving average of what the policy wants.

Each round an autoscaling policy says how many nodes it wants now (cost-aware:
:meth:`~costsched.policy.cost_aware.CostAwarePolicy.nodes_wanted`). Taken at face
value that count jitters with every arrival, completion and model refit, and each
change costs: a node added is paid from its boot, a node removed under a job restarts
it. The Pollux artifact's simulator keeps the cluster utility of the last 15 rounds,
resizes only when their mean leaves a band ([low_util, high_util]), and then clears
the window. :class:`NodeCountSmoother` does the same to the wanted count, with an
exponential moving average:

    average <- average + a x (wanted - average),   a = 1 - 2 ** (-elapsed_s / half_life_s)

The count changes only when the average has left ``[n - band_nodes, n + band_nodes]``
around the current count n *and* this round's wanted count lies on the same side of n;
it then moves to the wanted count in one step (within ``[min_nodes, max_nodes]``), and
the average restarts there, as Pollux clears its window. Hence:

* an input alternating by +-w around n moves the average by at most a x w per round
  and never leaves the band when a x w < ``band_nodes``: at the defaults (a = 0.13 per
  60 s round, band 0.5) swings of up to 3 nodes every round move nothing. A wider
  one-round swing does get through, to the wanted count;
* a change to a new count d nodes away is followed after the first round k with
  (1 - a) ** k < 1 - ``band_nodes`` / d (sooner the larger the change);
* a count outside the bounds is brought back at once.

State lives here, in the driver (the simulator; live, ``CapacityRequest`` in
:mod:`costsched.scheduler.autoscale`), not in the policy: the policy stays a frozen
dataclass that decides from a snapshot, and the driver passes the count to act on as
:attr:`~costsched.policy.snapshot.Autoscaling.target_nodes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from costsched.errors import ConfigError

DEFAULT_USD_PER_JOB_HOUR = 20.0
"""Dollars an hour of one job's JCT is worth, by default. Tuned on the Pollux workloads
1-4 at load 0.5 with g4dn.12xlarge nodes ($0.98 a T4-hour), learned models
(``bench/autoscale.py --load 0.5``), where it must cost at least 30% less than 16 fixed
nodes at no more than 1.1x their mean JCT: chosen at ``f82fc17``, when $17 to $21 met
that and $22 and $24 did not; since ``66018fa`` $18, $20, $22 and $24 all do ($20: 31.8%
less at 1.069x). See the README, *Autoscaling that pays*."""
DEFAULT_HALF_LIFE_S = 300.0
"""Five 60 s rounds: a round's wanted count weighs 13% of the average."""
DEFAULT_BAND_NODES = 0.5
"""Under one node, so that a lasting difference of one node is acted on too."""


@dataclass(frozen=True, kw_only=True)
class NodeCountHysteresis:
    """How much the wanted node count is smoothed before the cluster is resized."""

    half_life_s: float = DEFAULT_HALF_LIFE_S
    """Seconds after which a round's wanted count weighs half as much in the average."""
    band_nodes: float = DEFAULT_BAND_NODES
    """How far, in nodes, the average must stray from the current count before the
    count changes."""

    def __post_init__(self) -> None:
        if not 0 < self.half_life_s < math.inf:
            raise ConfigError(f"the autoscaling half-life must be a positive number of "
                              f"seconds, e.g. {DEFAULT_HALF_LIFE_S:g}; got {self.half_life_s}")
        if not 0 <= self.band_nodes < math.inf:
            raise ConfigError(f"the autoscaling band must be >= 0 nodes, e.g. "
                              f"{DEFAULT_BAND_NODES:g}; got {self.band_nodes}")

    def weight_of_newest(self, elapsed_s: float) -> float:
        """a = 1 - 2 ** (-elapsed_s / half_life_s): the newest count's share of the average."""
        return 1.0 - 2.0 ** (-max(elapsed_s, 0.0) / self.half_life_s)


class NodeCountSmoother:
    """The moving average of one cluster's wanted node count, and the count to act on."""

    def __init__(self, settings: NodeCountHysteresis, *, min_nodes: int, max_nodes: int):
        if not 0 <= min_nodes <= max_nodes:
            raise ConfigError("autoscaling needs 0 <= MIN <= MAX, e.g. 4:16")
        self.settings = settings
        self.min_nodes = min_nodes
        self.max_nodes = max_nodes
        self.average: float | None = None
        """The moving average of the wanted count; None before the first round."""
        self.num_held = 0
        """Rounds in which the wanted count differed from the current one and the current
        one was kept."""

    def reset(self) -> None:
        """Forget the average: the next update starts from the count then current."""
        self.average = None

    def update(self, *, wanted: int, current: int, elapsed_s: float) -> int:
        """Fold in this round's ``wanted`` count; return the count to act on, given the
        ``current`` one and ``elapsed_s`` seconds since the last update."""
        wanted = self._bounded(wanted)
        if self.average is None:
            self.average = float(current)
        a = self.settings.weight_of_newest(elapsed_s)
        self.average += a * (wanted - self.average)
        band = self.settings.band_nodes
        if current != self._bounded(current):
            target = self._bounded(current)
        elif ((self.average > current + band and wanted > current)
              or (self.average < current - band and wanted < current)):
            target = wanted
        else:
            self.num_held += wanted != current
            return current
        self.average = float(target)
        return target

    def _bounded(self, count: int) -> int:
        return min(max(count, self.min_nodes), self.max_nodes)
