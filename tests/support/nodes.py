"""Per-node temp folders for a multi-node test cluster on one host."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray._private.utils import get_ray_address_file


def node_temp_root() -> Path:
    """A new short folder under which each node gets its own temp folder (short:
    Ray's socket paths must fit 107 bytes).

    A head started with its own temp folder still records its address in Ray's
    default one, which a machine that never ran Ray lacks and Ray does not create
    there: made here.
    """
    Path(get_ray_address_file(None)).parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="cs-"))


@contextlib.contextmanager
def cluster_without_shared_disk(bucket: str, node_resources: list[dict[str, float]],
                                cpus_per_node: int = 1) -> Iterator[tuple[Any, Path]]:
    """A local S3 server holding ``bucket`` and a ``ray.cluster_utils.Cluster`` whose
    head (1 CPU) and nodes (``cpus_per_node`` CPUs each, ``node_resources[i]``) each have
    their own temp folder, this process connected to it; yields the cluster and the temp
    root (a node added later gets a folder under it). Everything is shut down and
    removed after."""
    import ray
    from ray.cluster_utils import Cluster

    from tests.support.s3 import s3_server

    temp = node_temp_root()
    with s3_server(bucket):
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "temp_dir": str(temp / "head")})
        for i, resources in enumerate(node_resources):
            cluster.add_node(num_cpus=cpus_per_node, resources=resources,
                             temp_dir=str(temp / f"n{i}"))
        ray.init(address=cluster.address, logging_level="WARNING")
        try:
            yield cluster, temp
        finally:
            ray.shutdown()
            cluster.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


def train_worker_nodes() -> set[str]:
    """Ids of the nodes on which Ray runs a live Ray Train worker now, as Ray reports them."""
    from ray.util.state import list_actors

    return {a.node_id for a in list_actors(filters=[("class_name", "=", "RayTrainWorker"),
                                                    ("state", "=", "ALIVE")])}
