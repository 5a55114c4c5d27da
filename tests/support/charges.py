"""Charges recomputed independently of costsched's price code, for ledger checks."""

from __future__ import annotations

import yaml

from tests.conftest import REPO


def recomputed_usd(ledger, job_id: str, instance_type: str = "local-cpu",
                   spot_attempts: frozenset[int] = frozenset()) -> float:
    """What the job should have been charged, recomputed from its intervals' raw start,
    end and slots at the shipped catalog's price for ``instance_type`` read as plain
    YAML (not through costsched's price code), at the spot price for the attempts
    (1-based, in order) that the caller placed on spot nodes; its intervals must not
    overlap."""
    spans = sorted((i["started_at"], i["ended_at"],
                    i["num_workers"] * i["accelerators_per_worker"])
                   for i in ledger.intervals(job_id))
    assert all(later[0] >= earlier[1] - 1e-6
               for earlier, later in zip(spans, spans[1:], strict=False))
    return sum(span_usd(start, end, slots, instance_type, spot=attempt in spot_attempts)
               for attempt, (start, end, slots) in enumerate(spans, start=1))


def interval_usd(interval: dict, instance_type: str, *, spot: bool = False) -> float:
    """One ledger interval's charge from its raw times and slots (:func:`span_usd`)."""
    return span_usd(interval["started_at"], interval["ended_at"],
                    interval["num_workers"] * interval["accelerators_per_worker"],
                    instance_type, spot=spot)


def span_usd(start: float, end: float, slots: float, instance_type: str, *,
             spot: bool = False) -> float:
    """``slots`` accelerators of ``instance_type`` from ``start`` to ``end``, at the shipped
    catalog's price read as plain YAML (not through costsched's price code)."""
    row = yaml.safe_load((REPO / "configs" / "prices.yaml").read_text())[
        "instance_types"][instance_type]
    price = row["spot_usd_per_hour" if spot else "on_demand_usd_per_hour"]
    return (end - start) * slots * price / row["num_gpus_per_node"] / 3600.0
