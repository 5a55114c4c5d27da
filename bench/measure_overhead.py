"""What measuring goodput costs a training step: StepMeter on against off, same process.

    .venv/bin/python bench/measure_overhead.py [--steps 1200] [--block 20] [--threads 1]

A small MLP (784-256-256-10, batch 64 per replica, synthetic data, SGD) trains on one
replica without accumulation, on one replica with 2 micro-batches (the noise scale
from micro-batch gradients), and on 2 replicas of a local gloo group (127.0.0.1; the
communication hook, the noise statistics and their all-reduce). Each setting runs
three copies of the model, one measured and two not, one block of ``--block`` steps
each per round, in rotating order, so that drift in the machine's load hits all alike.
It prints the median wall time per step of the measured and of the unmeasured copy;
the median over rounds of measured / unmeasured wall time (``ratio``, target <= 1.02)
and of this process's CPU time (threads included), which other processes on a shared
machine disturb less; and the same wall-time ratio between the two unmeasured copies
(``a/a ratio``): how far apart two identical copies land here, the bench's resolution.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from costsched.goodput.measure import StepMeter

BATCH = 64


def build_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


class Trainer:
    """One copy of the model with its optimizer; measured or not."""

    def __init__(self, *, replicas: int, micro_batches: int, measured: bool):
        model = build_model()
        self.model = DistributedDataParallel(model) if replicas > 1 else model
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3)
        self.micro_batches = micro_batches
        self.meter = StepMeter(self.model, self.optimizer, enabled=measured,
                               local_batch_size=BATCH // micro_batches)
        gen = torch.Generator().manual_seed(dist.get_rank() if replicas > 1 else 0)
        self.x = torch.randn(BATCH, 784, generator=gen)
        self.y = torch.randint(0, 10, (BATCH,), generator=gen)

    def block(self, steps: int) -> tuple[float, float]:
        """Wall and process CPU seconds per step over ``steps`` steps."""
        size = BATCH // self.micro_batches
        started, cpu_started = time.perf_counter(), time.process_time()
        for _ in range(steps):
            for i in range(self.micro_batches):
                last = i == self.micro_batches - 1
                no_sync = getattr(self.model, "no_sync", None)
                with contextlib.nullcontext() if last or no_sync is None else no_sync():
                    part = slice(i * size, (i + 1) * size)
                    loss = nn.functional.cross_entropy(self.model(self.x[part]), self.y[part])
                    loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return ((time.perf_counter() - started) / steps,
                (time.process_time() - cpu_started) / steps)


def compare(replicas: int, micro_batches: int, steps: int,
            block: int) -> list[dict[str, tuple[float, float]]]:
    """Rounds of one block per copy, in rotating order: (wall, CPU) seconds per step of
    the measured copy (``on``), an unmeasured one (``off``) and a second unmeasured one
    (``control``: how far two identical copies differ on this machine)."""
    copies = {name: Trainer(replicas=replicas, micro_batches=micro_batches,
                            measured=name == "on") for name in ("off", "on", "control")}
    for trainer in copies.values():
        trainer.block(block)  # warm up
    names = list(copies)
    rounds = []
    for r in range(steps // block):
        order = names[r % 3:] + names[:r % 3]
        rounds.append({name: copies[name].block(block) for name in order})
    metrics = copies["on"].meter.metrics()
    assert metrics["step_time_s"] and metrics["step_time_s"] > 0, metrics
    return rounds


def print_row(name: str, rounds: list[dict[str, tuple[float, float]]]) -> None:
    """Median step times, and medians over rounds of on / off and control / off."""
    def median_ratio(copy: str, i: int) -> float:
        return statistics.median(r[copy][i] / r["off"][i] for r in rounds)

    off_ms, on_ms = (statistics.median(r[c][0] for r in rounds) * 1e3 for c in ("off", "on"))
    print(f"{name:26} {off_ms:9.3f} {on_ms:9.3f} {median_ratio('on', 0):7.3f} "
          f"{median_ratio('on', 1):9.3f} {median_ratio('control', 0):9.3f}", flush=True)


def gloo_worker(rank: int, port: int, steps: int, block: int, threads: int) -> None:
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    try:
        rounds = compare(2, 1, steps, block)
        if rank == 0:
            print_row("2 replicas (gloo)", rounds)
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200, help="steps per copy (default 1200)")
    parser.add_argument("--block", type=int, default=20,
                        help="steps per block before switching copies (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"{'setting':26} {'off ms':>9} {'on ms':>9} {'ratio':>7} {'cpu ratio':>9} "
          f"{'a/a ratio':>9}")
    for micro_batches in (1, 2):
        name = f"1 replica, {micro_batches} micro-batch" + ("es" if micro_batches > 1 else "")
        print_row(name, compare(1, micro_batches, args.steps, args.block))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(gloo_worker, args=(port, args.steps, args.block, args.threads), nprocs=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
