"""A cost-frugal local search over a sweep's space (pure; no Ray), after FLAML's CFO.

CFO (Wu, Wang, Huang: "Frugal Optimization for Cost-related Hyperparameters", AAAI
2021) starts from the cheapest sensible point and moves by randomized direct search
(FLOW2): from the incumbent ``x`` it tries ``x + step * u`` for a random unit
direction ``u`` and, if that is no better, ``x - step * u``; the first that improves
becomes the incumbent. After ``2 ** (d - 1)`` failed directions in a row the step
halves; below ``min_step`` the search restarts from a random point. Since it only
ever moves towards better (cheaper-to-target) points and takes small steps, it
rarely proposes a costly configuration far from what already works, which is what
makes it frugal: dollars go to points near the best one found.

Points live in the unit cube: a ``choice`` by its index in value order (numbers
sorted, others as listed), ``uniform`` linearly, ``loguniform`` in log scale.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from costsched.sweep.config import Dimension

MAX_DIRECTION_TRIES = 32
"""Random directions tried for a proposal that is not a point already tried."""


class UnitCube:
    """Maps points of a sweep space to and from ``[0, 1] ** d``."""

    def __init__(self, space: dict[str, Dimension]):
        self.keys = list(space)
        self.dims = [space[k] for k in self.keys]
        self.choices = [self._ordered(d.choice) for d in self.dims]

    @staticmethod
    def _ordered(values: tuple[Any, ...]) -> list[Any]:
        numeric = values and all(isinstance(v, int | float) and not isinstance(v, bool)
                                 for v in values)
        return sorted(values) if numeric else list(values)

    def to_unit(self, point: dict[str, Any]) -> np.ndarray:
        out = []
        for key, dim, choices in zip(self.keys, self.dims, self.choices, strict=True):
            value = point[key]
            if dim.choice:
                index = next(i for i, c in enumerate(choices) if str(c) == str(value))
                out.append(index / max(1, len(choices) - 1))
            elif dim.uniform:
                out.append((value - dim.uniform[0]) / (dim.uniform[1] - dim.uniform[0]))
            else:
                low, high = (math.log(b) for b in dim.loguniform)
                out.append((math.log(value) - low) / (high - low))
        return np.clip(np.asarray(out, dtype=float), 0.0, 1.0)

    def from_unit(self, unit: np.ndarray) -> dict[str, Any]:
        point: dict[str, Any] = {}
        for key, dim, choices, u in zip(self.keys, self.dims, self.choices,
                                        np.clip(unit, 0.0, 1.0), strict=True):
            if dim.choice:
                point[key] = choices[int(round(u * (len(choices) - 1)))]
            elif dim.uniform:
                point[key] = float(dim.uniform[0] + u * (dim.uniform[1] - dim.uniform[0]))
            else:
                low, high = (math.log(b) for b in dim.loguniform)
                point[key] = float(math.exp(low + u * (high - low)))
        return point


def point_key(point: dict[str, Any]) -> str:
    """A point's identity: floats to six significant digits (a round trip through the
    cube moves them in the last bits)."""
    return json.dumps({k: float(f"{v:.6g}") if isinstance(v, float) else v
                       for k, v in point.items()}, sort_keys=True, default=str)


class CostFrugalSearch:
    """FLOW2 from a cheap start; :meth:`suggest` a point, :meth:`observe` its value
    (lower is better, e.g. dollars to target)."""

    def __init__(self, space: dict[str, Dimension], *, start: dict[str, Any], seed: int = 0,
                 min_step: float = 0.03):
        self.cube = UnitCube(space)
        self.rng = np.random.default_rng(seed)
        self.start, self.min_step = dict(start), min_step
        self.initial_step = 0.5 * math.sqrt(len(self.cube.keys))
        """Large enough that a random direction moves a choice of a few values."""
        self.step = self.initial_step
        self.incumbent: np.ndarray | None = None
        self.best: float = math.inf
        self.tried: dict[str, float | None] = {}  # None: proposed, not yet observed
        self.direction: np.ndarray | None = None
        self.sign = 1.0
        self.failures = 0
        self.moves = 0
        """Directions drawn so far: which one a proposal came from."""
        self.origin: dict[str, tuple[int, float]] = {}
        """Pending proposals from the incumbent: (direction number, sign)."""

    @property
    def patience(self) -> int:
        return 2 ** max(0, len(self.cube.keys) - 1)

    def suggest(self) -> dict[str, Any] | None:
        """The next point to evaluate: the start, then a step from the incumbent."""
        if point_key(self.start) not in self.tried:
            return self._propose(self.start)
        if self.incumbent is None:
            return None if any(v is None for v in self.tried.values()) else self._random()
        for _ in range(MAX_DIRECTION_TRIES):
            if self.direction is None:
                direction = self.rng.normal(size=len(self.cube.keys))
                self.direction, self.sign = direction / np.linalg.norm(direction), 1.0
                self.moves += 1
            point = self.cube.from_unit(self.incumbent + self.sign * self.step * self.direction)
            key = point_key(point)
            if key not in self.tried:
                self.origin[key] = (self.moves, self.sign)
                return self._propose(point)
            if self.tried[key] is None:  # still running: try elsewhere, count no failure
                self._turn()
            else:
                self._failed()  # rounds onto a tried point: no better than what we know
        return self._random()

    def observe(self, point: dict[str, Any], value: float) -> None:
        """With several trials at a time, results come back out of order: a result
        counts against the current direction only when it came from it; one from an
        earlier direction's opposite step (both its steps were tried) counts that
        direction as failed; one from before the incumbent last moved counts for
        nothing."""
        key = point_key(point)
        self.tried[key] = value
        origin = self.origin.pop(key, None)
        if value < self.best:
            self.best, self.incumbent = value, self.cube.to_unit(point)
            self.direction, self.failures = None, 0
            self.origin.clear()  # steps from the old incumbent no longer say anything
        elif self.incumbent is None or key == point_key(self.start) or origin is None:
            return
        elif origin == (self.moves, self.sign) and self.direction is not None:
            self._failed()
        elif origin[1] < 0 and origin[0] < self.moves:
            self._count_failure()

    def _turn(self) -> None:
        """Leave the current step untried: its opposite, else a new direction."""
        if self.direction is not None and self.sign > 0:
            self.sign = -1.0
        else:
            self.direction = None

    def _failed(self) -> None:
        """The current direction's step did not improve: try its opposite, then a new
        direction; halve the step after :attr:`patience` failed directions."""
        if self.direction is not None and self.sign > 0:
            self.sign = -1.0
            return
        self.direction = None
        self._count_failure()

    def _count_failure(self) -> None:
        self.failures += 1
        if self.failures >= self.patience:
            self.step, self.failures = self.step / 2, 0
            if self.step < self.min_step:  # converged here: restart somewhere new
                self.incumbent = self.cube.to_unit(self._random_point())
                self.step = self.initial_step

    def _random_point(self) -> dict[str, Any]:
        return self.cube.from_unit(self.rng.random(len(self.cube.keys)))

    def _random(self) -> dict[str, Any] | None:
        for _ in range(MAX_DIRECTION_TRIES):
            point = self._random_point()
            if point_key(point) not in self.tried:
                return self._propose(point)
        return None

    def _propose(self, point: dict[str, Any]) -> dict[str, Any]:
        self.tried[point_key(point)] = None
        return point


def cheapest_start(space: dict[str, Dimension], baseline: dict[str, Any],
                   low_cost: dict[str, Any]) -> dict[str, Any]:
    """The search's first point: the base job's values, with ``low_cost`` overriding
    them, and fewest workers (the cheapest per second) when workers are searched."""
    start = dict(baseline)
    workers = space.get("scaling.workers")
    if workers is not None and workers.choice:
        start["scaling.workers"] = min(workers.choice)
    return start | {k: v for k, v in low_cost.items() if k in space}
