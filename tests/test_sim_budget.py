"""A simulated job's budget: it ends when its budget cannot pay another round, as the live
scheduler stops it, and its dollars stay within it (pure: small fixtures, no Ray)."""

from __future__ import annotations

import math

import pytest

from costsched.sim.outputs import jobs_frame, summarise
from costsched.sim.workload import JobSpec, load_workload
from tests.support.charges import span_usd
from tests.support.sim_fixture import simulate


def _jobs(budget: float) -> list[JobSpec]:
    return [JobSpec(name="broke", submit_time_s=0, application="bert", num_replicas=1,
                    batch_size=128, budget_usd=budget),
            JobSpec(name="free", submit_time_s=0, application="ncf", num_replicas=1,
                    batch_size=256)]


@pytest.mark.parametrize("policy", ["cost-aware", "fifo", "las"])
def test_a_job_whose_budget_runs_out_ends_and_stays_within_it(policy):
    round_usd = span_usd(0.0, 60.0, 1, "g4dn.12xlarge")  # one GPU for one round
    budget = 20.5 * round_usd  # GPU-rounds for a sliver of its work (it needs ~330)
    result = simulate(_jobs(budget), policy)
    by_name = {j.name: j for j in result.jobs}
    broke, free = by_name["broke"], by_name["free"]
    assert (broke.outcome, free.outcome) == ("BUDGET_EXHAUSTED", "COMPLETED")
    # Its dollars, recomputed from its GPU-hours at the catalog's price, within a round
    # of its budget (a policy that runs a job while it has money left may overrun by
    # that much, as the live scheduler's stop does); and it did run.
    usd = span_usd(0.0, broke.gpu_hours * 3600, 1, "g4dn.12xlarge")
    assert 0 < usd <= budget + round_usd + 1e-9
    summary = summarise(result, policy=policy, workload="w")
    assert summary["num_budget_exhausted"] == 1
    assert list(jobs_frame(result)["outcome"]) == ["BUDGET_EXHAUSTED", "COMPLETED"]


def test_runs_without_budgets_write_what_they_did(tmp_path):
    result = simulate(_jobs(math.inf), "cost-aware")
    assert all(j.outcome == "COMPLETED" for j in result.jobs)
    assert "num_budget_exhausted" not in summarise(result, policy="p", workload="w")
    assert "outcome" not in jobs_frame(result).columns


def test_a_blank_budget_cell_is_no_budget(tmp_path):
    path = tmp_path / "w.csv"
    path.write_text("name,time,application,num_replicas,batch_size,budget_usd\n"
                    "a,0,ncf,1,256,\nb,0,ncf,1,256,2.5\n")
    a, b = load_workload(path)
    assert (a.budget_usd, b.budget_usd) == (math.inf, 2.5)
