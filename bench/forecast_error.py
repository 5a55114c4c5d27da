"""Forecast against actual, for every finished run in a ledger that has forecasts.

For each run: the before-launch forecast (from `costsched train --dry-run`'s real
profile) against what the run did, time and dollars, to the target for a run that
stopped there, else to its last epoch; and the forecast refreshed from the run's
own learning curve a quarter of the way through it (the first refresh at or past
25% of its epochs), against the same actuals.

    python bench/forecast_error.py --ledger /tmp/fc/ledger.db
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from costsched.cost.ledger import Ledger  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.cost.report import forecast_vs_actual, runs_frame  # noqa: E402


def quarter_way(run: dict, forecasts: list[dict]) -> dict | None:
    """The first curve refresh at or past a quarter of the run's epochs."""
    history = json.loads(run["final_metrics"] or "{}").get("history", [])
    epochs = max([h.get("epoch", 0) for h in history] or [0])
    curve = [f for f in forecasts if f["source"] == "curve" and f["at_epoch"] >= epochs / 4]
    return curve[0] if curve else None


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    width = int(spec.split(".")[0]) + len(suffix)
    return f"{'-':>{width}}" if value is None or value != value else f"{value:{spec}}{suffix}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ledger", required=True)
    args = parser.parse_args()
    ledger = Ledger(args.ledger, load_catalog())
    frame = runs_frame(ledger).set_index("run_id")
    runs = {r["run_id"]: r for r in ledger.runs()}
    print(f"{'run':44} {'outcome':15} {'actual s':>9} {'fc s':>8} {'err':>6} "
          f"{'actual $':>9} {'fc $':>9} {'err':>6} | {'q-epoch':>7} {'q err s':>7} {'q err $':>7}")
    for run_id, row in frame.iterrows():
        forecasts = ledger.forecasts(run_id)
        launch = [f for f in forecasts if f["source"] == "profile"]
        if not launch or row["outcome"] not in ("COMPLETED", "TARGET_REACHED"):
            continue
        to_target = row["outcome"] == "TARGET_REACHED"
        actual_usd = row["usd_to_target"] if to_target else row["cost_usd"]
        q = quarter_way(runs[run_id], forecasts)
        # The launch comparison is the report's own (runs_frame's columns); the quarter-way
        # one by the same rules, its run's end timed by the launch profile's tail.
        q_cmp = forecast_vs_actual(row.to_dict(), q | {"detail": launch[-1]["detail"]}
                                   if q else None)
        # A launch forecast with no figure for the target (its profile had no curve) has
        # nothing to compare with a run that stopped there: its columns print "-".
        print(f"{run_id:44} {row['outcome']:15} {row['wall_s']:9.1f} "
              f"{_fmt(row['forecast_s'], '8.1f')} {_fmt(row['time_error_pct'], '5.1f', '%')} "
              f"{actual_usd:9.5f} {_fmt(row['forecast_usd'], '9.5f')} "
              f"{_fmt(row['cost_error_pct'], '5.1f', '%')} | {q['at_epoch'] if q else '-':>7} "
              + " ".join(f"{q_cmp[c]:6.1f}%" if q_cmp[c] is not None else f"{'-':>7}"
                         for c in ("time_error_pct", "cost_error_pct")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
