"""Other work on a test cluster's nodes: actors holding one ``cpu_slot`` each, which the
scheduler does not control (the ``hold`` fixture of ``tests/conftest.py``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import ray


@ray.remote(num_cpus=0, resources={"cpu_slot": 1})
class OtherWork:
    """Holds one slot of its node: work the scheduler does not control."""

    def ready(self) -> bool:
        return True


def holding() -> Iterator[Callable[[str], ray.actor.ActorHandle]]:
    """Yields hold(node_id): other work on one slot of that node; all ended after."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actors = []

    def start(node_id: str):
        actor = OtherWork.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            node_id, soft=False)).remote()
        actors.append(actor)
        ray.get(actor.ready.remote(), timeout=60)
        return actor

    yield start
    for actor in actors:
        ray.kill(actor)
