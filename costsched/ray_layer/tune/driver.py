"""Runs a sweep end to end: Tuner (or its restore), then the outputs from Tune and the ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from costsched.cost.accounting import RunAccount
from costsched.cost.ledger import Ledger
from costsched.cost.prices import PriceCatalog
from costsched.cost.report import intervals_frame
from costsched.ray_layer.cluster import ensure_ray
from costsched.ray_layer.ledger import ledger_for
from costsched.ray_layer.tune.plan import trial_plan
from costsched.ray_layer.tune.release import FreeOrphanedSlots
from costsched.ray_layer.tune.trial import (
    ACCURACY,
    OBJECTIVE,
    TrialContext,
    build_scheduler,
    build_search,
    param_space,
    run_trial,
    trial_run_id,
)
from costsched.sweep.config import LoadedSweep, job_for, value_in_job
from costsched.sweep.outputs import (
    RESULT_COLUMNS,
    plot_pareto,
    rank,
    with_serving,
    write_best_job,
    write_table,
)
from costsched.sweep.plan import plan_lines
from costsched.sweep.trial_size import (
    export_trained_model,
    model_footprint,
    newest_checkpoint,
    serving_latencies_ms,
)
from costsched.training.data import Splits, prepare


def baseline_point(sweep: LoadedSweep) -> dict[str, Any]:
    """The base job's own value of every searched field (the first trial evaluated)."""
    return {key: value_in_job(sweep.base_job, key) for key in sweep.config.space}


def trials_storage(sweep: LoadedSweep, root: Path) -> str:
    """Where trials checkpoint: under the base job's ``storage_path`` when it is a URI
    (an object store every node reaches: a trial may resume on another node), else in
    the sweep's folder."""
    base = sweep.base_job.storage_path
    if "://" in base:
        return f"{base.rstrip('/')}/sweeps/{sweep.config.name}/trials"
    return str(root / "trials")


def run_sweep(sweep: LoadedSweep, catalog: PriceCatalog, *, resume: bool,
              address: str | None, out_dir: str | None, verbose: bool = False) -> str:
    cfg = sweep.config
    root = cfg.resolved_storage_path() / cfg.name
    ledger_path = root / "ledger.db"
    ensure_ray(sweep.base_job, address)
    ledger = ledger_for(ledger_path, catalog)  # the head's one writer
    splits = prepare(sweep.base_job.dataset)
    planned = trial_plan(sweep, splits, catalog, ledger, measure=cfg.profile)
    plan = planned[0] if planned else None
    if plan is not None:
        for line in plan_lines(cfg, plan):
            print(line, flush=True)
    cap = plan.trial_cap_usd if plan else cfg.trial_budget_usd
    ctx = TrialContext(sweep=sweep, splits=splits, catalog=catalog,
                       ledger_path=str(ledger_path), trials_storage=trials_storage(sweep, root),
                       trial_cap_usd=cap)
    # The trial function only drives its TorchTrainer; the workers reserve the CPUs.
    # It reserves a token of memory, not CPU: a CPU fraction would keep a worker out.
    trainable = tune.with_resources(tune.with_parameters(run_trial, ctx=ctx),
                                    {"CPU": 0, "memory": 1024**2})
    experiment = root / "tune"
    if resume and tune.Tuner.can_restore(str(experiment)):
        tuner = tune.Tuner.restore(str(experiment), trainable=trainable,
                                   resume_unfinished=True, restart_errored=True)
    else:
        # The searcher and the scheduler each carry their own metric and mode.
        tuner = tune.Tuner(
            trainable, param_space=param_space(sweep),
            tune_config=tune.TuneConfig(
                search_alg=build_search(sweep, ledger, [baseline_point(sweep)],
                                        trial_cap_usd=cap,
                                        need_usd=plan.forecast_cap_usd if plan else None),
                scheduler=build_scheduler(sweep, plan.asha_max_usd if plan else None),
                num_samples=cfg.num_trials),
            run_config=tune.RunConfig(name="tune", storage_path=str(root),
                                     verbose=1 if verbose else 0,
                                     callbacks=[FreeOrphanedSlots()]),
        )
    grid = tuner.fit()
    frame = results_frame(grid, sweep, ledger, splits, catalog)
    serving = cfg.objective.serving
    if serving is not None:
        frame = with_serving(frame, trained_latencies(frame, sweep, ctx, serving.batch_size),
                             serving, catalog)
    out = Path(out_dir) if out_dir else root / "outputs"
    summary = write_outputs(frame, sweep, ledger, out)
    return "\n".join([summary, *export_best(frame, sweep, ctx, out)])


def trained_latencies(frame: pd.DataFrame, sweep: LoadedSweep, ctx: TrialContext,
                      batch_size: int) -> dict[str, float | None]:
    """Each trial's serving latency (ms per batch of ``batch_size``), measured here on its
    newest checkpoint in inference form, all trials interleaved; None without one
    (ended before it saved one, or checkpointed to an object store, not read back)."""
    found: dict[str, tuple] = {}
    for _, row in frame.iterrows():
        run_dir = Path(ctx.trials_storage) / trial_run_id(sweep.config.name, row["trial_id"])
        checkpoint = None if "://" in ctx.trials_storage else newest_checkpoint(run_dir)
        if checkpoint is not None:
            found[row["trial_id"]] = (job_for(sweep.base, json.loads(row["config"]),
                                              ctx.catalog), checkpoint)
    measured = serving_latencies_ms(found, ctx.splits, batch_size=batch_size)
    return {trial_id: measured.get(trial_id) for trial_id in frame["trial_id"]}


def export_best(frame: pd.DataFrame, sweep: LoadedSweep, ctx: TrialContext,
                out: Path) -> list[str]:
    """The best trial's trained model, exported and measured (trials checkpointed to
    this machine's disk only; an object store is left as it is)."""
    if frame.empty or "://" in ctx.trials_storage:
        return []
    best = frame.iloc[0]
    run_dir = Path(ctx.trials_storage) / trial_run_id(sweep.config.name, best["trial_id"])
    checkpoint = newest_checkpoint(run_dir)
    if checkpoint is None:
        return [f"best model: no checkpoint of trial {best['trial_id']} to export"]
    job = job_for(sweep.base, json.loads(best["config"]), ctx.catalog)
    model = export_trained_model(job, ctx.splits, checkpoint, out / "best_model.pt")
    return [f"best model: {model['path']} (trained weights, inference form): "
            f"{model['num_params']:,} parameters ({model['num_nonzero_params']:,} nonzero), "
            f"{model['model_bytes']:,} bytes, {model['cpu_latency_ms']:.3f} ms per sample on "
            f"this CPU, test accuracy {model['test_accuracy']:.4f}"]


def results_frame(grid, sweep: LoadedSweep, ledger: Ledger, splits: Splits,
                  catalog: PriceCatalog) -> pd.DataFrame:
    mark_early_stops(grid, sweep, ledger)
    charges = intervals_frame(ledger).groupby("run_id").agg(
        cost_usd=("cost_usd", "sum"), accelerator_s=("accelerator_s", "sum"),
        energy_kwh=("energy_kwh", "sum"))
    runs = {r["run_id"]: r for r in ledger.runs()}
    outcomes = {run_id: r["outcome"] for run_id, r in runs.items()}
    baseline = baseline_point(sweep)
    rows, footprints = [], {}
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or Path(result.path).name
        run_id = trial_run_id(sweep.config.name, trial_id)
        point = {k: result.config[k] for k in sweep.config.space}
        key = json.dumps(point, sort_keys=True, default=str)
        if key not in footprints:  # trials often share an architecture
            footprints[key] = model_footprint(job_for(sweep.base, point, catalog), splits)
        footprint = footprints[key]
        charge = charges.loc[run_id] if run_id in charges.index else None
        rows.append({
            "trial_id": trial_id, "config": json.dumps(point, default=str),
            "reached_target": bool(metrics.get("reached_target", False)),
            "usd_to_target": metrics.get("usd_to_target"),
            "final_val_accuracy": metrics.get("val_accuracy"),
            "best_val_accuracy": metrics.get(ACCURACY, 0.0),
            "test_accuracy": metrics.get("test_accuracy"),
            "cost_usd": float(charge["cost_usd"]) if charge is not None else 0.0,
            "cap_usd": runs[run_id]["budget_usd"] if run_id in runs else None,
            "accelerator_hours": float(charge["accelerator_s"]) / 3600 if charge is not None
            else 0.0,
            "energy_kwh": float(charge["energy_kwh"]) if charge is not None else 0.0,
            **footprint,
            "epochs": int(metrics.get("epoch") or 0),  # 0: ended before its first report
            "stop_reason": outcomes.get(run_id, "ERROR" if result.error else "UNKNOWN"),
            "is_baseline": _same_point(point, baseline),
            OBJECTIVE: metrics.get(OBJECTIVE),
        })
    return rank(pd.DataFrame(rows, columns=[*RESULT_COLUMNS, OBJECTIVE]))


def mark_early_stops(grid, sweep: LoadedSweep, ledger: Ledger) -> None:
    """Trials Tune ended without error, while their run says FAILED or RUNNING, were
    stopped by the scheduler: the trial saw its Train controller die under it. (A run
    that really fails raises, and Tune records the trial as errored.)"""
    outcomes = {r["run_id"]: r["outcome"] for r in ledger.runs()}
    for result in grid:
        trial_id = (result.metrics or {}).get("trial_id") or Path(result.path).name
        run_id = trial_run_id(sweep.config.name, trial_id)
        if result.error is None and outcomes.get(run_id) in ("FAILED", "RUNNING"):
            RunAccount(ledger, run_id).abandon(outcome="STOPPED_EARLY", relabel_failed=True)


def _same_point(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all(str(a[k]) == str(b[k]) for k in b)


def write_outputs(frame: pd.DataFrame, sweep: LoadedSweep, ledger: Ledger, out: Path) -> str:
    cfg = sweep.config
    csv, parquet = write_table(frame, out)
    serving = cfg.objective.serving
    png = plot_pareto(frame, cfg.target_value, out / "pareto.png",
                      "total_usd" if serving is not None else "cost_usd")
    total = float(intervals_frame(ledger)["cost_usd"].sum())
    lines = [f"sweep {cfg.name}: {len(frame)} trials, spent ${total:.6f} of "
             f"${cfg.budget_usd:g} budget",
             f"results: {csv}, {parquet}", f"pareto plot: {png}"]
    if frame.empty:
        lines.append("no trial ran; no best job written")
        return "\n".join(lines)
    best = frame.iloc[0]  # ranked: reached first, cheapest first; else best accuracy
    reached = bool(best["reached_target"])
    summary = (f"trial {best['trial_id']} reached {cfg.target_value:g} for "
               f"${best['usd_to_target']:.6f}" if reached else
               f"no trial reached {cfg.target_value:g}; best so far: trial {best['trial_id']}, "
               f"best val accuracy {best['best_val_accuracy']:.4f} for ${best['cost_usd']:.6f}")
    if serving is not None:
        summary += (f" + ${best['serving_usd']:.6f} serving "
                    f"({best['serving_latency_ms']:.3f} ms a batch of {serving.batch_size}, "
                    f"{serving.num_predictions:g} predictions on {serving.instance_type}) = "
                    f"${best['total_usd']:.6f} total" if pd.notna(best["serving_usd"]) else
                    " (no checkpoint: serving cost unknown)")
    best_yaml = write_best_job(sweep.base, json.loads(best["config"]), f"{cfg.name}-best",
                               out / "best_job.yaml", reached_target=reached,
                               note=f"{summary}, with {best['config']}")
    lines.append(f"best: {summary} with {best['config']}")
    lines.append(f"best job: {best_yaml}" + ("" if reached else " (labelled NOT REACHED)")
                 + " (run it with `costsched train`)")
    return "\n".join(lines)
