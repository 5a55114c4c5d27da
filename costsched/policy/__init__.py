"""Scheduling policies: a snapshot in, a decision out (pure: no ``ray``, no clock)."""
