"""The sweep's budget gate: whether a trial may launch, and the cap it runs under (pure).

Every trial runs under a hard cap: its own loop stops before it, and a watchdog ends
it there when it cannot stop itself (:mod:`costsched.ray_layer.tune.cap`). The gate
launches a trial only while this holds, with each running trial ``i`` counted at
its own cap::

    spent_usd + sum_i max(0, cap_i + overrun_usd - spent_i) + cap_new + overrun_usd
        <= budget_usd

(``overrun_usd``: the most any trial's budget stop has landed past its cap, on a
loaded machine). So even if every trial runs to its cap the sweep spends at most its
budget. That invariant does not use forecasts, and must not: a gate that counted a
trial at its forecast while its cap allowed more would cross the budget whenever the
forecast was low.

Forecasts instead size the caps. ``need_usd`` is the smallest cap a trial gets: the
base job's forecast dollars to its target (or its end) plus a margin, at least what
reaching ASHA's first rung takes, at most the configured cap; without a forecast it
is the configured cap (and the gate is the old one). A new trial launches while the
room left holds ``need_usd``, and its cap is what the room can spare after holding
``need_usd`` for each other slot that may still fill::

    cap_new = min(cap_usd, max(need_usd, room_usd - other_slots * need_usd))

So a trial gets its whole configured cap whenever the budget allows it, and a cap
shrunk towards its forecast only when that lets another trial run. A trial whose
forecast was too low is ended at its smaller cap (``BUDGET_EXHAUSTED``): that, not
the budget, is what an optimistic forecast costs.

A running trial is counted at its cap, never at its live forecast: its cap is fixed
when it launches, and counting it lower would let the sweep cross the budget if it
ran to that cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TOLERANCE = 1e-12
"""Relative slack for float rounding in the budget comparison."""


@dataclass(frozen=True, kw_only=True)
class RunningTrial:
    """A trial that may still spend: its cap and what it has spent."""

    cap_usd: float
    """The hard cap it runs under."""
    spent_usd: float
    """Dollars the ledger has charged it so far."""


def room_usd(*, budget_usd: float, spent_usd: float, running: Sequence[RunningTrial],
             overrun_usd: float = 0.0) -> float:
    """Dollars a new trial's cap may take: the budget less all spend, less what running
    trials may still spend (cap + overrun - spent each), less the new trial's overrun."""
    reserved = sum(max(0.0, t.cap_usd + overrun_usd - t.spent_usd) for t in running)
    return budget_usd - spent_usd - reserved - overrun_usd


def new_trial_cap(*, room_usd: float, cap_usd: float, need_usd: float,
                  other_slots: int = 0) -> float | None:
    """The cap of a new trial, or None when the room cannot hold ``need_usd``.

        cap = min(cap_usd, max(need_usd, room_usd - other_slots * need_usd))

    With ``need_usd == cap_usd`` (no forecast): ``cap_usd`` if it fits, else None.
    """
    need = min(need_usd, cap_usd)
    if room_usd < need * (1 - TOLERANCE):
        return None
    spare = room_usd - max(0, other_slots) * need
    return min(cap_usd, max(need, spare))


@dataclass(frozen=True, kw_only=True)
class HeldTrials:
    """How many trials a gate launches in a scripted sweep, and what they spend."""

    num_trials: int
    """Trials launched."""
    spent_usd: float
    """Dollars they spent in all."""


def trials_held(*, budget_usd: float, cap_usd: float, need_usd: float, spend_usd: float,
                num_trials: int, max_concurrent: int) -> HeldTrials:
    """The gate run over a scripted sweep: slots fill in waves, and every trial of a
    wave ends together having spent ``spend_usd`` or its cap, whichever is less. The
    dry run compares ``need_usd == cap_usd`` (the cap gate) with the forecast's."""
    spent, launched = 0.0, 0
    while launched < num_trials:
        wave: list[float] = []
        while len(wave) < max_concurrent and launched < num_trials:
            room = room_usd(budget_usd=budget_usd, spent_usd=spent,
                            running=[RunningTrial(cap_usd=c, spent_usd=0.0) for c in wave])
            other = min(max_concurrent - len(wave), num_trials - launched) - 1
            cap = new_trial_cap(room_usd=room, cap_usd=cap_usd, need_usd=need_usd,
                                other_slots=other)
            if cap is None:
                break
            wave.append(cap)
            launched += 1
        if not wave:
            break
        spent += sum(min(cap, spend_usd) for cap in wave)
    return HeldTrials(num_trials=launched, spent_usd=spent)
