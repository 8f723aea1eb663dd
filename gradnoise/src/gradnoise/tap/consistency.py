"""The declared loss convention against the gradient the optimizer stepped with.

The hooks turn each micro-batch's gradient increment d_j into its mean gradient
g_j = a d_j, a = K (``"mean"``: each micro-batch loss is the mean over its m
examples divided by K) or a = 1 / m (``"sum"``: summed over its examples). The
gradient accumulated over the step and averaged over the W workers is then

    g_acc = (1 / W) sum_w sum_j d_wj = c G_bar,   c = K / a  (1 for "mean", m K for "sum")

with G_bar the pooled mean of the n = K W micro-batch means, which the logger
estimates anyway. After clipping by c_t, ``.grad`` = c_t g_acc. A logging step
checks ``.grad`` / c_t = c G_bar: a mismatch means the hooks and the optimizer saw
different gradients (``.grad`` zeroed between micro-batches, a GradScaler not
declared, a sum-reduced all-reduce, a hand-made change of ``.grad``).

A consistent rescaling of every micro-batch loss (declaring ``"mean"`` but not
dividing by K) rescales d_j, g_acc and G_bar alike and cannot be told from
gradients: that is why the convention is declared, not inferred.

Injected noise xi (declared with ``add_injected(diag Sigma)``, Sigma in the units
of G_bar) is in ``.grad`` too: E|xi|^2 = Tr(Sigma), standard deviation
sqrt(2 Tr(Sigma^2)) for Gaussian xi; the check allows Tr(Sigma) plus ten of them.
"""

from __future__ import annotations

import math

import torch

RTOL_FLOAT32 = 1e-3  # rounding of K sums in another order: ~1e-6 even when the means cancel
RTOL_HALF = 3e-2  # gradients held in bfloat16 / float16 accumulate with 8 / 11 mantissa bits
INJECTED_SDS = 10.0


def check_accumulated(
    params: list[torch.Tensor],
    pooled_mean: torch.Tensor,
    conversion: float,
    clip_coef: float,
    injected: torch.Tensor | None,
    step: int,
) -> None:
    """Raise unless ``.grad`` / c_t equals c G_bar (``conversion`` = c) within rounding.

    Parameters
    ----------
    params : the logger's parameters, in the order of the flat ``pooled_mean``.
    pooled_mean : G_bar, (D,), the logger's pooled mean micro-batch gradient.
    conversion : c = K / a, the factor from G_bar to the accumulated gradient.
    clip_coef : c_t, the clip coefficient read from the gradient norms.
    injected : diag(Sigma) of noise declared for this step, or None.
    step : the optimizer step, for the message.
    """
    diff_sq, ref_sq, dot = [], [], []
    pieces = pooled_mean.split([p.numel() for p in params])
    for p, piece in zip(params, pieces, strict=True):
        expected = piece.view_as(p)
        seen = (
            torch.zeros_like(expected)
            if p.grad is None
            else p.grad.float() / (clip_coef * conversion)
        )
        diff_sq.append(torch.sub(seen, expected).square().sum(dtype=torch.float64))
        ref_sq.append(expected.square().sum(dtype=torch.float64))
        dot.append((seen * expected).sum(dtype=torch.float64))
    diff, ref, inner = torch.stack([sum(diff_sq), sum(ref_sq), sum(dot)]).tolist()
    half = any(p.grad is not None and p.grad.element_size() < 4 for p in params)
    rtol = RTOL_HALF if half else RTOL_FLOAT32
    allowed = rtol**2 * ref
    if injected is not None:
        allowed += float(injected.sum()) + INJECTED_SDS * math.sqrt(2 * float(injected @ injected))
    if diff <= allowed:
        return
    ratio = inner / ref if ref > 0 else math.nan
    raise RuntimeError(
        f"gradnoise.tap: at step {step} the gradient the optimizer stepped with (.grad / clip "
        f"coefficient {clip_coef:.6g}) is not the sum of the micro-batch gradients the hooks "
        f"saw: relative difference {math.sqrt(diff / ref) if ref > 0 else math.inf:.3g}, "
        f"projection ratio {ratio:.6g} (1 expected). Usual causes: the number of backward "
        "passes per step is not n_micro; zero_grad() between micro-batches; .grad changed "
        "between the backward passes and optimizer.step() (noise added without "
        "tap.add_injected, clipping per parameter rather than by the global norm); a "
        "GradScaler not passed as attach(..., scaler=); gradients summed rather than averaged "
        "over workers; or a loss_reduction other than the loop's. No estimate is returned."
    )
