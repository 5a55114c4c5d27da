"""Strict job-config loading: every user mistake is one ConfigError naming the file and the fix."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml

from costsched.cli.main import main as cli_main
from costsched.config.job import JobConfig, TrainingConfig, load_job_config
from costsched.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "configs" / "quickstart.yaml"
DELETE = object()


def quickstart_dict() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(QUICKSTART.read_text()))


def write_config(tmp_path: Path, changes: dict[str, Any] | None = None,
                 name: str = "job.yaml") -> Path:
    """The quickstart config with dotted-key ``changes`` applied (value DELETE removes a key),
    and its ledger/storage paths under ``tmp_path``."""
    data = quickstart_dict()
    data["storage_path"] = str(tmp_path / "runs")
    data["ledger_path"] = str(tmp_path / "ledger.db")
    for dotted, value in (changes or {}).items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is DELETE:
            del node[leaf]
        else:
            node[leaf] = value
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


def load_error(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_job_config(path)
    message = str(info.value)
    assert message.startswith(str(path)), f"message does not name the file: {message}"
    return message


def test_quickstart_config_loads_with_its_values():
    job = load_job_config(QUICKSTART)
    assert isinstance(job, JobConfig)
    assert job.name == "quickstart"
    assert job.dataset.name == "mnist1d" and job.dataset.num_samples == 8000
    assert job.model.kind == "cnn1d" and job.model.widths == (32, 64, 64)
    assert job.scaling.min_workers == job.scaling.max_workers == 2
    assert job.scaling.resources_per_worker() == {"CPU": 1.0, "cpu_slot": 1.0}
    assert job.training.target_metric == "val_accuracy" and job.training.target_value == 0.9
    assert job.cost.instance_type == "local-cpu" and job.cost.budget_usd == 1.0


def test_config_hash_is_stable_and_changes_with_the_config(tmp_path):
    a = load_job_config(write_config(tmp_path, name="a.yaml"))
    b = load_job_config(write_config(tmp_path, name="b.yaml"))
    c = load_job_config(write_config(tmp_path, {"optimizer.lr": 0.01}, name="c.yaml"))
    assert a.config_hash() == b.config_hash()
    assert a.config_hash() != c.config_hash()


@pytest.mark.parametrize(
    ("changes", "key_path", "suggestion"),
    [
        ({"nmae": "x"}, "nmae", "name"),
        ({"scaling.max_wokers": 2}, "scaling.max_wokers", "max_workers"),
        ({"training.num_epoch": 3}, "training.num_epoch", "num_epochs"),
        ({"dataset.augment.noise": 0.1}, "dataset.augment.noise", "noise_std"),
        ({"cost.budget": 1.0}, "cost.budget", "budget_usd"),
    ],
)
def test_unknown_key_names_its_path_and_the_closest_key(tmp_path, changes, key_path, suggestion):
    message = load_error(write_config(tmp_path, changes))
    assert f"unknown key `{key_path}`" in message
    assert f"did you mean `{suggestion}`?" in message


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"scaling.min_workers": 0}, "must be >= 1"),
        ({"scaling.max_workers": -1}, "must be >= 1"),
        ({"scaling.min_workers": 3, "scaling.max_workers": 2},
         "lower min_workers or raise max_workers"),
        ({"cost.instance_type": "g5.2xlarge"}, "did you mean `g5.12xlarge`?"),
        ({"model.kind": "mlpp"}, "did you mean `mlp`?"),
        ({"dataset.name": "mnist"}, "did you mean `mnist1d`?"),
        ({"training.precision": "fp8"}, "choose one of fp32, bf16, fp16"),
        ({"cost.budget_usd": 0}, "`cost.budget_usd` must be > 0"),
        ({"cost.budget_usd": -5.0}, "`cost.budget_usd` must be > 0"),
        ({"training.precision": "fp16"}, "use bf16 or fp32 on CPU"),
        ({"training.num_epochs": "10"}, "`training.num_epochs` must be a whole number"),
        ({"training.num_epochs": True}, "`training.num_epochs` must be a whole number"),
        ({"training.global_batch_size": 12.5}, "must be a whole number"),
        ({"cost.spot": "yes"}, "`cost.spot` must be true or false"),
        ({"optimizer.lr": "fast"}, "`optimizer.lr` must be a number"),
        ({"model.widths": 32}, "`model.widths` must be a list"),
        ({"training.num_epochs": DELETE}, "missing required key `training.num_epochs`"),
        ({"model": DELETE}, "`dataset` and `model` are required unless `entrypoint`"),
        ({"scaling": [1, 2]}, "scaling: expected a mapping"),
        ({"optimizer.name": "adagrad"}, "choose one of sgd, adam, adamw"),
    ],
)
def test_invalid_value_is_a_config_error_with_the_fix(tmp_path, changes, expected):
    message = load_error(write_config(tmp_path, changes))
    assert expected in message


def test_missing_data_file_is_named(tmp_path):
    missing = tmp_path / "nowhere" / "data.parquet"
    message = load_error(write_config(tmp_path, {"dataset.name": str(missing)}))
    assert f"data file {missing} does not exist" in message


def test_existing_data_file_is_accepted(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("a,label\n1,0\n")
    job = load_job_config(write_config(tmp_path, {"dataset.name": str(data)}))
    assert job.dataset.is_file


def test_fp16_with_a_gpu_is_accepted(tmp_path):
    job = load_job_config(write_config(tmp_path, {
        "training.precision": "fp16", "scaling.use_gpu": True,
        "scaling.accelerator_resource": "GPU",
    }))
    assert job.training.precision == "fp16"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("- a\n- b\n", "the top level must be a mapping"),
        ("just a string\n", "the top level must be a mapping"),
        ("name: [unclosed\n", "not valid YAML at line"),
        ("name: a\n  bad: indent\n", "not valid YAML"),
        ("", "missing required key `name`"),
    ],
)
def test_malformed_yaml_is_a_config_error(tmp_path, text, expected):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    assert expected in load_error(path)


def test_missing_config_file_is_a_config_error(tmp_path):
    message = load_error(tmp_path / "absent.yaml")
    assert "no such config file" in message


def test_a_bad_choice_lists_the_choices_once_and_suggests_only_a_close_one(tmp_path):
    message = load_error(write_config(tmp_path, {"training.precision": "quarter"}))
    assert message.endswith("`training.precision` is 'quarter'; choose one of fp32, bf16, fp16")
    message = load_error(write_config(tmp_path, {"training.precision": "bf61"}))
    assert message.endswith("choose one of fp32, bf16, fp16; did you mean `bf16`?")


def test_an_unknown_key_without_a_close_match_lists_the_known_keys(tmp_path):
    message = load_error(write_config(tmp_path, {"training.zzzzzz": 1}))
    known = ", ".join(f.name for f in dataclasses.fields(TrainingConfig))
    assert message.endswith(f"unknown key `training.zzzzzz`; known keys: {known}")
    assert "global_batch_size" in known  # the list is the real one, not empty


def test_nan_budget_is_rejected(tmp_path):
    load_error(write_config(tmp_path, {"cost.budget_usd": float("nan")}))


def test_overlong_data_file_name_is_a_config_error(tmp_path):
    load_error(write_config(tmp_path, {"dataset.name": "d" * 300 + ".csv"}))


@pytest.mark.parametrize("folder", ["x.csv", "data"])
def test_a_folder_as_dataset_is_named_a_folder(tmp_path, folder):
    (tmp_path / folder).mkdir()
    message = load_error(write_config(tmp_path, {"dataset.name": str(tmp_path / folder)}))
    assert f"{folder}' is a folder; name a built-in dataset (digits, mnist1d) or a " \
           ".parquet/.csv/.npz file" in message


def test_unknown_dataset_lists_the_built_ins_once(tmp_path):
    message = load_error(write_config(tmp_path, {"dataset.name": "imagenet"}))
    assert message.endswith("'imagenet' is neither a built-in dataset (digits, mnist1d) "
                            "nor a .parquet/.csv/.npz file")


def test_num_samples_above_the_limit_is_refused(tmp_path):
    from costsched.config.job import MAX_NUM_SAMPLES

    load_job_config(write_config(tmp_path, {"dataset.num_samples": MAX_NUM_SAMPLES}))
    message = load_error(write_config(tmp_path, {"dataset.num_samples": MAX_NUM_SAMPLES + 1}))
    assert f"at most {MAX_NUM_SAMPLES:,} samples" in message


def test_data_file_above_the_size_limit_is_refused(tmp_path):
    from costsched.config.job import MAX_DATA_FILE_BYTES

    data = tmp_path / "big.npz"
    with data.open("wb") as handle:  # sparse: no disk is used
        handle.truncate(MAX_DATA_FILE_BYTES + 1)
    message = load_error(write_config(tmp_path, {"dataset.name": str(data)}))
    assert f"at most {MAX_DATA_FILE_BYTES:,} can be loaded" in message


# -- entry points --------------------------------------------------------------------------

BAD_CONFIGS = [
    {"scaling.max_wokers": 2},
    {"scaling.min_workers": 0},
    {"training.num_epochs": "ten"},
    {"cost.instance_type": "p9.huge"},
]


@pytest.mark.parametrize("changes", BAD_CONFIGS)
def test_cli_train_bad_config_prints_one_line_and_writes_nothing(tmp_path, capsys, changes):
    path = write_config(tmp_path, changes)
    assert cli_main(["train", str(path), "--dry-run"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("costsched train: error:")
    assert str(path) in lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (tmp_path / "ledger.db").exists()
    assert not (tmp_path / "runs").exists()


def test_cli_train_invalid_yaml_syntax_is_one_line(tmp_path, capsys):
    path = tmp_path / "job.yaml"
    path.write_text("name: [oops\n")
    assert cli_main(["train", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("costsched train: error:")


def _load_jobs_train():
    spec = importlib.util.spec_from_file_location("jobs_train_entry", REPO / "jobs" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_jobs_train_entry_point_returns_2_for_a_bad_config(tmp_path, capsys):
    path = write_config(tmp_path, {"scaling.max_wokers": 2})
    assert _load_jobs_train().main([str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jobs/train.py: error:")
    assert "did you mean `max_workers`?" in err[0]
    assert not (tmp_path / "ledger.db").exists()
