"""Live jobs that set the same ``training.measurements_key`` (and node type) pool their
measured steps: a new one starts from what the others measured."""

from __future__ import annotations

import pytest
import yaml

from costsched.errors import ConfigError
from costsched.scheduler.job_models import FixedBatchThroughput, JobModels
from tests.test_job_models import GLOBAL_BATCH, SCALES, SYNC_BOUND, measured
from tests.test_scheduler_fakes import harness, job_text, node


def keyed(name: str, key: str, instance_type: str = "four", **options) -> str:
    data = yaml.safe_load(job_text(name, **options))
    data["training"]["measurements_key"] = key
    data["cost"]["instance_type"] = instance_type
    return yaml.safe_dump(data)


def test_a_new_job_adopts_the_pool_once_and_its_own_steps_then_win(tmp_path):
    models = JobModels(tmp_path / "state.db")
    for m in SCALES:
        models.record("earlier", m, now=1.0, share_key="cnn@four")
    assert models.adopt("new", "cnn@four", now=2.0)
    model = models.model("new")
    assert model is not None and model.num_points == 2 and model.most_replicas_tried == 2
    speedup = FixedBatchThroughput(model.params, GLOBAL_BATCH, GLOBAL_BATCH).speedup(2)
    assert speedup == pytest.approx(1.0 / 0.53, rel=0.10)  # the pooled 1 -> 2 speed-up
    assert not models.adopt("new", "cnn@four", now=3.0)  # it has a model now
    assert not models.adopt("other", "rnn@four", now=3.0)  # nothing pooled under that key
    assert not models.adopt("other", None, now=3.0) and models.model("other") is None
    models.record("new", measured(2, 0.90, 0.40, 142.2), now=4.0, share_key="cnn@four")
    mine = {p.num_replicas: p.step_time_s for p in models.points("new")}
    assert mine == {1: 1.00, 2: 0.90}  # its own measurement replaced the pooled one
    assert models.adopt("third", "cnn@four", now=5.0)  # and the pool holds the latest
    assert {p.num_replicas: p.step_time_s for p in models.points("third")} == mine


def test_pooled_steps_steer_the_first_decision_on_new_jobs(tmp_path):
    """The spare-slot case of ``tests/test_job_models.py``, with neither job measured:
    what earlier jobs of the same keys measured decides it, as their own steps would."""
    h = harness(tmp_path, node("n0", slots=3))
    for m in SYNC_BOUND:
        h.controller.job_models.record("old-bound", m, now=h.clock.now(), share_key="bound@four")
    for m in SCALES:
        h.controller.job_models.record("old-scales", m, now=h.clock.now(),
                                       share_key="scales@four")
    bound = h.controller.submit(keyed("first", "bound", min_workers=1, max_workers=2))
    scales = h.controller.submit(keyed("second", "scales", min_workers=1, max_workers=2))
    h.tick()
    assert (h.job(scales).workers, h.job(bound).workers) == (2, 1)


def test_steps_on_another_node_type_are_not_pooled_with_these(tmp_path):
    h = harness(tmp_path, node("n0", slots=3))
    for m in SCALES:
        h.controller.job_models.record("old", m, now=h.clock.now(), share_key="scales@four")
    job = h.controller.submit(keyed("elsewhere", "scales", instance_type="eight"))
    h.tick()
    assert h.controller.job_models.model(job) is None


def test_an_empty_key_is_a_one_line_config_error(tmp_path):
    h = harness(tmp_path, node("n0"))
    with pytest.raises(ConfigError, match="measurements_key"):
        h.controller.submit(keyed("bad", "  "))
