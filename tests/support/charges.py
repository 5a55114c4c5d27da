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
    row = yaml.safe_load((REPO / "configs" / "prices.yaml").read_text())[
        "instance_types"][instance_type]
    spans = sorted((i["started_at"], i["ended_at"],
                    i["num_workers"] * i["accelerators_per_worker"])
                   for i in ledger.intervals(job_id))
    assert all(later[0] >= earlier[1] - 1e-6
               for earlier, later in zip(spans, spans[1:], strict=False))
    usd = 0.0
    for attempt, (start, end, slots) in enumerate(spans, start=1):
        price = row["spot_usd_per_hour" if attempt in spot_attempts else "on_demand_usd_per_hour"]
        usd += (end - start) * slots * price / row["num_gpus_per_node"] / 3600.0
    return usd
