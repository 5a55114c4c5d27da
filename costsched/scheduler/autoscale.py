"""What the live scheduler asks the autoscaler for, each round (pure).

Capacity for the running jobs plus the waiting jobs that fit under ``max_nodes``
(highest priority first, cheapest fitting type each); with no job at all, only the
``min_nodes`` floor. With ``autoscaling.usd_per_job_hour`` set and the cost-aware
policy, also whole nodes (the cheapest allowed on-demand type) to grow jobs onto: as
many as the policy's growth moves are worth at that value of a job-hour
(:meth:`~costsched.policy.cost_aware.CostAwarePolicy.nodes_wanted`, as the simulator's
``--autoscale``), smoothed over rounds with ``autoscaling.half_life_s``
(:class:`CapacityRequest`). The request is sent again every round: Ray keeps one
standing request per cluster, and Ray Data's own autoscaling coordinator (inside every
Train run) replaces it. Running jobs stay in it so their nodes are not taken as idle
while their workers start; nodes no longer asked for go when the autoscaler finds them
idle.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence

from costsched.config.job import JobConfig
from costsched.config.scheduler import SchedulerConfig
from costsched.cost.prices import PriceCatalog
from costsched.policy.autoscale_hysteresis import NodeCountHysteresis, NodeCountSmoother
from costsched.policy.registry import Policy
from costsched.policy.snapshot import Autoscaling, ClusterSnapshot, NodeView
from costsched.scheduler.interfaces import ResourceBundle
from costsched.scheduler.policy_view import cheapest_instance, job_bundles
from costsched.scheduler.state import JobRecord

log = logging.getLogger(__name__)


def resource_request(*, waiting: Sequence[tuple[JobRecord, JobConfig]],
                     running: Sequence[tuple[JobRecord, JobConfig]], num_nodes: int,
                     catalog: PriceCatalog, config: SchedulerConfig,
                     growth_gpus: int = 0) -> tuple[ResourceBundle, ...]:
    """The bundles to request this round; empty when nothing needs capacity.
    ``growth_gpus``: accelerators to add beyond those for the waiting jobs
    (:func:`growth_gpus`), as whole nodes within ``max_nodes``."""
    def bundles(job: JobConfig, num_workers: int) -> tuple[list[ResourceBundle], int]:
        return job_bundles(job, num_workers, catalog, allowed=config.autoscaling.node_types,
                           accelerator_resource=config.accelerator_resource)

    room = config.autoscaling.max_nodes - num_nodes
    demand: list[ResourceBundle] = []
    queued_nodes = 0
    for record, job in sorted(waiting, key=lambda p: (-p[0].priority, p[0].submitted_at)):
        wanted, needed = bundles(job, record.min_workers)
        if wanted and needed <= room:
            demand += wanted
            room -= needed
            queued_nodes += needed
    grow = _whole_nodes(catalog, config, room, gpus=growth_gpus, less=queued_nodes)
    held = [b for record, job in running for b in bundles(job, record.workers)[0]]
    return tuple(held + demand) + grow or floor_request(catalog, config)


class CapacityRequest:
    """One live scheduler's standing request, and with ``autoscaling.half_life_s`` the
    moving average its growth node count follows
    (:class:`~costsched.policy.autoscale_hysteresis.NodeCountSmoother`, as the simulator's
    ``--autoscale-half-life``): a count wanted for a round or two adds no node."""

    def __init__(self, config: SchedulerConfig):
        scaling = config.autoscaling
        self.standing: tuple[ResourceBundle, ...] | None = None
        """The request sent last; None: none stands."""
        self.smoother = None if scaling.half_life_s is None else NodeCountSmoother(
            NodeCountHysteresis(half_life_s=scaling.half_life_s),
            min_nodes=scaling.min_nodes, max_nodes=scaling.max_nodes)
        self._round_s = config.round_s
        self._now_s = 0.0
        self._smoothed_at: float | None = None
        """When the average last took a count; None: it starts afresh."""
        self._smoothed = False

    def send(self, cluster, *, waiting: Sequence[tuple[JobRecord, JobConfig]],
             running: Sequence[tuple[JobRecord, JobConfig]], snapshot: ClusterSnapshot,
             policy: Policy, catalog: PriceCatalog, config: SchedulerConfig
             ) -> tuple[ResourceBundle, ...] | None:
        """Send this round's request to ``cluster`` (:func:`resource_request`, with
        :func:`growth_gpus`), or clear the one standing; returns what stands now. A
        policy that fails to size the growth leaves it out (logged), not the round. A
        round that sizes no growth (no job, or the policy failed) starts the average
        afresh: a later job is not grown onto nodes wanted before it."""
        self._now_s, self._smoothed = snapshot.time_s, False
        try:
            grow = growth_gpus(policy, snapshot, catalog=catalog, config=config,
                               smooth=self._smooth if self.smoother is not None else None)
        except Exception as exc:  # noqa: BLE001 - the request for the queue still goes out
            log.warning("growth autoscaling skipped this round: %s", exc)
            grow = 0
        if self.smoother is not None and not self._smoothed:
            self.smoother.reset()
            self._smoothed_at = None
        request = resource_request(waiting=waiting, running=running,
                                   num_nodes=len(snapshot.nodes), catalog=catalog,
                                   config=config, growth_gpus=grow)
        if request:
            cluster.request_resources(request)
        elif self.standing is not None:
            cluster.clear_resource_request()
        self.standing = request or None
        return self.standing

    def _smooth(self, wanted: int, current: int) -> int:
        last_s, self._smoothed_at, self._smoothed = self._smoothed_at, self._now_s, True
        elapsed_s = self._round_s if last_s is None else self._now_s - last_s
        return self.smoother.update(wanted=wanted, current=current, elapsed_s=elapsed_s)


def growth_gpus(policy: Policy, snapshot: ClusterSnapshot, *, catalog: PriceCatalog,
                config: SchedulerConfig, smooth: Callable[[int, int], int] | None = None
                ) -> int:
    """Accelerators the cluster lacks for what the cost-aware policy finds worth paying
    for at ``autoscaling.usd_per_job_hour``: the admitted minimums and the growth moves
    whose JCT saving is worth their dollars, on the nodes there and up to ``max_nodes``
    of the cheapest allowed on-demand type, less the accelerators the nodes have.
    ``smooth(wanted, current)``: the count to act on instead of the one wanted, both in
    nodes of that type (the nodes there as their accelerators would fill them, at least
    ``min_nodes``, which may still be booting).
    0 when that setting is off or the policy does not size jobs by dollars."""
    scaling = config.autoscaling
    usd = scaling.usd_per_job_hour
    name = _growth_type(catalog, config)
    if (usd is None or name is None or scaling.max_nodes < 1 or not snapshot.jobs
            or not hasattr(policy, "nodes_wanted")):
        return 0
    instance = catalog.instance(name)
    template = NodeView(node_id="autoscaled", gpu_model=instance.gpu_model,
                        num_gpus=instance.num_gpus_per_node,
                        usd_per_hour=instance.node_usd_per_hour(False))
    scaled = dataclasses.replace(snapshot, autoscaling=Autoscaling(
        min_nodes=scaling.min_nodes, max_nodes=scaling.max_nodes, template=template))
    wanted = dataclasses.replace(policy, usd_per_job_hour=usd).nodes_wanted(scaled)
    have = sum(n.num_gpus for n in snapshot.nodes)
    if smooth is not None:  # both counts in nodes of the template, within the bounds
        current = min(max(math.ceil(have / template.num_gpus), scaling.min_nodes),
                      scaling.max_nodes)
        wanted = smooth(wanted, current)
    return max(wanted * template.num_gpus - have, 0)


def _growth_type(catalog: PriceCatalog, config: SchedulerConfig) -> str | None:
    return cheapest_instance(catalog, gpus_per_worker=1, spot=False,
                             allowed=config.autoscaling.node_types)


def _whole_nodes(catalog: PriceCatalog, config: SchedulerConfig, most: int,
                 gpus: float | None = None, less: int = 0) -> tuple[ResourceBundle, ...]:
    """Whole nodes of the cheapest allowed on-demand type (one bundle holding every slot
    of a node each): ``most``, or the nodes ``gpus`` accelerators fill less ``less``
    nodes already asked for, at most ``most``."""
    name = _growth_type(catalog, config)
    if name is None or most <= 0:
        return ()
    slots = float(catalog.instance(name).num_gpus_per_node)
    bundle = ResourceBundle(resources={config.accelerator_resource: slots}, instance_type=name)
    count = most if gpus is None else min(math.ceil(gpus / slots) - less, most)
    return (bundle,) * max(count, 0)


def floor_request(catalog: PriceCatalog, config: SchedulerConfig) -> tuple[ResourceBundle, ...]:
    """``min_nodes`` whole nodes of the cheapest allowed on-demand type, kept up while
    the queue is empty."""
    scaling = config.autoscaling
    return _whole_nodes(catalog, config, scaling.min_nodes)
