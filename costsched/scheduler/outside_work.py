"""Slots each node's other work holds, as the live policy is told them (pure).

Ray reports each node's free slots; the policy takes the scheduler's own jobs' slots back
out of the rest (:meth:`~costsched.policy.snapshot.ClusterSnapshot.free_gpus`) and plans
around what is left: work it does not control (another user's actors, a sweep). But an
attempt's workers take their slots some time after it starts, and Ray reports those slots
free until then: the other work on that node would look smaller by as many, and the policy
would start or move jobs onto slots it holds. So while a job on a node has not reported a
step of its current attempt (its first report comes after its first
``checkpoint.interval_steps`` steps or epoch, after its restore), that node's other work is
taken as at least what it was when last seen with every job there stepping. This errs
safe: a job that has not reported only makes its nodes look fuller for a while. What was
last seen is kept in the scheduler's state file, so a restarted scheduler holds it too (a
node whose other work ended meanwhile looks full until the jobs on it step).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

from costsched.policy.snapshot import NodeView, gpus_placed, outside_gpus
from costsched.scheduler.interfaces import JobProgress
from costsched.scheduler.progress import stepped_this_attempt
from costsched.sqlite_file import SqliteFile

SCHEMA = """
CREATE TABLE IF NOT EXISTS outside_work (
    node_id TEXT PRIMARY KEY,
    slots INTEGER NOT NULL
);
"""


class OutsideWork:
    """Which jobs have stepped in their current attempt, and each node's other work.

    A round's polls count from the round's snapshot (:meth:`nodes`) on: a job not polled
    this round (its poll failed, or it is not running) counts as not stepping. With
    ``path`` (the scheduler's state file) what was last seen outlives the scheduler."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self._polled: set[str] = set()
        self._stepping: frozenset[str] = frozenset()
        self._file = (None if path is None else
                      SqliteFile(path, SCHEMA, "costsched scheduler state file"))
        self._seen: dict[str, int] = {}
        """Node id -> slots other work held there when last seen with every job stepping."""
        if self._file is not None:
            with self._file.transaction() as db:
                self._seen = {row["node_id"]: row["slots"]
                              for row in db.execute("SELECT node_id, slots FROM outside_work")}

    def polled(self, job_id: str, progress: JobProgress, started_at: float | None) -> None:
        """Note a poll of a running job whose current attempt began at ``started_at``."""
        if stepped_this_attempt(progress, started_at):
            self._polled.add(job_id)

    def stepping(self) -> frozenset[str]:
        """Ids of the jobs whose current attempt had reported a step by this round's polls."""
        return self._stepping

    def nodes(self, nodes: tuple[NodeView, ...],
              placements: Mapping[str, Mapping[str, int]]) -> tuple[NodeView, ...]:
        """``nodes`` with ``reserved_gpus`` raised, on a node holding a job that has not
        stepped yet, so that the other work there counts at least what it last did. Ends
        the round's polls."""
        self._stepping, self._polled = frozenset(self._polled), set()
        placed = gpus_placed(placements)
        unsettled = {node_id for job_id, placement in placements.items()
                     if job_id not in self._stepping
                     for node_id, count in placement.items() if count}
        views, seen = [], {}
        for node in nodes:
            if node.reserved_gpus is not None:
                outside = outside_gpus(node, placed)
                if node.node_id not in unsettled:
                    if self._seen.get(node.node_id) != outside:
                        seen[node.node_id] = outside
                    self._seen[node.node_id] = outside
                elif outside < self._seen.get(node.node_id, 0):
                    node = dataclasses.replace(node, reserved_gpus=min(
                        placed.get(node.node_id, 0) + self._seen[node.node_id], node.num_gpus))
            views.append(node)
        if seen and self._file is not None:
            with self._file.transaction() as db:
                db.executemany("INSERT OR REPLACE INTO outside_work VALUES (?, ?)",
                               sorted(seen.items()))
        return tuple(views)
