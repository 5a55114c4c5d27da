"""``cost-aware``: elastic allocations that maximise statistical progress per dollar.

Each round:

1. Admission. In order of priority, then least attained service, then
   arrival, each job gets its ``min_gpus`` while GPUs last (short jobs first
   keeps mean JCT low, as in LAS). Against preemption ping-pong, a job within
   ``min_run_s`` of the start of its run goes before its priority's others, and a
   running job's service counts ``min_run_s`` x its GPUs less
   (:mod:`~costsched.policy.hysteresis`).
2. Growth. The remaining GPUs go one move at a time to the job whose utility
   rises most per dollar. A job's utility at k GPUs is its speedup over one
   GPU (goodput with the best batch size and gradient accumulation,
   :mod:`~costsched.policy.goodput`), weighted by 2**priority x
   (tau / (tau + R)) ** service_power, R the GPU-seconds it still needs on one GPU when
   it says how much work it has left (``remaining_work``: nearest its end first, as
   SRPT), else its attained service (as LAS), and, unless k is what it
   holds now, multiplied by Pollux's restart factor
   max(H - restarts x restart_s, 0) / (H + restart_s), H = max(restart_horizon_s,
   age), or the time its work left takes at k when it says that work and that is less
   (:mod:`~costsched.policy.restart_factor`): a resize must pay back its restart, and each
   restart makes the next dearer (restart_s is the job's own measured restart cost
   when it has one, else the snapshot's). Sizes are 1, 2, 4, ... GPUs within a node
   or whole nodes (``node_shapes``), which packing places without splitting a job.
3. Autoscaling (optional). Growth is first run on ``max_nodes``; the cluster keeps
   all admitted minimums and each growth move whose JCT saving is worth what it adds
   to the bill at ``usd_per_job_hour`` (:func:`usd_per_job_hour_saved`), rounded up to
   nodes; a driver may smooth that count over rounds and pass the count to act on
   (:mod:`~costsched.policy.autoscale_hysteresis`). Nodes with nothing on them go
   first when the cluster shrinks.
4. Placement. Counts become GPUs per node, unchanged jobs staying put and the
   rest packed onto as few nodes as possible; an on-demand job counts and lands
   on on-demand nodes only (:mod:`~costsched.policy.packing`).

Before all this, on spot and on-demand nodes, a job whose checkpoint interval is known is
marked on-demand when spot would cost more per unit of progress, given the spot
preemption rate observed so far (:mod:`~costsched.policy.spot_choice`).

On nodes of several GPU models whose jobs describe each model, the same steps run over
(model, count) configurations instead (:mod:`~costsched.policy.hetero`).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

from costsched.cost.prices import SECONDS_PER_HOUR, usd_over, usd_per_gpu_hour_of
from costsched.errors import ConfigError
from costsched.policy.autoscale_hysteresis import DEFAULT_USD_PER_JOB_HOUR
from costsched.policy.goodput import GoodputChoice, best_goodput
from costsched.policy.hysteresis import (
    DEFAULT_MIN_RUN_S,
    charged_service_gpu_s,
    check_min_run_s,
    in_min_run,
)
from costsched.policy.packing import Capacity, place_jobs
from costsched.policy.restart_factor import restart_factor
from costsched.policy.snapshot import (
    ClusterSnapshot,
    Decision,
    JobView,
    NodeView,
    gpus_placed,
    num_gpus,
)
from costsched.policy.spot_choice import (
    DEFAULT_PRIOR_NODE_HOURS,
    DEFAULT_PRIOR_PREEMPTIONS_PER_NODE_HOUR,
    choose_markets,
    judged_gpus,
)


@dataclass(frozen=True, kw_only=True)
class Move:
    """One growth step of one job."""

    gpus_before: int
    """GPUs the job had before the step (k)."""
    speedup_before: float
    """Its speedup over one GPU before the step (s)."""
    num_gpus: int
    """GPUs the step adds (d)."""
    speedup_gained: float
    """Speedup the step adds (g), unweighted."""
    priority: int = 0
    """The job's priority: an hour of its JCT is worth 2**priority job-hours."""


def usd_per_job_hour_saved(move: Move, gpu_usd_per_hour: float) -> float:
    """Dollars ``move`` adds to the bill per hour it takes off the job's JCT, had the job
    kept that size to its end.

    A job with W single-GPU hours of work left, on k GPUs at speedup s, ends in W / s
    hours and holds k W / s GPU-hours. On k + d GPUs at speedup s + g it ends
    W (1/s - 1/(s + g)) hours sooner and holds W ((k + d)/(s + g) - k/s) GPU-hours more:
    per job-hour saved, d s / g - k GPU-hours, each at the GPU's price::

        usd = gpu_usd_per_hour x (d x s / g - k)

    Zero when the step scales linearly (g / d = s / k: the same GPU-hours, sooner),
    below zero when it scales better, infinite when it gains nothing.
    """
    if move.speedup_gained <= 0:
        return math.inf
    gpu_hours = (move.num_gpus * move.speedup_before / move.speedup_gained
                 - move.gpus_before)
    return usd_over(gpu_usd_per_hour, SECONDS_PER_HOUR * gpu_hours)


@dataclass(frozen=True, kw_only=True)
class CostAwarePolicy:
    """Elastic, goodput-per-dollar allocation with restart-aware resizing."""

    name: str = "cost-aware"
    """Name in outputs."""
    restart_horizon_s: float = 600.0
    """Least age a restart is judged over: a resize multiplies the job's utility by
    Pollux's restart factor max(H - restarts x restart_s, 0) / (H + restart_s) with
    H = max(restart_horizon_s, age) (at most the time its work left takes at the new size,
    when it says that work), which shrinks with every restart the job has had."""
    service_scale_gpu_s: float = 3600.0 * 16
    """tau of the weight (tau / (tau + R)) ** service_power, R the GPU-seconds the job
    still needs on one GPU when it says how much work it has left, else its attained
    service: how fast a job's claim on extra GPUs fades with R. 16 GPU-hours is the
    service at which the Tiresias baseline demotes a job (see ``las``)."""
    service_power: float = 1.0
    """Exponent of the weight: 1 ranks extra GPUs like SRPT (LAS without the work left),
    0 ignores it (pure speedup); between, long jobs keep a claim and are not starved."""
    node_shapes: bool = True
    """Allocation shapes that avoid split placements: 1, 2, 4, ... GPUs within one node,
    or whole nodes (as Sia restricts them). False: any count."""
    usd_per_job_hour: float = DEFAULT_USD_PER_JOB_HOUR
    """Autoscaling: dollars one hour less of one job's completion time is worth (at
    priority 0; 2**priority times this for other jobs). The cluster keeps a growth move
    when the dollars it adds per job-hour it saves are at most that
    (:func:`usd_per_job_hour_saved`); higher: more nodes, shorter JCT."""
    min_run_s: float = DEFAULT_MIN_RUN_S
    """Hysteresis against preemption ping-pong: a job that began its run less than this
    long ago is not preempted by a job of equal or lower priority, and a running job's
    attained service is ranked ``min_run_s`` x its GPUs lower."""

    spot_prior_preemptions_per_node_hour: float = DEFAULT_PRIOR_PREEMPTIONS_PER_NODE_HOUR
    """Prior spot preemption rate, per node-hour, before any is observed: with spot and
    on-demand nodes, a job whose checkpoint interval is known goes on-demand when spot
    costs more per unit of progress (:mod:`~costsched.policy.spot_choice`)."""
    spot_prior_node_hours: float = DEFAULT_PRIOR_NODE_HOURS
    """Node-hours of observation the prior rate is worth."""

    heterogeneity_aware: bool = True
    """On nodes of several GPU models, score each job on each model by its own throughput
    there and that model's price (Sia-style, :mod:`~costsched.policy.hetero`). False: treat
    every GPU as the same (the Pollux baseline); a job still never mixes models."""

    def __post_init__(self) -> None:
        if self.restart_horizon_s <= 0:
            raise ConfigError("restart_horizon_s must be positive")
        if not 0 < self.usd_per_job_hour < math.inf:
            raise ConfigError(f"usd_per_job_hour must be a positive number of dollars, e.g. "
                              f"{DEFAULT_USD_PER_JOB_HOUR:g}; got {self.usd_per_job_hour}")
        if self.service_power < 0:
            raise ConfigError("service_power must be >= 0")
        if self.spot_prior_preemptions_per_node_hour < 0 or self.spot_prior_node_hours < 0:
            raise ConfigError("the spot prior (rate and node-hours) must be >= 0")
        check_min_run_s(self.min_run_s)

    def decide(self, snapshot: ClusterSnapshot) -> Decision:
        from costsched.policy import hetero  # imports this module

        snapshot = choose_markets(snapshot, prior_per_node_hour=(
            self.spot_prior_preemptions_per_node_hour),
            prior_node_hours=self.spot_prior_node_hours)
        if hetero.uses_gpu_models(snapshot):
            return hetero.decide_by_gpu_model(self, snapshot)
        nodes = list(snapshot.nodes)
        gpus_per_node = max((n.num_gpus for n in nodes), default=0)
        added: tuple[NodeView, ...] = ()
        removed: tuple[str, ...] = ()
        scaling = snapshot.autoscaling
        if scaling is not None:
            gpus_per_node = scaling.template.num_gpus
            num_nodes = scaling.target_nodes
            if num_nodes is None:
                num_nodes = self.nodes_wanted(snapshot)
            nodes, added, removed = _resize(snapshot, nodes, num_nodes)
        usable = snapshot.free_gpus()
        grower = Growth(self, snapshot, gpus_per_node)
        alloc = grower.run(Capacity(nodes, usable))
        targets = [(job.name, alloc.get(job.name, 0)) for job in grower.order]
        placements = place_jobs(targets, nodes, snapshot.placements, usable=usable,
                                on_demand={job.name for job in grower.order if job.on_demand})
        batch_sizes = {name: grower.choice(grower.jobs[name], num_gpus(p)).batch_size
                       for name, p in placements.items()}
        return Decision(placements=placements, batch_sizes=batch_sizes,
                        nodes_to_add=added, nodes_to_remove=removed)

    def nodes_wanted(self, snapshot: ClusterSnapshot) -> int:
        """Nodes worth paying for now: admitted minimums plus the growth moves, on the spot
        nodes held and ``max_nodes`` of the template, whose JCT saving is worth what they
        add to the bill (at the spot price while they fit on spot nodes), rounded up to
        nodes, at least ``min_nodes`` and at most the spot nodes plus ``max_nodes``
        (:func:`_resize` splits the count between the markets). Needs ``autoscaling``."""
        scaling = snapshot.autoscaling
        gpus_per_node = scaling.template.num_gpus
        spot = [n for n in snapshot.nodes if n.spot]
        spot_gpus = sum(n.num_gpus for n in spot)
        prices = (usd_per_gpu_hour_of(spot) if spot else 0.0,
                  usd_per_gpu_hour_of((scaling.template,)))
        grower = Growth(self, snapshot, gpus_per_node)
        grower.run(Capacity(spot + [scaling.template] * scaling.max_nodes))
        wanted = grower.admitted_gpus
        for move in grower.moves:  # spot GPUs are handed out first, at the spot price
            price = prices[wanted + move.num_gpus > spot_gpus]
            if usd_per_job_hour_saved(move, price) <= self.usd_per_job_hour * 2.0 ** move.priority:
                wanted += move.num_gpus
        num_nodes = max(math.ceil(wanted / gpus_per_node), scaling.min_nodes)
        return min(num_nodes, len(spot) + scaling.max_nodes)  # :func:`_resize` splits it


@dataclass(frozen=True, kw_only=True)
class UnawareCostAwarePolicy(CostAwarePolicy):
    """``cost-aware`` blind to GPU models (the heterogeneity-unaware Pollux baseline)."""

    name: str = "cost-aware-unaware"
    """Name in outputs."""
    heterogeneity_aware: bool = False
    """Always False: every GPU looks the same to this policy."""


class Growth:
    """One run of admission and growth over a GPU count (state of one decision)."""

    def __init__(self, policy: CostAwarePolicy, snapshot: ClusterSnapshot, gpus_per_node: int):
        self.policy = policy
        self.snapshot = snapshot
        self.gpus_per_node = gpus_per_node
        self.jobs = {job.name: job for job in snapshot.jobs}
        min_run_s = policy.min_run_s
        self.order = sorted(snapshot.jobs, key=lambda j: (
            -j.priority, not in_min_run(j, snapshot, min_run_s),
            charged_service_gpu_s(j, snapshot, min_run_s), j.arrival_time_s, j.name))
        nodes = snapshot.nodes
        if not nodes and snapshot.autoscaling is not None:
            nodes = (snapshot.autoscaling.template,)
        self.gpu_usd_per_hour = usd_per_gpu_hour_of(nodes)
        self._choices: dict[tuple[str, int], GoodputChoice] = {}
        self.moves: list[Move] = []
        """Growth moves, in the order made."""
        self.admitted_gpus = 0

    def choice(self, job: JobView, count: int) -> GoodputChoice:
        key = (job.name, count)
        hit = self._choices.get(key)
        if hit is None:
            hit = self._choices[key] = best_goodput(job, count, self.gpus_per_node)
        return hit

    def max_gpus(self, job: JobView) -> int:
        """The job's max, cut so that one round cannot overrun its budget."""
        left_usd = job.budget_usd - job.spent_usd
        if math.isinf(left_usd):
            return job.max_gpus
        price = job.usd_per_gpu_hour if job.usd_per_gpu_hour is not None else self.gpu_usd_per_hour
        usd_per_gpu_round = usd_over(price, self.snapshot.round_s)
        return min(job.max_gpus, int(left_usd // usd_per_gpu_round) if left_usd > 0 else 0)

    def weight(self, job: JobView) -> float:
        """2**priority x (tau / (tau + R)) ** service_power, R the GPU-seconds the job
        still needs (its ``remaining_work`` over :meth:`one_gpu_rate`) when it says and
        that rate is known, else its attained service.

        A unit of speedup shortens mean JCT most on the job nearest its end (SRPT); with
        its work left unknown, the more service a job has had the more it likely still
        needs, as Philly's job sizes are heavy-tailed (LAS, the Gittins index).
        """
        tau = self.policy.service_scale_gpu_s
        need = job.attained_service_gpu_s
        if job.remaining_work is not None:
            per_gpu = self.one_gpu_rate(job)
            if per_gpu > 0:  # else no pace to judge the work by: the service it has had
                need = job.remaining_work / per_gpu
        return (2.0 ** job.priority) * (tau / (tau + need)) ** self.policy.service_power

    def one_gpu_rate(self, job: JobView) -> float:
        """Work per GPU-second on one GPU (per GPU at its least size if one cannot run it);
        0 when neither can."""
        return self.choice(job, 1).goodput or (
            self.choice(job, job.min_gpus).goodput / job.min_gpus)

    def speedup(self, job: JobView, count: int) -> float:
        """Goodput at ``count`` GPUs over goodput at one (at its min if one is unusable)."""
        if count <= 0:
            return 0.0
        base = self.choice(job, 1).goodput or self.choice(job, job.min_gpus).goodput
        return self.choice(job, count).goodput / max(base, 1e-12)

    def utility(self, job: JobView, count: int) -> float:
        value = self.weight(job) * self.speedup(job, count)
        held = num_gpus(self.snapshot.placements.get(job.name))
        if count <= 0 or held in (0, count):
            return value
        return value * self.restart_factor(job, self.choice(job, count).goodput)

    def restart_factor(self, job: JobView, goodput: float) -> float:
        """:func:`~costsched.policy.restart_factor.restart_factor` at ``goodput``."""
        return restart_factor(*self.restart_terms(job), goodput)

    def restart_terms(self, job: JobView) -> tuple[float, float, float, float]:
        """(H = max(horizon, age), work left (inf: not said), restarts x restart_s, restart_s)."""
        age_s = max(self.snapshot.time_s - job.arrival_time_s, 0.0)
        restart_s = self.snapshot.restart_s if job.restart_s is None else job.restart_s
        work_left = math.inf if job.remaining_work is None else job.remaining_work
        return (max(self.policy.restart_horizon_s, age_s), work_left,
                job.num_restarts * restart_s, restart_s)

    def best_move(self, job: JobView, count: int, top: int) -> tuple[float, int] | None:
        """The best next step up from ``count``: the next allowed size, a jump to a node
        boundary, to twice as many, or to the held size. Step time is not concave in
        GPUs (a replica on a new node adds a network hop that many replicas
        amortise), so one-size steps alone would stall short of a good size."""
        held = num_gpus(self.snapshot.placements.get(job.name))
        per_node = self.gpus_per_node
        boundary = -(-(count + 1) // per_node) * per_node
        best = None
        now = self.utility(job, count)
        for target in {self.next_size(count), boundary, boundary + per_node, 2 * count, held}:
            if count < target <= top and (target == held or self.allowed(target)):
                ratio = (self.utility(job, target) - now) / (target - count)
                if best is None or ratio > best[0]:
                    best = (ratio, target)
        return best

    def allowed(self, count: int) -> bool:
        """1, 2, 4, ... within a node, or whole nodes (any count without ``node_shapes``)."""
        per_node = self.gpus_per_node
        if not self.policy.node_shapes or per_node <= 0:
            return True
        if count % per_node == 0:
            return True
        return count < per_node and count & (count - 1) == 0

    def next_size(self, count: int) -> int:
        """The smallest allowed size above ``count``."""
        target = count + 1
        while not self.allowed(target):
            target += 1
        return target

    def run(self, capacity: Capacity) -> dict[str, int]:
        """GPUs per job out of ``capacity`` (used up as it goes)."""
        alloc: dict[str, int] = {}
        tops: dict[str, int] = {}
        before = capacity.total
        for job in self.order:
            top = self.max_gpus(job)
            if job.min_gpus <= min(top, capacity.room(job)):
                alloc[job.name], tops[job.name] = job.min_gpus, top
                capacity.take(job, job.min_gpus)
        self.admitted_gpus = before - capacity.total
        heap = []
        for rank, job in enumerate(self.order):
            if job.name in alloc:
                top = min(tops[job.name], alloc[job.name] + capacity.room(job))
                self._push(heap, rank, job, alloc[job.name], top)
        while heap and capacity.total > 0:
            neg_ratio, rank, target = heapq.heappop(heap)
            job = self.order[rank]
            top = min(tops[job.name], alloc[job.name] + capacity.room(job))
            if target > top:  # the move no longer fits: find the best one that does
                self._push(heap, rank, job, alloc[job.name], top)
                continue
            if -neg_ratio <= 0:
                break
            before = self.speedup(job, alloc[job.name])
            self.moves.append(Move(gpus_before=alloc[job.name], speedup_before=before,
                                   num_gpus=target - alloc[job.name],
                                   speedup_gained=self.speedup(job, target) - before,
                                   priority=job.priority))
            capacity.take(job, target - alloc[job.name])
            alloc[job.name] = target
            self._push(heap, rank, job, target,
                       min(tops[job.name], target + capacity.room(job)))
        return alloc

    def _push(self, heap: list, rank: int, job: JobView, count: int, top: int) -> None:
        move = self.best_move(job, count, top)
        if move is not None:
            heapq.heappush(heap, (-move[0], rank, move[1]))


def _resize(
    snapshot: ClusterSnapshot, nodes: list[NodeView], num_nodes: int
) -> tuple[list[NodeView], tuple[NodeView, ...], tuple[str, ...]]:
    """Keep ``num_nodes`` nodes (:func:`_resize_market`). Beside spot nodes, the on-demand
    nodes the autoscaling minimum keeps, or the jobs marked on-demand need at the sizes
    they hold (at least their least sizes), come first, then spot ones, then more
    on-demand ones within the maximum; spot nodes beyond these are released."""
    spot = [n for n in nodes if n.spot]
    if not spot:
        return _resize_market(snapshot, nodes, num_nodes)
    scaling = snapshot.autoscaling
    needed = sum(judged_gpus(job, snapshot) for job in snapshot.jobs if job.on_demand)
    floor = min(max(scaling.min_nodes, -(-needed // scaling.template.num_gpus)),
                scaling.max_nodes)
    keep = min(len(spot), max(num_nodes - floor, 0))
    kept_spot, _, released = _resize_market(snapshot, spot, keep)
    on_demand = min(max(num_nodes - len(kept_spot), floor), scaling.max_nodes)
    kept, added, removed = _resize_market(snapshot, [n for n in nodes if not n.spot], on_demand)
    return kept_spot + kept, added, released + removed


def _resize_market(
    snapshot: ClusterSnapshot, nodes: list[NodeView], num_nodes: int
) -> tuple[list[NodeView], tuple[NodeView, ...], tuple[str, ...]]:
    """Keep ``num_nodes`` nodes: add from the template, or drop the emptiest ones.

    A node's load is the GPUs placed on it or reserved there by anything (its
    ``reserved_gpus``), whichever is more: nodes with nothing on them go first, a node
    holding a job only once none is left, and then the one holding fewest GPUs (the
    fewest replicas restart). Among equals the newest goes first."""
    if num_nodes >= len(nodes):
        template = snapshot.autoscaling.template
        new = tuple(
            NodeView(node_id=node_id, gpu_model=template.gpu_model, num_gpus=template.num_gpus,
                     usd_per_hour=template.usd_per_hour, spot=template.spot)
            for node_id in snapshot.new_node_ids(num_nodes - len(nodes))
        )
        return nodes + list(new), new, ()
    placed = gpus_placed(snapshot.placements)
    load = [max(placed.get(n.node_id, 0), n.reserved_gpus or 0) for n in nodes]
    ranked = sorted(range(len(nodes)), key=lambda i: (load[i], -i))
    drop = {nodes[i].node_id for i in ranked[: len(nodes) - num_nodes]}
    return [n for n in nodes if n.node_id not in drop], (), tuple(sorted(drop))
