"""Ray Tune wiring for sweeps: each trial is a Ray Train ``TorchTrainer`` run.

Ray 2.60's pattern for Tune over Train V2: the trial function builds and fits a
``TorchTrainer`` whose ``RunConfig`` carries a ``TuneReportCallback``, which
forwards rank 0's reports to Tune. Here that callback also adds the sweep's
objective. The hard budget is enforced twice: a searcher gate launches a trial
only if what was spent, plus what running trials may still spend, plus the new
trial's cap fits the budget (a cap sized from the base job's forecast when there
is one: :mod:`costsched.sweep.gate`); and each trial runs with ``budget_usd`` = its cap,
so its own loop stops before crossing it, and a watchdog ends it at the cap when
it cannot stop itself (still starting, or stuck between reports).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from typing import Any

from ray import tune
from ray.tune.integration.ray_train import TuneReportCallback
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from costsched.cost.accounting import RunAccount
from costsched.cost.ledger import Ledger
from costsched.cost.prices import PriceCatalog
from costsched.ray_layer.ledger import ledger_for
from costsched.ray_layer.train.trainer import run_job
from costsched.ray_layer.tune.cap import CapWatchdog
from costsched.sweep.config import LoadedSweep, job_for
from costsched.sweep.gate import RunningTrial, new_trial_cap, room_usd
from costsched.sweep.objective import objective_usd
from costsched.training.data import Splits

OBJECTIVE = "objective_usd"
ACCURACY = "best_val_accuracy"
SPENT = "cost_usd"
TRAINING_SPENT = "training_cost_usd"
"""Dollars since the trial's first report: ASHA's time axis, so start-up (which costs
every trial alike, and on a small job most of its dollars) does not decide the rungs."""
TRIAL_CAP_KEY = "_trial_cap_usd"
"""Config key the budget gate adds to a trial's point: the cap that trial runs under
(:mod:`costsched.sweep.gate`); kept in Tune's state, so a resumed trial keeps it."""


@dataclass(frozen=True, kw_only=True)
class TrialContext:
    """What every trial needs besides its point; shipped once through the object store."""

    sweep: LoadedSweep
    splits: Splits
    catalog: PriceCatalog
    ledger_path: str
    trials_storage: str
    trial_cap_usd: float
    """What one trial may spend (the configured cap, raised to reach the first rung)."""


class SweepReportCallback(TuneReportCallback):
    """Forwards worker reports to Tune with the best accuracy and the objective added."""

    def __init__(self, target: float, cap_usd: float):
        super().__init__()
        self._target, self._cap = target, cap_usd
        self._best = 0.0
        self._first_usd: float | None = None

    def after_report(self, run_context, metrics, checkpoint):
        m = dict(metrics[0])
        self._best = max(self._best, float(m.get("val_accuracy", 0.0)))
        m[ACCURACY] = self._best
        if self._first_usd is None:
            self._first_usd = float(m[SPENT])
        m[TRAINING_SPENT] = float(m[SPENT]) - self._first_usd
        m["reached_target"] = m.get("usd_to_target") is not None
        m[OBJECTIVE] = objective_usd(usd_to_target=m.get("usd_to_target"),
                                     best_accuracy=self._best, target=self._target,
                                     cap_usd=self._cap)
        super().after_report(run_context, [m, *metrics[1:]], checkpoint)


def recorded_result(run: dict[str, Any], target: float, cap_usd: float) -> dict[str, Any]:
    """A finished trial's metrics as the report callback would have sent them."""
    metrics = json.loads(run["final_metrics"] or "{}")
    history = metrics.get("history", [])
    best = max([h.get("val_accuracy", 0.0) for h in history] or [0.0])
    usd_to_target = run["usd_to_target"]
    return metrics | {
        ACCURACY: best, "reached_target": usd_to_target is not None,
        "usd_to_target": usd_to_target,
        OBJECTIVE: objective_usd(usd_to_target=usd_to_target, best_accuracy=best,
                                 target=target, cap_usd=cap_usd),
    }


def trial_run_id(sweep_name: str, trial_id: str) -> str:
    return f"{sweep_name}-{trial_id}"


def run_trial(point: dict[str, Any], ctx: TrialContext) -> None:
    """One trial: the base job with ``point`` applied, capped at the trial budget."""
    cfg = ctx.sweep.config
    trial_id = tune.get_context().get_trial_id()
    point = dict(point)
    cap_usd = min(float(point.pop(TRIAL_CAP_KEY, ctx.trial_cap_usd)), ctx.trial_cap_usd)
    job = job_for(ctx.sweep.base, point, ctx.catalog)
    job = replace(job, name=f"{cfg.name}-trial", storage_path=ctx.trials_storage,
                  ledger_path=ctx.ledger_path,
                  cost=replace(job.cost, budget_usd=cap_usd),
                  training=replace(job.training, target_metric="val_accuracy",
                                   target_value=cfg.target_value))
    ledger = ledger_for(job.resolved_ledger_path(), ctx.catalog)  # the head's one writer
    run_id = trial_run_id(cfg.name, trial_id)
    finished = next((r for r in ledger.runs() if r["run_id"] == run_id
                     and r["outcome"] != "RUNNING"), None)
    if finished is not None:
        # Finished before a resumed sweep's driver died, but after Tune last saved its
        # state: report the recorded result instead of training (and paying) again.
        tune.report(recorded_result(finished, cfg.target_value, ctx.trial_cap_usd))
        return
    with CapWatchdog(job, run_id, ledger=ledger, catalog=ctx.catalog):
        run_job(job, ctx.splits, catalog=ctx.catalog, ledger=ledger,
                run_id=run_id, verbose=False,
                callbacks=[SweepReportCallback(cfg.target_value, ctx.trial_cap_usd)])


class BudgetGate(Searcher):
    """Wraps a searcher; suggests a new trial only while the sweep budget can hold it,
    with the cap it runs under added to its point (:mod:`costsched.sweep.gate`)."""

    def __init__(self, searcher: Searcher, *, ledger: Ledger, sweep_name: str,
                 budget_usd: float, trial_cap_usd: float, need_usd: float | None = None,
                 max_concurrent: int = 1, num_trials: int = 1, target: float | None = None):
        """``target``: the sweep's target value, to score a trial its cap's watchdog ended
        from what the ledger recorded of it (None: such a trial stays an error)."""
        super().__init__(metric=searcher.metric, mode=searcher.mode)
        self.target = target
        self.last: dict[str, dict] = {}
        """Each running trial's newest result: what a trial ended at its cap reached."""
        self.searcher = searcher
        self.ledger, self.prefix = ledger, f"{sweep_name}-"
        self.budget, self.cap = budget_usd, trial_cap_usd
        self.need = min(need_usd or trial_cap_usd, trial_cap_usd)
        self.max_concurrent, self.num_trials = max_concurrent, num_trials
        self.live: set[str] = set()
        self.caps: dict[str, float] = {}
        self.launched = 0
        self.refused = 0

    def ledger_view(self) -> tuple[float, list[RunningTrial], float]:
        """(dollars spent by all the sweep's runs, its running trials at their caps, the
        largest overrun of a cap so far).

        Running trials are those launched here and not complete, and those the
        ledger shows running (trials a resumed sweep restarted without asking us).
        A run's cap is the budget the ledger holds for it (a trial runs with its cap
        as its budget), at most the sweep's trial cap. A trial's budget stop lands a
        little past its cap when stopping takes longer than its reserve (a loaded
        machine): the gate then adds the worst such overrun to every trial's cap.
        """
        per_run: dict[str, float] = {}
        for row in self.ledger.intervals():
            if row["run_id"].startswith(self.prefix):
                per_run[row["run_id"]] = per_run.get(row["run_id"], 0.0) + row["cost_usd"]
        runs = {r["run_id"]: r for r in self.ledger.runs() if r["run_id"].startswith(self.prefix)}

        def cap_of(run_id: str) -> float:
            if run_id in runs:
                return min(self.cap, float(runs[run_id]["budget_usd"]))
            return self.caps.get(run_id.removeprefix(self.prefix), self.cap)

        overrun = max([0.0, *(usd - cap_of(r) for r, usd in per_run.items())])
        running = {self.prefix + t for t in self.live} | {
            r for r, row in runs.items() if row["outcome"] == "RUNNING"}
        trials = [RunningTrial(cap_usd=cap_of(r), spent_usd=per_run.get(r, 0.0))
                  for r in sorted(running)]
        return sum(per_run.values()), trials, overrun

    def spend(self) -> tuple[float, float, float]:
        """(dollars spent, dollars running trials may still spend, what a trial at the
        sweep's cap may spend: the cap plus the largest overrun so far)."""
        spent, running, overrun = self.ledger_view()
        reserved = sum(max(0.0, t.cap_usd + overrun - t.spent_usd) for t in running)
        return spent, reserved, self.cap + overrun

    def next_cap(self) -> float | None:
        """The cap the next trial would run under; None when the budget cannot hold it."""
        spent, running, overrun = self.ledger_view()
        room = room_usd(budget_usd=self.budget, spent_usd=spent, running=running,
                        overrun_usd=overrun)
        other = min(self.max_concurrent - len(running), self.num_trials - self.launched) - 1
        return new_trial_cap(room_usd=room, cap_usd=self.cap, need_usd=self.need,
                             other_slots=other)

    def suggest(self, trial_id: str):
        cap = self.next_cap()
        if cap is None:
            self.refused += 1
            return None if self.live else Searcher.FINISHED
        suggestion = self.searcher.suggest(trial_id)
        if isinstance(suggestion, dict):
            self.live.add(trial_id)
            self.caps[trial_id] = cap
            self.launched += 1
            suggestion = {**suggestion, TRIAL_CAP_KEY: cap}
        return suggestion

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.last[trial_id] = result
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        self.live.discard(trial_id)
        run_id = self.prefix + trial_id
        # Early-stopped: Tune ended the trial and its workers with it, so its reserve is
        # released now; charged until now, when the stop freed its workers (a run that
        # ended by itself, or at its cap, is closed already and left as it is).
        RunAccount(self.ledger, run_id).abandon(outcome="STOPPED_EARLY", now=time.time())
        if error and self.target is not None:
            result, error = self.ended_at_cap(trial_id, result, error)
        self.last.pop(trial_id, None)
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def ended_at_cap(self, trial_id: str, result: dict | None,
                     error: bool) -> tuple[dict | None, bool]:
        """A trial whose watchdog ended it at its cap (:mod:`~costsched.ray_layer.tune.cap`)
        exits its process, so Tune reports an error without its metrics. The searcher
        learns from its newest report instead (from the ledger's record if it never
        reported), as from a trial that stopped itself at its budget."""
        run = next((r for r in self.ledger.runs() if r["run_id"] == self.prefix + trial_id),
                   None)
        if run is None or run["outcome"] != "BUDGET_EXHAUSTED":
            return result, error
        if trial_id in self.last:
            return self.last[trial_id], False
        return recorded_result(run, self.target, self.caps.get(trial_id, self.cap)), False

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def get_state(self) -> dict:
        return {"live": set(self.live), "refused": self.refused, "caps": dict(self.caps),
                "launched": self.launched}

    def set_state(self, state: dict) -> None:
        self.live, self.refused = set(state["live"]), state["refused"]
        self.caps, self.launched = dict(state.get("caps", {})), state.get("launched", 0)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def param_space(sweep: LoadedSweep) -> dict[str, Any]:
    space = {}
    for key, dim in sweep.config.space.items():
        if dim.choice:
            space[key] = tune.choice(list(dim.choice))
        elif dim.uniform:
            space[key] = tune.uniform(*dim.uniform)
        else:
            space[key] = tune.loguniform(*dim.loguniform)
    return space


def build_search(sweep: LoadedSweep, ledger: Ledger, first_points: list[dict[str, Any]],
                 trial_cap_usd: float | None = None,
                 need_usd: float | None = None) -> Searcher:
    """The search algorithm behind the budget gate, at most ``max_concurrent_trials`` at once.

    ``first_points`` are evaluated before the algorithm proposes its own (the baseline);
    ``cfo`` starts from the cheapest sensible point near the first of them instead.
    """
    cfg = sweep.config
    if cfg.search.algorithm == "cfo":
        from costsched.ray_layer.tune.cfo_search import CostFrugalSearcher
        from costsched.sweep.cfo import CostFrugalSearch, cheapest_start

        start = cheapest_start(cfg.space, first_points[0] if first_points else {},
                               cfg.search.low_cost)
        inner = CostFrugalSearcher(CostFrugalSearch(cfg.space, start=start,
                                                    seed=cfg.search.seed), metric=OBJECTIVE)
    elif cfg.search.algorithm == "nsga2":
        import optuna

        inner = OptunaSearch(metric=[ACCURACY, SPENT], mode=["max", "min"],
                             points_to_evaluate=first_points,
                             sampler=optuna.samplers.NSGAIISampler(seed=cfg.search.seed))
    else:
        import optuna

        sampler = (optuna.samplers.TPESampler(seed=cfg.search.seed)
                   if cfg.search.algorithm == "tpe"
                   else optuna.samplers.RandomSampler(seed=cfg.search.seed))
        inner = OptunaSearch(metric=OBJECTIVE, mode="min", sampler=sampler,
                             points_to_evaluate=first_points)
    gate = BudgetGate(inner, ledger=ledger, sweep_name=cfg.name, budget_usd=cfg.budget_usd,
                      trial_cap_usd=trial_cap_usd or cfg.trial_budget_usd,
                      need_usd=need_usd if cfg.forecast_gate else None,
                      max_concurrent=cfg.max_concurrent_trials, num_trials=cfg.num_trials,
                      target=cfg.target_value)
    return ConcurrencyLimiter(gate, max_concurrent=cfg.max_concurrent_trials)


def build_scheduler(sweep: LoadedSweep, max_training_usd: float | None = None):
    """ASHA on the training-dollars axis (or FIFO); its last rung ``max_training_usd``,
    what a trial may spend once started (default: the configured trial cap)."""
    cfg = sweep.config
    if cfg.scheduler.kind == "none":
        return FIFOScheduler()
    # Rungs on the dollar axis, counted from each trial's first report: at each, keep the
    # trials with the best accuracy so far. At the cap a trial's own budget stop ends it.
    return ASHAScheduler(time_attr=TRAINING_SPENT, metric=ACCURACY, mode="max",
                         grace_period=cfg.scheduler.grace_usd,
                         max_t=max(max_training_usd or cfg.trial_budget_usd,
                                   cfg.scheduler.grace_usd),
                         reduction_factor=cfg.scheduler.reduction_factor,
                         stop_last_trials=False)


