"""Interpolation of measured step times and the statistical-progress model."""

from __future__ import annotations

import pytest

from costsched.errors import ConfigError
from costsched.policy.snapshot import statistical_gain
from costsched.sim.profiles import canonical_placement, load_profiles
from tests.support.sim_fixture import FIXTURE, fixture_profiles


def _row(app, placement: str, bsz: int):
    import pandas as pd

    frame = pd.read_csv(FIXTURE / "profiles" / app / "placements.csv", dtype={"placement": str})
    row = frame[(frame.placement == placement) & (frame.local_bsz == bsz)].iloc[0]
    return row.step_time, row.sync_time


def test_canonical_placement_drops_empty_nodes_and_rotates():
    assert canonical_placement((2, 0, 1)) == (1, 2)
    assert canonical_placement((4, 4, 1)) == canonical_placement((1, 4, 4)) == (1, 4, 4)
    assert canonical_placement(()) == ()


def test_measured_placement_returns_the_measurement_in_any_order():
    ncf = fixture_profiles()["ncf"]
    step, sync = _row("ncf", "12", 129)
    assert ncf.step_time_s((1, 2), 129) == pytest.approx((step, sync))
    assert ncf.step_time_s((2, 1), 129) == pytest.approx((step, sync))


def test_batch_size_between_measurements_is_linear():
    ncf = fixture_profiles()["ncf"]
    (a, _), (b, _) = _row("ncf", "4", 129), _row("ncf", "4", 513)
    assert ncf.step_time_s((4,), 321)[0] == pytest.approx((a + b) / 2)


def test_unmeasured_placement_lies_between_the_measured_node_counts():
    bert = fixture_profiles()["bert"]
    # 5 nodes is not measured: between 4 nodes (4444, 16 replicas) and 6 (scalability).
    at5 = bert.step_time_s((4, 4, 4, 2, 2), 8)[0]
    at4 = bert.step_time_s((4, 4, 4, 4), 8)[0]
    at6 = bert._group_interp(6, 16, 8)[0]
    assert min(at4, at6) <= at5 <= max(at4, at6)


def test_gain_formula():
    assert statistical_gain(2.0, 5.0, 1, 1.0) == pytest.approx(1.0)
    assert statistical_gain(1e-12, 1.0, 1, 8.0) == pytest.approx(8.0)  # all noise: linear
    assert statistical_gain(1.0, 1e-12, 1, 8.0) == pytest.approx(1.0)  # no noise: no gain


def test_gain_grows_as_training_gets_noisier():
    ncf = fixture_profiles()["ncf"]
    assert ncf.gain(ncf.init_batch_size, 3) == pytest.approx(1.0)
    assert ncf.gain(4096, 9) >= ncf.gain(4096, 0)


def test_target_is_the_last_epoch_of_the_initial_batch_curve():
    bert = fixture_profiles()["bert"]
    assert bert.max_epochs == 2
    assert bert.target_progress == bert.curves[12].progress.iloc[1]
    assert bert.epoch_at(bert.target_progress) == pytest.approx(2.0)


def test_missing_profiles_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--profiles"):
        load_profiles(tmp_path / "nowhere")
