"""Spot interruption notices on a live Ray cluster: one watcher actor on each spot node.

Each watcher (0 CPUs, pinned to its node) reads its node's instance metadata every few
seconds (:class:`~costsched.scheduler.spot_notice.NoticeLoop`) and, when the cloud says
it will reclaim the node, wakes the scheduler so that the jobs there stop at a
checkpoint within the notice's two minutes instead of at the next round.
:class:`SpotNotices` keeps one watcher per alive spot node and tells the cluster client
which nodes have a notice.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from costsched.ray_layer.scheduler.names import NAMESPACE, SERVICE_NAME
from costsched.scheduler.spot_notice import NoticeLoop, node_url

log = logging.getLogger(__name__)

WATCHER_PREFIX = "costsched-notice-"
"""Name prefix of a node's watcher actor (then the node id)."""
ASK_TIMEOUT_S = 2.0
"""How long one round waits for the watchers' answers (a slow one counts as no notice)."""


class NoticeWatcher:
    """Reads one node's spot interruption notice (see the module docstring)."""

    def __init__(self, url: str, node_id: str, poll_s: float):
        self._loop = NoticeLoop(node_url(url, node_id), poll_s=poll_s,
                                on_notice=self._wake).start()

    def notice(self) -> bool:
        return self._loop.latest.action is not None

    @staticmethod
    def _wake() -> None:
        try:  # a scheduler run in-process (tests) has no actor: its next round will see it
            ray.get_actor(SERVICE_NAME, namespace=NAMESPACE).wake.remote()
        except Exception:  # noqa: BLE001 - best effort; the next round reads the notice
            log.info("spot notice read; no scheduler actor to wake")


class SpotNotices:
    """One :class:`NoticeWatcher` per alive spot node; ``url`` empty: none (off)."""

    def __init__(self, url: str, poll_s: float = 5.0):
        self.url, self.poll_s = url, poll_s
        self._watchers: dict[str, ray.actor.ActorHandle] = {}

    def noticed(self, spot_nodes: Iterable[str]) -> set[str]:
        """Those of ``spot_nodes`` (alive spot node ids) whose notice has come."""
        if not self.url:
            return set()
        wanted = set(spot_nodes)
        for node_id in set(self._watchers) - wanted:  # gone or no longer spot
            self._kill(node_id)
        for node_id in wanted - set(self._watchers):
            self._watchers[node_id] = ray.remote(NoticeWatcher).options(
                name=WATCHER_PREFIX + node_id, namespace=NAMESPACE, get_if_exists=True,
                num_cpus=0, max_restarts=0,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
            ).remote(self.url, node_id, self.poll_s)
        asked = {w.notice.remote(): node_id for node_id, w in self._watchers.items()}
        ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=ASK_TIMEOUT_S)
        noticed = set()
        for ref in ready:
            try:
                if ray.get(ref):
                    noticed.add(asked[ref])
            except Exception as exc:  # noqa: BLE001 - a watcher lost with its node
                log.warning("spot notice watcher on %s failed: %s", asked[ref][:12], exc)
                self._kill(asked[ref])
        return noticed

    def _kill(self, node_id: str) -> None:
        watcher = self._watchers.pop(node_id, None)
        if watcher is not None:
            with contextlib.suppress(Exception):  # already gone with its node
                ray.kill(watcher)

    def close(self) -> None:
        for node_id in list(self._watchers):
            self._kill(node_id)
