"""The simulator on the small fixture: timings we can compute by hand, outputs, the CLI."""

from __future__ import annotations

import itertools
import json

import pytest

from costsched.cli.main import main
from costsched.cost.prices import load_catalog
from costsched.policy.registry import make_policy
from costsched.sim.outputs import JOB_COLUMNS, SUMMARY_KEYS, summarise
from costsched.sim.simulator import SimConfig, Simulator
from costsched.sim.workload import JobSpec, load_workload
from tests.support.sim_fixture import (
    FIXTURE,
    FIXTURE_WORKLOAD,
    Recorder,
    fixture_profiles,
    simulate,
)


def test_a_lone_job_takes_restart_plus_measured_steps():
    ncf = fixture_profiles()["ncf"]
    spec = JobSpec(name="solo", submit_time_s=0, application="ncf", num_replicas=1,
                   batch_size=256)
    result = simulate([spec], "fifo", num_nodes=1)
    step_s = ncf.step_time_s((1,), 256)[0]
    # At the initial batch each step makes exactly one step of progress.
    assert result.jobs[0].jct_s == pytest.approx(30.0 + ncf.target_progress * step_s)
    assert result.node_hours == pytest.approx(result.jobs[0].finish_s / 3600)
    assert result.cost_usd == pytest.approx(result.node_hours * 3.912)


def test_a_job_waits_for_the_next_round():
    spec = JobSpec(name="late", submit_time_s=61, application="ncf", num_replicas=1,
                   batch_size=256)
    early = JobSpec(name="early", submit_time_s=0, application="ncf", num_replicas=1,
                    batch_size=256)
    late, solo = simulate([spec], "fifo", num_nodes=1), simulate([early], "fifo", num_nodes=1)
    assert late.jobs[0].finish_s == pytest.approx(solo.jobs[0].finish_s + 120)


@pytest.mark.parametrize("policy", ["fifo", "las", "cost-aware"])
def test_every_policy_completes_the_fixture_workload(policy):
    jobs = load_workload(FIXTURE_WORKLOAD)
    result = simulate(jobs, policy)
    assert [r.name for r in result.jobs] == [j.name for j in jobs]
    assert all(r.finish_s > r.submit_s for r in result.jobs)
    summary = summarise(result, policy=policy, workload="w")
    assert tuple(summary) == SUMMARY_KEYS and summary["num_jobs"] == len(jobs)


def test_elastic_policy_beats_fixed_sizes_on_the_fixture():
    jobs = load_workload(FIXTURE_WORKLOAD)
    fixed = summarise(simulate(jobs, "las"), policy="las", workload="w")
    elastic = summarise(simulate(jobs, "cost-aware"), policy="cost-aware", workload="w")
    assert elastic["mean_jct_s"] < fixed["mean_jct_s"]


def test_cli_writes_summary_jobs_and_plots(tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["simulate", "--workload", str(FIXTURE_WORKLOAD), "--policy", "fifo",
                 "--policy", "cost-aware", "--nodes", "2", "--profiles", str(FIXTURE),
                 "--out", str(out)])
    assert code == 0
    run_dir = out / "load-1.0_workload-9" / "cost-aware"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert tuple(summary) == SUMMARY_KEYS and summary["policy"] == "cost-aware"
    header = (run_dir / "jobs.csv").read_text().splitlines()[0]
    assert tuple(header.split(",")) == JOB_COLUMNS
    for png in ("allocation.png", "cost.png"):
        assert (run_dir / png).stat().st_size > 1000
    assert (out / "load-1.0_workload-9" / "jct_cdf.png").is_file()
    printed = capsys.readouterr().out
    assert "mean_jct_s" in printed and "fifo" in printed


def test_cli_user_errors_exit_nonzero_in_one_line(tmp_path, capsys):
    code = main(["simulate", "--workload", str(tmp_path / "missing.csv"),
                 "--profiles", str(FIXTURE), "--out", str(tmp_path)])
    assert code != 0
    assert "no workload file" in capsys.readouterr().err
    code = main(["simulate", "--workload", str(FIXTURE_WORKLOAD), "--autoscale", "9",
                 "--profiles", str(FIXTURE), "--out", str(tmp_path)])
    assert code == 2


def test_a_fixed_size_job_larger_than_the_cluster_is_a_config_error():
    from costsched.errors import ConfigError

    huge = JobSpec(name="huge", submit_time_s=0, application="ncf", num_replicas=9,
                   batch_size=256)
    with pytest.raises(ConfigError, match="never run"):
        simulate([huge], "las", num_nodes=2)
    assert simulate([huge], "cost-aware", num_nodes=2).jobs[0].finish_s > 0


@pytest.mark.parametrize("policy", ["cost-aware", "las"])
def test_the_policy_sees_when_each_run_began_as_the_live_scheduler_shows_it(policy):
    """The simulator tells the policy when each running job's current run began (its last
    placement change), and nothing for a waiting one, as the live scheduler does
    (``running_since_s``), so the policy's hysteresis (``min_run_s``) acts in simulation
    too. Checked against the placements the policy saw round by round; las preempts, so
    some jobs wait after having run."""
    recorder = Recorder(make_policy(policy))
    config = SimConfig(instance=load_catalog().instance("g4dn.12xlarge"), num_nodes=2,
                       elastic=policy == "cost-aware")
    Simulator(config=config, profiles=fixture_profiles(), workload=load_workload(FIXTURE_WORKLOAD),
              policy=recorder).run()
    since: dict[str, float] = {}
    held: dict[str, dict] = {}
    checked = restarted = waited = 0
    for (snapshot, _), (after, _) in itertools.pairwise(recorder.rounds):
        for name, placement in after.placements.items():  # decided at ``snapshot``'s time
            if held.get(name) != placement:
                restarted += name in since  # a resize, move or resume: a new run
                since[name] = snapshot.time_s
        held = dict(after.placements)
        for view in after.jobs:
            if after.placements.get(view.name):
                assert view.running_since_s == pytest.approx(since[view.name]), view.name
                checked += 1
            else:  # waiting: no run, as the live scheduler shows it
                assert view.running_since_s is None, view.name
                waited += view.name in since
    assert checked > 20 and restarted > 0 and (waited > 0 or policy != "las")
