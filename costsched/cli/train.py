"""``costsched train CONFIG``: run one training job on Ray (or print its plan)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from costsched.config.job import DatasetConfig, JobConfig
    from costsched.cost.prices import PriceCatalog
    from costsched.training.data import Splits

# Heavy modules (torch, numpy, ray) are imported inside the functions that use them:
# building the parser, and so `costsched --help`, must stay fast.


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="training-job YAML (see configs/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and its forecast from a short real profile on "
                             "the job's workers (starts Ray; the forecast goes in the ledger)")
    parser.add_argument("--no-profile", action="store_true",
                        help="with --dry-run: time a few steps in this process instead "
                             "(no Ray, nothing written; ignores start-up)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--prices", default=None,
                        help="price catalog YAML (default: $COSTSCHED_PRICES, else the "
                             "shipped configs/prices.yaml)")
    add_verbose(parser)
    parser.set_defaults(func=run)


def add_verbose(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true",
                        help="also show Ray's own start-up, progress and report lines")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="run a training job (Ray Train TorchTrainer)",
        description="Run a data-parallel training job on Ray; every interval of it is "
                    "charged in the cost ledger.",
    )
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from costsched.config.job import load_job_config
    from costsched.cost.prices import load_catalog

    catalog = load_catalog(args.prices)
    job = load_job_config(args.config, catalog)
    return train(job, catalog, dry_run=args.dry_run, address=args.address,
                 verbose=args.verbose, profile=not args.no_profile)


def prepare_data(dataset: DatasetConfig) -> Splits:
    """Load and split the job's data, saying first when generating it takes a while."""
    from costsched.config.job import MNIST1D_SAMPLE_S
    from costsched.training.data import prepare

    if dataset.name == "mnist1d" and dataset.num_samples * MNIST1D_SAMPLE_S > 30:
        print(f"data: generating {dataset.num_samples:,} mnist1d samples, about "
              f"{dataset.num_samples * MNIST1D_SAMPLE_S / 60:.0f} min", flush=True)
    return prepare(dataset)


def dry_run_plan(job: JobConfig, splits: Splits | None, catalog: PriceCatalog, *,
                 profile: bool, address: str | None, verbose: bool) -> int:
    """Print the plan; with ``profile``, run the job's short real profile on its workers
    and print (and store) the forecast it gives."""
    from costsched.cost.estimate import entrypoint_plan_lines, make_plan

    if job.entrypoint is not None or splits is None:
        for line in entrypoint_plan_lines(job, catalog):
            print(line)
        return 0
    plan = make_plan(job, splits, catalog, measure=not profile)
    for line in plan.lines(job):
        print(line)
    if not profile:
        return 0
    from costsched.cost.forecast import forecast_lines
    from costsched.ray_layer.cluster import ensure_ray
    from costsched.ray_layer.train.profile import PROFILE_EPOCHS, forecast_job

    print(f"profiling      {PROFILE_EPOCHS} epochs on the job's workers ...", flush=True)
    ensure_ray(job, address, verbose=verbose)
    measured, forecast = forecast_job(job, splits, catalog)
    target = (f"{job.training.target_metric} {job.training.target_value:g}"
              if job.training.target_metric else None)
    for line in forecast_lines(forecast, measured, num_epochs=job.training.num_epochs,
                               target=target, budget_usd=job.cost.budget_usd):
        print(line)
    print(f"ledger         {job.resolved_ledger_path()} (the next run of this config "
          "is compared with it: `costsched report`)")
    return 0


def train(job: JobConfig, catalog: PriceCatalog, *, dry_run: bool, address: str | None,
          verbose: bool = False, profile: bool = True) -> int:
    if job.entrypoint:
        from costsched.config.entrypoint import import_entrypoint

        import_entrypoint(job.entrypoint)  # a ConfigError now, before any worker is held
    splits = prepare_data(job.dataset) if job.dataset is not None else None
    if splits is not None:
        cleaning = splits.cleaning
        print(f"data: {cleaning.num_rows_in} rows read, {cleaning.num_non_finite} non-finite "
              f"and {cleaning.num_duplicates} duplicate rows dropped")
    if dry_run:
        return dry_run_plan(job, splits, catalog, profile=profile, address=address,
                            verbose=verbose)
    from costsched.cost.ledger import Ledger
    from costsched.ray_layer.cluster import ensure_ray, shortfall
    from costsched.ray_layer.train.trainer import run_job

    ensure_ray(job, address, verbose=verbose)
    missing = shortfall(job)
    if missing:
        print(f"waiting for resources: {missing} (an autoscaler may add nodes)", flush=True)
    ledger = Ledger(job.resolved_ledger_path(), catalog)
    result = run_job(job, splits, catalog=catalog, ledger=ledger)
    m = result.metrics
    accuracy = "".join(f"{name.replace('_', ' ')} {m[name]:.4f}, "
                       for name in ("test_accuracy", "val_accuracy") if name in m)
    print(f"run {result.run_id}: {result.outcome}; {accuracy}cost ${result.cost_usd:.5f}"
          + (f", ${m['usd_to_target']:.5f} to target" if m.get("usd_to_target") else ""))
    print(f"checkpoint: {result.checkpoint_path}")
    print(f"ledger: {ledger.path}")
    sys.stdout.flush()
    return 0 if result.outcome != "FAILED" else 1
