"""What the controller needs from the outside world, as Protocols and plain records.

The Ray layer implements :class:`ClusterClient` (``ray.nodes()``,
``ray.autoscaler.sdk.request_resources``) and :class:`JobRunner` (a
``TorchTrainer`` per job); tests implement them with fakes. All are injected.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from costsched.config.job import JobConfig
from costsched.scheduler.job_models import Measurement

RunState = Literal["running", "finished", "failed", "lost"]


class Clock(Protocol):
    """The controller's only source of time."""

    def now(self) -> float:
        """Seconds since the epoch (or any fixed origin, used consistently)."""
        ...


class SystemClock:
    """Wall-clock time."""

    def now(self) -> float:
        return time.time()


@dataclass(frozen=True, kw_only=True)
class NodeRecord:
    """One node as the cluster reports it."""

    node_id: str
    """Unique node id."""
    node_type: str
    """Instance type name from the price catalog (``""`` if unknown)."""
    gpu_model: str
    """Accelerator model, e.g. ``A10G``."""
    total_slots: int
    """Accelerator slots (of the scheduler's accelerator resource) on the node."""
    free_slots: int
    """Slots not reserved right now (informational; the scheduler plans on totals)."""
    usd_per_hour: float
    """What the node costs while it exists."""
    spot: bool = False
    """Spot (preemptible) capacity."""
    alive: bool = True
    """False once the node has died or been reclaimed; dead nodes get no work."""
    reclaim_notice: bool = False
    """The cloud has said it will reclaim this spot node soon (AWS's two-minute
    interruption notice): it gets no work, and the jobs on it stop at a checkpoint."""


@dataclass(frozen=True, kw_only=True)
class ResourceBundle:
    """One worker's resources, and the instance type it should come from."""

    resources: Mapping[str, float]
    """Ray resources of one worker, e.g. ``{"CPU": 1, "GPU": 1}``."""
    instance_type: str
    """Cheapest catalog instance type that fits the worker."""
    spot: bool = False
    """Whether spot capacity is acceptable for it."""


class ClusterClient(Protocol):
    """The cluster's nodes, and the autoscaler's standing resource request."""

    def nodes(self) -> Sequence[NodeRecord]:
        """All known nodes, dead ones included (``alive=False``)."""
        ...

    def request_resources(self, bundles: Sequence[ResourceBundle]) -> None:
        """Ask the autoscaler for capacity holding all ``bundles`` at once
        (replaces the previous request, as Ray's ``request_resources`` does)."""
        ...

    def clear_resource_request(self) -> None:
        """Withdraw the standing request so idle nodes may scale down."""
        ...


@dataclass(frozen=True, kw_only=True)
class RunHandle:
    """What starting a job returns."""

    run_id: str
    """Run id (the ledger's key and the checkpoint folder's name)."""
    checkpoint_path: str = ""
    """Where the run's checkpoints live; a restart resumes from the newest."""


@dataclass(frozen=True, kw_only=True)
class JobProgress:
    """One poll of a job's run."""

    state: RunState
    """``running``; ``finished`` (see ``outcome``); ``failed`` (worker error, or a node
    loss when ``node_lost``); ``lost`` (the runner has no live run for the job)."""
    outcome: str = ""
    """For ``finished``: COMPLETED, TARGET_REACHED or BUDGET_EXHAUSTED."""
    spent_usd: float = 0.0
    """Dollars the job has spent over all its attempts (the ledger's run cost)."""
    last_step: int = 0
    """Latest optimiser step reported."""
    last_step_at: float | None = None
    """When that step was reported, on the controller's clock."""
    total_steps: int | None = None
    """Optimiser steps the run takes in all, as it last reported; None when it has not."""
    usd_per_hour: float = 0.0
    """Current burn rate; 0 when unknown (the controller then prices the allocation)."""
    eta_s: float | None = None
    """Estimated seconds to the last step at this attempt's step rate
    (:func:`costsched.training.state.eta_s`); None when unknown."""
    node_lost: bool = False
    """The failure came from a node dying or a spot reclaim, not from the job."""
    message: str = ""
    """Free text for the job's log (an error, a reason)."""
    measurement: Measurement | None = None
    """What the run last measured of its steps, when it measures them."""
    restart_phases: Mapping[str, float] | None = None
    """Seconds this attempt's start took, by phase (:mod:`costsched.goodput.restart`),
    once its first step is done."""
    attempt_at: float | None = None
    """When this attempt started (tells one attempt's restart from the next)."""


class JobRunner(Protocol):
    """Starts, resizes, stops and polls one training run per job id.

    Every method must be idempotent per ``job_id``: after a controller restart
    the controller may repeat a call it made just before crashing.
    """

    def start(self, job_id: str, config: JobConfig, num_workers: int,
              placement: Mapping[str, int], batch_size: int | None = None) -> RunHandle:
        """Start (or resume from its newest checkpoint) the job's run; ``batch_size``:
        the global batch the policy chose for an adaptive job (None: the config's)."""
        ...

    def resize(self, job_id: str, num_workers: int, placement: Mapping[str, int],
               batch_size: int | None = None) -> None:
        """Checkpoint, then restart the run on ``num_workers`` workers (at ``batch_size``)."""
        ...

    def stop(self, job_id: str, reason: str) -> None:
        """Ask the run to stop at a checkpoint, without waiting for it; ``reason``:
        preempted, budget, cancelled, resize, node_lost, stalled or spot_notice (its
        node will be reclaimed soon)."""
        ...

    def advance(self) -> list[tuple[str, float]]:
        """Finish the stops that are due; (job id, dollars finally charged) for each."""
        ...

    def poll(self, job_id: str) -> JobProgress:
        """The run's state now."""
        ...


class RunLedger(Protocol):
    """What ``status`` reads of the cost ledger: a :class:`~costsched.cost.ledger.Ledger`,
    or the Ray layer's proxy to the ledger's actor."""

    def forecasts(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """The run's forecasts, oldest first."""
        ...

    def intervals(self, run_id: str | None = None) -> list[dict[str, Any]]:
        """The run's intervals, in attempt order."""
        ...


@dataclass(frozen=True, kw_only=True)
class Action:
    """One thing a scheduling round did to a job (decisions are data)."""

    kind: Literal["start", "resume", "resize", "preempt", "stop_budget", "requeue", "finish"]
    """What was done."""
    job_id: str
    """Which job."""
    num_workers: int = 0
    """Workers it runs with afterwards."""
    placement: Mapping[str, int] = field(default_factory=dict)
    """Accelerator slots it holds per node afterwards."""
    detail: str = ""
    """Why, in words."""


@dataclass(frozen=True, kw_only=True)
class JobStatus:
    """One row of ``costsched status``."""

    job_id: str
    """The job."""
    name: str
    """Its config's name."""
    state: str
    """Scheduler state."""
    priority: int
    """Higher runs first."""
    workers: int
    """Workers held now."""
    gpus: int
    """Accelerators held now."""
    spent_usd: float
    """Dollars spent so far."""
    budget_usd: float
    """Dollars it may spend."""
    usd_per_hour: float
    """Burn rate now."""
    eta_s: float | None
    """Seconds to its last step at this attempt's step rate, if known."""
    restarts: int
    """Restarts from a checkpoint (any cause)."""
    preemptions: int
    """Times preempted by higher-priority work."""
    spot_restarts: int
    """Restarts after node loss or spot reclaim."""
    failures: int
    """Restarts after its own errors."""
    alerts: tuple[str, ...]
    """Active alerts (stall, budget burn)."""
    last_step: int = 0
    """Latest optimiser step its runs reported (kept while it waits)."""
    total_steps: int | None = None
    """Optimiser steps it takes in all, as its run reported; None before it has."""
    samples_per_s: float | None = None
    """Measured training throughput now, examples per second."""
    speedup_down: float | None = None
    """Fitted steps/s with one worker fewer, over now's (None: unmeasured, or min)."""
    speedup_up: float | None = None
    """Fitted steps/s with one worker more, over now's (None: unmeasured, or max)."""
    noise_scale: float | None = None
    """Measured gradient noise scale (the batch size where efficiency halves)."""
    efficiency: float | None = None
    """Statistical efficiency of the batch it runs (1 for a fixed batch)."""
    samples_per_usd: float | None = None
    """Goodput per dollar: useful examples per dollar at the current size."""
    forecast_eta_s: float | None = None
    """Seconds from now until it reaches its target (its last epoch without one), by the
    forecast its run last refreshed from its own learning curve; None before one exists
    or when the target is out of reach."""
    forecast_usd: float | None = None
    """Dollars it will have spent in all by then, by the same forecast."""
    target_reachable: bool | None = None
    """False when that forecast's fitted curve levels off below the target (or crosses it
    after the last epoch); None without a target or a forecast to say."""


@dataclass(frozen=True, kw_only=True)
class TickReport:
    """What one round did."""

    time_s: float
    """When the round ran."""
    actions: tuple[Action, ...]
    """Everything done to jobs, in order."""
    alerts: tuple[str, ...]
    """Alerts after the round, one line each."""
    requested: tuple[ResourceBundle, ...] | None
    """The standing autoscaler request after the round; None when there is none."""
