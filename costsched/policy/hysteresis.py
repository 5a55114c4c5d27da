"""Hysteresis against preemption ping-pong, shared by every policy.

Two jobs of equal priority that each want the whole cluster would otherwise take
turns every round under a policy that ranks by attained service: the one running
gains service, so the next round the waiting one ranks first, and so on, each turn
costing a restart. Two guards, both sized by a policy's ``min_run_s``:

* a minimum run: a job that has run less than ``min_run_s`` since its current run
  began (:attr:`~costsched.policy.snapshot.JobView.running_since_s`) ranks ahead of
  every job of equal or lower priority, so none of those can take its GPUs;
* a restart charge at admission: ranked by attained service, a running job counts
  ``min_run_s`` x its GPUs less, so a waiting job of equal priority displaces it only
  once it has had that much more service. This needs nothing but the snapshot: two
  such jobs take turns of at least ``min_run_s`` even when the start of the current
  run is not known.

A job of higher priority still preempts at once.
"""

from __future__ import annotations

from costsched.errors import ConfigError
from costsched.policy.snapshot import ClusterSnapshot, JobView, num_gpus

DEFAULT_MIN_RUN_S = 600.0
"""Ten minutes. Jobs taking turns lose at most restart_s / min_run_s of their time to
restarts: 5% at the default 30 s restart. It is also cost-aware's restart horizon."""


def check_min_run_s(min_run_s: float) -> None:
    if not min_run_s >= 0:
        raise ConfigError(f"min_run_s must be >= 0 seconds, got {min_run_s}")


def in_min_run(job: JobView, snapshot: ClusterSnapshot, min_run_s: float) -> bool:
    """Whether ``job`` holds GPUs and its current run began less than ``min_run_s`` ago."""
    if job.running_since_s is None or not num_gpus(snapshot.placements.get(job.name)):
        return False
    return snapshot.time_s - job.running_since_s < min_run_s


def charged_service_gpu_s(job: JobView, snapshot: ClusterSnapshot, min_run_s: float) -> float:
    """Attained service to rank ``job`` by: a running job's less ``min_run_s`` x its GPUs."""
    held = num_gpus(snapshot.placements.get(job.name))
    return job.attained_service_gpu_s - min_run_s * held
