"""Model size, compute and latency of a trial's model, from its job config."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from costsched.config.job import JobConfig
from costsched.training.data import Splits
from costsched.training.model_factory import JobModelFactory
from costsched.training.state import STATE_FILE


def model_footprint(job: JobConfig, splits: Splits) -> dict[str, Any]:
    """Footprint of the inference form of the job's (compressed) architecture.

    Measured on a freshly built model: parameter count, bytes, FLOPs and
    latency depend on the architecture and the compression settings, not on
    the trained values (nonzero counts reflect the configured sparsity). The best
    trial's trained model is measured again by :func:`export_trained_model`.
    """
    torch.manual_seed(job.training.seed)
    factory = JobModelFactory(job=job, input_shape=splits.input_shape,
                              num_classes=splits.num_classes)
    footprint = factory.footprint(torch.as_tensor(splits.x_test[:1]))
    return {key: footprint[key] for key in
            ("num_params", "model_bytes", "flops_per_sample", "cpu_latency_ms")}


def newest_checkpoint(run_dir: Path) -> Path | None:
    """The newest ``checkpoint_*`` folder of a run that holds a ``state.pt``."""
    found = sorted(p for p in run_dir.glob("checkpoint_*") if (p / STATE_FILE).is_file())
    return found[-1] if found else None


def trained_model(job: JobConfig, splits: Splits, checkpoint: Path) -> torch.nn.Module:
    """The trained weights of ``checkpoint`` in their inference form (pruning made
    permanent, int8 converted), in eval mode."""
    from costsched.compression import finalize_compression

    state = torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=True)
    torch.manual_seed(job.training.seed)
    model = JobModelFactory(job=job, input_shape=splits.input_shape,
                            num_classes=splits.num_classes)()
    model.load_state_dict(state["model"])
    return finalize_compression(model, job.compression).eval()


def serving_batch(splits: Splits, batch_size: int) -> torch.Tensor:
    """``batch_size`` test samples (rows repeated when the test split is smaller)."""
    rows = torch.as_tensor(splits.x_test[:batch_size])
    reps = -(-batch_size // rows.shape[0])  # ceil
    return rows.repeat(reps, *([1] * (rows.dim() - 1)))[:batch_size]


def serving_latency_ms(job: JobConfig, splits: Splits, checkpoint: Path, *,
                       batch_size: int) -> float:
    """CPU latency of one batch of ``batch_size`` test samples through the trained
    inference-form model (see :func:`serving_latencies_ms`)."""
    return serving_latencies_ms({"one": (job, checkpoint)}, splits, batch_size=batch_size,
                                rounds=1)["one"]


def serving_latencies_ms(trials: Mapping[str, tuple[JobConfig, Path]], splits: Splits, *,
                         batch_size: int, rounds: int = 10,
                         runs_per_round: int = 50) -> dict[str, float]:
    """The serving latency of several trained models (trial -> job and checkpoint): one
    thread, as :func:`export_trained_model` measures, but the fastest of ``rounds`` x
    ``runs_per_round`` timed batches, measured round-robin.

    The fastest, not the median: on a shared machine other processes only add time,
    and a dedicated serving replica has none of them. On the loaded 2-core development
    machine two trials of the same fp32 model measured 8-20% apart by the median of
    100 batches, 0.02-1.2% apart by the fastest of 10 x 50 (three and six repeats).
    Round-robin, a change in load between trials shifts every model alike.
    """
    from costsched.compression.footprint import cpu_latency_ms

    batch = serving_batch(splits, batch_size)
    models = {key: trained_model(job, splits, checkpoint)
              for key, (job, checkpoint) in trials.items()}
    times: dict[str, list[float]] = {key: [] for key in models}
    for _ in range(rounds):
        for key, model in models.items():
            times[key].append(cpu_latency_ms(model, batch, num_runs=runs_per_round,
                                             batch_size=batch_size, reduce=min))
    return {key: min(values) for key, values in times.items()}


def export_trained_model(job: JobConfig, splits: Splits, checkpoint: Path,
                         out: Path) -> dict[str, Any]:
    """The trial's trained weights in their inference form (pruning made permanent,
    int8 converted), saved as ``out`` (``{"job": ..., "state_dict": ...}``), with the
    footprint and CPU latency measured on that model and its accuracy on the test
    split (the check that the export is the model that was trained)."""
    from costsched.compression import measure_footprint
    from costsched.training.loop import evaluate

    model = trained_model(job, splits, checkpoint)
    footprint = measure_footprint(model, torch.as_tensor(splits.x_test[:1]))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"job": job.name, "state_dict": model.state_dict()}, out)
    return {"path": str(out), "test_accuracy": evaluate(model, splits.x_test, splits.y_test,
                                                         torch.device("cpu")),
            **{k: getattr(footprint, k) for k in
               ("num_params", "num_nonzero_params", "model_bytes", "cpu_latency_ms")}}
