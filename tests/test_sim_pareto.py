"""The simulator's Pareto view: dollars against mean JCT per policy, restarts by app."""

from __future__ import annotations

import itertools

import pandas as pd
import pytest

from costsched.cli.main import main
from costsched.sim.pareto import pareto_frame, restarts_by_app
from tests.support.sim_fixture import FIXTURE, FIXTURE_WORKLOAD


def summary(policy: str, workload: str, *, jobs: int, jct: float, usd: float,
            restarts: int) -> dict[str, object]:
    return {"policy": policy, "workload": workload, "num_jobs": jobs, "mean_jct_s": jct,
            "cost_usd": usd, "num_restarts": restarts}


def test_the_front_is_every_policy_no_other_beats_on_both():
    runs = [summary(p, w, jobs=10, jct=jct, usd=usd, restarts=r)
            for p, w, jct, usd, r in [
                ("cheap", "w1", 900.0, 10.0, 1), ("cheap", "w2", 1100.0, 12.0, 3),
                ("fast", "w1", 400.0, 30.0, 8), ("fast", "w2", 600.0, 30.0, 12),
                ("worse", "w1", 1000.0, 35.0, 0), ("worse", "w2", 1000.0, 35.0, 0),
                ("tied", "w1", 500.0, 30.0, 0), ("tied", "w2", 500.0, 30.0, 0)]]
    frame = pareto_frame(runs).set_index("policy")
    assert frame.loc["cheap", "mean_jct_s"] == pytest.approx(1000.0)
    assert frame.loc["cheap", "cost_usd"] == pytest.approx(22.0)
    assert frame.loc["fast", "restarts_per_job"] == pytest.approx(1.0)
    # Recomputed by brute force over every pair.
    points = {p: (frame.loc[p, "cost_usd"], frame.loc[p, "mean_jct_s"]) for p in frame.index}
    dominated = {a for a, b in itertools.permutations(points, 2)
                 if points[b][0] <= points[a][0] and points[b][1] <= points[a][1]
                 and points[b] != points[a]}
    assert set(frame.index[frame["on_front"]]) == set(points) - dominated == {"cheap", "fast",
                                                                              "tied"}


def test_restarts_by_app_average_over_each_policys_jobs():
    jobs = pd.DataFrame({"policy": ["a", "a", "a", "b"], "application": ["bert", "bert", "ncf",
                                                                         "bert"],
                         "restarts": [1, 3, 0, 5]})
    table = restarts_by_app(jobs)
    assert table.loc["a", "bert"] == 2.0 and table.loc["a", "ncf"] == 0.0
    assert table.loc["b", "bert"] == 5.0 and pd.isna(table.loc["b", "ncf"])


def test_simulate_prints_and_writes_the_pareto_view(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["simulate", "--workload", str(FIXTURE_WORKLOAD), "--policy", "fifo",
                 "--policy", "cost-aware", "--nodes", "2", "--profiles", str(FIXTURE),
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Pareto front" in printed and "restarts per job, by app" in printed
    frame = pd.read_csv(out / "pareto.csv")
    assert list(frame["policy"]) == ["fifo", "cost-aware"]
    jobs = pd.concat(pd.read_csv(out / "load-1.0_workload-9" / p / "jobs.csv").assign(policy=p)
                     for p in ("fifo", "cost-aware"))
    by_policy = jobs.groupby("policy")
    for row in frame.itertuples():  # from the runs' own jobs tables
        assert row.mean_jct_s == pytest.approx(by_policy.get_group(row.policy)["jct_s"].mean())
        assert row.restarts_per_job == pytest.approx(
            by_policy.get_group(row.policy)["restarts"].mean())
    assert (out / "pareto.png").stat().st_size > 1000
    assert (out / "restarts_by_app.csv").is_file()
