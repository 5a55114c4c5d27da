"""Job config -> Ray Train ``TorchTrainer`` (V2), with the cost ledger fed by a callback."""

from __future__ import annotations

import logging
import os
import time
import uuid
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import ray.data
from ray.data.extensions import ArrowTensorArray
from ray.train import (
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    RunConfig,
    ScalingConfig,
    UserCallback,
)
from ray.train.torch import TorchTrainer

from costsched import api
from costsched.config.entrypoint import BUILTIN_ENTRYPOINT, import_entrypoint
from costsched.config.job import JobConfig
from costsched.cost.accounting import CHECKPOINTED_KEY, RunAccount, RunAccountant
from costsched.cost.forecast import CurveTracker
from costsched.cost.ledger import Ledger
from costsched.cost.prices import JobRate, PriceCatalog, rate_of_job
from costsched.errors import CostschedError
from costsched.goodput.restart import StartMarks
from costsched.ray_layer import channel
from costsched.ray_layer.console import MARKER
from costsched.ray_layer.ledger import RemoteLedger, ledger_for
from costsched.ray_layer.train.session import TRAIN_SPLIT, RayTrainSession
from costsched.training.data import Splits
from costsched.training.loop import builtin_config
from costsched.training.model_factory import JobModelFactory
from costsched.training.run import RUN_METRIC_KEYS, Run, RunSpec, run_outcome
from costsched.training.state import progress_record

log = logging.getLogger(__name__)

# Worker-group start-ups that may time out (60 s each) before the run fails, so a
# request the cluster can never hold ends with an error instead of waiting forever,
# while an autoscaler still has ~10 minutes to add nodes.
CONTROLLER_FAILURE_LIMIT = 10
NODE_ID_LABEL = "ray.io/node-id"


@dataclass(frozen=True, kw_only=True)
class JobResult:
    run_id: str
    outcome: str
    """COMPLETED, TARGET_REACHED, BUDGET_EXHAUSTED or FAILED."""
    metrics: dict[str, Any]
    checkpoint_path: str | None
    cost_usd: float


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Each worker: bind a :class:`Run` to :mod:`costsched.api` and call the entrypoint."""
    spec: RunSpec = config["spec"]
    job = spec.job
    session = RayTrainSession(shuffle_seed=job.training.seed,
                              cache_shard=job.dataset.cache_shard if job.dataset else True,
                              strategy=job.scaling.strategy,
                              train_arrays=config.get("train_arrays"))
    function = import_entrypoint(config["entrypoint"])
    run = Run(spec, session)
    with api.bound(run):
        function(dict(spec.entrypoint_config))
        run.close()


class LedgerCallback(UserCallback):
    """Runs in the Train controller (on the driver's node) and writes the ledger."""

    def __init__(self, *, ledger: Ledger | RemoteLedger, run_id: str,
                 run_started_at: float, accelerators_per_worker: float,
                 resources: dict[str, float], verbose: bool = True,
                 step_lines: bool = False, job: JobConfig, rate: JobRate):
        self._args = (ledger, run_id, run_started_at, accelerators_per_worker,
                      resources)
        self._run_id = run_id
        self._accountant: RunAccountant | None = None
        self._verbose = verbose
        self._step_lines = step_lines  # a line per checkpoint (entrypoints: no epochs)
        self._job, self._rate = job, rate
        self._curve: CurveTracker | None = None

    def _get(self) -> RunAccountant:
        if self._accountant is None:
            ledger, run_id, started, accel, resources = self._args
            self._accountant = RunAccount(ledger, run_id).accountant(
                run_started_at=started, accelerators_per_worker=accel, resources=resources,
                node_type=self._job.cost.instance_type, node_spot=self._job.cost.spot)
        return self._accountant

    def _refresh_forecast(self, metrics: dict[str, Any], now: float) -> None:
        """After an epoch of a built-in job: its forecast from its own curve, stored."""
        if self._job.entrypoint is not None:
            return
        ledger, run_id, started = self._args[0], self._run_id, self._args[2]
        if self._curve is None:
            plans = [f for f in ledger.forecasts(run_id) if f["source"] == "profile"]
            training = self._job.training
            self._curve = CurveTracker(
                num_epochs=training.num_epochs, rate=self._rate, run_started_at=started,
                target=training.target_value if training.target_metric else None,
                tail_s=plans[-1]["detail"].get("tail_s", 0.0) if plans else 0.0)
        forecast = self._curve.on_report(metrics)
        if forecast is not None:
            RunAccount(ledger, run_id).record_forecast(forecast, job=self._job, now=now)

    def after_report(self, run_context, metrics, checkpoint) -> None:
        now = time.time()
        self._get().on_report(metrics[0], now=now)
        try:
            self._refresh_forecast(metrics[0], now)
        except Exception:  # noqa: BLE001 - advice only: it must never end the run
            log.warning("run %s: forecast not refreshed", self._run_id, exc_info=True)
        channel.publish_progress(self._run_id, progress_record(metrics[0], now=now))
        m = metrics[0]
        if not self._verbose or m.get("final"):
            return
        if self._step_lines:
            if m.get(CHECKPOINTED_KEY) or any(k.startswith("val_") for k in m):
                shown = "  ".join(f"{k} {v:.4g}" for k, v in m.items()
                                  if k not in RUN_METRIC_KEYS and isinstance(v, int | float))
                print(f"{MARKER}step {m.get('global_step', '-'):>6}  {shown}  workers "
                      f"{m['world_size']}  ${m['cost_usd']:.5f}", flush=True)
        elif "val_accuracy" in m:
            print(f"{MARKER}epoch {m['epoch']:>3}  step {m['global_step']:>6}  "
                  f"loss {m.get('loss', float('nan')):.4f}  val_acc {m['val_accuracy']:.4f}  "
                  f"{m.get('samples_per_s', 0.0):.0f} samples/s  workers {m['world_size']}  "
                  f"${m['cost_usd']:.5f}", flush=True)

    def after_exception(self, run_context, worker_exceptions) -> None:
        self._get().on_failure(now=time.time())
        if self._verbose:
            ranks = sorted(worker_exceptions)
            errors = {str(e).strip().splitlines()[-1][:200] for e in worker_exceptions.values()
                      if str(e).strip()}
            print(f"{MARKER}worker(s) {ranks} failed: {'; '.join(sorted(errors)) or '?'} "
                  "(Ray Train restarts from the latest checkpoint while max_failures allows)",
                  flush=True)


def failure_summary(exc: BaseException) -> str:
    """One line for a failed run: the innermost error the workers raised (the last
    line of the traceback Ray carries), else the exception's first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith(("File ", "^", "Traceback"))
              and ("Error" in line.split(":")[0] or "Exception" in line.split(":")[0])]
    return (errors[-1] if errors else lines[0] if lines else type(exc).__name__)[:300]


def to_ray_dataset(x: np.ndarray, y: np.ndarray) -> ray.data.Dataset:
    import pyarrow as pa

    ray.data.DataContext.get_current().enable_progress_bars = False
    table = pa.table({"x": ArrowTensorArray.from_numpy(x), "y": pa.array(y)})
    return ray.data.from_arrow(table)


IN_MEMORY_MB_ENV = "COSTSCHED_IN_MEMORY_SPLIT_MB"
"""A built-in job's training split up to this many MiB (default 256; 0: never)
reaches its workers through the object store, each worker taking every
world_size-th row, instead of through Ray Data: a (re)start then starts no dataset
actors and no streaming split (``bench/restart_cost.py`` measures both ways)."""


def in_memory_train_split(job: JobConfig, splits: Splits | None) -> bool:
    """Whether the job's training split travels through the object store (see
    :data:`IN_MEMORY_MB_ENV`); user entrypoints always get a Ray Data shard."""
    limit = float(os.environ.get(IN_MEMORY_MB_ENV, "256")) * 2**20
    return (splits is not None and job.entrypoint is None and job.dataset is not None
            and job.dataset.cache_shard
            and 0 < splits.x_train.nbytes + splits.y_train.nbytes <= limit)


def build_trainer(job: JobConfig, splits: Splits | None, *, run_id: str, run_started_at: float,
                  catalog: PriceCatalog,
                  usd_before_start: float = 0.0,
                  verbose: bool = True, callbacks: list[UserCallback] | None = None,
                  worker_nodes: list[str] | None = None,
                  batch_size: int | None = None,
                  start_marks: StartMarks | None = None,
                  ledger: RemoteLedger | None = None,
                  schedule_epochs: int | None = None) -> TorchTrainer:
    scaling = job.scaling
    entrypoint = job.entrypoint or BUILTIN_ENTRYPOINT
    if job.entrypoint:
        entrypoint_config = dict(job.entrypoint_config)
    else:
        entrypoint_config = builtin_config(
            model_factory=JobModelFactory(job=job, input_shape=splits.input_shape,
                                          num_classes=splits.num_classes),
            x_val=splits.x_val, y_val=splits.y_val, x_test=splits.x_test, y_test=splits.y_test,
            num_train_rows=len(splits.x_train), schedule_epochs=schedule_epochs)
    spec = RunSpec(job=job, rate=rate_of_job(job, catalog), run_started_at=run_started_at,
                   usd_before_start=usd_before_start, entrypoint_config=entrypoint_config,
                   batch_size=batch_size, start_marks=start_marks or StartMarks())
    num_workers: int | tuple[int, int] = scaling.max_workers
    if scaling.min_workers < scaling.max_workers:
        num_workers = (scaling.min_workers, scaling.max_workers)
    resources = scaling.resources_per_worker()
    callback = LedgerCallback(
        ledger=ledger or ledger_for(job.resolved_ledger_path(), catalog), run_id=run_id,
        run_started_at=run_started_at, accelerators_per_worker=scaling.accelerators_per_worker,
        resources=resources, verbose=verbose,
        step_lines=job.entrypoint is not None,
        job=job, rate=spec.rate,
    )
    in_memory = in_memory_train_split(job, splits)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"spec": spec, "entrypoint": entrypoint,
                           "train_arrays": ray.put((splits.x_train, splits.y_train))
                           if in_memory else None},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=scaling.use_gpu,
                                     resources_per_worker=resources,
                                     label_selector=_pinned(worker_nodes),
                                     elastic_resize_monitor_interval_s=(
                                         scaling.elastic_resize_interval_s)),
        run_config=RunConfig(
            name=run_id, storage_path=job.resolved_storage_path(),
            failure_config=FailureConfig(max_failures=job.checkpoint.max_failures,
                                         controller_failure_limit=CONTROLLER_FAILURE_LIMIT),
            checkpoint_config=CheckpointConfig(num_to_keep=job.checkpoint.num_to_keep),
            callbacks=[callback, *(callbacks or [])],
            logging_config=LoggingConfig(log_level="WARNING"),
        ),
        datasets=({TRAIN_SPLIT: to_ray_dataset(splits.x_train, splits.y_train)}
                  if splits is not None and not in_memory else None),
    )


def _pinned(worker_nodes: list[str] | None) -> list[dict[str, str]] | None:
    """One ``ray.io/node-id`` label selector per worker: worker i runs on node i."""
    return [{NODE_ID_LABEL: node} for node in worker_nodes] if worker_nodes else None


def new_run_id(job: JobConfig) -> str:
    return f"{job.name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def last_report(run_id: str, *, since: float) -> dict[str, Any]:
    """The step and outcome fields of the run's last report (from its channel) if it was
    made at or after ``since`` (this attempt's), else nothing."""
    progress = channel.progress(run_id) or {}
    if float(progress.get("reported_at", 0.0)) < since:
        return {}
    return {k: progress[k] for k in ("global_step", "stop_reason", "final") if k in progress}


def run_job(job: JobConfig, splits: Splits | None, *, catalog: PriceCatalog,
            ledger: Ledger | RemoteLedger,
            run_id: str | None = None,
            verbose: bool = True, callbacks: list[UserCallback] | None = None,
            worker_nodes: list[str] | None = None, batch_size: int | None = None,
            start_marks: StartMarks | None = None,
            schedule_epochs: int | None = None) -> JobResult:
    """Train ``job`` on the connected Ray cluster; every interval lands in the ledger.

    A ``run_id`` the ledger already knows is resumed: its checkpoints are picked
    up and its earlier intervals stay charged, once. ``worker_nodes`` (one node id
    per worker, fixed-size jobs only) pins each worker to its node. ``batch_size``: the
    global batch an adaptive job runs at this time (None: the config's); ``start_marks``:
    what the scheduler's driver did before (the restart cost's first phases);
    ``schedule_epochs``: the epochs the built-in loop's learning-rate schedule spans
    (None: the job's ``num_epochs``; a profile keeps the job's whole schedule).
    """
    run_id = run_id or new_run_id(job)
    # The Train controller consumes worker reports (and registers checkpoints) once per
    # health check, 2 s by default; a worker blocks on its next report until then.
    # Polling faster keeps frequent checkpoints cheap and loses fewer of them to a crash.
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    started = time.time()
    if not isinstance(ledger, RemoteLedger):  # every write goes through the ledger's actor
        ledger = ledger_for(ledger.path, catalog)
    account = RunAccount(ledger, run_id)
    usd_before_start = account.open(job, now=started)
    try:
        trainer = build_trainer(job, splits, run_id=run_id, run_started_at=started,
                                catalog=catalog, verbose=verbose,
                                usd_before_start=usd_before_start, callbacks=callbacks,
                                worker_nodes=worker_nodes, batch_size=batch_size,
                                start_marks=start_marks, ledger=ledger,
                                schedule_epochs=schedule_epochs)
        result = trainer.fit()
    except Exception as exc:  # the run failed beyond max_failures: record it, then say why
        account.finish(outcome="FAILED", now=time.time(), metrics={"error": str(exc)[:500]})
        raise CostschedError(f"run {run_id} failed: {failure_summary(exc)}") from exc
    # Ray Train's result carries the metrics of the newest checkpoint; the outcome is that
    # of the last report this run made (a run resumed from a stop's checkpoint that wrote
    # none since would otherwise end as that stop).
    metrics = dict(result.metrics or {}) | last_report(run_id, since=started)
    outcome = run_outcome(metrics, channel.stop_request(run_id))
    account.finish(outcome=outcome, now=time.time(), metrics=metrics)
    return JobResult(
        run_id=run_id, outcome=outcome, metrics=metrics,
        checkpoint_path=result.checkpoint.path if result.checkpoint else None,
        cost_usd=account.cost_usd(),
    )
