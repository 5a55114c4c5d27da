"""``fifo``: user-requested sizes, first come first served, with backfill."""

from __future__ import annotations

from dataclasses import dataclass

from costsched.policy.fixed_size import fixed_size_decision
from costsched.policy.hysteresis import DEFAULT_MIN_RUN_S, check_min_run_s, in_min_run
from costsched.policy.snapshot import ClusterSnapshot, Decision, JobView


@dataclass(frozen=True, kw_only=True)
class FifoPolicy:
    """Higher priority first, then earlier arrival; a job that does not fit is
    passed over for later ones that do (greedy backfill, no reservation)."""

    name: str = "fifo"
    """Name in outputs."""
    min_run_s: float = DEFAULT_MIN_RUN_S
    """A job that began its run less than this long ago is not preempted by a job of
    equal or lower priority (:mod:`~costsched.policy.hysteresis`)."""

    def __post_init__(self) -> None:
        check_min_run_s(self.min_run_s)

    def decide(self, snapshot: ClusterSnapshot) -> Decision:
        def rank(job: JobView) -> tuple:
            protected = in_min_run(job, snapshot, self.min_run_s)
            return (-job.priority, not protected, job.arrival_time_s, job.name)

        return fixed_size_decision(snapshot, sorted(snapshot.jobs, key=rank))
