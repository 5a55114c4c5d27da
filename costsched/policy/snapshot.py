"""What a scheduling policy sees and what it returns: plain, frozen records.

A policy is any object with ``decide(snapshot: ClusterSnapshot) -> Decision``.
It reads no clock and no global state: the time, the jobs and the nodes are all
in the snapshot, so the simulator and the live scheduler drive the same object.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from costsched.errors import ConfigError

Placement = Mapping[str, int]
"""GPUs a job holds on each node: node id -> number of GPUs (replicas) there."""


class ThroughputModel(Protocol):
    """How fast one job steps on a placement: measured profile or fitted model.

    A model may also carry a hashable ``cache_key``: models of one class with equal keys
    give the same batch choices and step times, so a policy computes those once for all
    of them (:class:`~costsched.policy.goodput.GoodputTable`), across decisions too; and a
    ``step_tables`` dict, where the policy then keeps what it computed from the model (by
    batch limits, GPU count and node size) instead of in a module-wide memo: for models
    backed by data that should be freed with them.
    """

    def local_bsz_choices(self) -> np.ndarray:
        """Per-GPU batch sizes the job can run with, ascending."""
        ...

    def step_time_s(self, placement: tuple[int, ...], local_bsz: float) -> float:
        """Seconds per optimizer step with ``placement`` GPUs per node at ``local_bsz``."""
        ...


@dataclass(frozen=True, kw_only=True)
class EfficiencyModel:
    """Statistical efficiency of a batch size, from the gradient noise scale (Pollux).

    gain(B) = (var + sqr) / (var / s + sqr) with s = B / B0 is the progress one
    step at batch B makes, in steps at the initial batch B0; efficiency is
    gain / s = (phi + 1) / (phi + s) with phi = var / sqr.
    """

    init_batch_size: int
    """B0: the batch size progress is measured in; the smallest allowed."""
    max_batch_size: int
    """Largest total batch size the job may use."""
    grad_sqr: float
    """Squared norm of the true gradient, as last estimated."""
    grad_var: float
    """Variance of the gradient at the initial batch size B0 (tr(Sigma) / B0 for a
    per-example covariance Sigma), as last estimated."""

    def __post_init__(self) -> None:
        if not 0 < self.init_batch_size <= self.max_batch_size:
            raise ConfigError("need 0 < init_batch_size <= max_batch_size")
        if self.grad_sqr <= 0 or self.grad_var < 0:
            raise ConfigError("need grad_sqr > 0 and grad_var >= 0")

    def gain(self, batch_size: float | np.ndarray) -> float | np.ndarray:
        return statistical_gain(self.grad_sqr, self.grad_var, self.init_batch_size,
                                np.asarray(batch_size, dtype=float))


def statistical_gain(grad_sqr, grad_var, init_batch_size: int, batch_size):
    """Pollux's gain (var + sqr) / (var / s + sqr), s = batch_size / init_batch_size:
    progress per example at ``batch_size`` over that at the initial batch, elementwise (the
    gradient statistics may be arrays too, one job a row)."""
    scale = batch_size / init_batch_size
    return (grad_var + grad_sqr) / (grad_var / scale + grad_sqr)


@dataclass(frozen=True, kw_only=True)
class TypeOption:
    """How one job runs on one GPU model of a heterogeneous cluster."""

    throughput: ThroughputModel
    """Step time on nodes of this model (its own per-GPU batch cap)."""
    max_gpus: int
    """Most GPUs of this model the job may be given now."""


@dataclass(frozen=True, kw_only=True)
class JobView:
    """One job as the policy sees it."""

    name: str
    """Unique job name."""
    arrival_time_s: float
    """Submission time, seconds on the snapshot's clock."""
    attained_service_gpu_s: float
    """GPU-seconds the job has held so far (Tiresias' attained service)."""
    min_gpus: int
    """Fewest GPUs the job can run on (no policy goes below)."""
    max_gpus: int
    """Most GPUs the job can use."""
    requested_gpus: int
    """GPUs the user asked for. A fixed-size policy starts the job at the largest size
    in ``min_gpus..requested_gpus`` that fits (exactly this when the two are equal, a
    rigid job) and keeps it at that size while it runs."""
    requested_batch_size: int
    """Total batch size the user asked for; fixed-size policies use it."""
    throughput: ThroughputModel
    """Step time by placement and per-GPU batch size."""
    efficiency: EfficiencyModel
    """Statistical efficiency by total batch size, as of now."""
    priority: int = 0
    """Higher runs first; an elastic policy also weighs its progress by 2**priority."""
    budget_usd: float = math.inf
    """Dollars the job may spend in all; it gets no GPUs once spent."""
    spent_usd: float = 0.0
    """Dollars spent so far."""
    usd_per_gpu_hour: float | None = None
    """The job's own price of one GPU-hour (:class:`~costsched.cost.prices.JobRate`), so
    its budget is judged at the price it is charged; None: the cluster's average."""
    restart_s: float | None = None
    """What a restart of this job costs, seconds, as measured (None: the snapshot's
    ``restart_s``)."""
    on_demand: bool = False
    """The job runs on on-demand capacity only: no policy places it on a spot node
    (a live job priced on-demand, ``cost.spot: false``). False: any node will do."""
    gpus_per_worker: int = 1
    """GPUs one worker of the job holds: a fixed-size policy sizes it in whole workers."""
    running_since_s: float | None = None
    """When the job's current run began (its last start, resume or resize), seconds on
    the snapshot's clock; None when it waits or when that is not known. A job that
    began less than a policy's ``min_run_s`` ago keeps its GPUs against jobs of equal
    or lower priority (:mod:`~costsched.policy.hysteresis`)."""

    num_restarts: int = 0
    """Times the job was restarted on a new placement so far (Pollux's restart penalty
    grows with it; 0 when not known)."""
    checkpoint_interval_s: float | None = None
    """Seconds of training between the job's checkpoints: a preempted spot node costs it
    the work since the last one. None: not known, and the policy does not weigh spot
    preemptions for it (:mod:`~costsched.policy.spot_choice`)."""
    checkpoint_cost_s: float | None = None
    """Seconds a checkpoint pauses the job's training, when its checkpoints on spot come
    at Young's interval for the preemption rate (at most ``checkpoint_interval_s``;
    :func:`~costsched.policy.spot_choice.checkpoint_interval_s`). None: it checkpoints
    every ``checkpoint_interval_s`` wherever it runs."""
    by_gpu_model: Mapping[str, TypeOption] = field(default_factory=dict)
    """GPU model (:attr:`NodeView.gpu_model`) -> how the job runs there, for a policy that
    tells GPU types apart; empty: ``throughput`` holds on every node."""
    remaining_work: float | None = None
    """Work the job has left to its end, in the units of its goodput (steps at its initial
    batch size): what its declared epochs less those it reported done come to. None when
    it does not say; cost-aware then weighs it by attained service alone."""

    def __post_init__(self) -> None:
        if not 1 <= self.min_gpus <= self.max_gpus:
            raise ConfigError(f"job {self.name}: need 1 <= min_gpus <= max_gpus")
        if self.requested_gpus < 1 or self.requested_batch_size < 1:
            raise ConfigError(f"job {self.name}: requested GPUs and batch size must be >= 1")
        if self.gpus_per_worker < 1:
            raise ConfigError(f"job {self.name}: gpus_per_worker must be >= 1")
        if self.remaining_work is not None and not self.remaining_work >= 0:
            raise ConfigError(f"job {self.name}: remaining_work must be >= 0 or None")

    def on_gpu_models(self, options: Mapping[str, TypeOption]) -> JobView:
        """This view described on each GPU model by ``options``; its ``max_gpus`` the most
        any model offers (never below ``min_gpus``)."""
        return dataclasses.replace(self, by_gpu_model=options, max_gpus=max(
            self.min_gpus, *(o.max_gpus for o in options.values())))


@dataclass(frozen=True, kw_only=True)
class NodeView:
    """One node of the cluster."""

    node_id: str
    """Unique node id."""
    gpu_model: str
    """Accelerator model, e.g. ``T4``."""
    num_gpus: int
    """GPUs on the node."""
    usd_per_hour: float
    """What the node costs while it exists."""
    spot: bool = False
    """Spot (preemptible) capacity rather than on-demand."""
    reserved_gpus: int | None = None
    """GPUs reserved on the node when the snapshot was taken, by anything: the jobs in
    the snapshot's ``placements`` and work the policy does not control (another Ray
    job, a placement group left behind). None: unknown, taken to be the placed jobs'
    alone. What is reserved beyond ``placements`` is never planned on (see
    :meth:`ClusterSnapshot.free_gpus`)."""


@dataclass(frozen=True, kw_only=True)
class Autoscaling:
    """Bounds for a policy that may add or remove nodes of one template."""

    min_nodes: int
    """Never fewer nodes than this."""
    max_nodes: int
    """Never more nodes than this."""
    template: NodeView
    """What a new node looks like (its ``node_id`` is a prefix for new ids)."""
    target_nodes: int | None = None
    """The node count to keep, when the driver settles it (a smoother of the policy's
    wanted count over rounds, :mod:`~costsched.policy.autoscale_hysteresis`); None: the
    policy keeps the count it wants this round."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_nodes <= self.max_nodes or self.max_nodes < 1:
            raise ConfigError("autoscaling needs 0 <= MIN <= MAX and MAX >= 1, e.g. 4:16")
        if self.target_nodes is not None and not (
                self.min_nodes <= self.target_nodes <= self.max_nodes):
            raise ConfigError(f"autoscaling target of {self.target_nodes} nodes is outside "
                              f"{self.min_nodes}:{self.max_nodes}")


@dataclass(frozen=True, kw_only=True)
class ClusterSnapshot:
    """Everything a policy decides from."""

    time_s: float
    """Now, seconds on the driver's clock."""
    round_index: int
    """How many decisions came before this one; makes new node ids unique."""
    jobs: tuple[JobView, ...]
    """Active jobs (submitted, not finished)."""
    nodes: tuple[NodeView, ...]
    """Nodes that exist now."""
    placements: Mapping[str, Placement] = field(default_factory=dict)
    """Current placement of each running job; a job absent here holds nothing."""
    autoscaling: Autoscaling | None = None
    """Node bounds when the policy may resize the cluster; ``None`` for a fixed cluster."""
    round_s: float = 60.0
    """Seconds until the next decision."""
    restart_s: float = 30.0
    """Seconds of no progress a job pays when its placement changes."""
    spot_preemptions: int = 0
    """Spot nodes preempted so far (observed by the driver)."""
    spot_node_hours: float = 0.0
    """Spot node-hours held so far: with ``spot_preemptions``, the observed preemption
    rate per node-hour (:func:`~costsched.policy.spot_choice.preemptions_per_node_hour`)."""

    def free_gpus(self) -> dict[str, int]:
        """GPUs per node the policy may hand out: the node's GPUs less those held by work
        it does not control, ``max(reserved_gpus - GPUs placed there, 0)``."""
        placed = gpus_placed(self.placements)
        return {node.node_id: max(node.num_gpus - outside_gpus(node, placed), 0)
                for node in self.nodes}

    def new_node_ids(self, count: int) -> tuple[str, ...]:
        """Fresh node ids for nodes this decision adds (unique across rounds)."""
        prefix = self.autoscaling.template.node_id if self.autoscaling else "node"
        return tuple(f"{prefix}-r{self.round_index}-{i}" for i in range(count))


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What a policy returns."""

    placements: Mapping[str, Placement]
    """Job name -> GPUs per node; a job absent (or empty) gets nothing this round."""
    batch_sizes: Mapping[str, int]
    """Job name -> total batch size to run with (for jobs that are placed)."""
    nodes_to_add: tuple[NodeView, ...] = ()
    """New nodes to start; placements may already use their ids."""
    nodes_to_remove: tuple[str, ...] = ()
    """Ids of nodes to release; no placement uses them."""


def gpus_placed(placements: Mapping[str, Placement]) -> dict[str, int]:
    """GPUs placed on each node (by node id) over ``placements``."""
    placed: dict[str, int] = {}
    for placement in placements.values():
        for node_id, count in placement.items():
            placed[node_id] = placed.get(node_id, 0) + count
    return placed


def outside_gpus(node: NodeView, placed: Mapping[str, int]) -> int:
    """GPUs of ``node`` held by work the policy does not control: its ``reserved_gpus``
    less the GPUs ``placed`` there (:func:`gpus_placed`), at least 0; 0 when unknown."""
    if node.reserved_gpus is None:
        return 0
    return max(node.reserved_gpus - placed.get(node.node_id, 0), 0)


def placement_shape(placement: Placement) -> tuple[int, ...]:
    """GPUs per node of a placement, largest first (node ids dropped)."""
    return tuple(sorted((n for n in placement.values() if n > 0), reverse=True))


def num_gpus(placement: Placement | None) -> int:
    return sum(placement.values()) if placement else 0
