"""Dry-run plans kept in a ledger: the newest profile of a config, the learning curve
of its last finished run, and what ``costsched submit`` sends with a job (see
:mod:`costsched.scheduler.launch`, which makes a scheduled run's launch forecast of it).

``ledger`` is a :class:`~costsched.cost.ledger.Ledger` or the Ray layer's proxy of one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from typing import Any

from costsched.cost.forecast import MIN_CURVE_POINTS, RunProfile

__all__ = ["PRIOR_CURVE_KEY", "PROFILED_CONFIG_KEY", "newest_plan", "prior_curve",
           "profile_from_detail", "scheduled_curve", "submitted_plan"]

PRIOR_CURVE_KEY = "prior_curve"
"""Key, in a submitted plan's detail, of the config's last measured learning curve."""

_PROFILE_FIELDS = {f.name for f in dataclasses.fields(RunProfile)}


def profile_from_detail(detail: Mapping[str, Any]) -> RunProfile:
    """The :class:`RunProfile` a stored forecast's detail holds (other keys ignored)."""
    fields = {k: v for k, v in detail.items() if k in _PROFILE_FIELDS}
    fields["val_accuracy"] = tuple(fields.get("val_accuracy", ()))
    return RunProfile(**fields)


def newest_plan(ledger: Any, config_hash: str) -> dict[str, Any] | None:
    """The newest before-launch forecast of ``config_hash`` with a profile, or None."""
    plans = [p for p in ledger.forecasts(config_hash=config_hash)
             if "step_s" in p["detail"]]
    return plans[-1] if plans else None


def prior_curve(ledger: Any, config_hash: str) -> list[float]:
    """Validation accuracy per epoch of the newest finished run of ``config_hash`` in
    ``ledger`` (empty if none): its learning curve, measured."""
    return _newest_curve(ledger, lambda run: run["config_hash"] == config_hash)


def _newest_curve(ledger: Any, chosen: Callable[[dict[str, Any]], bool]) -> list[float]:
    for run in reversed(ledger.runs()):
        if chosen(run) and run["final_metrics"]:
            history = json.loads(run["final_metrics"]).get("history", [])
            curve = [float(h["val_accuracy"]) for h in history if "val_accuracy" in h]
            if len(curve) >= MIN_CURVE_POINTS:  # fewer fit no curve: look further back
                return curve
    return []


PROFILED_CONFIG_KEY = "profiled_config"
"""Key, in a submitted plan's detail and a launch forecast's, of the hash of the config
the dry run profiled (the config file as written; a submission's overrides change the
submitted config's hash, not this one)."""


def scheduled_curve(ledger: Any, profiled_config: str) -> list[float]:
    """Validation accuracy per epoch of the newest finished scheduled run whose launch
    forecast was made from a profile of ``profiled_config`` (the same config, submitted
    at any size): its learning curve, measured; empty if none."""
    launched = {f["run_id"] for f in ledger.forecasts(source="profile")
                if f["run_id"] and f["detail"].get(PROFILED_CONFIG_KEY) == profiled_config}
    return _newest_curve(ledger, lambda run: run["run_id"] in launched)


def submitted_plan(ledger: Any, config_hash: str) -> dict[str, Any] | None:
    """What ``costsched submit`` sends with a job: the newest dry-run forecast of its
    config (a ledger row, its detail the profile) with the config's last measured curve
    in the detail; None when no dry run of the config measured one."""
    plan = newest_plan(ledger, config_hash)
    if plan is None:
        return None
    curve = prior_curve(ledger, config_hash)
    return {**plan, "detail": {**plan["detail"], PRIOR_CURVE_KEY: curve,
                               PROFILED_CONFIG_KEY: config_hash}}
