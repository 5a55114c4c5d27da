"""Pollux's restart factor, the share of a resized job's time that is not its restart.

    max(H - restarts x restart_s, 0) / (H + restart_s)

A restart is repaid over the time the job runs after it. Pollux takes H = max(horizon,
age): a job that has run long likely runs long still. When the job says the work it has
left, H is cut to the time that work takes at the new configuration's goodput, so a job
minutes from its end is not restarted to go a little faster: with H that time, the factor
times the new goodput is the work left over the time to finish with the restart. Every
restart the job has had makes the next one dearer.
"""

from __future__ import annotations

import math

import numpy as np


def restart_factor(horizon_s: float, work_left: float, spent_s: float, restart_s: float,
                   goodput: float) -> float:
    """The factor at ``goodput`` (work per second); ``work_left`` inf when not said,
    ``spent_s`` the restarts had x ``restart_s``."""
    if 0 < goodput < math.inf:
        horizon_s = min(horizon_s, work_left / goodput)
    if horizon_s + restart_s <= 0:  # nothing left and a free restart: nothing to pay
        return 1.0
    return max(horizon_s - spent_s, 0.0) / (horizon_s + restart_s)


def restart_factors(terms: list[tuple[float, float, float, float]],
                    goodput: np.ndarray) -> np.ndarray:
    """:func:`restart_factor` of each job (rows, its ``terms`` = the first four arguments)
    at each goodput of its row of ``goodput`` (columns)."""
    horizon, work_left, spent, restart = (np.array(column)[:, None]
                                          for column in zip(*terms, strict=True))
    with np.errstate(divide="ignore", invalid="ignore"):
        cut = np.where((goodput > 0) & np.isfinite(goodput), work_left / goodput, np.inf)
    horizon = np.minimum(horizon, cut)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.maximum(horizon - spent, 0.0) / (horizon + restart)
    return np.where(horizon + restart > 0, factor, 1.0)
