"""A spot node's interruption notice, read from the cloud's instance metadata (pure; no Ray).

AWS tells a spot instance two minutes before it reclaims it: the instance metadata
service (IMDSv2: a session token from ``PUT /latest/api/token``, then
``GET /latest/meta-data/spot/instance-action``) answers 404 until then, and then
``{"action": "terminate" | "stop" | "hibernate", "time": "2026-12-03T08:22:00Z"}``.
A job on such a node can still write a checkpoint and end in that time, and resume
elsewhere from it, instead of losing everything since its last checkpoint. The Ray
layer runs one :class:`NoticeLoop` on each spot node
(:mod:`costsched.ray_layer.scheduler.notices`) and the scheduler stops the jobs there.

``url`` is the metadata service's base address; ``{node_id}`` in it is replaced by the
Ray node id of the node asking (a metadata proxy per node; tests serve one per node).
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

IMDS_URL = "http://169.254.169.254"
"""EC2's instance metadata service (the scheduler config's default ``spot_notice_url``)."""
TOKEN_TTL_S = 21600
ACTIONS = ("terminate", "stop", "hibernate")


@dataclass(frozen=True, kw_only=True)
class Notice:
    """What one read of the metadata service said."""

    reachable: bool
    """False when no metadata service answered (not on EC2, or blocked)."""
    action: str | None = None
    """``terminate``, ``stop`` or ``hibernate`` once the node has been told; else None."""
    time: str | None = None
    """When the cloud will act, as it says it (ISO 8601, UTC)."""


def read_notice(url: str, *, timeout_s: float = 2.0) -> Notice:
    """One IMDSv2 read of the spot interruption notice at ``url``."""
    base = url.rstrip("/")
    try:
        request = urllib.request.Request(
            f"{base}/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": str(TOKEN_TTL_S)})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            token = response.read().decode()
        request = urllib.request.Request(f"{base}/latest/meta-data/spot/instance-action",
                                         headers={"X-aws-ec2-metadata-token": token})
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            body = json.loads(response.read().decode() or "{}")
    except urllib.error.HTTPError as exc:
        return Notice(reachable=True) if exc.code == 404 else Notice(reachable=False)
    except (OSError, ValueError):
        return Notice(reachable=False)
    action = body.get("action") if isinstance(body, dict) else None
    if action not in ACTIONS:
        return Notice(reachable=True)
    return Notice(reachable=True, action=action, time=str(body.get("time") or ""))


class NoticeLoop:
    """Reads the notice every ``poll_s`` seconds on a daemon thread until told; gives up
    after ``unreachable_tries`` reads in a row found no metadata service (not a cloud
    node: nothing will ever come). :attr:`latest` is the last read; ``on_notice`` is
    called once, on the loop's thread, when the notice comes."""

    def __init__(self, url: str, *, poll_s: float = 5.0, unreachable_tries: int = 3,
                 read: Callable[[str], Notice] = read_notice,
                 on_notice: Callable[[], object] | None = None):
        self.url, self.poll_s, self._read, self._on_notice = url, poll_s, read, on_notice
        self.unreachable_tries = unreachable_tries
        self.latest = Notice(reachable=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="spot-notice", daemon=True)

    def start(self) -> NoticeLoop:
        self._thread.start()
        return self

    def _run(self) -> None:
        misses = 0
        while not self._stop.is_set():
            self.latest = notice = self._read(self.url)
            if notice.action is not None:  # told: the node is going; nothing more to learn
                if self._on_notice is not None:
                    self._on_notice()
                return
            misses = 0 if notice.reachable else misses + 1
            if misses >= self.unreachable_tries:
                return
            self._stop.wait(self.poll_s)

    def close(self) -> None:
        self._stop.set()


def node_url(url: str, node_id: str) -> str:
    """``url`` with ``{node_id}`` replaced by ``node_id``."""
    return url.replace("{node_id}", node_id)
