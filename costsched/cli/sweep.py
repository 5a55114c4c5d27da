"""``costsched sweep CONFIG``: search how to train for the fewest dollars to a target."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from costsched.cli.train import add_verbose

if TYPE_CHECKING:
    from costsched.cost.prices import PriceCatalog
    from costsched.sweep.config import LoadedSweep


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="sweep YAML (see configs/sweep_mnist1d.yaml)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and the budget arithmetic; do not start Ray")
    parser.add_argument("--resume", action="store_true",
                        help="continue a sweep whose driver died; finished trials are kept")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--out", default=None,
                        help="output folder (default: <storage_path>/<name>/outputs)")
    add_verbose(parser)
    parser.set_defaults(func=run)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="Tune sweep over precision/compression/workers against dollars",
        description="Run a Ray Tune sweep whose objective is dollars to reach a target "
                    "accuracy, inside a hard budget for the whole sweep.",
    )
    add_arguments(parser)


def print_plan(sweep: LoadedSweep, catalog: PriceCatalog) -> None:
    from costsched.cli.train import prepare_data
    from costsched.cost.estimate import make_plan

    cfg = sweep.config
    splits = prepare_data(sweep.base_job.dataset)
    plan = make_plan(sweep.base_job, splits, catalog)
    print(f"sweep          {cfg.name}: up to {cfg.num_trials} trials, "
          f"{cfg.max_concurrent_trials} at a time, search {cfg.search.algorithm}, "
          f"early stopping {cfg.scheduler.kind}")
    print(f"objective      dollars to val_accuracy >= {cfg.target_value:g}")
    print(f"budget         ${cfg.budget_usd:g} for the sweep, ${cfg.trial_budget_usd:g} per "
          f"trial: at least {int(cfg.budget_usd // cfg.trial_budget_usd)} trial(s) fit "
          "even if each spends its whole cap")
    for key, dim in cfg.space.items():
        values = dim.choice or dim.uniform or dim.loguniform
        kind = "choice" if dim.choice else "uniform" if dim.uniform else "loguniform"
        print(f"space          {key}: {kind} {list(values)}")
    print(f"base job       {sweep.base_job.name}: est. ${plan.estimated_usd:.5f} for "
          f"{sweep.base_job.training.num_epochs} epochs at {plan.num_workers} worker(s)")


def run(args: argparse.Namespace) -> int:
    from costsched.cost.prices import load_catalog
    from costsched.sweep.config import load_sweep

    catalog = load_catalog()
    sweep = load_sweep(args.config, catalog)
    if args.dry_run:
        print_plan(sweep, catalog)
        return 0
    from costsched.ray_layer.cluster import ensure_ray
    from costsched.ray_layer.tune.driver import run_sweep

    ensure_ray(sweep.base_job, args.address, verbose=args.verbose)
    summary = run_sweep(sweep, catalog, resume=args.resume, address=args.address,
                        out_dir=args.out, verbose=args.verbose)
    print(summary)
    return 0
