"""``costsched submit|status|cancel|logs``: jobs on the running scheduler.

Each command joins the Ray cluster, finds the scheduler actor and makes one
call; a missing cluster or scheduler, a bad config or an unknown job is one
line on stderr and a non-zero exit, with nothing changed.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from costsched.cost.formatting import format_duration, format_local_time, format_usd
from costsched.errors import ConfigError, SchedulerUnavailable


def _address(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, else the local one)")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    submit = subparsers.add_parser(
        "submit", help="queue a training job on the scheduler",
        description="Queue a job config (as for `costsched train`); the scheduler runs it "
                    "when the policy gives it accelerators.")
    submit.add_argument("config", help="job YAML")
    submit.add_argument("--priority", type=int, default=None, help="higher runs first")
    submit.add_argument("--budget-usd", type=float, default=None,
                        help="stop the job at a checkpoint before it spends more")
    submit.add_argument("--min-workers", type=int, default=None,
                        help="fewest workers the job runs with (overrides scaling.min_workers)")
    submit.add_argument("--max-workers", type=int, default=None,
                        help="most workers the job runs with (overrides scaling.max_workers)")
    submit.add_argument("--request-id", default=None, metavar="ID",
                        help="makes the submit idempotent: a retry with the same ID returns "
                             "the job the first one queued (default: a new ID, printed if "
                             "the scheduler does not answer)")
    _address(submit)
    submit.set_defaults(func=run_submit)

    status = subparsers.add_parser("status", help="the scheduler's jobs: state, workers, "
                                   "dollars, $/h, ETA and forecast dollars, alerts")
    status.add_argument("--format", choices=("table", "json"), default="table",
                        help="a table for people (default) or JSON for scripts")
    _address(status)
    status.set_defaults(func=run_status)

    cancel = subparsers.add_parser("cancel", help="stop a job at a checkpoint")
    cancel.add_argument("job_id", help="the job id `costsched submit` printed")
    _address(cancel)
    cancel.set_defaults(func=run_cancel)

    logs = subparsers.add_parser("logs", help="a job's scheduling events")
    logs.add_argument("job_id", help="the job id `costsched submit` printed")
    _address(logs)
    logs.set_defaults(func=run_logs)


def _call(args: argparse.Namespace, method: str, *call_args: Any) -> dict[str, Any]:
    from costsched.ray_layer.scheduler import client

    client.connect(args.address)
    return client.call(method, *call_args)


def run_submit(args: argparse.Namespace) -> int:
    from costsched.config.strict import read_config_text

    text = read_config_text(args.config)  # missing, too large or not UTF-8: exit 2 here
    overrides = {"priority": args.priority, "budget_usd": args.budget_usd,
                 "min_workers": args.min_workers, "max_workers": args.max_workers}
    code_dir = entrypoint_code_dir(Path(args.config), text)
    from costsched.ray_layer.scheduler import client

    client.connect(args.address)
    if code_dir is not None:
        overrides["working_dir"] = client.code_package(str(code_dir))
    request_id = args.request_id or uuid.uuid4().hex
    client.service()  # no scheduler at all: said plainly, nothing can have been queued
    plan, unread = stored_plan(args.config)
    try:
        result = client.call("submit", text, overrides, str(args.config), request_id,
                             *([plan] if plan is not None else []))
    except SchedulerUnavailable as exc:
        raise SchedulerUnavailable(
            f"{exc}; the job may still be queued: retry with --request-id {request_id} "
            "to get it rather than a second one") from None
    print(result["job_id"])
    print_stored_forecast(args.config, plan, unread)
    return 0


def stored_plan(config: str) -> tuple[dict[str, Any] | None, str | None]:
    """The newest forecast a dry run of this config stored in its ledger, with the
    config's last measured learning curve (:func:`~costsched.cost.plans.submitted_plan`):
    sent with the job, its run's launch forecast is made from it. (None, None) if there
    is none; (None, why) if the ledger could not be read."""
    from costsched.config.job import load_job_config
    from costsched.cost.ledger import Ledger
    from costsched.cost.plans import submitted_plan
    from costsched.cost.prices import load_catalog

    try:
        catalog = load_catalog()
        job = load_job_config(config, catalog)
        path = Path(job.resolved_ledger_path())
        if not path.is_file():
            return None, None
        return submitted_plan(Ledger(path, catalog), job.config_hash()), None
    except Exception as exc:  # noqa: BLE001 - the job is queued all the same
        return None, f"{type(exc).__name__}: {exc}"


def print_stored_forecast(config: str, plan: dict[str, Any] | None,
                          unread: str | None = None) -> None:
    """On stderr (stdout is the job id): the dry-run forecast sent with the job, or why
    there is none."""
    if unread is not None:
        print(f"forecast: the config's ledger could not be read ({unread}); the job has "
              "no launch forecast", file=sys.stderr)
        return
    if plan is None:
        print(f"forecast: none yet; `costsched train {config} --dry-run` measures one",
              file=sys.stderr)
        return
    to_target = (f"; to target {format_duration(plan['seconds_to_target'])}, "
                 f"${format_usd(plan['usd_to_target'])}" if plan["seconds_to_target"] else "")
    print(f"forecast: {format_duration(plan['seconds_to_end'])}, "
          f"${format_usd(plan['usd_to_end'])} to the last epoch{to_target} at "
          f"{plan['detail']['num_workers']} workers (profiled "
          f"{format_local_time(plan['made_at'])}); the run's own is made at the size and "
          "price it starts at: `costsched report`", file=sys.stderr)


def entrypoint_code_dir(path: Path, text: str) -> Path | None:
    """For a job with its own entrypoint: the folder of its code (``working_dir``,
    relative to the YAML, default the YAML's folder), checked by importing the
    entrypoint from it here, before anything is sent. None for built-in jobs."""
    from costsched.config.entrypoint import import_entrypoint
    from costsched.config.strict import parse_yaml_mapping

    data = parse_yaml_mapping(text, str(path))
    spec = data.get("entrypoint")
    if not isinstance(spec, str):
        return None  # built-in, or a bad value the scheduler's validation names
    working_dir = data.get("working_dir")
    if isinstance(working_dir, str) and working_dir.startswith("gcs://"):
        return None  # already a package on the cluster
    folder = (path.parent / str(working_dir or ".")).resolve()
    if not folder.is_dir():
        raise ConfigError(f"{path}: `working_dir` {folder} is not a folder")
    sys.path.insert(0, str(folder))
    try:
        import_entrypoint(spec)
    finally:
        sys.path.remove(str(folder))
    return folder


def run_status(args: argparse.Namespace) -> int:
    result = _call(args, "status")
    if args.format == "json":
        print(json.dumps(result, indent=2, default=str))
    else:
        print(format_status(result["jobs"]))
    return 0


def run_cancel(args: argparse.Namespace) -> int:
    _call(args, "cancel", args.job_id)
    print(f"cancelled {args.job_id}")
    return 0


def run_logs(args: argparse.Namespace) -> int:
    for event in _call(args, "logs", args.job_id)["events"]:
        print(f"{format_local_time(event['at'])}  {event['kind']:<12} {event['detail']}")
    return 0


def format_status(rows: Sequence[dict[str, Any]]) -> str:
    """``costsched status`` as a table, then one line per active alert.

    Dollars keep three significant digits under $1 (a $0.004 budget is not
    ``0.00``); steps are the last reported of the total (kept while a job waits); the
    ETA shows only while a job holds workers, since a finished or waiting job's last
    estimate is stale: to its target (its last epoch without one) by its run's
    refreshed forecast, with the dollars it will have spent by then, else to its last
    step at its step rate; ``unreachable`` when the fitted curve levels off below the
    target.
    """
    # Here, not at the top: `costsched --help` must not pay for the scheduler's imports.
    from costsched.scheduler.state import RUNNING

    if not rows:
        return "no jobs"
    header = ("JOB", "NAME", "STATE", "PRI", "WORKERS", "GPUS", "SPENT $", "BUDGET $",
              "$/H", "STEPS", "ETA", "FORECAST $", "RESTARTS")
    table = [header] + [(
        r["job_id"], r["name"], r["state"], str(r["priority"]), str(r["workers"]),
        str(r["gpus"]), format_usd(r["spent_usd"]), format_usd(r["budget_usd"]),
        format_usd(r["usd_per_hour"]), steps_cell(r),
        *(forecast_cells(r) if r["state"] in RUNNING else ("-", "-")),
        f"{r['restarts']} ({r['preemptions']}p {r['spot_restarts']}s {r['failures']}f)",
    ) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in table]
    lines += [measured_line(r) for r in rows if r.get("samples_per_s") is not None]
    lines += [f"ALERT {alert}" for r in rows for alert in r["alerts"]]
    return "\n".join(lines)


def steps_cell(row: dict[str, Any]) -> str:
    """``step/total`` as its run last reported them (the step alone before a total is
    known; ``-`` before any)."""
    step, total = row.get("last_step") or 0, row.get("total_steps")
    return f"{step}/{total}" if total else (str(step) if step else "-")


def forecast_cells(row: dict[str, Any]) -> tuple[str, str]:
    """A running job's ETA and forecast dollars (see :func:`format_status`)."""
    if row.get("target_reachable") is False:
        return "unreachable", "unreachable"
    if row.get("forecast_eta_s") is not None:
        return format_duration(row["forecast_eta_s"]), format_usd(row["forecast_usd"])
    return format_duration(row["eta_s"]), "-"


def measured_line(row: dict[str, Any]) -> str:
    """What a running job measured: samples/s, the fitted speedup one worker down and
    up, its statistical efficiency and noise scale, and useful samples per dollar."""
    def ratio(value: float | None) -> str:
        return f"x{value:.2f}" if value is not None else "-"

    noise = row.get("noise_scale")
    per_usd = row.get("samples_per_usd")
    return (f"MEASURED {row['job_id']}: {row['samples_per_s']:.0f} samples/s; speedup "
            f"-1 worker {ratio(row.get('speedup_down'))}, +1 worker "
            f"{ratio(row.get('speedup_up'))}; efficiency {ratio(row.get('efficiency'))[1:]}; "
            f"noise scale {f'{noise:.3g}' if noise is not None else '-'}; "
            f"{f'{per_usd:.3g}' if per_usd is not None else '-'} samples/$")
