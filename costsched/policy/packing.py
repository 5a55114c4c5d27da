"""Turning GPU counts per job into GPUs per node: keep what runs, pack the rest tight.

Replicas on fewer nodes synchronise faster, and every change of placement
costs the job a restart, so: a job whose count is unchanged keeps its nodes;
the others are packed largest first, each into the fullest node that holds it
whole, spilling over the emptiest nodes only when none does. Last, a job kept
across several nodes moves onto fewer when the GPUs left free allow (a job split
when the cluster was full would otherwise stay split as long as its count held).

A job marked ``on_demand`` goes on on-demand nodes only. The others may use any
node and try spot nodes first, so the on-demand GPUs stay for the jobs that need
them. Counts a policy hands out fit when the on-demand jobs' GPUs fit on the
on-demand nodes and all GPUs fit on all nodes (:class:`Capacity`); :func:`place_jobs`
places any such set of counts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

from costsched.policy.snapshot import ClusterSnapshot, JobView, NodeView, Placement

SPOT_FIRST = (True, False)
"""Markets (is spot?) a job without the on-demand mark may use, in order of preference."""
ON_DEMAND_ONLY = (False,)
"""Markets an on-demand job may use."""


def packed_shape(num_gpus: int, gpus_per_node: int) -> tuple[int, ...]:
    """GPUs per node of ``num_gpus`` packed onto as few ``gpus_per_node`` nodes as possible."""
    full, rest = divmod(num_gpus, gpus_per_node)
    return (gpus_per_node,) * full + ((rest,) if rest else ())


class Capacity:
    """GPUs a decision may still hand out, as two nested pools: on all nodes, and on
    on-demand nodes. An on-demand job draws on both, any other job on the first."""

    def __init__(self, nodes: Iterable[NodeView], usable: Mapping[str, int] | None = None):
        self.total = self.on_demand = 0
        for node in nodes:
            count = node.num_gpus if usable is None else usable.get(node.node_id, node.num_gpus)
            self.total += count
            self.on_demand += 0 if node.spot else count

    @classmethod
    def of(cls, snapshot: ClusterSnapshot) -> Capacity:
        """The free GPUs of ``snapshot`` (:meth:`ClusterSnapshot.free_gpus`)."""
        return cls(snapshot.nodes, snapshot.free_gpus())

    def room(self, job: JobView) -> int:
        """Most GPUs ``job`` could get now."""
        return min(self.total, self.on_demand) if job.on_demand else self.total

    def take(self, job: JobView, count: int) -> None:
        self.total -= count
        if job.on_demand:
            self.on_demand -= count


class _FreeGpus:
    """Free GPUs per node, bucketed by market and count so best fit is O(GPUs per node)."""

    def __init__(self, nodes: Iterable[NodeView], usable: Mapping[str, int] | None = None):
        self.free: dict[str, int] = {}
        self.spot: dict[str, bool] = {}
        self.max_gpus = 0
        for node in nodes:
            count = node.num_gpus if usable is None else usable.get(node.node_id, node.num_gpus)
            self.free[node.node_id], self.spot[node.node_id] = count, node.spot
            self.max_gpus = max(self.max_gpus, count)
        # dicts as ordered sets: deterministic order, O(1) removal.
        self.buckets: dict[bool, list[dict[str, None]]] = {
            spot: [{} for _ in range(self.max_gpus + 1)] for spot in SPOT_FIRST}
        self.totals = dict.fromkeys(SPOT_FIRST, 0)
        for node_id, count in self.free.items():
            self.buckets[self.spot[node_id]][count][node_id] = None
            self.totals[self.spot[node_id]] += count

    def total(self, markets: Sequence[bool]) -> int:
        return sum(self.totals[spot] for spot in markets)

    def take(self, node_id: str, count: int) -> None:
        have, spot = self.free[node_id], self.spot[node_id]
        del self.buckets[spot][have][node_id]
        self.free[node_id] = have - count
        self.buckets[spot][have - count][node_id] = None
        self.totals[spot] -= count

    def best_fit(self, count: int, markets: Sequence[bool]) -> str | None:
        for spot in markets:
            for have in range(count, self.max_gpus + 1):
                if self.buckets[spot][have]:
                    return next(iter(self.buckets[spot][have]))
        return None

    def emptiest(self, markets: Sequence[bool]) -> str | None:
        for spot in markets:
            for have in range(self.max_gpus, 0, -1):
                if self.buckets[spot][have]:
                    return next(iter(self.buckets[spot][have]))
        return None


def _pack(free: _FreeGpus, count: int, markets: Sequence[bool]) -> dict[str, int]:
    placement: dict[str, int] = {}
    while count > 0:
        node_id = free.best_fit(count, markets) if count <= free.max_gpus else None
        node_id = node_id or free.emptiest(markets)
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
    on_demand: Collection[str] = (),
) -> dict[str, dict[str, int]]:
    """Placements for ``targets`` (job, GPUs) on ``nodes``; jobs that do not fit get none.

    ``targets`` come in priority order: when GPUs run out, later jobs lose. ``usable``:
    GPUs per node the jobs may use (:meth:`ClusterSnapshot.free_gpus`); a node it does
    not name is wholly free. Jobs named in ``on_demand`` go on on-demand nodes only; a
    job of the others keeps on-demand GPUs only while the on-demand jobs to place
    have room left.
    """
    free = _FreeGpus(nodes, usable)
    out: dict[str, dict[str, int]] = {}
    moving: list[tuple[bool, int, int, str]] = []
    needed_on_demand = 0  # GPUs of on-demand jobs that are not staying put
    ranked = sorted(enumerate(targets), key=lambda item: item[1][0] not in on_demand)
    for order, (job, count) in ranked:
        if count <= 0:
            continue
        strict = job in on_demand
        cur = current.get(job) or {}
        stays = sum(cur.values()) == count and all(
            free.free.get(n, -1) >= c and not (strict and free.spot[n]) for n, c in cur.items())
        if stays and not strict:
            held_on_demand = sum(c for n, c in cur.items() if not free.spot[n])
            stays = free.total(ON_DEMAND_ONLY) - held_on_demand >= needed_on_demand
        if stays:
            for node_id, c in cur.items():
                free.take(node_id, c)
            out[job] = dict(cur)
        else:
            needed_on_demand += count if strict else 0
            moving.append((not strict, -count, order, job))
    for flexible, neg_count, _, job in sorted(moving):
        markets = SPOT_FIRST if flexible else ON_DEMAND_ONLY
        if -neg_count <= free.total(markets):
            out[job] = _pack(free, -neg_count, markets)
    for job, placement in list(out.items()):
        if len(placement) > 1 and placement == current.get(job):
            out[job] = _consolidated(free, placement)
    return out


def _consolidated(free: _FreeGpus, placement: dict[str, int]) -> dict[str, int]:
    """``placement`` on fewer nodes of its own markets if the free GPUs allow, and on no
    more on-demand GPUs than before (a move must not trade spot GPUs for dearer ones);
    else as is. (A negative take gives GPUs back: its own first, the packed ones on undo.)"""
    for node_id, count in placement.items():
        free.take(node_id, -count)
    markets = tuple(spot for spot in SPOT_FIRST if any(free.spot[n] == spot for n in placement))
    packed = _pack(free, sum(placement.values()), markets)

    def on_demand(p: dict[str, int]) -> int:
        return sum(c for n, c in p.items() if not free.spot[n])

    if len(packed) < len(placement) and on_demand(packed) <= on_demand(placement):
        return packed
    for node_id, count in packed.items():
        free.take(node_id, -count)
    for node_id, count in placement.items():
        free.take(node_id, count)
    return placement
