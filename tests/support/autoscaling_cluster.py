"""A local fake autoscaling Ray cluster (``tests/support/fake_cluster.yaml``) for tests.

Ray's ``fake_multinode`` node provider makes each "node" an extra raylet on this
machine, so the autoscaler really adds and removes nodes. :class:`LocalAutoscalingCluster`
is a :class:`ray.cluster_utils.AutoscalingCluster` that is safe beside other
Ray clusters on the same machine, which Ray 2.60's class is not:

* ``AutoscalingCluster.start`` and ``shutdown`` run ``ray stop --force``, which
  kills every Ray process of the user. Here the head runs as
  ``ray start --head --block`` in its own process group, in its own temp dir, on
  free ports; shutdown ends that process and then only its process group.
* Ray 2.60's wheel lacks the ``fake_multi_node/example.yaml`` that
  ``AutoscalingCluster`` merges its config into; the YAML here is complete.
* The cluster's processes get ``RAY_ADDRESS`` set to it: with a temp dir of its
  own, Ray code that finds "the" cluster by itself (the state API, used by Ray
  Train's placement-group cleaner) would otherwise pick another local cluster.

Only autoscaler v1 works: v2 merges defaults from that missing example.yaml.
Token authentication stays on: ``RAY_AUTH_MODE=token`` for the head and its
fake nodes (they read ``~/.ray/auth_token``, created first if missing), and
``connect()`` switches this process to it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
import yaml
from ray.cluster_utils import AutoscalingCluster

from costsched.ray_layer.cluster import ensure_auth_token, use_token_auth_if_available

DEFAULT_FAKE_CLUSTER_CONFIG = Path(__file__).resolve().parent / "fake_cluster.yaml"
HEAD_TYPE = "ray.head.default"
START_TIMEOUT_S = 60.0


def load_fake_cluster_config(path: str | Path | None = None, *,
                             idle_timeout_minutes: float | None = None) -> dict[str, Any]:
    """The autoscaler config at ``path`` (default ``tests/support/fake_cluster.yaml``),
    with ``idle_timeout_minutes`` replaced when given."""
    config = yaml.safe_load(Path(path or DEFAULT_FAKE_CLUSTER_CONFIG).read_text())
    if idle_timeout_minutes is not None:
        config["idle_timeout_minutes"] = idle_timeout_minutes
    return config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class LocalAutoscalingCluster(AutoscalingCluster):
    """An autoscaling cluster of fake nodes on this machine; see the module docstring.

    ``start()`` returns the GCS address; ``connect()`` joins it from this process;
    ``shutdown()`` stops it (idempotent). ``logs_dir`` holds its logs meanwhile.
    """

    def __init__(self, config: Mapping[str, Any]):
        config = copy.deepcopy(dict(config))
        worker_types = config.pop("available_node_types")
        head = worker_types.pop(HEAD_TYPE)
        super().__init__(head_resources=dict(head["resources"]),
                         worker_node_types=worker_types, **config)
        self.address: str | None = None
        self.logs_dir: str | None = None
        self._proc: subprocess.Popen | None = None
        self._temp_dir: str | None = None

    def _generate_config(self, head_resources, worker_node_types, autoscaler_v2=False,
                         **config_kwargs):
        """The whole config is given (no example.yaml to start from); add the head type."""
        if autoscaler_v2:
            raise ValueError("autoscaler v2 needs fake_multi_node/example.yaml, "
                             "which Ray 2.60's wheel lacks")
        head = {"resources": dict(head_resources), "node_config": {}, "max_workers": 0}
        return dict(config_kwargs,
                    available_node_types={**worker_node_types, HEAD_TYPE: head})

    def start(self, _system_config=None, override_env: Mapping[str, str] | None = None) -> str:
        """Start the head (its autoscaler adds workers on demand); returns its address."""
        if self._proc is not None:
            raise RuntimeError("fake cluster already started")
        # Short path: Ray's unix socket paths under it must stay under 108 bytes.
        self._temp_dir = tempfile.mkdtemp(prefix="rayfake-", dir="/tmp")
        self.logs_dir = os.path.join(self._temp_dir, "session_latest", "logs")
        port = _free_port()
        self.address = f"{ray.util.get_node_ip_address()}:{port}"
        config = copy.deepcopy(self._config)
        config["provider"]["gcs_address"] = self.address  # its default is port 6379
        config_path = os.path.join(self._temp_dir, "autoscaling.json")
        Path(config_path).write_text(json.dumps(config))
        head = dict(self._head_resources)
        cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
               f"--port={port}", f"--temp-dir={self._temp_dir}",
               f"--autoscaling-config={config_path}", f"--num-cpus={head.pop('CPU', 1)}",
               f"--num-gpus={head.pop('GPU', 0)}", f"--ray-client-server-port={_free_port()}",
               f"--dashboard-port={_free_port()}", "--dashboard-host=127.0.0.1",
               "--dashboard-agent-listen-port=0",
               "--min-worker-port=0", "--max-worker-port=0", "--disable-usage-stats"]
        if "object_store_memory" in head:
            cmd.append(f"--object-store-memory={int(head.pop('object_store_memory'))}")
        if head:
            cmd.append(f"--resources={json.dumps(head)}")
        if _system_config is not None:
            cmd.append(f"--system-config={json.dumps(_system_config, separators=(',', ':'))}")
        env = dict(os.environ, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1",
                   AUTOSCALER_METRIC_PORT=str(_free_port()), RAY_ADDRESS=self.address,
                   RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")
        env.setdefault("RAY_AUTH_MODE", "token")
        env.update(override_env or {})
        ensure_auth_token()
        out_path = os.path.join(self._temp_dir, "ray_start.out")
        with open(out_path, "wb") as out:
            self._proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, start_new_session=True)
        ready = os.path.join(self._temp_dir, "ray_current_cluster")  # written once up
        deadline = time.monotonic() + START_TIMEOUT_S
        while not os.path.exists(ready):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.shutdown(keep_temp_dir=True)
                tail = Path(out_path).read_text(errors="replace")[-3000:]
                raise RuntimeError(f"fake cluster head did not start (logs kept in "
                                   f"{self._temp_dir}); `ray start` said:\n{tail}")
            time.sleep(0.25)
        return self.address

    def connect(self, **init_kwargs: Any) -> None:
        """``ray.init`` this process to the cluster (token auth, as the head uses)."""
        use_token_auth_if_available()  # start() made sure a token exists
        ray.init(address=self.address, **init_kwargs)

    def shutdown(self, keep_temp_dir: bool = False) -> None:
        """Stop the head, then any process left in its process group (fake nodes);
        nothing else. Removes the temp dir (logs) unless ``keep_temp_dir``."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        pgid = proc.pid  # `ray start` leads its own session and process group
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if pgid != os.getpgrp():
            _end_group(pgid)
        if self._temp_dir and not keep_temp_dir:
            shutil.rmtree(self._temp_dir, ignore_errors=True)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) process ids in process group ``pgid``, from /proc."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            pids.append(int(name))
    return pids


def _end_group(pgid: int, grace_s: float = 10.0) -> None:
    """SIGTERM process group ``pgid``, then SIGKILL what is left after ``grace_s``."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        if not _group_members(pgid):
            return
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)


def start_fake_cluster(path: str | Path | None = None, *,
                       idle_timeout_minutes: float | None = None) -> LocalAutoscalingCluster:
    """Start the fake cluster of ``path`` (default ``tests/support/fake_cluster.yaml``);
    the caller connects (``.connect()``) and must call ``.shutdown()``."""
    cluster = LocalAutoscalingCluster(load_fake_cluster_config(
        path, idle_timeout_minutes=idle_timeout_minutes))
    cluster.start()
    return cluster


@contextmanager
def fake_cluster(path: str | Path | None = None, *,
                 idle_timeout_minutes: float | None = None,
                 **init_kwargs: Any) -> Iterator[LocalAutoscalingCluster]:
    """Start the fake cluster, connect this process to it, and stop both on exit."""
    cluster = start_fake_cluster(path, idle_timeout_minutes=idle_timeout_minutes)
    try:
        cluster.connect(**init_kwargs)
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
