"""Scheduler configuration (``configs/scheduler.yaml``) and job submissions from text."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from costsched.config.bundled import bundled_config
from costsched.config.job import JobConfig, parse_job
from costsched.config.strict import build, closest_hint, parse_yaml_mapping, read_yaml_mapping
from costsched.cost.prices import PriceCatalog
from costsched.errors import ConfigError
from costsched.policy.registry import POLICIES
from costsched.scheduler.spot_notice import IMDS_URL

DEFAULT_SCHEDULER_CONFIG = bundled_config("scheduler.yaml")
OVERRIDE_KEYS: dict[str, tuple[str, str]] = {
    "priority": ("cost", "priority"),
    "budget_usd": ("cost", "budget_usd"),
    "min_workers": ("scaling", "min_workers"),
    "max_workers": ("scaling", "max_workers"),
    "working_dir": ("", "working_dir"),
}
"""Submission overrides -> the job-config key each replaces."""


@dataclass(frozen=True, kw_only=True)
class AutoscalingSection:
    min_nodes: int = 0
    """Whole nodes (cheapest allowed on-demand type) requested even when nothing
    waits, so that many stay up; 0 lets idle nodes time out."""
    max_nodes: int = 4
    """Never ask for capacity beyond this many nodes in all."""
    node_types: tuple[str, ...] = ()
    """Catalog instance types new nodes may be; empty allows every type."""
    usd_per_job_hour: float | None = None
    """Also ask for nodes to grow running jobs onto, as many as the cost-aware policy finds
    worth their price at this value of one hour of one job's completion time (dollars;
    as ``costsched simulate --autoscale --usd-per-job-hour``; the simulator's default is
    24). None: capacity for the running jobs' sizes and the waiting jobs only."""
    half_life_s: float | None = None
    """Hysteresis on those growth nodes: follow a moving average of the count the policy
    wants, with this half-life in seconds, and change it only when the average has moved
    half a node past the nodes there (as ``costsched simulate --autoscale-half-life``;
    e.g. 300). None: each round's count. Idle nodes leave after the autoscaler's idle
    timeout (``cluster.yaml``)."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_nodes <= self.max_nodes:
            raise ConfigError("`autoscaling` needs 0 <= min_nodes <= max_nodes")
        if self.usd_per_job_hour is not None and not 0 < self.usd_per_job_hour < math.inf:
            raise ConfigError("`autoscaling.usd_per_job_hour` must be a positive number of "
                              f"dollars (e.g. 24) or null, got {self.usd_per_job_hour}")
        if self.half_life_s is not None and not 0 < self.half_life_s < math.inf:
            raise ConfigError("`autoscaling.half_life_s` must be a positive number of seconds "
                              f"(e.g. 300) or null, got {self.half_life_s}")
        if self.half_life_s is not None and self.usd_per_job_hour is None:
            raise ConfigError("`autoscaling.half_life_s` smooths the nodes asked for growth; "
                              "set `autoscaling.usd_per_job_hour` too (e.g. 24)")


@dataclass(frozen=True, kw_only=True)
class SchedulerConfig:
    policy: str = "cost-aware"
    """Policy name, as `costsched simulate --policy` spells it."""
    round_s: float = 60.0
    """Seconds between scheduling rounds."""
    restart_s: float = 30.0
    """Seconds of progress a job loses when resized (checkpoint + restart)."""
    state_path: str = "~/.costsched/scheduler.db"
    """SQLite file holding jobs and their events, on the head node."""
    ledger_path: str = "~/.costsched/ledger.db"
    """Cost ledger every scheduled job writes to (``costsched report`` reads it)."""
    storage_path: str = "~/.costsched/runs"
    """Where scheduled jobs keep checkpoints (one folder per job id); shared by all
    nodes, as Ray Train needs for multi-node checkpoints."""
    stop_grace_s: float = 120.0
    """Seconds a stopping job gets to checkpoint and end before it is killed."""
    spot_notice_url: str = IMDS_URL
    """Instance metadata service each spot node reads its interruption notice from
    (AWS IMDSv2; ``{node_id}`` in it is replaced by the Ray node id); jobs on a node
    with a notice stop at a checkpoint and move. Empty: notices are not read."""
    stall_minutes: float = 15.0
    """A running job with no new step for this long raises a stall alert."""
    stall_restart_minutes: float = 30.0
    """A running job with no new step for this long is killed and requeued from its
    checkpoint, counted as a failure (so it is not charged to its budget for nothing);
    0: never."""
    accelerator_resource: str = "GPU"
    """Ray resource counted as one accelerator slot; jobs must ask for the same."""
    sync_penalty_per_gpu: float = 0.05
    """Default throughput model: each extra GPU adds this fraction to step time."""
    use_measured_models: bool = True
    """Plan with each job's fitted goodput model once it has measured its steps; false
    keeps the default model for every job (sizes then follow min/max workers only)."""
    autoscaling: AutoscalingSection = field(default_factory=AutoscalingSection)
    """Bounds and node types for autoscaling requests."""
    prices_path: str | None = None
    """Price catalog YAML; None: the repository's configs/prices.yaml."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"`policy` {self.policy!r} is unknown"
                              f"{closest_hint(self.policy, POLICIES)}")
        for name in ("round_s", "restart_s", "stall_minutes", "stop_grace_s"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"`{name}` must be > 0, got {getattr(self, name)}")
        if self.stall_restart_minutes < 0:
            raise ConfigError("`stall_restart_minutes` must be >= 0 (0: never)")
        if not 0 <= self.sync_penalty_per_gpu < 1:
            raise ConfigError("`sync_penalty_per_gpu` must be in [0, 1)")

    def check_catalog(self, catalog: PriceCatalog) -> None:
        """Every allowed node type must be in the catalog."""
        for name in self.autoscaling.node_types:
            try:
                catalog.instance(name)
            except ConfigError as exc:
                raise ConfigError(f"`autoscaling.node_types`: {exc}") from None


def load_scheduler_config(path: str | Path | None = None) -> SchedulerConfig:
    """Load ``configs/scheduler.yaml`` (or ``path``) strictly."""
    path = DEFAULT_SCHEDULER_CONFIG if path is None else Path(path)
    return build(SchedulerConfig, read_yaml_mapping(path), str(path))


def parse_submission(
    config_text: str, overrides: Mapping[str, Any], catalog: PriceCatalog,
    accelerator_resource: str, source: str = "<submitted job config>",
) -> tuple[JobConfig, str]:
    """Validate a submitted job YAML with ``overrides`` applied.

    Returns the job config and the YAML text to store (overrides included).
    Raises ConfigError naming the bad key; nothing is written.
    """
    data = parse_yaml_mapping(config_text, source)
    for key, value in overrides.items():
        if key not in OVERRIDE_KEYS:
            raise ConfigError(f"unknown override `{key}`; use one of {', '.join(OVERRIDE_KEYS)}")
        if value is not None:
            section, leaf = OVERRIDE_KEYS[key]
            if not section:
                data[leaf] = value
                continue
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                raise ConfigError(f"{source}: `{section}` must be a mapping")
            data[section][leaf] = value
    config = parse_job(data, source, catalog)
    _check_schedulable(config, accelerator_resource)
    return config, yaml.safe_dump(data, sort_keys=False)


def _check_schedulable(config: JobConfig, accelerator_resource: str) -> None:
    scaling = config.scaling
    if scaling.accelerator_resource != accelerator_resource:
        raise ConfigError(
            f"`scaling.accelerator_resource` is {scaling.accelerator_resource!r} but this "
            f"scheduler hands out {accelerator_resource!r}; set it to {accelerator_resource}")
    apw = scaling.accelerators_per_worker
    if apw < 1 or not math.isclose(apw, round(apw)):
        raise ConfigError("`scaling.accelerators_per_worker` must be a whole number >= 1 "
                          f"for the scheduler, got {apw}")
