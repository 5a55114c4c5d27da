"""Search bench: costsched's cost-frugal searcher against Optuna TPE and FLAML BlendSearch.

Every searcher gets the same space (configs/sweep_mnist1d.yaml's, less
``scaling.workers``), the same base job (configs/sweep_base.yaml at
``--samples`` MNIST-1D samples), the same target, trial cap and total budget,
and three seeds. Each trial is a real training run of the built-in loop, in this
process on one CPU worker and one thread (no Ray: no start-up), charged at the
catalog's ``local-cpu`` price for one slot for the CPU seconds it used (this
process's CPU time, not wall time: on a shared machine other processes' load
would otherwise decide the ranking); it stops at the target, its cap or its last
epoch. The objective each searcher minimises is the sweep's own
(dollars to target; an unreached trial ranks behind by its best accuracy).

A point already measured (by any searcher or seed) is not trained again: its
measured trial is replayed, and still charged to the searcher that asked for it.
Training is deterministic for a point (the job's seed), so only the timing
would differ; replaying keeps one noisy timing of the shared start point from
deciding the ranking between searchers that all begin there.

Prints, per searcher and seed, the dollars spent until the first trial that
reached the target and the best dollars-to-target found, then their means.
Needs FLAML (``pip install -e '.[bench]'``); driven directly, not through Tune.

    python bench/search_bench.py [--seeds 3] [--budget-usd 0.0012] [--samples 4000]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costsched import api  # noqa: E402
from costsched.config.strict import read_yaml_mapping  # noqa: E402
from costsched.cost.prices import load_catalog, rate_of_job  # noqa: E402
from costsched.sweep.cfo import CostFrugalSearch, cheapest_start  # noqa: E402
from costsched.sweep.config import job_for, load_sweep, value_in_job  # noqa: E402
from costsched.sweep.objective import objective_usd  # noqa: E402
from costsched.training.data import Splits, prepare  # noqa: E402
from costsched.training.loop import builtin_config, train_loop  # noqa: E402
from costsched.training.model_factory import JobModelFactory  # noqa: E402
from costsched.training.run import Run, RunSpec  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


class LocalSession:
    """One worker in this process: in-memory batches, checkpoints dropped."""

    rank, world_size, device = 0, 1, torch.device("cpu")

    def __init__(self, splits: Splits, seed: int):
        self.x, self.y = torch.as_tensor(splits.x_train), torch.as_tensor(splits.y_train)
        self.seed = seed

    def prepare_model(self, model, **_):
        return model

    def prepare_data_loader(self, loader):
        return loader

    def dataset_shard(self, name):
        raise KeyError(name)

    def train_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Any, Any]]:
        order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(
            self.seed + 1000 * epoch))
        for start in range(0, len(order) - batch_size + 1, batch_size):
            rows = order[start:start + batch_size]
            yield self.x[rows], self.y[rows]

    @contextlib.contextmanager
    def latest_checkpoint(self):
        yield None

    def report(self, metrics, checkpoint_dir, name=None):
        pass

    def broadcast(self, value: int) -> int:
        return value

    def stop_requested(self):
        return None


def evaluate(point: dict[str, Any], sweep, splits: Splits, catalog, cap: float,
             ) -> dict[str, Any]:
    """One trial: train the base job with ``point``; its dollars and objective."""
    cfg = sweep.config
    job = job_for(sweep.base, point, catalog)
    job = dataclasses.replace(
        job, scaling=dataclasses.replace(job.scaling, min_workers=1, max_workers=1),
        cost=dataclasses.replace(job.cost, budget_usd=cap, stop_reserve_s=0.0),
        training=dataclasses.replace(job.training, target_metric="val_accuracy",
                                     target_value=cfg.target_value, measure_steps=False))
    rate = rate_of_job(job, catalog)
    factory = JobModelFactory(job=job, input_shape=splits.input_shape,
                              num_classes=splits.num_classes)
    started = time.time()

    def cpu_clock() -> float:  # the run's clock: CPU seconds used since it started
        return started + time.process_time() - cpu_at_start

    cpu_at_start = time.process_time()
    spec = RunSpec(job=job, rate=rate, run_started_at=started,
                   entrypoint_config=builtin_config(
                       model_factory=factory, x_val=splits.x_val, y_val=splits.y_val,
                       x_test=splits.x_test, y_test=splits.y_test,
                       num_train_rows=len(splits.x_train)))
    run = Run(spec, LocalSession(splits, job.training.seed), clock=cpu_clock)
    with api.bound(run):
        result = train_loop(dict(spec.entrypoint_config))
        run.close()
    best = max([h.get("val_accuracy", 0.0) for h in result.get("history", [])] or [0.0])
    usd_to_target = result.get("usd_to_target")
    return {"usd": run.cost_usd(), "usd_to_target": usd_to_target, "best": best,
            "objective": objective_usd(usd_to_target=usd_to_target, best_accuracy=best,
                                       target=cfg.target_value, cap_usd=cap)}


def flaml_space(space):
    from flaml import tune

    out = {}
    for key, dim in space.items():
        out[key] = (tune.choice(list(dim.choice)) if dim.choice else
                    tune.uniform(*dim.uniform) if dim.uniform else tune.loguniform(*dim.loguniform))
    return out


class Searchers:
    """ask()/tell() over each searcher, from the same start where they take one."""

    def __init__(self, name: str, space, start: dict[str, Any], seed: int):
        self.name, self.space, self.pending = name, space, {}
        if name == "costsched-cfo":
            self.impl = CostFrugalSearch(space, start=start, seed=seed)
        elif name == "optuna-tpe":
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            self.impl = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
            self.impl.enqueue_trial(start)  # the sweep evaluates the baseline first
        else:
            from flaml import BlendSearch

            self.impl = BlendSearch(metric="objective", mode="min", space=flaml_space(space),
                                    low_cost_partial_config=start, seed=seed)

    def ask(self, n: int) -> dict[str, Any] | None:
        if self.name == "costsched-cfo":
            return self.impl.suggest()
        if self.name == "optuna-tpe":
            import optuna

            trial = self.impl.ask({k: (optuna.distributions.CategoricalDistribution(
                list(d.choice)) if d.choice else optuna.distributions.FloatDistribution(
                *d.uniform) if d.uniform else optuna.distributions.FloatDistribution(
                *d.loguniform, log=True)) for k, d in self.space.items()})
            self.pending[n] = trial
            return dict(trial.params)
        point = self.impl.suggest(str(n))
        self.pending[n] = point
        return None if point is None else {k: point[k] for k in self.space}

    def tell(self, n: int, point: dict[str, Any], value: float) -> None:
        if self.name == "costsched-cfo":
            self.impl.observe(point, value)
        elif self.name == "optuna-tpe":
            self.impl.tell(self.pending.pop(n), value)
        else:
            self.impl.on_trial_complete(str(n), {"objective": value,
                                                 "config": self.pending.pop(n)})


def point_key(point: dict[str, Any]) -> tuple:
    return tuple(sorted((k, round(v, 12) if isinstance(v, float) else v)
                        for k, v in point.items()))


def search(name: str, seed: int, sweep, splits, catalog, *, budget: float, cap: float,
           start: dict[str, Any], measured: dict[tuple, dict[str, Any]]
           ) -> dict[str, float]:
    searcher, spent = Searchers(name, sweep.config.space, start, seed), 0.0
    first_reached, best = math.inf, math.inf
    for n in range(200):
        if spent + cap > budget:  # the sweep's gate: a trial may spend its whole cap
            break
        point = searcher.ask(n)
        if point is None:
            break
        key = point_key(point)
        replayed = key in measured
        if not replayed:
            measured[key] = evaluate(point, sweep, splits, catalog, cap)
        trial = measured[key]
        spent += trial["usd"]
        searcher.tell(n, point, trial["objective"])
        if trial["usd_to_target"] is not None:
            first_reached = min(first_reached, spent)
            best = min(best, trial["usd_to_target"])
        print(f"  {name:18} seed {seed} trial {n}: ${trial['usd']:.6f} best acc "
              f"{trial['best']:.3f} to target {trial['usd_to_target']}"
              f"{' (replayed)' if replayed else ''}", flush=True)
    return {"first_reached_usd": first_reached, "best_to_target_usd": best, "spent_usd": spent}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget-usd", type=float, default=0.0012)
    parser.add_argument("--trial-cap-usd", type=float, default=0.0002)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--target", type=float, default=0.9)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one worker's core, as each trial worker has
    catalog = load_catalog()
    raw = read_yaml_mapping(CONFIGS / "sweep_mnist1d.yaml")
    raw["space"].pop("scaling.workers", None)
    raw.update(base_job=str(CONFIGS / "sweep_base.yaml"), target_value=args.target)
    tmp = Path(f"/tmp/search-bench-{int(time.time())}")
    tmp.mkdir()
    import yaml

    (tmp / "sweep.yaml").write_text(yaml.safe_dump(raw))
    sweep = load_sweep(tmp / "sweep.yaml", catalog)
    sweep.base["dataset"]["num_samples"] = args.samples
    sweep.base["training"]["num_epochs"] = 30
    splits = prepare(job_for(sweep.base, {}, catalog).dataset)
    baseline = {k: value_in_job(sweep.base_job, k) for k in sweep.config.space}
    start = cheapest_start(sweep.config.space, baseline, sweep.config.search.low_cost)
    rows, measured = {}, {}
    for name in ("costsched-cfo", "optuna-tpe", "flaml-blendsearch"):
        rows[name] = [search(name, seed, sweep, splits, catalog, budget=args.budget_usd,
                             cap=args.trial_cap_usd, start=start, measured=measured)
                      for seed in range(args.seeds)]
    print(f"\nsame space, base job ({args.samples} MNIST-1D samples), target {args.target}, "
          f"trial cap ${args.trial_cap_usd}, budget ${args.budget_usd}; inf = never reached")
    print(f"{'searcher':20} {'seed':>4} {'$ until first reached':>22} {'best $ to target':>17}")
    for name, results in rows.items():
        for seed, r in enumerate(results):
            print(f"{name:20} {seed:>4} {r['first_reached_usd']:>22.6f} "
                  f"{r['best_to_target_usd']:>17.6f}")
        first = np.mean([r["first_reached_usd"] for r in results])
        best = np.mean([r["best_to_target_usd"] for r in results])
        print(f"{name:20} {'mean':>4} {first:>22.6f} {best:>17.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
