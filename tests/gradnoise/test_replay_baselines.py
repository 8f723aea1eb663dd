"""The AdamW-aware prediction against its baselines on a real AdamW run (issue 21 items 3, 7).

A small tanh network trained by torch.optim.AdamW for 10 steps, then a recorded segment
of 15 steps with Gaussian gradient noise, clipping and a decaying learning rate. The
candidate scales the recorded draws by 1.02; the retrain (``rerun``) realises it. The
AdamW Jacobian predicts the change of theta_T and of the loss within 5 %; the SGD-form
Jacobian (Adam's state ignored) and the identity Jacobian (TracIn-like) miss both by more
than half: Adam's preconditioner, which they leave out, sets the size of each step.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gradnoise.replay import (
    StepRecord,
    Trajectory,
    adamw_from_optimizer,
    delta_theta,
    functional_loss,
    predict_pathwise,
    rerun,
    rescaled,
)

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)


def mlp_trajectory(seed: int = 0, horizon: int = 15) -> tuple[Trajectory, callable]:
    """An AdamW run of a small tanh network, checkpointed after 10 steps, with Gaussian noise."""
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)
    ).double()
    x, y = torch.randn(256, 6, dtype=torch.float64), torch.randint(0, 3, (256,))
    loss_fn = functional_loss(model, F.cross_entropy)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.99), weight_decay=0.05)
    for _ in range(10):
        idx = torch.randint(0, 256, (32,))
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    hyper, lr, params, state, done = adamw_from_optimizer(opt, model)
    gen = torch.Generator().manual_seed(seed + 1)
    steps = []
    for t in range(horizon):
        idx = torch.randint(0, 256, (32,), generator=gen)
        xi = {
            k: 0.3 * torch.randn(p.shape, generator=gen, dtype=p.dtype) for k, p in params.items()
        }
        steps.append(StepRecord((x[idx], y[idx]), lr * (1 - t / (2 * horizon)), xi))
    traj = Trajectory(loss_fn, params, state, hyper, steps, steps_done=done, max_norm=5.0)
    metric = lambda p: F.cross_entropy(torch.func.functional_call(model, p, (x,)), y)  # noqa: E731
    return traj, metric


def test_adamw_jacobian_matches_the_retrain_where_the_baselines_do_not():
    traj, metric = mlp_trajectory()
    phi = rescaled(1.02)
    recorded_T, _ = rerun(traj)
    retrained, _ = rerun(traj, phi)
    realised = float(metric(retrained) - metric(recorded_T))
    realised_theta = torch.cat([(retrained[k] - recorded_T[k]).flatten() for k in recorded_T])
    _, changes = delta_theta(traj, {"x1.02": phi})
    rows = {r.jacobian: r for r in predict_pathwise(traj, {"x1.02": phi}, {"loss": metric})}
    errors = {}
    for j, row in rows.items():
        predicted = torch.cat([v.flatten() for v in changes[j]["x1.02"].values()])
        errors[j] = float((predicted - realised_theta).norm() / realised_theta.norm())
        errors[j + " f"] = abs(row.delta_f - realised) / abs(realised)
    assert errors["adamw"] < 0.05 and errors["adamw f"] < 0.05, errors
    assert errors["sgd"] > 0.5 and errors["identity"] > 0.5, errors
    assert errors["sgd f"] > 0.5 and errors["identity f"] > 0.5, errors
