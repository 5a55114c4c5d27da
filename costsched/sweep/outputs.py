"""Sweep outputs: the results table (CSV and parquet), a Pareto plot, the best job YAML."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import yaml

from costsched.sweep.config import apply_point

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RESULT_COLUMNS = [
    "trial_id", "config", "reached_target", "usd_to_target", "final_val_accuracy",
    "best_val_accuracy", "test_accuracy", "cost_usd", "accelerator_hours", "energy_kwh",
    "num_params", "model_bytes", "flops_per_sample", "cpu_latency_ms", "epochs",
    "stop_reason", "is_baseline",
]


def rank(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials that reached the target first, cheapest first; then the rest, best accuracy first."""
    frame = frame.copy()
    frame["_reached"] = frame["reached_target"].astype(bool)
    frame["_usd"] = frame["usd_to_target"].fillna(float("inf"))
    frame = frame.sort_values(["_reached", "_usd", "best_val_accuracy"],
                              ascending=[False, True, False], kind="stable")
    return frame.drop(columns=["_reached", "_usd"]).reset_index(drop=True)


def pareto_front(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials no other trial beats on both cost (lower) and best accuracy (higher)."""
    rows = frame.sort_values(["cost_usd", "best_val_accuracy"], ascending=[True, False])
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


def pareto_figure(frame: pd.DataFrame, target: float) -> Figure:
    """Dollars spent vs best validation accuracy per trial, front joined, baseline
    marked; the legend sits right of the axes, where it can hide no trial."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), layout="constrained")
    FigureCanvasAgg(fig)  # no pyplot: no window, no global figure to close
    ax = fig.add_subplot()
    trials = frame[~frame["is_baseline"].astype(bool)]
    ax.scatter(trials["cost_usd"], trials["best_val_accuracy"], label="trials", alpha=0.7)
    front = pareto_front(frame)
    if not front.empty:
        ax.step(front["cost_usd"], front["best_val_accuracy"], where="post", color="C2",
                label="Pareto front")
    baseline = frame[frame["is_baseline"].astype(bool)]
    if not baseline.empty:
        ax.scatter(baseline["cost_usd"], baseline["best_val_accuracy"], marker="*", s=250,
                   color="C3", label="baseline (fp32, uncompressed)")
    ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("dollars spent by the trial (USD)")
    ax.set_ylabel("best validation accuracy")
    ax.set_title("Accuracy vs dollars")
    fig.legend(loc="outside right upper", fontsize="small")
    return fig


def plot_pareto(frame: pd.DataFrame, target: float, path: Path) -> Path:
    """Write :func:`pareto_figure` to ``path`` (PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pareto_figure(frame, target).savefig(path, dpi=100)
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
