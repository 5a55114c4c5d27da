"""Goodput of a job at a GPU count: throughput x statistical efficiency, best batch size.

    goodput(k) = max over per-GPU batch l of  gain(k * l) / step_time(packed(k), l)

in steps at the initial batch size per second (Pollux, OSDI '21, eq. 1 with
gain = efficiency x batch scale), over the job's per-GPU batch sizes with
B0 <= k * l <= B_max.

Gradient accumulation: a throughput model with a ``max_atomic_bsz`` (the largest
micro-batch one GPU holds) times any larger per-GPU batch as accumulated
micro-batches, ``a = ceil(l / max_atomic_bsz)`` of ``l / a`` each, exactly as the
simulator runs them. The search then also tries ``l = a x max_atomic_bsz`` for
a = 2, 3, ... (and the largest batch the job allows), so a job whose all-reduce
dominates can buy a larger batch on the same GPUs instead of more GPUs: Pollux
optimises over accumulation the same way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from costsched.policy.packing import packed_shape
from costsched.policy.snapshot import JobView

MAX_ACCUM_CANDIDATES = 12
"""Accumulation steps tried per count: 2..8, then doubling (the gain flattens fast)."""


@dataclass(frozen=True, kw_only=True)
class GoodputChoice:
    """The best way to run a job on a number of GPUs."""

    goodput: float
    """Progress per second (initial-batch steps per second); 0 when the count is unusable."""
    batch_size: int
    """Total batch size that achieves it."""


def accumulation_steps(max_steps: int) -> list[int]:
    """Accumulation steps to try, 2 .. ``max_steps``: every one up to 8, then doubling."""
    steps = list(range(2, min(max_steps, 8) + 1))
    a = 16
    while a <= max_steps and len(steps) < MAX_ACCUM_CANDIDATES:
        steps.append(a)
        a *= 2
    if max_steps > 8 and max_steps not in steps:
        steps.append(max_steps)
    return steps


_CANDIDATES: dict[tuple[bytes, float, int], np.ndarray] = {}
""":func:`local_candidates` by (the model's choices, its micro-batch cap, the largest
per-GPU batch): jobs of one app ask the same few thousands of times a decision."""
_CANDIDATES_MAX = 100_000


def local_candidates(job: JobView, num_gpus: int) -> np.ndarray:
    """Per-GPU batches to score on ``num_gpus`` GPUs: the model's own choices, plus
    accumulated multiples of its largest micro-batch when it times accumulation."""
    local = np.asarray(job.throughput.local_bsz_choices(), dtype=float)
    atomic = getattr(job.throughput, "max_atomic_bsz", None)
    if atomic is None:
        return local
    most = job.efficiency.max_batch_size // num_gpus
    key = (local.tobytes(), atomic, most)
    hit = _CANDIDATES.get(key)
    if hit is None:
        extra = [a * atomic for a in accumulation_steps(most // atomic)]
        if most > atomic:
            extra.append(most)
        if len(_CANDIDATES) >= _CANDIDATES_MAX:
            _CANDIDATES.clear()
        hit = _CANDIDATES[key] = np.unique(np.concatenate([local, np.asarray(extra, float)]))
        hit.setflags(write=False)
    return hit


def best_goodput(job: JobView, num_gpus: int, gpus_per_node: int) -> GoodputChoice:
    """The best batch size for ``job`` on ``num_gpus`` GPUs packed on ``gpus_per_node`` nodes.

    A batch below B0 is allowed only when even the largest per-GPU batch cannot
    reach it (one small GPU); a count whose smallest batch exceeds B_max is unusable.
    """
    if num_gpus <= 0:
        return GoodputChoice(goodput=0.0, batch_size=0)
    eff = job.efficiency
    local = local_candidates(job, num_gpus)
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
