"""What each (re)start of a job really costs, split by phase (pure; no Ray).

A restart (a resize, or a resume after a preemption or a failure) is paid in
seconds during which the job holds its workers, or is about to, and trains
nothing. The phases, each measured where it happens:

* ``stop``: the old run's stop request to its end (the checkpoint saved, the
  workers gone); measured by the runner that stopped it (0 for a cold start);
* ``scheduling``: the (re)start request to the run's driver running (actor
  placement, process start, runtime environment);
* ``worker_start``: the driver running to the training function entered on the
  first worker, less the driver's data preparation (Ray Train's controller and
  worker group: placement group, processes, process group);
* ``data``: the driver's data preparation, plus the function entered to its first
  forward pass less ``restore`` (building the model, the first batch);
* ``restore``: inside ``costsched.api.load_checkpoint``;
* ``first_step``: the first forward pass to the end of the first optimiser step.

Their sum is the job's restart cost; the cost-aware policy's restart penalty uses
the median of a job's measured restarts instead of a constant.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

PHASES = ("stop", "scheduling", "worker_start", "data", "restore", "first_step")
"""The phases of a restart, in the order they happen."""
PHASE_KEYS = {phase: f"restart_{phase}_s" for phase in PHASES}
"""The report key of each phase's seconds."""


@dataclass(frozen=True, kw_only=True)
class StartMarks:
    """What the driver knows of a (re)start, passed to the workers with the run."""

    requested_at: float | None = None
    """When the scheduler asked for it (None: not started by a scheduler)."""
    driver_started_at: float | None = None
    """When the run's driver began (None: the run's own start)."""
    prepare_s: float = 0.0
    """Seconds the driver spent preparing the data before starting the workers."""


def worker_phases(*, marks: StartMarks, run_started_at: float, entered_at: float,
                  restore_s: float, first_forward_at: float,
                  first_step_at: float) -> dict[str, float]:
    """The phases after ``stop``, from the driver's ``marks`` and the worker's (seconds
    since the epoch; ``restore_s`` a duration). Clocks of different hosts can disagree
    a little: a negative phase is reported as 0."""
    driver_at = marks.driver_started_at or run_started_at
    data = marks.prepare_s + first_forward_at - entered_at - restore_s
    return {
        "scheduling": max(driver_at - (marks.requested_at or driver_at), 0.0),
        "worker_start": max(entered_at - driver_at - marks.prepare_s, 0.0),
        "data": max(data, 0.0),
        "restore": max(restore_s, 0.0),
        "first_step": max(first_step_at - first_forward_at, 0.0),
    }


def phases_from_report(report: Mapping[str, object]) -> dict[str, float] | None:
    """The phases a report carries (None before the attempt's first step)."""
    out = {}
    for phase, key in PHASE_KEYS.items():
        value = report.get(key)
        if value is not None:
            try:
                out[phase] = float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return None
    return out if "first_step" in out else None


def total_s(phases: Mapping[str, float]) -> float:
    """Seconds of a restart: the sum of its phases."""
    return float(sum(phases.get(phase, 0.0) for phase in PHASES))


def restart_seconds(restarts: Iterable[Mapping[str, float]]) -> float | None:
    """The restart penalty to plan with: the median total of measured restarts (the
    ones that stopped a run first); None when the job has none yet."""
    totals = [total_s(p) for p in restarts if p.get("stop", 0.0) > 0.0]
    return statistics.median(totals) if totals else None


STOP_RESERVE_MARGIN = 1.5
"""The budget's stop reserve is this multiple of the slowest measured stop."""


def stop_reserve_s(restarts: Iterable[Mapping[str, float]], prior: float) -> float:
    """Seconds to keep in reserve for a stop (checkpoint, then the run ending) before
    a budget cap: the job's slowest measured stop (its high percentile: with the few
    stops a job has, the maximum) times :data:`STOP_RESERVE_MARGIN`; ``prior`` (the
    job's ``cost.stop_reserve_s``) until a stop is measured."""
    stops = [float(p["stop"]) for p in restarts if p.get("stop", 0.0) > 0.0]
    return STOP_RESERVE_MARGIN * max(stops) if stops else prior


def describe(phases: Mapping[str, float]) -> str:
    """One line for the job's log: ``41.2 s: stop 8.1, scheduling 0.5, ...``."""
    parts = ", ".join(f"{phase.replace('_', ' ')} {phases[phase]:.1f}"
                      for phase in PHASES if phase in phases)
    return f"{total_s(phases):.1f} s: {parts}"
