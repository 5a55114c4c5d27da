"""One way to drive a policy, for the simulator and the live scheduler alike.

Both build a :class:`~costsched.policy.snapshot.ClusterSnapshot` (the simulator
sizes its trace jobs' views by :func:`gpu_range`; a live job's view carries the
worker range its user declared), call :func:`drive`, and execute the checked
decision it returns. A driver that cannot execute part of a decision (the live scheduler
does not resize a fixed-batch job's batch, nor start nodes itself) says so, and
:func:`drive` strips that part and returns one line per rejected item for the
log, so nothing is dropped silently.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from costsched.policy.snapshot import ClusterSnapshot, Decision
from costsched.policy.validate import check_decision


@dataclass(frozen=True, kw_only=True)
class Executes:
    """Which optional parts of a decision the driver carries out."""

    batch_sizes: bool | frozenset[str] = True
    """The driver runs each placed job at the batch size the policy chose (True), or
    only the jobs named (those that opted in); the others keep the batch they asked for."""
    node_changes: bool = True
    """The driver adds and removes the nodes the policy names."""


@dataclass(frozen=True, kw_only=True)
class Driven:
    """A checked decision, cut to what the driver executes, and what was cut."""

    decision: Decision
    """The decision to execute."""
    rejected: tuple[str, ...] = ()
    """One human-readable line per part of the policy's decision left unexecuted."""


def gpu_range(*, elastic: bool, elastic_range: tuple[int, int],
              requested_gpus: int) -> tuple[int, int]:
    """(min_gpus, max_gpus) of a simulated job's view: its elastic range under a policy
    that sizes jobs itself, else exactly the GPUs its trace asked for."""
    return elastic_range if elastic else (requested_gpus, requested_gpus)


def drive(policy, snapshot: ClusterSnapshot, *, elastic: bool,
          executes: Executes = Executes()) -> Driven:
    """Ask ``policy`` for a decision on ``snapshot``, check it, and cut it to ``executes``.

    Raises :class:`~costsched.policy.validate.InvalidDecision` when the decision
    over-allocates a node or sizes a job outside its range.
    """
    decision = policy.decide(snapshot)
    check_decision(snapshot, decision, elastic=elastic)
    rejected: list[str] = []
    if executes.batch_sizes is not True:
        chosen = executes.batch_sizes or frozenset()
        requested = {job.name: job.requested_batch_size for job in snapshot.jobs}
        rejected += [f"job {name}: batch size {size} not applied (the job's batch "
                     f"{requested[name]} is fixed; `training.adaptive_batch: true` lets "
                     "the policy choose it)"
                     for name, size in sorted(decision.batch_sizes.items())
                     if name not in chosen and decision.placements.get(name)
                     and size != requested.get(name)]
        decision = dataclasses.replace(
            decision, batch_sizes={name: size if name in chosen else requested[name]
                                   for name, size in decision.batch_sizes.items()
                                   if name in requested})
    if not executes.node_changes and (decision.nodes_to_add or decision.nodes_to_remove):
        rejected += [f"node {n.node_id} ({n.gpu_model}) not added: this driver does not add "
                     "nodes" for n in decision.nodes_to_add]
        rejected += [f"node {node_id} not removed: this driver does not remove nodes"
                     for node_id in decision.nodes_to_remove]
        added = {n.node_id for n in decision.nodes_to_add}
        dropped = [name for name, p in decision.placements.items() if set(p) & added]
        rejected += [f"job {name}: not placed, its placement needs a node that was not added"
                     for name in dropped]
        decision = dataclasses.replace(
            decision, nodes_to_add=(), nodes_to_remove=(),
            placements={n: p for n, p in decision.placements.items() if n not in dropped})
    return Driven(decision=decision, rejected=tuple(rejected))


def is_elastic(policy) -> bool:
    """Whether ``policy`` sizes jobs itself (within their range) rather than as asked."""
    from costsched.policy.registry import ELASTIC

    return getattr(policy, "name", None) in ELASTIC
