"""Checks every decision must pass, whoever drives the policy."""

from __future__ import annotations

from costsched.policy.snapshot import ClusterSnapshot, Decision


class InvalidDecision(AssertionError):
    """A policy returned a decision that breaks the cluster's or a job's limits."""


def check_decision(snapshot: ClusterSnapshot, decision: Decision, *, elastic: bool) -> None:
    """Raise :class:`InvalidDecision` unless ``decision`` is executable on ``snapshot``.

    No node is over-allocated or unknown (nodes added by the decision count,
    removed ones do not, and GPUs held by work outside the policy are not there to
    give); every placed job is active and gets between its min and max GPUs (at most
    its requested size unless ``elastic``); no on-demand job is on a spot node.
    """
    removed = set(decision.nodes_to_remove)
    usable = snapshot.free_gpus()
    capacity = {n.node_id: usable.get(n.node_id, n.num_gpus)
                for n in (*snapshot.nodes, *decision.nodes_to_add) if n.node_id not in removed}
    spot = {n.node_id for n in (*snapshot.nodes, *decision.nodes_to_add) if n.spot}
    jobs = {job.name: job for job in snapshot.jobs}
    used = dict.fromkeys(capacity, 0)
    for name, placement in decision.placements.items():
        job = jobs.get(name)
        if job is None:
            raise InvalidDecision(f"placement for unknown or finished job {name}")
        total = sum(placement.values())
        hi = job.max_gpus if elastic else min(job.requested_gpus, job.max_gpus)
        lo = min(job.min_gpus, hi)
        if total and not lo <= total <= hi:
            raise InvalidDecision(f"job {name} gets {total} GPUs, outside [{lo}, {hi}]")
        for node_id, count in placement.items():
            if node_id not in capacity or count < 0:
                raise InvalidDecision(f"job {name} placed on unknown node {node_id}")
            if job.on_demand and count and node_id in spot:
                raise InvalidDecision(f"on-demand job {name} placed on spot node {node_id}")
            used[node_id] += count
    for node_id, count in used.items():
        if count > capacity[node_id]:
            raise InvalidDecision(f"node {node_id} over-allocated: {count} > {capacity[node_id]}")
