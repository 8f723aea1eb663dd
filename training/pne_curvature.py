"""Curvature proxies F_t for the denominator of P-NE* = P-NE / max(eps, Tr(P F P)).

Two proxies, selectable in ``NoiseLogger(curvature=...)`` (DESIGN §2, seed 003
§3.4 "Curvature proxies"):

- ``fisher``: the diagonal of the empirical Fisher, E_i[g_i g_i^T], from the same
  micro-batch statistics as the noise, at no extra cost;
- ``hutchinson``: Tr(P H P) of the loss Hessian H by Hutchinson's (1989)
  randomized trace estimator through Hessian-vector products, one extra
  forward and double backward per probe, at logging steps only.

The empirical Fisher is not the Hessian: it matches the Gauss-Newton matrix only
near a well-specified optimum and can differ from it greatly elsewhere (Kunstner,
Hennig & Balles 2019); comparing the two proxies is the sensitivity analysis the
design asks for (``analysis.sensitivity``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel


def fisher_diag(cov_diag: torch.Tensor, grad_sq_diag: torch.Tensor) -> torch.Tensor:
    """Diagonal of the empirical Fisher, diag(F) = diag(C) + G^2 (per coordinate).

    ``cov_diag`` estimates the per-example covariance diag(C), ``grad_sq_diag``
    the squared mean gradient G^2 (see ``training.pne.grad_sq_diag``, which
    removes the noise Var(G_bar) = diag(C)/B from G_bar^2). With both unbiased,
    the sum is unbiased for the per-example second moment E_i[g_i^2]: under
    without-replacement sampling from N examples it equals exactly
    (1/N) sum_i g_i^2, the empirical Fisher of the data set. Using G_bar^2 instead
    would add diag(C)/B, a bias that grows as the batch shrinks and would make
    P-NE* depend on B through its denominator.
    """
    return cov_diag + grad_sq_diag


def hutchinson_trace_php(
    loss_closure: Callable[[], torch.Tensor],
    params: Sequence[torch.nn.Parameter],
    precond: Sequence[torch.Tensor],
    n_probes: int,
    generator: torch.Generator,
) -> float:
    """Hutchinson estimate of Tr(P H P), H the Hessian of ``loss_closure()`` in ``params``.

    Tr(P H P) = E_v[(P v)^T H (P v)] for Rademacher probes v (Hutchinson 1989),
    each term one Hessian-vector product by double backpropagation (Pearlmutter
    1994). Unbiased; the variance of one probe is 2 sum_{i != j} (P H P)_ij^2, so
    the standard error falls as 1/sqrt(n_probes). ``precond`` holds P's diagonal
    shaped like each parameter. The closure returns a scalar loss with its graph;
    it must not call backward. ``.grad`` is left untouched. The closure runs with
    the math kernel of scaled-dot-product attention: the fused CPU/GPU kernels
    have no double backward.
    """
    with sdpa_kernel(SDPBackend.MATH):
        loss = loss_closure()
    grads = torch.autograd.grad(loss, params, create_graph=True, materialize_grads=True)
    total = 0.0
    for probe in range(n_probes):
        directions = [
            p_diag * (2 * torch.randint(0, 2, p.shape, generator=generator, device=p.device) - 1)
            for p, p_diag in zip(params, precond, strict=True)
        ]
        hvp = torch.autograd.grad(
            grads,
            params,
            grad_outputs=directions,
            retain_graph=probe < n_probes - 1,
            materialize_grads=True,
        )
        total += sum(float((u * hv).sum()) for u, hv in zip(directions, hvp, strict=True))
    return total / n_probes
