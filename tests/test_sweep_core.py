"""Pure parts of sweeps: config loading, points, the budget gate, objective and ranking."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from costsched.errors import ConfigError
from costsched.sweep.config import apply_point, job_for, load_sweep, value_in_job
from costsched.sweep.gate import new_trial_cap
from costsched.sweep.objective import objective_usd
from costsched.sweep.outputs import pareto_front, rank, write_best_job
from tests.conftest import REPO


def write_sweep(tmp_path: Path, **changes) -> Path:
    sweep = yaml.safe_load((REPO / "configs" / "sweep_mnist1d.yaml").read_text())
    sweep["base_job"] = str(REPO / "configs" / "sweep_base.yaml")
    sweep.update(changes)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def test_shipped_sweep_loads_and_its_baseline_point_is_the_base_job(tmp_path):
    loaded = load_sweep(write_sweep(tmp_path))
    assert value_in_job(loaded.base_job, "scaling.workers") == 2
    assert value_in_job(loaded.base_job, "training.precision") == "fp32"
    job = job_for(loaded.base, {"scaling.workers": 1, "compression.channel_pruning_ratio": 0.5})
    assert (job.scaling.min_workers, job.scaling.max_workers) == (1, 1)
    assert job.compression.channel_pruning_ratio == 0.5


@pytest.mark.parametrize(("changes", "message"), [
    ({"space": {"optimizer.lrr": {"choice": [0.1]}}}, "did you mean `lr`"),
    ({"space": {"optimizer.lr": {"uniform": [0.2, 0.1]}}}, "low < high"),
    ({"space": {"optimizer.lr": {"loguniform": [0.0, 0.1]}}}, "> 0"),
    ({"space": {"optimizer.lr": {"choice": [0.1], "uniform": [0.1, 0.2]}}}, "exactly one"),
    ({"space": {}}, "`space` is empty"),
    ({"trial_budget_usd": 1.0, "budget_usd": 0.5}, "exceeds `budget_usd`"),
    ({"target_value": 1.5}, "(0, 1]"),
    ({"budgett_usd": 1.0}, "did you mean `budget_usd`"),
    ({"storage_path": "s3://bucket/sweeps"}, "base job's `storage_path`"),
])
def test_bad_sweeps_are_config_errors_that_say_what_to_fix(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("]", r"\]")):
        load_sweep(write_sweep(tmp_path, **changes))


def test_apply_point_leaves_the_base_untouched():
    base = {"optimizer": {"lr": 0.1}}
    assert apply_point(base, {"optimizer.lr": 0.5, "training.seed": 3}) == {
        "optimizer": {"lr": 0.5}, "training": {"seed": 3}}
    assert base == {"optimizer": {"lr": 0.1}}


@pytest.mark.parametrize(("spent", "reserved", "cap", "budget", "ok"), [
    (0.0, 0.0, 1.0, 1.0, True),       # exactly fits
    (0.5, 0.0, 0.6, 1.0, False),      # would cross
    (0.2, 0.5, 0.3, 1.0, True),       # running trials' reserve counts
    (0.2, 0.6, 0.3, 1.0, False),
])
def test_budget_gate_arithmetic(spent, reserved, cap, budget, ok):
    # Without a forecast a trial needs room for its whole cap.
    room = budget - spent - reserved
    assert (new_trial_cap(room_usd=room, cap_usd=cap, need_usd=cap) is not None) is ok


def test_objective_ranks_every_reached_trial_before_any_unreached_one():
    cap = 0.01
    reached = objective_usd(usd_to_target=cap, best_accuracy=0.95, target=0.95, cap_usd=cap)
    close = objective_usd(usd_to_target=None, best_accuracy=0.94, target=0.95, cap_usd=cap)
    far = objective_usd(usd_to_target=None, best_accuracy=0.50, target=0.95, cap_usd=cap)
    assert reached < close < far
    assert reached == cap


def frame(rows):
    return pd.DataFrame(rows, columns=["trial_id", "reached_target", "usd_to_target",
                                       "best_val_accuracy", "cost_usd", "is_baseline"])


def test_rank_and_pareto_front():
    trials = frame([
        ("a", False, None, 0.93, 0.001, True),
        ("b", True, 0.0005, 0.96, 0.0006, False),
        ("c", True, 0.0002, 0.95, 0.0003, False),
        ("d", False, None, 0.90, 0.0004, False),
    ])
    assert list(rank(trials)["trial_id"]) == ["c", "b", "a", "d"]
    # d is dominated by c (cheaper and more accurate); a by b.
    assert set(pareto_front(trials)["trial_id"]) == {"c", "b"}


def test_best_job_yaml_is_a_job_costsched_can_load(tmp_path):
    loaded = load_sweep(write_sweep(tmp_path))
    path = write_best_job(loaded.base, {"scaling.workers": 1, "optimizer.lr": 0.004},
                          "best", tmp_path / "best.yaml")
    from costsched.config.job import load_job_config

    job = load_job_config(path)
    assert (job.name, job.scaling.max_workers, job.optimizer.lr) == ("best", 1, 0.004)


def test_best_job_yaml_says_when_no_trial_reached_the_target(tmp_path):
    loaded = load_sweep(write_sweep(tmp_path))
    path = write_best_job(loaded.base, {"scaling.workers": 1, "optimizer.lr": 0.004},
                          "best", tmp_path / "best.yaml", reached_target=False,
                          note="best so far: 0.81")
    from costsched.config.job import load_job_config

    text = path.read_text()
    assert text.startswith("# NOT REACHED") and "# best so far: 0.81" in text
    assert load_job_config(path).optimizer.lr == 0.004  # still a job costsched runs
