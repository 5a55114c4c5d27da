"""The scheduler's view of a live Ray cluster: ``ray.nodes()`` and ``request_resources``.

Implements :class:`costsched.scheduler.interfaces.ClusterClient`. A node's
instance type comes from a custom resource ``instance_<type>`` (set it in the
autoscaler's node-type ``resources``); a node without one is the local machine
and is priced as the catalog's ``local-cpu``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
from collections.abc import Mapping, Sequence

import ray
from ray.autoscaler.sdk import request_resources

from costsched.config.job import CostSection
from costsched.cost.prices import PriceCatalog
from costsched.errors import SchedulerUnavailable
from costsched.ray_layer.scheduler.notices import SpotNotices
from costsched.scheduler.interfaces import NodeRecord, ResourceBundle

log = logging.getLogger(__name__)

HEAD_RESOURCE = "node:__internal_head__"
LOCAL_TYPE = "local-cpu"
INSTANCE_PREFIX = "instance_"
MARKER_SHARE = 0.001
"""How much of a node's marker resource one worker asks for: any number of workers
can share a node while the request still names its type."""


def head_node_id() -> str:
    """The head node's id (the scheduler's state file and the job drivers live there)."""
    for node in ray.nodes():
        if node.get("Alive") and HEAD_RESOURCE in (node.get("Resources") or {}):
            return node["NodeID"]
    raise SchedulerUnavailable("the Ray cluster reports no alive head node")


def marked_bundle(bundle: ResourceBundle) -> dict[str, float]:
    """A worker's resources plus the markers of the node type and market it needs."""
    marked = dict(bundle.resources)
    marked[INSTANCE_PREFIX + bundle.instance_type] = MARKER_SHARE
    # The market is named either way: an on-demand request met by a spot node would
    # give a node that on-demand jobs may never use (the policy keeps them off spot).
    marked["spot" if bundle.spot else "on_demand"] = MARKER_SHARE
    return marked


def marked_type(resources: Mapping[str, float], catalog: PriceCatalog) -> str | None:
    """The catalog instance type a node's ``instance_<type>`` marker names; None without one."""
    for key in resources:
        if key.startswith(INSTANCE_PREFIX) and key[len(INSTANCE_PREFIX):] in catalog.instance_types:
            return key[len(INSTANCE_PREFIX):]
    return None


def billed_cost(cost: CostSection, placement: Mapping[str, int], catalog: PriceCatalog,
                resources_by_node: Mapping[str, Mapping[str, float]]) -> CostSection:
    """``cost`` priced at the node type and market (spot or not) of ``placement``'s
    nodes, known from their ``instance_<type>`` marker (a node without one, such as a
    local machine, counts as the declared type and market). A placement across types
    is billed at its dearest type per accelerator, never at less than it used.
    ``resources_by_node``: each node's resources by node id (:func:`node_resources`)."""
    declared = (catalog.instance(cost.instance_type).gpu_usd_per_hour(cost.spot),
                cost.instance_type, cost.spot)
    priced = []
    for node_id in placement:
        resources = resources_by_node.get(node_id, {})
        name = marked_type(resources, catalog)
        if name is None:
            priced.append(declared)  # a node of unknown type: as declared
            continue
        spot = bool(resources.get("spot", 0))
        priced.append((catalog.instance(name).gpu_usd_per_hour(spot), name, spot))
    if len(set(priced)) > 1:
        log.warning("placement spans node types %s; billed at the dearest",
                    sorted({name for _, name, _ in priced}))
    _, name, spot = max(priced, default=declared)
    return dataclasses.replace(cost, instance_type=name, spot=spot)


def node_resources() -> dict[str, Mapping[str, float]]:
    """Each node's total resources, by node id."""
    return {n["NodeID"]: n.get("Resources") or {} for n in ray.nodes()}


def _available_per_node() -> Mapping[str, Mapping[str, float]] | None:
    """Free resources per node id, or None when this Ray cannot say."""
    try:
        from ray._private.state import available_resources_per_node
        return available_resources_per_node()
    except Exception:  # noqa: BLE001 - a private API; fall back to totals
        return None


class RayClusterClient:
    """Nodes and autoscaler requests of the connected Ray cluster."""

    def __init__(self, accelerator_resource: str, catalog: PriceCatalog,
                 notices: SpotNotices | None = None):
        self.accelerator_resource = accelerator_resource
        self.catalog = catalog
        self.notices = notices

    def nodes(self) -> Sequence[NodeRecord]:
        """All nodes Ray knows, dead ones with ``alive=False``.

        ``total_slots`` = the node's ``accelerator_resource``; ``free_slots`` from
        Ray's per-node available resources (totals when unavailable);
        ``usd_per_hour`` = the catalog's on-demand (or spot) node price of its type;
        ``reclaim_notice`` from the spot notice watchers, when there are any.
        """
        free = _available_per_node()
        records = []
        for node in ray.nodes():
            resources = node.get("Resources", {}) or {}
            total = int(resources.get(self.accelerator_resource, 0))
            node_id = node["NodeID"]
            if free is None or node_id not in free:
                free_slots = total
            else:
                free_slots = int(free[node_id].get(self.accelerator_resource, 0))
            node_type = self._node_type(resources)
            spot = bool(resources.get("spot", 0))
            instance = self.catalog.instance(node_type)
            records.append(NodeRecord(
                node_id=node_id, node_type=node_type, gpu_model=instance.gpu_model,
                total_slots=total, free_slots=free_slots,
                usd_per_hour=instance.node_usd_per_hour(spot), spot=spot,
                alive=bool(node.get("Alive", False))))
        if self.notices is not None:
            noticed = self.notices.noticed(r.node_id for r in records if r.spot and r.alive)
            records = [dataclasses.replace(r, reclaim_notice=r.node_id in noticed)
                       for r in records]
        return records

    def _node_type(self, resources: Mapping[str, float]) -> str:
        return marked_type(resources, self.catalog) or LOCAL_TYPE

    def request_resources(self, bundles: Sequence[ResourceBundle]) -> None:
        """Replace the standing autoscaler request with ``bundles`` (one per worker).

        Each bundle also asks for a sliver of its node type's marker resource
        (``instance_<type>``, and ``spot`` for spot capacity; see cluster.yaml), so the
        autoscaler launches the type the policy chose, not just any type that fits."""
        request_resources(bundles=[marked_bundle(b) for b in bundles])

    def clear_resource_request(self) -> None:
        """Withdraw the standing request so idle nodes may scale down."""
        request_resources(bundles=[])


def remove_orphaned_placement_groups() -> int:
    """Remove placement groups whose creating actor is dead but that are still held.

    A Ray Train controller killed while its worker group starts (a job stopped
    before its first report) leaves its placement group reserved: Ray Train's own
    cleaner only learns the group once the workers are up, and a group made by an
    actor lives as long as its job. The GCS records each group's creator; one whose
    creator died holds slots for nobody. Returns how many were removed (0 when the
    table cannot be read)."""
    try:
        from ray._private.state import state
        from ray.core.generated import gcs_pb2
        from ray.util.placement_group import PlacementGroup

        rows = [gcs_pb2.PlacementGroupTableData.FromString(raw) for raw in
                state._connect_and_get_accessor().get_placement_group_table()]
    except Exception as exc:  # noqa: BLE001 - a private Ray API: cleanup is best effort
        log.warning("cannot read the placement group table: %s", exc)
        return 0
    removed = 0
    for row in rows:
        held = row.state != gcs_pb2.PlacementGroupTableData.REMOVED
        by_actor = bool(row.creator_actor_id) and not ray.ActorID(row.creator_actor_id).is_nil()
        if held and by_actor and row.creator_actor_dead and not row.is_detached:
            try:
                ray.util.remove_placement_group(PlacementGroup(ray.PlacementGroupID(
                    row.placement_group_id)))
                removed += 1
            except Exception as exc:  # noqa: BLE001 - removed meanwhile
                log.warning("cannot remove orphaned placement group: %s", exc)
    return removed



CLEANER_CLASS = "PlacementGroupCleaner"
"""Ray Train's detached helper that frees a dead Train controller's placement group."""


def stop_orphaned_cleaners() -> int:
    """End Ray Train's placement-group cleaners whose Train controller is dead.

    A controller starts its cleaner (a detached actor on the head) and then tells it to
    watch; one killed in between (a job stopped while it starts) leaves the cleaner idle
    for ever, a process per such stop. Its creator is its owner in the GCS's actor table:
    a cleaner alive whose owner is no live actor's worker watches nothing (the placement
    group it would free is :func:`remove_orphaned_placement_groups`'s). No handle to it
    can be had (it is nameless), so its process on this node is sent SIGTERM. Returns
    how many were ended (0 when the table cannot be read)."""
    try:
        from ray._private.state import state
        from ray.core.generated import gcs_pb2

        rows = [gcs_pb2.ActorTableData.FromString(raw) for raw in
                state._connect_and_get_accessor().get_actor_table(None, None)]
        here = ray.NodeID.from_hex(ray.get_runtime_context().get_node_id()).binary()
    except Exception as exc:  # noqa: BLE001 - a private Ray API: cleanup is best effort
        log.warning("cannot read the actor table: %s", exc)
        return 0
    alive = gcs_pb2.ActorTableData.ALIVE
    live_workers = {row.address.worker_id for row in rows if row.state == alive}
    ended = 0
    for row in rows:
        if (row.class_name == CLEANER_CLASS and row.state == alive and row.pid
                and row.address.node_id == here
                and row.owner_address.worker_id not in live_workers):
            try:
                os.kill(row.pid, signal.SIGTERM)
                ended += 1
            except OSError as exc:  # gone meanwhile
                log.warning("cannot end an idle placement-group cleaner: %s", exc)
    return ended


def free_orphans() -> None:
    """Free what dead Train controllers left: their placement groups, and Ray Train's
    cleaners that were never told what to watch."""
    remove_orphaned_placement_groups()
    stop_orphaned_cleaners()
