"""Fitted goodput models: noise scale against a known answer, step-time fits against
measured Pollux steps, and measured points through the simulator's profile format."""

from __future__ import annotations

import math
import shutil

import pandas as pd
import pytest
import torch

from costsched.goodput.noise import NoiseScaleEstimator, grad_stats
from costsched.goodput.profile import (
    PLACEMENT_COLUMNS,
    read_placements,
    write_placements,
)
from costsched.goodput.throughput import (
    DEFAULT_PRIOR,
    FittedThroughput,
    ThroughputParams,
    ThroughputPoint,
    fit_throughput,
    predict_step_time_s,
)
from costsched.goodput.torch_grads import noise_inputs
from costsched.policy.goodput import best_goodput
from costsched.sim.profiles import load_app
from tests.conftest import REPO
from tests.support.policy_fakes import job

FIXTURE = REPO / "tests" / "fixtures" / "pollux_small" / "profiles"

# Linear regression y = x.w* + eps, x ~ N(0, I_d), eps ~ N(0, sigma^2), loss (x.w - y)^2 / 2,
# at w = w* + delta. One example's gradient is x (x.delta - eps), so G = delta and
# Sigma = (|delta|^2 + sigma^2) I + delta delta^T (Gaussian fourth moments).
DIM, SIGMA = 10, 1.0
DELTA = torch.full((DIM,), 1.0 / math.sqrt(DIM), dtype=torch.float64)  # |delta|^2 = 1
TRUE_GRAD_SQR = float(DELTA @ DELTA)
TRUE_GRAD_VAR = DIM * (TRUE_GRAD_SQR + SIGMA**2) + TRUE_GRAD_SQR  # 21
TRUE_NOISE_SCALE = TRUE_GRAD_VAR / TRUE_GRAD_SQR


def regression_grads(gen: torch.Generator, w_star: torch.Tensor, count: int,
                     batch: int) -> list[list[torch.Tensor]]:
    """``count`` gradients of the mean loss over ``batch`` fresh examples each, at w* + delta."""
    w = (w_star + DELTA).clone().requires_grad_(True)
    grads = []
    for _ in range(count):
        x = torch.randn(batch, DIM, generator=gen, dtype=torch.float64)
        y = x @ w_star + SIGMA * torch.randn(batch, generator=gen, dtype=torch.float64)
        loss = 0.5 * ((x @ w - y) ** 2).mean()
        (grad,) = torch.autograd.grad(loss, [w])
        grads.append([grad])
    return grads


def test_the_closed_form_truth_matches_a_large_sample():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200_000, DIM, generator=gen, dtype=torch.float64)
    eps = SIGMA * torch.randn(200_000, generator=gen, dtype=torch.float64)
    per_example = x * (x @ DELTA - eps)[:, None]
    assert float(per_example.mean(0).pow(2).sum()) == pytest.approx(TRUE_GRAD_SQR, rel=0.03)
    assert float(per_example.var(0).sum()) == pytest.approx(TRUE_GRAD_VAR, rel=0.03)


@pytest.mark.parametrize(("num_grads", "local_bsz"), [(4, 8), (2, 16)],
                         ids=["4 replicas", "2 micro-batches"])
def test_noise_scale_estimate_is_within_25_percent_of_the_truth(num_grads, local_bsz):
    gen = torch.Generator().manual_seed(0)
    w_star = torch.randn(DIM, generator=gen, dtype=torch.float64)
    est = NoiseScaleEstimator(init_batch_size=32)
    for _ in range(400):
        est.update(*noise_inputs(regression_grads(gen, w_star, num_grads, local_bsz)), local_bsz)
    assert est.grad_sqr == pytest.approx(TRUE_GRAD_SQR, rel=0.25)
    assert est.grad_var == pytest.approx(TRUE_GRAD_VAR, rel=0.25)
    assert est.noise_scale == pytest.approx(TRUE_NOISE_SCALE, rel=0.25)
    # The policy's efficiency at 8 x B0 is Pollux's (B_noise + B0) / (B_noise + B).
    eff = est.efficiency_model(init_batch_size=32, max_batch_size=1024)
    truth = (TRUE_NOISE_SCALE + 32) / (TRUE_NOISE_SCALE + 256)
    assert float(eff.gain(256)) / 8 == pytest.approx(truth, rel=0.1)


def test_identical_gradients_are_all_signal_and_one_gradient_is_refused():
    assert grad_stats([4.0, 4.0, 4.0], 4.0, local_batch_size=8) == (4.0, 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        grad_stats([4.0], 4.0, local_batch_size=8)
    est = NoiseScaleEstimator(init_batch_size=32)
    assert math.isnan(est.noise_scale)
    with pytest.raises(ValueError, match="no gradient statistics"):
        est.efficiency_model(32, 1024)


def test_the_estimator_survives_a_checkpoint():
    est = NoiseScaleEstimator(init_batch_size=16)
    est.update([5.0, 3.0], 2.5, 8)
    est.update([6.0, 2.0], 3.0, 8)
    back = NoiseScaleEstimator.from_state(est.state())
    assert (back.grad_sqr, back.grad_var, back.num_updates) == (est.grad_sqr, est.grad_var, 2)


def fixture_points(app: str) -> list[ThroughputPoint]:
    return read_placements(FIXTURE / app / "placements.csv")


def measured(points, placement, bsz) -> ThroughputPoint:
    return next(p for p in points if p.placement == placement and p.local_bsz == bsz)


def rel_error(params: ThroughputParams, point: ThroughputPoint) -> float:
    predicted = predict_step_time_s(params, point.num_nodes, point.num_replicas,
                                    point.local_bsz, point.accum_steps)
    return abs(predicted / point.step_time_s - 1.0)


@pytest.mark.parametrize(("app", "fit_bsz", "held_bsz"),
                         [("bert", (4, 8, 12), (6, 11)), ("ncf", (32, 513, 8207), (129, 2051))])
def test_a_fit_on_one_and_two_replicas_predicts_unseen_batch_sizes_within_15_percent(
        app, fit_bsz, held_bsz):
    points = fixture_points(app)
    fit = [p for p in points if p.placement in ((1,), (2,)) and p.local_bsz in fit_bsz]
    params = fit_throughput(fit)
    held = [measured(points, (2,), b) for b in held_bsz]
    errors = [rel_error(params, p) for p in held]
    assert max(errors) < 0.15, errors
    # Accumulating two micro-batches of the largest size: the simulator's step from the
    # measurement, step + (step - sync), against the model's T_c + T_optim.
    big = measured(points, (2,), fit_bsz[-1])
    accumulated = ThroughputPoint(num_nodes=1, num_replicas=2, local_bsz=big.local_bsz,
                                  accum_steps=2, sync_time_s=big.sync_time_s,
                                  step_time_s=2 * big.step_time_s - big.sync_time_s)
    assert rel_error(params, accumulated) < 0.15


def test_the_prior_alone_predicts_a_sensible_shape():
    params = fit_throughput([])
    assert params == DEFAULT_PRIOR

    def step(nodes, replicas, bsz=32):
        return predict_step_time_s(params, nodes, replicas, bsz)

    times = [step(1, 1), step(1, 2), step(1, 4), step(2, 4), step(4, 8)]
    assert all(math.isfinite(t) and t > 0 for t in times)
    assert times == sorted(times) and len(set(times)) == len(times)
    assert step(1, 1, 16) < step(1, 1, 32) < step(1, 1, 64)


def test_with_one_replica_measured_the_sync_terms_come_from_the_prior():
    single = [p for p in fixture_points("bert") if p.placement == (1,)]
    params = fit_throughput(single)
    prior_sync = (DEFAULT_PRIOR.alpha_r, DEFAULT_PRIOR.beta_r, DEFAULT_PRIOR.alpha_n,
                  DEFAULT_PRIOR.beta_n)
    assert (params.alpha_r, params.beta_r, params.alpha_n, params.beta_n) == prior_sync
    one = predict_step_time_s(params, 1, 1, 8)
    assert rel_error(params, measured(single, (1,), 8)) < 0.05
    assert one < predict_step_time_s(params, 1, 2, 8) < predict_step_time_s(params, 2, 2, 8)


def test_a_retrogression_measured_within_a_node_does_not_set_the_one_across_nodes():
    # 2 and 4 GPUs in one node: the third and fourth GPU each add 50 ms to a 100 ms
    # all-reduce. Across nodes nothing is measured: it takes the prior's shape, scaled
    # by the job's all-reduce, not the node's steep slope past two replicas.
    truth = ThroughputParams(alpha_c=0.05, beta_c=0.002, alpha_r=0.1, beta_r=0.05,
                             alpha_n=0.4, beta_n=0.01, gamma=1.0)
    points = [ThroughputPoint(num_nodes=1, num_replicas=r, local_bsz=b,
                              step_time_s=predict_step_time_s(truth, 1, r, b),
                              sync_time_s=truth.alpha_r + truth.beta_r * (r - 2))
              for r in (2, 3, 4) for b in (16, 32)]
    params = fit_throughput(points)
    assert params.beta_r == pytest.approx(0.05, rel=0.1)
    scale = params.alpha_r / DEFAULT_PRIOR.alpha_r
    assert params.alpha_n == pytest.approx(DEFAULT_PRIOR.alpha_n * scale)
    assert params.beta_n == pytest.approx(DEFAULT_PRIOR.beta_n * scale)
    assert params.beta_n < params.beta_r / 5
    # 16 GPUs on 4 nodes: within 30% of the truth (the node's slope would predict 2x).
    assert predict_step_time_s(params, 4, 16, 32) == pytest.approx(
        predict_step_time_s(truth, 4, 16, 32), rel=0.3)


def test_a_fitted_model_accumulates_past_its_largest_micro_batch():
    model = FittedThroughput(DEFAULT_PRIOR, local_bsz_choices=[8, 16, 32], max_local_bsz=16)
    assert model.local_bsz_choices().tolist() == [8, 16, 32]
    assert model.step_time_s((2, 0), 32) == predict_step_time_s(DEFAULT_PRIOR, 1, 2, 16, 2)
    assert model.step_time_s((2,), 16) < model.step_time_s((2,), 32) < 2 * model.step_time_s(
        (2,), 16)
    with pytest.raises(ValueError, match="empty placement"):
        model.step_time_s((0,), 8)


def speedup(params: ThroughputParams, num_gpus: int) -> float:
    model = FittedThroughput(params, local_bsz_choices=[32, 64, 128], max_local_bsz=128)
    # Pure noise (tiny |G|^2): a bigger batch is as useful as the examples it holds.
    view = job("j", throughput=model, grad_sqr=1e-9, grad_var=1.0, max_batch_size=32 * 128)
    one = best_goodput(view, 1, gpus_per_node=4)
    many = best_goodput(view, num_gpus, gpus_per_node=4)
    assert one.goodput > 0 and many.goodput > 0
    return many.goodput / one.goodput


def test_the_policy_scales_out_a_compute_bound_job_and_not_a_sync_bound_one():
    compute_bound = ThroughputParams(alpha_c=0.01, beta_c=0.001, alpha_r=0.005, beta_r=0.0005,
                                     alpha_n=0.02, beta_n=0.002, gamma=2.0)
    sync_bound = ThroughputParams(alpha_c=0.01, beta_c=0.001, alpha_r=2.0, beta_r=0.2,
                                  alpha_n=4.0, beta_n=0.4, gamma=1.0)
    assert speedup(compute_bound, 4) > 3.0
    assert speedup(compute_bound, 8) > speedup(compute_bound, 4)
    # Accumulating 8 micro-batches per all-reduce buys the sync-bound job a little at 4
    # GPUs (its 2 s all-reduce is paid once per 1,024-example step), never near linear.
    assert 1.0 < speedup(sync_bound, 4) < 1.5
    assert speedup(sync_bound, 8) < speedup(sync_bound, 4)


def test_points_round_trip_through_placements_csv_into_the_simulator(tmp_path):
    points = fixture_points("bert")
    folder = tmp_path / "bert"
    shutil.copytree(FIXTURE / "bert", folder)
    accumulated = ThroughputPoint(num_nodes=2, num_replicas=3, local_bsz=5, accum_steps=3,
                                  step_time_s=2.0, sync_time_s=0.5)
    write_placements([*points, accumulated], folder / "placements.csv")
    frame = pd.read_csv(folder / "placements.csv")
    assert tuple(frame.columns) == PLACEMENT_COLUMNS
    shared = pd.read_csv(FIXTURE / "bert" / "placements.csv", nrows=0)
    assert tuple(shared.columns) == PLACEMENT_COLUMNS
    profile = load_app(folder)
    for p in points:
        assert profile.step_time_s(p.placement, p.local_bsz) == pytest.approx(
            (p.step_time_s, p.sync_time_s))
    # The simulator's accumulation (step + (a - 1) (step - sync)) recovers the measured step.
    step, sync = profile.step_time_s((1, 2), 5)
    assert step + 2 * (step - sync) == pytest.approx(accumulated.step_time_s)
    back = [q for q in read_placements(frame) if q.local_bsz != 5]
    assert sorted(back, key=repr) == sorted(points, key=repr)
