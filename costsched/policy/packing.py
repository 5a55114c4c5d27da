"""Turning GPU counts per job into GPUs per node: keep what runs, pack the rest tight.

Replicas on fewer nodes synchronise faster, and every change of placement
costs the job a restart, so: a job whose count is unchanged keeps its nodes;
the others are packed largest first, each into the fullest node that holds it
whole, spilling over the emptiest nodes only when none does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from costsched.policy.snapshot import NodeView, Placement


def packed_shape(num_gpus: int, gpus_per_node: int) -> tuple[int, ...]:
    """GPUs per node of ``num_gpus`` packed onto as few ``gpus_per_node`` nodes as possible."""
    full, rest = divmod(num_gpus, gpus_per_node)
    return (gpus_per_node,) * full + ((rest,) if rest else ())


class _FreeGpus:
    """Free GPUs per node, bucketed by count so best fit is O(GPUs per node)."""

    def __init__(self, nodes: Iterable[NodeView], usable: Mapping[str, int] | None = None):
        self.free: dict[str, int] = {}
        self.max_gpus = 0
        for node in nodes:
            count = node.num_gpus if usable is None else usable.get(node.node_id, node.num_gpus)
            self.free[node.node_id] = count
            self.max_gpus = max(self.max_gpus, count)
        # dicts as ordered sets: deterministic order, O(1) removal.
        self.buckets: list[dict[str, None]] = [{} for _ in range(self.max_gpus + 1)]
        for node_id, count in self.free.items():
            self.buckets[count][node_id] = None
        self.total = sum(self.free.values())

    def take(self, node_id: str, count: int) -> None:
        have = self.free[node_id]
        del self.buckets[have][node_id]
        self.free[node_id] = have - count
        self.buckets[have - count][node_id] = None
        self.total -= count

    def best_fit(self, count: int) -> str | None:
        for have in range(count, self.max_gpus + 1):
            if self.buckets[have]:
                return next(iter(self.buckets[have]))
        return None

    def emptiest(self) -> str | None:
        for have in range(self.max_gpus, 0, -1):
            if self.buckets[have]:
                return next(iter(self.buckets[have]))
        return None


def _pack(free: _FreeGpus, count: int) -> dict[str, int]:
    placement: dict[str, int] = {}
    while count > 0:
        node_id = free.best_fit(count) if count <= free.max_gpus else None
        node_id = node_id or free.emptiest()
        take = min(count, free.free[node_id])
        free.take(node_id, take)
        placement[node_id] = placement.get(node_id, 0) + take
        count -= take
    return placement


def place_jobs(
    targets: Sequence[tuple[str, int]],
    nodes: Sequence[NodeView],
    current: Mapping[str, Placement],
    *,
    usable: Mapping[str, int] | None = None,
) -> dict[str, dict[str, int]]:
    """Placements for ``targets`` (job, GPUs) on ``nodes``; jobs that do not fit get none.

    ``targets`` come in priority order: when GPUs run out, later jobs lose. ``usable``:
    GPUs per node the jobs may use (:meth:`ClusterSnapshot.free_gpus`); a node it does
    not name is wholly free.
    """
    free = _FreeGpus(nodes, usable)
    out: dict[str, dict[str, int]] = {}
    moving: list[tuple[int, int, str]] = []
    for order, (job, count) in enumerate(targets):
        if count <= 0:
            continue
        cur = current.get(job) or {}
        if sum(cur.values()) == count and all(
            free.free.get(n, -1) >= c for n, c in cur.items()
        ):
            for node_id, c in cur.items():
                free.take(node_id, c)
            out[job] = dict(cur)
        else:
            moving.append((-count, order, job))
    for neg_count, _, job in sorted(moving):
        if -neg_count <= free.total:
            out[job] = _pack(free, -neg_count)
    return out
