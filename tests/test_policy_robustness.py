"""Every policy on the live scheduler's awkward cases: slots held by work the policy does
not control, on-demand jobs next to spot nodes, elastic jobs under fixed-size policies,
and equal-priority jobs that must not take turns every round."""

from __future__ import annotations

import pytest

from costsched.policy.cost_aware import CostAwarePolicy
from costsched.policy.drive import drive
from costsched.policy.fifo import FifoPolicy
from costsched.policy.las import LasPolicy
from costsched.scheduler.interfaces import NodeRecord
from costsched.scheduler.policy_view import build_snapshot, node_views
from tests.support.policy_fakes import gpus, job

POLICIES = {"fifo": (FifoPolicy, False), "las": (LasPolicy, False),
            "cost-aware": (CostAwarePolicy, True)}


def decide(name: str, snapshot):
    """The checked decision of the policy called ``name``, as the live scheduler drives it."""
    policy, elastic = POLICIES[name]
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
