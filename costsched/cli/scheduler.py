"""``costsched scheduler start|stop``: the live scheduler actor on a running Ray cluster."""

from __future__ import annotations

import argparse
import time

READY_TIMEOUT_S = 120.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("start", "stop"),
                        help="start: create the scheduler actor (a no-op if one runs); "
                             "stop: checkpoint running jobs and remove the actor")
    parser.add_argument("--config", default=None,
                        help="scheduler YAML (default: the shipped configs/scheduler.yaml)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster address (default: RAY_ADDRESS, else the local one)")
    parser.set_defaults(func=run)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "scheduler", help="start or stop the live scheduler on a Ray cluster",
        description="The scheduler runs as a detached Ray actor on the head node; its "
                    "jobs and their events live in SQLite (state_path), so it survives "
                    "its own restarts.")
    add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from costsched.config.scheduler import load_scheduler_config

    config = load_scheduler_config(args.config) if args.action == "start" else None
    from costsched.errors import SchedulerUnavailable
    from costsched.ray_layer.scheduler import client
    from costsched.ray_layer.scheduler.service import SERVICE_NAME, start_service

    client.connect(args.address)
    if args.action == "stop":
        stopped = client.call("shutdown")["stopped"]
        client.remove_service()
        print(f"scheduler stopped; {len(stopped)} running job(s) checkpointed and marked "
              f"PREEMPTED: {' '.join(stopped) or '-'}")
        return 0
    try:
        info = client.call("info", timeout_s=5.0)
        print(f"scheduler already running: policy {info['policy']}, state {info['state_path']}")
        return 0
    except SchedulerUnavailable:
        pass
    start_service(config)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            info = client.call("info", timeout_s=10.0)
            break
        except SchedulerUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    print(f"scheduler {SERVICE_NAME} running: policy {info['policy']}, a round every "
          f"{info['round_s']:g} s, state {info['state_path']}, ledger {info['ledger_path']}")
    return 0
