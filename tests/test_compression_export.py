"""The best trial's model is exported from its trained weights, in inference form, and
measured there: the exported model scores what the trained one scores."""

from __future__ import annotations

import torch

from costsched.compression import finalize_compression
from costsched.config.job import parse_job
from costsched.sweep.trial_size import export_trained_model, newest_checkpoint
from costsched.training.data import prepare
from costsched.training.loop import evaluate
from costsched.training.model_factory import JobModelFactory
from costsched.training.state import STATE_FILE

JOB = parse_job({
    "name": "export", "dataset": {"name": "digits"}, "model": {"kind": "mlp", "widths": [32]},
    "training": {"num_epochs": 1, "global_batch_size": 64},
    "compression": {"pruning_sparsity": 0.5},
    "scaling": {"use_gpu": False, "accelerator_resource": "cpu_slot"},
}, "test job")


def test_export_measures_the_trained_weights_not_a_fresh_model(tmp_path):
    splits = prepare(JOB.dataset)
    torch.manual_seed(JOB.training.seed)
    factory = JobModelFactory(job=JOB, input_shape=splits.input_shape,
                              num_classes=splits.num_classes)
    model = factory()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.as_tensor(splits.x_train), torch.as_tensor(splits.y_train)
    for _ in range(60):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    for step in (10, 60):  # an older and the newest checkpoint
        (tmp_path / f"checkpoint_{step:06d}").mkdir()
        torch.save({"model": model.state_dict()}, tmp_path / f"checkpoint_{step:06d}" / STATE_FILE)
    checkpoint = newest_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.name == "checkpoint_000060"

    exported = export_trained_model(JOB, splits, checkpoint, tmp_path / "out" / "best.pt")
    trained = finalize_compression(model, JOB.compression)
    assert exported["test_accuracy"] == evaluate(trained, splits.x_test, splits.y_test,
                                                 torch.device("cpu"))
    assert exported["test_accuracy"] > 0.8  # trained, where a fresh model scores ~0.1
    assert exported["num_nonzero_params"] < 0.6 * exported["num_params"]  # pruned half
    assert exported["cpu_latency_ms"] > 0
    saved = torch.load(tmp_path / "out" / "best.pt", weights_only=True)
    assert saved["job"] == "export" and saved["state_dict"].keys() == trained.state_dict().keys()
