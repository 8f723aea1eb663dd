"""Injected noise has the registered covariance; Student-t its second moment; SGLD 2 eta T;
the freeze stops v (gradnoise.injection: gradient_noise, freeze)."""

from __future__ import annotations

import math

import pytest
import torch

from gradnoise.injection.freeze import PreconditionerFreeze
from gradnoise.injection.gradient_noise import GradientNoise, SGLDNoise, sgld_equivalent_diag

DRAWS = 4000


def draws(noise: GradientNoise, param: torch.Tensor, n: int, **kwargs) -> torch.Tensor:
    """(n, D) injected vectors (the .grad increments) of ``n`` steps."""
    out = torch.empty(n, param.numel())
    for i in range(n):
        param.grad = torch.zeros_like(param)
        kwargs_i = kwargs(i) if callable(kwargs) else kwargs
        noise.inject(**kwargs_i)
        out[i] = param.grad.reshape(-1)
    return out


@pytest.mark.parametrize("form", ["gaussian", "student_t"])
def test_diagonal_forms_have_the_registered_covariance(form):
    param = torch.zeros(6, requires_grad=True)
    diag = torch.tensor([0.5, 1.0, 2.0, 0.1, 4.0, 0.0])
    scale = 3.0
    noise = GradientNoise([param], form, seed=1, df=5.0)
    xi = draws(noise, param, DRAWS, scale=scale, diag=diag)
    expected = scale * diag
    # variance of the sample variance: (kurtosis - 1) sigma^4 / n; t_5 has kurtosis 9
    kurtosis = 3.0 if form == "gaussian" else 9.0
    se = expected * math.sqrt((kurtosis - 1) / DRAWS)
    assert torch.all((xi.pow(2).mean(0) - expected).abs() <= 4 * se + 1e-12)
    off_diag = torch.cov(xi.T) - torch.diag(torch.diag(torch.cov(xi.T)))
    assert off_diag.abs().max() < 4 * math.sqrt(kurtosis / DRAWS) * expected.max()


def test_student_t_draws_have_unit_second_moment_and_heavy_tails():
    noise = GradientNoise([torch.zeros(1, requires_grad=True)], "student_t", seed=2, df=4.0)
    sample = noise.standard_draw(200_000, torch.device("cpu"))
    # t_4 has infinite kurtosis; the sample second moment converges slowly: 3 % is generous
    assert sample.pow(2).mean().item() == pytest.approx(1.0, rel=0.03)
    gaussian = GradientNoise([torch.zeros(1, requires_grad=True)], "gaussian", seed=2)
    normal = gaussian.standard_draw(200_000, torch.device("cpu"))
    assert (sample.abs() > 4).float().mean() > 10 * (normal.abs() > 4).float().mean()


def test_student_t_needs_finite_variance():
    with pytest.raises(ValueError, match="df > 2"):
        GradientNoise([torch.zeros(1, requires_grad=True)], "student_t", seed=0, df=2.0)


def test_anisotropic_noise_has_the_micro_batch_covariance():
    """Cov(xi | g_1..g_K) = s c sum_j (g_j - g_mean)(g_j - g_mean)^T, c = 1 / ((K - 1) K)."""
    n_micro, dim, scale = 4, 5, 2.0
    param = torch.zeros(dim, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    micro = torch.randn(n_micro, dim, generator=gen) * torch.arange(1, dim + 1)
    noise = GradientNoise([param], "anisotropic", seed=3, n_micro=n_micro)
    xi = torch.empty(DRAWS, dim)
    for i in range(DRAWS):
        param.grad = torch.zeros(dim)
        for j in range(n_micro):  # the accumulated .grad after micro-batch j
            param.grad += micro[j] / n_micro
            noise.after_micro_backward()
        before = param.grad.clone()
        cov_diag = noise.inject(scale)
        xi[i] = param.grad - before
    centred = micro - micro.mean(0)
    expected = scale * centred.T @ centred / ((n_micro - 1) * n_micro)
    assert torch.allclose(cov_diag, torch.diag(expected))
    empirical = xi.T @ xi / DRAWS
    se = math.sqrt(2 / DRAWS) * torch.sqrt(torch.outer(torch.diag(expected), torch.diag(expected)))
    assert torch.all((empirical - expected).abs() <= 4 * se + 1e-9)


def test_same_seed_same_noise_and_state_resumes():
    param = torch.zeros(8, requires_grad=True)
    a = GradientNoise([param], "student_t", seed=7, df=4.0)
    first = draws(a, param, 3, scale=1.0, diag=torch.ones(8))
    state = a.state_dict()
    rest = draws(a, param, 3, scale=1.0, diag=torch.ones(8))
    b = GradientNoise([param], "student_t", seed=7, df=4.0)
    assert torch.equal(draws(b, param, 3, scale=1.0, diag=torch.ones(8)), first)
    b.load_state_dict(state)
    assert torch.equal(draws(b, param, 3, scale=1.0, diag=torch.ones(8)), rest)
    global_state = torch.get_rng_state()
    draws(b, param, 2, scale=1.0, diag=torch.ones(8))
    assert torch.equal(torch.get_rng_state(), global_state)  # the global RNG is untouched


@pytest.mark.parametrize("form", ["gaussian", "student_t"])
def test_last_draw_regenerates_the_added_noise_exactly(form):
    """xi = (root * standard) * sqrt(scale), bit for bit: what replay transforms (issue 21)."""
    param = torch.zeros(7, requires_grad=True)
    diag = torch.tensor([0.5, 1.0, 2.0, 0.1, 4.0, 0.0, 3.0])
    noise = GradientNoise([param], form, seed=3, df=5.0)
    for scale in (2.5, 0.0, 7.0):
        param.grad = torch.zeros_like(param)
        noise.inject(scale, diag=diag)
        draw = noise.last_draw
        assert draw.scale == scale
        torch.testing.assert_close(draw.root, diag.sqrt(), rtol=0, atol=0)
        regenerated = draw.root * draw.standard * math.sqrt(draw.scale)
        assert torch.equal(regenerated, param.grad)


def test_sgld_noise_has_variance_two_eta_t():
    lr, temperature = 0.01, 0.5
    param = torch.zeros(20_000, requires_grad=True)
    SGLDNoise([param], temperature, seed=0).perturb(lr)
    expected = 2 * lr * temperature
    assert param.detach().var().item() == pytest.approx(expected, rel=4 * math.sqrt(2 / 20_000))
    precond = torch.tensor([2.0, 0.5, 10.0])
    equivalent = sgld_equivalent_diag(precond, lr, temperature)
    # eta^2 P Cov P = 2 eta T I: the same diffusion as the update noise
    assert torch.allclose(lr**2 * precond**2 * equivalent, torch.full((3,), expected))


def adamw_with_state(beta2: float = 0.95) -> tuple[torch.nn.Parameter, torch.optim.AdamW]:
    gen = torch.Generator().manual_seed(0)
    param = torch.nn.Parameter(torch.randn(10, generator=gen))
    optimizer = torch.optim.AdamW([param], lr=0.01, betas=(0.9, beta2), weight_decay=0.1)
    for _ in range(3):
        param.grad = torch.randn(10, generator=gen)
        optimizer.step()
    return param, optimizer


def test_freeze_stops_the_second_moment_from_its_step_on():
    param, optimizer = adamw_with_state()
    freeze = PreconditionerFreeze(optimizer, from_step=5)
    param.grad = torch.randn(10)
    before = optimizer.state[param]["exp_avg_sq"].clone()
    freeze.step(4)  # before the freeze: Adam's own step moves v
    assert not torch.equal(optimizer.state[param]["exp_avg_sq"], before)
    frozen = optimizer.state[param]["exp_avg_sq"].clone()
    for step in range(5, 10):
        param.grad = 5 * torch.randn(10)
        theta = param.detach().clone()
        freeze.step(step)
        assert torch.equal(optimizer.state[param]["exp_avg_sq"], frozen)
        assert not torch.equal(param.detach(), theta)  # the parameters still move


def test_frozen_step_is_adamw_when_the_gradient_would_not_move_v():
    """With g^2 = v, beta2 v + (1 - beta2) g^2 = v: AdamW's own step and the frozen one agree."""
    param_a, opt_a = adamw_with_state()
    param_b, opt_b = adamw_with_state()
    grad = opt_a.state[param_a]["exp_avg_sq"].sqrt()
    param_a.grad, param_b.grad = grad.clone(), grad.clone()
    opt_a.step()
    PreconditionerFreeze(opt_b, from_step=2).step(4)
    assert torch.allclose(param_a, param_b, rtol=0, atol=1e-7)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.allclose(opt_a.state[param_a][key], opt_b.state[param_b][key], atol=1e-9)
