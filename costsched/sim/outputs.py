"""What a simulation writes: ``summary.json``, ``jobs.csv`` and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from costsched.sim.results import SimResult

SUMMARY_KEYS = ("policy", "workload", "num_jobs", "mean_jct_s", "p50_jct_s", "p95_jct_s",
                "makespan_s", "gpu_hours", "node_hours", "cost_usd", "num_restarts")
JOB_COLUMNS = ("name", "application", "submit", "finish", "jct_s", "gpu_hours", "cost_usd",
               "restarts")
SPOT_SUMMARY_KEYS = ("spot_node_hours", "on_demand_node_hours", "num_preemptions",
                     "num_nodes_preempted", "lost_gpu_s", "num_checkpoints",
                     "checkpoint_paused_gpu_s")
"""Added to ``summary.json`` by a run with a spot pool (:mod:`~costsched.sim.spot`)."""
SPOT_JOB_COLUMNS = ("preemptions", "lost_gpu_hours")
"""Added to ``jobs.csv`` by a run with a spot pool."""


def summarise(result: SimResult, *, policy: str, workload: str) -> dict[str, object]:
    """The run in one flat record (the keys of ``summary.json``, in order)."""
    jct = np.array([job.jct_s for job in result.jobs], dtype=float)
    first = min((job.submit_s for job in result.jobs), default=0.0)
    last = max((job.finish_s for job in result.jobs), default=0.0)
    summary = {
        "policy": policy,
        "workload": workload,
        "num_jobs": len(result.jobs),
        "mean_jct_s": float(jct.mean()) if jct.size else 0.0,
        "p50_jct_s": float(np.percentile(jct, 50)) if jct.size else 0.0,
        "p95_jct_s": float(np.percentile(jct, 95)) if jct.size else 0.0,
        "makespan_s": float(last - first),
        "gpu_hours": float(sum(job.gpu_hours for job in result.jobs)),
        "node_hours": float(result.node_hours),
        "cost_usd": float(result.cost_usd),
        "num_restarts": int(sum(job.restarts for job in result.jobs)),
    }
    assert tuple(summary) == SUMMARY_KEYS
    if result.spot is not None:
        summary.update({key: getattr(result.spot, key) for key in SPOT_SUMMARY_KEYS})
    broke = sum(job.outcome == "BUDGET_EXHAUSTED" for job in result.jobs)
    if broke:  # only then, so runs without budgets write what they always did
        summary["num_budget_exhausted"] = broke
    return summary


def jobs_frame(result: SimResult) -> pd.DataFrame:
    frame = pd.DataFrame(
        [(j.name, j.application, j.submit_s, j.finish_s, j.jct_s, j.gpu_hours, j.cost_usd,
          j.restarts) for j in result.jobs],
        columns=list(JOB_COLUMNS),
    )
    if result.spot is not None:
        frame["preemptions"] = [j.preemptions for j in result.jobs]
        frame["lost_gpu_hours"] = [j.lost_gpu_hours for j in result.jobs]
    if any(j.outcome != "COMPLETED" for j in result.jobs):
        frame["outcome"] = [j.outcome for j in result.jobs]
    return frame


def intervals_frame(result: SimResult) -> pd.DataFrame:
    """One row per stretch a job held GPUs of one instance type (heterogeneous runs)."""
    return pd.DataFrame([(j.name, *row) for j in result.jobs for row in j.intervals],
                        columns=["name", "start_s", "end_s", "instance_type", "num_gpus"])


def write_run(result: SimResult, summary: Mapping[str, object], out_dir: Path) -> list[Path]:
    """Write ``summary.json``, ``jobs.csv``, ``allocation.png`` and ``cost.png`` to ``out_dir``
    (and ``intervals.csv`` when the jobs record per-type stretches)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [out_dir / "summary.json", out_dir / "jobs.csv"]
    paths[0].write_text(json.dumps(dict(summary), indent=1) + "\n")
    jobs_frame(result).to_csv(paths[1], index=False)
    if any(job.intervals for job in result.jobs):
        paths.append(out_dir / "intervals.csv")
        intervals_frame(result).to_csv(paths[-1], index=False)
    paths.append(_plot_allocation(result, out_dir / "allocation.png", str(summary["policy"])))
    paths.append(_plot_cost(result, out_dir / "cost.png", str(summary["policy"])))
    return paths


def _timeline(result: SimResult) -> np.ndarray:
    return np.array(result.timeline, dtype=float).reshape(-1, 4)


def figure(width_in: float, height_in: float) -> Figure:
    """A figure drawn straight to files: no pyplot, so no window and no global state."""
    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _plot_allocation(result: SimResult, path: Path, title: str) -> Path:
    line = _timeline(result)
    fig = figure(7, 3.5)
    ax = fig.add_subplot()
    hours = line[:, 0] / 3600
    ax.step(hours, line[:, 1], where="post", label="GPUs allocated")
    ax.set_xlabel("time (h)")
    ax.set_ylabel("GPUs allocated")
    twin = ax.twinx()
    twin.step(hours, line[:, 2], where="post", color="tab:orange", label="nodes")
    twin.set_ylabel("nodes")
    twin.set_ylim(bottom=0)
    ax.set_ylim(bottom=0)
    ax.set_title(f"{title}: GPUs allocated and nodes")
    fig.legend(loc="outside lower center", ncols=2)
    fig.savefig(path, dpi=100)
    return path


def _plot_cost(result: SimResult, path: Path, title: str) -> Path:
    line = _timeline(result)
    fig = figure(7, 3.5)
    ax = fig.add_subplot()
    ax.plot(line[:, 0] / 3600, line[:, 3])
    ax.set_xlabel("time (h)")
    ax.set_ylabel("cumulative cost (USD)")
    ax.set_title(f"{title}: cumulative dollars")
    fig.savefig(path, dpi=100)
    return path


LINESTYLES = ("-", "--", ":", "-.")
"""Cycled per policy, so policies with the same completion times stay visible."""


def jct_cdf_figure(jcts: Mapping[str, np.ndarray], workload: str) -> Figure:
    """One JCT CDF line per policy; the legend sits right of the axes, over no line."""
    fig = figure(8, 4)
    ax = fig.add_subplot()
    for i, (label, values) in enumerate(jcts.items()):
        xs = np.sort(np.asarray(values, dtype=float))
        ax.step(xs / 3600, np.arange(1, xs.size + 1) / max(xs.size, 1), where="post",
                label=label, linestyle=LINESTYLES[i % len(LINESTYLES)], linewidth=1.8)
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (h, log scale)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title(f"JCT CDF: {workload}")
    fig.legend(loc="outside right upper")
    return fig


def plot_jct_cdf(jcts: Mapping[str, np.ndarray], path: Path, workload: str) -> Path:
    """Write :func:`jct_cdf_figure` to ``path`` (PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    jct_cdf_figure(jcts, workload).savefig(path, dpi=100)
    return path
