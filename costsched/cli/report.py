"""``costsched report``: the cost ledger as a table, CSV or JSON, and an optional plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from costsched.errors import ConfigError

DEFAULT_LEDGER = "~/.costsched/ledger.db"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="print the cost ledger",
        description="Per-run GPU-hours, dollars, energy and lost time from the cost ledger.",
    )
    parser.add_argument("--ledger", default=DEFAULT_LEDGER,
                        help=f"ledger file (SQLite; default {DEFAULT_LEDGER})")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table",
                        help="output format (default: table)")
    parser.add_argument("--intervals", action="store_true",
                        help="one row per interval (attempt) instead of per run")
    parser.add_argument("--forecasts", action="store_true",
                        help="every stored forecast (before launch, and refreshed each "
                             "epoch from the run's learning curve) instead of runs")
    parser.add_argument("--run", default=None,
                        help="only this run id (with --intervals or --forecasts)")
    parser.add_argument("--plot", default=None, metavar="PNG",
                        help="also write cumulative dollars per run to this PNG")
    parser.add_argument("--prices", default=None,
                        help="price catalog YAML (default: $COSTSCHED_PRICES, else the "
                             "shipped configs/prices.yaml)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = Path(args.ledger).expanduser()
    if not path.is_file():
        raise ConfigError(f"no ledger at {path}; run a job first or pass --ledger")
    from costsched.cost.ledger import Ledger
    from costsched.cost.prices import load_catalog
    from costsched.cost.report import (
        forecasts_frame,
        intervals_frame,
        plot_costs,
        render,
        runs_frame,
    )

    ledger = Ledger(path, load_catalog(args.prices))
    frame = (intervals_frame(ledger, args.run) if args.intervals
             else forecasts_frame(ledger, args.run) if args.forecasts else runs_frame(ledger))
    print(render(frame, args.format))
    if args.plot:
        print(f"plot: {plot_costs(ledger, args.plot)}")
    return 0
