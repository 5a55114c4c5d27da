"""Against the real Pollux data: the las baseline must land near published Tiresias."""

from __future__ import annotations

import pytest

from costsched.sim.compare import load_published
from costsched.sim.outputs import summarise
from costsched.sim.profiles import load_profiles
from costsched.sim.workload import load_workload
from tests.support.sim_fixture import HAVE_SHARED, NO_SHARED_REASON, SHARED, simulate


@pytest.mark.skipif(not HAVE_SHARED, reason=NO_SHARED_REASON)
def test_las_matches_published_tiresias_on_workload_1():
    profiles = load_profiles(SHARED)
    jobs = load_workload(SHARED / "workloads" / "load-1.0" / "workload-1.csv")
    summary = summarise(simulate(jobs, "las", num_nodes=16, profiles=profiles),
                        policy="las", workload="load-1.0/workload-1")
    published = load_published(SHARED)["load-1.0"]["tiresias"]["workload-1"]
    assert summary["mean_jct_s"] == pytest.approx(published, rel=0.15)
