"""What the live scheduler asks the autoscaler for, each round (pure).

Capacity for the running jobs plus the waiting jobs that fit under ``max_nodes``
(highest priority first, cheapest fitting type each); with no job at all, only the
``min_nodes`` floor. The request is sent again every round: Ray keeps one standing
request per cluster, and Ray Data's own autoscaling coordinator (inside every Train
run) replaces it. Running jobs stay in it so their nodes are not taken as idle
while their workers start.
"""

from __future__ import annotations

from collections.abc import Sequence

from costsched.config.job import JobConfig
from costsched.config.scheduler import SchedulerConfig
from costsched.cost.prices import PriceCatalog
from costsched.scheduler.interfaces import ResourceBundle
from costsched.scheduler.policy_view import cheapest_instance, job_bundles
from costsched.scheduler.state import JobRecord


def resource_request(*, waiting: Sequence[tuple[JobRecord, JobConfig]],
                     running: Sequence[tuple[JobRecord, JobConfig]], num_nodes: int,
                     catalog: PriceCatalog, config: SchedulerConfig
                     ) -> tuple[ResourceBundle, ...]:
    """The bundles to request this round; empty when nothing needs capacity."""
    def bundles(job: JobConfig, num_workers: int) -> tuple[list[ResourceBundle], int]:
        return job_bundles(job, num_workers, catalog, allowed=config.autoscaling.node_types,
                           accelerator_resource=config.accelerator_resource)

    room = config.autoscaling.max_nodes - num_nodes
    demand: list[ResourceBundle] = []
    for record, job in sorted(waiting, key=lambda p: (-p[0].priority, p[0].submitted_at)):
        wanted, needed = bundles(job, record.min_workers)
        if wanted and needed <= room:
            demand += wanted
            room -= needed
    held = [b for record, job in running for b in bundles(job, record.workers)[0]]
    return tuple(held + demand) or floor_request(catalog, config)


def floor_request(catalog: PriceCatalog, config: SchedulerConfig) -> tuple[ResourceBundle, ...]:
    """``min_nodes`` whole nodes of the cheapest allowed on-demand type (one bundle
    holding every slot of a node each), kept up while the queue is empty."""
    scaling = config.autoscaling
    if scaling.min_nodes == 0:
        return ()
    name = cheapest_instance(catalog, gpus_per_worker=1, spot=False, allowed=scaling.node_types)
    if name is None:
        return ()
    slots = float(catalog.instance(name).num_gpus_per_node)
    bundle = ResourceBundle(resources={config.accelerator_resource: slots}, instance_type=name)
    return (bundle,) * scaling.min_nodes
