"""Live jobs that set the same ``training.measurements_key`` pool the steps they measured
on one GPU model: a new one starts from what the others measured there."""

from __future__ import annotations

import pytest
import yaml

from costsched.errors import ConfigError
from costsched.policy.snapshot import NodeView
from costsched.scheduler.interfaces import JobProgress, NodeRecord
from costsched.scheduler.job_models import FixedBatchThroughput, JobModels
from tests.test_job_models import GLOBAL_BATCH, SCALES, SYNC_BOUND, measured
from tests.test_scheduler_fakes import harness, job_text, make_controller, node

GPU = "A10G"  # the GPU model of every type in the fake catalog


def keyed(name: str, key: str, **options) -> str:
    data = yaml.safe_load(job_text(name, **options))
    data["training"]["measurements_key"] = key
    return yaml.safe_dump(data)


def test_a_new_job_adopts_the_pool_once_and_its_own_steps_then_win(tmp_path):
    models = JobModels(tmp_path / "state.db")
    for m in SCALES:
        models.record("earlier", m, now=1.0, share_key=f"cnn@{GPU}")
    assert models.adopt("new", f"cnn@{GPU}", now=2.0)
    model = models.model("new")
    assert model is not None and model.num_points == 2 and model.most_replicas_tried == 2
    speedup = FixedBatchThroughput(model.params, GLOBAL_BATCH, GLOBAL_BATCH).speedup(2)
    assert speedup == pytest.approx(1.0 / 0.53, rel=0.10)  # the pooled 1 -> 2 speed-up
    assert models.points("new") == []  # adopted steps are not its own (profile export)
    assert not models.adopt("new", f"cnn@{GPU}", now=3.0)  # it has a model now
    assert not models.adopt("other", f"rnn@{GPU}", now=3.0)  # nothing pooled there
    assert not models.adopt("other", None, now=3.0) and models.model("other") is None
    models.record("new", measured(2, 0.90, 0.40, 142.2), now=4.0, share_key=f"cnn@{GPU}")
    assert [(p.num_replicas, p.step_time_s) for p in models.points("new")] == [(2, 0.90)]
    learned = {p.num_replicas: p.step_time_s for p in models.learner("new").points}
    assert learned == {1: 1.00, 2: 0.90}  # its own step replaced the adopted one
    assert models.adopt("third", f"cnn@{GPU}", now=5.0)  # and the pool holds the latest
    assert {p.num_replicas: p.step_time_s for p in models.learner("third").points} == learned


def test_pooled_steps_steer_the_first_decision_on_new_jobs(tmp_path):
    """The spare-slot case of ``tests/test_job_models.py``, with neither job measured:
    what earlier jobs of the same keys measured decides it, as their own steps would."""
    h = harness(tmp_path, node("n0", slots=3))
    for job_id, key, points in (("old-bound", "bound", SYNC_BOUND),
                                ("old-scales", "scales", SCALES)):
        for m in points:
            h.controller.job_models.record(job_id, m, now=h.clock.now(),
                                           share_key=f"{key}@{GPU}")
    bound = h.controller.submit(keyed("first", "bound", min_workers=1, max_workers=2))
    scales = h.controller.submit(keyed("second", "scales", min_workers=1, max_workers=2))
    h.tick()
    assert (h.job(scales).workers, h.job(bound).workers) == (2, 1)


def test_steps_go_to_the_pool_of_the_gpu_model_they_ran_on(tmp_path):
    t4 = NodeRecord(node_id="t4-0", node_type="four", gpu_model="T4", total_slots=2,
                    free_slots=2, usd_per_hour=3.2)
    h = harness(tmp_path, t4)
    job = h.controller.submit(keyed("on-t4", "cnn", min_workers=1, max_workers=1))
    h.tick()  # started on the T4 node
    h.runner.script[job] = JobProgress(state="running", spent_usd=0.0, last_step=5,
                                       last_step_at=h.clock.now(),
                                       measurement=measured(1, 1.0, 0.0, 128.0))
    h.tick()
    models = h.controller.job_models
    assert models.adopt("probe-t4", "cnn@T4", now=h.clock.now())
    # A job declared on an A10G type does not start from steps measured on T4s.
    other = h.controller.submit(keyed("declared-a10g", "cnn"))
    h.tick()
    assert models.model(other) is None


def test_the_first_round_after_a_scheduler_restart_pools_on_the_right_gpu_model(tmp_path):
    t4 = NodeRecord(node_id="t4-0", node_type="four", gpu_model="T4", total_slots=2,
                    free_slots=2, usd_per_hour=3.2)
    h = harness(tmp_path, t4)
    job = h.controller.submit(keyed("on-t4", "cnn", min_workers=1, max_workers=1))
    h.tick()  # started on the T4 node; then the scheduler restarts
    restarted = make_controller(h.path, h.clock, h.cluster, h.runner)
    h.runner.script[job] = JobProgress(state="running", spent_usd=0.0, last_step=5,
                                       last_step_at=h.clock.now(),
                                       measurement=measured(1, 1.0, 0.0, 128.0))
    h.clock.advance(60.0)
    restarted.tick()  # re-adopts the run and reads its step in the same round
    assert h.job(job).state == "RUNNING" and h.job(job).run_id
    assert restarted.job_models.adopt("probe-t4", "cnn@T4", now=h.clock.now())


def test_the_last_step_of_a_job_whose_node_just_went_is_pooled_on_its_model(tmp_path):
    t4 = NodeRecord(node_id="t4-0", node_type="four", gpu_model="T4", total_slots=2,
                    free_slots=2, usd_per_hour=3.2)
    h = harness(tmp_path, t4)
    job = h.controller.submit(keyed("on-t4", "cnn", min_workers=1, max_workers=1))
    h.tick()  # started on the T4 node, which is then preempted
    h.cluster.node_list.remove(t4)
    h.runner.script[job] = JobProgress(state="running", spent_usd=0.0, last_step=5,
                                       last_step_at=h.clock.now(),
                                       measurement=measured(1, 1.0, 0.0, 128.0))
    h.tick()
    assert h.controller.job_models.adopt("probe-t4", "cnn@T4", now=h.clock.now())


@pytest.mark.parametrize("ten_first", [True, False])
def test_on_two_gpu_models_the_pools_send_each_job_where_its_edge_is(tmp_path, ten_first):
    """Earlier jobs of key `ten` stepped 10x faster on T4 than on A10G, of key `two` only
    2x; one GPU of each model. `ten` gets the T4 and `two` the A10G, whoever came first
    (scored alike, the first would take the first model)."""
    t4 = NodeRecord(node_id="t4-0", node_type="four", gpu_model="T4", total_slots=1,
                    free_slots=1, usd_per_hour=3.2)
    h = harness(tmp_path, node("n0", slots=1, usd_per_hour=1.0), t4)
    for key, t4_step_s in (("ten", 0.1), ("two", 0.5)):
        for model, step_s in ((GPU, 1.0), ("T4", t4_step_s)):
            h.controller.job_models.record(f"old-{key}", measured(1, step_s, 0.0, 128 / step_s),
                                           now=0.0, share_key=f"{key}@{model}")
    ids = {}
    for key in ("ten", "two") if ten_first else ("two", "ten"):
        ids[key] = h.controller.submit(keyed(key, key, min_workers=1, max_workers=1))
        h.clock.advance(1.0)
    h.tick()
    assert (h.job(ids["ten"]).placement, h.job(ids["two"]).placement) == (
        {"t4-0": 1}, {"n0": 1})


def test_a_job_is_described_on_each_gpu_model_only_once_every_model_has_its_pool(tmp_path):
    from costsched.policy.cost_aware import CostAwarePolicy, UnawareCostAwarePolicy
    from costsched.scheduler.typed_views import TypedViews

    h = harness(tmp_path, node("n0"))
    job = h.controller.submit(keyed("cnn-job", "cnn", min_workers=1, max_workers=2))
    adaptive = yaml.safe_load(keyed("adaptive", "cnn", min_workers=1, max_workers=2))
    adaptive["training"].update(adaptive_batch=True, max_batch_size=512)
    other = h.controller.submit(yaml.safe_dump(adaptive))
    h.tick()
    models = h.controller.job_models
    configs = [h.controller._config(h.job(j)) for j in (job, other)]
    views = list(h.controller._snapshot(h.clock.now(), ()).jobs)
    assert [v.name for v in views] == [job, other]
    typed = TypedViews(models, CostAwarePolicy())
    nodes = [NodeView(node_id=m, gpu_model=m, num_gpus=1, usd_per_hour=1.0) for m in (GPU, "T4")]
    models.record("old", SCALES[0], now=0.0, share_key=f"cnn@{GPU}")
    assert typed.add(views, configs, nodes) == views  # nothing pooled on T4 yet
    models.record("old", measured(1, 0.25, 0.0, 512.0), now=0.0, share_key="cnn@T4")
    reads = []
    pooled = models.pooled
    models.pooled = lambda key: reads.append(key) or pooled(key)
    seen = typed.add(views, configs, nodes)
    assert sorted(reads) == [f"cnn@{GPU}", "cnn@T4"]  # each pool read once this round
    one = {m: o.throughput.step_time_s((1,), GLOBAL_BATCH)
           for m, o in seen[0].by_gpu_model.items()}
    assert one == pytest.approx({GPU: 1.0, "T4": 0.25}, rel=0.05)  # each model's own steps
    assert seen[1].by_gpu_model == {}  # an adaptive batch: described on no model
    fits = typed._learners["cnn@T4"].num_fits
    typed.add(views, configs, nodes)
    assert typed._learners["cnn@T4"].num_fits == fits  # an unchanged pool is not refitted
    blind = TypedViews(models, UnawareCostAwarePolicy())
    assert blind.add(views, configs, nodes) == views  # a policy that ignores models


def test_each_gpu_model_offers_sizes_within_reach_of_what_its_pool_has_measured(tmp_path):
    """Pollux's exploration rule per fit: the A10G pool has measured 2 workers, the T4 pool
    1, so a 1..24-worker job is offered at most 8 x 2 A10Gs and 8 x 1 T4s (not 16 on
    both: the T4 fit has seen nothing past one worker)."""
    from costsched.policy.cost_aware import CostAwarePolicy
    from costsched.scheduler.typed_views import TypedViews

    h = harness(tmp_path, node("n0"))
    job = h.controller.submit(keyed("wide", "cnn", min_workers=1, max_workers=24))
    h.tick()
    models = h.controller.job_models
    for m in SCALES:
        models.record("old", m, now=0.0, share_key=f"cnn@{GPU}")
    models.record("old", measured(1, 0.25, 0.0, 512.0), now=0.0, share_key="cnn@T4")
    views = list(h.controller._snapshot(h.clock.now(), ()).jobs)
    nodes = [NodeView(node_id=m, gpu_model=m, num_gpus=1, usd_per_hour=1.0) for m in (GPU, "T4")]
    seen = TypedViews(models, CostAwarePolicy()).add(
        views, [h.controller._config(h.job(job))], nodes)
    assert {m: o.max_gpus for m, o in seen[0].by_gpu_model.items()} == {GPU: 16, "T4": 8}
    assert seen[0].max_gpus == 16


def test_an_empty_key_is_a_one_line_config_error(tmp_path):
    h = harness(tmp_path, node("n0"))
    with pytest.raises(ConfigError, match="measurements_key"):
        h.controller.submit(keyed("bad", "  "))
