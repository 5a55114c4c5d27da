"""A run's control channel through Ray's GCS key-value store, never through files.

Nodes share no disk, so a stop request, a run's latest progress and the name of
its newest persisted checkpoint travel through the head's key-value store, which
every process of the cluster (scheduler actor, job driver, Train controller,
workers on any node) reaches the same way. Keys are per run id, in the
``costsched`` namespace:

- ``run/<id>/stop``: the outcome a pending stop asks for (PREEMPTED, ...);
- ``run/<id>/progress``: the last report's progress record (JSON, see
  :func:`costsched.training.state.progress_record`);
- ``run/<id>/checkpoint``: the folder name of the newest checkpoint whose upload
  finished, which a restart prefers to Ray's registered one when it is newer
  (a worker killed between its upload and the controller's next poll leaves a
  persisted but unregistered checkpoint).

The store lives as long as the Ray cluster; the checkpoints themselves live in
the job's storage (a shared mount or an object store).
"""

from __future__ import annotations

import json
from typing import Any

from ray.experimental import internal_kv

NAMESPACE = "costsched"


def _key(run_id: str, what: str) -> str:
    return f"run/{run_id}/{what}"


def _put(run_id: str, what: str, value: str) -> None:
    internal_kv._internal_kv_put(_key(run_id, what), value, overwrite=True, namespace=NAMESPACE)


def _get(run_id: str, what: str) -> str | None:
    value = internal_kv._internal_kv_get(_key(run_id, what), namespace=NAMESPACE)
    return None if value is None else value.decode()


def request_stop(run_id: str, outcome: str) -> None:
    """Ask the run to checkpoint and end with ``outcome``."""
    _put(run_id, "stop", outcome)


def stop_request(run_id: str) -> str | None:
    """The outcome a pending stop request asks for, or None."""
    return _get(run_id, "stop")


def clear_stop(run_id: str) -> None:
    """Withdraw a stop request (before the run starts again)."""
    internal_kv._internal_kv_del(_key(run_id, "stop"), namespace=NAMESPACE)


def publish_progress(run_id: str, record: dict[str, Any]) -> None:
    """Record the run's latest progress (see ``training.state.progress_record``)."""
    _put(run_id, "progress", json.dumps(record))


def progress(run_id: str) -> dict[str, Any] | None:
    """The run's last progress record, or None before its first report."""
    text = _get(run_id, "progress")
    try:
        return None if text is None else json.loads(text)
    except json.JSONDecodeError:
        return None


def note_checkpoint(run_id: str, name: str) -> None:
    """Record ``name`` as the run's newest checkpoint folder (its upload finished)."""
    _put(run_id, "checkpoint", name)


def noted_checkpoint(run_id: str) -> str | None:
    """The folder name of the run's newest uploaded checkpoint, or None."""
    return _get(run_id, "checkpoint")


def forget(run_id: str) -> None:
    """Drop everything the channel holds for the run (it ended for good)."""
    internal_kv._internal_kv_del(f"run/{run_id}/", del_by_prefix=True, namespace=NAMESPACE)
