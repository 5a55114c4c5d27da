"""Ray TorchTrainer vs plain PyTorch DDP: steady-state throughput and start-up overhead.

Same model (1D CNN), data (MNIST-1D), global batch, optimiser and number of
steps; both use gloo over 2 CPU processes with one thread each. Prints the
samples/s of both (median over epochs after the first), their ratio, and the
start-up overhead (launch to first optimiser step) of each.

    python bench/ray_overhead.py [--samples 20000] [--epochs 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from bench_jobs import quickstart_job

from costsched.cost.prices import load_catalog
from costsched.training.data import prepare
from costsched.training.models import build_model


def bench_job(workdir: Path, samples: int, epochs: int, workers: int):
    return quickstart_job(workdir, "bench-overhead", {
        "dataset": {"num_samples": samples},
        "training": {"num_epochs": epochs, "target_metric": None},
        "scaling": {"min_workers": workers, "max_workers": workers},
        "checkpoint": {"interval_steps": 10**9},  # epoch-end checkpoints only
        "optimizer": {"grad_clip_norm": 0.0},  # the plain loop does not clip either
    })


def _ddp_worker(rank, world, splits, job, epochs, port, out):
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(job.training.seed)
    model = torch.nn.parallel.DistributedDataParallel(build_model(
        job.model.kind, input_shape=splits.input_shape, num_classes=splits.num_classes,
        widths=job.model.widths))
    opt = torch.optim.AdamW(model.parameters(), lr=job.optimizer.lr)
    x, y = torch.as_tensor(splits.x_train), torch.as_tensor(splits.y_train)
    local = job.training.global_batch_size // world
    shard = len(x) // world
    steps = shard // local
    rates, first_step = [], None
    for epoch in range(epochs):
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        mine = perm[rank * shard:(rank + 1) * shard]
        started = time.time()
        for s in range(steps):
            idx = mine[s * local:(s + 1) * local]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            first_step = first_step or time.time()
        rates.append(steps * local * world / (time.time() - started))
    if rank == 0:
        out.put((rates, first_step))
    dist.destroy_process_group()


def run_plain_ddp(splits, job, epochs, workers):
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    launched = time.time()
    procs = [ctx.Process(target=_ddp_worker, args=(r, workers, splits, job, epochs, 29533, out))
             for r in range(workers)]
    for p in procs:
        p.start()
    rates, first_step = out.get()
    for p in procs:
        p.join()
    return statistics.median(rates[1:] or rates), first_step - launched


def run_ray(splits, job, catalog):
    import ray

    from costsched.cost.ledger import Ledger
    from costsched.ray_layer.train.trainer import run_job

    launched = time.time()
    ray.init(resources={job.scaling.accelerator_resource: job.scaling.max_workers},
             logging_level="ERROR")
    ledger = Ledger(job.resolved_ledger_path(), catalog)
    result = run_job(job, splits, catalog=catalog, ledger=ledger, verbose=False)
    history = [m["samples_per_s"] for m in result.metrics["history"] if "samples_per_s" in m]
    ray.shutdown()
    return statistics.median(history[1:] or history), result.metrics["first_step_at"] - launched


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        job = bench_job(Path(tmp), args.samples, args.epochs, args.workers)
        splits = prepare(job.dataset)
        ddp_rate, ddp_startup = run_plain_ddp(splits, job, args.epochs, args.workers)
        ray_rate, ray_startup = run_ray(splits, job, load_catalog())
    print(f"plain DDP   : {ddp_rate:8.0f} samples/s steady, start-up {ddp_startup:5.1f} s")
    print(f"Ray Train   : {ray_rate:8.0f} samples/s steady, start-up {ray_startup:5.1f} s")
    print(f"ratio Ray/DDP throughput: {ray_rate / ddp_rate:.3f} (target >= 0.95)")
    print(f"extra start-up with Ray: {ray_startup - ddp_startup:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
