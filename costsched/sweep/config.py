"""Sweep configuration: a base job, a search space over its fields, a target and a budget.

A sweep YAML names a base training-job YAML and a search space whose keys are
dotted paths into that job (``optimizer.lr``, ``compression.low_rank_ratio``);
each trial is the base job with one point of the space applied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from costsched.config.job import JobConfig, load_job_config, parse_job
from costsched.config.strict import build, read_yaml_mapping
from costsched.cost.prices import PriceCatalog, load_catalog
from costsched.errors import ConfigError
from costsched.sweep.objective import ObjectiveSection


@dataclass(frozen=True, kw_only=True)
class Dimension:
    """One searched field. Exactly one of ``choice``, ``uniform``, ``loguniform``."""

    choice: tuple[Any, ...] = ()
    """Discrete values to pick from."""
    uniform: tuple[float, ...] = ()
    """``[low, high]`` sampled uniformly."""
    loguniform: tuple[float, ...] = ()
    """``[low, high]`` sampled log-uniformly (both > 0)."""

    def __post_init__(self) -> None:
        given = [n for n in ("choice", "uniform", "loguniform") if getattr(self, n)]
        if len(given) != 1:
            raise ConfigError("each `space` entry needs exactly one of choice, uniform, loguniform")
        for name in ("uniform", "loguniform"):
            bounds = getattr(self, name)
            if bounds and (len(bounds) != 2 or not bounds[0] < bounds[1]):
                raise ConfigError(f"`{name}` needs [low, high] with low < high, got {list(bounds)}")
        if self.loguniform and self.loguniform[0] <= 0:
            raise ConfigError("`loguniform` bounds must be > 0")


@dataclass(frozen=True, kw_only=True)
class SearchSection:
    algorithm: Literal["tpe", "nsga2", "random", "cfo"] = "tpe"
    """Optuna TPE (single objective: dollars to target), NSGA-II (Pareto front of
    accuracy vs dollars), random search, or ``cfo``: cost-frugal local search from the
    cheapest sensible point (:mod:`costsched.sweep.cfo`, after FLAML's CFO)."""
    seed: int = 0
    """Seed of the search algorithm."""
    low_cost: dict[str, Any] = field(default_factory=dict)
    """``cfo`` only: space values of the cheapest sensible point it starts from (the
    rest: the base job's values; fewest workers when workers are searched)."""


@dataclass(frozen=True, kw_only=True)
class SchedulerSection:
    kind: Literal["asha", "none"] = "asha"
    """Early stopping: ASHA over dollars spent, or none."""
    grace_usd: float = 0.0005
    """Dollars every trial may spend before ASHA first compares it."""
    reduction_factor: int = 3
    """ASHA keeps the best 1/reduction_factor of trials at each rung."""

    def __post_init__(self) -> None:
        if not self.grace_usd > 0 or self.reduction_factor < 2:
            raise ConfigError("`scheduler.grace_usd` must be > 0 and `reduction_factor` >= 2")


@dataclass(frozen=True, kw_only=True)
class SweepConfig:
    name: str
    """Sweep name: its folder under ``storage_path`` and its ledger runs are named after it."""
    base_job: str
    """Training-job YAML every trial starts from (relative to the sweep file)."""
    space: dict[str, Dimension]
    """Dotted job field -> how to search it."""
    target_value: float
    """Validation accuracy a trial must reach; dollars to reach it is the objective."""
    budget_usd: float
    """Hard cap on the whole sweep's spend."""
    trial_budget_usd: float
    """Cap on one trial's spend (raised by the plan to reach ASHA's first rung); the
    forecast gate may give a trial a smaller cap, never a larger one."""
    num_trials: int = 8
    """Trials to try at most (fewer if the budget runs out)."""
    max_concurrent_trials: int = 1
    """Trials running at once."""
    search: SearchSection = field(default_factory=SearchSection)
    """Search algorithm."""
    scheduler: SchedulerSection = field(default_factory=SchedulerSection)
    """Early stopping."""
    storage_path: str = "~/.costsched/sweeps"
    """Folder on the head (the machine that runs the sweep) for its ledger, the Tune
    experiment and outputs. Trials checkpoint where the base job's ``storage_path`` says,
    which may be an object store (``s3://...``)."""
    profile: bool = True
    """Before the first trial, measure the base job's start-up and pace with a short
    real run (its dollars count against ``budget_usd``; skipped when ``sweep --dry-run``
    already stored one): trial caps are raised to what a trial needs to reach ASHA's
    first rung, and ASHA's last rung is the cap less the start-up. False: the caps
    as configured."""

    objective: ObjectiveSection = field(default_factory=ObjectiveSection)
    """What trials rank by: dollars to target, plus serving dollars when
    ``objective.serving`` is given."""
    forecast_gate: bool = True
    """With a profile: the budget gate launches a trial while the budget left holds the
    forecast dollars of a trial (plus a margin) rather than a whole cap, and gives
    that trial a cap shrunk to fit (:mod:`costsched.sweep.gate`); every trial still runs
    under a hard cap, so the budget holds even if each runs to it. False: every trial
    needs room for a whole cap."""

    def __post_init__(self) -> None:
        if not self.space:
            raise ConfigError("`space` is empty; give at least one field to search")
        if not 0 < self.target_value <= 1:
            raise ConfigError("`target_value` must be an accuracy in (0, 1]")
        if not (self.budget_usd > 0 and self.trial_budget_usd > 0):
            raise ConfigError("`budget_usd` and `trial_budget_usd` must be > 0")
        if self.trial_budget_usd > self.budget_usd:
            raise ConfigError("`trial_budget_usd` exceeds `budget_usd`: no trial could start")
        if self.num_trials <= 0 or self.max_concurrent_trials <= 0:
            raise ConfigError("`num_trials` and `max_concurrent_trials` must be >= 1")
        if "://" in self.storage_path:
            raise ConfigError(
                f"`storage_path` {self.storage_path!r} is a URI; a sweep keeps its ledger "
                "and outputs in a folder on the head: give a folder, and put the trials' "
                "checkpoints on the object store with the base job's `storage_path`")

    def resolved_storage_path(self) -> Path:
        return Path(self.storage_path).expanduser().resolve()


@dataclass(frozen=True, kw_only=True)
class LoadedSweep:
    config: SweepConfig
    base: dict[str, Any]
    """The base job as a mapping (trials apply their point to a copy)."""
    base_job: JobConfig
    source: Path


def load_sweep(path: str | Path, catalog: PriceCatalog | None = None) -> LoadedSweep:
    """Load a sweep YAML and its base job; check every space key names a job field."""
    path = Path(path)
    config = build(SweepConfig, read_yaml_mapping(path), str(path))
    base_path = (path.parent / config.base_job).resolve()
    base_job = load_job_config(base_path, catalog)
    if base_job.entrypoint is not None:
        raise ConfigError(f"{path}: `base_job` {config.base_job} names an entrypoint; sweeps "
                          "search the built-in loop's settings only")
    serving = config.objective.serving
    if serving is not None:
        try:
            (catalog or load_catalog()).instance(serving.instance_type)
        except ConfigError as exc:
            raise ConfigError(f"{path}: `objective.serving.instance_type`: {exc}") from None
    base = with_absolute_data_file(read_yaml_mapping(base_path), base_job)
    for key, dim in config.space.items():
        sample = dim.choice[0] if dim.choice else (dim.uniform or dim.loguniform)[0]
        try:
            job_for(base, {key: sample}, catalog)
        except ConfigError as exc:
            raise ConfigError(f"{path}: `space.{key}`: {exc}") from None
    return LoadedSweep(config=config, base=base, base_job=base_job, source=path)


def with_absolute_data_file(base: dict[str, Any], base_job: JobConfig) -> dict[str, Any]:
    """``base`` with a relative data file path made absolute from the working directory,
    as the base job read it: Tune runs each trial in its own folder, where the relative
    path names nothing."""
    dataset = base_job.dataset
    if dataset is None or not dataset.is_file or Path(dataset.name).is_absolute():
        return base
    return apply_point(base, {"dataset.name": str(Path(dataset.name).resolve())})


WORKERS_KEY = "scaling.workers"
"""Space key for a fixed worker count: sets both ``min_workers`` and ``max_workers``."""


def expand_aliases(point: dict[str, Any]) -> dict[str, Any]:
    expanded = dict(point)
    if WORKERS_KEY in expanded:
        workers = expanded.pop(WORKERS_KEY)
        expanded["scaling.min_workers"] = expanded["scaling.max_workers"] = workers
    return expanded


def value_in_job(job: JobConfig, key: str) -> Any:
    """The job's value of a space key (aliases included)."""
    if key == WORKERS_KEY:
        return job.scaling.max_workers
    node: Any = job
    for part in key.split("."):
        node = getattr(node, part)
    return list(node) if isinstance(node, tuple) else node


def apply_point(base: dict[str, Any], point: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with each dotted key of ``point`` set."""
    job = copy.deepcopy(base)
    for dotted, value in expand_aliases(point).items():
        *parents, leaf = dotted.split(".")
        node = job
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"`{dotted}`: `{key}` is not a section")
        node[leaf] = value.item() if hasattr(value, "item") else value
    return job


def job_for(base: dict[str, Any], point: dict[str, Any], catalog: PriceCatalog | None = None,
            **overrides: Any) -> JobConfig:
    """The validated job of one trial; errors name the trial's point."""
    mapping = apply_point(base, point | overrides)
    return parse_job(mapping, f"sweep trial {point | overrides}", catalog)
