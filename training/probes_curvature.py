"""Curvature probes of a trained model on a fixed probe batch: sharpness three ways.

- ``hessian_top_eigenvalue``: the dominant eigenvalue of the loss Hessian H by power
  iteration on Hessian-vector products (Pearlmutter 1994; as in Yao et al. 2020,
  PyHessian);
- ``sam_sharpness``: the first-order SAM sharpness L(w + rho g/|g|) - L(w)
  (Foret et al. 2021, eq. 2 with the ascent step of their eq. 3);
- ``fisher_trace``: the trace of the empirical Fisher from per-example gradients,
  Tr(F) = (1/N) sum_i |grad l_i|^2 (Kunstner, Hennig & Balles 2019 on how it
  differs from the Hessian).

Every function takes a loss closure and a list of parameters, so it is exact on any
differentiable function (the tests use quadratics with known answers), and leaves
the parameters and their ``.grad`` as it found them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

LossClosure = Callable[[], torch.Tensor]


def _dot(xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]) -> float:
    return float(sum((x * y).sum() for x, y in zip(xs, ys, strict=True)))


def hessian_top_eigenvalue(
    loss_closure: LossClosure,
    params: Sequence[torch.nn.Parameter],
    n_iter: int = 20,
    rel_tol: float = 1e-4,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """Dominant eigenvalue of the Hessian of ``loss_closure()`` in ``params``.

    Power iteration v <- H v / |H v| from a Gaussian start, each H v one
    Hessian-vector product by double backpropagation (Pearlmutter 1994). The
    estimate is the Rayleigh quotient lambda = v^T H v (|v| = 1); iteration stops
    when it changes by less than ``rel_tol`` relative, or after ``n_iter`` products.

    Parameters
    ----------
    loss_closure : callable
        Returns the scalar loss with its graph; must not call backward. It runs
        under the math kernel of scaled-dot-product attention, since the fused
        kernels have no double backward.
    params : sequence of Parameter
        The coordinates of the Hessian.
    n_iter : int
        Maximum number of Hessian-vector products.
    rel_tol : float
        Relative change of lambda between iterations at which to stop.
    generator : torch.Generator, optional
        Source of the start vector (fixed for a reproducible probe).

    Returns
    -------
    dict
        ``eigenvalue``: lambda, the eigenvalue of largest magnitude with its sign
        (power iteration converges to |lambda|_max; at the end of training this is
        the top positive eigenvalue unless a negative one is larger in magnitude);
        ``n_iter``: Hessian-vector products used; ``rel_change``: the last relative
        change of lambda (convergence diagnostic; the error of lambda shrinks as
        (lambda_2/lambda_1)^(2 n)).

    References
    ----------
    Pearlmutter (1994), Fast exact multiplication by the Hessian. Yao, Gholami,
    Keutzer & Mahoney (2020), PyHessian, Algorithm 1.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}")
    params = list(params)
    with sdpa_kernel(SDPBackend.MATH):
        loss = loss_closure()
    grads = torch.autograd.grad(loss, params, create_graph=True, materialize_grads=True)
    v = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    norm = math.sqrt(_dot(v, v))
    v = [x / norm for x in v]
    eigenvalue, rel_change, used = float("nan"), float("nan"), 0
    for used in range(1, n_iter + 1):
        hv = torch.autograd.grad(
            grads, params, grad_outputs=v, retain_graph=used < n_iter, materialize_grads=True
        )
        new = _dot(v, hv)  # Rayleigh quotient v^T H v with |v| = 1
        rel_change = abs(new - eigenvalue) / max(abs(new), 1e-30) if used > 1 else float("inf")
        eigenvalue = new
        norm = math.sqrt(_dot(hv, hv))
        if norm == 0.0 or rel_change < rel_tol:
            break
        v = [x.detach() / norm for x in hv]
    return {"eigenvalue": eigenvalue, "n_iter": float(used), "rel_change": rel_change}


def sam_sharpness(
    loss_closure: LossClosure, params: Sequence[torch.nn.Parameter], rho: float
) -> dict[str, float]:
    """First-order SAM sharpness, S = L(w + rho g/|g|) - L(w), g = grad L(w).

    Foret et al. (2021) define sharpness as max_{|e| <= rho} L(w + e) - L(w) and
    approximate the maximizer to first order by e = rho g / |g| (their eq. 2-3);
    this is that approximation, evaluated exactly at the perturbed weights. On a
    quadratic L = 1/2 w^T A w it equals rho |A w| + rho^2 (g^T A g) / (2 |g|^2);
    on a function with g = 0 (flat, or exactly at a critical point) it is 0 by
    definition (e = 0). The parameters are restored afterwards.

    Returns
    -------
    dict
        ``sharpness``: S (loss units); ``loss``: L(w); ``grad_norm``: |g|.
    """
    if not rho > 0:
        raise ValueError(f"rho must be positive, got {rho}")
    params = list(params)
    loss_tensor = loss_closure()
    grads = torch.autograd.grad(loss_tensor, params, materialize_grads=True)
    loss, grad_norm = float(loss_tensor.detach()), math.sqrt(_dot(grads, grads))
    if grad_norm == 0.0:
        return {"sharpness": 0.0, "loss": loss, "grad_norm": 0.0}
    saved = [p.detach().clone() for p in params]  # restored bit for bit afterwards
    try:
        with torch.no_grad():
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=rho / grad_norm)
            perturbed = float(loss_closure())
    finally:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
    return {"sharpness": perturbed - loss, "loss": loss, "grad_norm": grad_norm}


def fisher_trace(
    example_losses: Callable[[int], torch.Tensor],
    n_examples: int,
    params: Sequence[torch.nn.Parameter],
) -> dict[str, float]:
    """Trace of the empirical Fisher from per-example gradients.

    Tr(F) = (1/N) sum_i |grad l_i(w)|^2, with F = (1/N) sum_i g_i g_i^T the
    empirical Fisher (the data's labels, not the model's samples; Kunstner et al.
    2019) and l_i the loss of example i. Each g_i is its own backward pass, so the
    trace is exact for the N examples (no micro-batch pooling, no estimator
    variance).

    Parameters
    ----------
    example_losses : callable
        ``example_losses(i)`` returns the scalar loss l_i of example i with its graph.
    n_examples : int
        N.
    params : sequence of Parameter

    Returns
    -------
    dict
        ``trace``: Tr(F); ``grad_sq_mean``: |(1/N) sum_i g_i|^2, the squared norm of
        the mean gradient (Tr(F) minus it is the trace of the per-example gradient
        covariance with divisor N).
    """
    if n_examples < 1:
        raise ValueError(f"n_examples must be at least 1, got {n_examples}")
    params = list(params)
    total = 0.0
    mean = [torch.zeros_like(p) for p in params]
    for i in range(n_examples):
        grads = torch.autograd.grad(example_losses(i), params, materialize_grads=True)
        total += _dot(grads, grads)
        for m, g in zip(mean, grads, strict=True):
            m.add_(g, alpha=1.0 / n_examples)
    return {"trace": total / n_examples, "grad_sq_mean": _dot(mean, mean)}
