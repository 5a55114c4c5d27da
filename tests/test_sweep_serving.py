"""The serving-cost objective: trials rank by training + serving dollars, the serving
part priced from latency measured on the trained model; bad settings are one-line
config errors."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from costsched.config.job import parse_job
from costsched.cost.prices import load_catalog
from costsched.errors import ConfigError
from costsched.sweep.config import load_sweep
from costsched.sweep.objective import ServingObjective, objective_line
from costsched.sweep.outputs import RESULT_COLUMNS, pareto_front, rank, with_serving, write_table
from costsched.sweep.trial_size import serving_latencies_ms, serving_latency_ms
from costsched.training.data import prepare
from costsched.training.model_factory import JobModelFactory
from costsched.training.state import STATE_FILE
from tests.test_sweep_core import write_sweep

CATALOG = load_catalog()
G5 = CATALOG.instance("g5.xlarge").on_demand_usd_per_hour
SERVING = ServingObjective(num_predictions=1e6, instance_type="g5.xlarge")


def row(trial_id: str, usd_to_target: float | None, best: float = 0.96) -> dict:
    return {"trial_id": trial_id, "config": json.dumps({"trial": trial_id}),
            "reached_target": usd_to_target is not None, "usd_to_target": usd_to_target,
            "best_val_accuracy": best, "cost_usd": (usd_to_target or 0.004) + 0.0001,
            "is_baseline": False}


def trials() -> pd.DataFrame:
    return pd.DataFrame([row("cheap-to-train", 0.001), row("cheap-to-serve", 0.002),
                         row("unreached", None, best=0.9)], columns=RESULT_COLUMNS)


def test_a_model_slow_to_serve_ranks_behind_one_cheaper_in_total():
    frame = trials()
    assert rank(frame)["trial_id"][0] == "cheap-to-train"  # the objective off
    latency = {"cheap-to-train": 2.0, "cheap-to-serve": 0.05, "unreached": 0.01}
    ranked = with_serving(frame, latency, SERVING, CATALOG)
    assert list(ranked["trial_id"]) == ["cheap-to-serve", "cheap-to-train", "unreached"]
    best = ranked.iloc[0]
    # 1e6 predictions x 0.05 ms at batch 1 on one g5.xlarge at its $/hour.
    assert best["serving_usd"] == pytest.approx(1e6 * 0.05e-3 / 3600 * G5)
    assert best["total_usd"] == pytest.approx(0.002 + 1e6 * 0.05e-3 / 3600 * G5)
    slow = ranked.set_index("trial_id").loc["cheap-to-train"]
    assert slow["total_usd"] == pytest.approx(0.001 + 1e6 * 2e-3 / 3600 * G5)
    unreached = ranked.set_index("trial_id").loc["unreached"]
    assert unreached["total_usd"] == pytest.approx(0.0041 + 1e6 * 0.01e-3 / 3600 * G5)
    # Same accuracy, more dollars in total: off the front once serving counts.
    assert set(pareto_front(ranked, "total_usd")["trial_id"]) == {"unreached", "cheap-to-serve"}
    assert "cheap-to-train" in set(pareto_front(ranked)["trial_id"])


def test_a_trial_without_a_measured_latency_ranks_last_among_the_reached():
    ranked = with_serving(trials(), {"cheap-to-train": 2.0}, SERVING, CATALOG)
    assert list(ranked["trial_id"]) == ["cheap-to-train", "cheap-to-serve", "unreached"]
    assert ranked["total_usd"].isna().sum() == 2


def test_with_no_trial_at_the_target_the_most_accurate_ranks_first_not_the_cheapest():
    frame = pd.DataFrame([row("cheap-and-poor", None, best=0.5),
                          row("dear-and-close", None, best=0.9)], columns=RESULT_COLUMNS)
    frame.loc[0, "cost_usd"] = 0.0001  # it spent almost nothing: it learned little
    ranked = with_serving(frame, {"cheap-and-poor": 0.01, "dear-and-close": 2.0},
                          SERVING, CATALOG)
    assert ranked["total_usd"][0] > ranked["total_usd"][1]  # the first is dearer in total
    assert list(ranked["trial_id"]) == ["dear-and-close", "cheap-and-poor"]


def test_batches_are_priced_per_batch():
    batched = ServingObjective(num_predictions=1e6, instance_type="g5.xlarge", batch_size=64)
    assert batched.usd(CATALOG, 1.0) == pytest.approx(15625 * 1e-3 / 3600 * G5)


def test_results_tables_carry_serving_and_total_columns(tmp_path):
    ranked = with_serving(trials(), {"cheap-to-train": 2.0, "cheap-to-serve": 0.05},
                          SERVING, CATALOG)
    csv, parquet = write_table(ranked, tmp_path)
    for table in (pd.read_csv(csv), pd.read_parquet(parquet)):
        assert {"serving_latency_ms", "serving_usd", "total_usd", "cap_usd"} <= set(table)
        assert table["total_usd"].iloc[0] == pytest.approx(ranked["total_usd"].iloc[0])


def serving(tmp_path, **section):
    return load_sweep(write_sweep(tmp_path, objective={"serving": section}), CATALOG)


def test_yaml_1e8_is_read_as_a_number_and_the_dry_run_names_the_objective(tmp_path):
    path = write_sweep(tmp_path)
    text = path.read_text() + "objective: {serving: {num_predictions: 1e8, " \
                              "instance_type: g5.xlarge, batch_size: 8}}\n"
    assert yaml.safe_load(text)["objective"]["serving"]["num_predictions"] == "1e8"
    path.write_text(text)
    cfg = load_sweep(path, CATALOG).config
    assert cfg.objective.serving.num_predictions == 1e8
    line = objective_line(cfg.target_value, cfg.objective.serving, CATALOG)
    assert "plus serving 1e+08 predictions in batches of 8 on one g5.xlarge" in line
    assert objective_line(0.95, None, CATALOG) == "objective      dollars to val_accuracy >= 0.95"
    assert load_sweep(write_sweep(tmp_path), CATALOG).config.objective.serving is None  # off


@pytest.mark.parametrize(("section", "message"), [
    ({"num_predictions": 0, "instance_type": "g5.xlarge"}, "must be a number > 0"),
    ({"num_predictions": "lots", "instance_type": "g5.xlarge"}, "must be a number > 0"),
    ({"num_predictions": True, "instance_type": "g5.xlarge"}, "must be a number > 0"),
    ({"num_predictions": 1e6, "instance_type": "g5.xlarg"}, "did you mean `g5.xlarge`"),
    ({"num_predictions": 1e6, "instance_type": "g5.xlarge", "batch_size": 0}, "in 1..4096"),
    ({"predictions": 1e6, "instance_type": "g5.xlarge"}, "did you mean `num_predictions`"),
    ({"num_predictions": 1e6}, "missing required key `objective.serving.instance_type`"),
])
def test_bad_serving_settings_are_one_line_config_errors(tmp_path, section, message):
    with pytest.raises(ConfigError) as exc:
        serving(tmp_path, **section)
    assert message in str(exc.value) and "\n" not in str(exc.value)


def checkpointed(tmp_path, quantization: str):
    job = parse_job({
        "name": "serve", "dataset": {"name": "digits"}, "model": {"kind": "mlp", "widths": [32]},
        "training": {"num_epochs": 1, "global_batch_size": 64},
        "compression": {"quantization": quantization},
        "scaling": {"use_gpu": False, "accelerator_resource": "cpu_slot"},
    }, "test job")
    splits = prepare(job.dataset)
    model = JobModelFactory(job=job, input_shape=splits.input_shape,
                            num_classes=splits.num_classes)()
    (tmp_path / quantization / "checkpoint_000001").mkdir(parents=True)
    torch.save({"model": model.state_dict()},
               tmp_path / quantization / "checkpoint_000001" / STATE_FILE)
    return job, splits, tmp_path / quantization / "checkpoint_000001"


def test_serving_latency_is_measured_on_the_trained_weights_at_the_batch_size(tmp_path):
    job, splits, checkpoint = checkpointed(tmp_path, "dynamic_int8")
    one = serving_latency_ms(job, splits, checkpoint, batch_size=1)
    # The largest batch allowed, about 23 times the test split (rows repeat): far enough
    # above one row that other load on the machine cannot swap the two.
    many = serving_latency_ms(job, splits, checkpoint, batch_size=4096)
    assert 0 < one < many
    with pytest.raises(FileNotFoundError):
        serving_latency_ms(job, splits, tmp_path / "no_checkpoint", batch_size=1)


def test_interleaved_latencies_tell_int8_from_float_as_the_readme_reports(tmp_path):
    fp32, int8 = checkpointed(tmp_path, "none"), checkpointed(tmp_path, "dynamic_int8")
    got = serving_latencies_ms({"fp32": (fp32[0], fp32[2]), "int8": (int8[0], int8[2])},
                               fp32[1], batch_size=1, rounds=3)
    assert got.keys() == {"fp32", "int8"}
    assert got["int8"] > got["fp32"] > 0  # torchao int8 without torch.compile is slower


def test_the_shipped_serving_sweep_loads_with_the_objective_on():
    from tests.conftest import REPO

    cfg = load_sweep(REPO / "configs" / "sweep_serving.yaml", CATALOG).config
    assert cfg.objective.serving == ServingObjective(num_predictions=1e8,
                                                     instance_type="g5.xlarge")
    assert cfg.forecast_gate and cfg.max_concurrent_trials == 2
