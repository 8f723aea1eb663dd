"""The exposure controller converges on a synthetic target; phase budgets add up as
registered; NAP's Oja sketch recovers a planted low-rank subspace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradnoise.control.controller import (
    BudgetWindow,
    ExposureController,
    ReferenceTrajectory,
    tracking_error,
)
from gradnoise.injection.nap import NAPNoise, OjaSketch

STEPS = 300


def simulate(controller: ExposureController, seed: int, natural: float = 1e-4) -> None:
    """A synthetic run: natural exposure per step with 30 % noise; an injected unit of
    variance adds u_t (drifting 5x over the run), realised with 20 % noise."""
    rng = np.random.default_rng(seed)
    total = injected = 0.0
    for step in range(1, STEPS + 1):
        unit = 1e-5 * (1 + 4 * step / STEPS)
        scale = controller.scale(step, unit if step > 1 else float("nan"))
        added = scale * unit * rng.uniform(0.8, 1.2)
        total += natural * rng.uniform(0.7, 1.3) + added
        injected += added
        controller.observe(step, total, injected)


def test_controller_follows_a_reference_trajectory():
    steps = np.arange(5, STEPS + 1, 5)
    values = 8e-4 * steps * (1 + 0.5 * np.sin(steps / 40))  # T / t between 4e-4 and 1.2e-3
    controller = ExposureController(ReferenceTrajectory(steps, values), horizon=4)
    simulate(controller, seed=0)
    summary = controller.summary()
    assert summary["tracking_error_median"] <= 0.10
    assert summary["pne_star_ratio_reference"] == pytest.approx(1.0, abs=0.05)
    # Every step's s_t is the control law of the module docstring applied to what the
    # controller had seen: s_t = clip((d_t + (T_{t-1} - I_{t-1}) / h - n_t) / u_t, 0, s_max),
    # d_t the target's slope, n_t the last step's natural increment (0 before step 1).
    path = controller.trajectory()
    target, total, injected = path["target"], path["total"], path["injected"]
    unit = 1e-5 * (1 + 4 * path["step"] / STEPS)  # u_t of simulate
    natural = np.diff(total - injected, prepend=0.0)  # the natural increment of each step
    expected = np.zeros_like(target)  # step 1: no estimate of u_t yet, s = 0
    slope, gap = np.diff(target), (target[:-1] - total[:-1]) / 4
    expected[1:] = np.clip((slope + gap - natural[:-1]) / unit[1:], 0.0, 1e4)
    np.testing.assert_allclose(path["noise_scale"], expected, rtol=1e-9, atol=0)
    # The target falls (steps 110-214) where the sine falls faster than the line rises;
    # the integral cannot follow it down: nothing injected until the target is back at
    # its peak. Where it is at its peak and rises faster than twice the natural
    # exposure (1e-4 a step), noise is injected but for the steps that close an overshoot.
    peak = np.maximum.accumulate(target)
    assert (target < peak).sum() > 50 and np.all(path["noise_scale"][target < peak] == 0)
    rising = (target >= peak) & (np.diff(target, prepend=np.inf) > 2e-4)
    assert rising.sum() > 150 and (path["noise_scale"][rising] > 0).mean() > 0.95


def test_controller_follows_a_reference_along_the_validation_loss_axis():
    """The run's loss falls faster than the reference's; validated every 4 steps (the
    reference every 5), it stops at the reference's final loss with its final exposure."""
    ref_steps = np.arange(1, STEPS + 1, 5)
    ref_loss = 3 + 3 * np.exp(-ref_steps / 100)
    reference = ReferenceTrajectory(ref_loss, 1e-3 * ref_steps, axis="validation_loss")
    controller = ExposureController(reference, horizon=4)
    rng = np.random.default_rng(3)
    total = injected = 0.0
    best, stop_loss = float("inf"), ref_loss[-1]
    for step in range(1, STEPS + 1):
        unit = 1e-5 * (1 + 4 * step / STEPS)
        scale = controller.scale(step, unit if step > 1 else float("nan"), progress=best)
        added = scale * unit * rng.uniform(0.8, 1.2)
        total += 1e-4 * rng.uniform(0.7, 1.3) + added
        injected += added
        controller.observe(step, total, injected)
        if step % 4 == 0:
            best = min(best, 3 + 3 * np.exp(-step / 60))
            if best <= stop_loss:
                break
    summary = controller.summary()
    assert step < STEPS  # stopped at the target loss, earlier than the reference
    assert summary["pne_star_ratio_reference"] == pytest.approx(1.0, abs=0.05)
    assert summary["tracking_error_median"] <= 0.10


def test_controller_injects_nothing_when_the_run_is_already_above_target():
    controller = ExposureController(ReferenceTrajectory([STEPS], [1e-6]), horizon=4)
    simulate(controller, seed=1)
    assert controller.trajectory()["noise_scale"].max() == 0.0


def test_phase_budgets_add_up_as_registered():
    """The same budget placed early, mid and late: each realised within 5 % of it, the
    injected exposure outside its window 0, the three realised budgets within 5 %."""
    budget, realised = 0.02, {}
    for phase, (a, b) in {"early": (0.0, 0.3), "mid": (0.3, 0.6), "late": (0.6, 0.9)}.items():
        target = BudgetWindow(budget, a * STEPS, b * STEPS)
        controller = ExposureController(target, horizon=4)
        simulate(controller, seed=2)
        summary = controller.summary()
        realised[phase] = summary["realised_budget"]
        path = controller.trajectory()
        outside = path["injected"][path["step"] <= a * STEPS]
        assert np.all(outside == 0)
        assert path["injected"][-1] == pytest.approx(budget, rel=0.05)
        assert summary["tracking_error_median"] <= 0.10
    assert all(abs(r - 1) <= 0.05 for r in realised.values()), realised
    assert max(realised.values()) / min(realised.values()) - 1 <= 0.05


def test_tracking_error_is_the_median_relative_window_error():
    steps = np.arange(1, 11)
    target = steps.astype(float)  # slope 1
    run = np.cumsum(np.where(steps % 2 == 0, 1.2, 1.0))  # +20 % in windows ending on even steps
    assert tracking_error(steps, run, target, 0, 10) == pytest.approx(0.1)


def test_reference_trajectory_rejects_a_damaged_trace():
    with pytest.raises(ValueError, match="trace of bs8_fixed: steps must be strictly"):
        ReferenceTrajectory([5, 5], [0.1, 0.2], source="trace of bs8_fixed")
    with pytest.raises(
        ValueError, match="int_pne_star and the validation_loss axis must be finite"
    ):
        ReferenceTrajectory([5, 4], [0.1, float("nan")], axis="validation_loss")


def test_oja_sketch_recovers_a_planted_subspace():
    dim, rank, n = 200, 3, 16
    gen = torch.Generator().manual_seed(0)
    planted = torch.linalg.qr(torch.randn(dim, rank, generator=gen))[0]
    eigenvalues = torch.tensor([25.0, 16.0, 9.0])
    sketch = OjaSketch(dim, rank, beta=0.9, seed=1)
    for _ in range(300):
        z = torch.randn(n, rank, generator=gen) * eigenvalues.sqrt()
        samples = z @ planted.T + 0.1 * torch.randn(n, dim, generator=gen)
        sketch.update(samples - samples.mean(0) * 0)  # zero-mean by construction
    overlap = torch.linalg.svdvals(planted.T @ sketch.basis)  # cosines of principal angles
    assert overlap.min() > 0.98
    expected = eigenvalues + 0.01  # planted plus the isotropic floor
    assert torch.allclose(sketch.eigenvalues.sort(descending=True).values, expected, rtol=0.25)


def test_nap_noise_has_the_sketched_covariance(monkeypatch):
    """Cov(xi) = s P (U Sigma U^T + lambda I) P, U and Sigma the sketch of this step."""
    dim, n_micro, scale, n_draws = 12, 4, 2.0, 4000
    param = torch.zeros(dim, requires_grad=True)
    nap = NAPNoise([param], rank=2, lambda_rel=0.5, n_micro=n_micro, micro_batch_size=3, seed=0)
    precond = torch.linspace(0.5, 2.0, dim)
    gen = torch.Generator().manual_seed(4)
    mixing = torch.randn(dim, dim, generator=gen)

    def step() -> tuple[torch.Tensor, torch.Tensor]:
        param.grad = torch.zeros(dim)
        micro = torch.randn(n_micro, dim, generator=gen) @ mixing
        for j in range(n_micro):
            param.grad += micro[j] / n_micro
            nap.after_micro_backward()
        before = param.grad.clone()
        unit = nap.unit_covariance(precond)
        cov_diag = nap.inject(scale)
        return param.grad - before, cov_diag / unit

    for _ in range(50):  # the sketch settles
        step()
    monkeypatch.setattr(nap.sketch, "update", lambda samples: None)  # hold U, Sigma from here
    draws = torch.stack([step()[0] for _ in range(n_draws)]) / precond
    basis, eig = nap.sketch.basis, nap.sketch.eigenvalues
    expected = scale * (basis @ torch.diag(eig) @ basis.T + nap.isotropic * torch.eye(dim))
    empirical = draws.T @ draws / n_draws
    se = torch.sqrt(torch.outer(torch.diag(expected), torch.diag(expected)) * 2 / n_draws)
    assert torch.all((empirical - expected).abs() <= 4 * se)
    assert nap.isotropic == pytest.approx(0.5 * float(eig.sum()) / dim)
    assert torch.allclose(step()[1], torch.full((dim,), scale))
