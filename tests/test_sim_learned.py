"""No oracle: the policy in simulation sees only models learned from the steps simulated."""

from __future__ import annotations

import math

import pytest

from costsched.cost.prices import load_catalog
from costsched.goodput.online import OnlineThroughput, exploration_limit
from costsched.goodput.throughput import ThroughputPoint, predict_step_time_s
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.policy.snapshot import num_gpus
from costsched.sim.simulator import SimConfig, Simulator
from costsched.sim.workload import JobSpec, load_workload
from tests.support.sim_fixture import FIXTURE_WORKLOAD, fixture_profiles


class Recorder:
    """cost-aware, recording what it was shown and what it held, round by round."""

    name = "cost-aware"

    def __init__(self) -> None:
        self.policy = CostAwarePolicy()
        self.rounds: list[tuple[dict, dict]] = []

    def decide(self, snapshot):
        views = {job.name: job for job in snapshot.jobs}
        held = {name: num_gpus(p) for name, p in snapshot.placements.items()}
        self.rounds.append((views, held))
        return self.policy.decide(snapshot)


def run(workload, *, oracle: bool, num_nodes: int = 2):
    recorder = Recorder()
    config = SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), num_nodes=num_nodes,
                       elastic=True, oracle=oracle)
    sim = Simulator(config=config, profiles=fixture_profiles(), workload=workload,
                    policy=recorder)
    return sim, sim.run(), recorder


def test_sizes_grow_at_most_double_the_largest_tried():
    sim, _, recorder = run(load_workload(FIXTURE_WORKLOAD), oracle=False)
    tried: dict[str, int] = {}
    for views, held in recorder.rounds:
        for name, count in held.items():
            tried[name] = max(tried.get(name, 0), count)
        for name, view in views.items():
            assert view.max_gpus <= max(2 * tried.get(name, 0), 1)
    assert max(tried.values()) >= 4  # it did explore past its first sizes


def test_the_learned_view_is_the_fit_to_what_the_job_ran():
    spec = JobSpec(name="solo", submit_time_s=0, application="bert", num_replicas=1,
                   batch_size=12)
    sim, result, recorder = run([spec], oracle=False, num_nodes=2)
    first_views, _ = recorder.rounds[0]
    # Before its first step the job is offered one GPU and no efficiency model.
    assert first_views["solo"].max_gpus == 1
    assert first_views["solo"].efficiency.grad_var == 0.0
    learned = sim.jobs[0].learned
    assert learned.num_points >= 2 and learned.num_fits >= 1
    for point in learned.points:  # the fit explains what was measured
        predicted = predict_step_time_s(learned.params, point.num_nodes, point.num_replicas,
                                        point.local_bsz, point.accum_steps)
        assert predicted == pytest.approx(point.step_time_s, rel=0.25)
    assert result.jobs[0].restarts >= 1  # growing to a size it learned costs restarts


def test_oracle_and_learned_runs_both_complete_and_the_oracle_is_not_slower():
    jobs = load_workload(FIXTURE_WORKLOAD)
    _, learned, _ = run(jobs, oracle=False)
    _, oracle, _ = run(jobs, oracle=True)
    mean = {name: sum(j.jct_s for j in r.jobs) / len(r.jobs)
            for name, r in (("learned", learned), ("oracle", oracle))}
    assert all(math.isfinite(v) and v > 0 for v in mean.values())
    assert mean["oracle"] <= mean["learned"] * 1.05


def test_online_model_refits_only_on_a_misprediction():
    model = OnlineThroughput()
    point = ThroughputPoint(num_nodes=1, num_replicas=1, local_bsz=16, step_time_s=0.5,
                            sync_time_s=0.0)
    assert model.record(point)  # first measurement: the prior is replaced
    assert not model.record(point)  # the same step again: nothing to learn
    far = ThroughputPoint(num_nodes=1, num_replicas=2, local_bsz=16, step_time_s=5.0,
                          sync_time_s=4.5)
    assert model.record(far) and model.most_replicas_tried == 2
    assert predict_step_time_s(model.params, 1, 2, 16) == pytest.approx(5.0, rel=0.15)


@pytest.mark.parametrize(("max_gpus", "tried", "limit"),
                         [(64, 0, 1), (64, 1, 2), (64, 3, 6), (4, 8, 4), (1, 0, 1)])
def test_exploration_limit_is_pollux_rule(max_gpus, tried, limit):
    assert exploration_limit(max_gpus, tried) == limit


def test_cli_oracle_switch_runs_the_profile_view_under_its_own_name(tmp_path, capsys):
    from costsched.cli.main import main
    from tests.support.sim_fixture import FIXTURE

    out = tmp_path / "out"
    args = ["simulate", "--workload", str(FIXTURE_WORKLOAD), "--policy", "cost-aware",
            "--policy", "las", "--nodes", "2", "--profiles", str(FIXTURE), "--out", str(out)]
    assert main(args + ["--oracle"]) == 0
    printed = capsys.readouterr().out
    assert "cost-aware (oracle) on load-1.0/workload-9" in printed
    assert "las on load-1.0/workload-9" in printed  # fixed-size policies learn nothing
    assert (out / "load-1.0_workload-9" / "cost-aware-oracle" / "summary.json").is_file()
