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

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from costsched.policy.packing import packed_shape
from costsched.policy.snapshot import (
    EfficiencyModel,
    JobView,
    ThroughputModel,
    statistical_gain,
)

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
""":func:`_candidates` by (the model's choices, its micro-batch cap, the largest
per-GPU batch): jobs of one app ask the same few thousands of times a decision."""
_CANDIDATES_MAX = 100_000


def _candidates(throughput: ThroughputModel, max_batch_size: int, num_gpus: int) -> np.ndarray:
    """Per-GPU batches to score on ``num_gpus`` GPUs: the model's own choices, plus
    accumulated multiples of its largest micro-batch when it times accumulation."""
    local = np.asarray(throughput.local_bsz_choices(), dtype=float)
    atomic = getattr(throughput, "max_atomic_bsz", None)
    if atomic is None:
        return local
    most = max_batch_size // num_gpus
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


_STEP_TABLES: dict[Hashable, tuple[ThroughputModel, tuple[np.ndarray, np.ndarray] | None]] = {}
""":func:`_step_table` of models that carry a ``cache_key`` but no ``step_tables`` of their
own (see :class:`GoodputTable`), by (model, batch limits, count, node size), each beside
the model it was made from (which keeps what its key names alive): a simulation asks the
same models every round. Only small models land here (fitted constants); a model backed by
big data keeps its tables itself, so they go when it does."""
_STEP_TABLES_MAX = 20_000
"""Tables kept before the cache starts over (a few megabytes)."""


def model_key(throughput: ThroughputModel) -> Hashable:
    """Equal for throughput models that predict the same: their class and ``cache_key``
    when they carry one, else the object's ``id`` (the caller keeps the object alive while
    the key is in use)."""
    key = getattr(throughput, "cache_key", None)
    return ("model", type(throughput), key) if key is not None else ("object", id(throughput))


def _step_table(throughput: ThroughputModel, eff: EfficiencyModel, num_gpus: int,
                gpus_per_node: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(per-GPU batches allowed on ``num_gpus`` GPUs, their step times), read-only; None
    when the count is unusable. What a search needs besides the job's efficiency."""
    own = getattr(throughput, "step_tables", None)
    if own is not None:  # the model's own memo: it lives and dies with the model's data
        key = (eff.init_batch_size, eff.max_batch_size, num_gpus, gpus_per_node)
        if key not in own:
            own[key] = _new_step_table(throughput, eff, num_gpus, gpus_per_node)
        return own[key]
    if getattr(throughput, "cache_key", None) is None:
        return _new_step_table(throughput, eff, num_gpus, gpus_per_node)
    key = (model_key(throughput), eff.init_batch_size, eff.max_batch_size, num_gpus,
           gpus_per_node)
    hit = _STEP_TABLES.get(key)
    if hit is None:
        if len(_STEP_TABLES) >= _STEP_TABLES_MAX:
            _STEP_TABLES.clear()
        hit = _STEP_TABLES[key] = (
            throughput, _new_step_table(throughput, eff, num_gpus, gpus_per_node))
    return hit[1]


def _new_step_table(throughput: ThroughputModel, eff: EfficiencyModel, num_gpus: int,
                    gpus_per_node: int) -> tuple[np.ndarray, np.ndarray] | None:
    local = _candidates(throughput, eff.max_batch_size, num_gpus)
    total = local * num_gpus
    ok = (total >= eff.init_batch_size) & (total <= eff.max_batch_size)
    if not ok.any():
        if total[0] > eff.max_batch_size:
            return None
        ok = total == total.max()
    shape = packed_shape(num_gpus, gpus_per_node)
    candidates = local[ok]
    steps = np.array([throughput.step_time_s(shape, float(lb)) for lb in candidates])
    candidates.setflags(write=False)
    steps.setflags(write=False)
    return candidates, steps


def best_goodput(job: JobView, num_gpus: int, gpus_per_node: int) -> GoodputChoice:
    """The best batch size for ``job`` on ``num_gpus`` GPUs packed on ``gpus_per_node`` nodes.

    A batch below B0 is allowed only when even the largest per-GPU batch cannot
    reach it (one small GPU); a count whose smallest batch exceeds B_max is unusable.
    """
    if num_gpus <= 0:
        return GoodputChoice(goodput=0.0, batch_size=0)
    eff = job.efficiency
    table = _step_table(job.throughput, eff, num_gpus, gpus_per_node)
    if table is None:
        return GoodputChoice(goodput=0.0, batch_size=0)
    candidates, steps = table
    rates = np.asarray(eff.gain(candidates * num_gpus)) / steps
    best = int(np.argmax(rates))
    return GoodputChoice(goodput=float(rates[best]), batch_size=int(candidates[best] * num_gpus))


class GoodputTable:
    """:func:`best_goodput` of many jobs on nodes of ``gpus_per_node`` GPUs, by job name.

    Jobs whose throughput models are the same and whose batch limits agree have the same
    batch candidates and step times at every GPU count; only their efficiency differs.
    So the first question at a count answers it for all such jobs at once, with a few
    array operations over (jobs x candidates) and the same arithmetic as
    :func:`best_goodput`. A throughput model says which models are the same with a
    hashable ``cache_key`` attribute (equal keys: equal step times and batch choices);
    a model without one is the same only as itself.
    """

    def __init__(self, entries: Iterable[tuple[str, ThroughputModel, EfficiencyModel]],
                 gpus_per_node: int) -> None:
        """``entries``: (job name, its throughput model here, its efficiency)."""
        self.gpus_per_node = gpus_per_node
        groups: dict[Hashable, _Group] = {}
        self._group: dict[str, _Group] = {}
        self._row: dict[str, int] = {}
        for name, throughput, eff in entries:
            # A group holds its first model: no other object takes an id its key names.
            key = (model_key(throughput), eff.init_batch_size, eff.max_batch_size)
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(throughput, eff)
            self._group[name], self._row[name] = group, len(group.names)
            group.names.append(name)
            group.grad_sqr.append(eff.grad_sqr)
            group.grad_var.append(eff.grad_var)
        self._groups = list(groups.values())

    def __contains__(self, name: str) -> bool:
        return name in self._group

    def goodput(self, name: str, num_gpus: int) -> float:
        return float(self._scored(name, num_gpus)[0][self._row[name]])

    def goodputs(self, name: str, counts: Sequence[int]) -> list[float]:
        """:meth:`goodput` at each of ``counts``."""
        group, row = self._group[name], self._row[name]
        group.score(counts, self.gpus_per_node)
        return [float(group.by_count[count][0][row]) for count in counts]

    def groups(self) -> list[list[str]]:
        """Names of the jobs scored together, group by group."""
        return [group.names for group in self._groups]

    def matrix(self, name: str, counts: Sequence[int]) -> np.ndarray:
        """Goodput of every job of ``name``'s group (rows, in :meth:`groups` order) at
        each of ``counts`` (columns)."""
        group = self._group[name]
        group.score(counts, self.gpus_per_node)
        return np.stack([group.by_count[count][0] for count in counts], axis=1)

    def choice(self, name: str, num_gpus: int) -> GoodputChoice:
        scored, row = self._scored(name, num_gpus), self._row[name]
        return GoodputChoice(goodput=float(scored[0][row]), batch_size=int(scored[1][row]))

    def _scored(self, name: str, num_gpus: int) -> tuple[np.ndarray, np.ndarray]:
        """(goodput, batch size) of every job of ``name``'s group at ``num_gpus``."""
        group = self._group[name]
        return group.by_count.get(num_gpus) or group.score([num_gpus], self.gpus_per_node)


class _Group:
    """Jobs of one :class:`GoodputTable` that share a throughput model and batch limits."""

    def __init__(self, throughput: ThroughputModel, eff: EfficiencyModel) -> None:
        self.throughput, self.eff = throughput, eff
        self.names: list[str] = []
        self.grad_sqr: list[float] = []
        self.grad_var: list[float] = []
        self.by_count: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        """GPU count -> (goodput, batch size) of each job, in ``names`` order."""

    def score(self, counts: Sequence[int], gpus_per_node: int) -> tuple[np.ndarray, np.ndarray]:
        """Score every job at each of ``counts`` not scored yet, all at once; returns the
        scores at the last count."""
        missing = [c for c in dict.fromkeys(counts) if c not in self.by_count]
        by_width: dict[int, list[tuple[int, tuple[np.ndarray, np.ndarray]]]] = {}
        for count in missing:
            table = _step_table(self.throughput, self.eff, count, gpus_per_node) if count > 0 \
                else None
            if table is None:
                self.by_count[count] = (np.zeros(len(self.names)),
                                        np.zeros(len(self.names), dtype=int))
            else:
                by_width.setdefault(len(table[0]), []).append((count, table))
        sqr = np.asarray(self.grad_sqr)[:, None, None]
        var = np.asarray(self.grad_var)[:, None, None]
        for scored in by_width.values():
            # best_goodput over (jobs x counts x batches), elementwise.
            totals = np.array([t[0] for _, t in scored]) * np.array([c for c, _ in scored])[:, None]
            steps = np.array([t[1] for _, t in scored])
            rates = statistical_gain(sqr, var, self.eff.init_batch_size, totals) / steps
            best = np.argmax(rates, axis=2)
            goodput = rates.max(axis=2)  # the value at the first maximum (NaN if any)
            batch = totals[np.arange(len(scored))[None, :], best].astype(int)
            for at, (count, _) in enumerate(scored):
                self.by_count[count] = (goodput[:, at].copy(), batch[:, at].copy())
        return self.by_count[counts[-1]]
