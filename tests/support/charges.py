"""Charges recomputed independently of costsched's price code, for ledger checks."""

from __future__ import annotations

import yaml

from tests.conftest import REPO


def recomputed_usd(ledger, job_id: str, instance_type: str = "local-cpu") -> float:
    """What the job should have been charged, recomputed from its intervals' raw start,
    end and slots at the shipped catalog's price for ``instance_type`` read as plain
    YAML (not through costsched's price code); its intervals must not overlap."""
    row = yaml.safe_load((REPO / "configs" / "prices.yaml").read_text())[
        "instance_types"][instance_type]
    usd_per_slot_s = row["on_demand_usd_per_hour"] / row["num_gpus_per_node"] / 3600.0
    spans = sorted((i["started_at"], i["ended_at"],
                    i["num_workers"] * i["accelerators_per_worker"])
                   for i in ledger.intervals(job_id))
    assert all(later[0] >= earlier[1] - 1e-6
               for earlier, later in zip(spans, spans[1:], strict=False))
    return sum((end - start) * slots for start, end, slots in spans) * usd_per_slot_s
