"""A spot node's reclaim notice, on a real local Ray cluster whose nodes share no disk.

``ray.cluster_utils.Cluster``: a head without slots, one spot node and one on-demand
node of one ``cpu_slot`` each (both marked ``instance_local-cpu``), every node with its
own temp folder, run state on a local S3 server (``moto``), and a local stand-in for
EC2's instance metadata service (IMDSv2, one path per node). The controller runs here
with the real cluster client (and its notice watchers), job runner and the default
``cost-aware`` policy. A 1-worker spot job (a user's own loop that reports every few
steps and writes a checkpoint only when asked to stop) starts on the spot node (other
work holds the on-demand slot). When the metadata service of the spot node says it will
be reclaimed, the job stops at a checkpoint and moves to the on-demand node before the
node goes; it resumes from the checkpoint its stop wrote, at or past the step it had
reported when told (without the notice it would have none and start over), runs to the
end with one spot restart and no failure, and the ledger bills the first attempt at the
spot price and the second on-demand, as recomputed from its intervals and the catalog
read as plain YAML. Only then is the spot node removed.
"""

from __future__ import annotations

import time

import pytest
import yaml

ray = pytest.importorskip("ray")

from costsched.config.scheduler import SchedulerConfig  # noqa: E402
from costsched.cost.ledger import Ledger  # noqa: E402
from costsched.cost.prices import load_catalog  # noqa: E402
from costsched.ray_layer import channel  # noqa: E402
from costsched.ray_layer.scheduler.cluster import RayClusterClient  # noqa: E402
from costsched.ray_layer.scheduler.notices import SpotNotices  # noqa: E402
from costsched.ray_layer.scheduler.runner import RayJobRunner  # noqa: E402
from costsched.scheduler.controller import SchedulerController  # noqa: E402
from costsched.scheduler.interfaces import SystemClock  # noqa: E402
from tests.support import ticking  # noqa: E402
from tests.support.charges import recomputed_usd  # noqa: E402
from tests.support.imds import FakeImds  # noqa: E402
from tests.support.nodes import cluster_without_shared_disk, train_worker_nodes  # noqa: E402

pytestmark = pytest.mark.ray

BUCKET = "costsched-spot-notice"
TICK_S = 2.0
MARK = {"cpu_slot": 1, "instance_local-cpu": 1}
STEPS = 240


@pytest.fixture(scope="module")
def site():
    with cluster_without_shared_disk(BUCKET, [MARK | {"spot": 1}, MARK], cpus_per_node=2) as (
            cluster, _):
        yield cluster


def _job_yaml() -> str:
    """A user's own loop (tests/support/userloop.py) that reports every 5 steps and writes
    a checkpoint only when asked to stop: all it keeps across a move is the stop's."""
    return yaml.safe_dump({
        "name": "spotty", "entrypoint": "tests.support.userloop:train_loop",
        "entrypoint_config": {"steps": STEPS, "step_s": 0.15, "report_every": 5,
                              "checkpoint_every": 10 * STEPS},
        "training": {"num_epochs": 1, "global_batch_size": 16},
        "scaling": {"min_workers": 1, "max_workers": 1, "accelerator_resource": "cpu_slot",
                    "use_gpu": False},
        "checkpoint": {"max_failures": 0},
        "cost": {"instance_type": "local-cpu", "budget_usd": 1.0, "spot": True}})


def test_a_job_on_a_spot_node_with_a_reclaim_notice_checkpoints_and_moves(site, hold, tmp_path):
    marked = {n["NodeID"]: n["Resources"] for n in ray.nodes() if n["Alive"]}
    spot_node = next(n for n in site.worker_nodes if marked[n.node_id].get("spot"))
    spot, od = spot_node.node_id, next(n.node_id for n in site.worker_nodes
                                       if n is not spot_node)
    holder = hold(od)
    catalog = load_catalog()
    with FakeImds() as imds:
        config = SchedulerConfig(policy="cost-aware", round_s=TICK_S,
                                 accelerator_resource="cpu_slot", spot_notice_url=imds.url,
                                 state_path=str(tmp_path / "scheduler.db"), stop_grace_s=60.0)
        ledger_path = str(tmp_path / "ledger.db")
        notices = SpotNotices(imds.url, poll_s=0.5)
        controller = SchedulerController.from_config(
            config, cluster=RayClusterClient("cpu_slot", catalog, notices),
            runner=RayJobRunner(catalog, ledger_path, f"s3://{BUCKET}/runs", stop_grace_s=60.0),
            clock=SystemClock())
        job_id = controller.submit(_job_yaml())

        def tick_until(done, timeout_s: float, what: str):
            return ticking.tick_until(controller, job_id, done, timeout_s, what, tick_s=TICK_S)

        def stepped(since: float):
            return ticking.stepped(job_id, since)

        started = time.time()
        controller.tick()
        assert controller.store.get(job_id).placement == {spot: 1}
        tick_until(lambda: stepped(started), 300, "no step on spot")
        assert imds.reads.get(spot), "the spot node's watcher reads its metadata"
        assert not imds.reads.get(od), "no watcher on an on-demand node"

        ray.kill(holder)
        reached = channel.progress(job_id)["global_step"]
        imds.notify(spot)
        noticed = time.time()
        tick_until(lambda: controller.store.get(job_id).spot_restarts, 60, "not stopped")
        detail = [e["detail"] for e in controller.logs(job_id)]
        assert any(d.startswith("spot notice: node ") for d in detail), detail
        progress = tick_until(lambda: stepped(noticed), 300, "no step after the notice")
        job = controller.store.get(job_id)
        assert (job.placement, job.failures) == ({od: 1}, 0)
        assert train_worker_nodes() == {od}
        # Its only checkpoint is the one the stop wrote (without the notice it would start
        # over): it resumes at or past the step it had reported when told.
        assert progress["resumed_from_step"] >= reached > 0, (progress, reached)
        site.remove_node(spot_node)  # the cloud takes the node back

        tick_until(lambda: controller.store.get(job_id).state == "COMPLETED", 600, "not done")
        job = controller.store.get(job_id)
        assert (job.spot_restarts, job.failures, job.restarts) == (1, 0, 1)
        ledger = Ledger(ledger_path, catalog)
        assert [i["spot"] for i in ledger.intervals(job_id)] == [1, 0]
        assert ledger.run_cost_usd(job_id) == pytest.approx(
            recomputed_usd(ledger, job_id, spot_attempts=frozenset({1})), rel=1e-6)
        notices.close()
