"""A pure functional AdamW step, the update map that counterfactual replay differentiates.

``torch.optim.AdamW`` updates its tensors in place, which ``torch.func`` cannot
differentiate. ``adamw_step`` is the same algorithm as a function of dicts of tensors,
with no in-place operation (Loshchilov and Hutter 2019; torch.optim.AdamW, single-tensor
form, in the order torch applies it). For the step number t >= 1 of this update:

    theta <- theta (1 - eta lambda)                        decoupled weight decay
    m     <- m + (1 - beta1) (g - m)                       torch: exp_avg.lerp_(g, 1 - beta1)
    v     <- beta2 v + (1 - beta2) g^2                     (kept as v when frozen, below)
    theta <- theta - eta / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

``freeze_second_moment=True`` leaves v as it is (the preconditioner freeze of
``gradnoise.injection.PreconditionerFreeze``): the dynamics are then linear in (theta, m)
on a quadratic loss. AMSGrad and ``maximize`` are refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import torch

Tensors = dict[str, torch.Tensor]


class AdamState(NamedTuple):
    """AdamW's moments by parameter name: m (``exp_avg``) and v (``exp_avg_sq``)."""

    exp_avg: Tensors
    exp_avg_sq: Tensors

    @staticmethod
    def zeros_like(params: Tensors) -> AdamState:
        """The state before the first step (torch initialises both moments to zero)."""
        return AdamState(
            {k: torch.zeros_like(p) for k, p in params.items()},
            {k: torch.zeros_like(p) for k, p in params.items()},
        )


@dataclass(frozen=True)
class AdamWHyper:
    """AdamW's hyper-parameters besides the learning rate, which may change per step."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float | Mapping[str, float] = 1e-2  # one value, or one per parameter name
    freeze_second_moment: bool = False


def adamw_step(
    params: Tensors,
    grads: Tensors,
    state: AdamState,
    lr: float,
    betas: tuple[float, float],
    eps: float,
    weight_decay: float | Mapping[str, float],
    step: int,
    *,
    amsgrad: bool = False,
    freeze_second_moment: bool = False,
) -> tuple[Tensors, AdamState]:
    """One AdamW update, out of place: ``(new_params, new_state)``.

    ``step`` is t, the number of this update counting from 1 (torch's ``state["step"]``
    after its increment), which sets the bias corrections 1 - beta1^t and 1 - beta2^t.
    ``weight_decay`` is one lambda for every parameter or a lambda per parameter name
    (parameter groups that differ in weight decay only, such as no decay on biases).
    """
    if amsgrad:
        raise ValueError("adamw_step: amsgrad=True is refused (the max in AMSGrad is not smooth)")
    if step < 1:
        raise ValueError(f"adamw_step: step counts updates from 1, got {step}")
    beta1, beta2 = betas
    bias1, bias2_sqrt = 1 - beta1**step, (1 - beta2**step) ** 0.5
    new_params, exp_avg, exp_avg_sq = {}, {}, {}
    for name, p in params.items():
        g = grads[name]
        decay = weight_decay[name] if isinstance(weight_decay, Mapping) else weight_decay
        if decay != 0:
            p = p * (1 - lr * decay)
        m = torch.lerp(state.exp_avg[name], g, 1 - beta1)
        v = state.exp_avg_sq[name]
        if not freeze_second_moment:
            v = torch.addcmul(v * beta2, g, g, value=1 - beta2)
        denom = v.sqrt() / bias2_sqrt + eps
        new_params[name] = torch.addcdiv(p, m, denom, value=-lr / bias1)
        exp_avg[name], exp_avg_sq[name] = m, v
    return new_params, AdamState(exp_avg, exp_avg_sq)


def adamw_from_optimizer(
    optimizer: torch.optim.Optimizer, model: torch.nn.Module
) -> tuple[AdamWHyper, float, Tensors, AdamState, int]:
    """``(hyper, lr, params, state, steps_done)`` read from a real AdamW, keyed by parameter name.

    Tensors are detached copies. Parameters the optimizer has not stepped yet get zero
    moments. Parameter groups may differ in weight decay (``hyper.weight_decay`` is then
    a dict by parameter name). Refused: other optimizers, Adam with coupled (L2) weight
    decay, AMSGrad, ``maximize``, parameter groups that differ in any other
    hyper-parameter, and parameters at different step counts.
    """
    if not isinstance(optimizer, torch.optim.Adam):
        raise TypeError(f"adamw_from_optimizer needs torch.optim.AdamW, got {type(optimizer)}")
    groups = optimizer.param_groups
    keys = ("lr", "betas", "eps", "amsgrad", "maximize")
    first = {k: groups[0][k] for k in keys}
    for g in groups[1:]:
        if any(g[k] != first[k] for k in keys):
            raise ValueError("adamw_from_optimizer: parameter groups differ in hyper-parameters")
    decoupled = isinstance(optimizer, torch.optim.AdamW) or groups[0].get(
        "decoupled_weight_decay", False
    )
    decays = {id(p): float(g["weight_decay"]) for g in groups for p in g["params"]}
    if any(decays.values()) and not decoupled:
        raise ValueError("adamw_from_optimizer: Adam's coupled (L2) weight decay is not AdamW's")
    if first["amsgrad"] or first["maximize"]:
        raise ValueError("adamw_from_optimizer: an optimizer with amsgrad or maximize is refused")
    owned = {id(p) for g in groups for p in g["params"]}
    params, m, v, steps = {}, {}, {}, set()
    for name, p in model.named_parameters():
        if id(p) not in owned:
            continue
        params[name] = p.detach().clone()
        st = optimizer.state.get(p, {})
        m[name] = st["exp_avg"].detach().clone() if st else torch.zeros_like(params[name])
        v[name] = st["exp_avg_sq"].detach().clone() if st else torch.zeros_like(params[name])
        steps.add(int(st["step"]) if st else 0)
    if len(steps) > 1:
        raise ValueError(f"adamw_from_optimizer: parameters at different step counts {steps}")
    by_name = {name: decays[id(p)] for name, p in model.named_parameters() if id(p) in decays}
    one = set(by_name.values())
    weight_decay = one.pop() if len(one) == 1 else by_name
    hyper = AdamWHyper(tuple(first["betas"]), first["eps"], weight_decay)
    return hyper, float(first["lr"]), params, AdamState(m, v), steps.pop() if steps else 0
