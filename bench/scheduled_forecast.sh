#!/bin/bash
# Launch forecasts of scheduled jobs against what the runs did, on one machine.
#
# A fresh local Ray (two emulated slots) under a throwaway HOME; a dry run of the
# quickstart stores its profile; the local scheduler runs the quickstart at its
# profiled size (2 workers), then, once that ended, submitted again at 1 worker. Prints
# `costsched report` and the forecasts of the scheduler's ledger, and the errors by
# bench/forecast_error.py. About 5 minutes. Needs port 6379 free (stops that Ray at the end).
#
#     bash bench/scheduled_forecast.sh
set -u
cd "$(dirname "$0")/.."
export HOME=$(mktemp -d /tmp/costsched-scheduled-forecast.XXXXXX)
echo "home $HOME"; uptime
ray start --head --resources '{"cpu_slot": 2}' --num-cpus 2 --disable-usage-stats \
    > "$HOME/ray.log" 2>&1 || { cat "$HOME/ray.log"; exit 1; }
trap 'ray stop --force > /dev/null 2>&1' EXIT
export RAY_ADDRESS=127.0.0.1:6379
sed "s#~/.costsched/ledger.db#$HOME/.costsched/own-ledger.db#" configs/quickstart.yaml \
    > "$HOME/quickstart.yaml"
echo "== dry run"; costsched train "$HOME/quickstart.yaml" --dry-run 2>&1 | tail -5
costsched scheduler start --config configs/scheduler_local.yaml 2>&1 | tail -1
STATE="$HOME/.costsched/local/scheduler.db"
wait_done() {
  # The scheduler's state file, read directly: a CLI call every few seconds loads the machine.
  for _ in $(seq 1 200); do
    sleep 10
    st=$(python3 -c "import sqlite3; print(sqlite3.connect('$STATE').execute(
        \"select state from jobs where job_id='$1'\").fetchone()[0])")
    case "$st" in COMPLETED|TARGET_REACHED|FAILED|CANCELLED|BUDGET_EXHAUSTED)
      echo "$1 $st"; return;; esac
  done
  echo "$1 did not end"
}
echo "== at 2 workers (as profiled)"; a=$(costsched submit "$HOME/quickstart.yaml"); wait_done "$a"
echo "== at 1 worker"
b=$(costsched submit "$HOME/quickstart.yaml" --min-workers 1 --max-workers 1); wait_done "$b"
LEDGER="$HOME/.costsched/local/ledger.db"
costsched report --ledger "$LEDGER"
costsched report --ledger "$LEDGER" --forecasts
python bench/forecast_error.py --ledger "$LEDGER"
costsched scheduler stop 2>&1 | tail -1
