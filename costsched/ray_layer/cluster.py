"""Connecting to Ray: an existing cluster when one is given, else a local one in-process."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

import ray

from costsched.ray_layer import console

if TYPE_CHECKING:
    from costsched.config.job import JobConfig


def ensure_ray(job: JobConfig, address: str | None = None, *, verbose: bool = False) -> None:
    """Connect to ``address`` (or ``RAY_ADDRESS``), else start a local Ray.

    ``address="local"`` always starts a local Ray in this process.

    A local Ray started here declares the job's emulated accelerator slots as a
    custom resource, enough for ``max_workers`` workers, so CPU-only machines
    run the same scheduling path as a GPU cluster.

    Unless ``verbose``, the console shows costsched's lines only, not Ray's (see
    :mod:`costsched.ray_layer.console`).
    """
    if ray.is_initialized():
        return
    console.use_plain_output()  # before Ray starts processes that inherit the environment
    level = console.ray_logging_level(verbose)
    address = address or os.environ.get("RAY_ADDRESS")
    if address and address != "local":
        ray.init(address=address, logging_level=level)
    else:
        scaling = job.scaling
        resources = {}
        if scaling.accelerator_resource != "GPU":
            resources[scaling.accelerator_resource] = scaling.max_workers * (
                scaling.accelerators_per_worker
            )
        # "local": a new Ray for this process, even where `ray start` runs another.
        ray.init(address="local", resources=resources, logging_level=level,
                 runtime_env=_code_path(job))
    if not verbose:
        console.show_only_costsched_lines()


def _code_path(job: JobConfig) -> dict | None:
    """A local Ray's workers import a job's entrypoint from the directory it was
    started in, as the driver does (a cluster gets the code from ``ray job submit
    --working-dir``)."""
    if job.entrypoint is None:
        return None
    paths = [os.getcwd(), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}}


def ensure_auth_token() -> None:
    """Create the Ray auth token (``~/.ray/auth_token``) if there is none, as a new
    local ``ray.init()`` would: ``ray start`` with token authentication refuses to run
    without one, and on a fresh machine nothing has made it yet."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            generate_and_save_token,
        )
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # a Ray without token authentication
        return
    loader = AuthenticationTokenLoader.instance()
    if not loader.has_token(ignore_auth_mode=True):
        generate_and_save_token()
    # Leave no token cached in this process: Ray reads it again where it needs it. A
    # cache left by this check made a later cluster started from the same process
    # cancel the first actor this process created there ("all references to the actor
    # were removed"; seen in the test suite, after the end-to-end module).
    loader.reset_cache()


def use_token_auth_if_available() -> None:
    """Speak token authentication (Ray 2.60's default for the clusters it starts) when
    a token is present (``~/.ray/auth_token`` or RAY_AUTH_TOKEN*) and RAY_AUTH_MODE is
    unset: a client joining a running cluster does not switch it on by itself."""
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available,
        )
    except ImportError:  # a Ray without token authentication
        return
    quiet = logging.getLogger(maybe_enable_token_auth_if_token_available.__module__)
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # its "enabled" notice would break one-line errors
    try:
        maybe_enable_token_auth_if_token_available(warn_if_disabled=False)
    finally:
        quiet.setLevel(level)


def shortfall(job: JobConfig) -> str | None:
    """Why the connected cluster cannot hold ``min_workers`` right now, or None."""
    total = ray.cluster_resources()
    need = {k: v * job.scaling.min_workers for k, v in job.scaling.resources_per_worker().items()}
    missing = {k: v for k, v in need.items() if total.get(k, 0.0) < v}
    if not missing:
        return None
    have = {k: total.get(k, 0.0) for k in missing}
    return f"the cluster has {have} but {job.scaling.min_workers} worker(s) need {missing}"
