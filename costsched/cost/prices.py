"""Price catalog and cost model: pure functions over a table of instance types.

Every cost is a table lookup times time. The formulas are written next to the
functions; units are in the names (``_s`` seconds, ``_usd`` dollars, ``_w`` watts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from costsched.config.bundled import default_catalog_path
from costsched.config.strict import build, closest_hint, read_yaml_mapping
from costsched.errors import ConfigError

if TYPE_CHECKING:
    from costsched.config.job import JobConfig

SECONDS_PER_HOUR = 3600.0
SECONDS_PER_MONTH = 30 * 24 * SECONDS_PER_HOUR
BYTES_PER_GB = 1024**3
JOULES_PER_KWH = 3.6e6


@dataclass(frozen=True, kw_only=True)
class InstanceType:
    """One node type of the catalog."""

    gpu_model: str
    """Accelerator model, e.g. ``T4``; ``cpu-slot`` for the local CPU default."""
    num_gpus_per_node: int
    """Accelerators (GPU slots) on one node."""
    num_vcpus: int
    """Virtual CPUs on one node."""
    memory_gib: float
    """Host memory of one node, GiB."""
    on_demand_usd_per_hour: float
    """On-demand price of one node, USD per hour."""
    spot_usd_per_hour: float
    """Spot price of one node, USD per hour."""
    gpu_power_w: float
    """Maximum board power of one accelerator, watts."""
    node_overhead_w: float = 0.0
    """Host power of one node (CPUs, memory, fans) beyond its accelerators, watts."""

    def __post_init__(self) -> None:
        for name in ("num_gpus_per_node", "num_vcpus"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"`{name}` must be positive, got {getattr(self, name)}")
        for name in ("on_demand_usd_per_hour", "spot_usd_per_hour", "gpu_power_w"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"`{name}` must be positive, got {getattr(self, name)}")
        if self.node_overhead_w < 0 or self.memory_gib <= 0:
            raise ConfigError("`node_overhead_w` must be >= 0 and `memory_gib` > 0")
        if self.spot_usd_per_hour > self.on_demand_usd_per_hour:
            raise ConfigError("`spot_usd_per_hour` is above `on_demand_usd_per_hour`; swap them?")

    def node_usd_per_hour(self, spot: bool) -> float:
        return self.spot_usd_per_hour if spot else self.on_demand_usd_per_hour

    def gpu_usd_per_hour(self, spot: bool) -> float:
        """Price of one accelerator: node price / accelerators per node."""
        return self.node_usd_per_hour(spot) / self.num_gpus_per_node

    def with_gpus_per_node(self, num_gpus: int) -> InstanceType:
        """The same type with ``num_gpus`` accelerators per node at the same price per
        accelerator: node price x num_gpus / num_gpus_per_node."""
        factor = num_gpus / self.num_gpus_per_node
        return replace(self, num_gpus_per_node=num_gpus,
                       on_demand_usd_per_hour=self.on_demand_usd_per_hour * factor,
                       spot_usd_per_hour=self.spot_usd_per_hour * factor)


@dataclass(frozen=True, kw_only=True)
class PriceCatalog:
    """All instance types with their prices, and where and when prices were taken."""

    region: str
    """Cloud region the prices are for."""
    prices_taken_on: str
    """ISO date the prices were read."""
    storage_usd_per_gb_month: float
    """Checkpoint storage price, USD per GB (2**30 bytes) per 30-day month."""
    instance_types: dict[str, InstanceType] = field(default_factory=dict)
    """Instance type name -> its description."""

    def __post_init__(self) -> None:
        if not self.instance_types:
            raise ConfigError("`instance_types` is empty; list at least one instance type")
        if self.storage_usd_per_gb_month < 0:
            raise ConfigError("`storage_usd_per_gb_month` must be >= 0")

    def instance(self, name: str) -> InstanceType:
        try:
            return self.instance_types[name]
        except KeyError:
            raise ConfigError(
                f"unknown instance type `{name}`{closest_hint(name, self.instance_types)}"
            ) from None




def load_catalog(path: str | Path | None = None) -> PriceCatalog:
    """Load the price catalog (default: ``$COSTSCHED_PRICES``, else the shipped ``prices.yaml``)."""
    path = default_catalog_path() if path is None else path
    return build(PriceCatalog, read_yaml_mapping(path), str(path))


def usd_over(usd_per_hour: float, seconds: float) -> float:
    """Dollars at ``usd_per_hour`` for ``seconds``: usd = usd_per_hour * seconds / 3600."""
    return usd_per_hour * seconds / SECONDS_PER_HOUR


def usd_per_gpu_hour_of(nodes) -> float:
    """Mean price of one GPU over ``nodes`` (records with ``usd_per_hour`` and ``num_gpus``):
    sum(node usd_per_hour) / sum(num_gpus); 0 for no GPUs."""
    gpus = sum(node.num_gpus for node in nodes)
    return sum(node.usd_per_hour for node in nodes) / gpus if gpus else 0.0


def usd_per_progress_hour(usd_per_gpu_hour: float, lost_fraction: float) -> float:
    """Expected dollars per GPU-hour of useful progress on capacity that costs
    ``usd_per_gpu_hour``: usd = usd_per_gpu_hour * (1 + lost_fraction), where
    ``lost_fraction`` is the expected work redone after preemptions, and paused for
    checkpoints, per unit of work done
    (:func:`costsched.policy.spot_choice.expected_lost_fraction`). The market with the
    lower figure is the better one."""
    return usd_per_gpu_hour * (1.0 + lost_fraction)


def compute_cost_usd(
    instance: InstanceType,
    *,
    spot: bool,
    seconds: float,
    num_nodes: float | None = None,
    num_gpus: float | None = None,
) -> float:
    """Dollars for holding whole nodes or a GPU share for ``seconds``.

    Whole nodes:  usd = node_usd_per_hour(spot) * num_nodes * seconds / 3600
    GPU share:    usd = node_usd_per_hour(spot) * num_gpus / num_gpus_per_node * seconds / 3600

    Exactly one of ``num_nodes`` and ``num_gpus`` must be given.
    """
    if (num_nodes is None) == (num_gpus is None):
        raise ValueError("give exactly one of num_nodes and num_gpus")
    if seconds < 0:
        raise ValueError(f"seconds must be >= 0, got {seconds}")
    nodes = num_nodes if num_nodes is not None else num_gpus / instance.num_gpus_per_node
    if nodes < 0:
        raise ValueError("node or GPU count must be >= 0")
    return instance.node_usd_per_hour(spot) * nodes * seconds / SECONDS_PER_HOUR


def energy_kwh(
    instance: InstanceType, *, num_gpus: float, utilisation: float, seconds: float
) -> float:
    """Energy drawn by ``num_gpus`` accelerators and their share of the host.

    kWh = (gpu_power_w * utilisation * num_gpus
           + node_overhead_w * num_gpus / num_gpus_per_node) * seconds / 3.6e6

    ``utilisation`` in [0, 1] scales the board power; the host overhead is
    charged pro rata to the share of the node's accelerators in use.
    """
    if not 0.0 <= utilisation <= 1.0:
        raise ValueError(f"utilisation must be in [0, 1], got {utilisation}")
    if seconds < 0 or num_gpus < 0:
        raise ValueError("seconds and num_gpus must be >= 0")
    watts = instance.gpu_power_w * utilisation * num_gpus
    watts += instance.node_overhead_w * num_gpus / instance.num_gpus_per_node
    return watts * seconds / JOULES_PER_KWH


def storage_cost_usd(catalog: PriceCatalog, *, num_bytes: float, seconds: float) -> float:
    """Dollars for keeping ``num_bytes`` of checkpoints for ``seconds``.

    usd = num_bytes / 2**30 * storage_usd_per_gb_month * seconds / (30 * 86400)
    """
    if num_bytes < 0 or seconds < 0:
        raise ValueError("num_bytes and seconds must be >= 0")
    return num_bytes / BYTES_PER_GB * catalog.storage_usd_per_gb_month * seconds / SECONDS_PER_MONTH


def serving_cost_usd(instance: InstanceType, *, spot: bool, num_predictions: float,
                     batch_size: int, batch_latency_s: float) -> float:
    """Dollars to serve ``num_predictions`` on one node of ``instance``, one replica
    serving batches back to back (no idle time, no queueing, no cold starts):

        usd = ceil(num_predictions / batch_size) * batch_latency_s
              * node_usd_per_hour(spot) / 3600
    """
    if num_predictions < 0 or batch_size < 1 or batch_latency_s < 0:
        raise ValueError("num_predictions and batch_latency_s must be >= 0, batch_size >= 1")
    num_batches = math.ceil(num_predictions / batch_size)
    return instance.node_usd_per_hour(spot) * num_batches * batch_latency_s / SECONDS_PER_HOUR


@dataclass(frozen=True, kw_only=True)
class JobRate:
    """What one job's workers cost on one instance type: the single source of a job's
    price, used by the dry run, the training loop, the live controller and the policy.

        usd_per_hour(W)  = usd_per_accelerator_hour * accelerators_per_worker * W
        usd(W, seconds)  = usd_per_hour(W) * seconds / 3600
        accelerator_s(x) = x / usd_per_accelerator_hour * 3600   (dollars -> accel-seconds)

    with ``usd_per_accelerator_hour = node_usd_per_hour(spot) / num_gpus_per_node``, the
    same share of the node price as :func:`compute_cost_usd` charges.
    """

    instance_type: str
    """Catalog instance type the job is priced as."""
    spot: bool
    """Priced as spot capacity."""
    usd_per_accelerator_hour: float
    """Price of one accelerator (a GPU's share of its node), USD per hour."""
    accelerators_per_worker: float
    """Accelerator slots each worker holds."""

    def usd_per_hour(self, num_workers: float) -> float:
        return self.usd_per_accelerator_hour * self.accelerators_per_worker * num_workers

    @property
    def usd_per_worker_second(self) -> float:
        return self.usd_per_hour(1) / SECONDS_PER_HOUR

    def usd(self, *, num_workers: float, seconds: float) -> float:
        """Dollars for ``num_workers`` workers held for ``seconds``."""
        return self.usd_per_hour(num_workers) * seconds / SECONDS_PER_HOUR

    def usd_for_accelerator_s(self, accelerator_s: float) -> float:
        """Dollars for ``accelerator_s`` accelerator-seconds."""
        return self.usd_per_accelerator_hour * accelerator_s / SECONDS_PER_HOUR

    def hours_for(self, usd: float, num_workers: float) -> float:
        """Hours ``num_workers`` workers run for ``usd`` dollars."""
        return usd / self.usd_per_hour(num_workers)

    def accelerator_s(self, usd: float) -> float:
        """Accelerator-seconds that ``usd`` dollars buy at this rate."""
        return usd / self.usd_per_accelerator_hour * SECONDS_PER_HOUR


def job_rate(catalog: PriceCatalog, *, instance_type: str, spot: bool,
             accelerators_per_worker: float) -> JobRate:
    """The :class:`JobRate` of a job's workers on ``instance_type``."""
    instance = catalog.instance(instance_type)
    return JobRate(instance_type=instance_type, spot=spot,
                   usd_per_accelerator_hour=instance.gpu_usd_per_hour(spot),
                   accelerators_per_worker=accelerators_per_worker)


def rate_of_job(job: JobConfig, catalog: PriceCatalog,
                instance_type: str | None = None) -> JobRate:
    """The rate of ``job``'s workers at its declared instance type (or ``instance_type``)."""
    return job_rate(catalog, instance_type=instance_type or job.cost.instance_type,
                    spot=job.cost.spot,
                    accelerators_per_worker=job.scaling.accelerators_per_worker)
