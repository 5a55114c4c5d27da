"""Ray Train implementation of the training loop's ``Session``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

TRAIN_SPLIT = "train"


class RayTrainSession:
    """Dataset shards, reports and checkpoints through ``ray.train``; DDP through Ray."""

    def __init__(self, shuffle_seed: int):
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.device = ray.train.torch.get_device()
        self._shard = ray.train.get_dataset_shard(TRAIN_SPLIT)
        self._shuffle_seed = shuffle_seed

    def prepare_model(self, model: nn.Module) -> nn.Module:
        return ray.train.torch.prepare_model(model)

    def train_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Any, Any]]:
        batches = self._shard.iter_torch_batches(
            batch_size=batch_size, drop_last=True, device="cpu",
            local_shuffle_buffer_size=4 * batch_size,
            local_shuffle_seed=self._shuffle_seed + 1000 * epoch + self.rank,
        )
        for batch in batches:
            yield batch["x"], batch["y"]

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield directory

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
        ray.train.report(metrics, checkpoint=checkpoint)

    def broadcast(self, value: int) -> int:
        if self.world_size == 1 or not dist.is_initialized():
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(tensor, src=0)
        return int(tensor.item())
