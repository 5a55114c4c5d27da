"""Sweep outputs: the results table (CSV and parquet), a Pareto plot, the best job YAML."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from costsched.cost.prices import PriceCatalog
from costsched.sweep.config import apply_point
from costsched.sweep.objective import ServingObjective, training_usd

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RESULT_COLUMNS = [
    "trial_id", "config", "reached_target", "usd_to_target", "final_val_accuracy",
    "best_val_accuracy", "test_accuracy", "cost_usd", "cap_usd", "accelerator_hours",
    "energy_kwh", "num_params", "model_bytes", "flops_per_sample", "cpu_latency_ms",
    "serving_latency_ms", "serving_usd", "total_usd", "epochs", "stop_reason", "is_baseline",
]
"""``serving_*`` and ``total_usd`` are filled only with ``objective.serving``."""


def rank(frame: pd.DataFrame, usd_column: str = "usd_to_target") -> pd.DataFrame:
    """Trials that reached the target first, cheapest by ``usd_column`` first (a trial
    without it last among them); then the rest, best accuracy first (their dollars do
    not rank them: a cheap trial that learned little is not the best so far)."""
    frame = frame.copy()
    frame["_reached"] = frame["reached_target"].astype(bool)
    frame["_usd"] = pd.to_numeric(frame[usd_column], errors="coerce").where(
        frame["_reached"]).fillna(float("inf"))
    frame = frame.sort_values(["_reached", "_usd", "best_val_accuracy"],
                              ascending=[False, True, False], kind="stable")
    return frame.drop(columns=["_reached", "_usd"]).reset_index(drop=True)


def with_serving(frame: pd.DataFrame, latency_ms: Mapping[str, float | None],
                 serving: ServingObjective, catalog: PriceCatalog) -> pd.DataFrame:
    """``frame`` with each trial's serving cost and total, ranked by the total.

        serving_usd = serving.usd(serving_latency_ms)     (measured on trained weights)
        total_usd   = training_usd + serving_usd          (dollars to target, else all spent)

    A trial with no measured latency (no checkpoint) has neither and ranks last among
    the trials that reached the target.
    """
    frame = frame.copy()
    latencies = [latency_ms.get(t) for t in frame["trial_id"]]
    serving_usd = [None if ms is None else serving.usd(catalog, ms) for ms in latencies]
    frame["serving_latency_ms"] = pd.Series(latencies, index=frame.index, dtype=float)
    frame["serving_usd"] = pd.Series(serving_usd, index=frame.index, dtype=float)
    frame["total_usd"] = pd.Series(
        [None if usd is None else training_usd(row) + usd
         for usd, (_, row) in zip(serving_usd, frame.iterrows(), strict=True)],
        index=frame.index, dtype=float)
    return rank(frame, "total_usd")


def pareto_front(frame: pd.DataFrame, usd_column: str = "cost_usd") -> pd.DataFrame:
    """Trials no other trial beats on both dollars (``usd_column``, lower) and best
    accuracy (higher); trials without dollars are left out."""
    rows = frame[pd.to_numeric(frame[usd_column], errors="coerce").notna()]
    rows = rows.sort_values([usd_column, "best_val_accuracy"], ascending=[True, False])
    front, best_acc = [], -1.0
    for _, row in rows.iterrows():
        if row["best_val_accuracy"] > best_acc:
            front.append(row)
            best_acc = row["best_val_accuracy"]
    return pd.DataFrame(front)


def write_table(frame: pd.DataFrame, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    csv, parquet = out_dir / "results.csv", out_dir / "results.parquet"
    frame.to_csv(csv, index=False)
    frame.assign(config=frame["config"].astype(str)).to_parquet(parquet, index=False)
    return csv, parquet


def pareto_figure(frame: pd.DataFrame, target: float, usd_column: str = "cost_usd") -> Figure:
    """Dollars (``usd_column``: spent, or training + serving) vs best validation accuracy
    per trial, front joined, baseline marked; the legend sits right of the axes, where
    it can hide no trial."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), layout="constrained")
    FigureCanvasAgg(fig)  # no pyplot: no window, no global figure to close
    ax = fig.add_subplot()
    trials = frame[~frame["is_baseline"].astype(bool)]
    ax.scatter(trials[usd_column], trials["best_val_accuracy"], label="trials", alpha=0.7)
    front = pareto_front(frame, usd_column)
    if not front.empty:
        ax.step(front[usd_column], front["best_val_accuracy"], where="post", color="C2",
                label="Pareto front")
    baseline = frame[frame["is_baseline"].astype(bool)]
    if not baseline.empty:
        ax.scatter(baseline[usd_column], baseline["best_val_accuracy"], marker="*", s=250,
                   color="C3", label="baseline (fp32, uncompressed)")
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("dollars spent by the trial (USD)" if usd_column == "cost_usd" else
                  "training + serving dollars (USD)")
    ax.set_ylabel("best validation accuracy")
    ax.set_title("Accuracy vs dollars")
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def plot_pareto(frame: pd.DataFrame, target: float, path: Path,
                usd_column: str = "cost_usd") -> Path:
    """Write :func:`pareto_figure` to ``path`` (PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pareto_figure(frame, target, usd_column).savefig(path, dpi=100)
    return path


def write_best_job(base: dict[str, Any], point: dict[str, Any], name: str, path: Path,
                   *, reached_target: bool = True, note: str = "") -> Path:
    """The best trial as a training-job YAML that ``costsched train`` runs as is; its
    first lines say whether it reached the sweep's target or is only the best so far."""
    job = apply_point(base, point)
    job["name"] = name
    path.parent.mkdir(parents=True, exist_ok=True)
    label = ("# Best configuration found by the sweep: the cheapest trial to reach the "
             "target.\n" if reached_target else
             "# NOT REACHED: no trial reached the sweep's target; this is the best so far "
             "(highest validation accuracy).\n")
    path.write_text(label + "".join(f"# {line}\n" for line in note.splitlines() if line)
                    + "# Run with `costsched train`.\n" + yaml.safe_dump(job, sort_keys=False))
    return path
