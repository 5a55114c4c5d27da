"""``cost-aware`` on a cluster of several GPU models: one (model, count) per job (Sia-style).

A job never mixes GPU models in one allocation. Each round, as in the one-model case
(:mod:`~costsched.policy.cost_aware`), but over configurations (model m, count k):

1. Admission, in the same order: each job gets its ``min_gpus`` on the model it holds
   now when that has room (a move is a restart), else on the model with the most
   utility per dollar at that size (ties: the model with the most free GPUs).
2. Growth. A move takes a job from (m, k) to a larger size on m, or to any allowed size
   on another model m'; moves go, best first, by

       (U(m', k') - U(m, k)) / (price(m') x k' - price(m) x k)

   with U the weighted speedup (goodput on m' at k' over the job's best one-GPU goodput
   on any model) times Pollux's restart factor unless (m', k') is what it holds. A move
   to a better and no dearer configuration goes first. ``price(m)``: the mean price of
   one GPU of model m in the snapshot's nodes.
3. Placement: per model, :func:`~costsched.policy.packing.place_jobs` on that model's
   nodes, so a job keeps its nodes when its (m, k) is unchanged.

Heterogeneity-unaware (``heterogeneity_aware=False``, the Pollux baseline): every model
is scored with the job's one ``throughput`` model and the cluster's mean GPU price, so
the policy cannot tell the models apart; the placement still keeps a job on one model.
"""

from __future__ import annotations

import dataclasses
import heapq
import math

from costsched.cost.prices import SECONDS_PER_HOUR, usd_over
from costsched.policy.cost_aware import CostAwarePolicy, Growth
from costsched.policy.goodput import GoodputChoice, best_goodput
from costsched.policy.packing import Capacity, place_jobs
from costsched.policy.snapshot import ClusterSnapshot, Decision, JobView, NodeView, num_gpus

FREE_MOVE = 1e9
"""Ratio of a move to a better configuration that costs no more per hour."""


def uses_gpu_models(policy: CostAwarePolicy, snapshot: ClusterSnapshot) -> bool:
    """Whether to decide per GPU model: the nodes have several models, the cluster is fixed,
    and the jobs describe each model (or the policy ignores the models on purpose)."""
    models = {n.gpu_model for n in snapshot.nodes}
    return (len(models) > 1 and snapshot.autoscaling is None
            and (not policy.heterogeneity_aware or any(j.by_gpu_model for j in snapshot.jobs)))


def decide_by_gpu_model(policy: CostAwarePolicy, snapshot: ClusterSnapshot) -> Decision:
    usable = snapshot.free_gpus()
    grower = _TypedGrowth(policy, snapshot)
    alloc = grower.run({m: Capacity(nodes, usable) for m, nodes in grower.nodes.items()})
    placements: dict[str, dict[str, int]] = {}
    batch_sizes: dict[str, int] = {}
    for model, nodes in grower.nodes.items():
        ids = {n.node_id for n in nodes}
        targets = [(j.name, alloc[j.name][1]) for j in grower.order
                   if j.name in alloc and alloc[j.name][0] == model]
        current = {name: p for name, p in snapshot.placements.items() if set(p) <= ids}
        placed = place_jobs(targets, nodes, current, usable=usable,
                            on_demand={j.name for j in grower.order if j.on_demand})
        for name, placement in placed.items():
            placements[name] = placement
            job = grower.jobs[name]
            batch_sizes[name] = grower.typed_choice(job, model, num_gpus(placement)).batch_size
    return Decision(placements=placements, batch_sizes=batch_sizes)


class _TypedGrowth(Growth):
    """Admission and growth over (GPU model, count) configurations (one decision)."""

    def __init__(self, policy: CostAwarePolicy, snapshot: ClusterSnapshot):
        nodes: dict[str, list[NodeView]] = {}
        for node in snapshot.nodes:
            nodes.setdefault(node.gpu_model, []).append(node)
        self.nodes = nodes
        self.per_node = {m: max(n.num_gpus for n in ns) for m, ns in nodes.items()}
        super().__init__(policy, snapshot, max(self.per_node.values()))
        self.aware = policy.heterogeneity_aware
        self.gpu_price = {m: sum(n.usd_per_hour for n in ns) / max(sum(n.num_gpus for n in ns), 1)
                          for m, ns in nodes.items()}
        if not self.aware:
            self.gpu_price = dict.fromkeys(nodes, self.gpu_usd_per_hour)
        owner = {n.node_id: m for m, ns in nodes.items() for n in ns}
        self.held_model: dict[str, str] = {}
        for name, placement in snapshot.placements.items():
            held = {owner.get(node_id) for node_id, c in placement.items() if c > 0}
            if len(held) == 1 and None not in held:
                self.held_model[name] = held.pop()
        self._views: dict[tuple[str, str], JobView | None] = {}
        self._typed: dict[tuple[str, str, int], GoodputChoice] = {}
        self._base: dict[str, float] = {}

    def view(self, job: JobView, model: str) -> JobView | None:
        """``job`` as it runs on ``model`` (None: it cannot run there)."""
        key = (job.name, model)
        if key not in self._views:
            option = job.by_gpu_model.get(model) if self.aware and job.by_gpu_model else None
            if self.aware and job.by_gpu_model and option is None:
                self._views[key] = None
            elif option is None:
                self._views[key] = job
            elif option.max_gpus < job.min_gpus:
                self._views[key] = None
            else:
                self._views[key] = dataclasses.replace(
                    job, throughput=option.throughput, max_gpus=option.max_gpus)
        return self._views[key]

    def typed_choice(self, job: JobView, model: str, count: int) -> GoodputChoice:
        key = (job.name, model, count)
        if key not in self._typed:
            self._typed[key] = best_goodput(self.view(job, model), count, self.per_node[model])
        return self._typed[key]

    def top(self, job: JobView, model: str) -> int:
        view = self.view(job, model)
        return 0 if view is None else min(view.max_gpus, self.max_gpus(job))

    def typed_speedup(self, job: JobView, model: str, count: int) -> float:
        if job.name not in self._base:
            ones = [self.typed_choice(job, m, 1).goodput or
                    self.typed_choice(job, m, job.min_gpus).goodput
                    for m in self.nodes if self.view(job, m) is not None]
            self._base[job.name] = max(ones, default=0.0)
        return self.typed_choice(job, model, count).goodput / max(self._base[job.name], 1e-12)

    def typed_utility(self, job: JobView, model: str, count: int) -> float:
        value = self.weight(job) * self.typed_speedup(job, model, count)
        held = num_gpus(self.snapshot.placements.get(job.name))
        if held == 0 or (self.held_model.get(job.name) == model and held == count):
            return value
        return value * self.restart_factor(job)

    def cost(self, model: str, count: int) -> float:
        """Dollars per hour of ``count`` GPUs of ``model`` (the policy's mean price)."""
        return usd_over(self.gpu_price[model], count * SECONDS_PER_HOUR)

    def allowed_on(self, model: str, count: int) -> bool:
        per_node = self.per_node[model]
        if not self.policy.node_shapes or count % per_node == 0:
            return True
        return count < per_node and count & (count - 1) == 0

    def admit(self, job: JobView, capacity: dict[str, Capacity]) -> str | None:
        """The model ``job`` gets its minimum on: the one it holds when that has room, else
        the best utility per dollar at that size."""
        fits = [m for m in self.nodes
                if job.min_gpus <= min(self.top(job, m), capacity[m].room(job))]
        held = self.held_model.get(job.name)
        if held in fits:
            return held
        if not fits:
            return None
        return max(fits, key=lambda m: (
            self.typed_utility(job, m, job.min_gpus) / max(self.cost(m, job.min_gpus), 1e-12),
            capacity[m].room(job)))

    def targets(self, job: JobView, model: str, count: int, m: str, top: int) -> set[int]:
        held = num_gpus(self.snapshot.placements.get(job.name))
        held_here = held if self.held_model.get(job.name) == m else 0
        if m != model:
            sizes = {k for k in range(job.min_gpus, top + 1) if self.allowed_on(m, k)}
            return sizes | ({held_here} if 0 < held_here <= top else set())
        per_node = self.per_node[m]
        boundary = -(-(count + 1) // per_node) * per_node
        step = count + 1
        while not self.allowed_on(m, step):
            step += 1
        return {t for t in (step, boundary, boundary + per_node, 2 * count, held_here)
                if count < t <= top and (t == held_here or self.allowed_on(m, t))}

    def typed_move(self, job: JobView, model: str, count: int,
                   capacity: dict[str, Capacity]) -> tuple[float, str, int] | None:
        now_u, now_c = self.typed_utility(job, model, count), self.cost(model, count)
        best = None
        for m in self.nodes:
            room = capacity[m].room(job) + (count if m == model else 0)
            top = min(self.top(job, m), room)
            for target in self.targets(job, model, count, m, top):
                gain = self.typed_utility(job, m, target) - now_u
                if gain <= 0:
                    continue
                extra = self.cost(m, target) - now_c
                ratio = gain / extra if extra > 0 else FREE_MOVE * gain
                if best is None or ratio > best[0]:
                    best = (ratio, m, target)
        return best

    def run(self, capacity: dict[str, Capacity]) -> dict[str, tuple[str, int]]:
        """(model, GPUs) per admitted job out of ``capacity`` (used up as it goes)."""
        alloc: dict[str, tuple[str, int]] = {}
        for job in self.order:
            model = self.admit(job, capacity)
            if model is not None:
                alloc[job.name] = (model, job.min_gpus)
                capacity[model].take(job, job.min_gpus)
        heap: list = []
        for rank, job in enumerate(self.order):
            if job.name in alloc:
                self._push_typed(heap, rank, job, alloc[job.name], capacity)
        while heap and any(c.total > 0 for c in capacity.values()):
            neg_ratio, rank, model, target = heapq.heappop(heap)
            job = self.order[rank]
            cur_model, cur = alloc[job.name]
            room = capacity[model].room(job) + (cur if model == cur_model else 0)
            if target > min(self.top(job, model), room):  # no longer fits: find what does
                self._push_typed(heap, rank, job, alloc[job.name], capacity)
                continue
            if -neg_ratio <= 0 or math.isnan(neg_ratio):
                break
            capacity[cur_model].take(job, -cur)
            capacity[model].take(job, target)
            alloc[job.name] = (model, target)
            self._push_typed(heap, rank, job, alloc[job.name], capacity)
        return alloc

    def _push_typed(self, heap: list, rank: int, job: JobView, config: tuple[str, int],
                    capacity: dict[str, Capacity]) -> None:
        move = self.typed_move(job, config[0], config[1], capacity)
        if move is not None:
            heapq.heappush(heap, (-move[0], rank, move[1], move[2]))
