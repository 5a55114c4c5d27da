"""The restart factor: the share of a resized job's time that is not its restart.

Pollux's is max(H - restarts x restart_s, 0) / (H + restart_s) with H = max(horizon,
age): a restart is repaid over the time the job runs after it, and a job that has run
long likely runs long still. Written as two terms,

    max(H - restarts x restart_s, 0) / H  x  T / (T + restart_s),

the first is the share of its age a job has not spent restarting (each restart it has
had makes the next one dearer) and the second repays the next restart over T = H. When
the job says the work it has left, T is cut to the time that work takes at the new
configuration's goodput, so a job minutes from its end is not restarted to go a little
faster: with T that time, the second term times the new goodput is the work left over
the time to finish with the restart. Without the work left it is Pollux's factor.
"""

from __future__ import annotations

import math

import numpy as np


def restart_factor(horizon_s: float, work_left: float, spent_s: float, restart_s: float,
                   goodput: float) -> float:
    """The factor at ``goodput`` (work per second): ``horizon_s`` H (> 0), ``work_left``
    inf when not said, ``spent_s`` the restarts had x ``restart_s``."""
    paid = max(horizon_s - spent_s, 0.0) / horizon_s
    repaid_s = horizon_s
    if 0 < goodput < math.inf:
        repaid_s = min(horizon_s, work_left / goodput)
    if repaid_s + restart_s <= 0:  # nothing left and a free restart: nothing to repay
        return paid
    return paid * repaid_s / (repaid_s + restart_s)


def restart_factors(terms: list[tuple[float, float, float, float]],
                    goodput: np.ndarray) -> np.ndarray:
    """:func:`restart_factor` of each job (rows, its ``terms`` = the first four arguments)
    at each goodput of its row of ``goodput`` (columns)."""
    horizon, work_left, spent, restart = (np.array(column)[:, None]
                                          for column in zip(*terms, strict=True))
    paid = np.maximum(horizon - spent, 0.0) / horizon
    with np.errstate(divide="ignore", invalid="ignore"):
        cut = np.where((goodput > 0) & np.isfinite(goodput), work_left / goodput, np.inf)
        repaid = np.minimum(horizon, cut)
        factor = paid * repaid / (repaid + restart)
    return np.where(repaid + restart > 0, factor, paid)
