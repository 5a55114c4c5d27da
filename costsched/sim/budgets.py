"""A simulated job's budget running out (pure)."""

from __future__ import annotations

from collections.abc import Sequence

from costsched.cost.prices import usd_over, usd_per_gpu_hour_of
from costsched.policy.snapshot import JobView, NodeView


def out_of_budget(view: JobView, nodes: Sequence[NodeView], round_s: float) -> bool:
    """Whether what is left of the job's budget cannot pay one more round at its least
    size, at its price (else the nodes' mean per GPU), as the policies judge it: it would
    never be placed again, so the simulator ends it, as the live scheduler stops it."""
    price = view.usd_per_gpu_hour
    if price is None:
        price = usd_per_gpu_hour_of(nodes)
    return view.budget_usd - view.spent_usd < usd_over(price, round_s * view.min_gpus)
