"""The one-type simulator with a spot node pool replayed from a real capacity trace.

As :class:`~costsched.sim.simulator.Simulator`, with these rules:

* the cluster is an on-demand pool of ``SimConfig.num_nodes`` nodes, always there, plus a
  spot pool of nodes of the same instance type: at each round (time t) it holds
  min(trace count at t, ``SpotPool.num_nodes``) nodes, one simulated node per trace
  instance (no scaling: a V100 trace instance stands for one node of the cluster's type);
* the pool grows when the trace grants more; when the count drops below the nodes it
  holds, that many of them are preempted, picked at random among all held spot nodes
  (AWS does not spare idle ones) with a generator seeded by ``SpotPool.seed``;
* a job on a preempted node loses the work since its last checkpoint: its progress goes
  back to the checkpoint's, and the GPU-seconds it held since are lost (still paid). It
  then waits for the policy to place it again and pays the restart (``restart_s``) there.
  With a notice (``SpotPool.notice_s``, AWS's two minutes; the live scheduler reads it,
  :mod:`costsched.scheduler.spot_notice`) it stops at a checkpoint when told: it keeps
  its progress of ``notice_s`` before the preemption (at its pace over the round before;
  never less than its last checkpoint's) and loses only what it did and held after;
* a job checkpoints at the start of a round (after its preemptions and placement changes)
  once it has held GPUs for at least its interval since its last checkpoint (the
  interval rounds up to whole rounds), and on
  every placement change (a resize restarts from a fresh checkpoint, as in the simulator
  without spot). Its interval is ``checkpoint_interval_s``; on spot nodes, unless
  ``SpotPool.fixed_interval`` or a notice (with one, a job stops at a checkpoint before
  each preemption), it is shortened to Young's interval for the preemption
  rate observed so far and the spot nodes it holds
  (:func:`~costsched.policy.spot_choice.checkpoint_interval_s`). Each of these
  checkpoints pauses its training for ``checkpoint_cost_s`` (GPUs held and paid; the
  checkpoint of a placement change is in its restart);
* with ``SimConfig.autoscale`` the on-demand pool is sized by the policy within its
  bounds, and the spot nodes the trace grants are offered to the policy each round: it
  keeps those it wants and releases the rest (a released node is not preempted, and is
  offered again, as a new node, while the trace still grants it);
* spot nodes cost the catalog's spot price and on-demand nodes its on-demand price, each
  for as long as they exist; a job pays its GPU share at the price of the nodes it holds;
* the policy sees the spot nodes (``NodeView.spot``), every job's checkpoint interval,
  and the preemptions and spot node-hours so far (``ClusterSnapshot.spot_preemptions``,
  ``spot_node_hours``), from which ``cost-aware`` picks a market per job
  (:mod:`~costsched.policy.spot_choice`).

A job may span spot and on-demand nodes (packing tries spot first and spills over): its
replicas step in lockstep on one GPU type, so it runs as fast as on one market; losing
any of its nodes restarts all of it from its checkpoint, which is what is simulated; and
its dollars are per node at that node's price.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from costsched.cost.prices import SECONDS_PER_HOUR, usd_over
from costsched.errors import ConfigError
from costsched.policy.registry import Policy
from costsched.policy.snapshot import ClusterSnapshot, JobView, NodeView
from costsched.policy.spot_choice import checkpoint_interval_s, preemptions_per_node_hour
from costsched.sim.profiles import AppProfile
from costsched.sim.results import SimResult, SpotTotals
from costsched.sim.simulator import SimConfig, SimJob, Simulator
from costsched.sim.spot_trace import SpotTrace
from costsched.sim.workload import JobSpec

DEFAULT_CHECKPOINT_INTERVAL_S = 1800.0
"""Every job checkpoints every 30 minutes of running unless told otherwise."""
DEFAULT_CHECKPOINT_COST_S = 10.0
"""Seconds a checkpoint pauses training: a stated assumption, the state of the largest
Pollux app (BERT-base with Adam: 110M parameters x 12 bytes, 1.3 GB) written to object
storage at about 130 MB/s."""


@dataclass(frozen=True, kw_only=True)
class SpotPool:
    """A spot node pool whose capacity replays a trace."""

    trace: SpotTrace
    """Instances granted per tick."""
    num_nodes: int
    """Most spot nodes held at once (the instances requested)."""
    checkpoint_interval_s: float = DEFAULT_CHECKPOINT_INTERVAL_S
    """Seconds of running between a job's checkpoints."""
    seed: int = 0
    """Seed of the pick of which spot nodes a drop in the trace preempts."""
    notice_s: float = 0.0
    """Seconds of warning before a preemption (AWS gives 120): a job stops at a checkpoint
    when told. 0: none, it loses everything since its last checkpoint."""
    checkpoint_cost_s: float = DEFAULT_CHECKPOINT_COST_S
    """Seconds each periodic checkpoint pauses a job's training."""
    fixed_interval: bool = False
    """Every job checkpoints every ``checkpoint_interval_s``, on spot too."""

    @property
    def shortens_interval(self) -> bool:
        """Whether jobs on spot checkpoint at Young's interval: unless told not to, or
        checkpoints are free (the formula would checkpoint without end), or a notice stops
        them at a checkpoint before each preemption (more checkpoints would buy nothing)."""
        return not self.fixed_interval and self.notice_s <= 0 and self.checkpoint_cost_s > 0

    def __post_init__(self) -> None:
        if self.num_nodes < 1:
            raise ConfigError("the spot pool needs at least one node (--spot-nodes)")
        if not 0 < self.checkpoint_interval_s < math.inf:
            raise ConfigError("the checkpoint interval must be positive (--checkpoint-interval)")
        if not 0 <= self.notice_s < math.inf:
            raise ConfigError("the spot notice must be >= 0 seconds (--spot-notice)")
        if not 0 <= self.checkpoint_cost_s < math.inf:
            raise ConfigError("the checkpoint cost must be >= 0 seconds (--checkpoint-cost)")


@dataclass(kw_only=True)
class _Checkpoint:
    """A job's state at its last checkpoint, and what preemptions cost it."""

    progress: float = 0.0
    gpu_s: float = 0.0
    held_s: float = 0.0
    """Seconds it has held GPUs since."""
    preemptions: int = 0
    lost_gpu_s: float = 0.0
    spot_gpu_s: float = 0.0
    """GPU-seconds it held on spot nodes (the rest were on-demand)."""
    checkpoints: int = 0
    """Periodic checkpoints it wrote (not those of placement changes)."""
    paused_gpu_s: float = 0.0
    """GPU-seconds its periodic checkpoints paused it."""


def _at(points: list[tuple[float, float, float]],
        time_s: float) -> tuple[float, float] | None:
    """(progress, GPU-seconds) at ``time_s``, linear between ``points`` (time, progress,
    GPU-seconds; in time order); the first point's before them; None without points."""
    if not points:
        return None
    if time_s <= points[0][0]:
        return points[0][1], points[0][2]
    for (t0, p0, g0), (t1, p1, g1) in zip(points, points[1:], strict=False):
        if time_s <= t1:
            frac = (time_s - t0) / (t1 - t0) if t1 > t0 else 1.0
            return p0 + frac * (p1 - p0), g0 + frac * (g1 - g0)
    return points[-1][1], points[-1][2]


class SpotSimulator(Simulator):
    """Replays one workload under one policy on an on-demand pool plus a traced spot pool."""

    def __init__(self, *, config: SimConfig, profiles: dict[str, AppProfile],
                 workload: Sequence[JobSpec], policy: Policy, pool: SpotPool) -> None:
        if config.spot:
            raise ConfigError("a spot pool prices its own nodes as spot and the rest "
                              "on-demand; drop --spot")
        if config.autoscale_hysteresis is not None:
            raise ConfigError("a spot pool resizes each round; drop --autoscale-half-life")
        super().__init__(config=config, profiles=profiles, workload=workload, policy=policy)
        self.pool = pool
        self._rng = np.random.default_rng(pool.seed)
        self._spot_price = config.instance.node_usd_per_hour(True)
        self._spot_gpu_price = config.instance.gpu_usd_per_hour(True)
        self._spot_ids: list[str] = []
        self._next_spot = 0
        self._ckpt = {j.spec.name: _Checkpoint() for j in self.jobs}
        self._history: dict[str, list[tuple[float, float, float]]] = {}
        """Job -> (time, progress, GPU-seconds) at the last rounds' starts (a notice's worth)."""
        self._now = 0.0
        self._nodes_preempted = 0
        self._node_s = {True: 0.0, False: 0.0}
        self._billed_node_s = 0.0
        self.spot_timeline: list[tuple[float, int, int]] = []
        """Per round: (time_s, spot nodes held, trace count then)."""

    # Capacity -------------------------------------------------------------------------

    def _replay(self, active: list[SimJob], time_s: float) -> None:
        """Grow or shrink the spot pool to the trace's count at ``time_s``."""
        self._now = time_s
        granted = self.pool.trace.count_at(time_s)
        want = min(granted, self.pool.num_nodes)
        have = len(self._spot_ids)
        if want > have:
            for _ in range(want - have):
                node_id = f"spot-{self._next_spot}"
                self._next_spot += 1
                self._spot_ids.append(node_id)
                self.nodes.append(self._spot_node(node_id))
        elif want < have:
            picks = self._rng.choice(have, size=have - want, replace=False)
            victims = {self._spot_ids[i] for i in sorted(picks)}
            self._nodes_preempted += len(victims)
            self._spot_ids = [n for n in self._spot_ids if n not in victims]
            self.nodes = [n for n in self.nodes if n.node_id not in victims]
            for job in active:
                if victims & set(job.placement):
                    self._preempt(job)
        self.spot_timeline.append((time_s, len(self._spot_ids), granted))

    def _spot_node(self, node_id: str) -> NodeView:
        inst = self.config.instance
        return NodeView(node_id=node_id, gpu_model=inst.gpu_model,
                        num_gpus=inst.num_gpus_per_node, usd_per_hour=self._spot_price,
                        spot=True)

    def _preempt(self, job: SimJob) -> None:
        """Back to the last checkpoint (with a notice: to where the job was when told);
        GPUs released; the next placement pays a restart."""
        ckpt = self._ckpt[job.spec.name]
        if self.pool.notice_s > 0:
            told = _at(self._history.get(job.spec.name, []) + [
                (self._now, job.progress, job.gpu_s)], self._now - self.pool.notice_s)
            if told is not None and told[0] > ckpt.progress:
                ckpt.progress, ckpt.gpu_s = told
        ckpt.preemptions += 1
        ckpt.lost_gpu_s += job.gpu_s - ckpt.gpu_s
        job.progress = ckpt.progress
        ckpt.gpu_s, ckpt.held_s = job.gpu_s, 0.0
        job.placement, job.batch_size, job.restart_left_s = {}, 0, 0.0
        self._history.pop(job.spec.name, None)  # progress before this went back

    # Rounds ---------------------------------------------------------------------------

    def _schedule(self, active: list[SimJob], time_s: float, round_index: int) -> None:
        self._replay(active, time_s)
        before = {j.spec.name: j.num_placements for j in active}
        super()._schedule(active, time_s, round_index)
        held = {n.node_id for n in self.nodes}  # an autoscaling policy releases spot nodes
        self._spot_ids = [n for n in self._spot_ids if n in held]
        for job in active:
            if job.num_placements > before[job.spec.name]:
                self._checkpoint(job)
        if self.pool.notice_s > 0:
            keep = int(np.ceil(self.pool.notice_s / self.config.round_s)) + 1
            for job in active:
                points = self._history.setdefault(job.spec.name, [])
                points.append((time_s, job.progress, job.gpu_s))
                del points[:-keep]

    def _checkpoint(self, job: SimJob) -> None:
        ckpt = self._ckpt[job.spec.name]
        ckpt.progress, ckpt.gpu_s, ckpt.held_s = job.progress, job.gpu_s, 0.0

    def _advance(self, job: SimJob, time_s: float) -> None:
        """A round of ``job``: first its periodic checkpoint if one is due (taken at the
        round's start, after the round's preemptions and placement changes, each of which
        ends the interval its own way), paused for; then the base simulator's round."""
        replicas = sum(job.placement.values())
        ckpt = self._ckpt[job.spec.name]
        if replicas and ckpt.held_s >= self._interval_s(job) - 1e-9:
            self._checkpoint(job)
            cost_s = self.pool.checkpoint_cost_s
            job.restart_left_s += cost_s
            ckpt.checkpoints += 1
            ckpt.paused_gpu_s += cost_s * replicas
        gpu_s = job.gpu_s
        super()._advance(job, time_s)
        held = job.gpu_s - gpu_s
        if held <= 0:
            return
        spot = set(self._spot_ids)
        on_spot = sum(c for n, c in job.placement.items() if n in spot)
        ckpt.spot_gpu_s += held * on_spot / replicas
        ckpt.held_s += held / replicas

    def _interval_s(self, job: SimJob) -> float:
        """Seconds of running between ``job``'s checkpoints on its placement now; on spot,
        Young's for the rate with the default prior (``cost-aware``'s unless told
        otherwise) and the spot nodes it holds."""
        pool = self.pool
        on_spot = len(set(job.placement) & set(self._spot_ids))
        if not pool.shortens_interval or not on_spot:
            return pool.checkpoint_interval_s
        rate = preemptions_per_node_hour(preemptions=self._nodes_preempted,
                                         node_hours=self._node_s[True] / SECONDS_PER_HOUR)
        return checkpoint_interval_s(preemptions_per_node_hour=rate, num_nodes=on_spot,
                                     checkpoint_cost_s=pool.checkpoint_cost_s,
                                     longest_s=pool.checkpoint_interval_s)

    def _view(self, job: SimJob, time_s: float) -> JobView:
        view = super()._view(job, time_s)
        pool = self.pool
        return dataclasses.replace(
            view, spent_usd=self._job_usd(job), checkpoint_interval_s=pool.checkpoint_interval_s,
            checkpoint_cost_s=pool.checkpoint_cost_s if pool.shortens_interval else None)

    def snapshot(self, active: list[SimJob], time_s: float, round_index: int) -> ClusterSnapshot:
        snapshot = super().snapshot(active, time_s, round_index)
        return dataclasses.replace(snapshot, spot_preemptions=self._nodes_preempted,
                                   spot_node_hours=self._node_s[True] / SECONDS_PER_HOUR)

    # Dollars --------------------------------------------------------------------------

    def _job_usd(self, job: SimJob) -> float:
        spot_gpu_s = self._ckpt[job.spec.name].spot_gpu_s
        return (usd_over(self._spot_gpu_price, spot_gpu_s)
                + usd_over(self.gpu_usd_per_hour, job.gpu_s - spot_gpu_s))

    def _cluster_usd(self, node_s: float) -> float:
        """Dollars so far: on-demand and spot node-seconds, each at its catalog price. The
        base loop calls this once a round with its running node-seconds, after the round's
        nodes are set; the new node-seconds are split by the nodes held in that round."""
        new_s = node_s - self._billed_node_s
        if new_s > 0 and self.nodes:
            round_s = new_s / len(self.nodes)
            self._node_s[True] += round_s * len(self._spot_ids)
            self._node_s[False] += round_s * (len(self.nodes) - len(self._spot_ids))
        self._billed_node_s = node_s
        return (usd_over(self._spot_price, self._node_s[True])
                + usd_over(self.node_usd_per_hour, self._node_s[False]))

    def _result(self, timeline: list, node_s: float) -> SimResult:
        base = super()._result(timeline, node_s)
        by_name = {j.spec.name: j for j in self.jobs}
        jobs = tuple(dataclasses.replace(
            r, cost_usd=self._job_usd(by_name[r.name]),
            preemptions=self._ckpt[r.name].preemptions,
            lost_gpu_hours=self._ckpt[r.name].lost_gpu_s / SECONDS_PER_HOUR)
            for r in base.jobs)
        totals = SpotTotals(
            spot_node_hours=self._node_s[True] / SECONDS_PER_HOUR,
            on_demand_node_hours=self._node_s[False] / SECONDS_PER_HOUR,
            num_preemptions=sum(c.preemptions for c in self._ckpt.values()),
            num_nodes_preempted=self._nodes_preempted,
            lost_gpu_s=sum(c.lost_gpu_s for c in self._ckpt.values()),
            num_checkpoints=sum(c.checkpoints for c in self._ckpt.values()),
            checkpoint_paused_gpu_s=sum(c.paused_gpu_s for c in self._ckpt.values()))
        return dataclasses.replace(base, jobs=jobs, spot=totals)
