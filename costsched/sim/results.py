"""What a simulation produced: each finished job, the per-round timeline, the bill."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class SimJobResult:
    """One finished job."""

    name: str
    """Job name."""
    application: str
    """App it trained."""
    submit_s: float
    """Submission time, s."""
    finish_s: float
    """Completion time, s."""
    gpu_hours: float
    """GPU-hours it held."""
    cost_usd: float
    """Its GPU share of the node price for those hours."""
    restarts: int
    """Placement changes after its first start."""
    intervals: tuple[tuple[float, float, str, int], ...] = ()
    """(start_s, end_s, catalog instance type, GPUs) of each stretch it held GPUs, where
    the simulator records them (:mod:`~costsched.sim.hetero`; empty otherwise)."""
    preemptions: int = 0
    """Times a spot node under it was preempted (:mod:`~costsched.sim.spot`)."""
    lost_gpu_hours: float = 0.0
    """GPU-hours of work preemptions undid (held since its last checkpoint)."""
    outcome: str = "COMPLETED"
    """``COMPLETED``, or ``BUDGET_EXHAUSTED``: it ended when its budget could not pay
    another round at its least size (``finish_s`` is then when it ended)."""

    @property
    def jct_s(self) -> float:
        return self.finish_s - self.submit_s


@dataclass(frozen=True, kw_only=True)
class SpotTotals:
    """What a run with a spot pool adds (:mod:`~costsched.sim.spot`)."""

    spot_node_hours: float
    """Node-hours of spot nodes, charged at the catalog's spot price."""
    on_demand_node_hours: float
    """Node-hours of on-demand nodes, charged at the catalog's on-demand price."""
    num_preemptions: int
    """Job preemptions: a job losing a node it ran on (once per job per event)."""
    num_nodes_preempted: int
    """Spot nodes taken away by the trace, in use or idle."""
    lost_gpu_s: float
    """GPU-seconds of work the preemptions undid, all jobs."""
    num_checkpoints: int = 0
    """Periodic checkpoints written, all jobs (not those of placement changes)."""
    checkpoint_paused_gpu_s: float = 0.0
    """GPU-seconds those checkpoints paused training, all jobs."""


@dataclass(frozen=True, kw_only=True)
class SimResult:
    """What a run produced."""

    jobs: tuple[SimJobResult, ...]
    """Every job, in submission order."""
    timeline: tuple[tuple[float, int, int, float], ...]
    """Per round: (time_s, GPUs allocated, nodes, cumulative USD at the round's end)."""
    node_hours: float
    """Node-hours the cluster existed."""
    cost_usd: float
    """Dollars for those node-hours."""
    spot: SpotTotals | None = None
    """Spot pool totals; None without a spot pool."""
