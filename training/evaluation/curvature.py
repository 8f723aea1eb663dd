"""Curvature probes of a trained model on a fixed probe batch: sharpness three ways.

- ``hessian_top_eigenvalue``: the dominant eigenvalue of the loss Hessian H by the
  Lanczos iteration on Hessian-vector products (Pearlmutter 1994; as in Ghorbani,
  Krishnan & Xiao 2019), stopped when the estimate stops changing;
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
    """Dominant eigenvalue of the Hessian of ``loss_closure()`` in ``params``, by Lanczos.

    From a Gaussian start q_1 (|q_1| = 1), the Lanczos three-term recurrence
    (Lanczos 1950; Golub & Van Loan 2013, Algorithm 10.1.1)

        w = H q_j - alpha_j q_j - beta_{j-1} q_{j-1},  alpha_j = q_j^T H q_j,
        beta_j = |w|,  q_{j+1} = w / beta_j,

    builds the tridiagonal T_j = tridiag(beta, alpha, beta) whose eigenvalues (Ritz
    values) approximate both ends of H's spectrum; the estimate is the Ritz value of
    largest magnitude, with its sign. Each step is one Hessian-vector product by
    double backpropagation (Pearlmutter 1994). It stops when that Ritz value changes
    by less than ``rel_tol`` relative between steps, when beta_j vanishes (the Krylov
    space is invariant: the Ritz values are exact), or after ``n_iter`` products.

    Notes
    -----
    Lanczos converges much faster than power iteration on the same products: its
    error after j steps falls like a Chebyshev polynomial in the gap
    (lambda_1 - lambda_2) / (lambda_2 - lambda_n), not like (lambda_2 / lambda_1)^(2j)
    (Kaniel-Paige-Saad bound; Saad 2011, §6.6), which matters on a Hessian whose top
    eigenvalues are close. Only three gradient-sized vectors are held (no
    reorthogonalization): lost orthogonality makes converged Ritz values reappear as
    copies but leaves the extreme ones accurate (Paige 1976), and the estimate uses
    only the extreme ones.

    Parameters
    ----------
    loss_closure : callable
        Returns the scalar loss with its graph; must not call backward. It runs
        under the math kernel of scaled-dot-product attention, since the fused
        kernels have no double backward.
    params : sequence of Parameter
        The coordinates of the Hessian.
    n_iter : int
        Maximum number of Hessian-vector products (Lanczos steps).
    rel_tol : float
        Relative change of the estimate between steps at which to stop.
    generator : torch.Generator, optional
        Source of the start vector (fixed for a reproducible probe: the same
        generator state gives the same estimate).

    Returns
    -------
    dict
        ``eigenvalue``: the Ritz value of largest magnitude, with its sign (at the end
        of training the top positive eigenvalue unless a negative one is larger in
        magnitude); ``n_iter``: Hessian-vector products used; ``rel_change``: the last
        relative change of the estimate (inf after a single step); ``residual``:
        beta_j |s_j| / |theta|, the relative residual |H y - theta y| / |theta| of its
        Ritz pair (theta, y = Q s), a bound on the relative distance from theta to
        an eigenvalue of H (exact arithmetic).

    References
    ----------
    Lanczos (1950), J. Res. Nat. Bur. Standards 45, 255. Paige (1976), Error analysis
    of the Lanczos algorithm for tridiagonalizing a symmetric matrix. Pearlmutter
    (1994), Fast exact multiplication by the Hessian. Ghorbani, Krishnan & Xiao (2019),
    An investigation into neural net optimization via Hessian eigenvalue density
    (Lanczos on network Hessians). Saad (2011), Numerical methods for large
    eigenvalue problems, 2nd ed.
    """
    if n_iter < 1:
        raise ValueError(f"n_iter must be at least 1, got {n_iter}")
    if not rel_tol > 0:
        raise ValueError(f"rel_tol must be positive, got {rel_tol}")
    params = list(params)
    with sdpa_kernel(SDPBackend.MATH):
        loss = loss_closure()
    grads = torch.autograd.grad(loss, params, create_graph=True, materialize_grads=True)
    q = [torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device) for p in params]
    norm = math.sqrt(_dot(q, q))
    q = [x / norm for x in q]
    q_prev: list[torch.Tensor] | None = None
    alphas: list[float] = []
    betas: list[float] = []  # beta_1 .. beta_j; beta_j couples q_j and q_{j+1}
    eigenvalue, rel_change, residual, used = float("nan"), float("inf"), float("nan"), 0
    for used in range(1, n_iter + 1):
        w = torch.autograd.grad(
            grads, params, grad_outputs=q, retain_graph=used < n_iter, materialize_grads=True
        )
        w = [x.detach() for x in w]
        alpha = _dot(q, w)
        for x, qi in zip(w, q, strict=True):
            x.sub_(qi, alpha=alpha)
        if q_prev is not None:
            for x, qi in zip(w, q_prev, strict=True):
                x.sub_(qi, alpha=betas[-1])
        alphas.append(alpha)
        beta = math.sqrt(_dot(w, w))
        theta, last = _dominant_ritz(alphas, betas)
        rel_change = abs(theta - eigenvalue) / max(abs(theta), 1e-30) if used > 1 else math.inf
        residual = beta * abs(last) / max(abs(theta), 1e-30)
        eigenvalue = theta
        scale = max(abs(a) for a in alphas) + max(betas, default=0.0)
        if rel_change < rel_tol or beta <= 1e-12 * scale:
            break
        betas.append(beta)
        q_prev, q = q, [x / beta for x in w]
    return {
        "eigenvalue": eigenvalue,
        "n_iter": float(used),
        "rel_change": rel_change,
        "residual": residual,
    }


def _dominant_ritz(alphas: list[float], betas: list[float]) -> tuple[float, float]:
    """The eigenvalue of largest magnitude of the Lanczos tridiagonal T (diagonal
    ``alphas``, off-diagonal ``betas``) and the last entry of its unit eigenvector."""
    n = len(alphas)
    t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
    if n > 1:
        off = torch.tensor(betas[: n - 1], dtype=torch.float64)
        t += torch.diag(off, 1) + torch.diag(off, -1)
    values, vectors = torch.linalg.eigh(t)
    k = int(values.abs().argmax())
    return float(values[k]), float(vectors[-1, k])


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
