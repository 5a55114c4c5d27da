"""``las``: Tiresias-like discretised two-dimensional least attained service.

Attained service is GPUs x time (GPU-seconds), the "two dimensions" of
Tiresias' 2D-LAS. Jobs fall into priority queues by attained service; within a
queue the earlier arrival goes first; a job in a higher queue preempts one in a
lower queue, unless that one began its run less than ``min_run_s`` ago. Jobs run at
the user's size and batch size.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from costsched.errors import ConfigError
from costsched.policy.fixed_size import fixed_size_decision
from costsched.policy.hysteresis import DEFAULT_MIN_RUN_S, check_min_run_s, in_min_run
from costsched.policy.snapshot import ClusterSnapshot, Decision, JobView

# Two queues split at 16 GPU-hours: the setting of the Tiresias baseline in the
# Pollux artifact (simulator/tiresias.py, queue threshold 3600 * 16). The
# Tiresias paper found two queues capture most of the benefit.
DEFAULT_THRESHOLDS_GPU_S = (3600.0 * 16,)


@dataclass(frozen=True, kw_only=True)
class LasPolicy:
    """Discretised 2D-LAS over fixed-size jobs."""

    name: str = "las"
    """Name in outputs."""
    queue_thresholds_gpu_s: tuple[float, ...] = DEFAULT_THRESHOLDS_GPU_S
    """Attained-service bounds between queues, GPU-seconds, ascending."""
    starvation_factor: float = 0.0
    """Promote a waiting job to the top queue once it has waited this many times
    its run time (Tiresias' STARVELIMIT); 0 turns promotion off."""
    min_run_s: float = DEFAULT_MIN_RUN_S
    """A job that began its run less than this long ago is not preempted by a job of
    equal or lower priority, whatever their queues (:mod:`~costsched.policy.hysteresis`)."""

    def __post_init__(self) -> None:
        if list(self.queue_thresholds_gpu_s) != sorted(self.queue_thresholds_gpu_s):
            raise ConfigError("queue_thresholds_gpu_s must be ascending")
        if self.starvation_factor < 0:
            raise ConfigError("starvation_factor must be >= 0")
        check_min_run_s(self.min_run_s)

    def queue_of(self, job: JobView, time_s: float) -> int:
        queue = bisect.bisect_right(self.queue_thresholds_gpu_s, job.attained_service_gpu_s)
        if self.starvation_factor > 0 and queue > 0:
            run_s = job.attained_service_gpu_s / job.requested_gpus
            waited_s = time_s - job.arrival_time_s - run_s
            if waited_s >= self.starvation_factor * run_s:
                queue = 0
        return queue

    def decide(self, snapshot: ClusterSnapshot) -> Decision:
        def rank(job: JobView) -> tuple:
            queue = self.queue_of(job, snapshot.time_s)
            protected = in_min_run(job, snapshot, self.min_run_s)
            return (-job.priority, not protected, queue, job.arrival_time_s, job.name)

        ordered = sorted(snapshot.jobs, key=rank)
        return fixed_size_decision(snapshot, ordered)
