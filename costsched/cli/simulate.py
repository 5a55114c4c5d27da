"""``costsched simulate``: replay workloads under scheduling policies, write results, compare."""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from costsched.errors import ConfigError
from costsched.policy.autoscale_hysteresis import (
    DEFAULT_HALF_LIFE_S,
    DEFAULT_USD_PER_JOB_HOUR,
    NodeCountHysteresis,
)
from costsched.policy.registry import ELASTIC, POLICIES, make_policy, policy_class

POLLUX_DIR_ENV = "COSTSCHED_POLLUX_DIR"
"""The same as ``costsched.sim.profiles.POLLUX_DIR_ENV``, which imports pandas."""
SIA_DIR_ENV = "COSTSCHED_SIA_DIR"
"""The same as ``costsched.sim.gpu_types.SIA_DIR_ENV``."""
DEFAULT_NODES = 16
DEFAULT_INSTANCE = "g4dn.12xlarge"
CLUSTERS = ("sia",)
"""Named heterogeneous clusters (``--cluster``)."""

DESCRIPTION = """\
Replay job-arrival workloads (Pollux/Philly CSVs) on a simulated cluster under one
or more policies. Per workload and policy, DIR/<workload>/<policy>/ gets summary.json,
jobs.csv, allocation.png (GPUs allocated and nodes over time) and cost.png (cumulative
dollars); DIR/<workload>/jct_cdf.png overlays the JCT CDF of every policy given
(repeat --policy to compare). A comparison table, with the published Pollux-paper
mean JCTs beside for the Pollux workloads, is printed and saved as DIR/comparison.csv.
Dollars against mean JCT per policy over all workloads (the Pareto front marked) and
restarts per job by app are printed and saved as DIR/pareto.csv, DIR/pareto.png and
DIR/restarts_by_app.csv.
With --cluster sia (several GPU types), each run also gets intervals.csv: every stretch
a job held GPUs of one instance type, the source of its dollars.
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "simulate", help="trace-driven cluster simulation of scheduling policies",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--workload", nargs="+", required=True, metavar="CSV",
                        help="workload CSV(s): name,time,application,num_replicas,batch_size")
    parser.add_argument("--policy", action="append", choices=sorted(POLICIES), default=None,
                        help="policy to run; repeat to compare several (default: cost-aware)")
    parser.add_argument("--cluster", default=None, metavar="NAME",
                        help="a heterogeneous cluster instead of --nodes x --instance-type: "
                             "`sia` = Sia's 64 GPUs, 6 x g4dn.12xlarge (4 T4) + 3 x on-prem "
                             "8 x RTX 2080 Ti + 2 x p4d.24xlarge (8 A100), profiles from "
                             f"--profiles or ${SIA_DIR_ENV} (default ../shared/data/sia), with "
                             "Sia's per-app restart times and step-time calibration; "
                             "elastic policies only (cost-aware, cost-aware-unaware)")
    parser.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="nodes (default 16)")
    parser.add_argument("--gpus-per-node", type=int, default=None, metavar="G",
                        help="override the instance's GPUs per node (GPU price kept)")
    parser.add_argument("--autoscale", default=None, metavar="MIN:MAX",
                        help="let the policy choose the node count in [MIN, MAX] "
                             "(cost-aware only; fixed-size policies keep --nodes)")
    parser.add_argument("--usd-per-job-hour", default=None, metavar="USD",
                        help="with --autoscale: dollars one hour less of a job's completion "
                             "time is worth; cost-aware keeps a GPU when the JCT it saves is "
                             "worth what it adds to the bill, so more means more nodes "
                             f"(default {DEFAULT_USD_PER_JOB_HOUR:g})")
    parser.add_argument("--autoscale-half-life", default=None, metavar="S",
                        help="with --autoscale: resize only when a moving average of the "
                             "wanted node count, with this half-life in seconds (e.g. "
                             f"{DEFAULT_HALF_LIFE_S:g}), strays over half a node from the "
                             "current count: fewer node changes; default 0: resize to each "
                             "round's wanted count")
    parser.add_argument("--instance-type", default=DEFAULT_INSTANCE, metavar="T",
                        help="node type from the price catalog (default g4dn.12xlarge)")
    parser.add_argument("--spot", action="store_true", help="price nodes as spot capacity")
    parser.add_argument("--spot-trace", default=None, metavar="JSON",
                        help="add a spot pool of --instance-type nodes whose capacity and "
                             "preemptions replay this trace (one node per trace instance; "
                             "e.g. ../shared/data/spot/availability-16-node/"
                             "us-west-2a_v100_1.json); --nodes is then the on-demand pool, "
                             "or --autoscale its bounds (the policy then also releases "
                             "spot nodes it does not want)")
    parser.add_argument("--spot-nodes", type=int, default=None, metavar="N",
                        help="most spot nodes held at once (default: the trace's largest count)")
    parser.add_argument("--checkpoint-interval", type=float, default=None, metavar="S",
                        help="longest seconds of running between a job's checkpoints; a "
                             "preempted job loses the work since its last (default 1800). On "
                             "spot it is shortened to Young's interval for the preemption "
                             "rate seen so far, unless --fixed-checkpoint-interval, "
                             "--spot-notice or --checkpoint-cost 0")
    parser.add_argument("--checkpoint-cost", type=float, default=None, metavar="S",
                        help="seconds each periodic checkpoint pauses training (default 10; "
                             "0: free, and the interval is never shortened)")
    parser.add_argument("--fixed-checkpoint-interval", action="store_true", default=None,
                        help="every job checkpoints every --checkpoint-interval, on spot too")
    parser.add_argument("--spot-notice", type=float, default=None, metavar="S",
                        help="seconds of warning before a preemption (AWS: 120), in which a "
                             "job stops at a checkpoint, as the live scheduler does; it then "
                             "keeps its progress of then (default 0: none)")
    parser.add_argument("--spot-seed", type=int, default=0,
                        help="seed of which spot nodes a drop in the trace preempts (default 0)")
    parser.add_argument("--oracle", action="store_true",
                        help="show elastic policies every job's measured profile at every "
                             "placement (default: only models fitted to the steps simulated "
                             "so far, as a live scheduler would have)")
    parser.add_argument("--explore-factor", type=int, default=None, metavar="F",
                        help="without --oracle, offer a job at most F times the most GPUs it "
                             "has tried (default 8; Pollux's rule is 2)")
    parser.add_argument("--share-measurements", action="store_true",
                        help="without --oracle, a new job starts from the steps earlier jobs "
                             "of its app measured (on its GPU type), not from the prior alone")
    add_remaining_work_options(parser)
    parser.add_argument("--out", default="sim-out", metavar="DIR",
                        help="output folder (default sim-out)")
    parser.add_argument("--profiles", default=None, metavar="DIR",
                        help=f"Pollux data folder (default ${POLLUX_DIR_ENV} or "
                             "../shared/data/pollux); with --cluster sia, the Sia one "
                             f"(default ${SIA_DIR_ENV} or ../shared/data/sia)")
    parser.add_argument("--prices", default=None,
                        help="price catalog YAML (default: $COSTSCHED_PRICES, else the "
                             "shipped configs/prices.yaml)")
    parser.set_defaults(func=run)


def parse_autoscale(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        low, high = (int(part) for part in text.split(":"))
    except ValueError:
        raise ConfigError(f"--autoscale wants MIN:MAX, e.g. 4:16; got `{text}`") from None
    if not 0 <= low <= high or high < 1:
        raise ConfigError(f"--autoscale {text}: need 0 <= MIN <= MAX and MAX >= 1")
    return low, high


def parse_autoscale_settings(args: argparse.Namespace) -> tuple[float, float]:
    """(usd_per_job_hour, half_life_s) from ``--usd-per-job-hour`` and
    ``--autoscale-half-life``; each needs ``--autoscale``. Bad input is a ConfigError."""
    given = [flag for flag, value in (("--usd-per-job-hour", args.usd_per_job_hour),
                                      ("--autoscale-half-life", args.autoscale_half_life))
             if value is not None]
    if given and args.autoscale is None:
        raise ConfigError(f"{' and '.join(given)}: for an autoscaled cluster only; add "
                          "--autoscale MIN:MAX, e.g. 4:16")
    usd = _number("--usd-per-job-hour", args.usd_per_job_hour, default=DEFAULT_USD_PER_JOB_HOUR,
                  example=DEFAULT_USD_PER_JOB_HOUR, unit="dollars", positive=True)
    half_life_s = _number("--autoscale-half-life", args.autoscale_half_life, default=0.0,
                          example=DEFAULT_HALF_LIFE_S, unit="seconds", positive=False)
    return usd, half_life_s


def _number(flag: str, text: str | None, *, default: float, example: float, unit: str,
            positive: bool) -> float:
    """``text`` as a finite number, > 0 when ``positive`` else >= 0; ``default`` if None."""
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    in_range = value > 0 if positive else value >= 0
    if not in_range or math.isinf(value):
        least = "a positive number of" if positive else "a number of"
        raise ConfigError(f"{flag} wants {least} {unit}, e.g. {example:g}; got `{text}`")
    return value


def _instance(args: argparse.Namespace):
    from costsched.cost.prices import load_catalog

    instance = load_catalog(args.prices).instance(args.instance_type)
    if args.gpus_per_node is None:
        return instance
    if args.gpus_per_node < 1:
        raise ConfigError("--gpus-per-node must be >= 1")
    return instance.with_gpus_per_node(args.gpus_per_node)


def _progress(label: str):
    """A progress reporter: a line at most once a second of wall time, and at the end."""
    started = time.monotonic()
    last = [started]

    def report(time_s: float, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= 1.0:
            last[0] = now
            print(f"  [{label}] simulated {time_s / 3600:5.1f} h, jobs done {done:3d}/{total}"
                  f" ({now - started:4.1f} s)", file=sys.stderr, flush=True)

    return report


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import pandas as pd

    from costsched.goodput.online import EXPLORATION_FACTOR
    from costsched.sim.compare import comparison_table, load_published, render_table
    from costsched.sim.outputs import jobs_frame, plot_jct_cdf, summarise, write_run
    from costsched.sim.pareto import write_pareto
    from costsched.sim.profiles import load_profiles, pollux_dir
    from costsched.sim.simulator import SimConfig, Simulator
    from costsched.sim.workload import load_workload, workload_label

    policies = args.policy or ["cost-aware"]
    explore_factor = EXPLORATION_FACTOR if args.explore_factor is None else args.explore_factor
    if explore_factor < 1:
        raise ConfigError(f"--explore-factor wants a whole number >= 1, got {explore_factor}")
    autoscale = parse_autoscale(args.autoscale)
    usd_per_job_hour, half_life_s = parse_autoscale_settings(args)
    spot_args = (args.spot_nodes, args.checkpoint_interval, args.spot_notice,
                 args.checkpoint_cost, args.fixed_checkpoint_interval)
    if args.spot_trace is None and any(a is not None for a in spot_args):
        raise ConfigError("--spot-nodes, --checkpoint-interval, --checkpoint-cost, "
                          "--fixed-checkpoint-interval and --spot-notice need --spot-trace")
    if args.spot_trace is not None and (args.cluster is not None or args.spot
                                        or half_life_s > 0):
        raise ConfigError("--spot-trace adds a spot pool to a one-type cluster resized each "
                          "round; drop --cluster, --spot and --autoscale-half-life")
    hysteresis = None
    if autoscale is not None and half_life_s > 0:
        hysteresis = NodeCountHysteresis(half_life_s=half_life_s)
    if args.cluster is not None:
        data_dir, build = _cluster_builder(args, policies)
    else:
        data_dir = pollux_dir(args.profiles)
        profiles = load_profiles(data_dir)
        instance = _instance(args)

        pool = _spot_pool(args)

        def build(name: str, jobs, config_kwargs: dict):
            config = SimConfig(instance=instance, instance_name=args.instance_type,
                               num_nodes=args.nodes, spot=args.spot, **config_kwargs)
            policy = make_policy(name)
            if config.autoscale is not None:
                policy = policy_class(name)(usd_per_job_hour=usd_per_job_hour)
            if pool is not None:
                from costsched.sim.spot import SpotSimulator

                return SpotSimulator(config=config, profiles=profiles, workload=jobs,
                                     policy=policy, pool=pool)
            return Simulator(config=config, profiles=profiles, workload=jobs, policy=policy)
    workloads = [(load_workload(path), workload_label(path)) for path in args.workload]
    if autoscale is not None:
        resize_to = (f"a moving average of the wanted node count (half-life {half_life_s:g} s)"
                     if hysteresis else "each round's wanted node count")
        print(f"autoscale {autoscale[0]}:{autoscale[1]}: a job-hour of JCT is worth "
              f"${usd_per_job_hour:g}; resizing to {resize_to}", file=sys.stderr)
    out = Path(args.out)
    summaries, job_tables = [], []
    for jobs, label in workloads:
        jcts = {}
        for name in policies:
            resizes = autoscale is not None and name in ELASTIC
            tag = f"{name} (autoscale {autoscale[0]}:{autoscale[1]})" if resizes else name
            tag += " (oracle)" if args.oracle and name in ELASTIC else ""
            tag += " (shared)" if args.share_measurements and not args.oracle and name in ELASTIC \
                else ""
            tag += " (work hidden)" if args.hide_remaining_work and name in ELASTIC else ""
            tag += (" (work told while running)" if args.remaining_work_while_running
                    and name in ELASTIC else "")
            sim = build(name, jobs, {"autoscale": autoscale if resizes else None,
                                     "autoscale_hysteresis": hysteresis if resizes else None,
                                     "elastic": name in ELASTIC, "oracle": args.oracle,
                                     "explore_factor": explore_factor,
                                     "share_measurements": args.share_measurements,
                                     **remaining_work_config(args)})
            result = sim.run(on_round=_progress(f"{tag} {label}"))
            summary = summarise(result, policy=tag, workload=label)
            run_dir = out / label.replace("/", "_") / _slug(tag)
            write_run(result, summary, run_dir)
            jcts[tag] = np.array([job.jct_s for job in result.jobs])
            summaries.append(summary)
            job_tables.append(jobs_frame(result).assign(policy=tag, workload=label))
            spot = (f", {summary['num_preemptions']} preemptions"
                    if "num_preemptions" in summary else "")
            print(f"{tag} on {label}: mean JCT {summary['mean_jct_s']:.0f} s, "
                  f"${summary['cost_usd']:.2f}{spot} -> {run_dir}")
        plot_jct_cdf(jcts, out / label.replace("/", "_") / "jct_cdf.png", label)
    table = comparison_table(summaries, load_published(data_dir))
    table.to_csv(out / "comparison.csv", index=False)
    print(render_table(table))
    print(write_pareto(summaries, pd.concat(job_tables, ignore_index=True), out))
    return 0


def _spot_pool(args: argparse.Namespace):
    """The spot pool of ``--spot-trace`` (None without it); bad input is a ConfigError."""
    if args.spot_trace is None:
        return None
    from costsched.sim.spot import (
        DEFAULT_CHECKPOINT_COST_S,
        DEFAULT_CHECKPOINT_INTERVAL_S,
        SpotPool,
    )
    from costsched.sim.spot_trace import load_spot_trace

    trace = load_spot_trace(args.spot_trace)
    num_nodes = max(trace.counts) if args.spot_nodes is None else args.spot_nodes
    interval = (DEFAULT_CHECKPOINT_INTERVAL_S if args.checkpoint_interval is None
                else args.checkpoint_interval)
    cost = DEFAULT_CHECKPOINT_COST_S if args.checkpoint_cost is None else args.checkpoint_cost
    pool = SpotPool(trace=trace, num_nodes=num_nodes, checkpoint_interval_s=interval,
                    seed=args.spot_seed, notice_s=args.spot_notice or 0.0,
                    checkpoint_cost_s=cost, fixed_interval=bool(args.fixed_checkpoint_interval))
    every = (f"at most every {interval:.0f} s (shorter on spot)" if pool.shortens_interval
             else f"every {interval:.0f} s")
    print(f"spot pool: up to {pool.num_nodes} x {args.instance_type} from {trace.path} "
          f"(tick {trace.gap_s:.0f} s, {len(trace.counts)} ticks), checkpoints {every}, "
          f"{cost:.0f} s each, notice {pool.notice_s:.0f} s; on-demand pool: {args.nodes} "
          f"nodes", file=sys.stderr)
    return pool


def _cluster_builder(args: argparse.Namespace, policies: list[str]):
    """(data folder, simulator builder) for ``--cluster``; rejects what it does not take."""
    from costsched.cost.prices import load_catalog
    from costsched.sim.gpu_types import SIA_RESTART_S, load_typed_profiles, sia_dir, sia_pools
    from costsched.sim.hetero import HeteroSimulator
    from costsched.sim.simulator import SimConfig

    if args.cluster not in CLUSTERS:
        from costsched.config.strict import closest_hint

        hint = closest_hint(args.cluster, CLUSTERS) or f"; known: {', '.join(CLUSTERS)}"
        raise ConfigError(f"unknown cluster `{args.cluster}`{hint}")
    rigid = [name for name in policies if name not in ELASTIC]
    if rigid:
        raise ConfigError(f"--cluster {args.cluster} needs elastic policies "
                          f"({', '.join(sorted(ELASTIC))}); got {', '.join(rigid)}")
    if (args.autoscale or args.gpus_per_node is not None or args.nodes != DEFAULT_NODES
            or args.instance_type != DEFAULT_INSTANCE):
        raise ConfigError(f"--cluster {args.cluster} is a fixed cluster of its own nodes; drop "
                          "--autoscale, --gpus-per-node, --nodes and --instance-type")
    data_dir = sia_dir(args.profiles)
    pools = sia_pools(load_catalog(args.prices))
    profiles = load_typed_profiles(data_dir, tuple(p.gpu_type for p in pools))
    print(f"cluster {args.cluster}: " + ", ".join(
        f"{p.num_nodes} x {p.instance_name} ({p.instance.num_gpus_per_node} "
        f"{p.instance.gpu_model}, profile `{p.gpu_type}`)" for p in pools)
        + "; Sia's per-app restart times and step-time calibration applied", file=sys.stderr)

    def build(name: str, jobs, config_kwargs: dict):
        config = SimConfig(instance=pools[0].instance, instance_name=pools[0].instance_name,
                           num_nodes=sum(p.num_nodes for p in pools), spot=args.spot,
                           **config_kwargs)
        policy = make_policy(name)
        return HeteroSimulator(config=config, pools=pools, profiles=profiles, workload=jobs,
                               policy=policy, aware=policy.heterogeneity_aware,
                               restart_s_by_app=SIA_RESTART_S)

    return data_dir, build


def _slug(tag: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in tag).strip("-").replace(
        "--", "-")


def add_remaining_work_options(parser: argparse.ArgumentParser) -> None:
    """What jobs tell the policy of the work they have left (one option or neither)."""
    told = parser.add_mutually_exclusive_group()
    told.add_argument("--hide-remaining-work", action="store_true",
                      help="jobs do not tell the policy the work they have left, so "
                           "cost-aware weighs them by the service they have had (LAS) "
                           "instead of by the work left (SRPT)")
    told.add_argument("--remaining-work-while-running", action="store_true",
                      help="a job tells the work it has left only while it runs, measured "
                           "and past its restart, as a live adaptive-batch job does")


def remaining_work_config(args: argparse.Namespace) -> dict[str, bool]:
    """The :class:`~costsched.sim.simulator.SimConfig` fields those options set."""
    return {"tell_remaining_work": not args.hide_remaining_work,
            "remaining_work_while_running": args.remaining_work_while_running}
