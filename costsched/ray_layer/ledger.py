"""One writer per ledger: a Ray actor on the head node owns the SQLite file.

Job drivers, Train controllers, sweep trials and the scheduler may run on any
node of a cluster whose nodes share no disk, and SQLite must not be opened on
a network filesystem. So every ledger write goes through one named actor per
ledger file (``costsched-ledger-<hash of its path>``), pinned to the head node
and created on first use; :func:`ledger_for` returns a :class:`RemoteLedger`
with the same methods as :class:`~costsched.cost.ledger.Ledger`, each a Ray
call to that actor. Calls run one at a time, so writes never interleave.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from costsched.cost.ledger import Ledger
from costsched.cost.prices import PriceCatalog
from costsched.ray_layer.scheduler.cluster import head_node_id
from costsched.ray_layer.scheduler.names import NAMESPACE

LEDGER_PREFIX = "costsched-ledger-"


class LedgerService:
    """The ledger file's only writer (an actor on the head node)."""

    def __init__(self, path: str, catalog: PriceCatalog):
        self._ledger = Ledger(path, catalog)

    def call(self, method: str, args: tuple, kwargs: dict[str, Any]) -> Any:
        return getattr(self._ledger, method)(*args, **kwargs)

    def pid(self) -> int:
        return os.getpid()


class RemoteLedger:
    """A :class:`~costsched.cost.ledger.Ledger` whose calls run in the ledger's actor;
    picklable, so a driver hands it to Train controllers and trials."""

    def __init__(self, actor: ray.actor.ActorHandle, path: str, catalog: PriceCatalog):
        self._actor, self.path, self.catalog = actor, path, catalog

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_") or not callable(getattr(Ledger, method, None)):
            raise AttributeError(method)

        def call(*args: Any, **kwargs: Any) -> Any:
            return ray.get(self._actor.call.remote(method, args, kwargs))

        return call

    @property
    def actor(self) -> ray.actor.ActorHandle:
        return self._actor


def ledger_actor_name(path: str) -> str:
    return LEDGER_PREFIX + hashlib.sha1(path.encode()).hexdigest()[:12]


def ledger_for(path: str | os.PathLike[str], catalog: PriceCatalog) -> RemoteLedger:
    """The ledger at ``path`` (a head-node path), written through its actor (created,
    detached and pinned to the head node, if it does not run yet)."""
    path = os.path.abspath(os.path.expanduser(str(path)))
    actor = ray.remote(LedgerService).options(
        name=ledger_actor_name(path), namespace=NAMESPACE, get_if_exists=True,
        lifetime="detached", num_cpus=0, max_restarts=-1, max_concurrency=1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(head_node_id(), soft=False),
    ).remote(path, catalog)
    return RemoteLedger(actor, path, catalog)
