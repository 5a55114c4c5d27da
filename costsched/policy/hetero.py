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
   to a better and no dearer configuration goes first. ``price(m)``: the fixed cluster's
   bill per hour shared out over its GPUs by each model's value to this round's jobs
   (:meth:`_TypedGrowth._value_prices`): every node is paid for whether used or not, so
   a catalog price is not what using one of its GPUs costs.
3. Placement: per model, :func:`~costsched.policy.packing.place_jobs` on that model's
   nodes, so a job keeps its nodes when its (m, k) is unchanged.

Heterogeneity-unaware (``heterogeneity_aware=False``, the Pollux baseline): every model
is scored with the job's one ``throughput`` model and the cluster's mean GPU price, so
the policy cannot tell the models apart; the placement still keeps a job on one model.
"""

from __future__ import annotations

import heapq
import math
from array import array
from bisect import bisect_left, bisect_right
from functools import partial

import numpy as np

from costsched.cost.prices import SECONDS_PER_HOUR, usd_over
from costsched.policy.cost_aware import CostAwarePolicy, Growth
from costsched.policy.goodput import GoodputChoice, GoodputTable
from costsched.policy.packing import Capacity, place_jobs
from costsched.policy.restart_factor import restart_factors
from costsched.policy.size_scan import ModelSizes, best_size, move_ratio, running_max
from costsched.policy.snapshot import (
    ClusterSnapshot,
    Decision,
    JobView,
    NodeView,
    ThroughputModel,
    num_gpus,
)

GROUP_MIN_JOBS = 16
"""Jobs sharing a throughput model on one GPU model from which their utilities are made as
arrays, every size up to their tops at once; a smaller group's: a job and size at a time."""


def uses_gpu_models(snapshot: ClusterSnapshot) -> bool:
    """Whether to decide per GPU model: the nodes have several models and the cluster is
    fixed. Jobs that describe no model are scored alike on every model (as unaware), and
    still kept on one."""
    models = {n.gpu_model for n in snapshot.nodes}
    return len(models) > 1 and snapshot.autoscaling is None


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
    """Admission and growth over (GPU model, count) configurations (one decision).

    Utilities are kept per model and job as rows over the model's allowed counts, with
    their running maxima, so that a growth step need not weigh every count of another
    model (:func:`~costsched.policy.size_scan.best_size`). State is kept in flat
    per-model maps of job names to numbers and arrays: a decision over thousands of jobs
    then makes few objects for the garbage collector to walk.
    """

    def __init__(self, policy: CostAwarePolicy, snapshot: ClusterSnapshot):
        nodes: dict[str, list[NodeView]] = {}
        for node in snapshot.nodes:
            nodes.setdefault(node.gpu_model, []).append(node)
        self.nodes = nodes
        self.per_node = {m: max(n.num_gpus for n in ns) for m, ns in nodes.items()}
        super().__init__(policy, snapshot, max(self.per_node.values()))
        self.aware = policy.heterogeneity_aware and any(j.by_gpu_model for j in snapshot.jobs)
        owner = {n.node_id: m for m, ns in nodes.items() for n in ns}
        self.held_model: dict[str, str] = {}
        self.held = {name: num_gpus(p) for name, p in snapshot.placements.items()}
        for name, placement in snapshot.placements.items():
            held = {owner.get(node_id) for node_id, c in placement.items() if c > 0}
            if len(held) == 1 and None not in held:
                self.held_model[name] = held.pop()
        self._tops: dict[str, dict[str, int]] = {m: {} for m in nodes}
        """Model -> job -> most GPUs it may get there (0: it cannot run there)."""
        runs_on: dict[str, dict[str, ThroughputModel]] = {m: {} for m in nodes}
        total = {m: sum(n.num_gpus for n in ns) for m, ns in nodes.items()}
        for job in snapshot.jobs:
            most = self.max_gpus(job)
            for m in nodes:  # no job gets more GPUs of a model than the cluster has
                self._tops[m][job.name] = self._top_on(job, m, runs_on[m], min(most, total[m]))
        self.goodputs = {m: GoodputTable(((name, throughput, self.jobs[name].efficiency)
                                          for name, throughput in runs_on[m].items()),
                                         self.per_node[m]) for m in nodes}
        self._weight_base: dict[str, tuple[float, float]] = {}  # see _weight_and_base
        self.gpu_price = self._value_prices(snapshot)
        """Model -> dollars per GPU-hour the policy weighs one GPU of it at."""
        self._sizes = {m: ModelSizes(partial(self.allowed_on, m), partial(self._usd, m))
                       for m in nodes}
        self._rows: dict[str, dict[str, array]] = {m: {} for m in nodes}
        """Model -> job -> its utilities at each allowed count, smallest first (utility_row)."""
        self._starts: dict[str, dict[str, int]] = {m: {} for m in nodes}
        self._lengths: dict[str, dict[str, int]] = {m: {} for m in nodes}
        self._ahead: dict[str, dict[str, array | None]] = {m: {} for m in nodes}
        """Model -> job -> array holding the running maximum of its row, at the same
        place (:func:`running_max`); None: the row is not all finite."""
        self._others: dict[str, dict[str, dict[int, float]]] = {m: {} for m in nodes}
        """Model -> job -> utility at counts past its row or not allowed (held before)."""
        self._by_group: set[str] = set()

    def _top_on(self, job: JobView, model: str, runs_on: dict, most: int) -> int:
        """Most GPUs of ``model`` for ``job`` (0: it cannot run there); notes in ``runs_on``
        the throughput model it runs there with."""
        option = job.by_gpu_model.get(model) if self.aware and job.by_gpu_model else None
        if self.aware and job.by_gpu_model and option is None:
            return 0
        if option is None:
            runs_on[job.name] = job.throughput
            return min(job.max_gpus, most)
        if option.max_gpus < job.min_gpus:
            return 0
        runs_on[job.name] = option.throughput
        return min(option.max_gpus, most)

    def typed_choice(self, job: JobView, model: str, count: int) -> GoodputChoice:
        return self.goodputs[model].choice(job.name, count)

    def top(self, job: JobView, model: str) -> int:
        return self._tops[model][job.name]

    def typed_utility(self, job: JobView, model: str, count: int) -> float:
        """Weighted speedup of (model, count) over the job's best one-GPU goodput on any
        model, times the restart factor unless it is what the job holds."""
        row, start, length = self.utility_row(job, model, 0)
        at = self._sizes[model].index.get(count)
        if at is not None and at < length:
            return row[start + at]
        others = self._others[model].setdefault(job.name, {})
        value = others.get(count)
        if value is None:
            value = others[count] = self._utilities_at(job, model, [count])[0]
        return value

    def utility_row(self, job: JobView, model: str, most: int) -> tuple[array, int, int]:
        """(data, start, length): ``job``'s utilities on ``model`` at its allowed counts
        from 1 are ``data[start:start + length]``, made to reach every count up to
        ``most``. Large groups of alike jobs get theirs up to their tops at once, in one
        array a group (:meth:`_group_rows`)."""
        name, rows = job.name, self._rows[model]
        row = rows.get(name)
        if row is None:
            if model not in self._by_group:
                self._by_group.add(model)
                self._group_rows(model)
            row = rows.get(name)
            if row is None:
                row = rows[name] = array("d")
                self._starts[model][name] = self._lengths[model][name] = 0
        start, length = self._starts[model][name], self._lengths[model][name]
        if most > 0:
            sizes = self._sizes[model].up_to(most)
            end = bisect_right(sizes, most)
            if length < end:
                if start or len(row) != length:  # part of a group's array: its own first
                    row = rows[name] = row[start:start + length]
                    start = self._starts[model][name] = 0
                row.extend(self._utilities_at(job, model, sizes[length:end]))
                length = self._lengths[model][name] = end
                self._ahead[model].pop(name, None)
        return row, start, length

    def _group_rows(self, model: str) -> None:
        """The rows on ``model``, up to their tops, of the jobs of each group of at least
        :data:`GROUP_MIN_JOBS` in :attr:`goodputs`, as arrays: the same arithmetic as
        :meth:`_utilities_at`, one pass a group."""
        table, index = self.goodputs[model], self._sizes[model].index
        for names in table.groups():
            tops = [self._tops[model][name] for name in names]
            if len(names) < GROUP_MIN_JOBS or max(tops) <= 0:
                continue
            jobs = [self.jobs[name] for name in names]
            sizes = self._sizes[model].up_to(max(tops))
            counts = sizes[:bisect_right(sizes, max(tops))]
            weight, base = (np.array(column)[:, None] for column in zip(
                *(self._weight_and_base(job) for job in jobs), strict=True))
            goodput = table.matrix(names[0], counts)
            plain = weight * (goodput / base)
            holds = np.array([self.held.get(job.name, 0) > 0 for job in jobs])[:, None]
            rows = plain * np.where(holds, restart_factors(
                [self.restart_terms(job) for job in jobs], goodput), 1.0)
            for at, name in enumerate(names):  # the count it holds here: no restart
                kept = index.get(self.held.get(name, 0), len(counts))
                if kept < len(counts) and self.held_model.get(name) == model:
                    rows[at, kept] = plain[at, kept]
            ends = np.array([bisect_right(counts, top) for top in tops])[:, None]
            past = np.arange(len(counts))[None, :] >= ends
            # running_max of each row, across jobs a count at a time (fast in numpy)
            ahead = np.maximum.accumulate(np.where(past, -np.inf, rows).T[::-1], axis=0)
            finite = (np.isfinite(rows) | past).all(axis=1).tolist()
            block = array("d", rows.tobytes())
            ahead_block = array("d", np.ascontiguousarray(ahead[::-1].T).tobytes())
            for at, (name, end) in enumerate(zip(names, ends[:, 0].tolist(), strict=True)):
                self._rows[model][name] = block
                self._starts[model][name], self._lengths[model][name] = at * len(counts), end
                self._ahead[model][name] = ahead_block if finite[at] else None

    def _utilities_at(self, job: JobView, model: str, counts: list[int]) -> list[float]:
        weight, base = self._weight_and_base(job)
        goodputs = self.goodputs[model].goodputs(job.name, counts)
        held = self.held.get(job.name, 0)
        if held == 0:
            return [weight * (g / base) for g in goodputs]
        kept = held if self.held_model.get(job.name) == model else None
        return [weight * (g / base) if k == kept else
                weight * (g / base) * self.restart_factor(job, g)
                for k, g in zip(counts, goodputs, strict=True)]

    def _value_prices(self, snapshot: ClusterSnapshot) -> dict[str, float]:
        """Per-GPU price of each model as the policy weighs it: the fixed cluster's bill per
        hour shared out over its GPUs in proportion to each model's value v(m) to the jobs
        of this round, the mean over them of their one-GPU goodput on m over their best on
        any model (aware; unaware, every v(m) = 1). Every node is paid for whether used or
        not, so a catalog price is not what using a GPU costs: a GPU of a model costs the
        goodput other jobs could have had on it. A job then wins a model where its edge
        over its other models beats the other jobs' (its comparative advantage)."""
        value = dict.fromkeys(self.nodes, 1.0)
        if self.aware and snapshot.jobs:  # a job that cannot run on a model counts 0 there
            value = dict.fromkeys(self.nodes, 0.0)
            for job in snapshot.jobs:
                _, base = self._weight_and_base(job)
                for m, table in self.goodputs.items():
                    if job.name in table:
                        value[m] += self._one_gpu(table, job) / base / len(snapshot.jobs)
        bill = sum(n.usd_per_hour for n in snapshot.nodes)
        units = sum(value[m] * sum(n.num_gpus for n in ns) for m, ns in self.nodes.items())
        if not units > 0:
            return dict.fromkeys(self.nodes, self.gpu_usd_per_hour)
        return {m: bill * value[m] / units for m in self.nodes}

    @staticmethod
    def _one_gpu(table: GoodputTable, job: JobView, least: int = 1) -> float:
        """Goodput on one GPU (at the job's least size, over ``least``, if one is unusable)."""
        return table.goodput(job.name, 1) or table.goodput(job.name, job.min_gpus) / least

    def one_gpu_rate(self, job: JobView) -> float:
        return max((self._one_gpu(table, job, job.min_gpus) for table in self.goodputs.values()
                    if job.name in table), default=0.0)

    def _weight_and_base(self, job: JobView) -> tuple[float, float]:
        """(:meth:`weight`, the job's best one-GPU goodput on any model, at least 1e-12)."""
        hit = self._weight_base.get(job.name)
        if hit is None:
            ones = [self._one_gpu(table, job) for table in self.goodputs.values()
                    if job.name in table]
            hit = self._weight_base[job.name] = (self.weight(job),
                                                 max(max(ones, default=0.0), 1e-12))
        return hit

    def cost(self, model: str, count: int) -> float:
        """Dollars per hour of ``count`` GPUs of ``model`` at the policy's price
        (:meth:`_value_prices`); an allowed count's are those :class:`ModelSizes` keeps."""
        sizes = self._sizes[model]
        at = sizes.index.get(count)
        return sizes.costs[at] if at is not None else self._usd(model, count)

    def _usd(self, model: str, count: int) -> float:
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
        held = self.held.get(job.name, 0)
        held_here = held if self.held_model.get(job.name) == m else 0
        if m != model:
            sizes = self._sizes[m].up_to(top)
            chosen = set(sizes[bisect_left(sizes, job.min_gpus):bisect_right(sizes, top)])
            return chosen | ({held_here} if 0 < held_here <= top else set())
        per_node = self.per_node[m]
        boundary = -(-(count + 1) // per_node) * per_node
        sizes = self._sizes[m].up_to(count + per_node)
        step = sizes[bisect_right(sizes, count)]
        return {t for t in (step, boundary, boundary + per_node, 2 * count, held_here)
                if count < t <= top and (t == held_here or self.allowed_on(m, t))}

    def typed_move(self, job: JobView, model: str, count: int,
                   capacity: dict[str, Capacity]) -> tuple[float, str, int] | None:
        """The best move from (``model``, ``count``): the first, models in order and each
        model's :meth:`targets` in order, of those whose gain per added dollar is highest."""
        now_u, now_c = self.typed_utility(job, model, count), self.cost(model, count)
        tops = {m: min(self.top(job, m), capacity[m].room(job) + (count if m == model else 0))
                for m in self.nodes}
        if math.isfinite(now_u) and math.isfinite(now_c):
            best = None
            for m in self.nodes:
                if m == model:
                    found = self._move_in_order(job, model, count, (m,), tops, now_u, now_c,
                                                strict=True)
                else:
                    found = self._best_size(job, model, count, m, tops, now_u, now_c)
                if found is False:  # a utility that is not finite: no shortcut is safe
                    break
                if found is not None and (best is None or found[0] > best[0]):
                    best = found
            else:
                return best
        return self._move_in_order(job, model, count, self.nodes, tops, now_u, now_c)

    def _move_in_order(self, job: JobView, model: str, count: int, models, tops: dict,
                       now_u: float, now_c: float, strict: bool = False):
        """The best move to ``models``, weighing every target in order; with ``strict``,
        False when a utility is not finite."""
        best = None
        for m in models:
            for target in self.targets(job, model, count, m, tops[m]):
                utility = self.typed_utility(job, m, target)
                if strict and not math.isfinite(utility):
                    return False
                gain = utility - now_u
                if gain <= 0:
                    continue
                extra = self.cost(m, target) - now_c
                ratio = move_ratio(gain, extra)
                if best is None or ratio > best[0]:
                    best = (ratio, m, target)
        return best

    def _best_size(self, job: JobView, model: str, count: int, m: str, tops: dict,
                   now_u: float, now_c: float):
        """:meth:`_move_in_order` to another model ``m`` by :func:`best_size`, and the count
        the job holds there when the scan does not see it; when several targets reach
        the best ratio, which comes first depends on the order of :meth:`targets`:
        weighed in it. False when a utility is not finite, or the price is (the scan needs
        dollars that grow with the count)."""
        if not 0 <= self.gpu_price[m] < math.inf:
            return False
        top = tops[m]
        row, start, _ = self.utility_row(job, m, top)
        ahead = self._ahead[m].get(job.name, False)
        if ahead is False:  # a row of its own (start 0)
            ahead = self._ahead[m][job.name] = running_max(row)
        if ahead is None:
            return False
        sizes = self._sizes[m]
        lo, hi = bisect_left(sizes.sizes, job.min_gpus), bisect_right(sizes.sizes, top)
        best, best_at, ties = best_size(row, ahead, start, sizes, lo, hi, now_u, now_c)
        held = self.held.get(job.name, 0)
        if self.held_model.get(job.name) == m and 0 < held <= top and not (
                held >= job.min_gpus and held in sizes.index):
            utility = self.typed_utility(job, m, held)
            if not math.isfinite(utility):
                return False
            gain, extra = utility - now_u, self.cost(m, held) - now_c
            ratio = move_ratio(gain, extra)
            if gain > 0 and (best is None or ratio >= best):
                ties = ties + 1 if ratio == best else 0
                best, best_at = ratio, held
        if ties:
            return self._move_in_order(job, model, count, (m,), tops, now_u, now_c)
        return None if best is None else (best, m, best_at)

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
