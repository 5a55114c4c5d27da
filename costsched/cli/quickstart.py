"""``costsched quickstart``: a local Ray, MNIST-1D, 2 CPU workers, to a target accuracy."""

from __future__ import annotations

import argparse

from costsched.cli.train import add_verbose

REPORT_ROWS = 5
"""Newest ledger runs shown after the quickstart's own run."""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "quickstart", help="train MNIST-1D on a local Ray with 2 CPU workers",
        description="Start a local Ray in-process, train a 1D CNN on MNIST-1D with 2 CPU "
                    "workers to 90% validation accuracy, and print the cost report.",
    )
    parser.add_argument("--config", default=None,
                        help="job YAML to run (default: the shipped configs/quickstart.yaml)")
    add_verbose(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from costsched.cli.train import train
    from costsched.config.bundled import bundled_config
    from costsched.config.job import load_job_config
    from costsched.cost.ledger import Ledger
    from costsched.cost.prices import load_catalog
    from costsched.cost.report import render, runs_frame

    catalog = load_catalog()
    job = load_job_config(args.config or bundled_config("quickstart.yaml"), catalog)
    status = train(job, catalog, dry_run=False, address="local", verbose=args.verbose)
    frame = runs_frame(Ledger(job.resolved_ledger_path(), catalog))
    print(f"\ncost report (newest {REPORT_ROWS} runs in the ledger):")
    print(render(frame.tail(REPORT_ROWS), "table"))
    return status
