"""Names of the scheduler's Ray objects, importable without the rest of the scheduler."""

NAMESPACE = "costsched"
"""Ray namespace of the scheduler actor and its job drivers."""
SERVICE_NAME = "costsched-scheduler"
"""Name of the detached scheduler actor."""
DRIVER_PREFIX = "costsched-run-"
"""Name prefix of a job's detached driver actor (then the job id)."""
