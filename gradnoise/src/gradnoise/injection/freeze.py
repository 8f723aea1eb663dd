"""Adam's preconditioner frozen from a registered step on (DESIGN §3, issue 10 item 4).

From the freeze step on, AdamW's second moment v (``exp_avg_sq``) is no longer
updated; everything else of the AdamW step is (Loshchilov and Hutter 2019;
torch.optim.AdamW, single-tensor form):

    theta <- theta (1 - eta lambda_wd)
    m     <- beta1 m + (1 - beta1) g
    v     <- v                                         (frozen)
    theta <- theta - eta / (1 - beta1^t) * m / (sqrt(v / (1 - beta2^t)) + eps)

So the preconditioner P_t = 1 / (sqrt(v / (1 - beta2^t)) + eps) the P-NE logger
reads is Adam's own formula applied to the frozen v (t keeps counting, so the
bias correction of m stays Adam's). With v = g^2 the frozen step equals AdamW's
own step exactly (then beta2 v + (1 - beta2) g^2 = v), which the tests use.

Usage::

    freeze = PreconditionerFreeze(optimizer, from_step=80)
    ...
    freeze.step(step)          # in place of optimizer.step()
"""

from __future__ import annotations

import torch


class PreconditionerFreeze:
    """Calls ``optimizer.step()`` before ``from_step`` and the frozen-v AdamW step from it on."""

    def __init__(self, optimizer: torch.optim.Optimizer, from_step: int):
        if not isinstance(optimizer, torch.optim.AdamW | torch.optim.Adam):
            raise TypeError(f"PreconditionerFreeze needs Adam or AdamW, got {type(optimizer)}")
        if from_step < 2:
            raise ValueError(f"freeze step must be >= 2 (v needs one update), got {from_step}")
        self.optimizer, self.from_step = optimizer, from_step

    def step(self, step: int) -> None:
        if step < self.from_step:
            self.optimizer.step()
        else:
            frozen_adamw_step(self.optimizer)


@torch.no_grad()
def frozen_adamw_step(optimizer: torch.optim.Optimizer) -> None:
    """One AdamW (or Adam: coupled weight decay) step that leaves ``exp_avg_sq`` as it is."""
    decoupled = isinstance(optimizer, torch.optim.AdamW)
    for group in optimizer.param_groups:
        beta1, beta2 = group["betas"]
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        for p in group["params"]:
            if p.grad is None:
                continue
            state = optimizer.state[p]
            if "exp_avg_sq" not in state:
                raise RuntimeError("frozen_adamw_step: the optimizer has no second moment yet")
            grad = p.grad
            if weight_decay and decoupled:
                p.mul_(1 - lr * weight_decay)
            elif weight_decay:
                grad = grad.add(p, alpha=weight_decay)
            state["step"] += 1
            t = float(state["step"])
            state["exp_avg"].lerp_(grad, 1 - beta1)
            bias1, bias2 = 1 - beta1**t, 1 - beta2**t
            denom = (state["exp_avg_sq"].sqrt() / bias2**0.5).add_(eps)
            p.addcdiv_(state["exp_avg"], denom, value=-lr / bias1)
