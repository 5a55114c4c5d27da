"""Ray Train implementation of the training loop's ``Session``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from torch import nn

from costsched.ray_layer import channel
from costsched.training.state import checkpoint_sequence

TRAIN_SPLIT = "train"


class RayTrainSession:
    """Dataset shards, reports and checkpoints through ``ray.train``; DDP through Ray."""

    def __init__(self, shuffle_seed: int, cache_shard: bool = True,
                 strategy: str = "ddp", train_arrays: ray.ObjectRef | None = None):
        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        # Nodes the group spans, as the step meter keys its measurements.
        self.num_nodes = max(1, -(-self.world_size // max(1, context.get_local_world_size())))
        self.device = ray.train.torch.get_device()
        self._strategy = strategy
        self._shard_cache: Any = None
        self._shuffle_seed = shuffle_seed
        self._run_id = context.get_experiment_name()
        self._storage = context.get_storage()
        self._cache_shard = cache_shard
        self._cached: tuple[torch.Tensor, torch.Tensor] | None = None
        self._train_arrays = train_arrays
        """The whole training split in the object store (small built-in jobs), or None:
        the split is a Ray Data dataset."""

    def prepare_model(self, model: nn.Module, **strategy_kwargs: Any) -> nn.Module:
        return ray.train.torch.prepare_model(model, parallel_strategy=self._strategy,
                                             parallel_strategy_kwargs=strategy_kwargs or None)

    def prepare_data_loader(self, loader: Any) -> Any:
        return ray.train.torch.prepare_data_loader(loader)

    def dataset_shard(self, name: str) -> Any:
        return ray.train.get_dataset_shard(name)

    def train_batches(self, epoch: int, batch_size: int) -> Iterator[tuple[Any, Any]]:
        """This worker's shard in batches, reshuffled each epoch by seed.

        With ``cache_shard`` the shard is read once (from the object store for a small
        built-in job, else through Ray Data) and later epochs reshuffle it in memory
        (Ray Data's per-batch overhead otherwise dominates small models); without it
        every epoch streams through Ray Data again.
        """
        if not self._cache_shard:
            for batch in self.dataset_shard(TRAIN_SPLIT).iter_torch_batches(
                batch_size=batch_size, drop_last=True, device="cpu",
                local_shuffle_buffer_size=4 * batch_size,
                local_shuffle_seed=self._shuffle_seed + 1000 * epoch + self.rank,
            ):
                yield batch["x"], batch["y"]
            return
        if self._cached is None:
            self._cached = self._read_shard()
        x, y = self._cached
        order = torch.randperm(
            len(x), generator=torch.Generator().manual_seed(
                self._shuffle_seed + 1000 * epoch + self.rank)
        )
        for start in range(0, len(x) - batch_size + 1, batch_size):
            rows = order[start : start + batch_size]
            yield x[rows], y[rows]

    def _read_shard(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._train_arrays is not None:
            x, y = ray.get(self._train_arrays)  # every world_size-th row: this rank's shard
            rows = slice(self.rank, None, self.world_size)
            return torch.from_numpy(np.array(x[rows])), torch.from_numpy(np.array(y[rows]))
        parts = list(self.dataset_shard(TRAIN_SPLIT).iter_batches(batch_size=4096,
                                                                  batch_format="numpy"))
        return (torch.as_tensor(np.concatenate([p["x"] for p in parts])),
                torch.as_tensor(np.concatenate([p["y"] for p in parts])))

    @contextlib.contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        """The newest checkpoint: Ray's latest registered one, or a newer one whose
        upload finished (noted in the run's channel) but that Ray never registered.

        Ray registers a checkpoint when its controller next polls the workers; a
        worker killed in between leaves it persisted but unregistered. Every rank
        reads the same names, so all ranks pick the same checkpoint, which is
        downloaded from the run's storage (a mount or an object store).
        """
        checkpoint = ray.train.get_checkpoint()
        noted = channel.noted_checkpoint(self._run_id)
        if checkpoint_sequence(noted) > checkpoint_sequence(
                checkpoint.path if checkpoint is not None else None):
            checkpoint = ray.train.Checkpoint(
                path=f"{self._storage.experiment_fs_path.rstrip('/')}/{noted}",
                filesystem=self._storage.storage_filesystem)
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as directory:
            yield directory

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None,
               name: str | None = None) -> None:
        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=name)
        if checkpoint is not None and name is not None:  # uploaded: report returns after
            channel.note_checkpoint(self._run_id, name)

    def broadcast(self, value: int) -> int:
        if self.world_size == 1 or not dist.is_initialized():
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.broadcast(tensor, src=0)
        return int(tensor.item())

    def stop_requested(self) -> str | None:
        """A stop request in the run's channel (see ``ray_layer.channel``)."""
        return channel.stop_request(self._run_id)
