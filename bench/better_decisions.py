"""Measured models make better decisions: two jobs, three GPUs, the cost-aware policy.

    .venv/bin/python bench/better_decisions.py [--profiles DIR] [--write-fixtures DIR]

Two fixed-batch jobs from the Pollux measurements (T4 GPUs, as on a g4dn.12xlarge):
ncf at global batch 4096, whose all-reduce costs more than splitting its batch
saves (sync-bound: a second GPU makes its step slower), and imagenet at 200, whose
compute splits almost linearly (compute-bound). Each may run on 1 to 3 workers of
one GPU; one node offers 3 slots. Each job has measured its steps on 1 and 2 GPUs
(the Pollux rows of placements ``1`` and ``2`` at local batch ``G / k``), recorded
through :class:`~costsched.scheduler.job_models.JobModels` in a real SQLite file;
the policy's snapshot is built as the live controller builds it.

Decisions compared, each priced at the catalog's on-demand T4 slot price:

* measured: cost-aware with each job's fitted model;
* blind: cost-aware with the default linear rule (no models): the two jobs look
  alike, so the tie goes to the job submitted first (ncf here);
* even split: 3 slots cannot split evenly, so the third is time-shared half and half
  (each job's figures are the mean of its 1- and 2-GPU ones; also the blind policy's
  expected outcome over arrival order).

Each job's samples/s come from its TRUE measured step time at the placement it got
(global batch / step time, linear in local batch between measured rows), not from the
fitted model. Goodput = samples/s x statistical efficiency, and efficiency is 1 for a
fixed-batch job (its batch does not change), so goodput is samples/s. Samples of
different jobs are not comparable (an ncf sample is ~2,000x cheaper than an imagenet
one), so the cluster's goodput is also given as the sum of each job's speedup over its
own one-GPU rate: GPU-hours of one-GPU training per hour, and per dollar.

``--write-fixtures DIR`` writes the recorded 1- and 2-GPU rows as the small CSVs
``tests/test_measured_decisions.py`` reads.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from costsched.config.job import JobConfig, parse_job
from costsched.config.scheduler import SchedulerConfig
from costsched.cost.prices import PriceCatalog, job_rate, load_catalog, rate_of_job, usd_over
from costsched.errors import ConfigError
from costsched.goodput.profile import placements_frame
from costsched.goodput.throughput import ThroughputPoint, fit_throughput
from costsched.policy.drive import Executes, drive
from costsched.policy.registry import make_policy
from costsched.policy.snapshot import num_gpus
from costsched.scheduler.interfaces import NodeRecord
from costsched.scheduler.job_models import FixedBatchThroughput, JobModels, Measurement
from costsched.scheduler.policy_view import build_snapshot, job_view, node_views
from costsched.scheduler.state import JobStore
from costsched.sim.profiles import pollux_dir

REPO = Path(__file__).resolve().parents[1]
INSTANCE_TYPE = "g4dn.12xlarge"
"""4 x T4, the machines the Pollux measurements were taken on."""
NUM_SLOTS = 3
MAX_WORKERS = 3


@dataclass(frozen=True, kw_only=True)
class Workload:
    app: str
    """Pollux application folder."""
    global_batch_size: int
    """Fixed global batch (one the Pollux artifact trained at)."""
    kind: str


WORKLOADS = (Workload(app="ncf", global_batch_size=4096, kind="sync-bound"),
             Workload(app="imagenet", global_batch_size=200, kind="compute-bound"))
"""In order of submission: the sync-bound job first, so the blind tie goes to it."""


def measured_steps(frame: pd.DataFrame, global_batch_size: int,
                   gpus: tuple[int, ...] = (1, 2, 3)) -> list[ThroughputPoint]:
    """The job's step on ``k`` GPUs of one node: placement ``k`` at local batch ``G / k``,
    linear in local batch between the measured rows of that placement (never beyond)."""
    points = []
    for k in gpus:
        rows = frame[frame.placement.astype(str) == str(k)].groupby("local_bsz").mean(
            numeric_only=True).sort_index()
        local = global_batch_size / k
        if rows.empty or not rows.index.min() <= local <= rows.index.max():
            raise ConfigError(f"no measured rows of placement {k} around local batch {local}")
        step = float(np.interp(local, rows.index, rows.step_time))
        sync = float(np.interp(local, rows.index, rows.sync_time))
        points.append(ThroughputPoint(num_nodes=1, num_replicas=k, placement=(k,),
                                      local_bsz=local, step_time_s=step,
                                      sync_time_s=min(sync, step)))
    return points


def job_config(name: str, global_batch_size: int, catalog: PriceCatalog) -> tuple[JobConfig, str]:
    """A fixed-batch job of 1..3 one-GPU workers on T4 slots (its model and data are the
    quickstart's stand-ins: the policy sees only its measured steps)."""
    data = copy.deepcopy(yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text()))
    data["name"] = name
    data["training"]["global_batch_size"] = global_batch_size
    data["scaling"] = {"min_workers": 1, "max_workers": MAX_WORKERS, "use_gpu": True,
                       "accelerator_resource": "GPU", "accelerators_per_worker": 1}
    data["cost"] = {"instance_type": INSTANCE_TYPE, "budget_usd": 1000.0}
    text = yaml.safe_dump(data)
    return parse_job(data, f"job {name}", catalog), text


def decide(jobs: list[tuple[str, int, list[ThroughputPoint]]], catalog: PriceCatalog, *,
           measured: bool) -> dict[str, int]:
    """GPUs per job name from one cost-aware round, as the live controller takes it.

    ``jobs``: (name, global batch, steps measured on 1 and 2 GPUs), in submission order.
    """
    config = SchedulerConfig()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scheduler.db"
        store, records, configs = JobStore(path), {}, {}
        for arrival, (name, batch, points) in enumerate(jobs):
            configs[name], text = job_config(name, batch, catalog)
            records[name] = store.add_job(
                name=name, config_yaml=text, config_hash=configs[name].config_hash(),
                priority=0, budget_usd=configs[name].cost.budget_usd, min_workers=1,
                max_workers=MAX_WORKERS, now=float(arrival))
            for point in points:
                JobModels(path).record(records[name].job_id, measurement(point, batch),
                                       now=float(arrival))
        models = JobModels(path)  # reopened: the fits come back from the file
        views = [job_view(records[n], configs[n], config.sync_penalty_per_gpu,
                          rate_of_job(configs[n], catalog), elastic=True,
                          model=models.model(records[n].job_id) if measured else None)
                 for n in records]
        snapshot = build_snapshot(now=float(len(jobs)), round_index=0, views=views,
                                  nodes=node_views([slot_node(configs, catalog)]),
                                  placements={}, round_s=config.round_s,
                                  restart_s=config.restart_s)
    driven = drive(make_policy("cost-aware"), snapshot, elastic=True,
                   executes=Executes(batch_sizes=False, node_changes=False))
    return {n: num_gpus(driven.decision.placements.get(r.job_id)) for n, r in records.items()}


def measurement(point: ThroughputPoint, global_batch_size: int) -> Measurement:
    """What a running job reports after its steps at ``point``."""
    return Measurement(num_workers=point.num_replicas, num_nodes=point.num_nodes,
                       local_bsz=point.local_bsz, accum_steps=1,
                       step_time_s=point.step_time_s, sync_time_s=point.sync_time_s,
                       samples_per_s=global_batch_size / point.step_time_s)


def slot_node(configs: dict[str, JobConfig], catalog: PriceCatalog) -> NodeRecord:
    """One node of ``NUM_SLOTS`` T4 slots, priced as that many slots of the catalog type."""
    rate = rate_of_job(next(iter(configs.values())), catalog)
    return NodeRecord(node_id="node-0", node_type=INSTANCE_TYPE, gpu_model="T4",
                      total_slots=NUM_SLOTS, free_slots=NUM_SLOTS,
                      usd_per_hour=rate.usd_per_hour(NUM_SLOTS))


@dataclass(frozen=True)
class Figures:
    """One allocation's true figures."""

    gpus: dict[str, float]
    """GPUs per job (1.5 for a time-shared slot)."""
    samples_per_s: dict[str, float]
    speedup: dict[str, float]
    usd_per_hour: float

    @property
    def total_samples_per_s(self) -> float:
        return sum(self.samples_per_s.values())

    @property
    def gpu_equivalents(self) -> float:
        return sum(self.speedup.values())

    def per_usd(self, per_s: float) -> float:
        """per_usd = per_s x 3600 / usd_per_hour (efficiency 1: goodput = throughput)."""
        return per_s / usd_over(self.usd_per_hour, 1.0)


def figures(allocation: dict[str, int], truth: dict[str, dict[int, float]],
            usd_per_gpu_hour: float) -> Figures:
    """``truth``: job -> GPUs -> measured samples/s."""
    samples = {job: truth[job][k] for job, k in allocation.items()}
    speedup = {job: truth[job][k] / truth[job][1] for job, k in allocation.items()}
    return Figures(dict(allocation), samples, speedup,
                   usd_per_gpu_hour * sum(allocation.values()))


def mean(a: Figures, b: Figures) -> Figures:
    """Half the time each: the mean of every figure."""
    def half(x: dict[str, float], y: dict[str, float]) -> dict[str, float]:
        return {j: (x[j] + y[j]) / 2 for j in x}

    return Figures(half(a.gpus, b.gpus), half(a.samples_per_s, b.samples_per_s),
                   half(a.speedup, b.speedup), (a.usd_per_hour + b.usd_per_hour) / 2)


def write_fixtures(folder: Path, steps: dict[str, list[ThroughputPoint]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for w in WORKLOADS:
        path = folder / f"{w.app}.csv"
        with path.open("w") as out:
            out.write(f"# Pollux artifact ({w.app}/placements.csv, T4 GPUs): the {w.kind} job at "
                      f"global batch {w.global_batch_size}\n# on 1 and 2 GPUs of one node, local "
                      "batch G / k, linear between measured rows.\n"
                      "# Written by bench/better_decisions.py --write-fixtures.\n")
            placements_frame(steps[w.app][:2]).to_csv(out, index=False)
        print(f"wrote {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")


def report(steps: dict[str, list[ThroughputPoint]], catalog: PriceCatalog) -> None:
    usd_per_gpu_hour = job_rate(catalog, instance_type=INSTANCE_TYPE, spot=False,
                                accelerators_per_worker=1).usd_per_hour(1)
    truth = {w.app: {p.num_replicas: w.global_batch_size / p.step_time_s
                     for p in steps[w.app]} for w in WORKLOADS}
    print(f"{NUM_SLOTS} T4 slots of one {INSTANCE_TYPE} at ${usd_per_gpu_hour:.3f} per GPU-hour "
          "(on demand); jobs of 1..3 one-GPU workers, fixed global batch (efficiency 1)")
    for w in WORKLOADS:
        t = truth[w.app]
        fit = FixedBatchThroughput(fit_throughput(steps[w.app][:2]), w.global_batch_size,
                                   w.global_batch_size)
        print(f"  {w.app:9} G={w.global_batch_size:<5} {w.kind:14} measured samples/s on "
              f"1/2/3 GPUs: {t[1]:,.0f} / {t[2]:,.0f} / {t[3]:,.0f} (speedup x{t[2] / t[1]:.2f}"
              f" / x{t[3] / t[1]:.2f}; fitted on 1-2 GPUs: x{fit.speedup(2):.2f} / "
              f"x{fit.speedup(3):.2f})")
    a, b = (w.app for w in WORKLOADS)
    jobs = [(w.app, w.global_batch_size, steps[w.app][:2]) for w in WORKLOADS]
    rows = {label: figures(decide(jobs, catalog, measured=measured), truth, usd_per_gpu_hour)
            for label, measured in (("measured models", True), ("blind (default rule)", False))}
    rows["even split (3rd shared)"] = mean(*(figures(alloc, truth, usd_per_gpu_hour)
                                             for alloc in ({a: 2, b: 1}, {a: 1, b: 2})))
    print_table(rows, a, b)


def print_table(rows: dict[str, Figures], a: str, b: str) -> None:
    print(f"\n{'decision':24} {'GPUs ' + a + '/' + b:>18} {a + ' samples/s':>14} "
          f"{b + ' samples/s':>19} {'total samples/s':>16} {'$/h':>6} {'samples/$':>12} "
          f"{'1-GPU equiv':>11} {'per $':>6}")
    for label, f in rows.items():
        gpus = "/".join(f"{f.gpus[j]:g}" for j in (a, b))
        print(f"{label:24} {gpus:>18} {f.samples_per_s[a]:14,.0f} {f.samples_per_s[b]:19,.1f} "
              f"{f.total_samples_per_s:16,.0f} {f.usd_per_hour:6.3f} "
              f"{f.per_usd(f.total_samples_per_s):12.4g} {f.gpu_equivalents:11.2f} "
              f"{f.gpu_equivalents / f.usd_per_hour:6.3f}")
    print("(1-GPU equiv: sum of each job's samples/s over its own on one GPU; per $: "
          "one-GPU hours of training per dollar)")
    best = rows["measured models"]
    for label in ("even split (3rd shared)", "blind (default rule)"):
        other = rows[label]
        print(f"measured models vs {label}: x{best.gpu_equivalents / other.gpu_equivalents:.2f}"
              f" cluster goodput per dollar (1-GPU equivalents), x"
              f"{best.total_samples_per_s / other.total_samples_per_s:.2f} raw samples per "
              f"dollar; {b} x{best.samples_per_s[b] / other.samples_per_s[b]:.2f}, "
              f"{a} x{best.samples_per_s[a] / other.samples_per_s[a]:.2f} samples/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", help="Pollux data folder (default: ../shared/data/pollux)")
    parser.add_argument("--write-fixtures", type=Path, metavar="DIR",
                        help="also write the recorded 1- and 2-GPU rows as test fixtures")
    args = parser.parse_args(argv)
    base = pollux_dir(args.profiles)
    folder = base / "profiles" if (base / "profiles").is_dir() else base
    if not all((folder / w.app / "placements.csv").is_file() for w in WORKLOADS):
        print(f"skipped: no Pollux profiles at {folder} (pass --profiles DIR)")
        return 0
    steps = {w.app: measured_steps(pd.read_csv(folder / w.app / "placements.csv"),
                                   w.global_batch_size) for w in WORKLOADS}
    if args.write_fixtures:
        write_fixtures(args.write_fixtures, steps)
    report(steps, load_catalog())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
