"""A sweep's trial budget from the base job's measured profile (pure; no Ray).

A trial pays its start-up before it learns anything, and ASHA first compares trials
after ``grace_usd`` of training. So a trial's cap must hold, at least::

    START_UP_MARGIN * start_up_usd + grace_usd + epoch_usd + end_usd

(start-up, the first rung, one epoch to report past it, the run's end), all priced
at the base job's workers from its profile. Start-up varies most from run to run
(process and library start, placement; several-fold on a loaded machine), so the
cap holds a multiple of the measured one: a trial that starts slower than that is
ended at its cap before it learns anything. The cap used is the larger of that and
the configured ``trial_budget_usd``; ASHA's last rung is the cap less the start-up.
The forecast dollars to the target say whether a trial like the base job reaches it
inside the cap, and what budget it would need if not.
"""

from __future__ import annotations

from dataclasses import dataclass

from costsched.cost.forecast import Forecast, RunProfile
from costsched.cost.formatting import format_usd
from costsched.cost.prices import JobRate
from costsched.sweep.config import SweepConfig
from costsched.sweep.gate import trials_held

START_UP_MARGIN = 3.0
"""Multiple of the measured start-up a trial's cap holds. A trial's run is driven from a
Tune actor, a Ray worker at niceness 15, where the profile's is driven from the sweep's
own process. With a CPU burner beside the sweep and a profiled start-up of 49 s, at a
margin of 2 (a cap of 110 s of two workers), one trial ran 99 s for 8 epochs of about
1.5 s, so about 85 s of start-up (1.7x), and the baseline trial was ended at its cap
after 108 s before its first report (over 2.2x), so ASHA stopped nothing (the profiled
ASHA test in ``tests/test_sweep_ray.py``)."""
TARGET_MARGIN = 1.25
"""Headroom over the forecast dollars to target when saying what a trial needs."""


@dataclass(frozen=True, kw_only=True)
class TrialPlan:
    """What one trial costs before and at its first rung, and the cap that follows."""

    start_up_usd: float
    """Dollars a trial spends before its steady pace (measured start-up)."""
    epoch_usd: float
    """Dollars of one epoch of the base job at its steady pace."""
    end_usd: float
    """Dollars of a run's end (test evaluation, shutdown)."""
    min_cap_usd: float
    """Smallest cap with which a trial reaches ASHA's first rung and reports past it."""
    trial_cap_usd: float
    """Cap each trial runs with: the configured one, raised to ``min_cap_usd``."""
    usd_to_target: float | None
    """Forecast dollars for the base job to reach the target (None: unknown)."""
    target_reachable: bool | None
    """False when the base job's curve levels off below the target."""
    usd_to_end: float
    """Forecast dollars of the base job to its last epoch."""

    @property
    def asha_max_usd(self) -> float:
        """ASHA's last rung on the training-dollars axis: what a trial may spend on
        training once started."""
        return max(self.trial_cap_usd - self.start_up_usd, 1e-12)

    @property
    def needed_trial_usd(self) -> float | None:
        """Cap a trial like the base job needs to reach the target (with margin)."""
        if self.usd_to_target is None:
            return None
        return max(self.min_cap_usd, (self.usd_to_target + self.end_usd) * TARGET_MARGIN)

    @property
    def forecast_usd(self) -> float:
        """Forecast dollars of a trial like the base job to where it stops: the target
        and the run's end when the curve reaches it, else its last epoch."""
        if self.usd_to_target is not None and self.target_reachable is not False:
            return self.usd_to_target + self.end_usd
        return self.usd_to_end

    @property
    def forecast_cap_usd(self) -> float:
        """The smallest cap the forecast gate gives a trial (:mod:`costsched.sweep.gate`):
        the forecast with :data:`TARGET_MARGIN`, at least ``min_cap_usd``, at most the cap."""
        return min(self.trial_cap_usd, max(self.min_cap_usd, self.forecast_usd * TARGET_MARGIN))


def plan_trials(cfg: SweepConfig, profile: RunProfile, forecast: Forecast, *,
                rate: JobRate, steps_per_epoch: int) -> TrialPlan:
    """The trial plan of sweep ``cfg`` from its base job's profile and forecast."""
    def usd(seconds: float) -> float:
        return rate.usd(num_workers=profile.num_workers, seconds=seconds)

    start_up, epoch = usd(profile.start_up_s), usd(profile.epoch_s(steps_per_epoch))
    end = usd(profile.tail_s)
    min_cap = START_UP_MARGIN * start_up + cfg.scheduler.grace_usd + epoch + end
    return TrialPlan(start_up_usd=start_up, epoch_usd=epoch, end_usd=end,
                     min_cap_usd=min_cap,
                     trial_cap_usd=max(cfg.trial_budget_usd, min_cap),
                     usd_to_target=forecast.usd_to_target,
                     target_reachable=forecast.target_reachable,
                     usd_to_end=forecast.usd_to_end)


def plan_lines(cfg: SweepConfig, plan: TrialPlan) -> list[str]:
    """What the sweep's dry run (and its start) says about trial caps and the target."""
    lines = [f"trial start    ${format_usd(plan.start_up_usd)} start-up (measured), "
             f"${format_usd(plan.epoch_usd)} an epoch; a trial needs at least "
             f"${format_usd(plan.min_cap_usd)} to reach ASHA's first rung"]
    if plan.trial_cap_usd > cfg.trial_budget_usd:
        lines.append(f"trial cap      raised from ${cfg.trial_budget_usd:g} to "
                     f"${format_usd(plan.trial_cap_usd)} so a trial reaches its first rung")
    fits = int(cfg.budget_usd // plan.trial_cap_usd)
    lines.append(f"budget         ${cfg.budget_usd:g} holds {fits} trial(s) at their cap of "
                 f"${format_usd(plan.trial_cap_usd)}")
    if fits == 0:
        lines.append(f"NO TRIAL FITS  the budget is below one trial's cap: budget_usd needs "
                     f"at least ${format_usd(plan.trial_cap_usd)}")
    lines.extend(gate_lines(cfg, plan))
    needed = plan.needed_trial_usd
    if plan.target_reachable is False:
        lines.append("NO TRIAL       the base job's learning curve levels off below the target "
                     "within its epochs: a trial like it will not reach it")
    elif needed is None:
        lines.append(f"to target      unknown (no learning curve yet); the base job's "
                     f"forecast to its last epoch is ${format_usd(plan.usd_to_end)}")
    elif needed > plan.trial_cap_usd:
        cap = format_usd(plan.trial_cap_usd)
        lines.append(f"NO TRIAL       is sure to reach the target within its ${cap} cap: the "
                     f"base job needs ${format_usd(plan.usd_to_target)} by forecast, "
                     f"${format_usd(needed)} with its end and a "
                     f"{TARGET_MARGIN - 1:.0%} margin; "
                     f"set trial_budget_usd >= ${format_usd(needed)} and budget_usd >= "
                     f"${format_usd(needed)} (one trial), ${format_usd(needed * cfg.num_trials)}"
                     f" for all {cfg.num_trials}")
    else:
        lines.append(f"to target      the base job: ${format_usd(plan.usd_to_target)} "
                     f"(forecast), inside the ${format_usd(plan.trial_cap_usd)} cap")
    return lines


def gate_lines(cfg: SweepConfig, plan: TrialPlan) -> list[str]:
    """Trials the budget holds by cap vs by forecast (:func:`trials_held`, a scripted
    sweep whose trials end together in waves of ``max_concurrent_trials``)."""
    need = plan.forecast_cap_usd if cfg.forecast_gate else plan.trial_cap_usd

    def held(need_usd: float, spend_usd: float) -> int:
        return trials_held(budget_usd=cfg.budget_usd, cap_usd=plan.trial_cap_usd,
                           need_usd=need_usd, spend_usd=spend_usd, num_trials=cfg.num_trials,
                           max_concurrent=cfg.max_concurrent_trials).num_trials

    cap, forecast = plan.trial_cap_usd, plan.forecast_usd
    gate = ("forecast" if need < cap else "cap (the forecast is no lower)") \
        if cfg.forecast_gate else "cap (forecast_gate: false)"
    return [f"gate           {gate}: a trial launches while the budget left holds "
            f"${format_usd(need)} and gets a cap in ${format_usd(need)}-${format_usd(cap)}",
            f"trials held    of {cfg.num_trials}, {cfg.max_concurrent_trials} at a time: "
            f"{held(cap, forecast)} by cap, {held(need, forecast)} by forecast when each ends "
            f"at the forecast ${format_usd(forecast)}; {held(cap, cap)} by cap, "
            f"{held(need, cap)} by forecast when each runs to its cap (the budget holds "
            f"either way)"]
