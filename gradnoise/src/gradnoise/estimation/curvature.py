"""Curvature proxies F_t for the denominator of P-NE* = P-NE / max(floor, Tr(P F P)).

The denominator must be a curvature: positive semi-definite, so that Tr(P F P)
>= 0 at every step. Three such proxies, selectable as ``NoiseLogger(curvature=...)``
(DESIGN §2, seed 003 §3.4 "Curvature proxies"):

- ``fisher``: the diagonal of the empirical Fisher E_i[g_i g_i^T], from the same
  micro-batch statistics as the noise, at no extra cost (the registered default);
- ``ggn``: the generalized Gauss-Newton matrix G = (1/n) sum_i J_i^T H_i J_i (J_i
  the Jacobian of position i's logits, H_i = diag(p_i) - p_i p_i^T the Hessian of
  softmax cross-entropy in the logits), by Hutchinson-style probes through the
  logits (``logit_probe_rademacher``);
- ``true_fisher``: the Fisher of the model's own predictive distribution, with
  labels sampled from the model (``logit_probe_sampled``; Martens 2020, §9).

For softmax cross-entropy G and the true Fisher are the same matrix (Martens 2020,
§9.2): the two estimators differ only in their probes, so their disagreement is
sampling noise. The empirical Fisher is a different matrix: it matches them only
near a well-specified optimum (Kunstner, Hennig & Balles 2019). Both sampled
proxies give a per-coordinate diagonal that is non-negative, so the logger can
apply each step's own P_t to it (``gradnoise.estimation.integrals``).

The raw Hessian H of the loss is indefinite away from a minimum; its Hutchinson
trace Tr(P H P) (``hessian``) is reported, never used as a denominator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

PROXIES = ("ggn", "true_fisher", "hessian")  # estimated from a logits closure
DIAGONAL_PROXIES = ("ggn", "true_fisher")


def fisher_diag(cov_diag: torch.Tensor, grad_sq_diag: torch.Tensor) -> torch.Tensor:
    """Diagonal of the empirical Fisher, diag(F) = diag(C) + G^2 (per coordinate).

    ``cov_diag`` estimates the per-example covariance diag(C), ``grad_sq_diag``
    the squared mean gradient G^2 (see ``gradnoise.estimation.formulas.grad_sq_diag``, which
    removes the noise Var(G_bar) = diag(C)/B from G_bar^2). With both unbiased,
    the sum is unbiased for the per-example second moment E_i[g_i^2]: under
    without-replacement sampling from N examples it equals exactly
    (1/N) sum_i g_i^2, the empirical Fisher of the data set. Using G_bar^2 instead
    would add diag(C)/B, a bias that grows as the batch shrinks and would make
    P-NE* depend on B through its denominator. Per coordinate it equals
    G_bar^2 + diag(C)(1 - 1/B) >= 0.
    """
    return cov_diag + grad_sq_diag


def logit_probe_rademacher(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """z = sqrt(p) * u - p (sqrt(p) . u), u Rademacher: E[z z^T] = diag(p) - p p^T = H.

    (n, V) rows of probabilities -> (n, V) probes. A = diag(sqrt p) - p sqrt(p)^T
    satisfies A A^T = diag(p) - p p^T because sum(p) = 1, and z = A u with
    E[u u^T] = I (Hutchinson 1989's probes, pushed through a square root of H).
    """
    u = 2.0 * torch.randint(0, 2, probs.shape, generator=generator, device=probs.device) - 1.0
    root = probs.sqrt()
    return root * u - probs * (root * u).sum(-1, keepdim=True)


def logit_probe_sampled(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """z = p - e_y with y ~ p: the logit gradient of -log p(y); E[z z^T] = diag(p) - p p^T = H."""
    labels = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return probs - torch.nn.functional.one_hot(labels, probs.shape[-1]).to(probs.dtype)


LOGIT_PROBES = {"ggn": logit_probe_rademacher, "true_fisher": logit_probe_sampled}


def logit_curvature(
    logits_closure: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    params: Sequence[torch.nn.Parameter],
    precond: Sequence[torch.Tensor],
    proxies: Sequence[str],
    n_probes: int,
    generators: dict[str, torch.Generator],
) -> dict:
    """The requested proxies for the mean cross-entropy of ``logits_closure()`` at ``params``.

    The closure returns ``(logits, targets)``, logits (..., V) with their graph and
    integer targets (...) where -1 marks ignored positions. One forward pass, then
    per probe one backward pass (and a double backward for ``hessian``). Each
    proxy draws its probes from its own generator in ``generators``, so one
    proxy's draws do not depend on which others are requested.

    Returns ``{"ggn": diag, "true_fisher": diag}`` (flat (D,) fp32 tensors, each
    coordinate >= 0) for those requested and ``{"hessian": Tr(P H P)}`` (a float).

    Notes
    -----
    With L = (1/n) sum_i l_i over the n kept positions and probes z_i drawn
    independently per position with E[z_i] = 0, E[z_i z_i^T] = H_i, the backward
    pass g = sum_i J_i^T z_i has E[g g^T] = sum_i J_i^T H_i J_i = n G (cross terms
    vanish), so diag(G) is estimated without bias by g^2 / n, averaged over probes.
    """
    hessian = "hessian" in proxies
    # The fused attention kernels have no double backward; only the Hessian needs one.
    kernel = sdpa_kernel(SDPBackend.MATH) if hessian else contextlib.nullcontext()
    with kernel:
        logits, targets = logits_closure()
    logits = logits.reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    keep = (targets != -1).to(torch.float32)[:, None]
    n = float(keep.sum())
    probs = torch.softmax(logits.detach().float(), -1)
    out: dict = {}
    for name in [p for p in DIAGONAL_PROXIES if p in proxies]:
        diag = torch.zeros(sum(p.numel() for p in params), device=probs.device)
        for _ in range(n_probes):
            probe = LOGIT_PROBES[name](probs, generators[name]) * keep
            grads = torch.autograd.grad(
                logits, params, grad_outputs=probe.to(logits.dtype), retain_graph=True,
                materialize_grads=True,
            )  # fmt: skip
            diag += torch.cat([g.reshape(-1).float() for g in grads]) ** 2
        out[name] = diag / (n_probes * max(n, 1.0))
    if hessian:
        loss = torch.nn.functional.cross_entropy(logits, targets, ignore_index=-1)
        out["hessian"] = hutchinson_trace_php(
            loss, params, precond, n_probes, generators["hessian"]
        )
    return out


def hutchinson_trace_php(
    loss: torch.Tensor,
    params: Sequence[torch.nn.Parameter],
    precond: Sequence[torch.Tensor],
    n_probes: int,
    generator: torch.Generator,
) -> float:
    """Hutchinson estimate of Tr(P H P), H the Hessian of the scalar ``loss`` in ``params``.

    Tr(P H P) = E_v[(P v)^T H (P v)] for Rademacher probes v (Hutchinson 1989),
    each term one Hessian-vector product by double backpropagation (Pearlmutter
    1994). Unbiased; the variance of one probe is 2 sum_{i != j} (P H P)_ij^2, so
    the standard error falls as 1/sqrt(n_probes). ``precond`` holds P's diagonal
    shaped like each parameter; ``loss`` carries its graph (built with the math
    kernel of scaled-dot-product attention). ``.grad`` is left untouched. H is
    indefinite away from a minimum, so the estimate can be negative.
    """
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
