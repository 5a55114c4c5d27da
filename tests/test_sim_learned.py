"""No oracle: the policy in simulation sees only models learned from the steps simulated."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from costsched.cli.main import main
from costsched.cost.prices import load_catalog
from costsched.errors import ConfigError
from costsched.goodput.online import (
    EXPLORATION_FACTOR,
    FIRST_GPUS,
    OnlineThroughput,
    exploration_limit,
    first_gpus,
)
from costsched.goodput.throughput import ThroughputPoint, predict_step_time_s
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.policy.snapshot import num_gpus
from costsched.sim.simulator import SimConfig, Simulator
from costsched.sim.workload import JobSpec, load_workload
from tests.support.sim_fixture import FIXTURE, FIXTURE_WORKLOAD, fixture_profiles


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


def run(workload, *, oracle: bool, num_nodes: int = 2, explore_factor: int = EXPLORATION_FACTOR,
        **config):
    recorder = Recorder()
    config = SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), num_nodes=num_nodes,
                       elastic=True, oracle=oracle, explore_factor=explore_factor, **config)
    sim = Simulator(config=config, profiles=fixture_profiles(), workload=workload,
                    policy=recorder)
    return sim, sim.run(), recorder


@pytest.mark.parametrize("factor", [2, EXPLORATION_FACTOR])
def test_sizes_grow_at_most_the_factor_times_the_largest_tried(factor):
    sim, _, recorder = run(load_workload(FIXTURE_WORKLOAD), oracle=False, explore_factor=factor)
    tried: dict[str, int] = {}
    offered_past_double = False
    for views, held in recorder.rounds:
        for name, count in held.items():
            tried[name] = max(tried.get(name, 0), count)
        for name, view in views.items():
            if not tried.get(name):  # never run: what its user asked for, up to a node
                assert view.max_gpus <= first_gpus(view.requested_gpus) <= FIRST_GPUS
                continue
            assert view.max_gpus <= factor * tried[name]
            offered_past_double |= view.max_gpus > 2 * tried[name]
    assert max(tried.values()) >= 4  # it did explore past its first sizes
    assert offered_past_double == (factor > 2)  # the setting, not a global, decides


def test_the_learned_view_is_the_fit_to_what_the_job_ran():
    spec = JobSpec(name="solo", submit_time_s=0, application="bert", num_replicas=1,
                   batch_size=12)
    sim, result, recorder = run([spec], oracle=False, num_nodes=2)
    first_views, _ = recorder.rounds[0]
    # Before its first step the job is offered what its user asked for (one GPU) and
    # no efficiency model.
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


@pytest.mark.parametrize(("max_gpus", "tried", "limit"), [
    (64, 0, FIRST_GPUS), (64, 1, EXPLORATION_FACTOR), (64, 3, 3 * EXPLORATION_FACTOR),
    (4, 8, 4), (1, 0, 1), (2 * EXPLORATION_FACTOR, 4, 2 * EXPLORATION_FACTOR)])
def test_exploration_limit_is_the_factor_times_the_most_tried(max_gpus, tried, limit):
    assert exploration_limit(max_gpus, tried) == limit


@pytest.mark.parametrize(("requested", "first"), [(1, 1), (2, 2), (3, 3), (8, FIRST_GPUS)])
def test_a_new_job_is_first_offered_what_its_user_asked_for_up_to_one_node(requested, first):
    spec = JobSpec(name="new", submit_time_s=0, application="bert",
                   num_replicas=requested, batch_size=12)
    _, _, recorder = run([spec], oracle=False, num_nodes=4)
    assert recorder.rounds[0][0]["new"].max_gpus == first == first_gpus(requested)


@pytest.mark.parametrize("tell", [True, False])
def test_a_job_tells_the_policy_the_work_it_has_left_unless_the_run_hides_it(tell):
    spec = JobSpec(name="solo", submit_time_s=0, application="bert", num_replicas=2,
                   batch_size=12)
    _, result, recorder = run([spec], oracle=False, tell_remaining_work=tell)
    left = [views["solo"].remaining_work for views, _ in recorder.rounds]
    if not tell:
        assert left == [None] * len(left)
        return
    # Starts at the app's whole work (its last epoch's progress), falls every round (it
    # trains from the first), and at the last decision is less than two rounds' mean work.
    assert left[0] == pytest.approx(fixture_profiles()["bert"].target_progress)
    assert all(later < earlier for earlier, later in itertools.pairwise(left))
    assert 0 < left[-1] < left[0] / len(left) * 2


def test_a_job_can_tell_its_work_left_only_while_it_runs_as_a_live_run_does():
    # Three two-GPU asks on one 4-GPU node: one waits at first. Told only while running,
    # a job's work left is known exactly in the rounds it holds GPUs (it was measured in
    # its first round; a 30 s restart ends within a 60 s round). With 150 s restarts a
    # job that was just placed is still restoring at the next decision: unknown then.
    specs = [JobSpec(name=f"j{i}", submit_time_s=0, application="bert", num_replicas=2,
                     batch_size=12) for i in range(3)]

    def told(recorder) -> set[tuple[bool, bool]]:
        return {(held.get(name, 0) > 0, view.remaining_work is not None)
                for views, held in recorder.rounds for name, view in views.items()}

    _, _, recorder = run(specs, oracle=False, num_nodes=1, remaining_work_while_running=True)
    assert told(recorder) == {(False, False), (True, True)}
    _, _, slow = run(specs, oracle=False, num_nodes=1, remaining_work_while_running=True,
                     restart_s=150.0)
    assert told(slow) == {(False, False), (True, False), (True, True)}
    _, _, always = run(specs, oracle=False, num_nodes=1)
    assert told(always) == {(False, True), (True, True)}


@pytest.mark.parametrize("oracle", [False, True])
def test_told_while_running_means_holding_gpus_measured_and_not_restoring(oracle):
    spec = JobSpec(name="j", submit_time_s=0, application="bert", num_replicas=2,
                   batch_size=12)
    config = SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), num_nodes=1,
                       elastic=True, oracle=oracle, remaining_work_while_running=True)
    sim = Simulator(config=config, profiles=fixture_profiles(), workload=[spec],
                    policy=CostAwarePolicy())
    job = sim.jobs[0]
    assert (job.learned is None) == oracle  # the oracle measures nothing: not needed then

    def told(placement, restart_left_s, measured) -> bool:
        job.placement, job.restart_left_s, job.measured_batch_size = (
            placement, restart_left_s, measured)
        return sim._view(job, 0.0).remaining_work is not None

    assert told({"n0": 2}, 0.0, 12)
    assert not told({}, 0.0, 12)  # waiting
    assert not told({"n0": 2}, 30.0, 12)  # restoring from a placement change
    assert told({"n0": 2}, 0.0, 0) == oracle  # not yet measured


def test_pollux_rule_starts_a_job_on_one_gpu_and_doubles():
    assert [exploration_limit(64, tried, factor=2, first=1) for tried in (0, 1, 2, 8)] == [
        1, 2, 4, 16]
    with pytest.raises(ValueError, match="at least 1"):
        exploration_limit(64, 0, first=0)
    assert (first_gpus(0), first_gpus(16)) == (1, FIRST_GPUS)  # asked for none: one GPU


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


def test_cli_can_hide_the_work_left_and_the_run_is_named_apart_and_slower(tmp_path, capsys):
    # On three nodes the fixture's jobs compete for spare GPUs: weighed by the service
    # they have had instead of the work they have left, they finish later on average.
    args = ["simulate", "--workload", str(FIXTURE_WORKLOAD), "--policy", "cost-aware",
            "--policy", "las", "--nodes", "3", "--profiles", str(FIXTURE), "--out",
            str(tmp_path)]
    assert main(args) == 0 and main(args + ["--hide-remaining-work"]) == 0
    printed = capsys.readouterr().out
    assert "cost-aware (work hidden) on load-1.0/workload-9" in printed
    assert "las on load-1.0/workload-9" in printed  # fixed-size policies weigh nothing
    run = tmp_path / "load-1.0_workload-9"
    told, hidden = (json.loads((run / name / "summary.json").read_text())["mean_jct_s"]
                    for name in ("cost-aware", "cost-aware-work-hidden"))
    assert told < hidden


def test_cli_can_tell_the_work_left_only_while_a_job_runs(tmp_path, capsys):
    args = ["simulate", "--workload", str(FIXTURE_WORKLOAD), "--policy", "cost-aware",
            "--nodes", "3", "--profiles", str(FIXTURE), "--out", str(tmp_path)]
    assert main(args + ["--remaining-work-while-running"]) == 0
    assert "cost-aware (work told while running) on load-1.0/workload-9" in (
        capsys.readouterr().out)
    summary = tmp_path / "load-1.0_workload-9" / "cost-aware-work-told-while-running"
    assert (summary / "summary.json").is_file()
    with pytest.raises(SystemExit):  # one or the other
        main(args + ["--remaining-work-while-running", "--hide-remaining-work"])
    assert "not allowed with argument" in capsys.readouterr().err


def solo_ncf(first_measure_s: float, batch_size: int = 256):
    """A lone ncf job, learning: its result and the batches it measured in its first round."""
    spec = JobSpec(name="solo", submit_time_s=0, application="ncf", num_replicas=1,
                   batch_size=batch_size)
    config = SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), num_nodes=1,
                       elastic=True, first_measure_s=first_measure_s)
    sim = Simulator(config=config, profiles=fixture_profiles(), workload=[spec],
                    policy=CostAwarePolicy())
    first_round: list[float] = []

    def after_round(time_s, done, total):
        if not first_round:
            first_round.extend(p.local_bsz * p.accum_steps for p in sim.jobs[0].learned.points)

    return sim.run(after_round), first_round


def test_a_new_job_rechooses_its_batch_after_its_first_measured_steps():
    # Its first round starts at the batch its user asked for, here the smallest (no noise
    # scale yet); ten seconds of steps measure the noise, and it goes on at a larger batch
    # on the same GPU, with no restart, instead of waiting a round for the next decision.
    result, batches = solo_ncf(10.0)
    never, batches_never = solo_ncf(1000.0)  # past the round: measured at its end only
    assert len(batches_never) == 1 and len(batches) == 2
    assert batches_never[0] in batches and max(batches) > batches_never[0]
    assert result.jobs[0].restarts == never.jobs[0].restarts
    assert result.jobs[0].jct_s < never.jobs[0].jct_s


def test_before_its_first_measurement_a_job_runs_at_the_batch_its_user_asked_for():
    # With no noise measured, the policy's flat efficiency would pick the app's smallest
    # batch (256 for ncf); a live job runs at its configured batch, and so does this one.
    result, batches = solo_ncf(10.0, batch_size=4096)
    smallest, _ = solo_ncf(10.0, batch_size=256)
    assert batches[0] == 4096
    assert result.jobs[0].jct_s < smallest.jobs[0].jct_s


def test_first_measure_s_must_not_be_negative():
    with pytest.raises(ConfigError, match="first_measure_s"):
        SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), first_measure_s=-1.0)


def test_the_exploration_factor_must_be_at_least_one():
    with pytest.raises(ConfigError, match="explore_factor"):
        SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), explore_factor=0)


def test_simulate_help_states_the_default_exploration_factor(capsys):
    # What a user reads in `costsched simulate --help` is the simulator's default.
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--explore-factor F without --oracle" in help_text
    assert f"(default {EXPLORATION_FACTOR}; Pollux's rule is 2)" in help_text


def test_a_bad_explore_factor_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["simulate", "--workload", str(FIXTURE_WORKLOAD), "--profiles", str(FIXTURE),
                 "--out", str(out), "--explore-factor", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--explore-factor wants" in err[0]
    assert not out.exists()
