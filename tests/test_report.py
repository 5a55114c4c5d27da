"""What people read: dollars and times in tables, the cumulative-cost curve, and plot
legends that hide no data. Ledgers are real SQLite files in ``tmp_path``."""

from __future__ import annotations

import hashlib
from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from costsched.cli.main import main as cli_main
from costsched.cost.formatting import format_duration, format_local_time, format_usd
from costsched.cost.ledger import Ledger
from costsched.cost.prices import load_catalog
from costsched.cost.report import (
    cost_figure,
    cumulative_cost_series,
    intervals_frame,
    plot_costs,
    render,
    runs_frame,
)
from costsched.sim.outputs import jct_cdf_figure
from costsched.sweep.outputs import pareto_figure

CATALOG = load_catalog()
T0 = 1_796_040_000.0  # 2026-11-30 12:00 UTC; printed as a float: 1.79604e+09
RUN_ID = hashlib.sha1(b"trial").hexdigest()  # 40 characters, like a sweep trial's run id
# (started_at, ended_at, num_workers): a gap after the first, a resize after the second.
INTERVALS = [(T0 + 10, T0 + 610, 2), (T0 + 700, T0 + 1000, 1), (T0 + 1000, T0 + 2800, 4)]


def local(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s).strftime("%Y-%m-%d %H:%M:%S")


def record(ledger: Ledger, run_id: str, intervals, *, instance_type: str, spot: bool,
           ended_at: float | None = None) -> None:
    ledger.start_run(run_id=run_id, job_name="job", config_hash="abc",
                     instance_type=instance_type, spot=spot, utilisation=0.5, budget_usd=1.0,
                     now=T0)
    for start, end, workers in intervals:
        interval = ledger.open_interval(run_id, started_at=start, num_workers=workers,
                                        accelerators_per_worker=1.0, resources={"GPU": 1.0})
        ledger.close_interval(interval, now=end, outcome="RESIZED")
    if ended_at is not None:
        ledger.finish_run(run_id, now=ended_at, outcome="COMPLETED")


@pytest.fixture
def ledger(tmp_path):
    ledger = Ledger(tmp_path / "ledger.db", CATALOG)
    record(ledger, RUN_ID, INTERVALS, instance_type="g4dn.12xlarge", spot=True,
           ended_at=T0 + 3000)
    record(ledger, "quick", [(T0 + 5, T0 + 65, 1)], instance_type="local-cpu", spot=False)
    return ledger


def usd_per_worker_s(instance_type: str, spot: bool) -> float:
    instance = CATALOG.instance(instance_type)
    node = instance.spot_usd_per_hour if spot else instance.on_demand_usd_per_hour
    return node / instance.num_gpus_per_node / 3600


# -- dollars, times, durations ----------------------------------------------------------

@pytest.mark.parametrize(("usd", "text"), [
    (0.004, "0.004"), (0.00412, "0.00412"), (0.000001234, "0.00000123"), (0.1234, "0.123"),
    (0.5, "0.50"), (0.9999, "1.00"), (12.3456, "12.35"), (1234.5, "1234.50"), (0.0, "0.00"),
    (None, "-"), (float("nan"), "-"),
])
def test_dollars_keep_three_significant_digits_under_a_dollar_and_cents_above(usd, text):
    assert format_usd(usd) == text


@pytest.mark.parametrize("usd", [3e-7, 0.004, 0.0149, 0.05, 0.333, 0.999, 1.005, 47.2])
def test_dollars_read_back_within_half_a_percent_or_half_a_cent(usd):
    assert abs(float(format_usd(usd)) - usd) <= max(0.005 * usd, 0.005 if usd >= 1 else 0)


@pytest.mark.parametrize(("seconds", "text"), [
    (3725.0, "1h02m"), (245.0, "4m05s"), (0.0, "0m00s"), (None, "-")])
def test_durations(seconds, text):
    assert format_duration(seconds) == text


def test_local_time_is_iso_ordered_to_the_second():
    assert format_local_time(T0 + 0.7) == local(T0 + 0.7)
    assert format_local_time(None) == "-"


# -- report tables -----------------------------------------------------------------------

def test_intervals_table_shows_local_times_full_ids_and_small_dollars(ledger):
    text = render(intervals_frame(ledger), "table")
    assert "e+09" not in text
    lines = text.splitlines()
    row = next(line for line in lines if RUN_ID in line)  # the whole 40-character id
    assert local(T0 + 10) in row and local(T0 + 610) in row
    quick = next(line for line in lines if line.startswith("quick"))
    # 1 local-cpu slot for 60 s is $0.000744: three digits, not 0
    assert format_usd(60 * usd_per_worker_s("local-cpu", False)) == "0.000744"
    assert "0.000744" in quick.split()


def test_cli_report_intervals_table_is_readable(ledger, capsys):
    assert cli_main(["report", "--ledger", str(ledger.path), "--intervals"]) == 0
    out = capsys.readouterr().out
    assert RUN_ID in out and local(T0 + 2800) in out and "e+09" not in out


def test_runs_table_shows_small_costs_and_unknowns_readably(ledger):
    ledger.record_target(RUN_ID, usd_to_target=0.00345)
    lines = render(runs_frame(ledger), "table").splitlines()
    quick = next(line for line in lines if line.startswith("quick"))
    assert "0.000744" in quick.split()
    # No target reached, budget, no accuracy; then no forecast: four unknowns.
    assert quick.split()[-7:] == ["-", "1.00", "-", "-", "-", "-", "-"]
    trial = next(line for line in lines if line.startswith(RUN_ID))
    assert trial.split()[-7:-4] == ["0.00345", "1.00", "-"]


def test_csv_keeps_raw_epoch_seconds_for_machines(ledger):
    back = pd.read_csv(pd.io.common.StringIO(render(intervals_frame(ledger), "csv")))
    assert back.loc[back["run_id"] == RUN_ID, "started_at"].tolist() == [
        start for start, _, _ in INTERVALS]


# -- the cumulative-cost curve ----------------------------------------------------------

def test_curve_rises_at_each_intervals_rate_and_is_flat_between(ledger):
    curves = {c.run_id: c for c in cumulative_cost_series(ledger)}
    curve = curves[RUN_ID]
    times, usd = np.array(curve.times_s), np.array(curve.usd)
    assert np.all(np.diff(times) >= 0) and (times[0], usd[0]) == (T0, 0.0)
    rate = usd_per_worker_s("g4dn.12xlarge", True)
    paid = 0.0
    for start, end, workers in INTERVALS:
        assert np.interp(start, times, usd) == pytest.approx(paid)  # flat up to the start
        middle = paid + workers * rate * (end - start) / 2
        assert np.interp((start + end) / 2, times, usd) == pytest.approx(middle)
        paid += workers * rate * (end - start)
        assert np.interp(end, times, usd) == pytest.approx(paid)
    assert np.interp(T0 + 650, times, usd) == pytest.approx(2 * rate * 600)  # the gap
    assert (times[-1], usd[-1]) == (T0 + 3000, pytest.approx(paid))  # flat to the run's end
    assert paid == pytest.approx(ledger.run_cost_usd(RUN_ID))
    quick = curves["quick"]
    assert quick.usd[-1] == pytest.approx(60 * usd_per_worker_s("local-cpu", False))


def test_plot_costs_writes_a_png_of_every_run(ledger, tmp_path):
    path = plot_costs(ledger, tmp_path / "plots" / "cost.png")
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


# -- legends hide nothing ----------------------------------------------------------------

def display_points(ax) -> np.ndarray:
    """Every marker and line vertex of ``ax``, in display pixels."""
    points = [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections]
    points += [line.get_transform().transform(line.get_xydata()) for line in ax.lines]
    return np.concatenate(points)


def assert_legend_hides_nothing(fig, margin_px: float = 8.0) -> None:
    fig.canvas.draw()
    (ax,) = fig.axes
    (legend,) = fig.legends + ([ax.get_legend()] if ax.get_legend() else [])
    box = legend.get_window_extent()
    points = display_points(ax)
    inside = ((points[:, 0] > box.x0 - margin_px) & (points[:, 0] < box.x1 + margin_px)
              & (points[:, 1] > box.y0 - margin_px) & (points[:, 1] < box.y1 + margin_px))
    assert not inside.any(), f"legend {box} covers {points[inside]}"
    assert not box.overlaps(ax.bbox), "legend drawn over the axes"
    assert fig.bbox.contains(box.x0, box.y0) and fig.bbox.contains(box.x1, box.y1)


def sweep_results() -> pd.DataFrame:
    # Corners included: an expensive weak trial lies where a lower-right legend would sit.
    rows = [("a", 0.010, 0.95, False), ("b", 0.030, 0.97, False), ("c", 0.200, 0.60, False),
            ("d", 0.190, 0.99, False), ("e", 0.001, 0.55, False), ("base", 0.050, 0.96, True)]
    return pd.DataFrame(rows, columns=["trial_id", "cost_usd", "best_val_accuracy",
                                       "is_baseline"])


def test_pareto_legend_covers_no_trial():
    assert_legend_hides_nothing(pareto_figure(sweep_results(), 0.9))


def test_cost_plot_legend_covers_no_curve(ledger):
    assert_legend_hides_nothing(cost_figure(cumulative_cost_series(ledger)))


def test_jct_cdf_legend_covers_no_line():
    rng = np.random.default_rng(0)
    jcts = {name: rng.uniform(60, 7200, size=20) for name in ("fifo", "las", "cost-aware")}
    assert_legend_hides_nothing(jct_cdf_figure(jcts, "w"))
