"""Ledger reports as pandas tables (text, CSV, JSON) and plots."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from costsched.cost.forecast import live_figures, relative_error
from costsched.cost.formatting import format_local_time, format_usd
from costsched.cost.ledger import Ledger

if TYPE_CHECKING:
    from matplotlib.figure import Figure

RUN_COLUMNS = [
    "run_id", "job_name", "outcome", "instance_type", "spot", "num_intervals", "num_restarts",
    "wall_s", "accelerator_hours", "cost_usd", "lost_s", "lost_usd", "energy_kwh",
    "usd_to_target", "budget_usd", "test_accuracy",
    "forecast_s", "forecast_usd", "time_error_pct", "cost_error_pct",
]
FORECAST_COLUMNS = [
    "run_id", "made_at", "source", "at_epoch", "seconds_to_end", "usd_to_end",
    "seconds_to_target", "usd_to_target", "epochs_to_target", "target_reachable",
]
INTERVAL_COLUMNS = [
    "run_id", "attempt", "started_at", "ended_at", "num_workers", "accelerators_per_worker",
    "outcome", "accelerator_s", "cost_usd", "lost_s", "lost_usd", "energy_kwh",
]
NUMBER_SUFFIXES = ("_s", "_kwh", "_hours", "_accuracy", "_pct", "_epoch", "_target")


def intervals_frame(ledger: Ledger, run_id: str | None = None) -> pd.DataFrame:
    """One row per interval; ``started_at``/``ended_at`` in seconds since the epoch."""
    return pd.DataFrame(ledger.intervals(run_id), columns=INTERVAL_COLUMNS)


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
    frame = _with_forecast(frame, ledger)
    return frame[RUN_COLUMNS].reset_index(drop=True)


def forecast_vs_actual(run: dict[str, Any], forecast: dict[str, Any] | None,
                       ) -> dict[str, float | None]:
    """A forecast of a run (before launch, or refreshed) beside what it did: to the
    target for a run that stopped there (when the forecast had a figure for it), else to
    its last epoch. Errors are ``100 * |forecast - actual| / actual``; unknown while the
    run runs."""
    empty: dict[str, float | None] = {"forecast_s": None, "forecast_usd": None,
                                      "time_error_pct": None, "cost_error_pct": None}
    if forecast is None:
        return empty
    to_target = run["outcome"] == "TARGET_REACHED"
    if to_target and forecast["seconds_to_target"] is None:
        return empty  # it forecast no figure for the target: nothing to compare
    # To the target: its dollars as the ledger recorded them; its time to the run's
    # end, the forecast's end (test evaluation, shutdown) measured by the profile.
    seconds = (forecast["seconds_to_target"] + forecast["detail"].get("tail_s", 0.0)
               if to_target else forecast["seconds_to_end"])
    usd = forecast["usd_to_target" if to_target else "usd_to_end"]
    done = run["outcome"] in ("COMPLETED", "TARGET_REACHED")
    time_error = relative_error(seconds, run["wall_s"]) if done else None
    cost_error = relative_error(usd, run["usd_to_target" if to_target else "cost_usd"]
                                ) if done else None
    return {"forecast_s": seconds, "forecast_usd": usd,
            "time_error_pct": None if time_error is None else 100 * time_error,
            "cost_error_pct": None if cost_error is None else 100 * cost_error}


def _live_forecast(run: dict[str, Any], forecasts: list[dict[str, Any]],
                   intervals: list[dict[str, Any]]) -> dict[str, float | None]:
    """A running run's current forecast (:func:`live_figures`, as ``costsched status``
    shows it), counted from the run's start; no error yet."""
    has_target = any(f["target_reachable"] is not None for f in forecasts)
    figures = live_figures(forecasts, intervals, has_target=has_target)
    seconds = None if figures is None or figures.seconds is None else (
        figures.session_started_at - run["started_at"] + figures.seconds)
    return {"forecast_s": seconds, "forecast_usd": None if seconds is None else figures.usd,
            "time_error_pct": None, "cost_error_pct": None}


def _with_forecast(frame: pd.DataFrame, ledger: Ledger) -> pd.DataFrame:
    """Finished runs: the launch forecast and its error; running ones: their current
    forecast (their ETA and dollars, from the start of the run)."""
    launch: dict[str, dict[str, Any]] = {}
    of_run: dict[str, list[dict[str, Any]]] = {}
    for forecast in ledger.forecasts():
        if forecast["run_id"] and forecast["source"] == "profile":
            launch[forecast["run_id"]] = forecast  # the newest, if a run has several
        if forecast["run_id"]:
            of_run.setdefault(forecast["run_id"], []).append(forecast)
    rows = [_live_forecast(run, of_run.get(run["run_id"], []), ledger.intervals(run["run_id"]))
            if run["outcome"] == "RUNNING"
            else forecast_vs_actual(run, launch.get(run["run_id"]))
            for run in frame.to_dict("records")]
    return frame.assign(**{c: [r[c] for r in rows] for c in rows[0]}) if rows else frame


def forecasts_frame(ledger: Ledger, run_id: str | None = None) -> pd.DataFrame:
    """Every stored forecast (of ``run_id``): before launch and each refresh after it."""
    return pd.DataFrame(ledger.forecasts(run_id), columns=FORECAST_COLUMNS)


def _is_usd(column: str) -> bool:
    return "usd" in column.split("_")  # cost_usd, budget_usd, usd_to_target


def _table_cell(column: str, value: Any) -> Any:
    """A cell as people read it: ``*_at`` as local time, dollars by :func:`format_usd`."""
    if column.endswith("_at"):
        return format_local_time(None if pd.isna(value) else float(value))
    if _is_usd(column):
        return format_usd(None if pd.isna(value) else float(value))
    if isinstance(value, float):
        return "-" if pd.isna(value) else f"{value:.6g}"
    return "-" if value is None else value


def render(frame: pd.DataFrame, fmt: str) -> str:
    """The table as ``table`` (aligned text for people: local times, dollars to three
    significant digits, ids in full), ``csv`` or ``json`` (records, raw numbers:
    times in seconds since the epoch)."""
    if fmt == "csv":
        return frame.to_csv(index=False)
    if fmt == "json":
        return frame.to_json(orient="records", indent=2)
    if frame.empty:
        return "no runs recorded yet"
    columns = [[column] + [str(_table_cell(column, v)) for v in frame[column]]
               for column in frame.columns]
    # Numbers right-aligned, also in a column whose values are all unknown.
    numeric = [column.endswith(NUMBER_SUFFIXES) or _is_usd(column) or (
        pd.api.types.is_numeric_dtype(frame[column])
        and not pd.api.types.is_bool_dtype(frame[column])) for column in frame.columns]
    for cells, right in zip(columns, numeric, strict=True):
        width = max(map(len, cells))
        cells[:] = [cell.rjust(width) if right else cell.ljust(width) for cell in cells]
    return "\n".join("  ".join(row).rstrip() for row in zip(*columns, strict=True))


@dataclass(frozen=True)
class CostCurve:
    """A run's cumulative dollars over wall time: straight between consecutive points."""

    run_id: str
    """The run."""
    times_s: tuple[float, ...]
    """Wall-clock times, seconds since the epoch, non-decreasing."""
    usd: tuple[float, ...]
    """Dollars spent by the run up to each time."""


def _run_curve(run: dict[str, Any], intervals: list[dict[str, Any]]) -> CostCurve:
    times, usd = [min(run["started_at"], intervals[0]["started_at"])], [0.0]
    for interval in intervals:
        if interval["started_at"] > times[-1]:
            times.append(interval["started_at"])  # flat while the run held nothing
            usd.append(usd[-1])
        times.append(interval["ended_at"])  # a constant rate inside one interval
        usd.append(usd[-1] + interval["cost_usd"])
    if run["ended_at"] is not None and run["ended_at"] > times[-1]:
        times.append(run["ended_at"])
        usd.append(usd[-1])
    return CostCurve(run_id=run["run_id"], times_s=tuple(times), usd=tuple(usd))


def cumulative_cost_series(ledger: Ledger) -> list[CostCurve]:
    """Each run with intervals, its dollars from $0 at its start to its total.

    Inside an interval the run pays ``cost_usd / (ended_at - started_at)`` dollars
    per second (its workers' share of the node price, constant), so the curve is
    straight there; between intervals (queued, restarting) it is flat.
    """
    by_run: dict[str, list[dict[str, Any]]] = {}
    for interval in ledger.intervals():
        by_run.setdefault(interval["run_id"], []).append(interval)
    return [_run_curve(run, sorted(by_run[run["run_id"]], key=lambda i: i["attempt"]))
            for run in ledger.runs() if run["run_id"] in by_run]


def cost_figure(curves: list[CostCurve]) -> Figure:
    """Cumulative dollars over local wall-clock time, one line per run, the legend
    right of the axes with every run id in full."""
    import matplotlib.dates as mdates
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 4.5), layout="constrained")
    FigureCanvasAgg(fig)  # no pyplot: no window, no global figure to close
    ax = fig.add_subplot()
    for curve in curves:
        when = [datetime.fromtimestamp(t) for t in curve.times_s]
        ax.plot(when, curve.usd, marker="o", markersize=3, label=curve.run_id)
    locator = mdates.AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_xlabel("local time")
    ax.set_ylabel("cumulative cost (USD)")
    ax.set_ylim(bottom=0)
    ax.set_title("Cost per run")
    if curves:
        fig.legend(loc="outside right upper", fontsize="small",
                   ncols=1 + (len(curves) - 1) // 25)
    return fig


def plot_costs(ledger: Ledger, path: str | Path) -> Path:
    """Write :func:`cost_figure` of the ledger's runs to ``path`` (PNG)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cost_figure(cumulative_cost_series(ledger)).savefig(path, dpi=100)
    return path
