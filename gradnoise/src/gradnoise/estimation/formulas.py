"""The formulas of P-NE (DESIGN §2, seed 003), each in one function.

The logger (``gradnoise.estimation.logger``) only composes these. Notation: n = K * W micro-batch
mean gradients g_bar_j of m examples each, their mean G_bar, the global batch
B = m * K * W, the optimizer's diagonal preconditioner P, learning rate eta.
"""

from __future__ import annotations

import math

import torch


def covariance_diag(micro_var: torch.Tensor, micro_batch_size: int) -> torch.Tensor:
    """diag(C) = m * Var_j(g_bar_j), m times the unbiased variance of micro-batch means.

    Source: seed 003 §3.4. A micro-batch mean of m examples has covariance C / m, so m times the
    unbiased variance of the n = K * W micro-batch means estimates diag(C).
    Bias: none when examples are drawn with replacement (C the population
    covariance); when each step draws B distinct examples of a finite set of N
    and splits them into micro-batches, the negative covariance between
    micro-batches cancels the finite-population factor and the estimate is
    exactly unbiased for the unbiased (1 / (N - 1)) per-example covariance.
    Variance: for Gaussian micro-batch means, Var[Tr(P C_hat P)] =
    2 Tr((P C P)^2) / (n - 1), a relative standard error between
    sqrt(2 / ((n - 1) r_eff)) and sqrt(2 / (n - 1)), r_eff the effective rank of P C P.
    """
    return micro_batch_size * micro_var


def grad_sq_diag(mean: torch.Tensor, cov_diag: torch.Tensor, global_batch: int) -> torch.Tensor:
    """Unbiased G^2 per coordinate: G_bar^2 - diag(C) / B (McCandlish et al. 2018, App. A).

    E[G_bar^2] = G^2 + diag(C) / B, so subtracting the estimated noise removes the
    bias (exactly so with replacement; drawing B distinct examples of N leaves a
    bias of -diag(C) / N). Single coordinates, and even the sum, can be negative
    when the noise dominates; ``b_simple`` handles that.
    """
    return mean**2 - cov_diag / global_batch


def precond_diag_product(precond: torch.Tensor, diag: torch.Tensor) -> torch.Tensor:
    """Diagonal of P D P for diagonal P and D, so that Tr(P D P) = its sum."""
    return precond**2 * diag


def pne(lr: float, trace_pcp: float) -> float:
    """P-NE_t = eta_t * Tr(P C P) / B; eta, not eta^2: diffusion scales as eta (seed 003 §3.3)."""
    return lr * trace_pcp


def pne_star(pne_value: float, trace_pfp: float, floor: float) -> float:
    """P-NE*_t = P-NE_t / max(floor, Tr(P F P)), noise referenced to curvature (seed 003 §3.3).

    ``floor`` is relative to the scale of the curvature (``curvature_floor``), so
    it only binds when a proxy's trace is negligible next to that scale, never
    at a fixed absolute value. NaN when the curvature trace is NaN (a proxy that
    was not estimated); 0 when there is no noise and no curvature at all.
    """
    if math.isnan(trace_pfp):
        return math.nan
    denominator = max(floor, trace_pfp)
    if denominator <= 0:
        return 0.0 if pne_value == 0 else math.inf
    return pne_value / denominator


def curvature_floor(eps_rel: float, trace_fisher: float) -> float:
    """Floor of a curvature trace: eps_rel times Tr(P F_emp P), the empirical Fisher's trace.

    The empirical Fisher diagonal C + G^2 is non-negative coordinate by
    coordinate (``fisher_diag``), so its trace sets the scale of P's curvature
    terms at every step; a fixed absolute floor (1e-12) would instead depend on
    the units of the loss and the size of P.
    """
    return eps_rel * max(trace_fisher, 0.0)


def effective(value: float, clip_coef: float) -> float:
    """Exposure after clipping: a gradient scaled by c_t has its noise covariance scaled by c_t^2.

    Seed 003 §3.4 asks for the exposure of the update really applied. Global-norm
    clipping multiplies the whole averaged gradient, signal and noise, by c_t, so
    the update's noise covariance is c_t^2 times the unclipped one.
    """
    return clip_coef**2 * value


def pne_eta2(lr: float, trace_pcp: float) -> float:
    """eta_t^2 * Tr(P C P) / B, the step-size-squared variant of seeds 000/001, for comparison."""
    return lr**2 * trace_pcp


def b_simple(trace_cov: float, grad_sq: float) -> float:
    """Simple gradient noise scale B_simple = Tr(C) / |G|^2 (McCandlish et al. 2018, eq. 2.8).

    ``grad_sq`` is the unbiased estimate |G_bar|^2 - Tr(C)/B. When it is not
    positive the noise swamps the signal at this batch size and the noise scale is
    reported as +inf (never NaN). A ratio of two estimates: for one step it is
    biased upwards (by about Var(|G|^2_hat) / (|G|^2)^2, ~10 % at small batches).
    McCandlish et al. (App. A) average numerator and denominator over many steps
    before dividing: pass sums (or means) of ``trace_cov`` and ``grad_sq`` to get
    that ratio of means, consistent as the number of estimates grows.
    """
    if grad_sq <= 0:
        return math.inf
    return trace_cov / grad_sq


def adam_precond(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> torch.Tensor:
    """Adam(W)'s preconditioner for ``param``: P = 1 / (sqrt(v_t / (1 - beta2^t)) + eps).

    Read after ``optimizer.step()``, so it is the factor the update just applied
    (with ``amsgrad``, the running maximum of v). A parameter without optimizer
    state was not updated and gets P = 0.
    """
    state = optimizer.state.get(param, {})
    if "exp_avg_sq" not in state:
        return torch.zeros_like(param, dtype=torch.float32)
    group = next(g for g in optimizer.param_groups if any(p is param for p in g["params"]))
    second = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
    bias_correction = 1.0 - group["betas"][1] ** float(state["step"])
    return 1.0 / ((second.float() / bias_correction).sqrt() + group["eps"])


def preconditioner(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor]
) -> list[torch.Tensor]:
    """Diagonal P_t per parameter: Adam/AdamW's (``adam_precond``), or the identity for SGD.

    For SGD, P = I for parameters the optimizer updates and 0 for the others;
    momentum is not folded into P (it rescales the effective step by 1/(1 - mu)).
    """
    if isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        return [adam_precond(optimizer, p) for p in params]
    updated = {id(p) for g in optimizer.param_groups for p in g["params"]}
    return [torch.full_like(p, float(id(p) in updated), dtype=torch.float32) for p in params]


def layer_name(param_name: str) -> str:
    """The module a parameter belongs to: ``blocks.0.attn.qkv.weight`` -> ``blocks.0.attn.qkv``."""
    return param_name.rsplit(".", 1)[0] if "." in param_name else param_name


def precond_sq_flat(
    optimizer: torch.optim.Optimizer,
    params: list[torch.Tensor],
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """P_t^2 of ``params``, flattened in their order: the same P as ``preconditioner``, in O(D).

    Built for every optimizer step (the stride-free integral of ``gradnoise.estimation.integrals``):
    one concatenation of Adam's second moments and four in-place passes, instead
    of one small kernel per parameter and operation. fp32, on the parameters' device;
    written into ``out`` (D,) when given, so no step allocates.
    """
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        return torch.cat([p.reshape(-1) for p in preconditioner(optimizer, params)]) ** 2
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    seconds, settings, missing = [], [], []
    for i, p in enumerate(params):
        state, group = optimizer.state.get(p, {}), group_of.get(id(p))
        if group is None or "exp_avg_sq" not in state:
            seconds.append(torch.zeros_like(p, dtype=torch.float32))
            settings.append((1.0, 1.0))
            missing.append(i)
            continue
        second = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        seconds.append(second.float())
        settings.append((1.0 - group["betas"][1] ** float(state["step"]), float(group["eps"])))
    flat = torch.cat([v.reshape(-1) for v in seconds], out=out)
    if len(set(settings)) == 1:
        _precond_sq_(flat, *settings[0])
    else:
        pieces = flat.split([p.numel() for p in params])
        for piece, (bias_correction, eps) in zip(pieces, settings, strict=True):
            _precond_sq_(piece, bias_correction, eps)
    if missing:
        pieces = flat.split([p.numel() for p in params])
        for i in missing:
            pieces[i].zero_()
    return flat


def _precond_sq_(second: torch.Tensor, bias_correction: float, eps: float) -> torch.Tensor:
    """In place: v -> (1 / (sqrt(v / bias_correction) + eps))^2, ``adam_precond`` squared.

    Written as bias_correction / (sqrt(v) + eps sqrt(bias_correction))^2: one pass fewer.
    """
    return second.sqrt_().add_(eps * math.sqrt(bias_correction)).pow_(-2).mul_(bias_correction)


def precond_flat(
    optimizer: torch.optim.Optimizer, params: list[torch.Tensor], out: torch.Tensor
) -> torch.Tensor:
    """P_t of ``params``, flattened in their order, written into ``out`` (D,): no temporary.

    The same numbers as ``preconditioner`` (for Adam the same operations,
    1 / (sqrt(v / (1 - beta2^t)) + eps), in place on a copy of v); 0 for a
    parameter without optimizer state. Used by the streaming logger
    (``NoiseLogger(streaming=True)``), which must not allocate a vector of the
    gradient's size.
    """
    pieces = out.split([p.numel() for p in params])
    if not isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW):
        updated = {id(p) for g in optimizer.param_groups for p in g["params"]}
        for piece, p in zip(pieces, params, strict=True):
            piece.fill_(float(id(p) in updated))
        return out
    group_of = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for piece, p in zip(pieces, params, strict=True):
        state, group = optimizer.state.get(p, {}), group_of.get(id(p))
        if group is None or "exp_avg_sq" not in state:
            piece.zero_()
            continue
        second = state["max_exp_avg_sq"] if group.get("amsgrad", False) else state["exp_avg_sq"]
        bias_correction = 1.0 - group["betas"][1] ** float(state["step"])
        piece.copy_(second.reshape(-1)).div_(bias_correction).sqrt_()
        piece.add_(group["eps"]).reciprocal_()
    return out
