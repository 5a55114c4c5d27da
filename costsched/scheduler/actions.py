"""From a policy's decision to the actions that carry it out (pure)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from costsched.config.job import TrainingConfig
from costsched.policy.snapshot import Decision
from costsched.scheduler.interfaces import Action
from costsched.scheduler.state import RUNNING, JobRecord
from costsched.training.schedule import lr_scale

ACTION_ORDER = {"preempt": 0, "resize": 1, "resume": 2, "start": 3}
"""Preemptions and resizes first, so the slots they free are free before jobs start."""


def plan_actions(jobs: Sequence[JobRecord], gpus_per_worker: Mapping[str, int],
                 decision: Decision, reject: Callable[[str], None],
                 gpu_models: Mapping[str, str] | None = None,
                 stepping: Collection[str] = frozenset()) -> list[Action]:
    """The actions that move ``jobs``' allocations to ``decision``. A placement that is
    not a whole number of workers within the job's range is not executed: the job gets
    nothing this round and ``reject`` is told why. A running job kept at its worker count
    moves (a resize to the same count: one restart) only where :func:`move_reason` says
    so (``gpu_models``: node id -> GPU model; None: no moves), and only while every job
    on the nodes it leaves or goes to, itself included, is ``stepping`` (ids of those
    whose current attempt has reported a step) and none there is resizing. Until then an
    attempt's workers may not hold their slots yet: Ray reports those slots free, the
    decision counts them twice (the job's own and free), and would move jobs onto slots
    others hold. A job left where it is though the decision placed it elsewhere still
    holds its slots: what would need them waits (:func:`without_clashes`)."""
    actions = []
    left: dict[str, tuple[Mapping[str, int], Mapping[str, int]]] = {}
    unsettled = {node for j in jobs if j.state in RUNNING and not (
        j.state == "RUNNING" and j.job_id in stepping) for node, c in j.placement.items() if c}
    for job in jobs:
        per_worker = gpus_per_worker[job.job_id]
        placement = {n: c for n, c in decision.placements.get(job.job_id, {}).items() if c}
        gpus = sum(placement.values())
        workers = gpus // per_worker
        if gpus % per_worker or (workers and workers < job.min_workers):
            reject(f"job {job.job_id}: {gpus} GPUs is not a whole number of {per_worker}-GPU "
                   f"workers in {job.min_workers}..{job.max_workers}; the job gets none "
                   "this round")
            workers, placement = 0, {}
        held = job.workers if job.state in RUNNING else 0
        if held == workers:
            settled = gpu_models is not None and not unsettled & {*job.placement, *placement}
            why = move_reason(job.placement, placement, gpu_models or {}) if (
                held and settled and job.state == "RUNNING" and job.job_id in stepping) else None
            if why:
                actions.append(Action(kind="resize", job_id=job.job_id, num_workers=workers,
                                      placement=placement, detail=f"moved {why}"))
            elif held:
                left[job.job_id] = (job.placement, placement)
            continue
        if workers == 0:
            kind = "preempt"
        elif held:
            kind = "resize"
        else:
            kind = "resume" if job.started_at is not None else "start"
        actions.append(Action(kind=kind, job_id=job.job_id, num_workers=workers,
                              placement=placement, detail=f"{held} -> {workers} workers"))
    current = {j.job_id: j.placement for j in jobs}
    return sorted(without_clashes(actions, left, current, reject),
                  key=lambda a: ACTION_ORDER[a.kind])


def without_clashes(actions: list[Action],
                    left: dict[str, tuple[Mapping[str, int], Mapping[str, int]]],
                    current: Mapping[str, Mapping[str, int]],
                    reject: Callable[[str], None]) -> list[Action]:
    """``actions`` less the starts and resizes onto a node where a job left in place
    (``left``: job id -> (the placement it keeps, the one the decision gave it)) holds
    more than the decision gave it: the decision handed those slots out, and they are
    not free. A resize held back leaves its job in place too, so this repeats until
    nothing more clashes; ``reject`` is told each one. Preemptions always go ahead."""
    while True:
        held = {node for kept, decided in left.values() for node, count in kept.items()
                if count > decided.get(node, 0)}
        clash = [a for a in actions if a.kind != "preempt" and held & set(a.placement)]
        if not clash:
            return actions
        for action in clash:
            reject(f"job {action.job_id}: {action.kind} waits a round: node "
                   f"{', '.join(sorted(held & set(action.placement)))} still holds slots "
                   "of a job left in place")
            if action.kind == "resize":
                left[action.job_id] = (current[action.job_id], action.placement)
        actions = [a for a in actions if a not in clash]


def move_reason(current: Mapping[str, int], placement: Mapping[str, int],
                gpu_models: Mapping[str, str]) -> str | None:
    """Why a job that keeps its worker count should restart on ``placement``: it goes onto
    another GPU model, or onto fewer nodes (a job that spilled over several when the
    cluster was full, consolidated); None for any other change of nodes, which is not
    worth a restart (the job stays where it is)."""
    held = {n: c for n, c in current.items() if c}
    if not held or not placement or held == dict(placement):
        return None
    before = {gpu_models.get(n) for n in held}
    after = {gpu_models.get(n) for n in placement}
    if None not in before | after and before != after:
        return f"onto {', '.join(sorted(after))} from {', '.join(sorted(before))}"
    if len(placement) < len(held):
        return f"onto {len(placement)} node{'s' * (len(placement) > 1)} from {len(held)}"
    return None


def adaptive_batch_size(training: TrainingConfig, chosen: int | None) -> int | None:
    """The global batch an adaptive job runs at: the policy's choice within
    ``global_batch_size .. batch_size_limit``; None for a job that keeps its own."""
    if not training.adaptive_batch or not chosen:
        return None
    return min(max(int(chosen), training.global_batch_size), training.batch_size_limit)


def batch_change(training: TrainingConfig, before: int, after: int) -> str:
    """The log line of an adaptive job's batch change, with its learning-rate factor."""
    scale = lr_scale(after, training.global_batch_size, training.lr_scaling)
    return (f"global batch {before} -> {after} (learning rate x{scale:.3g} of the "
            f"configured, {training.lr_scaling} rule)")
