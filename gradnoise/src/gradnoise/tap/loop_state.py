"""What the hooks read off the loop's objects: a forward call's batch size, a GradScaler's stage."""

from __future__ import annotations

import torch


def batch_size(args: tuple, kwargs: dict) -> int:
    """The leading dimension of the first tensor among a forward call's arguments."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, torch.Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise RuntimeError(
        "gradnoise.tap: cannot read the micro-batch size, no tensor argument of the forward "
        "call has a batch dimension; pass attach(..., micro_batch_size=m)"
    )


def grads_still_scaled(scaler, optimizer) -> bool:
    """Whether ``.grad`` still carries the GradScaler's scale (no ``unscale_`` yet this step)."""
    from torch.amp.grad_scaler import OptState

    state = scaler._per_optimizer_states.get(id(optimizer), {})
    return state.get("stage") is not OptState.UNSCALED
