"""Goodput of a job at a GPU count: throughput x statistical efficiency, best batch size.

    goodput(k) = max over per-GPU batch l of  gain(k * l) / step_time(packed(k), l)

in steps at the initial batch size per second (Pollux, OSDI '21, eq. 1 with
gain = efficiency x batch scale), over the job's measured per-GPU batch sizes
with B0 <= k * l <= B_max.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from costsched.policy.packing import packed_shape
from costsched.policy.snapshot import JobView


@dataclass(frozen=True, kw_only=True)
class GoodputChoice:
    """The best way to run a job on a number of GPUs."""

    goodput: float
    """Progress per second (initial-batch steps per second); 0 when the count is unusable."""
    batch_size: int
    """Total batch size that achieves it."""


def best_goodput(job: JobView, num_gpus: int, gpus_per_node: int) -> GoodputChoice:
    """The best batch size for ``job`` on ``num_gpus`` GPUs packed on ``gpus_per_node`` nodes.

    A batch below B0 is allowed only when even the largest per-GPU batch cannot
    reach it (one small GPU); a count whose smallest batch exceeds B_max is unusable.
    """
    if num_gpus <= 0:
        return GoodputChoice(goodput=0.0, batch_size=0)
    eff = job.efficiency
    local = np.asarray(job.throughput.local_bsz_choices(), dtype=float)
    total = local * num_gpus
    ok = (total >= eff.init_batch_size) & (total <= eff.max_batch_size)
    if not ok.any():
        if total[0] > eff.max_batch_size:
            return GoodputChoice(goodput=0.0, batch_size=0)
        ok = total == total.max()
    shape = packed_shape(num_gpus, gpus_per_node)
    candidates = local[ok]
    steps = np.array([job.throughput.step_time_s(shape, float(lb)) for lb in candidates])
    rates = np.asarray(eff.gain(candidates * num_gpus)) / steps
    best = int(np.argmax(rates))
    return GoodputChoice(goodput=float(rates[best]), batch_size=int(candidates[best] * num_gpus))
