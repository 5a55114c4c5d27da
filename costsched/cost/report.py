"""Ledger reports as pandas tables (text, CSV, JSON) and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from costsched.cost.ledger import Ledger

RUN_COLUMNS = [
    "run_id", "job_name", "outcome", "instance_type", "spot", "num_intervals", "num_restarts",
    "wall_s", "accelerator_hours", "cost_usd", "lost_s", "lost_usd", "energy_kwh",
    "usd_to_target", "budget_usd", "test_accuracy",
]


def intervals_frame(ledger: Ledger, run_id: str | None = None) -> pd.DataFrame:
    rows = ledger.intervals(run_id)
    columns = ["run_id", "attempt", "started_at", "ended_at", "num_workers",
               "accelerators_per_worker", "outcome", "accelerator_s", "cost_usd",
               "lost_s", "lost_usd", "energy_kwh"]
    return pd.DataFrame(rows, columns=columns)


def runs_frame(ledger: Ledger) -> pd.DataFrame:
    """One row per run: its intervals summed, outcome, dollars to target."""
    runs = pd.DataFrame(ledger.runs())
    if runs.empty:
        return pd.DataFrame(columns=RUN_COLUMNS)
    intervals = intervals_frame(ledger)
    totals = intervals.groupby("run_id").agg(
        num_intervals=("attempt", "count"),
        accelerator_s=("accelerator_s", "sum"),
        cost_usd=("cost_usd", "sum"),
        lost_s=("lost_s", "sum"),
        lost_usd=("lost_usd", "sum"),
        energy_kwh=("energy_kwh", "sum"),
        first_start=("started_at", "min"),
        last_end=("ended_at", "max"),
    )
    frame = runs.merge(totals, left_on="run_id", right_index=True, how="left")
    frame["num_intervals"] = frame["num_intervals"].fillna(0).astype(int)
    frame["num_restarts"] = (frame["num_intervals"] - 1).clip(lower=0)
    frame["accelerator_hours"] = frame["accelerator_s"].fillna(0.0) / 3600.0
    frame["wall_s"] = frame["ended_at"].fillna(frame["last_end"]) - frame["started_at"]
    frame["spot"] = frame["spot"].astype(bool)
    frame["test_accuracy"] = [
        json.loads(m).get("test_accuracy") if isinstance(m, str) else None
        for m in frame["final_metrics"]
    ]
    for column in ("cost_usd", "lost_s", "lost_usd", "energy_kwh"):
        frame[column] = frame[column].fillna(0.0)
    return frame[RUN_COLUMNS].reset_index(drop=True)


def render(frame: pd.DataFrame, fmt: str) -> str:
    """The table as ``table`` (aligned text), ``csv`` or ``json`` (records)."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2)
    if frame.empty:
        return "no runs recorded yet"
    return frame.to_string(index=False, float_format=lambda v: f"{v:.6g}")


def plot_costs(ledger: Ledger, path: str | Path) -> Path:
    """Cumulative dollars over wall time, one line per run (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    intervals = intervals_frame(ledger)
    fig, ax = plt.subplots(figsize=(7, 4))
    for run_id, group in intervals.groupby("run_id"):
        t0 = group["started_at"].min()
        xs = [0.0] + list(group["ended_at"] - t0)
        ys = [0.0] + list(group["cost_usd"].cumsum())
        ax.step(xs, ys, where="post", label=str(run_id)[:24])
    ax.set_xlabel("seconds since run start")
    ax.set_ylabel("cumulative cost (USD)")
    ax.set_title("Cost per run")
    if not intervals.empty:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
