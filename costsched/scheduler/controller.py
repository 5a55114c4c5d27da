"""The scheduler controller: a plain class driving a policy over live jobs.

One :meth:`SchedulerController.tick` is one round: finish the stops in flight, poll every running
job (keeping what it measured: steps, restart costs), stop jobs about to overrun their budget, ask
the policy for a decision on a snapshot of the cluster, turn the difference into actions (start,
resume, resize, preempt; a stop never blocks: the runner finishes it in later rounds), and ask the
autoscaler for what the queue still lacks. The Ray layer makes it an actor; tests supply fakes and
a scripted clock. Every state change is one transaction: a start is written before the runner is
called (recovery restarts a RUNNING job whose run is gone from its checkpoint); a stop or resize
after (a repeated runner call is idempotent)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from costsched.config.job import JobConfig, parse_job
from costsched.config.scheduler import SchedulerConfig, parse_submission
from costsched.config.strict import parse_yaml_mapping
from costsched.cost.formatting import format_usd
from costsched.cost.prices import JobRate, PriceCatalog, load_catalog, rate_of_job, usd_over
from costsched.errors import CostschedError
from costsched.goodput.restart import describe
from costsched.policy.drive import Executes, drive, is_elastic
from costsched.policy.registry import Policy, make_policy
from costsched.policy.snapshot import Decision
from costsched.policy.validate import InvalidDecision
from costsched.scheduler import job_models as measured
from costsched.scheduler import policy_view as models
from costsched.scheduler import spend
from costsched.scheduler.actions import adaptive_batch_size, batch_change, plan_actions
from costsched.scheduler.alerts import tick_report
from costsched.scheduler.autoscale import CapacityRequest
from costsched.scheduler.interfaces import (
    Action,
    Clock,
    ClusterClient,
    JobProgress,
    JobRunner,
    JobStatus,
    NodeRecord,
    RunLedger,
    TickReport,
)
from costsched.scheduler.outside_work import OutsideWork
from costsched.scheduler.progress import running_fields
from costsched.scheduler.restarts import RestartCosts
from costsched.scheduler.state import ACTIVE, RUNNING, TERMINAL, WAITING, JobRecord, JobStore
from costsched.scheduler.status import status_row
from costsched.scheduler.typed_views import TypedViews

log = logging.getLogger(__name__)
FINISHED_OUTCOMES = ("COMPLETED", "TARGET_REACHED", "BUDGET_EXHAUSTED")
NOTICE = "spot notice"  # how a requeue for a node's reclaim notice is logged


class SchedulerController:
    """Live scheduling over injected collaborators; see the module docstring."""

    def __init__(self, *, store: JobStore, policy: Policy, cluster: ClusterClient,
                 runner: JobRunner, clock: Clock, catalog: PriceCatalog,
                 config: SchedulerConfig, ledger: RunLedger | None = None):
        config.check_catalog(catalog)
        self.store, self.policy, self.cluster, self.runner = store, policy, cluster, runner
        self.clock, self.catalog, self.config = clock, catalog, config
        self.ledger = ledger  # status reads each running job's refreshed forecast from it
        self._round, self._recovered = 0, False
        self._capacity, self._elastic = CapacityRequest(config), is_elastic(policy)
        self._gpu_models: dict[str, str] = {}  # node id -> GPU model, as last seen
        self._noticed: set[str] = set()  # nodes the cloud will reclaim soon
        self.node_records: Sequence[NodeRecord] | None = None  # this round's cluster.nodes()
        self._outside = OutsideWork(store.path)  # jobs that stepped; other work per node
        self._configs: dict[str, JobConfig] = {}
        self.job_models = measured.JobModels(store.path)
        self._typed = TypedViews(self.job_models, policy)  # jobs on each GPU model, from pools
        self.restarts = RestartCosts(store.path)
        self._logged_rejections: set[str] = set()
        self._batch_sizes: dict[str, int] = {}  # each adaptive job's last global batch

    @classmethod
    def from_config(cls, config: SchedulerConfig, *, cluster: ClusterClient, runner: JobRunner,
                    clock: Clock, ledger: RunLedger | None = None) -> SchedulerController:
        """The usual wiring: state file, policy and catalog as ``config`` names them."""
        return cls(store=JobStore(config.state_path), policy=make_policy(config.policy),
                   cluster=cluster, runner=runner, clock=clock,
                   catalog=load_catalog(config.prices_path), config=config, ledger=ledger)

    # -- user commands --------------------------------------------------------
    def submit(self, config_text: str, overrides: Mapping[str, Any] | None = None,
               source: str = "<submitted job config>", request_id: str | None = None) -> str:
        """Validate and queue a job; returns its id (the same one again for a
        ``request_id`` already seen). ConfigError (naming ``source``) leaves no trace."""
        config, text = parse_submission(config_text, overrides or {}, self.catalog,
                                        self.config.accelerator_resource, source=source)
        record = self.store.add_job(
            name=config.name, config_yaml=text, config_hash=config.config_hash(),
            priority=config.cost.priority, budget_usd=config.cost.budget_usd,
            min_workers=config.scaling.min_workers, max_workers=config.scaling.max_workers,
            now=self.clock.now(), request_id=request_id)
        self._configs[record.job_id] = config
        return record.job_id

    def cancel(self, job_id: str) -> None:
        """Stop a job (at a checkpoint if it runs) and mark it CANCELLED."""
        job = self.store.get(job_id)
        if job.state in TERMINAL:
            raise CostschedError(f"job {job_id} already ended ({job.state}); nothing to cancel")
        spent = job.spent_usd
        if job.state in RUNNING:
            self.runner.stop(job_id, "cancelled")
            spent = max(spent, self._spent_after_stop(job))
        self.store.transition(job_id, "CANCELLED", now=self.clock.now(), kind="cancelled",
                              detail="cancelled by user", message="cancelled by user",
                              spent_usd=spent, workers=0, placement={}, usd_per_hour=0.0)

    def status(self) -> list[JobStatus]:
        return [self._status_row(job, self.clock.now()) for job in self.store.jobs()]

    def logs(self, job_id: str) -> list[dict[str, Any]]:  # at, kind, detail; oldest first
        return self.store.events(job_id)

    # -- scheduling -----------------------------------------------------------
    def recover(self) -> list[Action]:
        """After a (re)start: re-adopt running jobs whose run is alive; requeue the rest
        (they resume from their checkpoint). Runs once; ``tick`` calls it first."""
        self._recovered, now, actions = True, self.clock.now(), []
        for job in self.store.jobs(RUNNING):
            if (progress := self._poll(job)) is not None:
                if progress.state == "running":
                    self.store.log(job.job_id, now=now, kind="adopted", detail=(
                        f"re-adopted run {job.run_id} on {job.workers} workers"))
                actions += self._on_progress(job, progress, now)
        return actions

    def tick(self) -> TickReport:
        """One scheduling round."""
        now = self.clock.now()
        self.finish_stops()
        try:  # first: the GPU models the steps polled below ran on (pools are per model;
            records = self.node_records = self.cluster.nodes()  # a node gone keeps its own)
            nodes, self._noticed = models.node_views(records), models.noticed(records)
            self._gpu_models |= {n.node_id: n.gpu_model for n in nodes}
        except Exception as exc:  # noqa: BLE001 - a transient cluster error: retry next round
            log.warning("cluster unavailable, skipping this round's decision: %s", exc)
            nodes = self.node_records = None
        actions = self.recover() if not self._recovered else self._poll_running(now)
        spend.account(self.store, now, lambda j: models.gpus_per_worker(self._config(j)))
        actions += self._stop_over_budget(now)
        if nodes is None:
            return self._report(now, actions)
        actions += self._requeue_broken({n.node_id for n in nodes}, now)
        # No accelerator nodes (scaled to zero): nothing runs (and some policies divide
        # by the cluster's price per GPU).
        snapshot = self._snapshot(now, nodes)
        decision = self._decide(snapshot) if nodes else Decision(placements={}, batch_sizes={})
        self._round += 1
        actions += self._apply(decision, now)
        self._autoscale(snapshot)
        return self._report(now, actions)

    def finish_stops(self) -> None:
        """Let the runner finish the stops that are due; keep each one's final charge."""
        for job_id, spent in self.runner.advance():
            self.store.update(job_id, spent_usd=max(self.store.get(job_id).spent_usd, spent))

    # -- polling ----------------------------------------------------------------
    def _poll(self, job: JobRecord) -> JobProgress | None:
        try:
            return self.runner.poll(job.job_id)
        except Exception as exc:  # noqa: BLE001 - runner errors must not stop the loop
            log.warning("poll of %s failed: %s", job.job_id, exc)
            return None

    def _poll_running(self, now: float) -> list[Action]:
        return [action for job in self.store.jobs(RUNNING)
                if (progress := self._poll(job)) is not None
                for action in self._on_progress(job, progress, now)]

    def _on_progress(self, job: JobRecord, p: JobProgress, now: float) -> list[Action]:
        spent = max(job.spent_usd, p.spent_usd)
        if p.measurement is not None:
            gpu_model = measured.placed_gpu_model(job.placement, self._gpu_models)
            self.job_models.record(job.job_id, p.measurement, now=now,
                                   share_key=measured.share_key(self._config(job), gpu_model))
        if p.restart_phases and p.attempt_at is not None and self.restarts.record(
                job.job_id, p.attempt_at, p.restart_phases, now=now):
            self.store.log(job.job_id, now=now, kind="restart-cost",
                           detail=describe(p.restart_phases))
        if p.state == "running":
            self._outside.polled(job.job_id, p, self.store.run_started_at(job.job_id))
            self.store.update(job.job_id, spent_usd=spent, **running_fields(job, p, now=now),
                              usd_per_hour=p.usd_per_hour or self._rate(job, job.workers))
            self.store.transition(job.job_id, "RUNNING", now=now, kind="resized",
                                  detail=f"running on {job.workers} workers")
            return []
        if p.state == "finished":
            outcome = p.outcome if p.outcome in FINISHED_OUTCOMES else "COMPLETED"
            self.store.transition(job.job_id, outcome, now=now, kind="finished",
                                  detail=p.message or outcome, spent_usd=spent, eta_s=None,
                                  last_step=max(p.last_step, job.last_step))
            return [Action(kind="finish", job_id=job.job_id, detail=outcome)]
        return self._on_failure(job, p, now, spent)

    def _on_failure(self, job: JobRecord, p: JobProgress, now: float, spent: float,
                    notice: bool = False) -> list[Action]:
        config = self._config(job)
        base = dict(spent_usd=spent, workers=0, placement={}, usd_per_hour=0.0)
        if p.node_lost:  # gone, or going (``notice``: its reclaim notice, said in the message)
            detail = (p.message if notice else
                      f"node lost ({p.message or 'spot reclaim'})") + "; restarting from checkpoint"
            fields = dict(base, spot_restarts=job.spot_restarts + 1, message=detail)
        elif p.state == "lost":
            detail = f"run lost ({p.message or 'no live run'}); restarting from checkpoint"
            fields = dict(base, message=detail)
        else:
            failures = job.failures + 1
            limit = config.checkpoint.max_failures
            if limit != -1 and failures > limit:
                detail = f"failed {failures} times (max_failures {limit}): {p.message}"
                self.store.transition(job.job_id, "FAILED", now=now, kind="failed", detail=detail,
                                      failures=failures, spent_usd=spent, message=detail)
                return [Action(kind="finish", job_id=job.job_id, detail="FAILED")]
            detail = f"failure {failures}/{limit}: {p.message}; restarting from checkpoint"
            fields = dict(base, failures=failures, message=detail)
        self.store.transition(job.job_id, "QUEUED", now=now, kind="requeued", detail=detail,
                              **fields)
        return [Action(kind="requeue", job_id=job.job_id, detail=detail)]

    def _requeue_broken(self, alive: set[str], now: float) -> list[Action]:
        """A running job placed on a node that is gone (spot reclaim, crash) or about to go
        (a reclaim notice: it stops at a checkpoint first) is stopped and requeued from its
        checkpoint, not counted against max_failures; one that took no step for
        ``stall_restart_minutes`` is killed and requeued as a failure."""
        actions, limit_s = [], self.config.stall_restart_minutes * 60.0
        for job in self.store.jobs(RUNNING):
            lost = sorted(node for node in job.placement if node not in alive)
            since = job.last_step_at if job.last_step_at is not None else job.started_at
            stalled = limit_s > 0 and since is not None and now - since > limit_s
            if not lost and not stalled:
                continue
            notice = bool(lost) and set(lost) <= self._noticed
            try:
                self.runner.stop(job.job_id, "spot_notice" if notice else
                                 "node_lost" if lost else "stalled")
            except Exception as exc:  # noqa: BLE001 - its run is gone with the node anyway
                log.warning("stopping %s (lost or stalled) failed: %s", job.job_id, exc)
            spent = max(job.spent_usd, self._spent_after_stop(job))
            nodes = ", ".join(n[:12] for n in lost)
            message = (f"{NOTICE}: node {nodes} will be reclaimed; stopped at a checkpoint"
                       if notice else f"node {nodes} gone" if lost
                       else f"stalled: no step for {(now - since) / 60.0:.0f} min")
            actions += self._on_failure(job, JobProgress(
                state="failed", node_lost=bool(lost), spent_usd=spent, message=message),
                now, spent, notice)
        return actions

    def _spent_after_stop(self, job: JobRecord) -> float:  # final once the stop finishes
        return getattr(self._poll(job), "spent_usd", 0.0)

    # -- budget -------------------------------------------------------------------
    def _stop_over_budget(self, now: float) -> list[Action]:
        """Stop any job whose spend would pass its budget before the next round ends and
        it stops (spent + usd_per_hour * (round_s + its measured stop latency) / 3600 >
        budget); a waiting job is priced at its min_workers."""
        actions = []
        for job in self.store.jobs(ACTIVE):
            config = self._config(job)
            running = job.state in RUNNING
            rate = (job.usd_per_hour or self._rate(job, job.workers)) if running \
                else self._rate(job, job.min_workers)
            horizon_s = self.config.round_s + self.restarts.stop_reserve_s(
                job.job_id, prior=config.cost.stop_reserve_s)
            projected = self.spent_now(job, now) + usd_over(rate, horizon_s)
            if projected <= job.budget_usd:
                continue
            spent = job.spent_usd  # what the ledger charged, as status will show it
            if running:
                self.runner.stop(job.job_id, "budget")
                spent = max(spent, self._spent_after_stop(job))
            detail = (f"stopped before its budget: ${format_usd(spent)} spent, "
                      f"${format_usd(projected)} projected by next round > "
                      f"${format_usd(job.budget_usd)}")
            self.store.transition(job.job_id, "BUDGET_EXHAUSTED", now=now, kind="budget",
                                  detail=detail, message=detail, spent_usd=spent)
            actions.append(Action(kind="stop_budget", job_id=job.job_id, detail=detail))
        return actions

    def spent_now(self, job: JobRecord, now: float) -> float:  # see spend.spent_now
        return spend.spent_now(job, self.job_rate(job),
                               models.gpus_per_worker(self._config(job)), now)

    def job_config(self, job_id: str) -> JobConfig:
        return self._config(self.store.get(job_id))  # validated when submitted

    def job_rate(self, job: JobRecord) -> JobRate:  # the one price family: cost.prices
        return rate_of_job(self._config(job), self.catalog)

    def _rate(self, job: JobRecord, num_workers: int) -> float:
        return self.job_rate(job).usd_per_hour(num_workers)

    # -- decisions ------------------------------------------------------------------
    def _snapshot(self, now: float, nodes):
        jobs, use = self.store.jobs(ACTIVE), self.config.use_measured_models
        for job in jobs if use else ():
            config = self._config(job)  # not yet measured: it starts from its pool, if any
            gpu_model = measured.declared_gpu_model(config, self.catalog)
            self.job_models.adopt(job.job_id, measured.share_key(config, gpu_model), now=now)
        views = [models.job_view(
            j, self._config(j), self.config.sync_penalty_per_gpu, self.job_rate(j),
            elastic=self._elastic, model=self.job_models.model(j.job_id) if use else None,
            restart_s=self.restarts.seconds(j.job_id), running_since_s=(
                self.store.run_started_at(j.job_id) if j.state in RUNNING else None))
            for j in jobs]
        views = self._typed.add(views, [self._config(j) for j in jobs], nodes) if use else views
        placements = {j.job_id: j.placement for j in jobs if j.state in RUNNING}
        return models.build_snapshot(now=now, round_index=self._round, views=views,
                                     nodes=self._outside.nodes(nodes, placements),
                                     placements=placements, round_s=self.config.round_s,
                                     restart_s=self.config.restart_s)

    def _decide(self, snapshot) -> Decision:
        """The policy's decision through :func:`~costsched.policy.drive.drive`, as the
        simulator takes it; what this scheduler does not execute (batch sizes of jobs
        without ``training.adaptive_batch``, nodes named by the policy) is logged once
        and left out. An invalid decision is logged and nothing changes this round."""
        try:
            adaptive = frozenset(j.job_id for j in self.store.jobs(ACTIVE)
                                 if self._config(j).training.adaptive_batch)
            driven = drive(self.policy, snapshot, elastic=self._elastic,
                           executes=Executes(batch_sizes=adaptive, node_changes=False))
        except InvalidDecision as exc:
            log.error("policy %s returned an invalid decision, ignored (allocations kept): "
                      "%s", self.config.policy, exc)
            return Decision(placements={j.job_id: j.placement for j in self.store.jobs(RUNNING)},
                            batch_sizes={})
        for line in driven.rejected:
            self._reject_once(line)
        return driven.decision

    def _reject_once(self, line: str) -> None:
        if line not in self._logged_rejections and not self._logged_rejections.add(line):
            log.warning("decision not executed: %s", line)

    def plan(self, decision: Decision) -> list[Action]:
        """The actions that move current allocations to ``decision`` (pure given the store)."""
        jobs = self.store.jobs(ACTIVE)
        return plan_actions(jobs, {j.job_id: models.gpus_per_worker(self._config(j))
                                   for j in jobs}, decision, self._reject_once, self._gpu_models,
                            self._outside.stepping())

    def _apply(self, decision: Decision, now: float) -> list[Action]:
        done = []
        for action in self.plan(decision):
            job = self.store.get(action.job_id)
            try:
                if action.kind == "preempt":
                    self.runner.stop(job.job_id, "preempted")
                    self.store.transition(
                        job.job_id, "PREEMPTED", now=now, kind="preempted",
                        detail="preempted by the policy; resumes from its checkpoint later",
                        workers=0, placement={}, usd_per_hour=0.0,
                        preemptions=job.preemptions + 1,
                        spent_usd=max(job.spent_usd, self._spent_after_stop(job)))
                elif action.kind == "resize":
                    self.runner.resize(job.job_id, action.num_workers, action.placement,
                                       self._batch_size(job, decision, now))
                    self.store.transition(
                        job.job_id, "RESIZING", now=now, kind="resizing", detail=action.detail,
                        workers=action.num_workers, placement=action.placement,
                        restarts=job.restarts + 1,
                        usd_per_hour=self._rate(job, action.num_workers))
                else:
                    self._start(job, action, now, self._batch_size(job, decision, now))
            except Exception as exc:  # noqa: BLE001 - logged, retried next round
                self.store.log(job.job_id, now=now, kind="error",
                               detail=f"{action.kind} failed: {exc}")
                continue
            done.append(action)
        return done

    def _batch_size(self, job: JobRecord, decision: Decision, now: float) -> int | None:
        """The global batch an adaptive job (re)starts at, as the policy chose it (logged
        when it changes); None for other jobs, which run at their own."""
        training = self._config(job).training
        chosen = adaptive_batch_size(training, decision.batch_sizes.get(job.job_id))
        before = self._batch_sizes.get(job.job_id, training.global_batch_size)
        if chosen is not None and chosen != before:
            self.store.log(job.job_id, now=now, kind="batch",
                           detail=batch_change(training, before, chosen))
            self._batch_sizes[job.job_id] = chosen
        return chosen

    def _start(self, job: JobRecord, action: Action, now: float,
               batch_size: int | None = None) -> None:
        resumed = job.started_at is not None
        self.store.transition(
            job.job_id, "RUNNING", now=now, kind="resumed" if resumed else "started",
            detail=f"on {action.num_workers} workers {dict(action.placement)}",
            workers=action.num_workers, placement=action.placement, accounted_at=now,
            started_at=job.started_at if resumed else now, last_step_at=now,  # the stall clock
            restarts=job.restarts + int(resumed), usd_per_hour=self._rate(job, action.num_workers))
        try:
            handle = self.runner.start(job.job_id, self._config(job), action.num_workers,
                                       action.placement, batch_size)
        except Exception:
            self.store.transition(job.job_id, job.state, now=now, kind="start-failed",
                                  workers=0, placement={}, usd_per_hour=0.0,
                                  started_at=job.started_at, restarts=job.restarts)
            raise
        self.store.update(job.job_id, run_id=handle.run_id,
                          checkpoint_path=handle.checkpoint_path)

    # -- autoscaling -------------------------------------------------------------------
    def _autoscale(self, snapshot) -> None:
        """Send this round's capacity request (see :class:`CapacityRequest`), or clear it."""
        self._capacity.send(self.cluster, snapshot=snapshot, policy=self.policy,
                            waiting=[(j, self._config(j)) for j in self.store.jobs(WAITING)],
                            running=[(j, self._config(j)) for j in self.store.jobs(RUNNING)],
                            catalog=self.catalog, config=self.config)

    # -- helpers -----------------------------------------------------------------------
    def _config(self, job: JobRecord) -> JobConfig:
        config = self._configs.get(job.job_id)
        if config is None:
            config = parse_job(parse_yaml_mapping(job.config_yaml, f"job {job.job_id}"),
                               f"job {job.job_id}", self.catalog)
            self._configs[job.job_id] = config
        return config

    def _status_row(self, job: JobRecord, now: float) -> JobStatus:
        return status_row(job, self._config(job), now=now, stall_minutes=self.config.stall_minutes,
                          spent_usd=self.spent_now(job, now) if job.state in ACTIVE
                          else job.spent_usd, model=self.job_models.model(job.job_id),
                          ledger=self.ledger)

    def _report(self, now: float, actions: list[Action]) -> TickReport:
        return tick_report(self.store.jobs(RUNNING), now=now, actions=actions,
                           stall_minutes=self.config.stall_minutes,
                           requested=self._capacity.standing)
