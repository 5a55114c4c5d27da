"""Every way a job ends releases what it held, on a real multi-node local Ray.

One ``ray.cluster_utils.Cluster`` for the module: a head (1 CPU, no job slot) and
two nodes with one ``cpu_slot`` each (a third joins, and is lost, in the last test).
Real jobs run through the live scheduler's job runner (a detached driver actor per
job, Ray Train, the run channel) and end every way a job can: one completes while
another fails beside it; one is cancelled the moment it starts, one once its Train
controller reserved its slot but before its first report, one while training; one
is preempted, then resumed and stopped for its budget; one is never asked to stop and
its driver's cap watchdog ends it at its budget; one loses its node. After
each ending, allowing a few seconds for Ray to free them:

- no more placement groups are held (CREATED, PENDING, PREPARED, RESCHEDULING) than
  before the job started, and every slot is free again;
- no named actor of the job is left, and no actor of its run (driver, Train
  controller, workers, Ray Train's placement group cleaner) is left, not even one
  still being created;
- the ledger records the run's outcome as the ending says: a cancel is CANCELLED,
  never FAILED.

A job started on the slot of a job cancelled while starting starts and takes steps.

The first test is the unit under all of this: a placement group whose creating
actor died (what a Train controller killed while its workers start leaves) is freed.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import time
from typing import Any

import pytest
import yaml

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402
from ray.util.placement_group import (  # noqa: E402
    placement_group,
    placement_group_table,
    remove_placement_group,
)

from costsched.config.scheduler import parse_submission  # noqa: E402
from costsched.cost.accounting import record_submitted_plan  # noqa: E402
from costsched.cost.forecast import RunProfile, forecast_from_profile  # noqa: E402
from costsched.cost.ledger import Ledger  # noqa: E402
from costsched.cost.prices import PriceCatalog, load_catalog, rate_of_job  # noqa: E402
from costsched.cost.report import runs_frame  # noqa: E402
from costsched.ray_layer import channel  # noqa: E402
from costsched.ray_layer.ledger import ledger_for  # noqa: E402
from costsched.ray_layer.scheduler.cluster import (  # noqa: E402
    remove_orphaned_placement_groups,
    stop_orphaned_cleaners,
)
from costsched.ray_layer.scheduler.names import DRIVER_PREFIX, NAMESPACE  # noqa: E402
from costsched.ray_layer.scheduler.runner import RayJobRunner  # noqa: E402
from tests.conftest import quickstart_dict  # noqa: E402
from tests.support.charges import recomputed_usd  # noqa: E402

pytestmark = pytest.mark.ray

SAMPLES = 2000
INTERVAL = 5
LONG_EPOCHS = 300
"""Epochs of a job that must still be training when it is stopped (it never gets far)."""
START_S = 300.0
"""How long a run may take to start and report its first step (or end) on a 2-core
machine other work shares; about 30 s when the machine is otherwise idle."""
STOP_S = 90.0
CAP_S = 10.0
"""Seconds of one worker a capped job's budget buys: less than a run takes to start
(about 30 s), so only the driver's cap watchdog can hold the cap (the run's own check
comes at its first report, too late)."""
RELEASE_S = 30.0
"""How long Ray may take to free what an ended run held."""
POLL_S = 0.2
RUN_ACTORS = ("RunDriver", "TrainController", "RayTrainWorker", "SynchronizationActor",
              "PlacementGroupCleaner")
"""Actor classes of one job's run: its driver, and what Ray Train starts for it."""
HELD = ("CREATED", "PENDING", "PREPARED", "RESCHEDULING")


@dataclasses.dataclass(frozen=True)
class Site:
    cluster: Any
    slots: tuple[str, str]
    """Node ids of the two one-slot nodes."""
    catalog: PriceCatalog
    ledger_path: str
    storage_path: str

    def runner(self) -> RayJobRunner:
        return RayJobRunner(self.catalog, self.ledger_path, self.storage_path,
                            stop_grace_s=STOP_S)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    # The head's ``slot`` resource is for the first test's stand-in reservers only. The
    # state API needs the dashboard: on a port of its own, as another Ray may hold 8265.
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"slot": 3}, "include_dashboard": True,
        "dashboard_port": 0})
    nodes = [cluster.add_node(num_cpus=1, resources={"cpu_slot": 1}) for _ in range(2)]
    # Ray Train's placement group cleaner asks the state API about its controller with no
    # address, which means the machine's latest Ray, not always this one when others run
    # here too (its monitor then dies and it never exits): name this one to every worker.
    ray.init(address=cluster.address, logging_level="WARNING",
             runtime_env={"env_vars": {"RAY_ADDRESS": cluster.address}})
    root = tmp_path_factory.mktemp("orphans")
    try:
        yield Site(cluster=cluster, slots=(nodes[0].node_id, nodes[1].node_id),
                   catalog=load_catalog(), ledger_path=str(root / "ledger.db"),
                   storage_path=str(root / "runs"))
    finally:
        ray.shutdown()
        cluster.shutdown()


# -- what a job holds ----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Holdings:
    """What the cluster holds that a job could leave behind."""

    groups: tuple[str, ...]
    """Placement groups not removed: their states."""
    free_slots: float
    run_actors: tuple[tuple[str, int], ...]
    """Actors of the run classes not dead, by class."""
    named: tuple[str, ...]
    """Named actors whose name carries a job id passed to :func:`holdings`."""


def held_groups() -> list[str]:
    """The states of the placement groups not removed."""
    return sorted(info["state"] for info in placement_group_table().values()
                  if info["state"] in HELD)


def run_actors(site: Site) -> list[tuple[str, str, int | None]]:
    """Actors of the run classes not dead: class, state, process id. One still being
    created counts: it holds a process once it is."""
    from ray.util.state import list_actors

    # This cluster's address: another Ray may run on the machine.
    return sorted((a.class_name, a.state, a.pid) for a in list_actors(
        address=site.cluster.address, filters=[("state", "!=", "DEAD")], limit=1000,
        raise_on_missing_output=False) if a.class_name in RUN_ACTORS)


def holdings(site: Site, *job_ids: str) -> Holdings:
    counts = collections.Counter(name for name, _, _ in run_actors(site))
    named = sorted(f"{a['namespace']}/{a['name']}"
                   for a in ray.util.list_named_actors(all_namespaces=True)
                   if any(job_id in a["name"] for job_id in job_ids))
    return Holdings(groups=tuple(held_groups()),
                    free_slots=ray.available_resources().get("cpu_slot", 0.0),
                    run_actors=tuple(sorted(counts.items())), named=tuple(named))


def no_more_than(now: Holdings, before: Holdings) -> bool:
    """Whether ``now`` holds nothing ``before`` did not (and no named actor of the jobs):
    what an earlier job still held then may have ended since."""
    return (not now.named and now.free_slots >= before.free_slots
            and collections.Counter(now.groups) <= collections.Counter(before.groups)
            and collections.Counter(dict(now.run_actors))
            <= collections.Counter(dict(before.run_actors)))


def leftover(site: Site, runner: RayJobRunner, job_ids: tuple[str, ...],
             before: Holdings) -> str | None:
    """What the jobs left behind: None once the cluster holds no more than it held before
    they started, and nothing of theirs. Waits up to :data:`RELEASE_S` for Ray to free
    it, while the runner's rounds (``advance``) go on, as the scheduler's do."""
    deadline = time.monotonic() + RELEASE_S
    while not no_more_than(now := holdings(site, *job_ids), before):
        if time.monotonic() > deadline:
            return (f"{', '.join(job_ids)} left behind: {now} (before: {before}); "
                    f"run actors: {run_actors(site)}")
        runner.advance()
        time.sleep(POLL_S)
    return None


def assert_released(site: Site, runner: RayJobRunner, *job_ids: str,
                    before: Holdings) -> None:
    left = leftover(site, runner, job_ids, before)
    assert left is None, left


def assert_holds(site: Site, job_id: str, before: Holdings) -> None:
    """While ``job_id`` trains, the checks of :func:`assert_released` see what it holds."""
    now = holdings(site, job_id)
    assert len(now.groups) > len(before.groups) and now.free_slots < before.free_slots, now
    assert f"{NAMESPACE}/{DRIVER_PREFIX}{job_id}" in now.named, now
    assert dict(now.run_actors).get("TrainController", 0) > dict(before.run_actors).get(
        "TrainController", 0), now


def outcome(site: Site, job_id: str) -> str | None:
    """The job's run outcome in the ledger."""
    runs = ledger_for(site.ledger_path, site.catalog).runs()
    return next((r["outcome"] for r in runs if r["run_id"] == job_id), None)


# -- jobs and how they end -----------------------------------------------------------

def builtin_job(site: Site, name: str, *, epochs: int):
    """The quickstart on a tiny dataset, one worker, a checkpoint every few steps."""
    data = quickstart_dict()
    data["name"] = name
    data["dataset"]["num_samples"] = SAMPLES
    data["training"].update(num_epochs=epochs, target_metric=None)
    data["scaling"].update(min_workers=1, max_workers=1)
    data["checkpoint"].update(interval_steps=INTERVAL, max_failures=0)
    config, _ = parse_submission(yaml.safe_dump(data), {}, site.catalog, "cpu_slot")
    return config


def broken_job(site: Site, name: str):
    """A user entrypoint that raises in every worker (tests/support/userloop.py)."""
    data = {"name": name, "entrypoint": "tests.support.userloop:broken",
            "entrypoint_config": {"steps": 100},
            "training": {"num_epochs": 1, "global_batch_size": 8},
            "scaling": {"min_workers": 1, "max_workers": 1,
                        "accelerator_resource": "cpu_slot", "use_gpu": False},
            "checkpoint": {"interval_steps": INTERVAL, "max_failures": 0},
            "cost": {"instance_type": "local-cpu", "budget_usd": 1.0}}
    config, _ = parse_submission(yaml.safe_dump(data), {}, site.catalog, "cpu_slot")
    return config


def until(what: str, done, timeout_s: float):
    deadline = time.monotonic() + timeout_s
    while not (value := done()):
        assert time.monotonic() < deadline, what
        time.sleep(POLL_S)
    return value


def stepping(runner: RayJobRunner, job_id: str, since: float) -> dict[str, Any]:
    """The run's progress once this attempt (started at ``since``) took a step."""
    def stepped():
        state = runner.poll(job_id)
        assert state.state == "running", (job_id, state)
        p = channel.progress(job_id) or {}
        return p if (p.get("reported_at", 0.0) >= since and p.get("global_step", 0)
                     > max(p.get("resumed_from_step") or 0, 0)) else None
    return until(f"{job_id} took no step", stepped, START_S)


def ended(runner: RayJobRunner, job_id: str):
    """The run's poll once it ended by itself."""
    def done():
        state = runner.poll(job_id)
        return state if state.state != "running" else None
    return until(f"{job_id} did not end", done, START_S)


def stop(runner: RayJobRunner, job_id: str, reason: str) -> None:
    """Stop as the scheduler does; return once ``advance`` reported the stop finished."""
    runner.stop(job_id, reason)
    until(f"the {reason} stop of {job_id} did not finish",
          lambda: job_id in {j for j, _ in runner.advance()}, STOP_S)


# -- tests ---------------------------------------------------------------------------

@ray.remote(num_cpus=0)
class Reserver:
    """Stands for a Train controller: reserves a slot in a placement group it creates."""

    def reserve(self) -> str:
        self.group = placement_group([{"slot": 1}])
        ray.get(self.group.ready())
        return self.group.id.hex()


@ray.remote(num_cpus=0)
class PlacementGroupCleaner:
    """Stands for Ray Train's cleaner of that name: detached, started by the controller."""

    def pid(self) -> int:
        import os

        return os.getpid()


@ray.remote(num_cpus=0)
class Owner:
    """Stands for a job's driver: owns the reserver, as the driver owns the controller."""

    def start(self) -> str:
        self.reserver = Reserver.remote()
        return ray.get(self.reserver.reserve.remote())

    def start_cleaner(self) -> int:
        """A cleaner on the head, as a controller starts one, that is never told more."""
        self.cleaner = PlacementGroupCleaner.options(
            lifetime="detached", resources={"node:__internal_head__": 0.001}).remote()
        return ray.get(self.cleaner.pid.remote())


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_group_left_by_a_dead_actor_is_freed_and_live_groups_are_kept(site):
    owner = Owner.options(lifetime="detached").remote()
    orphan = ray.get(owner.start.remote())
    idle_cleaner = ray.get(owner.start_cleaner.remote())
    live_owner = Owner.remote()
    live = ray.get(live_owner.start.remote())
    live_cleaner = ray.get(live_owner.start_cleaner.remote())
    own = placement_group([{"slot": 1}])  # the driver's own group
    try:
        ray.get(own.ready())
        assert remove_orphaned_placement_groups() == 0  # every creator alive
        assert stop_orphaned_cleaners() == 0
        assert ray.available_resources().get("slot", 0) == 0

        ray.kill(owner)  # its reserver dies with it; the group stays reserved
        # The cleaner it started lives on (detached), watching nothing: it is ended;
        # the live owner's is kept.
        until("the dead owner's cleaner was never ended",
              lambda: stop_orphaned_cleaners() or not process_alive(idle_cleaner), 30)
        until("the idle cleaner's process lives on",
              lambda: not process_alive(idle_cleaner), 30)
        assert process_alive(live_cleaner)
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
    finally:  # leave the module's cluster as it was
        remove_placement_group(own)
        ray.kill(live_owner)
        deadline = time.monotonic() + 30
        while placement_group_table()[live]["state"] != "REMOVED":
            assert time.monotonic() < deadline, "the live owner's group was never freed"
            remove_orphaned_placement_groups()
            time.sleep(0.2)
        until("the live owner's cleaner lives on once its owner is gone",
              lambda: stop_orphaned_cleaners() or not process_alive(live_cleaner), 30)
        until("the live owner's cleaner's process lives on",
              lambda: not process_alive(live_cleaner), 30)


@pytest.mark.extended  # release after a stop: also the cancel test here and test_no_shared_disk_ray
def test_a_completed_job_and_a_failed_job_release_everything(site):
    runner, (a, b) = site.runner(), site.slots
    before = holdings(site)
    # The completed job was submitted with a dry run's plan (as `costsched submit` sends
    # it): its run's driver makes the launch forecast from it, and `report` compares.
    complete = builtin_job(site, "complete", epochs=1)
    profile = RunProfile(num_workers=1, start_up_s=20.0, step_s=0.01, epoch_overhead_s=1.0,
                         tail_s=2.0, profiled_s=30.0)
    plan = forecast_from_profile(profile, rate=rate_of_job(complete, site.catalog),
                                 num_epochs=1, steps_per_epoch=25)
    ledger = ledger_for(site.ledger_path, site.catalog)
    record_submitted_plan(ledger, complete, {**plan.as_record(), "made_at": time.time(),
                                             "detail": dataclasses.asdict(profile)})
    # Side by side, one on each slot: both end by themselves.
    runner.start("complete-1", complete, 1, {a: 1})
    runner.start("broken-1", broken_job(site, "broken"), 1, {b: 1})

    done = ended(runner, "complete-1")
    assert (done.state, done.outcome) == ("finished", "COMPLETED"), done
    assert done.last_step > 0
    failed = ended(runner, "broken-1")
    assert failed.state == "failed" and "user bug" in failed.message, failed
    assert_released(site, runner, "complete-1", "broken-1", before=before)
    assert outcome(site, "complete-1") == "COMPLETED"
    assert outcome(site, "broken-1") == "FAILED"
    launched = [f for f in ledger.forecasts("complete-1") if f["source"] == "profile"]
    assert len(launched) == 1 and launched[0]["detail"]["num_workers"] == 1
    # At the profiled size on one node, billed at the declared price: the plan's rate.
    assert launched[0]["usd_to_end"] / launched[0]["seconds_to_end"] == pytest.approx(
        plan.usd_to_end / plan.seconds_to_end)
    row = runs_frame(Ledger(site.ledger_path, site.catalog)).set_index("run_id").loc[
        "complete-1"]
    assert row["forecast_s"] == pytest.approx(launched[0]["seconds_to_end"])
    assert row["time_error_pct"] == pytest.approx(
        100 * abs(launched[0]["seconds_to_end"] - row["wall_s"]) / row["wall_s"])


def test_a_job_cancelled_while_starting_releases_everything_and_the_next_job_trains(site):
    runner, (a, _) = site.runner(), site.slots
    left = {}

    # Cancelled the moment it was started: its driver has not run yet.
    before = holdings(site)
    runner.start("cancel-1", builtin_job(site, "cancel", epochs=LONG_EPOCHS), 1, {a: 1})
    runner.stop("cancel-1", "cancelled")
    runner.advance()
    assert channel.progress("cancel-1") is None  # it never reported: a cancel while starting
    left["cancel-1"] = leftover(site, runner, ("cancel-1",), before)
    assert outcome(site, "cancel-1") == "CANCELLED"

    # Cancelled once its Train controller reserved the slot, before its first report.
    before = holdings(site)
    runner.start("cancel-2", builtin_job(site, "cancel", epochs=LONG_EPOCHS), 1, {a: 1})
    until("cancel-2 reserved no slot", lambda: len(held_groups()) > len(before.groups),
          START_S)
    assert channel.progress("cancel-2") is None
    runner.stop("cancel-2", "cancelled")
    runner.advance()
    left["cancel-2"] = leftover(site, runner, ("cancel-2",), before)
    assert outcome(site, "cancel-2") == "CANCELLED"

    # The next job on the same slot starts and trains (whatever the cancels left);
    # cancelled in training, it checkpoints, ends CANCELLED and releases everything.
    before = holdings(site)
    started = time.time()
    runner.start("queued-1", builtin_job(site, "queued", epochs=LONG_EPOCHS), 1, {a: 1})
    assert stepping(runner, "queued-1", started)["global_step"] > 0
    assert_holds(site, "queued-1", before)
    stop(runner, "queued-1", "cancelled")
    assert_released(site, runner, "queued-1", before=before)
    assert outcome(site, "queued-1") == "CANCELLED"
    assert left["cancel-1"] is None
    # Ray Train's placement-group cleaner, started by a controller killed before it
    # told the cleaner what to watch, is ended too (it would idle for ever otherwise).
    assert left["cancel-2"] is None


def test_a_job_the_scheduler_never_stops_ends_at_its_cap_and_releases_everything(site):
    """The scheduler is late or gone: nothing asks the run to stop. Its driver's cap
    watchdog ends it at its budget, charged no more than the budget (recomputed from its
    intervals at the catalog's price), and the runner reports it BUDGET_EXHAUSTED."""
    runner, (a, _) = site.runner(), site.slots
    before = holdings(site)
    config = builtin_job(site, "capped", epochs=LONG_EPOCHS)
    budget = rate_of_job(config, site.catalog).usd_per_worker_second * CAP_S
    config = dataclasses.replace(config, cost=dataclasses.replace(config.cost,
                                                                  budget_usd=budget))
    runner.start("capped-1", config, 1, {a: 1})
    done = ended(runner, "capped-1")  # polls only, as a scheduler whose rounds are late
    assert (done.state, done.outcome) == ("finished", "BUDGET_EXHAUSTED"), done
    assert_released(site, runner, "capped-1", before=before)
    assert outcome(site, "capped-1") == "BUDGET_EXHAUSTED"
    charged = recomputed_usd(ledger_for(site.ledger_path, site.catalog), "capped-1")
    assert 0.5 * budget < charged <= budget


@pytest.mark.extended  # a preempt and a budget stop: also test_no_shared_disk_ray
def test_a_preempted_job_then_stopped_for_its_budget_releases_everything(site):
    runner, (a, b) = site.runner(), site.slots
    before = holdings(site)
    config = builtin_job(site, "preempt", epochs=LONG_EPOCHS)

    started = time.time()
    runner.start("preempt-1", config, 1, {a: 1})
    stepping(runner, "preempt-1", started)
    assert_holds(site, "preempt-1", before)
    stop(runner, "preempt-1", "preempted")
    assert_released(site, runner, "preempt-1", before=before)
    assert outcome(site, "preempt-1") == "PREEMPTED"

    started = time.time()  # resumed on the other slot, then stopped for its budget
    runner.start("preempt-1", config, 1, {b: 1})
    stepping(runner, "preempt-1", started)
    stop(runner, "preempt-1", "budget")
    assert_released(site, runner, "preempt-1", before=before)
    assert outcome(site, "preempt-1") == "BUDGET_EXHAUSTED"


@pytest.mark.extended  # node loss: also test_no_shared_disk_ray
def test_a_job_whose_node_is_lost_releases_everything(site):
    runner, cluster = site.runner(), site.cluster
    before = holdings(site)
    node = cluster.add_node(num_cpus=1, resources={"cpu_slot": 1})
    assert node.node_id != ray.get_runtime_context().get_node_id()

    started = time.time()
    runner.start("lost-1", builtin_job(site, "lost", epochs=LONG_EPOCHS), 1, {node.node_id: 1})
    stepping(runner, "lost-1", started)
    assert_holds(site, "lost-1", dataclasses.replace(before, free_slots=before.free_slots + 1))
    cluster.remove_node(node)
    runner.stop("lost-1", "node_lost")  # what the scheduler does on seeing the node gone
    runner.advance()
    assert_released(site, runner, "lost-1", before=before)
    assert outcome(site, "lost-1") == "NODE_LOST"
