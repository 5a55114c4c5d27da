"""Spot or on-demand, per job: the market with the lower expected dollars per unit of progress.

A spot node is preempted at a rate of ``lambda`` per node-hour. A job on ``m`` spot nodes
is hit ``lambda x m`` times per hour of running, and each hit costs it, on average, half a
checkpoint interval ``C`` of redone work plus its restart ``R`` (seconds). Per second of
useful work it therefore redoes (loses) the fraction

    f = lambda x m x (C / 2 + R) / 3600

(first order: f is small where spot pays; we take it as the simple linear estimate the
choice needs, not as an exact expectation).

A job whose checkpoint pauses its training for ``delta`` seconds (``JobView.checkpoint_cost_s``)
checkpoints on spot at Young's interval, the one that minimises the work lost to hits and
to checkpoints together: ``C = sqrt(2 x delta x 3600 / (lambda x m))``, at most its own
interval (:func:`checkpoint_interval_s`). Its checkpoints then cost it ``delta / C`` of
every second too, on either market (on-demand at its own, longest interval), and

    f = lambda x m x (C / 2 + R) / 3600 + delta / C.

Spot then costs, per unit of progress,

    spot_usd_per_gpu_hour x (1 + f)    (:func:`~costsched.cost.prices.usd_per_progress_hour`)

and on-demand its price, times (1 + its checkpoints' share). The job stays free to use spot (packing
tries spot nodes first and falls back to on-demand ones when spot is gone) when spot
is cheaper per unit of progress, and is marked on-demand otherwise.

``lambda`` is the rate observed so far, shrunk towards a prior: a Gamma-Poisson
posterior mean, (prior x prior_node_hours + preemptions) / (prior_node_hours +
observed node-hours). ``m`` is the number of nodes the job needs at the size it holds
(at least its least size).

On a fixed cluster the on-demand pool is small, and a job marked on-demand that it cannot
hold at that size is squeezed onto fewer GPUs, judged cheap on spot again at that size and
moved back the next round, restarting each time (measured: one-round flips of the same
few large jobs). So jobs are marked, in snapshot order, only while the on-demand GPUs
(less the least sizes of jobs already on-demand) hold each at its size. With autoscaling
of on-demand nodes, the on-demand pool is what it may grow to: ``max_nodes`` of the
template, at the template's price (so a cluster holding spot nodes only still has an
on-demand market). A job whose checkpoint interval is not known is left as it is.
"""

from __future__ import annotations

import dataclasses
import math

from costsched.cost.prices import SECONDS_PER_HOUR, usd_per_gpu_hour_of, usd_per_progress_hour
from costsched.policy.snapshot import ClusterSnapshot, JobView, num_gpus

DEFAULT_PRIOR_PREEMPTIONS_PER_NODE_HOUR = 0.1
"""Prior preemption rate: one preemption per node every 10 hours (the 4-node traces
shipped with the spot data lose a node every few to tens of hours)."""
DEFAULT_PRIOR_NODE_HOURS = 10.0
"""Weight of the prior, in node-hours of observation it is worth."""


def preemptions_per_node_hour(*, preemptions: int, node_hours: float,
                              prior_per_node_hour: float = DEFAULT_PRIOR_PREEMPTIONS_PER_NODE_HOUR,
                              prior_node_hours: float = DEFAULT_PRIOR_NODE_HOURS) -> float:
    """(prior x prior_node_hours + preemptions) / (prior_node_hours + node_hours)."""
    weight = prior_node_hours + node_hours
    if weight <= 0:
        return prior_per_node_hour
    return (prior_per_node_hour * prior_node_hours + preemptions) / weight


def checkpoint_interval_s(*, preemptions_per_node_hour: float, num_nodes: int,
                          checkpoint_cost_s: float, longest_s: float) -> float:
    """Young's interval sqrt(2 x delta x M), M = 3600 / (lambda x m) the mean seconds
    between preemptions of a job on ``num_nodes`` spot nodes, at most ``longest_s``
    (the job's own interval); ``longest_s`` off spot or when a checkpoint costs nothing
    (the formula would then checkpoint without end)."""
    hits_per_s = preemptions_per_node_hour * num_nodes / SECONDS_PER_HOUR
    if checkpoint_cost_s <= 0 or hits_per_s <= 0:
        return longest_s
    return min(longest_s, math.sqrt(2.0 * checkpoint_cost_s / hits_per_s))


def expected_lost_fraction(*, preemptions_per_node_hour: float, num_nodes: int,
                           checkpoint_interval_s: float, restart_s: float,
                           checkpoint_cost_s: float = 0.0) -> float:
    """f = lambda x m x (C / 2 + R) / 3600 + delta / C: work redone, and paused for
    checkpoints, per unit of work done on spot."""
    per_hit_s = checkpoint_interval_s / 2.0 + restart_s
    paused = checkpoint_cost_s / checkpoint_interval_s if checkpoint_interval_s > 0 else 0.0
    return preemptions_per_node_hour * num_nodes * per_hit_s / SECONDS_PER_HOUR + paused


def judged_gpus(job: JobView, snapshot: ClusterSnapshot) -> int:
    """The size a job's market is chosen at: what it holds, at least its least size."""
    return max(num_gpus(snapshot.placements.get(job.name)), job.min_gpus)


def on_demand_pool(snapshot: ClusterSnapshot) -> tuple[int, float]:
    """(GPUs, dollars per GPU-hour) of the on-demand capacity ``snapshot`` may use: its
    on-demand nodes, or with autoscaling of on-demand nodes ``max_nodes`` of the template."""
    scaling = snapshot.autoscaling
    if scaling is not None and not scaling.template.spot:
        return (scaling.max_nodes * scaling.template.num_gpus,
                usd_per_gpu_hour_of((scaling.template,)))
    on_demand = [n for n in snapshot.nodes if not n.spot]
    return sum(n.num_gpus for n in on_demand), usd_per_gpu_hour_of(on_demand)


def prefers_spot(job: JobView, snapshot: ClusterSnapshot, *, preemption_rate: float,
                 gpus_per_node: int) -> bool:
    """Whether ``job`` costs less per unit of progress on the snapshot's spot nodes."""
    spot = [n for n in snapshot.nodes if n.spot]
    size = judged_gpus(job, snapshot)
    restart_s = snapshot.restart_s if job.restart_s is None else job.restart_s
    num_nodes = max(1, math.ceil(size / max(gpus_per_node, 1)))
    longest_s, cost_s = job.checkpoint_interval_s or 0.0, job.checkpoint_cost_s or 0.0
    interval_s = checkpoint_interval_s(  # its own interval when checkpoints cost nothing
        preemptions_per_node_hour=preemption_rate, num_nodes=num_nodes,
        checkpoint_cost_s=cost_s, longest_s=longest_s)
    lost = expected_lost_fraction(
        preemptions_per_node_hour=preemption_rate, num_nodes=num_nodes,
        checkpoint_interval_s=interval_s, restart_s=restart_s, checkpoint_cost_s=cost_s)
    spot_usd = usd_per_progress_hour(usd_per_gpu_hour_of(spot), lost)
    on_demand_usd = usd_per_progress_hour(
        on_demand_pool(snapshot)[1], cost_s / longest_s if longest_s > 0 else 0.0)
    return spot_usd < on_demand_usd


def choose_markets(snapshot: ClusterSnapshot, *, prior_per_node_hour: float,
                   prior_node_hours: float) -> ClusterSnapshot:
    """``snapshot`` with each job that spot would cost more per unit of progress marked
    on-demand while the on-demand pool holds it; unchanged unless it has spot nodes and an
    on-demand pool (:func:`on_demand_pool`)."""
    on_demand_gpus, _ = on_demand_pool(snapshot)
    if not on_demand_gpus or not any(n.spot for n in snapshot.nodes):
        return snapshot
    rate = preemptions_per_node_hour(preemptions=snapshot.spot_preemptions,
                                     node_hours=snapshot.spot_node_hours,
                                     prior_per_node_hour=prior_per_node_hour,
                                     prior_node_hours=prior_node_hours)
    gpus_per_node = max(n.num_gpus for n in snapshot.nodes)
    room = on_demand_gpus - sum(job.min_gpus for job in snapshot.jobs if job.on_demand)
    jobs = []
    for job in snapshot.jobs:
        size = judged_gpus(job, snapshot)
        if (not job.on_demand and job.checkpoint_interval_s is not None and size <= room
                and not prefers_spot(job, snapshot, preemption_rate=rate,
                                     gpus_per_node=gpus_per_node)):
            job = dataclasses.replace(job, on_demand=True)
            room -= size
        jobs.append(job)
    return dataclasses.replace(snapshot, jobs=tuple(jobs))
