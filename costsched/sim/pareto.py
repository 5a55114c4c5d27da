"""Dollars against mean JCT per policy, side by side (a Pareto view), and restarts by app.

A policy is on the front when no other policy is at most as dear and at most as slow,
and strictly better on one of the two. Figures are over every workload a policy ran:
mean JCT over all its jobs, dollars summed, restarts per job.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from costsched.sim.outputs import figure

PARETO_COLUMNS = ("policy", "workloads", "num_jobs", "mean_jct_s", "cost_usd",
                  "usd_per_job", "restarts_per_job", "on_front")


def pareto_frame(summaries: Sequence[Mapping[str, object]]) -> pd.DataFrame:
    """One row per policy over the workloads it ran, the front marked."""
    rows = []
    frame = pd.DataFrame(list(summaries))
    if frame.empty:
        return pd.DataFrame(columns=list(PARETO_COLUMNS))
    for policy, runs in frame.groupby("policy", sort=False):
        jobs = runs["num_jobs"].astype(float)
        num_jobs = int(jobs.sum())
        rows.append({
            "policy": policy, "workloads": len(runs), "num_jobs": num_jobs,
            "mean_jct_s": float((runs["mean_jct_s"] * jobs).sum() / max(num_jobs, 1)),
            "cost_usd": float(runs["cost_usd"].sum()),
            "usd_per_job": float(runs["cost_usd"].sum() / max(num_jobs, 1)),
            "restarts_per_job": float(runs["num_restarts"].sum() / max(num_jobs, 1)),
        })
    out = pd.DataFrame(rows)
    out["on_front"] = [on_front(r, out) for r in out.itertuples()]
    return out[list(PARETO_COLUMNS)]


def on_front(row, frame: pd.DataFrame) -> bool:
    """Whether no other policy dominates ``row`` (cheaper or equal, faster or equal, and
    strictly better on one)."""
    for other in frame.itertuples():
        if other.policy == row.policy:
            continue
        if (other.cost_usd <= row.cost_usd and other.mean_jct_s <= row.mean_jct_s
                and (other.cost_usd < row.cost_usd or other.mean_jct_s < row.mean_jct_s)):
            return False
    return True


def restarts_by_app(jobs: pd.DataFrame) -> pd.DataFrame:
    """Restarts per job, by policy (rows) and app (columns), from the runs' jobs tables
    (``jobs.csv`` rows with a ``policy`` column added)."""
    if jobs.empty:
        return pd.DataFrame()
    table = jobs.pivot_table(index="policy", columns="application", values="restarts",
                             aggfunc="mean", sort=False)
    return table.round(2)


def plot_pareto(frame: pd.DataFrame, path: Path) -> Path:
    """Dollars (x) against mean JCT (y), one labelled point per policy, the front joined."""
    fig = figure(6.0, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    ax.scatter(frame["cost_usd"], frame["mean_jct_s"] / 3600.0, color="tab:blue")
    for row in frame.itertuples():
        ax.annotate(str(row.policy), (row.cost_usd, row.mean_jct_s / 3600.0), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    front = frame[frame["on_front"]].sort_values("cost_usd")
    ax.plot(front["cost_usd"], front["mean_jct_s"] / 3600.0, color="tab:orange",
            label="Pareto front")
    ax.set_xlabel("dollars (all workloads)")
    ax.set_ylabel("mean JCT (h)")
    ax.legend(loc="best", fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def write_pareto(summaries: Sequence[Mapping[str, object]], jobs: pd.DataFrame,
                 out: Path) -> str:
    """Write ``pareto.csv``, ``restarts_by_app.csv`` and ``pareto.png`` under ``out``;
    return both tables as text to print."""
    frame = pareto_frame(summaries)
    by_app = restarts_by_app(jobs)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "pareto.csv", index=False)
    by_app.to_csv(out / "restarts_by_app.csv")
    if not frame.empty:
        plot_pareto(frame, out / "pareto.png")
    shown = frame.assign(mean_jct_s=frame["mean_jct_s"].round(0),
                         cost_usd=frame["cost_usd"].round(2),
                         usd_per_job=frame["usd_per_job"].round(2),
                         restarts_per_job=frame["restarts_per_job"].round(2))
    text = "dollars vs mean JCT (all workloads; * on the Pareto front):\n"
    text += shown.assign(on_front=shown["on_front"].map({True: "*", False: ""})).to_string(
        index=False)
    if not by_app.empty:
        text += "\nrestarts per job, by app:\n" + by_app.to_string()
    return text
