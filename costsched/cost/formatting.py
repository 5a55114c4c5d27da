"""Dollars, clock times and durations as people read them in tables and logs.

Standard library only: the CLI imports this for ``costsched status`` and
``costsched logs``, which must start fast.
"""

from __future__ import annotations

import math
import time

SIGNIFICANT_DIGITS = 3
"""Digits kept for amounts under a dollar, so $0.004 never reads as $0.00."""
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
"""Local wall-clock time, ISO 8601 order, to the second."""


def format_usd(usd: float | None) -> str:
    """``usd`` without a currency sign: cents from one dollar up, at least three
    significant digits below (``0.00412``, ``0.123``, ``12.35``); ``-`` if unknown.

    decimals = max(2, SIGNIFICANT_DIGITS - 1 - floor(log10(|usd|)))

    Trailing zeros past the cents are dropped (``0.004``, not ``0.00400``).
    """
    if usd is None or math.isnan(usd):
        return "-"
    if math.isinf(usd):
        return "inf" if usd > 0 else "-inf"
    if usd == 0 or abs(usd) >= 1:
        return f"{usd:.2f}"
    decimals = max(2, SIGNIFICANT_DIGITS - 1 - math.floor(math.log10(abs(usd))))
    text = f"{usd:.{decimals}f}"
    whole, fraction = text.split(".")
    fraction = fraction.rstrip("0").ljust(2, "0")
    return f"{whole}.{fraction}"


def format_local_time(epoch_s: float | None) -> str:
    """Seconds since the epoch as local time, ``2026-11-30 14:03:22``; ``-`` if unknown."""
    if epoch_s is None or math.isnan(epoch_s):
        return "-"
    return time.strftime(TIME_FORMAT, time.localtime(epoch_s))


def format_duration(seconds: float | None) -> str:
    """A duration to the minute from an hour up (``1h02m``), else to the second
    (``4m05s``); ``-`` if unknown."""
    if seconds is None or math.isnan(seconds):
        return "-"
    seconds = max(0.0, seconds)
    minutes = int(seconds // 60)
    if minutes >= 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    return f"{minutes}m{int(seconds % 60):02d}s"
