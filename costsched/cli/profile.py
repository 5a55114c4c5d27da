"""``costsched profile export``: a scheduled job's measurements as a simulator profile.

Reads the scheduler's state file directly (no Ray): the job's config, the steps it
measured and its training curve, and writes ``DIR/APP/`` in the Pollux artifact's
format plus an ``app.json`` (epochs, per-GPU batch cap), which ``costsched simulate
--profiles DIR`` replays under any policy for workload rows naming ``APP``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from costsched.errors import ConfigError, CostschedError

STOPPED_EARLY = ("TARGET_REACHED", "BUDGET_EXHAUSTED", "CANCELLED", "FAILED")
"""End states of a job that did not train all its epochs: its profile ends where it did."""

DESCRIPTION = """\
Write what a job scheduled by `costsched scheduler` measured (step times per number of
workers and nodes, per-epoch progress, validation metric and gradient noise) as the
simulator profile DIR/APP: placements.csv, scalability.csv, validation-B.csv (B the
job's global batch) and app.json. Then replay the job under other policies:
  costsched simulate --profiles DIR --workload W.csv --policy fifo --policy cost-aware
with W.csv rows naming APP in their `application` column. At a size the job never ran
at, the step time is linear between the measured worker counts and, past them, held at
the nearest one (not extrapolated).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "profile", help="export a scheduled job's measurements as a simulator profile",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                    help="export: write one job's profile")
    export = actions.add_parser(
        "export", help="write one job's profile for `costsched simulate`",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    export.add_argument("job_id", help="the job id `costsched submit` printed")
    export.add_argument("--out", required=True, metavar="DIR",
                        help="profiles folder; the app goes to DIR/APP (pass DIR to "
                             "`costsched simulate --profiles`)")
    export.add_argument("--app", default=None, metavar="NAME",
                        help="app name, as a workload's `application` column names it "
                             "(default: the job id)")
    export.add_argument("--epochs", type=int, default=None, metavar="N",
                        help="epochs the app trains for (default: the job's "
                             "training.num_epochs; the epochs it completed if it stopped "
                             "early)")
    export.add_argument("--config", default=None,
                        help="scheduler YAML whose state_path is read (default: the "
                             "shipped configs/scheduler.yaml)")
    export.set_defaults(func=run_export)


def run_export(args: argparse.Namespace) -> int:
    from costsched.config.scheduler import load_scheduler_config

    path = Path(load_scheduler_config(args.config).state_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"no scheduler state file at {path}; pass --config with the "
                          "scheduler's YAML")
    from costsched.goodput.profile import export_profile
    from costsched.scheduler.job_models import JobModels
    from costsched.scheduler.state import JobStore

    try:
        job = JobStore(path).get(args.job_id)
    except CostschedError as exc:
        raise ConfigError(str(exc)) from None
    training = _training(job)
    models = JobModels(path)
    epochs = args.epochs or _default_epochs(job, training, models)
    done = export_profile(
        models, job.job_id, args.out, app_name=args.app or job.job_id, epochs=epochs,
        init_batch_size=training.global_batch_size if training is not None else None,
        max_local_bsz=(training.micro_batch_size or None) if training is not None else None)
    _print_export(done, job.job_id, args.out)
    return 0


def _default_epochs(job, training, models) -> int:
    """The config's ``num_epochs``; the last epoch recorded for a job that stopped early
    (or whose config does not parse)."""
    if training is not None and job.state not in STOPPED_EARLY:
        return training.num_epochs
    return max([1, *(c.epoch for c in models.curve(job.job_id))])


def _training(job):
    """The job's training section, or None (with a note) when its stored config no
    longer parses: batch and epochs then come from the measurements."""
    import yaml

    from costsched.config.job import parse_job

    try:
        return parse_job(yaml.safe_load(job.config_yaml), f"job {job.job_id}").training
    except (ConfigError, yaml.YAMLError) as exc:
        print(f"note: job {job.job_id}'s stored config does not parse ({exc}); batch and "
              "epochs come from its measurements", file=sys.stderr)
        return None


def _print_export(done, job_id: str, out: str) -> None:
    curve = next(f.name for f in done.files if f.name.startswith("validation-"))
    filled = done.epochs - len(done.measured_epochs)
    noise = "" if done.noise_measured else "; no gradient noise measured (noise scale 0)"
    lines = [
        ("placements.csv", f"{done.num_placements} measured step time(s) on one node"),
        ("scalability.csv", f"{done.num_scale_points} over several nodes"),
        (curve, f"{done.epochs} epoch(s) at batch {done.init_batch_size}: "
                f"{len(done.measured_epochs)} recorded, {filled} filled in{noise}"),
        ("app.json", f"epochs {done.epochs}, per-GPU batch cap {done.max_local_bsz}"),
    ]
    width = max(len(name) for name, _ in lines)
    print(f"wrote app `{done.folder.name}` from job {job_id} to {done.folder}:")
    for name, what in lines:
        print(f"  {name:<{width}}  {what}")
    print(f"replay it: costsched simulate --profiles {out} --workload W.csv "
          f"(rows with application {done.folder.name})")
