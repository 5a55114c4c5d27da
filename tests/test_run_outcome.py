"""The outcome a finished run is recorded with, from its last passed-on report."""

from __future__ import annotations

from costsched.training.run import run_outcome


def test_a_run_asked_to_stop_whose_stopping_report_was_lost_ends_as_the_stop_asked():
    # The last report the trainer passed on was an ordinary one (COMPLETED until the run
    # decides otherwise): a cancelled run is recorded CANCELLED, not COMPLETED.
    assert run_outcome({"stop_reason": "COMPLETED", "global_step": 40}, "CANCELLED") \
        == "CANCELLED"
    assert run_outcome({}, "PREEMPTED") == "PREEMPTED"


def test_a_run_that_reached_its_end_or_decided_its_stop_keeps_that_outcome():
    # It ran to its last epoch before the late stop request was seen.
    assert run_outcome({"stop_reason": "COMPLETED", "final": True}, "CANCELLED") == "COMPLETED"
    # Its own decision (or the stop's, reported) stands.
    assert run_outcome({"stop_reason": "BUDGET_EXHAUSTED"}, "CANCELLED") == "BUDGET_EXHAUSTED"
    assert run_outcome({"stop_reason": "CANCELLED"}, "CANCELLED") == "CANCELLED"
    # Nobody asked it to stop: what it reported.
    assert run_outcome({"stop_reason": "COMPLETED"}, None) == "COMPLETED"
    assert run_outcome({"stop_reason": "TARGET_REACHED"}, None) == "TARGET_REACHED"
