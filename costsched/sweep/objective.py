"""The sweep objective: dollars to reach the target accuracy."""

from __future__ import annotations


def objective_usd(*, usd_to_target: float | None, best_accuracy: float, target: float,
                  cap_usd: float) -> float:
    """Dollars to target; a trial that has not reached it ranks behind every one that has.

        reached:      usd_to_target                      (<= cap_usd)
        not reached:  cap_usd * (2 + (target - best_accuracy))

    so unreached trials order among themselves by their best accuracy, and any
    reached trial (at most ``cap_usd``) beats any unreached one (at least 2 x cap).
    """
    if usd_to_target is not None:
        return float(usd_to_target)
    return cap_usd * (2.0 + max(0.0, target - best_accuracy))
