"""The restart factor: Pollux's over a job's age, cut to the time its work left takes."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from costsched.policy.restart_factor import restart_factor, restart_factors


def test_without_work_left_it_is_pollux_s_factor_over_the_age():
    # Age 3600 s, 2 restarts of 30 s had, the next one 30 s: (3600 - 60) / 3630.
    assert restart_factor(3600.0, math.inf, 60.0, 30.0, 5.0) == pytest.approx(3540 / 3630)


def test_with_work_left_the_horizon_is_the_time_it_takes_at_the_new_goodput():
    # 1000 units of work at 10 per second: 100 s; a 50 s restart: 100 / 150.
    assert restart_factor(3600.0, 1000.0, 0.0, 50.0, 10.0) == pytest.approx(100 / 150)
    # The factor x the new goodput is the work over the time to finish with the restart:
    # moving from 5/s (200 s) to 10/s pays, 10 x 100 / 150 = 6.7 > 5; to 6/s it does not.
    assert 10.0 * restart_factor(3600.0, 1000.0, 0.0, 50.0, 10.0) > 5.0
    assert 6.0 * restart_factor(3600.0, 1000.0, 0.0, 50.0, 6.0) < 5.0
    # Long work left: the age is the shorter horizon, as without the cut.
    assert restart_factor(600.0, 1e9, 0.0, 30.0, 1.0) == pytest.approx(600 / 630)


def test_no_goodput_no_cut_and_nothing_left_with_a_free_restart_is_free():
    assert restart_factor(600.0, 10.0, 0.0, 30.0, 0.0) == pytest.approx(600 / 630)
    assert restart_factor(600.0, 10.0, 0.0, 30.0, math.inf) == pytest.approx(600 / 630)
    assert restart_factor(600.0, 0.0, 0.0, 0.0, 5.0) == 1.0


def test_the_arrays_give_the_scalar_factor_everywhere():
    rng = random.Random(7)
    terms = [(rng.uniform(600, 1e5), rng.choice([math.inf, 0.0, 10 ** rng.uniform(0, 7)]),
              rng.choice([0.0, 30.0, 900.0]), rng.choice([0.0, 30.0, 250.0]))
             for _ in range(200)]
    goodput = np.array([[rng.choice([0.0, math.inf, 10 ** rng.uniform(-2, 3)])
                         for _ in range(9)] for _ in terms])
    got = restart_factors(terms, goodput)
    want = [[restart_factor(*t, g) for g in row] for t, row in zip(terms, goodput.tolist(),
                                                                    strict=True)]
    np.testing.assert_allclose(got, np.array(want), rtol=1e-12)
