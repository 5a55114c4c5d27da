"""Property: whatever mapping a user writes, loading it yields a JobConfig or a ConfigError."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from costsched.config.job import JobConfig, load_job_config
from costsched.cost.prices import load_catalog
from costsched.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
CATALOG = load_catalog()
FUZZ = settings(max_examples=50, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

# Short printable text: long names would only probe the OS path limit, a known bug
# covered in test_job_config.py::test_overlong_data_file_name_is_a_config_error.
text = st.text(st.characters(min_codepoint=32, max_codepoint=0x24F), max_size=12)
scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | text
known_words = st.sampled_from(
    ["name", "mnist1d", "digits", "mlp", "cnn1d", "fp16", "bf16", "GPU", "local-cpu",
     "g5.xlarge", "val_accuracy", "adamw", "x.csv", "0", "-1"]
)
values = st.recursive(
    scalars | known_words,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(text | known_words, children, max_size=4),
    max_leaves=12,
)


def outcome_of(data: Any) -> JobConfig | ConfigError:
    """Write ``data`` as YAML and load it; any exception but ConfigError propagates."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        try:
            return load_job_config(path, CATALOG)
        except ConfigError as exc:
            assert str(exc).startswith(str(path)), f"error does not name the file: {exc}"
            return exc


def key_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    paths = []
    if isinstance(node, dict):
        for key, child in node.items():
            paths.append(prefix + (key,))
            paths.extend(key_paths(child, prefix + (key,)))
    return paths


def parent_of(data: dict, path: tuple) -> dict:
    node = data
    for key in path[:-1]:
        node = node[key]
    return node


ALL_PATHS = key_paths(QUICKSTART)


@FUZZ
@given(data=st.dictionaries(text | known_words, values, max_size=6) | values)
def test_arbitrary_yaml_is_a_config_or_a_config_error(data):
    assert isinstance(outcome_of(data), JobConfig | ConfigError)


@FUZZ
@given(path=st.sampled_from(ALL_PATHS), new_value=values, how=st.sampled_from(["set", "del"]))
def test_quickstart_with_one_value_replaced_or_removed(path, new_value, how):
    data = copy.deepcopy(QUICKSTART)
    data["dataset"]["num_samples"] = 500  # never generated here; keeps any accidental use cheap
    parent = parent_of(data, path)
    if how == "del":
        del parent[path[-1]]
    else:
        parent[path[-1]] = new_value
    assert isinstance(outcome_of(data), JobConfig | ConfigError)


@FUZZ
@given(path=st.sampled_from(ALL_PATHS), new_key=text | known_words | st.integers() | st.none())
def test_quickstart_with_one_key_renamed(path, new_key):
    data = copy.deepcopy(QUICKSTART)
    parent = parent_of(data, path)
    parent[new_key] = parent.pop(path[-1])
    result = outcome_of(data)
    assert isinstance(result, JobConfig | ConfigError)
    if not isinstance(new_key, str):
        # no field is named by a number or null: the key must be reported as unknown
        assert isinstance(result, ConfigError)
        assert "unknown key" in str(result), str(result)
