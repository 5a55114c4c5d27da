"""``fifo``: user-requested sizes, first come first served, with backfill."""

from __future__ import annotations

from dataclasses import dataclass

from costsched.policy.fixed_size import fixed_size_decision
from costsched.policy.snapshot import ClusterSnapshot, Decision


@dataclass(frozen=True, kw_only=True)
class FifoPolicy:
    """Higher priority first, then earlier arrival; a job that does not fit is
    passed over for later ones that do (greedy backfill, no reservation)."""

    name: str = "fifo"
    """Name in outputs."""

    def decide(self, snapshot: ClusterSnapshot) -> Decision:
        ordered = sorted(snapshot.jobs, key=lambda j: (-j.priority, j.arrival_time_s, j.name))
        return fixed_size_decision(snapshot, ordered)
