"""The driver of one run of a scheduled job: a detached actor on the head calling ``run_job``.

See :mod:`costsched.ray_layer.scheduler.runner`, which starts, stops and reads it.
"""

from __future__ import annotations

import dataclasses
import logging
import time

from costsched.config.job import JobConfig
from costsched.cost.prices import PriceCatalog
from costsched.goodput.restart import StartMarks

__all__ = ["RunDriver", "attach_launch_forecast", "code_env", "error_text", "keep_code"]

log = logging.getLogger(__name__)

CODE_PIN_S = 30 * 24 * 3600
"""How long a submitted job's code package is kept on the cluster without a running
job using it (Ray deletes unreferenced packages)."""


def code_env(job: JobConfig) -> dict | None:
    """The runtime environment of a job's driver (and so its workers): the job's code
    package as working directory, when ``costsched submit`` shipped one."""
    uri = job.working_dir
    return {"working_dir": uri} if uri and "://" in uri else None


def keep_code(job: JobConfig) -> None:
    """Keep the job's code package on the cluster while the job may still run."""
    if code_env(job) is not None:
        from ray._private.runtime_env.packaging import pin_runtime_env_uri

        pin_runtime_env_uri(job.working_dir, expiration_s=CODE_PIN_S)


ERROR_LINES = 40
"""Lines kept of a failed run's error: the user's traceback, innermost frames last."""


def error_text(exc: BaseException) -> str:
    """A run's error for ``costsched logs``: the message and the traceback's last lines."""
    text = str(exc).strip() or type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause).strip() and str(cause).strip() not in text:
        text += "\n" + str(cause).strip()
    lines = text.splitlines()
    return "\n".join(lines[:2] + (["..."] if len(lines) > ERROR_LINES else [])
                     + lines[max(2, len(lines) - ERROR_LINES + 2):])


def attach_launch_forecast(ledger, job: JobConfig, run_id: str, *, plan_hash: str,
                           num_nodes: int, batch_size: int | None, num_train_rows: int,
                           catalog: PriceCatalog) -> None:
    """At a scheduled run's first start: its launch forecast, from the dry-run plan
    submitted with its config (``plan_hash``, in the scheduler's ledger) rescaled to
    the run's workers, nodes, batch and billed price (:mod:`costsched.scheduler.launch`);
    to the target by the learning curve sent with the plan, else by that of the newest
    finished scheduled run of the same config. Nothing without such a plan, or once
    the run has started before."""
    from costsched.cost.accounting import RunAccount
    from costsched.cost.plans import (
        PRIOR_CURVE_KEY,
        PROFILED_CONFIG_KEY,
        newest_plan,
        scheduled_curve,
    )
    from costsched.scheduler.launch import launch_forecast

    try:
        account = RunAccount(ledger, run_id)
        if account.exists() or ledger.forecasts(run_id):
            return
        plan = newest_plan(ledger, plan_hash)
        if plan is None:
            return
        profiled = plan["detail"].get(PROFILED_CONFIG_KEY) or plan_hash
        if not plan["detail"].get(PRIOR_CURVE_KEY):  # an earlier scheduled run's, if any
            plan["detail"][PRIOR_CURVE_KEY] = scheduled_curve(ledger, profiled)
        forecast, profile = launch_forecast(
            job, plan, num_train_rows=num_train_rows, num_nodes=num_nodes,
            profiled_batch=job.training.global_batch_size, batch=batch_size, catalog=catalog)
        account.record_forecast(forecast, job=job, now=time.time(),
                                detail={**dataclasses.asdict(profile),
                                        "profiled_workers": plan["detail"]["num_workers"],
                                        PROFILED_CONFIG_KEY: profiled})
    except Exception:  # noqa: BLE001 - a forecast is advice: it must never stop the run
        log.warning("run %s: no launch forecast", run_id, exc_info=True)


class RunDriver:
    """Drives one run of one job; ``run`` once, then ``result`` any number of times
    (a call queues behind ``run``, so its reference is ready when the run ends)."""

    def __init__(self, job: JobConfig, catalog: PriceCatalog, ledger_path: str, run_id: str,
                 worker_nodes: list[str] | None, batch_size: int | None = None,
                 requested_at: float | None = None, plan_hash: str | None = None,
                 num_nodes: int = 1):
        self.args = (job, catalog, ledger_path, run_id, worker_nodes, batch_size, requested_at)
        self.launch = (plan_hash, num_nodes)  # where its launch forecast comes from
        self.outcome: tuple[str, dict] | None = None
        self.error: str | None = None

    def run(self) -> dict:
        from costsched.config.entrypoint import import_entrypoint
        from costsched.ray_layer.ledger import ledger_for
        from costsched.ray_layer.train.trainer import run_job
        from costsched.ray_layer.tune.cap import CapWatchdog
        from costsched.training.data import prepare

        job, catalog, ledger_path, run_id, worker_nodes, batch_size, requested_at = self.args
        driver_started_at = time.time()
        try:
            if job.entrypoint:
                import_entrypoint(job.entrypoint)  # fails here, before workers are asked for
            splits = prepare(job.dataset) if job.dataset is not None else None
            marks = StartMarks(requested_at=requested_at, driver_started_at=driver_started_at,
                               prepare_s=time.time() - driver_started_at)
            ledger = ledger_for(ledger_path, catalog)
            if splits is not None and self.launch[0]:
                attach_launch_forecast(ledger, job, run_id, plan_hash=self.launch[0],
                                       num_nodes=self.launch[1], batch_size=batch_size,
                                       num_train_rows=len(splits.x_train), catalog=catalog)
            # The cap held even if the scheduler cannot stop the run in time (it is down,
            # or a round runs late): charged to the cap, the run ends BUDGET_EXHAUSTED and
            # this process exits, its Train run with it.
            with CapWatchdog(job, run_id, ledger=ledger, catalog=catalog):
                result = run_job(job, splits, catalog=catalog, ledger=ledger, run_id=run_id,
                                 verbose=False, worker_nodes=worker_nodes,
                                 batch_size=batch_size, start_marks=marks)
            self.outcome = (result.outcome, {"global_step": result.metrics.get("global_step")})
        except Exception as exc:  # noqa: BLE001 - reported to the scheduler by result()
            self.error = error_text(exc)
        return self.result()

    def result(self) -> dict:
        if self.error is not None:
            return {"error": self.error}
        outcome, metrics = self.outcome or ("FAILED", {})
        return {"outcome": outcome, "metrics": metrics}
