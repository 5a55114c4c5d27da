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
                        help="print the plan and the budget arithmetic from a short real "
                             "profile of the base job (starts Ray; the profile is stored "
                             "in the sweep's ledger and the sweep uses it)")
    parser.add_argument("--no-profile", action="store_true",
                        help="with --dry-run: no profile, no Ray, nothing written")
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


def print_plan(sweep: LoadedSweep, catalog: PriceCatalog, *, profile: bool,
               address: str | None = None, verbose: bool = False) -> None:
    from costsched.cli.train import prepare_data
    from costsched.cost.estimate import make_plan
    from costsched.sweep.objective import objective_line

    cfg = sweep.config
    splits = prepare_data(sweep.base_job.dataset)
    print(f"sweep          {cfg.name}: up to {cfg.num_trials} trials, "
          f"{cfg.max_concurrent_trials} at a time, search {cfg.search.algorithm}, "
          f"early stopping {cfg.scheduler.kind}")
    print(objective_line(cfg.target_value, cfg.objective.serving, catalog))
    print(f"budget         ${cfg.budget_usd:g} for the sweep, ${cfg.trial_budget_usd:g} per "
          f"trial as configured")
    for key, dim in cfg.space.items():
        values = dim.choice or dim.uniform or dim.loguniform
        kind = "choice" if dim.choice else "uniform" if dim.uniform else "loguniform"
        print(f"space          {key}: {kind} {list(values)}")
    if not profile:
        plan = make_plan(sweep.base_job, splits, catalog)
        print(f"base job       {sweep.base_job.name}: est. ${plan.estimated_usd:.5f} for "
              f"{sweep.base_job.training.num_epochs} epochs at {plan.num_workers} worker(s) "
              "(steps timed in this process, start-up ignored: a rough guide only)")
        print("gate           cap: no profile, no forecast; a trial launches while the budget "
              "left holds its whole cap")
        return
    from costsched.cost.forecast import forecast_lines
    from costsched.ray_layer.cluster import ensure_ray
    from costsched.ray_layer.ledger import ledger_for
    from costsched.ray_layer.tune.plan import trial_plan
    from costsched.sweep.plan import plan_lines

    print("profiling      the base job for 3 short epochs on its workers ...", flush=True)
    ensure_ray(sweep.base_job, address, verbose=verbose)
    ledger = ledger_for(cfg.resolved_storage_path() / cfg.name / "ledger.db", catalog)
    planned = trial_plan(sweep, splits, catalog, ledger, measure=True)
    assert planned is not None
    plan, measured, forecast = planned
    # The target is the plan's to say (per trial, against its cap), not the forecast's.
    for line in forecast_lines(forecast, measured, num_epochs=sweep.base_job.training.num_epochs,
                               target=None, budget_usd=sweep.base_job.cost.budget_usd,
                               ) + plan_lines(cfg, plan):
        print(line)


def run(args: argparse.Namespace) -> int:
    from costsched.cost.prices import load_catalog
    from costsched.sweep.config import load_sweep

    catalog = load_catalog()
    sweep = load_sweep(args.config, catalog)
    if args.dry_run:
        print_plan(sweep, catalog, profile=not args.no_profile, address=args.address,
                   verbose=args.verbose)
        return 0
    from costsched.ray_layer.cluster import ensure_ray
    from costsched.ray_layer.tune.driver import run_sweep

    ensure_ray(sweep.base_job, args.address, verbose=args.verbose)
    summary = run_sweep(sweep, catalog, resume=args.resume, address=args.address,
                        out_dir=args.out, verbose=args.verbose)
    print(summary)
    return 0
