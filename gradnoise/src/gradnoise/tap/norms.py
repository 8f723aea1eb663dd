"""Gradient norms and the clip coefficient the hooks read from an optimizer step.

Global-norm clipping scales the whole averaged gradient by c_t = min(1, max_norm /
|g|); the update's noise covariance then scales by c_t^2 (``gradnoise.estimation.
formulas.effective``). The hooks never see the clipping call, so they read
c_t = |g_post| / |g_pre|: |g_pre| after the last micro-batch's backward (and its
all-reduce), |g_post| from ``.grad`` once the optimizer has stepped.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

# Relative rounding between two reads of the same gradient (the all-reduced buckets and
# ``.grad``, or a GradScaler's exact power-of-two unscaling): at most a few float32 ulps.
SAME_NORM_RTOL = 1e-6


def tensor_norms(tensors: list[torch.Tensor | None], device: torch.device) -> torch.Tensor:
    """(n,) float32 Euclidean norms, 0 for a missing gradient; the same operation for every read.

    Reading |g_pre| and |g_post| with one and the same function makes them equal bit
    for bit when ``.grad`` was not changed in between, so an unclipped step has c_t = 1.
    """
    zero = torch.zeros((), device=device)
    return torch.stack(
        [zero if t is None else torch.linalg.vector_norm(t, dtype=torch.float32).to(device)
         for t in tensors]
    )  # fmt: skip


def clip_coefficient(pre_norm: float, post_norm: float, step: int) -> float:
    """c_t = |g_post| / |g_pre|, 1.0 when nothing was clipped or the gradient is zero.

    Raises when the gradient grew between the backward passes and the step (c_t > 1):
    something other than clipping changed ``.grad`` (noise added without
    ``add_injected``, gradients summed over workers); and when it shrank by an exact
    power of two, which clipping (max_norm / (|g| + 1e-6)) never does and a
    GradScaler's unscaling always does: the hooks then saw scaled gradients, and
    the consistency check cannot see that (rows and ``.grad`` / c_t scale alike).
    """
    if not (math.isfinite(pre_norm) and math.isfinite(post_norm)):
        raise RuntimeError(
            f"gradnoise.tap: step {step} has a non-finite gradient norm (before clipping "
            f"{pre_norm}, after the step {post_norm}) but optimizer.step() ran; with mixed "
            "precision pass the GradScaler as attach(..., scaler=scaler)"
        )
    if pre_norm <= 0.0:
        return 1.0
    ratio = post_norm / pre_norm
    if ratio > 1.0 + SAME_NORM_RTOL:
        raise RuntimeError(
            f"gradnoise.tap: at step {step} the gradient norm grew from {pre_norm:.6g} after "
            f"the backward passes to {post_norm:.6g} at optimizer.step(); .grad was changed "
            "in between by something other than clipping (noise added without "
            "tap.add_injected, or a GradScaler not passed as attach(..., scaler=))"
        )
    if ratio >= 1.0 - SAME_NORM_RTOL:
        return 1.0
    if math.frexp(ratio)[0] == 0.5:  # an exact power of two: a GradScaler's unscaling
        raise RuntimeError(
            f"gradnoise.tap: at step {step} .grad shrank by exactly 2^{math.frexp(ratio)[1] - 1} "
            "between the backward passes and optimizer.step(), as a GradScaler unscales; pass "
            "it as attach(..., scaler=scaler) so the hooks read unscaled gradients"
        )
    return ratio


def install_comm_hook(
    ddp: torch.nn.parallel.DistributedDataParallel,
    process_group,
    on_bucket: Callable[[object], None],
) -> None:
    """Wrap DDP's default all-reduce (the average over workers) so ``on_bucket`` sees each bucket.

    ``on_bucket(bucket)`` runs once the bucket's average is in its buffer
    (``bucket.gradients()`` are views of it), before DDP writes it into ``.grad``.
    DDP allows one communication hook per model and none can be removed.
    """
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    def hook(state, bucket):
        def after(fut):
            on_bucket(bucket)
            return fut.value()

        return allreduce_hook(state, bucket).then(after)

    try:
        ddp.register_comm_hook(process_group, hook)
    except RuntimeError as error:
        raise RuntimeError(
            "gradnoise.tap.attach: cannot register its DDP communication hook, which reads "
            "the global gradient norm before clipping (DDP takes one communication hook per "
            f"model and this one may already have one): {error}"
        ) from error
