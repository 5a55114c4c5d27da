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


def test_trials_run_side_by_side_halve_the_step_no_sooner_than_one_at_a_time():
    """Four proposals out before any result (four trials at a time), all no better than
    the start: two failed directions, both steps of each, as one at a time would find
    them, so the step halves once (patience 2 with two dimensions), not two or three
    times as when still-running points counted as failures."""
    space = {"optimizer.lr": Dimension(loguniform=(1e-4, 1e-1)),
             "training.weight_decay": Dimension(uniform=(0.0, 0.1))}
    start = {"optimizer.lr": 1e-3, "training.weight_decay": 0.05}

    def side_by_side(width: int) -> tuple[float, list[dict]]:
        search = CostFrugalSearch(space, start=start, seed=0)
        search.observe(search.suggest(), 1.0)
        points = [search.suggest() for _ in range(width)]
        assert len({point_key(p) for p in points}) == width  # no point proposed twice
        for point in points:
            search.observe(point, 2.0)  # every step is worse than the start
        return search.step, points

    one_at_a_time = CostFrugalSearch(space, start=start, seed=0)
    one_at_a_time.observe(one_at_a_time.suggest(), 1.0)
    for _ in range(4):
        one_at_a_time.observe(one_at_a_time.suggest(), 2.0)
    step, _ = side_by_side(4)
    assert one_at_a_time.step == pytest.approx(one_at_a_time.initial_step / 2)
    assert step == pytest.approx(one_at_a_time.step)


def test_several_trials_at_a_time_still_find_better_points():
    start = {"scaling.workers": 1, "optimizer.lr": 1e-4, "training.global_batch_size": 256,
             "training.precision": "fp32"}
    search = CostFrugalSearch(SPACE, start=start, seed=1)
    best, pending = dollars_to_target(start), []
    for _ in range(12):  # three at a time, the oldest result back first
        while len(pending) < 3 and (point := search.suggest()) is not None:
            pending.append(point)
        point = pending.pop(0)
        search.observe(point, value := dollars_to_target(point))
        best = min(best, value)
    assert best < 0.5 * dollars_to_target(start)
