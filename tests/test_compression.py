"""Compression transforms: the size, compute and accuracy effects a user would see.

One small MLP is trained on sklearn's digits once per module (about a second); every
transform is applied to a copy of it and judged on held-out accuracy and its footprint.
"""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from costsched.compression import (
    CompressionConfig,
    apply_compression,
    apply_global_magnitude_pruning,
    convert_qat,
    count_flops,
    distillation_loss,
    factorize_linear,
    finalize_compression,
    finalize_pruning,
    load_teacher,
    measure_footprint,
    prepare_qat,
    prune_channels,
    quantize_dynamic_int8,
    weight_sparsity,
)
from costsched.config.strict import build
from costsched.errors import ConfigError
from costsched.training.models import build_model

WIDTHS = (128, 64)


def fit(model: nn.Module, data: dict, *, epochs: int, lr: float = 3e-3, seed: int = 0) -> nn.Module:
    """Adam on minibatches of 64; returns ``model`` in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = data["x_train"], data["y_train"]
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=gen).split(64):
            opt.zero_grad()
            F.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, data: dict) -> float:
    with torch.inference_mode():
        return float((model(data["x_test"]).argmax(1) == data["y_test"]).float().mean())


@pytest.fixture(scope="module")
def digits() -> dict:
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.3, random_state=0)
    as_x = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    as_y = lambda a: torch.tensor(a, dtype=torch.long)  # noqa: E731
    return {
        "x_train": as_x(x_tr), "y_train": as_y(y_tr), "x_test": as_x(x_te), "y_test": as_y(y_te)
    }


@pytest.fixture(scope="module")
def trained(digits) -> tuple[nn.Module, float]:
    """The trained fp32 MLP and its test accuracy; tests must work on copies."""
    torch.manual_seed(0)
    model = build_model("mlp", input_shape=(64,), num_classes=10, widths=WIDTHS)
    fit(model, digits, epochs=15)
    acc = accuracy(model, digits)
    assert acc > 0.93, "the baseline must learn, or the comparisons below mean nothing"
    return model, acc


def footprint(model: nn.Module, digits: dict):
    return measure_footprint(model, digits["x_test"][:8], num_latency_runs=10)


# --- magnitude pruning ------------------------------------------------------------------


@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.8])
def test_magnitude_pruning_reaches_the_requested_sparsity(trained, sparsity):
    model, _ = trained
    pruned = apply_global_magnitude_pruning(copy.deepcopy(model), sparsity)
    assert weight_sparsity(pruned) == pytest.approx(sparsity, abs=0.01)


def test_half_sparse_model_keeps_accuracy_and_halves_nonzeros_and_flops(trained, digits):
    model, base_acc = trained
    before = footprint(model, digits)
    pruned = finalize_pruning(apply_global_magnitude_pruning(copy.deepcopy(model), 0.5))
    after = footprint(pruned, digits)
    assert accuracy(pruned, digits) >= base_acc - 0.03  # no fine-tuning at all
    assert after.num_params == before.num_params  # dense storage: same shapes
    assert after.num_nonzero_params < 0.55 * before.num_nonzero_params
    assert after.flops_per_sample == pytest.approx(0.5 * before.flops_per_sample, rel=0.02)
    assert after.sparse_bytes < before.sparse_bytes


def test_pruning_mask_holds_during_fine_tuning_and_finalize_makes_it_permanent(trained, digits):
    model, _ = trained
    pruned = apply_global_magnitude_pruning(copy.deepcopy(model), 0.8)
    fit(pruned, digits, epochs=2, lr=1e-2)  # big steps: unmasked weights would regrow
    assert weight_sparsity(pruned) == pytest.approx(0.8, abs=0.01)
    final = finalize_pruning(pruned)
    names = [name for name, _ in final.named_parameters()]
    assert names and not any(name.endswith("_orig") for name in names)
    assert weight_sparsity(final) == pytest.approx(0.8, abs=0.01)


# --- structured channel pruning ---------------------------------------------------------


def test_channel_pruning_shrinks_mlp_compute_and_recovers_after_fine_tuning(trained, digits):
    model, base_acc = trained
    before = footprint(model, digits)
    small = prune_channels(model, 0.5)
    after = footprint(small, digits)
    hidden = [m.out_features for m in small.features if isinstance(m, nn.Linear)]
    assert hidden == [w // 2 for w in WIDTHS]
    # 64-128-64-10 -> 64-64-32-10: about 0.38x the weights and multiply-adds.
    assert 0.3 < after.num_params / before.num_params < 0.45
    assert 0.3 < after.flops_per_sample / before.flops_per_sample < 0.45
    assert after.model_bytes < 0.5 * before.model_bytes
    fit(small, digits, epochs=3)
    assert accuracy(small, digits) >= base_acc - 0.03


def test_channel_pruning_removes_the_weakest_channels(digits):
    """Channels whose weights are zero contribute nothing; pruning them changes no output."""
    torch.manual_seed(1)
    model = build_model("mlp", input_shape=(64,), num_classes=10, widths=(8,))
    with torch.no_grad():
        model.features[1].weight[::2] = 0.0  # half the hidden units are dead
        model.features[1].bias[::2] = 0.0
    small = prune_channels(model, 0.5)
    assert small.features[1].out_features == 4
    x = digits["x_test"][:32]
    torch.testing.assert_close(small(x), model(x))


@pytest.mark.parametrize(
    ("kind", "input_shape"), [("cnn1d", (40,)), ("cnn1d", (3, 40)), ("resnet2d", (64,))]
)
@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.9])
def test_conv_models_shrink_and_still_run(kind, input_shape, ratio):
    torch.manual_seed(0)
    model = build_model(kind, input_shape=input_shape, num_classes=7, widths=(16, 32)).eval()
    small = prune_channels(model, ratio).eval()
    x = torch.randn(4, *input_shape)
    assert small(x).shape == (4, 7)
    num = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert num(small) < num(model)
    assert count_flops(small, x) < count_flops(model, x)


def test_resnet_channel_pruning_keeps_block_outputs(digits):
    model = build_model("resnet2d", input_shape=(64,), num_classes=10, widths=(16, 32))
    small = prune_channels(model, 0.5)
    for block in small.blocks:
        assert block.body[0].out_channels == block.body[1].num_features == block.body[3].in_channels
        assert block.body[3].out_channels == block.body[4].num_features  # residual width kept
    assert [b.body[0].out_channels for b in small.blocks] == [8, 16]
    assert small.stem[0].out_channels == 16


def test_channel_pruning_rejects_unknown_architectures():
    with pytest.raises(ValueError, match="channel_pruning_ratio"):
        prune_channels(nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)), 0.5)


# --- low-rank ---------------------------------------------------------------------------


def test_low_rank_reduces_params_and_recovers_after_fine_tuning(trained, digits):
    model, base_acc = trained
    before = footprint(model, digits)
    low = factorize_linear(model, 0.5)
    after = footprint(low, digits)
    # rank 32 for 64x128 and 128x64 (32 * 192 < 8192), rank 5 for the classifier.
    assert after.num_params == 32 * 192 + 128 + 32 * 192 + 64 + 5 * 74 + 10
    assert after.num_params < 0.8 * before.num_params
    assert after.flops_per_sample < 0.8 * before.flops_per_sample
    fit(low, digits, epochs=3)
    assert accuracy(low, digits) >= base_acc - 0.03


def test_low_rank_at_full_rank_ratio_changes_nothing_and_skips_layers_it_would_grow(trained):
    model, _ = trained
    assert str(factorize_linear(model, 1.0)) == str(model)
    # rank 0.9 * min(64, 10) = 9: 9 * 74 > 640, so the classifier must stay one Linear.
    assert isinstance(factorize_linear(model, 0.9).classifier, nn.Linear)


def test_factorisation_reproduces_a_layer_whose_weight_has_that_rank():
    torch.manual_seed(0)
    layer = nn.Sequential(nn.Linear(40, 200))
    with torch.no_grad():  # a rank-8 weight: rank 8 of 40 loses nothing
        layer[0].weight.copy_(torch.randn(200, 8) @ torch.randn(8, 40))
    factored = factorize_linear(layer, 0.2)
    assert [m.out_features for m in factored[0]] == [8, 200]
    x = torch.randn(5, 40)
    torch.testing.assert_close(factored(x), layer(x), atol=1e-4, rtol=1e-4)


# --- quantization ---------------------------------------------------------------------

# Layers whose weight ends up int8 in the conv models built with widths (8, 16): Conv1d has
# no torchao int8 support and the ResNet stem has a single input channel, so both stay float.
INT8_LAYERS = {
    "cnn1d": ["classifier"],
    "resnet2d": ["blocks.0.body.0", "blocks.0.body.3", "blocks.1.body.0", "blocks.1.body.3",
                 "blocks.1.shortcut.0", "classifier"],
}


def int8_layers(model: nn.Module) -> list[str]:
    """Names of the layers whose weight is stored as int8 values (torchao's ``qdata``)."""
    names = []
    for name, module in model.named_modules():
        qdata = getattr(getattr(module, "weight", None), "qdata", None)
        if isinstance(qdata, torch.Tensor) and qdata.dtype == torch.int8:
            names.append(name)
    return names


def test_dynamic_int8_shrinks_bytes_and_keeps_accuracy(trained, digits):
    model, base_acc = trained
    before = footprint(model, digits)
    q = quantize_dynamic_int8(model)
    after = footprint(q, digits)
    assert int8_layers(q) == ["features.1", "features.3", "classifier"]
    assert after.model_bytes < before.model_bytes / 2
    # 1 byte per weight plus a float32 scale and an int8 zero point per row; biases float32.
    assert 0.25 < after.sparse_bytes / before.sparse_bytes < 0.3
    assert after.num_params == before.num_params
    assert accuracy(q, digits) >= base_acc - 0.02
    assert int8_layers(model) == []  # the float model is left alone


def test_qat_converts_to_int8_with_accuracy_close_to_fp32(trained, digits):
    model, base_acc = trained
    prepared = prepare_qat(model)
    fit(prepared, digits, epochs=2, lr=1e-3)
    with torch.inference_mode():
        trained_logits = prepared(digits["x_test"])
    q = convert_qat(prepared)
    assert int8_layers(q) == ["features.1", "features.3", "classifier"]
    with torch.inference_mode():  # int8 inference computes what fake quantization trained
        torch.testing.assert_close(q(digits["x_test"]), trained_logits)
    assert footprint(q, digits).model_bytes < footprint(model, digits).model_bytes / 2
    assert accuracy(q, digits) >= base_acc - 0.02


@pytest.mark.parametrize("kind", ["cnn1d", "resnet2d"])
def test_qat_runs_on_conv_models_quantizing_linear_and_conv2d_layers(kind):
    model = build_model(kind, input_shape=(64,), num_classes=5, widths=(8, 16))
    prepared = prepare_qat(model)
    x = torch.randn(6, 64)
    prepared(x).sum().backward()
    q = convert_qat(prepared)
    assert q(x).shape == (6, 5)
    assert int8_layers(q) == INT8_LAYERS[kind]


@pytest.mark.parametrize("kind", ["cnn1d", "resnet2d"])
def test_dynamic_int8_on_conv_models_stays_close_to_float(kind):
    torch.manual_seed(0)
    model = build_model(kind, input_shape=(64,), num_classes=5, widths=(8, 16)).eval()
    x = torch.randn(32, 64)
    q = quantize_dynamic_int8(model)
    assert int8_layers(q) == INT8_LAYERS[kind]
    with torch.inference_mode():
        expected, got = model(x), q(x)
    assert (got - expected).abs().max() < 0.05 * expected.abs().max()
    before, after = measure_footprint(model, x), measure_footprint(q, x, num_latency_runs=3)
    assert after.num_params == before.num_params
    if kind == "resnet2d":  # its Conv2d weights are stored in int8
        assert after.sparse_bytes < 0.6 * before.sparse_bytes


def test_importing_compression_does_not_load_torchao():
    code = "import sys, costsched.compression; print('torchao' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.stdout.strip() == "False", proc.stdout + proc.stderr


# --- distillation -----------------------------------------------------------------------


def test_distillation_loss_is_cross_entropy_at_weight_zero():
    torch.manual_seed(0)
    s, t, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    loss = distillation_loss(s, t, y, temperature=4.0, weight=0.0)
    torch.testing.assert_close(loss, F.cross_entropy(s, y))


@pytest.mark.parametrize("temperature", [1.0, 4.0, 10.0])
def test_distillation_kl_part_is_nonnegative_and_zero_when_student_matches(temperature):
    torch.manual_seed(0)
    s, t, y = torch.randn(16, 10), torch.randn(16, 10), torch.randint(0, 10, (16,))
    kl = distillation_loss(s, t, y, temperature=temperature, weight=1.0)
    assert kl > 0
    same = distillation_loss(t, t, y, temperature=temperature, weight=1.0)
    assert float(same) == pytest.approx(0.0, abs=1e-6)
    mixed = distillation_loss(s, t, y, temperature=temperature, weight=0.5)
    torch.testing.assert_close(mixed, 0.5 * kl + 0.5 * F.cross_entropy(s, y))


def test_distillation_soft_term_is_t_squared_times_teacher_student_kl():
    s, t = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.0, 2.0, 0.0]])
    temperature = 2.0
    p_t, p_s = (t / temperature).softmax(-1), (s / temperature).softmax(-1)
    expected = temperature**2 * (p_t * (p_t.log() - p_s.log())).sum()
    loss = distillation_loss(s, t, torch.tensor([0]), temperature=temperature, weight=1.0)
    torch.testing.assert_close(loss, expected)


def test_distillation_gradient_pulls_student_toward_teacher():
    s = torch.zeros(4, 3, requires_grad=True)
    t = torch.tensor([[5.0, 0.0, 0.0]]).repeat(4, 1)
    y = torch.zeros(4, dtype=torch.long)
    distillation_loss(s, t, y, temperature=2.0, weight=1.0).backward()
    assert (s.grad[:, 0] < 0).all()  # descending raises the teacher's favourite logit


@pytest.mark.parametrize("wrapped", [True, False])
def test_load_teacher_restores_a_training_checkpoint(trained, digits, tmp_path, wrapped):
    model, base_acc = trained
    state = {"model": model.state_dict(), "epoch": 3} if wrapped else model.state_dict()
    torch.save(state, tmp_path / "state.pt")
    build_fn = lambda: build_model("mlp", input_shape=(64,), num_classes=10, widths=WIDTHS)  # noqa: E731
    teacher = load_teacher(tmp_path / "state.pt", build_fn)
    assert accuracy(teacher, digits) == base_acc
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())


def test_load_teacher_names_a_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="state.pt"):
        load_teacher(tmp_path / "nope" / "state.pt", lambda: nn.Linear(2, 2))


# --- the pipeline and its config --------------------------------------------------------


def test_pipeline_combines_all_transforms(trained, digits):
    model, base_acc = trained
    config = CompressionConfig(
        channel_pruning_ratio=0.25, low_rank_ratio=0.5, pruning_sparsity=0.5,
        quantization="qat_int8",
    )
    student = apply_compression(model, config)
    fit(student, digits, epochs=3, lr=1e-3)
    final = finalize_compression(student, config)
    before, after = footprint(model, digits), footprint(final, digits)
    assert after.model_bytes < before.model_bytes / 2
    assert after.flops_per_sample < 0.3 * before.flops_per_sample
    assert accuracy(final, digits) >= base_acc - 0.05
    assert str(model) == str(trained[0]) and isinstance(model.classifier, nn.Linear)


def test_default_config_leaves_the_model_unchanged(trained, digits):
    model, base_acc = trained
    config = CompressionConfig()
    final = finalize_compression(apply_compression(model, config), config)
    torch.testing.assert_close(final(digits["x_test"]), model(digits["x_test"]))


def test_flops_of_known_layers():
    x1 = torch.randn(3, 64)
    assert count_flops(nn.Linear(64, 10), x1) == 2 * 64 * 10
    conv = nn.Conv1d(2, 4, kernel_size=5, padding=2)  # 40 positions x 4 x 2 x 5 MACs
    assert count_flops(conv, torch.randn(3, 2, 40)) == 2 * 40 * 4 * 2 * 5


def test_measure_footprint_restores_threads_and_mode(trained, digits):
    model, _ = trained
    model.train()
    threads = torch.get_num_threads()
    fp = footprint(model, digits)
    assert torch.get_num_threads() == threads and model.training
    model.eval()
    assert fp.cpu_latency_ms > 0 and fp.num_params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pruning_sparsity", 1.0),
        ("pruning_sparsity", -0.1),
        ("pruning_sparsity", math.nan),
        ("channel_pruning_ratio", 1.5),
        ("low_rank_ratio", 0.0),
        ("low_rank_ratio", 1.1),
        ("distill_temperature", 0.0),
        ("distill_weight", 1.01),
        ("distill_teacher_path", " "),
        ("quantization", "int4"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        CompressionConfig(**{field: value})


def test_config_loads_from_yaml_mapping():
    config = build(
        CompressionConfig,
        {"pruning_sparsity": 0.5, "quantization": "dynamic_int8", "distill_teacher_path": None},
        "job.yaml",
        "compression",
    )
    assert config.pruning_sparsity == 0.5 and not config.distillation_enabled
    with pytest.raises(ConfigError, match="did you mean `pruning_sparsity`"):
        build(CompressionConfig, {"pruning_sparsty": 0.5}, "job.yaml", "compression")
