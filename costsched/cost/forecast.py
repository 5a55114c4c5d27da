"""Forecasts of a run's time and dollars, from real measurements (pure; no Ray).

Two sources, both measured on the job's own resources:

* A **profile**: a short real run of the job (:mod:`costsched.ray_layer.train.profile`)
  measures its start-up, the seconds of one training step and what each epoch adds
  besides its steps (validation, the epoch-end checkpoint). A run of ``E`` epochs of
  ``S`` steps then takes::

      seconds_to_end = start_up_s + E * (S * step_s + epoch_overhead_s) + tail_s

  and costs ``rate.usd(W, seconds_to_end)``, the ledger's own charge for ``W``
  workers held that long.
* A **learning curve**: a saturating power law fitted to the run's validation
  accuracy per epoch (:func:`fit_curve`) says at which epoch it reaches its target;
  the epoch time turns that into seconds and dollars to target. Refreshed at each
  epoch of a live run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from costsched.cost.formatting import format_usd
from costsched.cost.prices import JobRate

if TYPE_CHECKING:
    from costsched.config.job import JobConfig

MIN_CURVE_POINTS = 3
"""Epochs of validation accuracy needed before a curve is fitted."""
MAX_TARGET_EPOCHS = 10_000
"""Beyond this many epochs the target counts as out of reach."""
_EXPONENTS = np.geomspace(0.3, 1.0, 24)
"""Exponents tried. A wider range (0.05-4) let three noisy epochs bend the curve
flat just below the target (see :data:`CEILING_PRIOR_WEIGHT`)."""
CEILING_PRIOR_WEIGHT = 0.2
"""Weight of one pseudo-point that puts the ceiling at 1, against the epochs' weights
(epoch e weighs e): 0.2 against 6 after three epochs, fading as epochs come in.
Without it, three epochs like 0.80, 0.94, 0.95 (the sweep base job, a noise dip on
the third) fit a ceiling of 0.948 and the dry run called 0.95 out of reach; the run
reached it at epoch 4. Both constants were chosen on three measured curves (the
quickstart, the sweep base job and hard MNIST-1D; nine targets the runs reached,
fitted to their first 3 epochs and to a quarter and a half of the way, 12 cases):
"out of reach" for a target the run did reach fell from 7 of 12 to 3, the median
error of the epoch to the target from 44% to 29% (`python bench/curve_fit.py`)."""
MIN_PROFILE_STEPS = 100
"""Fewest steps per profiled epoch (when the job's epoch has as many)."""


@dataclass(frozen=True, kw_only=True)
class RunProfile:
    """What a short real run of a job measured on its target resources."""

    num_workers: int
    """Workers the profile ran with (the job's maximum)."""
    start_up_s: float
    """Seconds from the run's start (the ledger's first charged second) until its
    steady pace: worker start-up, data loading, first-step warm-up."""
    step_s: float
    """Seconds per training step at the steady pace, its periodic checkpoints included."""
    epoch_overhead_s: float
    """Seconds each epoch adds besides its steps: validation and the epoch-end report."""
    tail_s: float
    """Seconds after the last epoch's report until the run's charges end (test
    evaluation, final report, shutdown)."""
    profiled_s: float
    """Wall seconds the profile itself ran (what it cost to measure)."""
    val_accuracy: tuple[float, ...] = ()
    """Validation accuracy after each profiled epoch (the curve's first points)."""
    step: Mapping[str, float] = field(default_factory=dict)
    """Its last step measurement as the run reported it (``num_workers``, ``num_nodes``,
    ``local_bsz``, ``accum_steps``, ``step_time_s``, ``sync_time_s``); empty if none."""

    def epoch_s(self, steps_per_epoch: int) -> float:
        """Seconds of one epoch of ``steps_per_epoch`` steps at the steady pace."""
        return steps_per_epoch * self.step_s + self.epoch_overhead_s


def profile_steps(job: JobConfig, steps_per_epoch: int) -> int:
    """Steps per profiled epoch: the job's own, up to two checkpoint intervals (at least
    :data:`MIN_PROFILE_STEPS`), so periodic checkpoints weigh in the pace as in the run."""
    return min(steps_per_epoch, max(2 * job.checkpoint.interval_steps, MIN_PROFILE_STEPS))


def profile_rows(job: JobConfig, num_train_rows: int, steps_per_epoch: int) -> int:
    """Training rows the profile keeps: all of them when its epochs are the job's whole
    epochs (a last partial batch is no step, so there may be more rows than steps x
    batch), else its steps' worth; only a whole epoch's curve speaks for the job's."""
    steps = profile_steps(job, steps_per_epoch)
    if steps == steps_per_epoch:
        return num_train_rows
    return min(num_train_rows, steps * job.training.global_batch_size)


def measured_profile(history: list[dict], *, num_workers: int, started_at: float,
                     charged_until: float) -> RunProfile:
    """The profile's figures from its epoch history (``epoch_ended_at``, ``epoch_train_s``,
    ``epoch_steps`` per epoch) and the ledger's first and last charged seconds."""
    epochs = [h for h in history if "epoch_ended_at" in h and "epoch_steps" in h]
    if len(epochs) < 2:
        raise RuntimeError(f"the profile reported {len(epochs)} epoch(s); it needs 2")
    steady = epochs[1:]
    step_s = sum(h["epoch_train_s"] for h in steady) / sum(h["epoch_steps"] for h in steady)
    overheads = [b["epoch_ended_at"] - a["epoch_ended_at"] - b["epoch_train_s"]
                 for a, b in zip(epochs, steady, strict=False)]
    overhead_s = max(0.0, sum(overheads) / len(overheads))
    first_steady_s = epochs[0]["epoch_steps"] * step_s + overhead_s
    return RunProfile(
        num_workers=num_workers,
        start_up_s=max(0.0, epochs[0]["epoch_ended_at"] - started_at - first_steady_s),
        step_s=step_s, epoch_overhead_s=overhead_s,
        tail_s=max(0.0, charged_until - epochs[-1]["epoch_ended_at"]),
        profiled_s=charged_until - started_at,
        val_accuracy=tuple(float(h["val_accuracy"]) for h in epochs))


@dataclass(frozen=True, kw_only=True)
class Forecast:
    """A forecast of one run: to its last epoch and, with a target, to the target."""

    source: str
    """``profile`` (before launch, from a real profile), ``curve`` (refreshed from the
    run's own validation curve) or ``local`` (steps timed in-process: no start-up)."""
    at_epoch: int
    """Epochs the run had completed when this was made (0: before launch)."""
    seconds_to_end: float
    """Wall seconds from the run's start to the end of its last epoch."""
    usd_to_end: float
    """Dollars the run costs to the end of its last epoch."""
    seconds_to_target: float | None = None
    """Wall seconds from the run's start until it reaches its target (None: no target,
    no curve yet, or out of reach)."""
    usd_to_target: float | None = None
    """Dollars spent by then."""
    epochs_to_target: float | None = None
    """Epoch at which the curve crosses the target (None as above)."""
    target_reachable: bool | None = None
    """False when the fitted curve levels off below the target; None when unknown."""

    def as_record(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, kw_only=True)
class LearningCurve:
    """``accuracy(epoch) = ceiling - scale * epoch ** -exponent`` (saturating power law)."""

    ceiling: float
    """Accuracy the curve levels off at."""
    scale: float
    """How far below the ceiling it starts (at epoch 1)."""
    exponent: float
    """How fast it closes the gap."""

    def accuracy(self, epoch: float) -> float:
        return self.ceiling - self.scale * epoch ** -self.exponent

    def epochs_to(self, target: float) -> float | None:
        """First (fractional) epoch at which the curve reaches ``target``; None if never."""
        if self.ceiling <= target:
            return None
        epochs = (self.scale / (self.ceiling - target)) ** (1.0 / self.exponent)
        return max(1.0, epochs) if epochs <= MAX_TARGET_EPOCHS else None


def fit_curve(accuracy: Sequence[float],
              epochs: Sequence[int] | None = None) -> LearningCurve | None:
    """Least-squares fit of :class:`LearningCurve` to accuracy after ``epochs`` (default
    1, 2, ...; a resumed run's points start later).

    For each exponent on a grid the ceiling and scale are linear least squares,
    weighted by epoch (later epochs describe the approach to the ceiling best), with
    a weak prior pulling the ceiling towards 1 (:data:`CEILING_PRIOR_WEIGHT`); the
    ceiling is held at most 1. None with fewer than :data:`MIN_CURVE_POINTS` points.
    """
    y = np.asarray(accuracy, dtype=float)
    if len(y) < MIN_CURVE_POINTS or not np.all(np.isfinite(y)):
        return None
    epochs = np.asarray(epochs if epochs is not None else range(1, len(y) + 1), dtype=float)
    weights = np.sqrt(epochs)
    best: tuple[float, LearningCurve] | None = None
    for exponent in _EXPONENTS:
        x = epochs ** -exponent
        design = np.vstack([np.stack([np.ones_like(x), -x], axis=1) * weights[:, None],
                            [math.sqrt(CEILING_PRIOR_WEIGHT), 0.0]])
        (ceiling, scale), *_ = np.linalg.lstsq(
            design, np.append(y * weights, math.sqrt(CEILING_PRIOR_WEIGHT)), rcond=None)
        if ceiling > 1.0:  # accuracy cannot exceed 1: refit the scale alone
            ceiling = 1.0
            scale = float(np.dot(x * weights, (1.0 - y) * weights) / np.dot(x * weights,
                                                                              x * weights))
        scale = max(float(scale), 0.0)
        error = float(np.sum((weights * (ceiling - scale * x - y)) ** 2))
        if best is None or error < best[0]:
            best = (error, LearningCurve(ceiling=float(ceiling), scale=scale,
                                         exponent=float(exponent)))
    return best[1] if best else None


@dataclass(frozen=True, kw_only=True)
class Pace:
    """Where a run stands and how fast it goes, for what lies ahead of it."""

    rate: JobRate
    """The job's price."""
    num_workers: int
    """Workers it holds."""
    epoch_s: float
    """Seconds per epoch from here on."""

    def usd(self, seconds: float) -> float:
        return self.rate.usd(num_workers=self.num_workers, seconds=seconds)


def _target_part(*, curve: LearningCurve | None, target: float | None, done_epochs: int,
                 num_epochs: int, seconds_at: float, usd_at: float, pace: Pace,
                 reached_at: tuple[float, float] | None) -> dict[str, object]:
    """Seconds, dollars and epoch to the target, from the run's position now; out of
    reach when the curve crosses it after the last of ``num_epochs``."""
    if target is None:
        return {}
    if reached_at is not None:
        return {"seconds_to_target": reached_at[0], "usd_to_target": reached_at[1],
                "epochs_to_target": float(done_epochs), "target_reachable": True}
    if curve is None:
        return {}
    epochs = curve.epochs_to(target)
    if epochs is None:
        return {"target_reachable": False}
    epochs = max(math.ceil(epochs), done_epochs + 1)  # the target is checked per epoch
    if epochs > num_epochs:
        return {"target_reachable": False}
    ahead_s = (epochs - done_epochs) * pace.epoch_s
    return {"seconds_to_target": seconds_at + ahead_s,
            "usd_to_target": usd_at + pace.usd(ahead_s),
            "epochs_to_target": float(epochs), "target_reachable": True}


def forecast_from_profile(profile: RunProfile, *, rate: JobRate, num_epochs: int,
                          steps_per_epoch: int, target: float | None = None,
                          prior_curve: Sequence[float] = ()) -> Forecast:
    """The before-launch forecast of a run of ``num_epochs`` x ``steps_per_epoch``.

    To the target: the curve fitted to ``prior_curve`` (a finished run of the same
    configuration) or, when that fits none, to the profile's own epochs, when there
    are enough points.
    """
    pace = Pace(rate=rate, num_workers=profile.num_workers,
                epoch_s=profile.epoch_s(steps_per_epoch))
    total_s = profile.start_up_s + num_epochs * pace.epoch_s + profile.tail_s
    curve = (fit_curve(prior_curve) if prior_curve else None) or fit_curve(
        profile.val_accuracy)
    to_target = _target_part(curve=curve, target=target, done_epochs=0, num_epochs=num_epochs,
                             seconds_at=profile.start_up_s, usd_at=pace.usd(profile.start_up_s),
                             pace=pace, reached_at=None)
    return Forecast(source="profile", at_epoch=0, seconds_to_end=total_s,
                    usd_to_end=pace.usd(total_s), **to_target)  # type: ignore[arg-type]


@dataclass(frozen=True, kw_only=True)
class EpochPoint:
    """One epoch-end report of a live run."""

    epoch: int
    """Epochs completed."""
    val_accuracy: float
    """Validation accuracy after it."""
    seconds: float
    """Wall seconds since the run started."""
    usd: float
    """Dollars spent by then."""
    attempt: float | None = None
    """When the worker group that ran it started: an epoch gap across a restart is no
    pace."""


def epoch_gaps(points: Sequence[EpochPoint]) -> list[float]:
    """Seconds between consecutive epochs run by the same worker group, sorted."""
    return sorted(b.seconds - a.seconds for a, b in zip(points, points[1:], strict=False)
                  if b.epoch == a.epoch + 1 and b.attempt == a.attempt)


def refresh_forecast(points: Sequence[EpochPoint], *, num_epochs: int, rate: JobRate,
                     num_workers: int, tail_s: float, target: float | None) -> Forecast:
    """The forecast of a live run after its latest epoch, from its own pace and curve.

    The epoch time is the (lower) median of its epochs after the first of each worker
    group (that one carries the start-up or the restart); to the end it adds the
    remaining epochs and ``tail_s``. Needs two consecutive epochs of one group.
    """
    last = points[-1]
    gaps = epoch_gaps(points)
    if not gaps:
        raise ValueError("a refreshed forecast needs two consecutive epochs")
    epoch_s = gaps[(len(gaps) - 1) // 2]
    pace = Pace(rate=rate, num_workers=num_workers, epoch_s=epoch_s)
    ahead_s = max(0, num_epochs - last.epoch) * epoch_s + tail_s
    reached = next(((p.seconds, p.usd) for p in points
                    if target is not None and p.val_accuracy >= target), None)
    curve = fit_curve([p.val_accuracy for p in points], [p.epoch for p in points])
    to_target = _target_part(curve=curve, target=target, done_epochs=last.epoch,
                             num_epochs=num_epochs, seconds_at=last.seconds, usd_at=last.usd,
                             pace=pace, reached_at=reached)
    return Forecast(source="curve", at_epoch=last.epoch, seconds_to_end=last.seconds + ahead_s,
                    usd_to_end=last.usd + pace.usd(ahead_s),
                    **to_target)  # type: ignore[arg-type]


class CurveTracker:
    """A live run's epoch reports in, a refreshed :class:`Forecast` out (per epoch)."""

    def __init__(self, *, num_epochs: int, target: float | None, rate: JobRate,
                 run_started_at: float, tail_s: float = 0.0):
        self.num_epochs, self.target, self.rate = num_epochs, target, rate
        self.run_started_at, self.tail_s = run_started_at, tail_s
        self.points: list[EpochPoint] = []

    def on_report(self, metrics: dict[str, object]) -> Forecast | None:
        """The refreshed forecast after an epoch-end report (with ``val_accuracy``,
        ``epoch``, ``wall_time``, ``cost_usd``, ``world_size``); None for other reports."""
        if "val_accuracy" not in metrics or "epoch" not in metrics or metrics.get("final"):
            return None
        epoch = int(metrics["epoch"])  # type: ignore[call-overload]
        self.points = [p for p in self.points if p.epoch < epoch]  # a resume repeats epochs
        self.points.append(EpochPoint(
            epoch=epoch, val_accuracy=float(metrics["val_accuracy"]),  # type: ignore[arg-type]
            seconds=float(metrics["wall_time"]) - self.run_started_at,  # type: ignore[arg-type]
            usd=float(metrics["cost_usd"]),  # type: ignore[arg-type]
            attempt=metrics.get("attempt_started_at")))  # type: ignore[arg-type]
        if not epoch_gaps(self.points):
            # One epoch carries the start-up (or a restart): no pace yet.
            return None
        return refresh_forecast(self.points, num_epochs=self.num_epochs, rate=self.rate,
                                num_workers=int(metrics["world_size"]),  # type: ignore[call-overload]
                                tail_s=self.tail_s, target=self.target)


def current_forecast(forecasts: Sequence[Mapping[str, Any]],
                     intervals: Sequence[Mapping[str, Any]],
                     ) -> tuple[Mapping[str, Any], float] | None:
    """A run's newest forecast refreshed by its driver session now running (a ledger
    row of ``source`` ``curve``), and when that session started, the origin of the
    row's seconds; None when no interval is open or the session has refreshed none.

    A session's intervals are contiguous and its first starts when the session did
    (:class:`~costsched.cost.accounting.RunAccountant`); an earlier session ended
    before a gap. ``intervals`` are the run's, in attempt order.
    """
    if not intervals or intervals[-1]["outcome"] != "RUNNING":
        return None
    started_at = intervals[-1]["started_at"]
    for earlier in reversed(intervals[:-1]):
        if earlier["ended_at"] != started_at:
            break
        started_at = earlier["started_at"]
    refreshed = [f for f in forecasts if f["source"] == "curve" and f["made_at"] >= started_at]
    return (refreshed[-1], started_at) if refreshed else None


@dataclass(frozen=True, kw_only=True)
class LiveFigures:
    """What a running run's current forecast says, for ``status`` and ``report``."""

    session_started_at: float
    """When the driver session that made it started: the origin of ``seconds``."""
    seconds: float | None
    """Seconds from then to the target (to the last epoch without one); None: out of
    reach, or too few epochs for a curve yet."""
    usd: float | None
    """Dollars in all by then (None as ``seconds``)."""
    target_reachable: bool | None
    """False when the curve levels off below the target; None without a target."""


def live_figures(forecasts: Sequence[Mapping[str, Any]],
                 intervals: Sequence[Mapping[str, Any]], *, has_target: bool,
                 ) -> LiveFigures | None:
    """The figures of a running run's :func:`current_forecast`: to the target, or to
    the last epoch without one; None before its session refreshed one."""
    current = current_forecast(forecasts, intervals)
    if current is None:
        return None
    row, started_at = current
    if has_target and row["target_reachable"] == 0:  # the ledger stores booleans as 0/1
        return LiveFigures(session_started_at=started_at, seconds=None, usd=None,
                           target_reachable=False)
    to = "target" if has_target else "end"
    seconds = row[f"seconds_to_{to}"]
    return LiveFigures(session_started_at=started_at, seconds=seconds, usd=row[f"usd_to_{to}"],
                       target_reachable=True if has_target and seconds is not None else None)


def relative_error(forecast: float | None, actual: float | None) -> float | None:
    """``|forecast - actual| / actual``; None when either is unknown or actual is 0."""
    if forecast is None or actual is None or actual <= 0:
        return None
    return abs(forecast - actual) / actual


def forecast_lines(forecast: Forecast, profile: RunProfile, *, num_epochs: int,
                   target: str | None, budget_usd: float) -> list[str]:
    """What a dry run prints about its profile and forecast."""
    lines = [
        f"profile        {profile.profiled_s:.0f} s real run on the job's workers: start-up "
        f"{profile.start_up_s:.1f} s, {profile.step_s * 1e3:.1f} ms/step, "
        f"{profile.epoch_overhead_s:.2f} s/epoch besides steps, end {profile.tail_s:.1f} s",
        f"forecast       {num_epochs} epochs: {forecast.seconds_to_end:.0f} s, "
        f"${format_usd(forecast.usd_to_end)} (budget ${budget_usd:g})"
        + ("; over budget" if forecast.usd_to_end > budget_usd else ""),
    ]
    if target is None:
        return lines
    if forecast.seconds_to_target is not None:
        lines.append(f"to target      {target} at epoch {forecast.epochs_to_target:.0f}: "
                     f"{forecast.seconds_to_target:.0f} s, "
                     f"${format_usd(forecast.usd_to_target)} (fitted learning curve)")
    elif forecast.target_reachable is False:
        lines.append(f"to target      {target}: not within {num_epochs} epochs by the fitted "
                     "learning curve")
    else:
        lines.append(f"to target      {target}: forecast once a run of this configuration "
                     f"has {MIN_CURVE_POINTS} epochs of validation accuracy")
    return lines
