"""Training-job configuration: frozen dataclasses loaded strictly from YAML.

A job YAML has the sections below; every field is documented where it is
declared. Load with :func:`load_job_config`; every invalid value raises
:class:`~costsched.errors.ConfigError` naming the file and saying how to fix it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from costsched.compression.spec import CompressionConfig
from costsched.config.entrypoint import check_entrypoint_syntax
from costsched.config.strict import build, closest_hint, read_yaml_mapping
from costsched.cost.prices import PriceCatalog, load_catalog
from costsched.errors import ConfigError

MODEL_KINDS = ("mlp", "cnn1d", "resnet2d")
"""Model kinds of the model zoo (``costsched.training.models``); a test keeps the two equal
without this module importing torch."""
BUILTIN_DATASETS = ("digits", "mnist1d")
FILE_SUFFIXES = (".parquet", ".csv", ".npz")
MAX_NUM_SAMPLES = 1_000_000
"""Most `mnist1d` samples a job may generate: generating takes about 1 ms a sample on one
core, so this many is already a quarter of an hour before training starts."""
MNIST1D_SAMPLE_S = 1e-3
"""Rough seconds to generate one `mnist1d` sample (for the notice before a long one)."""
MAX_DATA_FILE_BYTES = 1 << 30
"""Largest data file (1 GiB) a job may name: the driver reads all of it into memory,
cleans and splits it, and ships the splits to the workers through Ray's object store."""
Precision = Literal["fp32", "bf16", "fp16"]


def _path_kind(path: str) -> Literal["file", "folder", "other", "missing"]:
    try:
        p = Path(path)
        if p.is_file():
            return "file"
        return "folder" if p.is_dir() else "other" if p.exists() else "missing"
    except (OSError, ValueError):  # a name too long for the filesystem, or with a NUL
        return "missing"


def _positive(name: str, value: float) -> None:
    if not value > 0:
        raise ConfigError(f"`{name}` must be > 0, got {value}")


@dataclass(frozen=True, kw_only=True)
class AugmentConfig:
    noise_std: float = 0.0
    """Std of Gaussian noise added to each training feature (after normalisation)."""
    max_shift: int = 0
    """Largest random circular shift of a training sample along its last axis."""

    def __post_init__(self) -> None:
        if self.noise_std < 0 or self.max_shift < 0:
            raise ConfigError("`dataset.augment` values must be >= 0")


@dataclass(frozen=True, kw_only=True)
class DatasetConfig:
    name: str
    """`digits`, `mnist1d`, or a path to a .parquet/.csv/.npz file of features + label,
    of at most `MAX_DATA_FILE_BYTES` (1 GiB)."""
    num_samples: int = 10_000
    """Samples to generate (mnist1d only), at most `MAX_NUM_SAMPLES` (1,000,000)."""
    label_column: str = "label"
    """Label column (parquet/csv) or array name (npz; features are in array `x`)."""
    val_fraction: float = 0.1
    """Fraction of the cleaned data held out for validation."""
    test_fraction: float = 0.1
    """Fraction of the cleaned data held out for the final test."""
    seed: int = 0
    """Seed for generation and for the train/val/test split."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    """Training-time augmentation."""
    cache_shard: bool = True
    """Keep each worker's shard in memory after its first pass through Ray Data; set
    false for shards larger than a worker's memory (every epoch then streams)."""

    @property
    def is_file(self) -> bool:
        return self.name not in BUILTIN_DATASETS

    def __post_init__(self) -> None:
        if self.is_file:
            self._check_data_file()
        _positive("dataset.num_samples", self.num_samples)
        if self.num_samples > MAX_NUM_SAMPLES:
            raise ConfigError(f"`dataset.num_samples` is {self.num_samples:,}; at most "
                              f"{MAX_NUM_SAMPLES:,} samples can be generated, lower it")
        if not (0 < self.val_fraction < 1 and 0 < self.test_fraction < 1):
            raise ConfigError("`dataset.val_fraction` and `test_fraction` must be in (0, 1)")
        if self.val_fraction + self.test_fraction >= 0.9:
            raise ConfigError("`dataset.val_fraction + test_fraction` must leave >= 10% to train")

    def _check_data_file(self) -> None:
        builtins = ", ".join(BUILTIN_DATASETS)
        suffixes = "/".join(FILE_SUFFIXES)
        kind = _path_kind(self.name)
        if kind == "folder":
            raise ConfigError(f"`dataset.name` {self.name!r} is a folder; name a built-in "
                              f"dataset ({builtins}) or a {suffixes} file")
        if not self.name.endswith(FILE_SUFFIXES):
            hint = closest_hint(self.name, BUILTIN_DATASETS)
            raise ConfigError(
                f"`dataset.name` {self.name!r} is neither a built-in dataset ({builtins}) "
                f"nor a {suffixes} file{hint if 'did you mean' in hint else ''}"
            )
        if kind == "missing":
            raise ConfigError(f"`dataset.name`: data file {self.name} does not exist")
        if kind == "other":
            raise ConfigError(f"`dataset.name`: {self.name} is not a regular file (a device "
                              "or a pipe?); name a data file")
        size = Path(self.name).stat().st_size
        if size > MAX_DATA_FILE_BYTES:
            raise ConfigError(f"`dataset.name`: data file {self.name} is {size:,} bytes; at "
                              f"most {MAX_DATA_FILE_BYTES:,} can be loaded, use a sample of it")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    kind: str
    """One of `mlp`, `cnn1d`, `resnet2d`."""
    widths: tuple[int, ...] = (32, 64)
    """Hidden widths (MLP) or channel counts per stage (CNNs)."""
    dropout: float = 0.0
    """Dropout after each hidden layer (MLP only)."""

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS:
            raise ConfigError(
                f"`model.kind` {self.kind!r} is unknown{closest_hint(self.kind, MODEL_KINDS)}"
            )
        if not self.widths or any(w <= 0 for w in self.widths):
            raise ConfigError("`model.widths` must be a non-empty list of positive integers")
        if not 0 <= self.dropout < 1:
            raise ConfigError("`model.dropout` must be in [0, 1)")


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    """Optimiser."""
    lr: float = 1e-3
    """Peak learning rate, reached after warm-up; cosine decay to `min_lr_ratio * lr`."""
    weight_decay: float = 0.0
    """Weight decay."""
    momentum: float = 0.9
    """Momentum (SGD only)."""
    warmup_steps: int = 0
    """Linear warm-up steps from 0 to `lr`."""
    min_lr_ratio: float = 0.0
    """Final learning rate as a fraction of `lr` at the end of the cosine schedule."""
    grad_clip_norm: float = 0.0
    """Clip the global gradient norm to this value; 0 disables clipping."""

    def __post_init__(self) -> None:
        _positive("optimizer.lr", self.lr)
        if self.weight_decay < 0 or self.warmup_steps < 0 or self.grad_clip_norm < 0:
            raise ConfigError("`optimizer.weight_decay/warmup_steps/grad_clip_norm` must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError("`optimizer.min_lr_ratio` must be in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class TrainingConfig:
    num_epochs: int
    """Epochs to train at most."""
    global_batch_size: int
    """Samples per optimiser step over all workers; fixed when workers change."""
    micro_batch_size: int = 0
    """Largest per-worker forward batch; larger shares use gradient accumulation. 0: no cap."""
    target_metric: Literal["val_accuracy", "test_accuracy"] | None = None
    """Stop early once this metric reaches `target_value` (checked every epoch)."""
    target_value: float = 0.0
    """Value of `target_metric` that ends training early."""
    precision: Precision = "fp32"
    """Autocast precision: fp32, bf16 (CPU and GPU) or fp16 (CUDA only, with a GradScaler)."""
    adaptive_batch: bool = False
    """Let an elastic policy choose the global batch between `global_batch_size` and
    `max_batch_size` from the measured noise scale; the new batch takes effect at the
    job's next start or resize, with the learning rate scaled by `lr_scaling`."""
    max_batch_size: int = 0
    """Largest global batch `adaptive_batch` may choose; 0: `global_batch_size` x 8."""
    lr_scaling: Literal["sqrt", "linear"] = "sqrt"
    """Learning-rate rule when the batch grows from B0 to B: x sqrt(B / B0) (square-root
    rule, safe for Adam) or x B / B0 (linear rule, SGD with warm-up)."""
    measure_steps: bool = True
    """Measure step time, gradient sync and the noise scale (``costsched.api.
    prepare_optimizer``) for the scheduler's goodput model; false: no hooks at all."""
    measurements_key: str | None = None
    """Jobs that set the same key pool the steps they measured, per GPU model: a new one
    starts from what the others measured on its ``cost.instance_type``'s GPU model instead
    of the default model. Give one key per model and per-worker batch (e.g.
    ``resnet50-b64``); null: no pooling."""
    allow_tf32: bool = True
    """Allow TF32 matmuls on CUDA (ignored on CPU)."""
    seed: int = 0
    """Seed for model initialisation and data order."""

    @property
    def batch_size_limit(self) -> int:
        """Largest global batch the job runs at: ``max_batch_size`` (default 8 x B0) when
        ``adaptive_batch``, else ``global_batch_size``."""
        if not self.adaptive_batch:
            return self.global_batch_size
        return self.max_batch_size or 8 * self.global_batch_size

    def __post_init__(self) -> None:
        if self.measurements_key is not None and not self.measurements_key.strip():
            raise ConfigError("`training.measurements_key` must be a non-empty name or null")
        _positive("training.num_epochs", self.num_epochs)
        _positive("training.global_batch_size", self.global_batch_size)
        if self.micro_batch_size < 0:
            raise ConfigError("`training.micro_batch_size` must be >= 0 (0 disables the cap)")
        if self.max_batch_size and self.max_batch_size < self.global_batch_size:
            raise ConfigError(f"`training.max_batch_size` ({self.max_batch_size}) is below "
                              f"`global_batch_size` ({self.global_batch_size})")
        if self.target_metric is not None and not 0 < self.target_value <= 1:
            raise ConfigError("`training.target_value` must be in (0, 1] for an accuracy target")


@dataclass(frozen=True, kw_only=True)
class ScalingSection:
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """Data parallelism for ``costsched.api.prepare_model``: DDP, or FSDP through Ray
    Train (shards parameters, gradients and optimiser state over the workers)."""
    min_workers: int = 1
    """Fewest workers the job runs with (elastic when below `max_workers`)."""
    max_workers: int = 1
    """Most workers the job runs with."""
    accelerator_resource: str = "GPU"
    """Ray resource that stands for one accelerator; a custom name emulates GPUs on CPU."""
    accelerators_per_worker: float = 1.0
    """Accelerator slots each worker reserves."""
    use_gpu: bool = True
    """Train on CUDA devices. Needs `accelerator_resource: GPU`."""
    cpus_per_worker: float = 1.0
    """CPUs each worker reserves."""
    elastic_resize_interval_s: float = 10.0
    """How often an elastic job (min < max workers) checks for room to grow, seconds."""

    def __post_init__(self) -> None:
        if self.min_workers <= 0 or self.max_workers <= 0:
            raise ConfigError("`scaling.min_workers` and `max_workers` must be >= 1")
        if self.min_workers > self.max_workers:
            raise ConfigError(
                f"`scaling.min_workers` ({self.min_workers}) is above `max_workers` "
                f"({self.max_workers}); lower min_workers or raise max_workers"
            )
        if self.strategy == "fsdp" and not self.use_gpu:
            raise ConfigError("`scaling.strategy: fsdp` needs GPUs through Ray Train "
                              "(`use_gpu: true`); use ddp on CPU")
        if self.use_gpu and self.accelerator_resource != "GPU":
            raise ConfigError(
                "`scaling.use_gpu: true` needs `accelerator_resource: GPU`; "
                "set use_gpu: false to emulate accelerators with a custom resource"
            )
        if self.elastic_resize_interval_s <= 0:
            raise ConfigError("`scaling.elastic_resize_interval_s` must be > 0")
        if self.accelerators_per_worker < 0 or self.cpus_per_worker < 0:
            raise ConfigError("`scaling.*_per_worker` must be >= 0")

    def resources_per_worker(self) -> dict[str, float]:
        resources = {"CPU": self.cpus_per_worker}
        if self.accelerators_per_worker > 0:
            resources[self.accelerator_resource] = self.accelerators_per_worker
        return resources


@dataclass(frozen=True, kw_only=True)
class CheckpointSection:
    interval_steps: int = 50
    """Checkpoint every this many optimiser steps (and at the end of training)."""
    num_to_keep: int = 2
    """Newest checkpoints kept; older ones are deleted."""
    max_failures: int = 3
    """Restarts from the latest checkpoint allowed after worker failures."""

    def __post_init__(self) -> None:
        _positive("checkpoint.interval_steps", self.interval_steps)
        _positive("checkpoint.num_to_keep", self.num_to_keep)
        if self.max_failures < -1:
            raise ConfigError("`checkpoint.max_failures` must be >= 0, or -1 for unlimited")


PRIORITY_MIN, PRIORITY_MAX = -100, 100
"""The range of ``cost.priority``."""


@dataclass(frozen=True, kw_only=True)
class CostSection:
    instance_type: str = "local-cpu"
    """Instance type from the price catalog the job's accelerators are priced as."""
    spot: bool = False
    """Price as spot capacity."""
    budget_usd: float = 100.0
    """The job stops once it has spent this much."""
    priority: int = 0
    """Scheduling priority; higher runs first. An integer in [-100, 100] (policies weigh
    a job by 2**priority, so a wider range would overflow)."""
    utilisation: float = 0.8
    """Assumed accelerator utilisation for the energy estimate, in [0, 1]."""
    stop_reserve_s: float = 5.0
    """Seconds of the worker group's time kept back from the budget for stopping
    (final evaluation, checkpoint, shutdown): the job stops that much early."""

    def __post_init__(self) -> None:
        if not self.budget_usd > 0:
            raise ConfigError(f"`cost.budget_usd` must be > 0, got {self.budget_usd}")
        if not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            raise ConfigError(f"`cost.priority` must be in [{PRIORITY_MIN}, {PRIORITY_MAX}], "
                              f"got {self.priority}")
        if self.stop_reserve_s < 0:
            raise ConfigError("`cost.stop_reserve_s` must be >= 0")
        if not 0 <= self.utilisation <= 1:
            raise ConfigError("`cost.utilisation` must be in [0, 1]")


@dataclass(frozen=True, kw_only=True)
class JobConfig:
    name: str
    """Job name: ledger rows and checkpoint folders are named after it."""
    training: TrainingConfig
    """Schedule, batch size, precision, stopping (an entrypoint reads it from
    ``costsched.api.get_context().job.training``; its target stops the run)."""
    entrypoint: str | None = None
    """Your training code as ``package.module:function`` (see :mod:`costsched.api`),
    importable where the job is submitted and on the workers; unset: the built-in
    classification loop trains ``model`` on ``dataset``."""
    entrypoint_config: dict[str, Any] = field(default_factory=dict)
    """Free-form mapping the entrypoint is called with."""
    working_dir: str | None = None
    """Where the entrypoint's code comes from for ``costsched submit``: a folder
    (relative to the job YAML; default: the YAML's folder) that submit uploads to the
    cluster, or the ``gcs://`` package URI it records; the job's driver and workers
    run with it as their working directory."""
    dataset: DatasetConfig | None = None
    """Data source and preprocessing (required by the built-in loop; with an
    entrypoint, optional: its training split becomes the ``train`` dataset shard)."""
    model: ModelConfig | None = None
    """Model architecture (the built-in loop only)."""
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    """Optimiser and learning-rate schedule."""
    scaling: ScalingSection = field(default_factory=ScalingSection)
    """Workers and the resources each reserves."""
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    """Checkpoint cadence and failure tolerance."""
    cost: CostSection = field(default_factory=CostSection)
    """Pricing, budget and priority."""
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    """Pruning, low-rank, quantization and distillation applied to the model."""
    storage_path: str = "~/.costsched/runs"
    """Folder (or URI) for checkpoints and results."""
    ledger_path: str = "~/.costsched/ledger.db"
    """SQLite cost ledger file."""

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name.strip() != self.name:
            raise ConfigError("`name` must be a non-empty name without '/' or surrounding spaces")
        if self.entrypoint is None and (self.dataset is None or self.model is None):
            raise ConfigError("`dataset` and `model` are required unless `entrypoint` names "
                              "your training code (`package.module:function`)")
        if self.entrypoint is not None:
            check_entrypoint_syntax(self.entrypoint)
        if self.training.precision == "fp16" and not self.scaling.use_gpu:
            raise ConfigError(
                "`training.precision: fp16` needs CUDA (`scaling.use_gpu: true`); "
                "use bf16 or fp32 on CPU"
            )

    def config_hash(self) -> str:
        """Stable short hash of the whole config (ledger key for identical runs)."""
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def resolved_storage_path(self) -> str:
        return self.storage_path if "://" in self.storage_path else _expand(self.storage_path)

    def resolved_ledger_path(self) -> str:
        return _expand(self.ledger_path)


def _expand(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))


def parse_job(data: Any, source: str, catalog: PriceCatalog | None = None) -> JobConfig:
    """Build and validate a job from a mapping, and check its instance type against the
    catalog. The one way a :class:`JobConfig` is made from data: files, submissions,
    stored jobs and sweep trials all come through here. ``source`` names the data in
    every error ("configs/job.yaml", "job quickstart-1", "sweep trial {...}")."""
    config = build(JobConfig, data, source)
    catalog = catalog or load_catalog()
    try:
        catalog.instance(config.cost.instance_type)
    except ConfigError as exc:
        raise ConfigError(f"{source}: `cost.instance_type`: {exc}") from None
    return config


def load_job_config(path: str | Path, catalog: PriceCatalog | None = None) -> JobConfig:
    """Load and validate a job YAML file (see :func:`parse_job`)."""
    return parse_job(read_yaml_mapping(path), str(path), catalog)
