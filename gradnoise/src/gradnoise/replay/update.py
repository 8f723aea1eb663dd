"""The recorded run's update map U_t, as a function torch.func can differentiate.

One training step of a run with gradient noise xi_t added to the averaged gradient,
before global-norm clipping and the AdamW step (the order of
``gradnoise.injection.GradientNoise``):

    G_t     = grad L(theta_t; B_t) + xi_t
    c_t     = min(1, max_norm / (|G_t| + 1e-6))            torch.nn.utils.clip_grad_norm_
    (theta_{t+1}, m_{t+1}, v_{t+1}) = AdamW(theta_t, c_t G_t, m_t, v_t; eta_t, t + 1)

with B_t the recorded batch and L the loss (a mean over the batch). ``loss_fn(params,
batch)`` is any function of a dict of parameters; ``functional_loss`` builds one from a
module and a criterion through ``torch.func.functional_call``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch.func import functional_call, grad

from gradnoise.replay.adamw import AdamState, AdamWHyper, Tensors, adamw_step

LossFn = Callable[[Tensors, Any], torch.Tensor]
CLIP_EPS = 1e-6  # torch.nn.utils.clip_grad_norm_: max_norm / (total_norm + 1e-6)


def functional_loss(
    model: torch.nn.Module, criterion: Callable[[torch.Tensor, Any], torch.Tensor]
) -> LossFn:
    """``loss_fn(params, (inputs, targets)) = criterion(model(inputs; params), targets)``."""

    def loss_fn(params: Tensors, batch: Any) -> torch.Tensor:
        inputs, targets = batch
        return criterion(functional_call(model, params, (inputs,)), targets)

    return loss_fn


def clip_coefficient(grads: Tensors, max_norm: float | None) -> torch.Tensor | float:
    """c = min(1, max_norm / (|G|_2 + 1e-6)) over all tensors; 1 without clipping."""
    if max_norm is None:
        return 1.0
    total = torch.linalg.vector_norm(
        torch.stack([torch.linalg.vector_norm(g) for g in grads.values()])
    )
    return torch.clamp(max_norm / (total + CLIP_EPS), max=1.0)


def noisy_gradient(
    loss_fn: LossFn, params: Tensors, batch: Any, noise: Tensors | None, max_norm: float | None
) -> tuple[Tensors, torch.Tensor | float]:
    """(c_t (grad L + xi_t), c_t): the gradient the optimizer is given, and the clip coefficient."""
    g = grad(loss_fn)(params, batch)
    if noise is not None:
        g = {k: g[k] + noise[k] for k in g}
    c = clip_coefficient(g, max_norm)
    if max_norm is not None:
        g = {k: c * v for k, v in g.items()}
    return g, c


def update(
    loss_fn: LossFn,
    hyper: AdamWHyper,
    params: Tensors,
    state: AdamState,
    noise: Tensors | None,
    batch: Any,
    lr: float,
    step: int,
    max_norm: float | None = None,
) -> tuple[Tensors, AdamState]:
    """U_t: ``(theta_{t+1}, (m_{t+1}, v_{t+1}))`` from theta_t, the state and the noise xi_t.

    ``step`` is t + 1, the number of this update counting from 1.
    """
    g, _ = noisy_gradient(loss_fn, params, batch, noise, max_norm)
    return adamw_step(
        params,
        g,
        state,
        lr,
        hyper.betas,
        hyper.eps,
        hyper.weight_decay,
        step,
        freeze_second_moment=hyper.freeze_second_moment,
    )
