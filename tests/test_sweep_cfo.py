"""The cost-frugal search: where it starts, that it never repeats a point, and that it
moves from its start to better points (its dollars against other searchers are
measured by bench/search_bench.py, not here)."""

from __future__ import annotations

import numpy as np
import pytest

from costsched.sweep.cfo import CostFrugalSearch, UnitCube, cheapest_start, point_key
from costsched.sweep.config import Dimension

SPACE = {
    "scaling.workers": Dimension(choice=(1, 2, 4)),
    "optimizer.lr": Dimension(loguniform=(1e-4, 1e-1)),
    "training.global_batch_size": Dimension(choice=(256, 64, 128)),
    "training.precision": Dimension(choice=("fp32", "bf16")),
}
BEST = {"scaling.workers": 2, "optimizer.lr": 3e-3, "training.global_batch_size": 128,
        "training.precision": "bf16"}


def dollars_to_target(point) -> float:
    """A synthetic objective: dollars grow with the distance from the best point."""
    cube = UnitCube(SPACE)
    return 1.0 + 10 * float(np.sum((cube.to_unit(point) - cube.to_unit(BEST)) ** 2))


def run(search: CostFrugalSearch, budget: int) -> list[float]:
    values = []
    for _ in range(budget):
        point = search.suggest()
        if point is None:
            break
        values.append(dollars_to_target(point))
        search.observe(point, values[-1])
    return values


def test_starts_at_the_cheapest_sensible_point():
    baseline = {"scaling.workers": 4, "optimizer.lr": 1e-2, "training.global_batch_size": 64,
                "training.precision": "fp32"}
    start = cheapest_start(SPACE, baseline, {"training.precision": "bf16", "other.key": 1})
    assert start == baseline | {"scaling.workers": 1, "training.precision": "bf16"}
    search = CostFrugalSearch(SPACE, start=start, seed=0)
    assert search.suggest() == start


def test_unit_cube_round_trips_and_orders_numeric_choices():
    cube = UnitCube(SPACE)
    assert cube.from_unit(cube.to_unit(BEST)) == pytest.approx(BEST)
    assert cube.from_unit(np.zeros(4))["training.global_batch_size"] == 64


@pytest.mark.parametrize("seed", range(5))
def test_never_repeats_a_point_and_improves_on_its_start(seed):
    start = {"scaling.workers": 1, "optimizer.lr": 1e-4, "training.global_batch_size": 256,
             "training.precision": "fp32"}
    search = CostFrugalSearch(SPACE, start=start, seed=seed)
    values = run(search, 25)
    assert len(search.tried) == len(values)  # every proposal a new point
    assert min(values) < 0.5 * values[0]


def test_point_identity_ignores_float_round_off():
    assert point_key(BEST) == point_key(dict(reversed(BEST.items())))
    assert point_key({"optimizer.lr": 1e-4}) == point_key({"optimizer.lr": 1.0000000000000009e-4})
