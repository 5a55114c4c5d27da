"""The allowed GPU counts of one GPU model, and the scan for a job's best count there.

A growth step of :mod:`~costsched.policy.hetero` weighs moving a job from its
configuration (utility ``now_u``, ``now_c`` dollars per hour) to each allowed count k of
another GPU model, by

    ratio(k) = FREE_MOVE x (U(k) - now_u)           if cost(k) <= now_c
             = (U(k) - now_u) / (cost(k) - now_c)   otherwise

over the moves that gain (U(k) > now_u). :func:`best_size` finds the best without
weighing every count: the counts go up in order of size, hence of dollars, and with the
row's running maximum from its end, ``ahead[i] = max(U[i:])``, no count from i on can
beat ``FREE_MOVE x (ahead[i] - now_u)`` among the moves that cost no more, nor
``(ahead[i] - now_u) / (cost(i) - now_c)`` among the others; rounding keeps both bounds
(each operation is monotone), so the scan stops once a bound is below the best found.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_right
from collections.abc import Callable, Sequence

FREE_MOVE = 1e9
"""Ratio of a move to a better configuration that costs no more per hour."""


def move_ratio(gain: float, extra: float) -> float:
    """A move's utility gained per added dollar an hour; ``FREE_MOVE`` x the gain when it
    adds no dollars."""
    return gain / extra if extra > 0 else FREE_MOVE * gain


class ModelSizes:
    """The allowed counts of one GPU model, ascending from 1, with their dollars per hour;
    extended as a decision asks for larger ones."""

    def __init__(self, allowed: Callable[[int], bool], usd_per_hour: Callable[[int], float]):
        self._allowed, self._usd = allowed, usd_per_hour
        self.sizes: list[int] = []
        self.index: dict[int, int] = {}
        """Count -> its position in :attr:`sizes`."""
        self.costs: list[float] = []
        """Dollars per hour of each of :attr:`sizes`."""
        self._checked = 0

    def up_to(self, most: int) -> list[int]:
        """:attr:`sizes`, made to hold every allowed count up to ``most``."""
        if self._checked < most:
            start = self._checked + 1
            self._checked = end = max(most, 2 * start)
            new = [k for k in range(start, end + 1) if self._allowed(k)]
            self.index.update((k, len(self.sizes) + i) for i, k in enumerate(new))
            self.costs.extend(self._usd(k) for k in new)
            self.sizes.extend(new)
        return self.sizes


def running_max(row: Sequence[float]) -> array | None:
    """``max(row[i:])`` for each i; None when ``row`` holds a value that is not finite
    (then no bound is safe)."""
    if not all(math.isfinite(value) for value in row):
        return None
    ahead, run = array("d", row), -math.inf
    for at in range(len(row) - 1, -1, -1):
        run = ahead[at] = row[at] if row[at] > run else run
    return ahead


def best_size(row: Sequence[float], ahead: Sequence[float], start: int, sizes: ModelSizes,
              lo: int, hi: int, now_u: float, now_c: float) -> tuple[float | None, int, int]:
    """(best ratio, its count, how many other counts reach it) over ``sizes.sizes[lo:hi]``
    with utilities ``row[start:]`` and their running maximum ``ahead[start:]``; (None, 0,
    0) when no count gains."""
    costs = sizes.costs
    free_end = bisect_right(costs, now_c, lo, max(lo, hi))
    best, best_at, ties = None, 0, 0
    at = lo
    while at < hi:
        head = ahead[start + at] - now_u
        if head <= 0:
            break
        if at < free_end:
            if best is not None and FREE_MOVE * head < best:
                at = free_end
                continue
            gain = row[start + at] - now_u
            ratio = FREE_MOVE * gain
        else:
            extra = costs[at] - now_c
            if best is not None and head / extra < best:
                break
            gain = row[start + at] - now_u
            ratio = gain / extra
        if gain > 0:
            if best is None or ratio > best:
                best, best_at, ties = ratio, at, 0
            elif ratio == best:
                ties += 1
        at += 1
    return best, sizes.sizes[best_at] if best is not None else 0, ties
