"""Run accounting: the one API through which anything writes the cost ledger (pure; no Ray).

:class:`RunAccount` opens or resumes a run, feeds its reports and failures in as
intervals (:class:`RunAccountant`), charges an attempt killed before it reported,
closes a run ended from outside, and records the outcome. The Ray Train callback,
the job driver, the live scheduler's runner and the sweep all go through it; no
other module calls the ledger's write methods (a test checks this).

Workers report metrics that carry ``attempt_started_at`` (when this attempt's
training function started) and ``world_size``. A new ``attempt_started_at``
means the worker group restarted (failure or resize): the previous interval
closes and a new one opens where it ended, so intervals stay contiguous.

The in-run cost estimate workers show follows the same rule, so after a
failure restart at the same size it equals the ledger; after a resize it
charges the restart gap at the new worker count while the ledger charges it
at the old one until it sees the new group. The ledger is authoritative.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from costsched.cost.ledger import Ledger, attempt_charged_from
from costsched.cost.prices import JobRate

if TYPE_CHECKING:
    from costsched.config.job import JobConfig
    from costsched.cost.forecast import Forecast

ATTEMPT_KEY = "attempt_started_at"
WORLD_SIZE_KEY = "world_size"
CHECKPOINTED_KEY = "checkpointed"


@dataclass
class _OpenInterval:
    interval_id: int
    attempt_started_at: float


class RunAccountant:
    """Feeds one run's events into the ledger. Clock values are passed in."""

    def __init__(self, ledger: Ledger, run_id: str, *, run_started_at: float,
                 accelerators_per_worker: float, resources: dict[str, float],
                 node_type: str | None = None, node_spot: bool | None = None):
        self.ledger = ledger
        self.run_id = run_id
        self.accelerators_per_worker = accelerators_per_worker
        self.resources = resources
        self.priced_at = {"node_type": node_type, "node_spot": node_spot}
        self._next_start = run_started_at
        self._open: _OpenInterval | None = None

    def on_report(self, metrics: dict[str, Any], *, now: float) -> None:
        attempt = float(metrics[ATTEMPT_KEY])
        if self._open is not None and self._open.attempt_started_at != attempt:
            # The group restarted without a reported failure: an elastic resize.
            self._close(now=attempt, outcome="RESIZED")
        if self._open is None:
            interval_id = self.ledger.open_interval(
                self.run_id, started_at=self._next_start,
                num_workers=int(metrics[WORLD_SIZE_KEY]),
                accelerators_per_worker=self.accelerators_per_worker,
                resources=self.resources, **self.priced_at,
            )
            self._open = _OpenInterval(interval_id, attempt)
        self.ledger.heartbeat(
            self._open.interval_id, now=now, checkpointed=bool(metrics.get(CHECKPOINTED_KEY))
        )

    def on_failure(self, *, now: float) -> None:
        if self._open is not None:
            self._close(now=now, outcome="FAILED")

    def _close(self, *, now: float, outcome: str) -> None:
        assert self._open is not None
        self.ledger.close_interval(self._open.interval_id, now=now, outcome=outcome)
        ended = [r for r in self.ledger.intervals(self.run_id)
                 if r["interval_id"] == self._open.interval_id][0]["ended_at"]
        self._next_start = ended
        self._open = None


class RunAccount:
    """Every ledger write of one run. Clock values are passed in."""

    def __init__(self, ledger: Ledger, run_id: str):
        self.ledger, self.run_id = ledger, run_id

    def open(self, job: JobConfig, *, now: float) -> float:
        """Start the run, or resume it (closing an interval a dead driver left open, at
        its last heartbeat); returns what the ledger already holds for it, in dollars."""
        if not self.ledger.resume_run(self.run_id):
            self.ledger.start_run(
                run_id=self.run_id, job_name=job.name, config_hash=job.config_hash(),
                instance_type=job.cost.instance_type, spot=job.cost.spot,
                utilisation=job.cost.utilisation, budget_usd=job.cost.budget_usd, now=now)
            self._attach_plan_forecast(job)
        return self.ledger.run_cost_usd(self.run_id)

    def _attach_plan_forecast(self, job: JobConfig) -> None:
        """The newest before-launch forecast of this configuration becomes the run's own
        (copied: one dry run may precede several runs)."""
        plans = self.ledger.forecasts(config_hash=job.config_hash())
        if plans:
            plan = plans[-1]
            self.ledger.add_forecast(
                run_id=self.run_id, job_name=job.name, config_hash=job.config_hash(),
                made_at=plan["made_at"], forecast=plan, detail=plan["detail"])

    def record_forecast(self, forecast: Forecast, *, job: JobConfig, now: float,
                        detail: dict[str, Any] | None = None) -> None:
        """Store a forecast of this run made at ``now`` (a launch forecast, or one
        refreshed from the run's own learning curve)."""
        self.ledger.add_forecast(run_id=self.run_id, job_name=job.name,
                                 config_hash=job.config_hash(), made_at=now,
                                 forecast=forecast.as_record(), detail=detail)

    def accountant(self, *, run_started_at: float, accelerators_per_worker: float,
                   resources: dict[str, float], node_type: str | None = None,
                   node_spot: bool | None = None) -> RunAccountant:
        """The feed of this run's reports and failures into intervals, each priced at
        ``node_type`` and ``node_spot`` (None: the run's declared type and market)."""
        return RunAccountant(self.ledger, self.run_id, run_started_at=run_started_at,
                             accelerators_per_worker=accelerators_per_worker,
                             resources=resources, node_type=node_type, node_spot=node_spot)

    def finish(self, *, outcome: str, now: float, metrics: dict[str, Any]) -> None:
        """Record the run's end: its open interval closes and dollars to target are kept."""
        self.ledger.finish_run(self.run_id, now=now, outcome=outcome, final_metrics=metrics)
        if metrics.get("usd_to_target") is not None:
            self.ledger.record_target(self.run_id, usd_to_target=float(metrics["usd_to_target"]))

    def outcome(self) -> str | None:
        """The run's recorded outcome (``RUNNING`` while open); None if unknown."""
        return next((r["outcome"] for r in self.ledger.runs() if r["run_id"] == self.run_id),
                    None)

    def exists(self) -> bool:
        return self.outcome() is not None

    def abandon(self, *, outcome: str, relabel_failed: bool = False,
                now: float | None = None) -> None:
        """End a run whose processes were killed from outside, charged to ``now`` (the
        kill; None: its last heartbeat). Nothing happens if it already ended, unless
        ``relabel_failed`` and it ended FAILED because it was stopped from outside (its
        controller died under it)."""
        if self.outcome() == "RUNNING" or (relabel_failed and self.outcome() == "FAILED"):
            self.ledger.close_abandoned_run(self.run_id, outcome=outcome, now=now)

    def charge_start_up(self, *, attempt_started_at: float, now: float, num_workers: int,
                        accelerators_per_worker: float, resources: dict[str, float],
                        node_type: str | None = None, node_spot: bool | None = None,
                        ) -> None:
        """An attempt killed before its first report held its workers all the same:
        charge them (at ``node_type``, ``node_spot`` as :meth:`accountant`) from its
        start (or the end of the last interval) to ``now``, all of it as lost work.
        Nothing happens if the run is unknown or an interval is open."""
        if not self.exists():
            return
        if self.outcome() != "RUNNING":
            self.ledger.resume_run(self.run_id)
        previous = self.ledger.intervals(self.run_id)
        if any(i["outcome"] == "RUNNING" for i in previous):
            return  # the run reported after all; abandon() ends its open interval
        interval = self.ledger.open_interval(
            self.run_id, started_at=attempt_charged_from(previous, attempt_started_at),
            num_workers=num_workers,
            accelerators_per_worker=accelerators_per_worker, resources=resources,
            node_type=node_type, node_spot=node_spot)
        self.ledger.close_interval(interval, now=now, outcome="FAILED")

    def cost_usd(self) -> float:
        return self.ledger.run_cost_usd(self.run_id)

    def end_at_cap(self, *, attempt_started_at: float, now: float, num_workers: int,
                   accelerators_per_worker: float, resources: dict[str, float]) -> bool:
        """End the run ``BUDGET_EXHAUSTED`` at ``now`` (see :meth:`Ledger.end_at_cap`);
        False if it had already ended."""
        return bool(self.ledger.end_at_cap(
            self.run_id, attempt_started_at=attempt_started_at, now=now,
            num_workers=num_workers, accelerators_per_worker=accelerators_per_worker,
            resources=resources))

    def seconds_to_cap(self, *, budget_usd: float, usd_per_worker_s: float, now: float,
                       attempt_started_at: float, num_workers: int, margin_s: float) -> float:
        """Seconds until the run reaches ``budget_usd``, less ``margin_s``: its charges so
        far, then its open interval's workers from that interval's last heartbeat on; an
        attempt that has not reported yet runs ``num_workers`` workers, charged from its
        start (or the last interval's end) once it reports."""
        intervals = self.ledger.intervals(self.run_id)
        open_ = [i for i in intervals if i["outcome"] == "RUNNING"
                 and i["ended_at"] >= attempt_started_at]
        if open_:
            workers, since = open_[-1]["num_workers"], now - open_[-1]["ended_at"]
        else:
            workers = num_workers
            since = now - attempt_charged_from(intervals, attempt_started_at)
        return seconds_to_cap(budget_usd=budget_usd, spent_usd=self.cost_usd(),
                              usd_per_s=usd_per_worker_s * workers, since_s=max(since, 0.0),
                              margin_s=margin_s)


def record_plan_forecast(ledger: Ledger, job: JobConfig, forecast: Forecast, *, now: float,
                         detail: dict[str, Any] | None = None) -> None:
    """Store a before-launch forecast of ``job``; the next run of the same configuration
    takes it as its own when it starts (:meth:`RunAccount.open`)."""
    ledger.add_forecast(run_id=None, job_name=job.name, config_hash=job.config_hash(),
                        made_at=now, forecast=forecast.as_record(), detail=detail)


def record_submitted_plan(ledger: Ledger, job: JobConfig, plan: dict[str, Any]) -> None:
    """Keep the dry-run forecast ``costsched submit`` sent with ``job`` (a row of the
    config's own ledger) in the scheduler's ``ledger``, under the submitted config's hash,
    for its run's first start (:mod:`costsched.scheduler.launch`)."""
    ledger.add_forecast(run_id=None, job_name=job.name, config_hash=job.config_hash(),
                        made_at=float(plan["made_at"]), forecast=plan,
                        detail=dict(plan["detail"]))


def seconds_to_cap(*, budget_usd: float, spent_usd: float, usd_per_s: float,
                   since_s: float = 0.0, margin_s: float = 0.0) -> float:
    """Seconds until a run that has ``spent_usd`` (charged up to ``since_s`` ago) and
    runs on at ``usd_per_s`` reaches ``budget_usd``, less ``margin_s`` (the time its kill
    takes, also charged); inf without a budget or a price, never below 0.

        t = (budget_usd - spent_usd) / usd_per_s - since_s - margin_s
    """
    if budget_usd == float("inf") or usd_per_s <= 0:
        return float("inf")
    return max((budget_usd - spent_usd) / usd_per_s - since_s - margin_s, 0.0)


def cost_so_far_usd(
    *, usd_at_checkpoint: float, checkpoint_wall_time: float, now: float,
    world_size: int, rate: JobRate,
) -> float:
    """Cumulative dollars of a run, as a worker can compute it after a restart.

    usd = usd_at_checkpoint
          + rate.usd(num_workers=world_size, seconds=now - checkpoint_wall_time)

    The time between the checkpoint and a restart (work lost, the restart
    itself) is charged too, at the current worker count: users pay for it.
    Before the first checkpoint, pass 0 and the run's start time.
    """
    return usd_at_checkpoint + rate.usd(num_workers=world_size,
                                        seconds=max(0.0, now - checkpoint_wall_time))
