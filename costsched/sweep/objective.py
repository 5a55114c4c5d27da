"""The sweep objective: dollars to reach the target accuracy, optionally plus serving.

For a team that trains once and serves often, ``objective.serving`` adds what the
trained model costs to serve ``num_predictions`` predictions: a trial then ranks by

    total_usd = training_usd + serving_usd

``training_usd`` is the trial's dollars to the target (its whole spend when it did not
reach it) and ``serving_usd`` is priced by :func:`costsched.cost.prices.serving_cost_usd`
from the batch latency measured on the trial's trained, inference-form weights.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from costsched.cost.prices import PriceCatalog, serving_cost_usd
from costsched.errors import ConfigError

MAX_SERVING_BATCH = 4096
"""Largest ``batch_size`` the serving latency is measured at."""


def objective_usd(*, usd_to_target: float | None, best_accuracy: float, target: float,
                  cap_usd: float) -> float:
    """Dollars to target; a trial that has not reached it ranks behind every one that has.

        reached:      usd_to_target                      (<= cap_usd)
        not reached:  cap_usd * (2 + (target - best_accuracy))

    so unreached trials order among themselves by their best accuracy, and any
    reached trial (at most ``cap_usd``) beats any unreached one (at least 2 x cap).
    """
    if usd_to_target is not None:
        return float(usd_to_target)
    return cap_usd * (2.0 + max(0.0, target - best_accuracy))


@dataclass(frozen=True, kw_only=True)
class ServingObjective:
    """Serving the trained model: ``num_predictions`` predictions on one replica of
    ``instance_type``, batches of ``batch_size`` served back to back."""

    num_predictions: Any
    """Predictions to serve over the model's life (a number; YAML's ``1e8`` is read as
    text, so a numeric string is accepted too)."""
    instance_type: str
    """Catalog row the serving replica is priced as (its whole node's $/hour)."""
    batch_size: int = 1
    """Predictions per forward pass; the latency is measured at this batch size."""
    spot: bool = False
    """Priced at the row's spot price instead of on-demand."""

    def __post_init__(self) -> None:
        value = self.num_predictions
        try:
            number = float(value) if not isinstance(value, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number > 0):
            raise ConfigError(f"`objective.serving.num_predictions` must be a number > 0 "
                              f"(e.g. 1e8), got {value!r}")
        object.__setattr__(self, "num_predictions", number)
        if not 1 <= self.batch_size <= MAX_SERVING_BATCH:
            raise ConfigError(f"`objective.serving.batch_size` must be in 1..{MAX_SERVING_BATCH},"
                              f" got {self.batch_size}")

    def usd(self, catalog: PriceCatalog, batch_latency_ms: float) -> float:
        """Serving dollars at a measured per-batch latency (see :func:`serving_cost_usd`)."""
        return serving_cost_usd(catalog.instance(self.instance_type), spot=self.spot,
                                num_predictions=self.num_predictions,
                                batch_size=self.batch_size,
                                batch_latency_s=batch_latency_ms / 1000.0)


@dataclass(frozen=True, kw_only=True)
class ObjectiveSection:
    serving: ServingObjective | None = None
    """Add the dollars of serving the trained model (off: dollars to target only)."""


def training_usd(row: Mapping[str, Any]) -> float:
    """A trial's training dollars: to the target when it reached it, else all it spent."""
    usd = row["usd_to_target"]
    reached = bool(row["reached_target"]) and usd is not None and not math.isnan(usd)
    return float(usd) if reached else float(row["cost_usd"])


def objective_line(target: float, serving: ServingObjective | None,
                   catalog: PriceCatalog) -> str:
    """What the dry run says the sweep ranks trials by."""
    base = f"objective      dollars to val_accuracy >= {target:g}"
    if serving is None:
        return base
    row = catalog.instance(serving.instance_type)
    usd_per_hour = row.node_usd_per_hour(serving.spot)
    return (f"{base}, plus serving {serving.num_predictions:g} predictions in batches of "
            f"{serving.batch_size} on one {serving.instance_type} "
            f"(${usd_per_hour:g}/h{' spot' if serving.spot else ''}) at the trained model's "
            f"measured CPU latency: trials rank by total_usd after they end (the searcher "
            f"sees training dollars only)")
