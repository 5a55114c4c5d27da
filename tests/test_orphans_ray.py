"""A placement group whose creating actor died is freed; live ones are kept.

This is what a Ray Train controller killed while its workers start leaves behind
(a job stopped before its first report): slots reserved for nobody, which made
every later job wait for ever."""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")

from ray.util.placement_group import placement_group, placement_group_table  # noqa: E402

from costsched.ray_layer.scheduler.cluster import remove_orphaned_placement_groups  # noqa: E402


@ray.remote(num_cpus=0)
class Reserver:
    """Stands for a Train controller: reserves a slot in a placement group it creates."""

    def reserve(self) -> str:
        self.group = placement_group([{"slot": 1}])
        ray.get(self.group.ready())
        return self.group.id.hex()


@ray.remote(num_cpus=0)
class Owner:
    """Stands for a job's driver: owns the reserver, as the driver owns the controller."""

    def start(self) -> str:
        self.reserver = Reserver.remote()
        return ray.get(self.reserver.reserve.remote())


def test_a_group_left_by_a_dead_actor_is_freed_and_live_groups_are_kept():
    ray.init(resources={"slot": 3}, logging_level="ERROR", include_dashboard=False)
    try:
        owner = Owner.options(lifetime="detached").remote()
        orphan = ray.get(owner.start.remote())
        live_owner = Owner.remote()
        live = ray.get(live_owner.start.remote())
        own = placement_group([{"slot": 1}])  # the driver's own group
        ray.get(own.ready())
        assert remove_orphaned_placement_groups() == 0  # every creator alive
        assert ray.available_resources().get("slot", 0) == 0

        ray.kill(owner)  # its reserver dies with it; the group stays reserved
        deadline = time.monotonic() + 30
        while not remove_orphaned_placement_groups():
            assert time.monotonic() < deadline, "the orphaned group was never freed"
            time.sleep(0.2)
        table = placement_group_table()
        assert table[orphan]["state"] == "REMOVED"
        assert table[live]["state"] == "CREATED"
        assert table[own.id.hex()]["state"] == "CREATED"
        deadline = time.monotonic() + 30  # the raylet returns the slot a moment later
        while ray.available_resources().get("slot", 0) != 1:
            assert time.monotonic() < deadline, ray.available_resources()
            time.sleep(0.2)
    finally:
        ray.shutdown()
