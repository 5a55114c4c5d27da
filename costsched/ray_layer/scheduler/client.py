"""The command line's side of the scheduler: find the cluster and the actor, call it.

Every failure to reach them is a :class:`~costsched.errors.SchedulerUnavailable`
with the command that fixes it; a user error the actor reports comes back as a
:class:`~costsched.errors.CostschedError` with the actor's exit code. Nothing
here changes state unless the actor accepts the call.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import ray

from costsched.errors import ConfigError, CostschedError, SchedulerUnavailable
from costsched.ray_layer.cluster import use_token_auth_if_available
from costsched.ray_layer.scheduler.names import NAMESPACE, SERVICE_NAME

CALL_TIMEOUT_S = 300.0
"""How long a call may wait for the scheduler actor: calls answer at once (stops finish
in later rounds); only a scheduler still starting, or a head under heavy load, is slow."""


def connect(address: str | None) -> None:
    """Join the running Ray cluster (``address``, else RAY_ADDRESS, else the local one)."""
    if ray.is_initialized():
        return
    _check_reachable(address or os.environ.get("RAY_ADDRESS"))
    use_token_auth_if_available()
    try:
        ray.init(address=address or "auto", namespace=NAMESPACE, logging_level="ERROR",
                 log_to_driver=False, configure_logging=False)
    except ConnectionError:
        where = address or os.environ.get("RAY_ADDRESS") or "this machine"
        raise SchedulerUnavailable(
            f"no Ray cluster found at {where}; start one with "
            "`ray start --head` (or `ray up cluster.yaml`), then `costsched scheduler start`"
        ) from None


def _check_reachable(address: str | None, timeout_s: float = 2.0) -> None:
    """Fail at once when ``host:port`` answers nothing: Ray would retry for minutes."""
    if not address or address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError:
        raise SchedulerUnavailable(
            f"no Ray cluster answers at {address}; check the address, or start one with "
            "`ray start --head`, then `costsched scheduler start`") from None


def service() -> ray.actor.ActorHandle:
    """The running scheduler actor."""
    try:
        return ray.get_actor(SERVICE_NAME, namespace=NAMESPACE)
    except ValueError:
        raise SchedulerUnavailable(
            "no scheduler is running on this Ray cluster; start it with "
            "`costsched scheduler start` (or `ray job submit --working-dir . -- "
            "python jobs/scheduler.py`)") from None


def call(method: str, *args: Any, timeout_s: float = CALL_TIMEOUT_S) -> dict[str, Any]:
    """``service().method(*args)``; a user error it reports is raised here."""
    handle = service()
    try:
        result = ray.get(getattr(handle, method).remote(*args), timeout=timeout_s)
    except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
        raise SchedulerUnavailable(
            f"the scheduler did not answer ({type(exc).__name__}); it restarts by itself "
            "after a crash: try again in a few seconds") from None
    except ray.exceptions.GetTimeoutError:
        raise SchedulerUnavailable(f"the scheduler did not answer within {timeout_s:.0f} s; "
                                   "see `ray logs` for its log") from None
    if isinstance(result, dict) and "error" in result:
        error = CostschedError(result["error"])
        error.exit_code = int(result.get("exit_code", 1))
        raise error
    return result


CODE_EXCLUDES = [".git", ".venv", "venv", "__pycache__", "*.pyc", ".pytest_cache"]
"""Never shipped with a job's code (``.gitignore`` is honoured too)."""


def code_package(directory: str) -> str:
    """The ``gcs://`` URI of the job code in ``directory``: the working directory of the
    Ray job this runs in when it is that folder (``ray job submit --working-dir``), else
    the folder uploaded to the cluster now (content-addressed: an unchanged folder is
    not uploaded twice)."""
    import tempfile

    from ray._private.runtime_env.packaging import (
        get_uri_for_directory,
        upload_package_if_needed,
    )

    current = (ray.get_runtime_context().runtime_env or {}).get("working_dir")
    if isinstance(current, str) and current.startswith("gcs://") and (
            os.path.realpath(directory) == os.path.realpath(os.getcwd())):
        return current
    uri = get_uri_for_directory(directory, include_gitignore=True, excludes=CODE_EXCLUDES)
    with tempfile.TemporaryDirectory(prefix="costsched-code-") as scratch:
        try:
            upload_package_if_needed(uri, scratch, directory, include_gitignore=True,
                                     excludes=CODE_EXCLUDES, logger=None)
        except ValueError as exc:  # e.g. over Ray's package size limit
            raise ConfigError(f"cannot ship {directory} as the job's code: {exc}") from None
    return uri


def remove_service() -> None:
    """Kill the scheduler actor for good (after its ``shutdown``)."""
    ray.kill(service(), no_restart=True)
