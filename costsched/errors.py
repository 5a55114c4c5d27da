"""The project's own error types: a user error is one of these, never a traceback."""


class CostschedError(Exception):
    """Base class of errors the CLI reports in one line and exits non-zero."""

    exit_code = 1


class ConfigError(CostschedError, ValueError):
    """A configuration file or value is invalid; the message says how to fix it."""

    exit_code = 2


class SchedulerUnavailable(CostschedError):
    """No Ray cluster, or no scheduler running on it; the message says how to start one."""

    exit_code = 3
