"""Every policy on the live scheduler's awkward cases: slots held by work the policy does
not control, on-demand jobs next to spot nodes, elastic jobs under fixed-size policies,
and equal-priority jobs that must not take turns every round."""

from __future__ import annotations

import dataclasses

import pytest
import yaml

from costsched.config.job import parse_job
from costsched.cost.prices import load_catalog, rate_of_job
from costsched.policy.cost_aware import CostAwarePolicy
from costsched.policy.drive import drive
from costsched.policy.fifo import FifoPolicy
from costsched.policy.hysteresis import DEFAULT_MIN_RUN_S
from costsched.policy.las import LasPolicy
from costsched.policy.snapshot import Decision
from costsched.policy.validate import InvalidDecision
from costsched.scheduler.interfaces import NodeRecord
from costsched.scheduler.policy_view import build_snapshot, job_view, node_views
from costsched.scheduler.state import JobStore
from tests.conftest import quickstart_dict
from tests.support.policy_fakes import gpus, job

POLICIES = {"fifo": (FifoPolicy, False), "las": (LasPolicy, False),
            "cost-aware": (CostAwarePolicy, True)}
# Tiresias with starvation promotion and a low first threshold (4 GPU-minutes):
# a waiting job is promoted once it has waited as long as it ran.
STARVING = {"las-starving": (lambda: LasPolicy(queue_thresholds_gpu_s=(240.0,),
                                               starvation_factor=1.0), False)}


def decide(name: str, snapshot):
    """The checked decision of the policy called ``name``, as the live scheduler drives it."""
    policy, elastic = {**POLICIES, **STARVING}[name]
    return drive(policy(), snapshot, elastic=elastic).decision


def record(node_id: str, *, total: int, free: int, spot: bool = False) -> NodeRecord:
    return NodeRecord(node_id=node_id, node_type="t", gpu_model="T4", total_slots=total,
                      free_slots=free, usd_per_hour=1.0, spot=spot)


def live_snapshot(jobs, records, placements=None, time_s: float = 1000.0):
    """A snapshot built as the controller builds it, from the cluster's node records."""
    return build_snapshot(now=time_s, round_index=0, views=jobs, nodes=node_views(records),
                          placements=placements or {}, round_s=60.0, restart_s=30.0)


def rigid(name: str, size: int, **kw):
    return job(name, min_gpus=size, max_gpus=size, requested_gpus=size, **kw)


def on_demand(view):
    return dataclasses.replace(view, on_demand=True)


def live_job(tmp_path, name: str, policy: str, *, spot: bool = False, min_workers: int = 1,
             max_workers: int = 1, per_worker: int = 1, arrival_s: float = 0.0):
    """The view of a submitted job, as the live controller builds it for ``policy``."""
    data = quickstart_dict()
    data["name"] = name
    data["cost"] = {"instance_type": "g4dn.12xlarge", "spot": spot, "budget_usd": 50.0}
    data["scaling"].update(min_workers=min_workers, max_workers=max_workers,
                           accelerators_per_worker=per_worker)
    config = parse_job(data, name)
    record = JobStore(tmp_path / "state.db").add_job(
        name=name, config_yaml=yaml.safe_dump(data), config_hash=config.config_hash(),
        priority=0, budget_usd=50.0, min_workers=min_workers, max_workers=max_workers,
        now=arrival_s)
    return job_view(record, config, 0.05, rate_of_job(config, load_catalog()),
                    elastic=POLICIES[policy][1])


def on_spot(decision, snap, name: str) -> list[str]:
    """The spot nodes ``name`` is placed on."""
    spot = {n.node_id for n in snap.nodes if n.spot}
    return sorted(n for n, c in decision.placements.get(name, {}).items() if c and n in spot)


# -- free slots ------------------------------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES)
def test_slots_held_by_other_work_are_not_handed_out(policy):
    # 4 slots, 2 of them reserved by something else (another Ray job): a 4-GPU job
    # cannot start; a 2-GPU one runs on the 2 that are free.
    snap = live_snapshot([rigid("big", 4, arrival_time_s=0), rigid("small", 2,
                          arrival_time_s=1)], [record("n0", total=4, free=2)])
    decision = decide(policy, snap)
    assert (gpus(decision, "big"), gpus(decision, "small")) == (0, 2)


@pytest.mark.parametrize("policy", POLICIES)
def test_a_running_jobs_own_slots_are_not_taken_for_outside_work(policy):
    # 4 slots, none free: 2 held by the running job, 2 by something else. The running
    # job keeps its 2; the waiting job does not get the 2 the other work holds.
    snap = live_snapshot([rigid("running", 2, arrival_time_s=0),
                          rigid("waiting", 2, arrival_time_s=1)],
                         [record("n0", total=4, free=0)], {"running": {"n0": 2}})
    decision = decide(policy, snap)
    assert decision.placements.get("running") == {"n0": 2}
    assert gpus(decision, "waiting") == 0


# -- on-demand jobs and spot nodes -----------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES)
def test_an_on_demand_job_goes_on_the_on_demand_node_and_a_spot_job_on_the_spot_one(policy):
    snap = live_snapshot([on_demand(rigid("od", 2, arrival_time_s=0)),
                          rigid("flex", 2, arrival_time_s=1)],
                         [record("s0", total=2, free=2, spot=True),
                          record("d0", total=2, free=2)])
    decision = decide(policy, snap)
    assert decision.placements["od"] == {"d0": 2}
    assert decision.placements["flex"] == {"s0": 2}


@pytest.mark.parametrize("policy", POLICIES)
def test_an_on_demand_job_waits_rather_than_run_on_spot_and_others_backfill(policy):
    snap = live_snapshot([on_demand(rigid("od", 4, arrival_time_s=0)),
                          rigid("flex", 4, arrival_time_s=1)],
                         [record("s0", total=4, free=4, spot=True)])
    decision = decide(policy, snap)
    assert gpus(decision, "od") == 0
    assert gpus(decision, "flex") == 4


@pytest.mark.parametrize("policy", POLICIES)
def test_a_running_spot_tolerant_job_moves_to_spot_to_let_an_on_demand_job_in(policy):
    # "flex" runs on the only on-demand node; a more urgent on-demand job arrives and
    # the spot node is free: flex moves to it rather than keep the on-demand node.
    snap = live_snapshot([rigid("flex", 4, arrival_time_s=0),
                          on_demand(rigid("od", 4, arrival_time_s=1, priority=1))],
                         [record("d0", total=4, free=0), record("s0", total=4, free=4,
                                                                 spot=True)],
                         {"flex": {"d0": 4}})
    decision = decide(policy, snap)
    assert decision.placements["od"] == {"d0": 4}
    assert decision.placements["flex"] == {"s0": 4}


@pytest.mark.parametrize("policy", POLICIES)
def test_a_live_job_priced_on_demand_never_lands_on_a_spot_node(policy, tmp_path):
    views = [live_job(tmp_path, "od", policy, spot=False, max_workers=4),
             live_job(tmp_path, "sp", policy, spot=True, max_workers=4, arrival_s=1.0)]
    snap = live_snapshot(views, [record("s0", total=4, free=4, spot=True),
                                 record("d0", total=2, free=2)])
    decision = decide(policy, snap)
    od, sp = (v.name for v in views)
    assert on_spot(decision, snap, od) == []
    assert gpus(decision, sp) == 4 and on_spot(decision, snap, sp) == ["s0"]


def test_a_decision_that_puts_an_on_demand_job_on_spot_is_refused():
    class Scripted:
        name = "scripted"

        def decide(self, snapshot):
            return Decision(placements={"od": {"s0": 2}}, batch_sizes={})

    snap = live_snapshot([on_demand(rigid("od", 2))], [record("s0", total=2, free=2,
                                                                spot=True)])
    with pytest.raises(InvalidDecision, match="on-demand job od placed on spot node s0"):
        drive(Scripted(), snap, elastic=True)


# -- elastic jobs under fixed-size policies ---------------------------------------------
@pytest.mark.parametrize("policy", ["fifo", "las"])
@pytest.mark.parametrize(("per_worker", "free", "started"), [(1, 2, 2), (2, 5, 4), (2, 1, 0)])
def test_fixed_size_policies_start_a_1_to_4_worker_job_on_what_is_free(
        policy, per_worker, free, started, tmp_path):
    view = live_job(tmp_path, "elastic", policy, min_workers=1, max_workers=4,
                    per_worker=per_worker)
    snap = live_snapshot([view], [record("n0", total=8, free=free)])
    assert gpus(decide(policy, snap), view.name) == started


# -- preemption ping-pong -----------------------------------------------------------------
ROUND_S = 60.0


def run_rounds(policy, jobs, rounds: int, *, start_known: bool = True, arrivals=None):
    """Drive ``policy`` round by round on one 4-GPU node as the scheduler does (service
    accrues, a placement change restarts the run); the jobs running in each round."""
    placements: dict[str, dict[str, int]] = {}
    since: dict[str, float] = {}
    attained = {j.name: j.attained_service_gpu_s for j in jobs}
    history = []
    for r in range(rounds):
        now = 1000.0 + r * ROUND_S
        views = [dataclasses.replace(j, attained_service_gpu_s=attained[j.name],
                                     running_since_s=since.get(j.name) if start_known
                                     else None)
                 for j in jobs if (arrivals or {}).get(j.name, 0) <= r]
        snap = live_snapshot(views, [record("n0", total=4, free=4)], placements, time_s=now)
        decided = {n: dict(p) for n, p in decide(policy, snap).placements.items() if p}
        for name, placement in decided.items():
            if placements.get(name) != placement:
                since[name] = now
        placements = decided
        for name, placement in placements.items():
            attained[name] += sum(placement.values()) * ROUND_S
        history.append(frozenset(placements))
    return history


def preempted_runs_s(history, name: str) -> list[float]:
    """How long each of ``name``'s runs lasted that ended with it losing its GPUs."""
    runs, length = [], 0
    for running in history:
        if name in running:
            length += 1
        elif length:
            runs.append(length * ROUND_S)
            length = 0
    return runs


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("start_known", [True, False])
def test_equal_priority_rigid_jobs_do_not_preempt_each_other_every_round(policy,
                                                                         start_known):
    history = run_rounds(policy, [rigid("a", 4, arrival_time_s=0), rigid("b", 4,
                         arrival_time_s=1)], rounds=60, start_known=start_known)
    assert all(len(running) == 1 for running in history)
    for name in ("a", "b"):
        assert all(run_s >= DEFAULT_MIN_RUN_S for run_s in preempted_runs_s(history, name))


@pytest.mark.parametrize("policy", POLICIES)
def test_no_equal_priority_job_preempts_a_run_in_its_first_minutes(policy):
    # "old" has had far more service than the new arrival, which would displace it at
    # once under las and cost-aware; it keeps its GPUs for min_run_s first.
    old = rigid("old", 4, arrival_time_s=0, attained_service_gpu_s=1e6)
    history = run_rounds(policy, [old, rigid("new", 4, arrival_time_s=5)], rounds=30,
                         arrivals={"new": 1})
    first_run_rounds = next((i for i, running in enumerate(history) if "old" not in running),
                            len(history))
    assert first_run_rounds * ROUND_S >= DEFAULT_MIN_RUN_S


@pytest.mark.parametrize("policy", POLICIES)
def test_a_higher_priority_job_still_preempts_at_once(policy):
    history = run_rounds(policy, [rigid("low", 4, arrival_time_s=0),
                                  rigid("high", 4, arrival_time_s=1, priority=1)],
                         rounds=3, arrivals={"high": 1})
    assert history == [frozenset({"low"}), frozenset({"high"}), frozenset({"high"})]


def test_las_starvation_promotion_does_not_make_jobs_take_turns_every_round():
    history = run_rounds("las-starving", [rigid("a", 4, arrival_time_s=0),
                                          rigid("b", 4, arrival_time_s=1)], rounds=60)
    for name in ("a", "b"):
        assert all(run_s >= DEFAULT_MIN_RUN_S for run_s in preempted_runs_s(history, name))
